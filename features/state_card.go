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
//
// ws is the storage of s.ws (see inlineWins): the windows' state in the
// same allocation as the card's, rather than one of its own, saves the
// feature stage a pointer chase (a cache miss) per event and costs no
// memory (the struct's size class holds what the two took).
type cardState struct {
	s           series
	ws          [nWindows]winState
	country     string // country of the head
	lat, lon    float64
	hasGeo      bool
	headChanged bool
	headSince   float32
	headKmh     float32
}

func (c *cardState) lastSeen() int64 { return c.s.maxTS }

// inlineWins moves the series' window states into c.ws (see cardState):
// before the first point (it then sets what series.add would, the windows
// and maxTS = t), or after a snapshot was read.
func (c *cardState) inlineWins(t int64) {
	switch {
	case c.s.ws == nil:
		c.s.ws, c.s.maxTS = c.ws[:], t
	case len(c.s.ws) == len(c.ws) && &c.s.ws[0] != &c.ws[0]:
		copy(c.ws[:], c.s.ws)
		c.s.ws = c.ws[:]
	}
}

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
