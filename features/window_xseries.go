package features

import "math"

// xseries is series (window_series.go) plus an optional tag per point (the
// hash of the entity's distinct-of field), for the spec-driven engine: the
// same code, line for line, so that its running aggregates are bit-identical
// to the hand-written Builder's for the same windows (keep the two in sync).
// Tags live in tags, parallel to pts, only when tagged is set (before the
// first add): entities without a distinct feature pay nothing for them.
//
// It is the time-ordered history of one entity (a deque of points
// covering the longest window plus the lateness allowance), with a running
// aggregate per window relative to the newest event time (maxTS). In-order
// events cost O(1) amortized per window; an out-of-order event is inserted at
// its event time and its own windows are answered by a short scan (the
// cheaper of the window itself or the correction from the running sums).
//
// Running sums are float64; to keep them equal to a fresh summation they are
// recomputed exactly once the number of subtractions since the last
// recomputation exceeds the number of live points (amortized O(1)), and reset
// to zero whenever a window empties.
//
// Not safe for concurrent use.
type xseries struct {
	pts    []point  // live points are pts[off:], sorted by ts (stable)
	tags   []uint64 // parallel to pts when tagged
	tagged bool
	off    int32
	subs   int32 // subtractions since the last exact recomputation
	maxTS  int64 // newest event time; valid when len(pts) > off or ever set
	ws     []winState
}

// has reports whether the xseries ever received a point.
func (s *xseries) has() bool { return s.ws != nil }

// upper returns the absolute index of the first live point with ts > t.
func (s *xseries) upper(t int64) int32 {
	lo, hi := s.off, int32(len(s.pts))
	for lo < hi {
		m := int32(uint32(lo+hi) >> 1)
		if s.pts[m].ts <= t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// find returns the absolute index of the last live point at ts with amount
// amt, or -1 when there is none. Read-only.
func (s *xseries) find(ts int64, amt float64) int32 {
	if !s.has() {
		return -1
	}
	for i := s.upper(ts) - 1; i >= s.off && s.pts[i].ts == ts; i-- {
		if s.pts[i].amt == amt {
			return i
		}
	}
	return -1
}

// sumRange adds the points [i, j) to a.
func (s *xseries) sumRange(a *agg, i, j int32) {
	for _, p := range s.pts[i:j] {
		a.add(p.amt)
	}
}

// add inserts a point. Points more than lateness behind maxTS are not
// inserted (add returns -1); otherwise add returns the absolute index the
// point was inserted at (valid until the next call). retain is the history
// kept behind maxTS: the longest window span plus lateness.
func (s *xseries) add(p point, tag uint64, wins []window, lateness, retain int64) int32 {
	ts, amt := p.ts, p.amt
	if s.ws == nil {
		s.ws = make([]winState, len(wins))
		s.maxTS = ts
	}
	s.grow()
	if ts >= s.maxTS || len(s.pts) == int(s.off) {
		s.pts = append(s.pts, p)
		if s.tagged {
			s.tags = append(s.tags, tag)
		}
		idx := int32(len(s.pts) - 1)
		if ts > s.maxTS {
			s.maxTS = ts
		}
		s.advance(wins)
		return idx - s.evict(retain)
	}
	if ts < s.maxTS-lateness {
		return -1
	}
	i := s.upper(ts)
	s.pts = append(s.pts, point{})
	copy(s.pts[i+1:], s.pts[i:])
	s.pts[i] = p
	if s.tagged {
		s.tags = append(s.tags, 0)
		copy(s.tags[i+1:], s.tags[i:])
		s.tags[i] = tag
	}
	for k, w := range wins {
		st := &s.ws[k]
		end := s.maxTS - w.offset
		switch {
		case ts <= end-w.length: // before the window
			st.start++
			st.end++
		case ts <= end: // inside
			st.end++
			st.sum += amt
			st.sq += amt * amt
		}
	}
	return i
}

// grow makes room for one more point: by dropping the evicted prefix when it
// is at least a quarter of the array, else by growing 1.5x from 4 rather
// than append's 2x (most entities hold few points, and memory per card
// matters more than the occasional extra copy).
func (s *xseries) grow() {
	if len(s.pts) < cap(s.pts) {
		return
	}
	if s.off > 0 && int(s.off) >= len(s.pts)/4 {
		s.compact(false)
		return
	}
	pts := make([]point, len(s.pts), max(4, cap(s.pts)+cap(s.pts)/2))
	copy(pts, s.pts)
	s.pts = pts
	if s.tagged {
		tags := make([]uint64, len(s.tags), cap(pts))
		copy(tags, s.tags)
		s.tags = tags
	}
}

// advance moves every window to the current maxTS.
func (s *xseries) advance(wins []window) {
	n := int32(len(s.pts))
	for k, w := range wins {
		st := &s.ws[k]
		end := s.maxTS - w.offset
		for st.end < n && s.pts[st.end].ts <= end {
			v := s.pts[st.end].amt
			st.sum += v
			st.sq += v * v
			st.end++
		}
		start := end - w.length
		removed := false
		for st.start < st.end && s.pts[st.start].ts <= start {
			v := s.pts[st.start].amt
			st.sum -= v
			st.sq -= v * v
			st.start++
			s.subs++
			removed = true
		}
		if removed {
			if st.start == st.end {
				st.sum, st.sq = 0, 0
			} else if math.IsInf(st.sum, 0) || math.IsNaN(st.sum) || math.IsInf(st.sq, 0) || math.IsNaN(st.sq) {
				s.subs = math.MaxInt32
			}
		}
	}
	if s.subs > 64 && s.subs > n-s.off {
		s.resum()
	}
}

// resum recomputes every running aggregate exactly.
func (s *xseries) resum() {
	for k := range s.ws {
		st := &s.ws[k]
		var a agg
		s.sumRange(&a, st.start, st.end)
		st.sum, st.sq = a.sum, a.sq
	}
	s.subs = 0
}

// evict drops points at or before maxTS-retain, and compacts the deque once
// the dropped prefix is as long as the live part; it returns how far
// absolute indexes moved down.
func (s *xseries) evict(retain int64) int32 {
	horizon := s.maxTS - retain
	for s.off < int32(len(s.pts)) && s.pts[s.off].ts <= horizon {
		s.off++
	}
	if s.off < 16 || s.off < int32(len(s.pts))-s.off {
		return 0
	}
	return s.compact(true)
}

// compact moves the live points to the front (into a smaller array when
// shrink is set and they fill under a quarter of it) and returns the shift.
func (s *xseries) compact(shrink bool) int32 {
	shift := s.off
	n := int32(len(s.pts)) - shift
	if c := cap(s.pts); shrink && c > 32 && int(n) < c/4 {
		pts := make([]point, n, max(2*int(n), 8))
		copy(pts, s.pts[shift:])
		s.pts = pts
		if s.tagged {
			tags := make([]uint64, n, cap(pts))
			copy(tags, s.tags[shift:])
			s.tags = tags
		}
	} else {
		copy(s.pts, s.pts[shift:])
		s.pts = s.pts[:n]
		if s.tagged {
			copy(s.tags, s.tags[shift:])
			s.tags = s.tags[:n]
		}
	}
	s.off = 0
	for k := range s.ws {
		s.ws[k].start -= shift
		s.ws[k].end -= shift
	}
	return shift
}

// at returns the aggregate of window k relative to time t (t <= maxTS).
// Points older than the retained history are not counted, so the result is
// exact whenever t >= maxTS - lateness.
func (s *xseries) at(k int, w window, t int64) agg {
	st := &s.ws[k]
	if t == s.maxTS {
		return st.agg()
	}
	lo := s.upper(t - w.offset - w.length)
	hi := s.upper(t - w.offset)
	var a agg
	if t < s.maxTS && (st.end-hi)+(st.start-lo) < hi-lo {
		// correction from the running aggregate: remove (t-offset, maxTS-offset],
		// add back (t-offset-length, maxTS-offset-length].
		var rm, ad agg
		s.sumRange(&rm, hi, st.end)
		s.sumRange(&ad, lo, st.start)
		a = st.agg()
		a = agg{n: a.n - rm.n + ad.n, sum: a.sum - rm.sum + ad.sum, sq: a.sq - rm.sq + ad.sq}
		if a.n == 0 {
			a = agg{}
		}
		return a
	}
	s.sumRange(&a, lo, hi)
	return a
}
