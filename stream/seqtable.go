package stream

import (
	"hash/maphash"
	"iter"
	"strings"
	"unsafe"
)

// cardIDInline is the longest card id kept in its card's allocation (a PAN
// pseudonym is at most 44 bytes); a longer one is a string of its own.
const cardIDInline = 48

// cardTable holds the cards' sequential-model states by card id, for a
// look-up that costs one cache miss where a map[string] costs several: the
// Go map is keyed by a 64-bit hash of the id, its slot holds the state's
// pointer, and the state holds its id in its own allocation (newCardSeq),
// so checking the id reads the memory the caller reads next anyway. With a
// string key the map's slot points to the key's bytes, a separate
// allocation, read before the state.
//
// The hash is maphash with a seed of the table's own, random: card ids are
// partly chosen by whoever makes transactions, and a hash they could
// predict would let them pile ids on one slot. Two ids of one hash are
// still kept exactly: the first holds the slot, the others go to over, a
// map[string] (empty but for such ids: none in practice), which every path
// (get, put, del, all, sweep) consults.
//
// Not safe for concurrent use.
type cardTable struct {
	seed maphash.Seed
	m    map[uint64]*cardSeq // by hash of id; each holds its id (c.id)
	over map[string]*cardSeq // ids whose hash another id holds in m
	// testHash replaces maphash when not nil: tests force collisions.
	testHash func(string) uint64
}

func newCardTable(hint int) cardTable {
	return cardTable{seed: maphash.MakeSeed(), m: make(map[uint64]*cardSeq, hint)}
}

func (t *cardTable) hash(id string) uint64 {
	if t.testHash != nil {
		return t.testHash(id)
	}
	return maphash.String(t.seed, id)
}

// len returns the number of cards held.
func (t *cardTable) len() int { return len(t.m) + len(t.over) }

// get returns the state of card id, or nil.
func (t *cardTable) get(id string) *cardSeq {
	if c := t.m[t.hash(id)]; c != nil && c.id == id {
		return c
	}
	if len(t.over) != 0 {
		return t.over[id]
	}
	return nil
}

// put stores c under c.id, which the table must not hold.
func (t *cardTable) put(c *cardSeq) {
	h := t.hash(c.id)
	if _, taken := t.m[h]; !taken {
		t.m[h] = c
		return
	}
	if t.over == nil {
		t.over = make(map[string]*cardSeq)
	}
	t.over[c.id] = c
}

// del forgets card id, if held.
func (t *cardTable) del(id string) {
	h := t.hash(id)
	if c := t.m[h]; c != nil && c.id == id {
		delete(t.m, h)
		if len(t.over) != 0 {
			t.promote()
		}
		return
	}
	delete(t.over, id)
}

// promote moves into m the ids of over whose hash no longer has a holder.
func (t *cardTable) promote() {
	for id, c := range t.over {
		h := t.hash(id)
		if _, taken := t.m[h]; !taken {
			t.m[h] = c
			delete(t.over, id)
		}
	}
}

// all yields every card held, in no particular order. The caller must not
// change the table while ranging over it, but through deleteIf.
func (t *cardTable) all() iter.Seq[*cardSeq] {
	return func(yield func(*cardSeq) bool) {
		for _, c := range t.m {
			if !yield(c) {
				return
			}
		}
		for _, c := range t.over {
			if !yield(c) {
				return
			}
		}
	}
}

// deleteIf forgets every card for which drop returns true.
func (t *cardTable) deleteIf(drop func(*cardSeq) bool) {
	for h, c := range t.m {
		if drop(c) {
			delete(t.m, h)
		}
	}
	for id, c := range t.over {
		if drop(c) {
			delete(t.over, id)
		}
	}
	if len(t.over) != 0 {
		t.promote()
	}
}

// clear forgets every card.
func (t *cardTable) clear() {
	clear(t.m)
	t.over = nil
}

// inlineID returns id stored in buf (part of its card's allocation) when it
// fits, else a copy of its own. buf is never written again: the string's
// bytes do not change.
func inlineID(buf []byte, id string) string {
	if len(id) > len(buf) || len(id) == 0 {
		return strings.Clone(id)
	}
	n := copy(buf, id)
	return unsafe.String(&buf[0], n)
}
