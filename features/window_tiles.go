package features

import (
	"math"
	"slices"
)

// tileDef is one tiled window of an entity (a feature with `tiles: N`): the
// window (t-offset-length, t-offset] is answered from N fixed-size tiles of
// width length/N, aligned to the Unix epoch, instead of from every event.
type tileDef struct {
	w     window
	n     int
	width int64 // w.length / n, in nanoseconds
}

// tile holds the aggregate of the events whose time falls in
// [k*width, (k+1)*width).
type tile struct {
	k        int64
	n        int64
	sum, sq  float64
	min, max float64
}

// tileAgg is the aggregate of a tiled window: count, sum, sum of squares,
// and min and max when n > 0.
type tileAgg struct {
	agg
	min, max float64
}

func (a *tileAgg) addTile(t *tile) {
	if a.n == 0 || t.min < a.min {
		a.min = t.min
	}
	if a.n == 0 || t.max > a.max {
		a.max = t.max
	}
	a.n += t.n
	a.sum += t.sum
	a.sq += t.sq
}

func (a *tileAgg) addValue(v float64) {
	if a.n == 0 || v < a.min {
		a.min = v
	}
	if a.n == 0 || v > a.max {
		a.max = v
	}
	a.agg.add(v)
}

// tiles is the tiled state of one entity for one tileDef: its non-empty
// tiles, sorted by k. It holds at most n + ceil((offset+lateness)/width) + 2
// tiles, whatever the traffic: memory is O(n) per entity and window.
// Not safe for concurrent use.
type tiles struct {
	ts []tile
}

// floorDiv is a/b rounded towards -inf (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// add puts an event at ts with amount v into its own tile (also when it is
// out of order), then drops the tiles that no query at or after
// maxTS-lateness can reach.
func (s *tiles) add(d *tileDef, ts int64, v float64, maxTS, lateness int64) {
	k := floorDiv(ts, d.width)
	i, found := slices.BinarySearchFunc(s.ts, k, func(t tile, k int64) int {
		switch {
		case t.k < k:
			return -1
		case t.k > k:
			return 1
		}
		return 0
	})
	if found {
		t := &s.ts[i]
		t.n++
		t.sum += v
		t.sq += v * v
		t.min = math.Min(t.min, v)
		t.max = math.Max(t.max, v)
	} else {
		if len(s.ts) == cap(s.ts) {
			s.ts = slices.Grow(s.ts, max(2, len(s.ts)/2))
		}
		s.ts = slices.Insert(s.ts, i, tile{k: k, n: 1, sum: v, sq: v * v, min: v, max: v})
	}
	kmin := floorDiv(maxTS-lateness-d.w.offset-d.w.length, d.width)
	n := 0
	for n < len(s.ts) && s.ts[n].k < kmin {
		n++
	}
	if n > 0 {
		s.ts = slices.Delete(s.ts, 0, n)
		if cap(s.ts) > 16 && len(s.ts) < cap(s.ts)/4 {
			s.ts = slices.Clip(slices.Clone(s.ts))
		}
	}
}

// at returns the aggregate of the tiles that overlap the window
// (t-offset-length, t-offset]: tiles floor((t-offset-length)/width) to
// floor((t-offset)/width), each included whole. Read-only.
func (s *tiles) at(d *tileDef, t int64) tileAgg {
	lo := floorDiv(t-d.w.offset-d.w.length, d.width)
	hi := floorDiv(t-d.w.offset, d.width)
	var a tileAgg
	for i := range s.ts {
		tl := &s.ts[i]
		if tl.k > hi {
			break
		}
		if tl.k >= lo {
			a.addTile(tl)
		}
	}
	return a
}
