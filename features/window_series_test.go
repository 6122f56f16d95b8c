package features

import (
	"math"
	"testing"
)

// TestSeriesResumAfterOverflow: an amount whose square overflows (1e200 is
// a valid amount) makes a window's running sum of squares NaN once the
// point leaves it; the advance must recompute it exactly even when a later
// window of the series subtracts in the same advance. (The subtraction count used
// to be set to MaxInt32 as the signal and wrapped negative on the later
// window's subtraction: no recomputation, and none after 64 more
// subtractions either.)
func TestSeriesResumAfterOverflow(t *testing.T) {
	const s = int64(1e9)
	wins := []window{{0, 20 * s}, {0, 10 * s}}
	var se series
	for _, p := range []struct {
		ts  int64
		amt float64
	}{{0, 1e200}, {11 * s, 1}, {21 * s, 2}} {
		if se.add(p.ts, p.amt, wins, len(wins), 0, 40*s, 0) < 0 {
			t.Fatalf("point %d refused", p.ts)
		}
	}
	for k, want := range []agg{{n: 2, sum: 3, sq: 5}, {n: 1, sum: 2, sq: 4}} {
		st := se.ws[k]
		var got agg
		se.sumRange(&got, st.start, st.end)
		got.sum, got.sq = st.sum, st.sq
		if got != want {
			t.Errorf("window %d: n, sum, sq = %v, %v, %v; want %v, %v, %v", k, got.n, got.sum, got.sq, want.n, want.sum, want.sq)
		}
	}
	if se.subs < 0 {
		t.Errorf("subtraction count %d: wrapped", se.subs)
	}
	// 64 more subtractions must still trigger the exact recomputation.
	for i := range int64(200) {
		se.add(22*s+i*s, 1, wins, len(wins), 0, 40*s, 0)
	}
	if se.subs > 64 && se.subs > int32(len(se.pts))-se.off {
		t.Errorf("subtraction count %d past the recomputation threshold", se.subs)
	}
	if math.IsNaN(se.ws[0].sq) || math.IsNaN(se.ws[1].sq) {
		t.Errorf("sums of squares NaN: %v %v", se.ws[0].sq, se.ws[1].sq)
	}
}

// TestSeriesResumAfterOverflowCap: the same through the points cap, which
// drops the oldest points while they are still inside a window.
func TestSeriesResumAfterOverflowCap(t *testing.T) {
	const s = int64(1e9)
	wins := []window{{0, 100 * s}}
	var se series
	for i, amt := range []float64{1e200, 1, 2, 3} {
		se.add(int64(i)*s, amt, wins, len(wins), 0, 200*s, 3)
	}
	st := se.ws[0]
	if n := st.end - st.start; n != 3 || st.sum != 6 || st.sq != 14 {
		t.Errorf("n, sum, sq = %d, %v, %v; want 3, 6, 14", n, st.sum, st.sq)
	}
}

// TestSeriesResumAfterCancellation: an absurd but finite amount (1e150:
// its square is finite) absorbs the others in the running sums; once it
// leaves the window, the sums left must be the exact ones, not what the
// subtraction leaves (0), through advance and through the points cap.
func TestSeriesResumAfterCancellation(t *testing.T) {
	const s = int64(1e9)
	for _, tc := range []struct {
		name   string
		wins   []window
		maxPts int32
		ts     []int64
	}{
		{"advance", []window{{0, 10 * s}}, 0, []int64{0, 11 * s, 12 * s, 13 * s}},
		{"points cap", []window{{0, 100 * s}}, 3, []int64{0, 1 * s, 2 * s, 3 * s}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var se series
			for i, amt := range []float64{1e150, 1, 2, 3} {
				se.add(tc.ts[i], amt, tc.wins, len(tc.wins), 0, 200*s, tc.maxPts)
			}
			st := se.ws[0]
			if n := st.end - st.start; n != 3 || st.sum != 6 || st.sq != 14 {
				t.Errorf("n, sum, sq = %d, %v, %v; want 3, 6, 14", n, st.sum, st.sq)
			}
		})
	}
}
