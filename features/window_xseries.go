package features

// xseries is series (window_series.go) plus an optional tag per point (the
// hash of the entity's distinct-of field), for the spec-driven engine. It
// runs series' own code (addTagged), so its running aggregates are
// bit-identical to the hand-written Builder's for the same windows. Tags
// live in tags, parallel to pts, only when tagged is set (before the first
// add): entities without a distinct feature pay nothing for them.
//
// Not safe for concurrent use.
type xseries struct {
	series
	tags   []uint64 // parallel to pts when tagged
	tagged bool
}

// add is series.add, keeping tags parallel to pts when tagged.
func (s *xseries) add(p point, tag uint64, wins []window, summed int, lateness, retain int64, maxPts int32) int32 {
	var tags *[]uint64
	if s.tagged {
		tags = &s.tags
	}
	return s.addTagged(p.ts, p.amt, tag, tags, wins, summed, lateness, retain, maxPts)
}
