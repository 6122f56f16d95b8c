package features

import (
	"slices"
)

// A PAN-key rotation gives every card a new pseudonym. While the key file
// still holds the previous key, the Decoder gives each event whose card_id
// was a clear card number both pseudonyms: CardID under the active key and
// CardAlias under the previous one. The first time a card is seen that way,
// its state is moved from CardAlias to CardID (renamed, not copied) wherever
// it lives: the Builder's card map (either engine) and, with a spec that
// has card fraud features, the card's labels in the Shared. The stream does
// the same for its per-card sequential-model state. So a rotation keeps
// every card's windows, labels and model state, and the rows are those of a
// run that never rotated (but for the card_id string).
//
// Labels: a label decoded from a clear card number carries both pseudonyms
// and moves the card's labels the same way (ApplyLabel). A label that
// arrives already pseudonymised under the previous key after the card moved
// lands under the old pseudonym; the card's events read the labels under
// both of their pseudonyms (a tx_id counted once) and the next Update moves
// them over. Only a correction (fraud=false) under the old pseudonym of a
// label already moved finds nothing to withdraw.

// rekey moves e's card state from e.CardAlias to e.CardID in m when CardID
// has no live state and CardAlias has one, as get would see them after the
// caller's tick. It reports whether it moved a state.
func rekey[V expiring](m *expiryMap[V], e *Event) bool {
	if e.CardAlias == "" || e.CardAlias == e.CardID {
		return false
	}
	if _, ok := m.get(e.CardID); ok {
		return false
	}
	if _, ok := m.get(e.CardAlias); !ok { // a live state from old is now in cur
		return false
	}
	m.rename(e.CardAlias, e.CardID)
	return true
}

// peekCard is peek for a card: the state under e.CardID, or else the one
// under e.CardAlias that Update would move to CardID (rekey). It changes
// nothing.
func peekCard[V expiring](m *expiryMap[V], e *Event, now int64) (V, bool) {
	v, ok := m.peek(e.CardID, now)
	if !ok && e.CardAlias != "" {
		v, ok = m.peek(e.CardAlias, now)
	}
	return v, ok
}

// rekeyCard moves e's card state to e.CardID (see rekey) in the Builder's
// card map and, with a spec, in the Shared's card label map, and counts the
// card in Rekeyed when its windows moved. Update calls it after ticking the card map's clock.
func (b *Builder) rekeyCard(e *Event) {
	if e.CardAlias == "" {
		return
	}
	var moved bool
	if b.sp == nil {
		moved = rekey(&b.cards, e)
	} else {
		moved = rekey(&b.sp.loc, e)
		if cs := b.sp.cs; cs.local >= 0 && cs.ents[cs.local].lmap >= 0 {
			b.shared.rekeyLabels(cs.ents[cs.local].lmap, e.CardID, e.CardAlias, nanos(e.TS))
		}
	}
	if moved {
		b.rekeyed++
	}
}

// Rekeyed returns the number of cards whose windows Update moved from their
// pseudonym under the previous PAN key to the one under the active key
// (Event.CardAlias): during a rotation, one per card seen with state under
// its old pseudonym only. Monotonic over the Builder's life (a restored
// snapshot does not carry it): export it as a counter. Like Update, not safe
// for concurrent use.
func (b *Builder) Rekeyed() uint64 { return b.rekeyed }

// rekeyLabels moves the fraud labels held in spec map mi from the card's
// old pseudonym alias to id (merging them, a tx_id once, when id already has
// some). Each stripe is locked on its own, never both at once. It reports
// whether it moved any state.
func (s *Shared) rekeyLabels(mi int, id, alias string, t int64) bool {
	if alias == "" || alias == id {
		return false
	}
	st := s.stripe(alias)
	st.mu.Lock()
	mp := &st.spec[mi]
	mp.tick(t)
	from, ok := mp.get(alias)
	if ok {
		delete(mp.cur, alias)
	}
	st.mu.Unlock()
	if !ok {
		return false
	}
	st = s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	mp = &st.spec[mi]
	mp.tick(t)
	to, ok := mp.get(id)
	if !ok {
		mp.put(id, from) // through put: under a card cap it gets its heap entry
		return true
	}
	for _, p := range from.labels {
		if !slices.ContainsFunc(to.labels, func(q labelPoint) bool { return q.tx == p.tx }) {
			to.labels = slices.Insert(to.labels, int(labelsUpTo(to.labels, p.ts)), p)
		}
	}
	to.seen = max(to.seen, from.seen)
	to.evictLabels(s.sp.retain[mi])
	return true
}

// aliasLabels appends to dst the tx hashes of the fraud labels counting in
// (from, to] at t (labelIn) that e's card has under e.CardAlias in spec map mi: labels that
// arrived under its old pseudonym after it moved (the caller counts those
// not also under e.CardID). It takes and releases the alias's stripe lock.
func (s *Shared) aliasLabels(mi int, e *Event, txTime bool, from, to, t int64, dst []uint64) []uint64 {
	if e.CardAlias == "" || e.CardAlias == e.CardID {
		return dst
	}
	st := s.stripe(e.CardAlias)
	st.mu.Lock()
	defer st.mu.Unlock()
	ls, ok := st.spec[mi].peek(e.CardAlias, nanos(e.TS))
	if !ok {
		return dst
	}
	for _, p := range ls.labels {
		if labelIn(p, txTime, from, to, t) {
			dst = append(dst, p.tx)
		}
	}
	return dst
}
