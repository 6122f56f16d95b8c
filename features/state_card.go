package features

import (
	"sync/atomic"
	"unsafe"
)

// CardSlot is an opaque per-card slot that the Builder keeps in each
// card's state for another package: package stream stores there a pointer
// to the card's sequential-model state, so that its worker reaches it
// through the card state the feature stage has just found (the Builder's
// LastCardSlot) instead of looking the card up a second time.
//
// The Builder never reads or writes a slot's value: it only allocates it
// (empty, with the card's state) and hands out its address. A new card
// state, one restored from a snapshot (ReadState), or one recreated after
// an eviction starts empty. A card state renamed during a PAN-key rotation
// (Event.CardAlias) keeps its slot: the user must not trust a value stored
// under the previous pseudonym (package stream empties the slot of every
// row that carries an alias). Load and Store are atomic; the value's
// meaning and its lifetime are the user's, and a stored pointer keeps its
// target alive for as long as the card's state lives.
type CardSlot struct {
	p unsafe.Pointer
}

// Load returns the pointer last stored in s (nil: none).
func (s *CardSlot) Load() unsafe.Pointer { return atomic.LoadPointer(&s.p) }

// Store sets s's value to p (nil empties it).
func (s *CardSlot) Store(p unsafe.Pointer) { atomic.StorePointer(&s.p, p) }

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
	// slot is the card's CardSlot (see Builder.LastCardSlot). It costs
	// 16 bytes a card: 208 bytes were a size class of their own, 216 are
	// allocated as 224.
	slot CardSlot
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
