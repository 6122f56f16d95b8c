package features

// cardState is the state of one card, owned by one Builder.
//
// The head is the card's newest transaction applied in order (its point is
// the series' last, at maxTS): country and geo are the head's, compared
// against by the next in-order transaction; headSince, headChanged and
// headKmh are the card_secs_since_prev_log1p, card_country_changed and
// card_geo_velocity_kmh values Update wrote for the head, so that Peek can
// reproduce them after the head's predecessor has been overwritten or
// evicted. They fit in the padding of the struct (no extra memory).
type cardState struct {
	s           series
	country     string // country of the head
	lat, lon    float64
	hasGeo      bool
	headChanged bool
	headSince   float32
	headKmh     float32
}

func (c *cardState) lastSeen() int64 { return c.s.maxTS }

// isHead reports whether e (at Unix ns t, with clamped amount amt) is the
// card's head: the newest in-order transaction, with the same time, amount,
// country and geo.
func (c *cardState) isHead(e *Event, t int64, amt float64) bool {
	s := &c.s
	n := int32(len(s.pts))
	return s.has() && n > s.off && t == s.maxTS && s.pts[n-1].ts == t && s.pts[n-1].amt == amt &&
		e.Country == c.country && e.HasGeo == c.hasGeo && sameFloat(e.Lat, c.lat) && sameFloat(e.Lon, c.lon)
}

func sameFloat(a, b float64) bool { return a == b || (a != a && b != b) }
