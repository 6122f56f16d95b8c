package stream

import (
	"log/slog"
	"strings"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// seqSweepEvery is the least number of events between two sweeps of idle
// cards; a sweep also waits for as many events as there are cards, so its
// scan costs at most one card per event.
const seqSweepEvery = 1 << 14

// seqSlot is one sequential model's part of a card's state.
type seqSlot struct {
	name  string // model name
	key   string // role and model name: "score:fraud_gru", "shadow:fraud_gru"
	shape string // models.Model.StateShape
	off   int
	size  int
}

// seqLayout places the states of a model set's sequential models in one
// slice per card.
type seqLayout struct {
	slots []seqSlot
	size  int
}

func (l *seqLayout) find(key string) *seqSlot {
	for i := range l.slots {
		if l.slots[i].key == key {
			return &l.slots[i]
		}
	}
	return nil
}

// cardSeq is one card's model state: the recurrent state (GRU/LSTM) or the
// previous input rows (CNN) of every sequential model, laid out by layout.
type cardSeq struct {
	last   int64 // newest event time seen, Unix ns
	layout *seqLayout
	data   []float32
	// link is the address of the features.CardSlot through which the
	// worker may reach this state (see cardVia), 0 for none: a slot
	// holding c is valid only while c.link is its address. Set when the
	// slot is filled; cleared when c leaves its map (drop, sweep, a
	// restore replacing the map) or moves to another id (rekey). An
	// address, not a pointer: a card state the Builder dropped is not kept
	// alive by it (a freed slot is never compared: the batch that hands a
	// slot to the worker holds it).
	link uintptr
}

// newCardSeq returns a card's state in layout l, last seen at Unix ns t, its
// data zero. A small state (up to 64 values: a GRU of 64 units, a few small
// models) is allocated with the card's header, in one object: one
// allocation instead of two, and the lookup that reads the header finds
// the state in the next cache line rather than a cache miss away.
func newCardSeq(t int64, l *seqLayout) *cardSeq {
	var c *cardSeq
	switch n := l.size; {
	case n <= 8:
		p := new(struct {
			c   cardSeq
			buf [8]float32
		})
		c, p.c.data = &p.c, p.buf[:n:n]
	case n <= 16:
		p := new(struct {
			c   cardSeq
			buf [16]float32
		})
		c, p.c.data = &p.c, p.buf[:n:n]
	case n <= 32:
		p := new(struct {
			c   cardSeq
			buf [32]float32
		})
		c, p.c.data = &p.c, p.buf[:n:n]
	case n <= 64:
		p := new(struct {
			c   cardSeq
			buf [64]float32
		})
		c, p.c.data = &p.c, p.buf[:n:n]
	default:
		c = &cardSeq{data: make([]float32, n)}
	}
	c.last, c.layout = t, l
	return c
}

// seqStates keeps the per-card state of the sequential models (families
// cnn, gru, lstm) for the cards of one worker's partitions, beside the
// worker's feature state and with the same TTL: a card idle for longer
// than the TTL (in event time) loses it, as it loses its windows. When a
// reload changes the model set, a card's state moves to the new layout the
// next time the card is seen: a model's state is kept when the new model of
// the same name and role has the same state shape, and reset to zero
// (counted per model, logged once per reload) when it does not.
// A seqStates is not safe for concurrent use.
type seqStates struct {
	ttl    int64
	clock  int64
	n      int
	cards  map[string]*cardSeq
	layout *seqLayout
	resets *prometheus.CounterVec // by model; may be nil
	log    *slog.Logger
}

func newSeqStates(ttl time.Duration, resets *prometheus.CounterVec, log *slog.Logger) *seqStates {
	return &seqStates{ttl: int64(ttl), cards: make(map[string]*cardSeq), layout: &seqLayout{}, resets: resets, log: log}
}

// setModels lays out the states of the sequential models among scorers and
// shadows. It returns, per scorer and per shadow, the slot index in the new
// layout or -1 for a stateless model.
func (ss *seqStates) setModels(scorers, shadows []*models.Scorer) (slotOf, shadowSlotOf []int) {
	ss.layout, slotOf, shadowSlotOf = newSeqLayout(ss.layout, scorers, shadows, ss.log)
	return slotOf, shadowSlotOf
}

// newSeqLayout lays out the states of the sequential models among scorers
// and shadows, logging the models whose state shape differs from old's (nil:
// none). It returns the layout and, per scorer and per shadow, the slot
// index in it or -1 for a stateless model.
func newSeqLayout(old *seqLayout, scorers, shadows []*models.Scorer, log *slog.Logger) (l *seqLayout, slotOf, shadowSlotOf []int) {
	if old == nil {
		old = &seqLayout{}
	}
	l = &seqLayout{}
	add := func(role string, s *models.Scorer) int {
		m := s.Model()
		if !m.Sequential() {
			return -1
		}
		sl := seqSlot{name: m.Name(), key: role + ":" + m.Name(), shape: m.StateShape(), off: l.size, size: m.StateSize()}
		if o := old.find(sl.key); o != nil && o.shape != sl.shape && log != nil {
			log.Warn("model state shape changed: each card's state of this model restarts from zero",
				"model", m.Name(), "role", role, "old_shape", o.shape, "new_shape", sl.shape)
		}
		l.slots = append(l.slots, sl)
		l.size += sl.size
		return len(l.slots) - 1
	}
	for _, s := range scorers {
		slotOf = append(slotOf, add("score", s))
	}
	for _, s := range shadows {
		shadowSlotOf = append(shadowSlotOf, add("shadow", s))
	}
	return l, slotOf, shadowSlotOf
}

// stateful reports whether the current layout keeps any state.
func (ss *seqStates) stateful() bool { return ss.layout.size > 0 }

// card returns the state of card id, seen at Unix ns t, in the current
// layout.
func (ss *seqStates) card(id string, t int64) *cardSeq {
	ss.clock = max(ss.clock, t)
	c, ok := ss.cards[id]
	if !ok {
		c = newCardSeq(t, ss.layout)
		// A copy of id: a decoded event's id shares one backing string
		// with the event's other fields, which the key would keep alive.
		ss.cards[strings.Clone(id)] = c
		return c
	}
	return ss.touch(c, t)
}

// touch is card for a card state c found in ss.cards, seen at Unix ns t
// (ss.clock already advanced to t): it resets c past the TTL, and moves it
// to the current layout.
func (ss *seqStates) touch(c *cardSeq, t int64) *cardSeq {
	if ss.clock-c.last > ss.ttl {
		// Idle past the TTL (the sweep has not reached it yet): it starts
		// again from zero, as its windows do.
		// In place when it fits: the state is only ever read through c.
		if n := ss.layout.size; cap(c.data) >= n {
			c.data = c.data[:n]
			clear(c.data)
		} else {
			c.data = make([]float32, n)
		}
		c.layout = ss.layout
	}
	c.last = max(c.last, t)
	if c.layout != ss.layout {
		ss.migrate(c)
	}
	return c
}

// cardOf is card for e's card at e's time. During a PAN-key rotation (e
// has a CardAlias) it first moves the card's state from its pseudonym under
// the previous key to e.CardID when only the old one has a live state, as
// the feature Builder does with the card's windows: the card keeps its
// sequential-model state across the rotation.
func (ss *seqStates) cardOf(e *features.Event) *cardSeq {
	t := e.TS.UnixNano()
	if e.CardAlias != "" && e.CardAlias != e.CardID {
		ss.rekey(e.CardID, e.CardAlias, t)
	}
	return ss.card(e.CardID, t)
}

// cardVia is cardOf for e reached through slot, the features.CardSlot of
// e's card state in the partition's Builder (Builder.LastCardSlot; nil:
// none): when the slot holds a state linked to it (c.link), that state is
// e's card's, found without a look-up in ss.cards; else cardOf finds it and
// the slot is filled. The result, and every effect on ss, are cardOf's.
//
// A slot is filled only with the state of the id its card state is stored
// under in the Builder, and only by the one worker that owns ss: a linked
// slot is right until its state leaves ss.cards or changes id (both clear
// c.link) or its card state changes id in the Builder, which happens only
// for an event with a CardAlias: such an event empties its slot and takes
// the look-up (a PAN-key rotation saves nothing).
func (ss *seqStates) cardVia(e *features.Event, slot *features.CardSlot) *cardSeq {
	if slot == nil {
		return ss.cardOf(e)
	}
	if e.CardAlias != "" && e.CardAlias != e.CardID {
		// The Builder may just have renamed this card state from the alias:
		// what the slot holds may be the alias's model state.
		if slot.Load() != nil {
			slot.Store(nil)
		}
		return ss.cardOf(e)
	}
	t := e.TS.UnixNano()
	addr := uintptr(unsafe.Pointer(slot))
	if c := (*cardSeq)(slot.Load()); c != nil && c.link == addr {
		ss.clock = max(ss.clock, t)
		return ss.touch(c, t)
	}
	c := ss.card(e.CardID, t)
	c.link = addr
	slot.Store(unsafe.Pointer(c))
	return c
}

// rekey renames the state of alias to id (seen at Unix ns t) when id has
// none and alias has one within the TTL.
func (ss *seqStates) rekey(id, alias string, t int64) {
	if _, ok := ss.cards[id]; ok {
		return
	}
	c, ok := ss.cards[alias]
	if !ok || max(ss.clock, t)-c.last > ss.ttl {
		return
	}
	delete(ss.cards, alias)
	c.link = 0 // a slot holding c is the alias's card state's
	ss.cards[strings.Clone(id)] = c
}

// migrate moves c to the current layout.
func (ss *seqStates) migrate(c *cardSeq) {
	l := ss.layout
	data := make([]float32, l.size)
	for _, sl := range l.slots {
		o := c.layout.find(sl.key)
		switch {
		case o == nil: // a model new to this card: zero
		case o.shape == sl.shape:
			copy(data[sl.off:sl.off+sl.size], c.data[o.off:o.off+o.size])
		default:
			if ss.resets != nil {
				ss.resets.WithLabelValues(sl.name).Inc()
			}
		}
	}
	c.layout, c.data = l, data
}

// state returns the part of c's state of the slot with index slot.
func (ss *seqStates) state(c *cardSeq, slot int) []float32 {
	sl := &ss.layout.slots[slot]
	return c.data[sl.off : sl.off+sl.size : sl.off+sl.size]
}

// drop forgets card id's state (the Builder evicted the card for its cap).
func (ss *seqStates) drop(id string) {
	if c, ok := ss.cards[id]; ok {
		c.link = 0
		delete(ss.cards, id)
	}
}

// unlinkAll clears the link of every card state: ss.cards is about to be
// replaced.
func (ss *seqStates) unlinkAll() {
	for _, c := range ss.cards {
		c.link = 0
	}
}

// sweep drops the cards idle for longer than the TTL, once at least
// max(seqSweepEvery, cards) events were counted since the last sweep (a card
// seen again after the TTL but before a sweep is reset by card). Call it
// between batches only.
func (ss *seqStates) sweep(events int) {
	if ss.n += events; ss.n < max(seqSweepEvery, len(ss.cards)) {
		return
	}
	ss.n = 0
	for id, c := range ss.cards {
		if ss.clock-c.last > ss.ttl {
			c.link = 0
			delete(ss.cards, id)
		}
	}
}
