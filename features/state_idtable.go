package features

import "iter"

// idTable is one generation of an expiryMap: entity states by id, in an
// open-addressing table (linear probing) whose slot holds the id's 64-bit
// hash, the id and the state. A look-up reads one slot — the hash, the
// id's header and the state's pointer on one cache line — then the id's
// bytes and the state at once; a map[string] reads its group's control
// word first, then the slot.
//
// The hash is given by the caller (expiryMap's, seeded at random per map:
// card ids are partly chosen by whoever makes transactions, and a hash
// they could predict would let them pile ids on one probe sequence). Two
// ids of one hash are kept apart exactly: a slot matches only when both
// its hash and its id are those looked up.
//
// The zero idTable is empty. Not safe for concurrent use.
type idTable[V comparable] struct {
	slots []idSlot[V] // a power of two long, or nil; h == 0: free
	n     int
}

type idSlot[V comparable] struct {
	h  uint64 // hash of id, never 0 (idHash)
	id string
	v  V
}

// idHash makes a hash usable in a slot (0 marks a free one).
func idHash(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// newIDTable returns a table with room for hint ids before it grows.
func newIDTable[V comparable](hint int) idTable[V] {
	if hint <= 0 {
		return idTable[V]{}
	}
	size := 8
	for size*3/4 < hint {
		size *= 2
	}
	return idTable[V]{slots: make([]idSlot[V], size)}
}

func (t *idTable[V]) len() int { return t.n }

// index returns the slot of id (hash h), or -1.
func (t *idTable[V]) index(h uint64, id string) int {
	if t.n == 0 {
		return -1
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.h == h && s.id == id {
			return int(i)
		}
		if s.h == 0 {
			return -1
		}
	}
}

// get returns the state of id (hash h).
func (t *idTable[V]) get(h uint64, id string) (v V, ok bool) {
	if i := t.index(h, id); i >= 0 {
		return t.slots[i].v, true
	}
	return v, false
}

// set stores v under id (hash h), replacing the state it had. id is kept
// as given: the caller copies it when it must not pin its backing array.
func (t *idTable[V]) set(h uint64, id string, v V) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.h == 0 {
			*s = idSlot[V]{h: h, id: id, v: v}
			t.n++
			return
		}
		if s.h == h && s.id == id {
			s.v = v
			return
		}
	}
}

func (t *idTable[V]) grow() {
	old := t.slots
	t.slots = make([]idSlot[V], max(8, 2*len(old)))
	mask := uint64(len(t.slots) - 1)
	for _, s := range old {
		if s.h == 0 {
			continue
		}
		i := s.h & mask
		for t.slots[i].h != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}

// del removes id (hash h), reporting whether it was held. The slots after
// it in its probe run shift back (no tombstones: a table that sees many
// deletions does not slow down).
func (t *idTable[V]) del(h uint64, id string) bool {
	i := t.index(h, id)
	if i < 0 {
		return false
	}
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].h != 0; j = (j + 1) & mask {
		// Move slot j to the hole at i when its home slot k does not lie
		// in (i, j] (cyclically): from k, probing would not find it past
		// the hole.
		k := int(t.slots[j].h) & mask
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = idSlot[V]{}
	t.n--
	return true
}

// all yields the ids and states held, in slot order (which depends on the
// map's random seed: nothing written may depend on it). The table must not
// change while ranging over it.
func (t *idTable[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for i := range t.slots {
			if s := &t.slots[i]; s.h != 0 && !yield(s.id, s.v) {
				return
			}
		}
	}
}
