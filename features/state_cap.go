package features

// This file holds the capacity of the state (WithMaxCards,
// WithMaxTerminals): how a Builder and a Shared apply their caps to their
// maps, and the counts they export. The eviction itself is expiryMap's.

// StateStats describes the entity states of a Builder (cards) or a Shared
// (terminals, and with WithSpec its other entities and card labels).
type StateStats struct {
	// Entities is the number of states held (live, or idle and awaiting
	// release by the TTL rotation).
	Entities int
	// EvictedTTL counts the states dropped because they were idle for
	// longer than the TTL; EvictedCap those evicted to make room under a
	// cap (WithMaxCards, WithMaxTerminals). Both are monotonic over the
	// life of the Builder or Shared (ReadState keeps them): export them as
	// counters.
	EvictedTTL, EvictedCap uint64
}

// Stats returns the Builder's card state statistics. Like Update, not safe
// for concurrent use: read it from the Builder's goroutine.
func (b *Builder) Stats() StateStats {
	ttl, dropped := b.cardCounts()
	return StateStats{Entities: b.Cards(), EvictedTTL: ttl, EvictedCap: dropped}
}

// EvictedCards returns the ids of the cards the last Update evicted to make
// room under WithMaxCards (usually none, at most a few), so that state kept
// beside the Builder's for the same cards can be dropped with them; after
// ReadState, those it evicted to fit a snapshot written under a larger cap.
// The slice is reused by the next Update or ReadState.
func (b *Builder) EvictedCards() []string {
	if b.sp != nil {
		return b.sp.loc.evicted
	}
	return b.cards.evicted
}

// clearEvicted forgets the cards evicted by the previous Update.
func (b *Builder) clearEvicted() {
	if b.sp != nil {
		clear(b.sp.loc.evicted)
		b.sp.loc.evicted = b.sp.loc.evicted[:0]
		return
	}
	clear(b.cards.evicted)
	b.cards.evicted = b.cards.evicted[:0]
}

// cardCounts returns the eviction counters of the card map in use.
func (b *Builder) cardCounts() (ttl, dropped uint64) {
	if b.sp != nil {
		return b.sp.loc.droppedTTL, b.sp.loc.droppedCap
	}
	return b.cards.droppedTTL, b.cards.droppedCap
}

// limitCards applies the card cap to the card map in use (evicting down to
// it: a snapshot written under a larger cap; EvictedCards then names them)
// and sets its eviction counters to ttl and dropped plus the evictions this
// makes.
func (b *Builder) limitCards(ttl, dropped uint64) {
	b.clearEvicted()
	if b.sp != nil {
		m := &b.sp.loc
		m.droppedTTL, m.droppedCap = ttl, dropped
		m.limit(b.maxCards, true)
	} else {
		m := &b.cards
		m.droppedTTL, m.droppedCap = ttl, dropped
		m.limit(b.maxCards, true)
	}
}

// Stats returns the Shared's statistics: its terminals, and with WithSpec
// the states of its other entities and the card labels it keeps, summed.
// Safe for concurrent use (it locks each stripe in turn).
func (s *Shared) Stats() StateStats {
	var st StateStats
	for i := range s.stripes {
		sp := &s.stripes[i]
		sp.mu.Lock()
		st.Entities += sp.m.len()
		st.EvictedTTL += sp.m.droppedTTL
		st.EvictedCap += sp.m.droppedCap
		for k := range sp.spec {
			m := &sp.spec[k]
			st.Entities += m.len()
			st.EvictedTTL += m.droppedTTL
			st.EvictedCap += m.droppedCap
		}
		sp.mu.Unlock()
	}
	return st
}

// limitStripe applies the caps to st's maps: an equal share of
// WithMaxTerminals per stripe (of WithMaxCards for a spec's card label
// maps), rounded up. The caller holds st.mu (or owns st).
func (s *Shared) limitStripe(st *stripe) {
	n := len(s.stripes)
	st.m.limit(share(s.cfg.maxTerminals, n), false)
	for k := range st.spec {
		max := s.cfg.maxTerminals
		if s.sp.cs.smaps[k].field == sfCard {
			max = s.cfg.maxCards
		}
		st.spec[k].limit(share(max, n), false)
	}
}

// share returns max divided among n, rounded up (0: unbounded stays 0).
func share(max, n int) int {
	if max <= 0 {
		return 0
	}
	return (max + n - 1) / n
}
