package features

import "math"

// window is an event-time window relative to a reference time t: it covers
// the half-open interval (t-offset-length, t-offset]. Offset 0 windows end at
// (and include) t; lagged windows (offset > 0) serve delayed-feedback
// features such as "fraud over the 7 days ending 7 days ago".
type window struct {
	offset, length int64 // nanoseconds
}

// agg is the aggregate of the amounts in one window.
type agg struct {
	n   int64
	sum float64
	sq  float64 // sum of squares
}

func (a *agg) add(v float64) { a.n++; a.sum += v; a.sq += v * v }

func (a *agg) mean() float64 {
	if a.n == 0 {
		return 0
	}
	return a.sum / float64(a.n)
}

// point is one event of an entity: its event time and amount.
type point struct {
	ts  int64 // Unix nanoseconds
	amt float64
}

// winState is the running state of one window relative to the series' newest
// event time: pts[start:end] are the points inside the window (so their
// count is end-start), sum and sq their running sum and sum of squares.
type winState struct {
	start, end int32
	sum, sq    float64
}

func (w *winState) agg() agg { return agg{n: int64(w.end - w.start), sum: w.sum, sq: w.sq} }

// series is the time-ordered history of one entity (a deque of points
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
// Only the first summed windows of a series keep running sums: the others
// (wins[summed:], windows whose features read only the count, such as the
// lagged terminal windows of the fraud rates) keep their bounds, cost no
// float work, and never make a recomputation come sooner. Their aggregates
// have a meaningful n only.
//
// Not safe for concurrent use.
type series struct {
	pts   []point // live points are pts[off:], sorted by ts (stable)
	off   int32
	subs  int32 // subtractions since the last exact recomputation
	maxTS int64 // newest event time; valid when len(pts) > off or ever set
	ws    []winState
}

// has reports whether the series ever received a point.
func (s *series) has() bool { return s.ws != nil }

// upper returns the absolute index of the first live point with ts > t.
func (s *series) upper(t int64) int32 {
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
func (s *series) find(ts int64, amt float64) int32 {
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

// tooLate reports whether add would refuse a point at ts: there are live
// points, and ts is more than lateness behind the newest. Read-only.
func (s *series) tooLate(ts, lateness int64) bool {
	return int(s.off) < len(s.pts) && ts < s.maxTS-lateness
}

// sumRange adds the points [i, j) to a.
func (s *series) sumRange(a *agg, i, j int32) {
	for _, p := range s.pts[i:j] {
		a.add(p.amt)
	}
}

// add inserts a point. Points more than lateness behind maxTS are not
// inserted (add returns -1); otherwise add returns the absolute index the
// point was inserted at (valid until the next call). retain is the history
// kept behind maxTS: the longest window span plus lateness. wins[:summed]
// keep running sums, the others only their counts. maxPts (> 0) caps the
// live points: beyond it the oldest are dropped, from the windows too (see
// WithMaxPoints), and an out-of-order point older than every live point of
// a full series is not inserted (add returns -1, as for a late one).
func (s *series) add(ts int64, amt float64, wins []window, summed int, lateness, retain int64, maxPts int32) int32 {
	return s.addTagged(ts, amt, 0, nil, wins, summed, lateness, retain, maxPts)
}

// addTagged is add; when tags is not nil, it keeps *tags parallel to pts
// (same length, same absolute indexes), with tag at the new point's index.
func (s *series) addTagged(ts int64, amt float64, tag uint64, tags *[]uint64, wins []window, summed int, lateness, retain int64, maxPts int32) int32 {
	if s.ws == nil {
		s.ws = make([]winState, len(wins))
		s.maxTS = ts
	}
	s.grow(tags)
	if ts >= s.maxTS || len(s.pts) == int(s.off) {
		s.pts = append(s.pts, point{ts, amt})
		if tags != nil {
			*tags = append(*tags, tag)
		}
		idx := int32(len(s.pts) - 1)
		if ts > s.maxTS {
			s.maxTS = ts
		}
		s.advance(wins, summed)
		return idx - s.evict(retain, maxPts, summed, tags)
	}
	if ts < s.maxTS-lateness {
		return -1
	}
	if maxPts > 0 && int32(len(s.pts))-s.off >= maxPts && ts < s.pts[s.off].ts {
		return -1 // full, and older than every point kept
	}
	i := s.upper(ts)
	s.pts = append(s.pts, point{})
	copy(s.pts[i+1:], s.pts[i:])
	s.pts[i] = point{ts, amt}
	if tags != nil {
		t := append(*tags, 0)
		copy(t[i+1:], t[i:])
		t[i] = tag
		*tags = t
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
			if k < summed {
				st.sum += amt
				st.sq += amt * amt
			}
		}
	}
	if maxPts > 0 {
		// Not the new point (i > off), unless the cap was lowered since
		// the series filled (a snapshot restored under a smaller cap).
		s.dropOldest(int32(len(s.pts))-s.off-maxPts, summed)
		if i < s.off {
			return -1
		}
	}
	return i
}

// grow makes room for one more point: by dropping the evicted prefix when it
// is at least a quarter of the array, else by growing 1.5x from 4 rather
// than append's 2x (most entities hold few points, and memory per card
// matters more than the occasional extra copy). Tags (when not nil) follow.
func (s *series) grow(tags *[]uint64) {
	if len(s.pts) < cap(s.pts) {
		return
	}
	if s.off > 0 && int(s.off) >= len(s.pts)/4 {
		s.compact(false, tags)
		return
	}
	pts := make([]point, len(s.pts), max(4, cap(s.pts)+cap(s.pts)/2))
	copy(pts, s.pts)
	s.pts = pts
	if tags != nil {
		t := make([]uint64, len(*tags), cap(pts))
		copy(t, *tags)
		*tags = t
	}
}

// advance moves every window to the current maxTS.
//
// The hot loop of the feature stage (every event advances its card's and
// its terminal's windows): it works on local copies of the points, the
// window bounds and the subtraction count, so that the compiler keeps them
// in registers and drops the bounds checks (writes through st would
// otherwise make it reload s.pts at every step), and stores each window
// back once. The floating-point operations and their order are those of a
// plain loop over the points: the running sums are bit for bit the same.
func (s *series) advance(wins []window, summed int) {
	pts := s.pts
	ws := s.ws[:len(wins)]
	maxTS := s.maxTS
	for k := summed; k < len(wins); k++ { // count only
		w := wins[k]
		st := &ws[k]
		lo, hi := uint(st.start), uint(st.end) // never negative
		end := maxTS - w.offset
		for hi < uint(len(pts)) && pts[hi].ts <= end {
			hi++
		}
		start := end - w.length
		for lo < hi && pts[lo].ts <= start {
			lo++
		}
		st.start, st.end = int32(lo), int32(hi)
	}
	subs, inexact := s.subs, false
	for k := range summed {
		w := wins[k]
		st := &ws[k]
		lo, hi := uint(st.start), uint(st.end) // never negative
		sum, sq := st.sum, st.sq
		end := maxTS - w.offset
		for hi < uint(len(pts)) && pts[hi].ts <= end {
			v := pts[hi].amt
			sum += v
			sq += v * v
			hi++
		}
		start := end - w.length
		big := -1.0 // the largest |amount| removed; negative: none
		for lo < hi && pts[lo].ts <= start {
			v := pts[lo].amt
			sum -= v
			sq -= v * v
			if a := math.Abs(v); a > big {
				big = a
			}
			lo++
			subs++
		}
		if big >= 0 {
			if lo == hi {
				sum, sq = 0, 0
			} else if cancelled(sum, sq, big) {
				inexact = true
			}
		}
		st.start, st.end, st.sum, st.sq = int32(lo), int32(hi), sum, sq
	}
	s.subs = subs
	if inexact || subs > 64 && subs > int32(len(pts))-s.off {
		s.resum(summed)
	}
}

// cancelRatio bounds how much larger than what is left of a running sum an
// amount taken out of it may be before the sum is recomputed: taking out a
// leaves an error of up to about a·2^-53 per operation, so past 2^26 the
// error could reach 2^-27 of the sum, near float32's resolution (the
// features are float32). Amounts of ordinary traffic never come near it;
// one absurd amount does (1e150 beside amounts of 1-3: once it leaves,
// the sum left would read 0 instead of 6, and every amount feature of the
// card or terminal with it, until the next exact recomputation).
const cancelRatio = 0x1p26

// cancelled reports whether the running sums left after taking out amounts
// of at most big in magnitude must be recomputed: they are Inf or NaN, or
// big dwarfs them (cancelRatio). One test each for Inf and NaN: x-x is NaN.
func cancelled(sum, sq, big float64) bool {
	return !(sum-sum == 0 && sq-sq == 0) || big > cancelRatio*math.Abs(sum) || big*big > cancelRatio*sq
}

// resum recomputes the running aggregates of the summed windows exactly.
func (s *series) resum(summed int) {
	for k := range s.ws[:summed] {
		st := &s.ws[k]
		var a agg
		s.sumRange(&a, st.start, st.end)
		st.sum, st.sq = a.sum, a.sq
	}
	s.subs = 0
}

// evict drops points at or before maxTS-retain, and compacts the deque once
// the dropped prefix is as long as the live part; it returns how far
// absolute indexes moved down. Tags (when not nil) follow.
func (s *series) evict(retain int64, maxPts int32, summed int, tags *[]uint64) int32 {
	horizon := s.maxTS - retain
	for s.off < int32(len(s.pts)) && s.pts[s.off].ts <= horizon {
		s.off++
	}
	if maxPts > 0 {
		s.dropOldest(int32(len(s.pts))-s.off-maxPts, summed)
	}
	if s.off < 16 || s.off < int32(len(s.pts))-s.off {
		return 0
	}
	return s.compact(true, tags)
}

// dropOldest drops the n (if > 0) oldest live points, which may still be
// inside windows (the points cap): they leave the windows' counts and
// running sums as they would leave by time.
func (s *series) dropOldest(n int32, summed int) {
	if n <= 0 {
		return
	}
	off := s.off + n
	inexact := false
	for k := range s.ws {
		st := &s.ws[k]
		if st.start >= off {
			continue
		}
		big := -1.0
		if k < summed {
			for _, p := range s.pts[st.start:min(st.end, off)] {
				st.sum -= p.amt
				st.sq -= p.amt * p.amt
				big = max(big, math.Abs(p.amt))
				s.subs++
			}
		}
		st.start = off
		st.end = max(st.end, off)
		if k < summed && big >= 0 {
			if st.start == st.end {
				st.sum, st.sq = 0, 0
			} else if cancelled(st.sum, st.sq, big) {
				inexact = true
			}
		}
	}
	s.off = off
	if inexact || s.subs > 64 && s.subs > int32(len(s.pts))-s.off {
		s.resum(summed)
	}
}

// compact moves the live points to the front (into a smaller array when
// shrink is set and they fill under a quarter of it) and returns the shift.
// Tags (when not nil) follow.
func (s *series) compact(shrink bool, tags *[]uint64) int32 {
	shift := s.off
	n := int32(len(s.pts)) - shift
	if c := cap(s.pts); shrink && c > 32 && int(n) < c/4 {
		pts := make([]point, n, max(2*int(n), 8))
		copy(pts, s.pts[shift:])
		s.pts = pts
		if tags != nil {
			t := make([]uint64, n, cap(pts))
			copy(t, (*tags)[shift:])
			*tags = t
		}
	} else {
		copy(s.pts, s.pts[shift:])
		s.pts = s.pts[:n]
		if tags != nil {
			copy(*tags, (*tags)[shift:])
			*tags = (*tags)[:n]
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
// exact whenever t >= maxTS - lateness. For a window that keeps no running
// sums only the count is meaningful.
func (s *series) at(k int, w window, t int64) agg {
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
