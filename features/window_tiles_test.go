package features

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// tiledSpec returns a spec of tiled features (random tiles, windows and
// offsets) over card_id and terminal_id, each next to its exact twin
// ("<name>_x").
func tiledSpec(rng *rand.Rand) *Spec {
	type win struct {
		w     time.Duration
		tiles []int
	}
	wins := []win{
		{time.Hour, []int{2, 4, 60}},
		{24 * time.Hour, []int{2, 24, 96}},
		{3 * 24 * time.Hour, []int{3, 12, 72}},
	}
	offs := []time.Duration{0, 0, 2 * time.Hour, 24 * time.Hour}
	var s Spec
	for i := range 12 + rng.IntN(12) {
		ent := []string{"card_id", "terminal_id"}[rng.IntN(2)]
		agg := []string{AggCount, AggSum, AggMean, AggStd, AggMin, AggMax}[rng.IntN(6)]
		w := wins[rng.IntN(len(wins))]
		f := FeatureSpec{Name: fmt.Sprintf("f%d_%s_%s", i, ent, agg), Agg: agg, Entity: ent,
			Window: Duration(w.w), Offset: Duration(offs[rng.IntN(len(offs))]), Tiles: w.tiles[rng.IntN(len(w.tiles))]}
		if agg != AggCount {
			f.Field = "amount"
		}
		x := f
		x.Name += "_x"
		x.Tiles = 0
		s.Features = append(s.Features, f, x)
	}
	if err := s.Validate(); err != nil {
		panic(err)
	}
	return &s
}

// TestTilesBound checks tiled features on random out-of-order streams, on
// every row whose event was inserted into the entity's state, against a
// brute-force recomputation and against the exact engine (each tiled
// feature's exact twin in the same row):
//
//   - the tiled value is exactly the aggregate over the events in the tiles
//     [floor((t-d-w)/b), floor((t-d)/b)], each whole (count, min and max
//     exactly; sum, mean and std within 1e-5 relative);
//   - the bound: exact <= count <= exact + c(oldest tile) + c(newest tile
//     after t-d), the same for sum (amounts >= 0); min <= exact min and max
//     >= exact max, with the extra events all in those two tiles; the newest
//     tile adds nothing when d = 0 and e is its entity's newest event.
func TestTilesBound(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1000
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			spec := tiledSpec(rng)
			lateness := []time.Duration{0, time.Hour, 3 * time.Hour}[rng.IntN(3)]
			b := MustBuilder(nil, WithSpec(spec), WithMaxLateness(lateness), WithTTL(10000*24*time.Hour))
			cs := b.sp.cs
			row := make([]float32, b.Width())
			peekRow := make([]float32, b.Width())
			type bp struct {
				ts  int64
				amt float64
			}
			type bent struct {
				pts   []bp
				maxTS int64
				init  bool
			}
			ref := map[string]*bent{}
			checked := 0
			for i, e := range bruteStream(rng, n) {
				te := nanos(e.TS)
				amt := amount(&e)
				b.Update(&e, row)
				b.Peek(&e, peekRow)
				inserted := map[string]bool{}
				for _, en := range cs.ents {
					field := stringFields[en.field]
					key := field + "\x00" + en.field.of(&e)
					r := ref[key]
					if r == nil {
						r = &bent{}
						ref[key] = r
					}
					live := false
					for _, p := range r.pts {
						live = live || p.ts > r.maxTS-en.ptsRetain(int64(lateness))
					}
					ok := !r.init || te >= r.maxTS-int64(lateness) || !live
					if ok {
						r.pts = append(r.pts, bp{te, amt})
						if !r.init || te > r.maxTS {
							r.maxTS = te
						}
						r.init = true
					}
					inserted[field] = ok
				}
				for fi, f := range spec.Features {
					if f.Tiles == 0 {
						continue
					}
					if !inserted[f.Entity] {
						continue
					}
					r := ref[f.Entity+"\x00"+fieldIDOf(f.Entity).of(&e)]
					d, w := int64(f.Offset), int64(f.Window)
					width := w / int64(f.Tiles)
					klo, khi := floorDiv(te-d-w, width), floorDiv(te-d, width)
					var ex, tl, extra tileAgg
					for _, p := range r.pts {
						in := p.ts > te-d-w && p.ts <= te-d
						k := floorDiv(p.ts, width)
						if in {
							ex.addValue(p.amt)
						}
						if k >= klo && k <= khi {
							tl.addValue(p.amt)
							if !in {
								extra.addValue(p.amt)
							}
						}
					}
					got, exact := float64(row[fi]), float64(row[fi+1])
					if peekRow[fi] != row[fi] {
						t.Fatalf("event %d %s: Peek %v, Update %v", i, f.Name, peekRow[fi], row[fi])
					}
					if f.Offset == 0 && te == r.maxTS && extra.n > 0 {
						// only the oldest tile may add events
						for _, p := range r.pts {
							if p.ts > te-d && floorDiv(p.ts, width) == khi {
								t.Fatalf("event %d %s: newest tile holds an event after t", i, f.Name)
							}
						}
					}
					var want, lo, hi float64
					tol := 0.0
					switch f.Agg {
					case AggCount:
						want, lo, hi = float64(tl.n), float64(ex.n), float64(ex.n+extra.n)
					case AggSum:
						want, lo, hi = tl.sum, ex.sum, ex.sum+extra.sum
						tol = 1e-5
					case AggMean:
						want, lo, hi = tl.mean(), math.Inf(-1), math.Inf(1)
						tol = 1e-5
					case AggStd:
						m := tl.mean()
						if tl.n > 0 {
							want = math.Sqrt(max(tl.sq/float64(tl.n)-m*m, 0))
						}
						lo, hi = math.Inf(-1), math.Inf(1)
						tol = 1e-4
					case AggMin:
						want, lo, hi = tl.min, math.Inf(-1), ex.min
						if ex.n == 0 {
							hi = math.Inf(1)
						}
					case AggMax:
						want, lo, hi = tl.max, ex.max, math.Inf(1)
					}
					if !closeTo(got, want, tol) {
						t.Fatalf("event %d %s: got %v, want %v (tiles %d..%d)", i, f.Name, got, want, klo, khi)
					}
					if got < float64(float32(lo))*(1-tol)-tol || got > float64(float32(hi))*(1+tol)+tol {
						t.Fatalf("event %d %s: %v outside the bound [%v, %v] (exact %v)", i, f.Name, got, lo, hi, exact)
					}
					if (f.Agg == AggCount || f.Agg == AggSum) && !closeTo(exact, lo, tol) {
						t.Fatalf("event %d %s: exact twin %v, brute force %v", i, f.Name, exact, lo)
					}
					checked++
				}
			}
			if checked < n {
				t.Fatalf("only %d tiled values checked", checked)
			}
			t.Logf("%d tiled values checked", checked)
		})
	}
}

func closeTo(got, want, tol float64) bool {
	w := float64(f32(want))
	return got == w || math.Abs(got-w) <= tol*math.Max(1, math.Abs(w))
}

func TestTilesValidation(t *testing.T) {
	tests := []struct {
		name string
		f    FeatureSpec
		want string
	}{
		{"one tile", FeatureSpec{Name: "a", Agg: AggCount, Entity: "card_id", Window: Duration(time.Hour), Tiles: 1}, `feature "a": tiles 1 must be in [2, 4096]`},
		{"negative", FeatureSpec{Name: "b", Agg: AggSum, Field: "amount", Entity: "card_id", Window: Duration(time.Hour), Tiles: -3}, `feature "b": tiles -3 must be`},
		{"too many", FeatureSpec{Name: "c", Agg: AggMax, Field: "amount", Entity: "card_id", Window: Duration(time.Hour), Tiles: 5000}, `feature "c": tiles 5000 must be`},
		{"distinct", FeatureSpec{Name: "d", Agg: AggDistinct, Of: "mcc", Entity: "card_id", Window: Duration(time.Hour), Tiles: 4}, `feature "d": agg distinct takes no tiles`},
		{"last", FeatureSpec{Name: "e", Agg: AggLast, Field: "amount", Entity: "card_id", Window: Duration(time.Hour), Tiles: 4}, `feature "e": agg last takes no tiles`},
		{"since_prev", FeatureSpec{Name: "f", Agg: AggSincePrev, Entity: "card_id", Tiles: 4}, `feature "f": agg since_prev takes no tiles`},
		{"ratio", FeatureSpec{Name: "g", Agg: AggRatio, Field: "amount", Entity: "card_id", Window: Duration(time.Hour), Tiles: 4}, `feature "g": agg ratio takes no tiles`},
		{"uneven", FeatureSpec{Name: "h", Agg: AggCount, Entity: "card_id", Window: Duration(time.Hour + 1), Tiles: 2}, `feature "h": window 1h0m0.000000001s is not a whole number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Spec{Features: []FeatureSpec{tc.f}}).Validate()
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	s, err := ParseSpec([]byte("features:\n  - {name: n, agg: fraud_rate, entity: terminal_id, window: 30d, tiles: 30}\n  - {name: m, agg: count, entity: card_id, window: 1d, offset: 1d, tiles: 24}\n"))
	if err != nil || s.Features[0].Tiles != 30 {
		t.Fatalf("ParseSpec: %v, %+v", err, s)
	}
}

// TestTilesUniformRelativeError checks the 1/N relative error of a tiled
// count under uniform arrival: an in-order terminal with 10,000 evenly spaced
// events in 30 days, count over 10 days with 30 tiles, once the window is full:
// 0 <= got - exact <= exact/N + 1 on every row.
func TestTilesUniformRelativeError(t *testing.T) {
	spec := &Spec{Features: []FeatureSpec{
		{Name: "c", Agg: AggCount, Entity: "terminal_id", Window: Duration(10 * 24 * time.Hour), Tiles: 30},
		{Name: "x", Agg: AggCount, Entity: "terminal_id", Window: Duration(10 * 24 * time.Hour)},
	}}
	b := MustBuilder(nil, WithSpec(spec))
	row := make([]float32, b.Width())
	worst := 0.0
	for i, e := range busyTerminal(10000, 30*24*time.Hour) {
		b.Update(&e, row)
		got, exact := float64(row[0]), float64(row[1])
		if e.TS.Sub(t0) <= 10*24*time.Hour {
			continue
		}
		if got < exact || got > exact/30+exact+1 {
			t.Fatalf("event %d: tiled count %v, exact %v: outside [exact, exact(1+1/30)+1]", i, got, exact)
		}
		worst = max(worst, (got-exact)/exact)
	}
	t.Logf("worst relative overcount %.4f (1/N = %.4f)", worst, 1.0/30)
}

// TestTilesMemoryBounded checks that a busy entity keeps at most
// n + ceil((offset+lateness)/width) + 2 tiles and no more points than the
// lateness allows, whatever its traffic.
func TestTilesMemoryBounded(t *testing.T) {
	spec := &Spec{Features: []FeatureSpec{
		{Name: "c", Agg: AggCount, Entity: "terminal_id", Window: Duration(30 * 24 * time.Hour), Tiles: 30},
		{Name: "m", Agg: AggMean, Field: "amount", Entity: "terminal_id", Window: Duration(7 * 24 * time.Hour), Offset: Duration(7 * 24 * time.Hour), Tiles: 7},
	}}
	b := MustBuilder(nil, WithSpec(spec))
	row := make([]float32, b.Width())
	for _, e := range busyTerminal(10000, 60*24*time.Hour) {
		b.Update(&e, row)
	}
	st, _ := b.shared.stripe("m-0").spec[0].get("m-0")
	if got := len(st.tl[0].ts); got > 30+2+1 {
		t.Errorf("30d/30 tiles: %d held", got)
	}
	if got := len(st.tl[1].ts); got > 7+7+2+1 {
		t.Errorf("7d/7 lagged 7d tiles: %d held", got)
	}
	if got := len(st.s.pts) - int(st.s.off); got > 50 {
		t.Errorf("%d points held with tiled windows only (lateness 1h)", got)
	}
}

// busyTerminal returns n in-order events of one terminal (and 100 cards),
// spread uniformly over span.
func busyTerminal(n int, span time.Duration) []Event {
	rng := rand.New(rand.NewPCG(1, 2))
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{TxID: fmt.Sprint("t", i), CardID: fmt.Sprint("c-", rng.IntN(100)), TerminalID: "m-0",
			TS: t0.Add(span / time.Duration(n) * time.Duration(i)), Amount: rng.ExpFloat64() * 50}
	}
	return evs
}

// BenchmarkTilesMemory reports the heap bytes held per busy terminal
// (10,000 events in 30 days) for terminal count, mean, min and max over 30
// days (and a 7d window lagged 7d), exact and with 30 (7) tiles.
func BenchmarkTilesMemory(b *testing.B) {
	const terminals = 16
	for _, tiles := range []int{0, 30} {
		name := "exact"
		if tiles > 0 {
			name = fmt.Sprintf("tiles%d", tiles)
		}
		b.Run(name, func(b *testing.B) {
			t7 := 0
			if tiles > 0 {
				t7 = 7
			}
			spec := &Spec{Features: []FeatureSpec{
				{Name: "c", Agg: AggCount, Entity: "terminal_id", Window: Duration(30 * 24 * time.Hour), Tiles: tiles},
				{Name: "m", Agg: AggMean, Field: "amount", Entity: "terminal_id", Window: Duration(30 * 24 * time.Hour), Tiles: tiles},
				{Name: "lo", Agg: AggMin, Field: "amount", Entity: "terminal_id", Window: Duration(30 * 24 * time.Hour), Tiles: tiles},
				{Name: "hi", Agg: AggMax, Field: "amount", Entity: "terminal_id", Window: Duration(30 * 24 * time.Hour), Tiles: tiles},
				{Name: "l", Agg: AggCount, Entity: "terminal_id", Window: Duration(7 * 24 * time.Hour), Offset: Duration(7 * 24 * time.Hour), Tiles: t7},
			}}
			base := busyTerminal(10000, 30*24*time.Hour)
			evs := make([]Event, 0, len(base)*terminals)
			for _, e := range base {
				for k := range terminals {
					e.TerminalID = fmt.Sprint("m-", k)
					evs = append(evs, e)
				}
			}
			b.ReportAllocs()
			var perEntity float64
			for b.Loop() {
				s := MustShared(WithSpec(spec))
				bl := MustBuilder(s, WithSpec(spec))
				row := make([]float32, bl.Width())
				perEntity = float64(heapGrowth(func() {
					for i := range evs {
						bl.Update(&evs[i], row)
					}
				})) / terminals
				runtime.KeepAlive(bl)
			}
			b.ReportMetric(perEntity, "B/terminal")
		})
	}
}

// TestBuilderLate checks Late on the hand-written Builder and the spec
// engine: an event more than the max lateness behind its card's or
// terminal's newest event counts once; one within it, or Peek, does not.
func TestBuilderLate(t *testing.T) {
	spec := DefaultSpec()
	spec.Features = append(spec.Features, FeatureSpec{Name: "mcc_n", Agg: AggCount, Entity: "mcc", Window: Duration(time.Hour), Tiles: 4})
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"builder", nil},
		{"spec", []Option{WithSpec(spec)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustBuilder(nil, append(tc.opts, WithMaxLateness(time.Hour))...)
			row := make([]float32, b.Width())
			ev := func(card, term string, at time.Duration) *Event {
				return &Event{TxID: "x", CardID: card, TerminalID: term, MCC: "5411", TS: t0.Add(at), Amount: 10}
			}
			steps := []struct {
				e    *Event
				want uint64
			}{
				{ev("c1", "m1", 3*time.Hour), 0},
				{ev("c1", "m1", 2*time.Hour+time.Minute), 0},    // 59m late: inserted
				{ev("c1", "m2", time.Hour), 1},                  // card 2h late
				{ev("c2", "m1", 30*time.Minute), 2},             // terminal (and mcc) late: once
				{ev("c1", "m1", 10*time.Minute), 3},             // all late: once
				{ev("c3", "m3", 4*time.Hour), 3},                // mcc only 1h late: inserted
				{ev("c4", "m4", 2*time.Hour+59*time.Minute), 4}, // mcc 61m late
			}
			for i, s := range steps {
				b.Peek(s.e, row)
				b.Update(s.e, row)
				want := s.want
				if tc.name == "builder" && i == 6 {
					want = 3 // the hand-written Builder keys no mcc state
				}
				if got := b.Late(); got != want {
					t.Fatalf("step %d: Late() = %d, want %d", i, got, want)
				}
			}
		})
	}
}

// TestTilesFraudRate checks that a tiled fraud_rate divides the fraud label
// count by the tiled event count of the same window.
func TestTilesFraudRate(t *testing.T) {
	w, d := Duration(3*24*time.Hour), Duration(24*time.Hour)
	spec := &Spec{Features: []FeatureSpec{
		{Name: "fc", Agg: AggFraudCount, Entity: "terminal_id", Window: w, Offset: d, Tiles: 6},
		{Name: "n", Agg: AggCount, Entity: "terminal_id", Window: w, Offset: d, Tiles: 6},
		{Name: "fr", Agg: AggFraudRate, Entity: "terminal_id", Window: w, Offset: d, Tiles: 6},
		{Name: "fx", Agg: AggFraudCount, Entity: "terminal_id", Window: w, Offset: d},
	}}
	b := MustBuilder(nil, WithSpec(spec))
	row := make([]float32, b.Width())
	rng := rand.New(rand.NewPCG(3, 4))
	nonzero := 0
	for i, e := range bruteStream(rng, 2000) {
		if rng.Float64() < 0.3 {
			b.shared.ApplyLabel(&Label{TxID: fmt.Sprint("l", i), TerminalID: e.TerminalID, TS: e.TS.Add(-time.Hour), TxTS: e.TS.Add(-time.Duration(rng.Int64N(int64(4 * 24 * time.Hour)))), Fraud: true})
		}
		b.Update(&e, row)
		if row[0] != row[3] {
			t.Fatalf("event %d: tiled fraud_count %v, exact %v", i, row[0], row[3])
		}
		want := float32(0)
		if row[1] > 0 {
			want = float32(min(float64(row[0])/float64(row[1]), 1))
		}
		if row[2] != want {
			t.Fatalf("event %d: fraud_rate %v, want %v/%v", i, row[2], row[0], row[1])
		}
		if want > 0 {
			nonzero++
		}
	}
	if nonzero == 0 {
		t.Fatal("no nonzero fraud rate")
	}
}
