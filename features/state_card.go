package features

// cardState is the state of one card, owned by one Builder.
type cardState struct {
	s        series
	country  string // country of the newest transaction
	lat, lon float64
	hasGeo   bool
}

func (c *cardState) lastSeen() int64 { return c.s.maxTS }
