package align

import (
	"math"
	"slices"
	"testing"
	"time"
)

// fuzzModel is what the test knows independently of the Aligner.
type fuzzModel struct {
	t       *testing.T
	a       *Aligner[item]
	c       *clock
	added   map[int]bool
	wm      map[int]int64
	nextIdx map[int]int
	// buffered holds pushed items not yet released or dropped, with
	// whether they were pushed below the last ordered release.
	buffered map[item]bool
	released map[item]bool
	last     item
	hasLast  bool
}

func (m *fuzzModel) pop() bool {
	t := m.t
	v, why, ok := m.a.Pop()
	if !ok {
		// Nothing may go: no late item pending, and the smallest buffered
		// item is held back by a partition not past it.
		var inOrder []item
		for it, late := range m.buffered {
			if late {
				t.Fatalf("late item %v pending but Pop refused", it)
			}
			inOrder = append(inOrder, it)
		}
		if len(inOrder) > 0 {
			head := slices.MinFunc(inOrder, less)
			held := false
			for p := range m.added {
				held = held || m.wm[p] <= head.ts
			}
			if !held {
				t.Fatalf("head %v held though every partition is past it (%v)", head, m.wm)
			}
		}
		return false
	}
	late, ok := m.buffered[v]
	if !ok {
		if m.released[v] {
			t.Fatalf("%v released twice", v)
		}
		t.Fatalf("%v released but not buffered (dropped or never pushed)", v)
	}
	delete(m.buffered, v)
	m.released[v] = true
	if late != (why == OutOfOrder) {
		t.Fatalf("%v released as %v; pushed below the last release: %v", v, why, late)
	}
	if why == OutOfOrder {
		return true
	}
	if m.hasLast && less(v, m.last) <= 0 {
		t.Fatalf("%v released in order after %v", v, m.last)
	}
	m.last, m.hasLast = v, true
	past := true
	for p := range m.added {
		past = past && m.wm[p] > v.ts
	}
	if past != (why == Ordered) {
		t.Fatalf("%v released as %v; every partition past it: %v (%v)", v, why, past, m.wm)
	}
	return true
}

// FuzzAlign drives an Aligner with arbitrary operations and checks its
// invariants against a model: every pushed item of a partition not removed
// is released exactly once, in-order releases are strictly sorted, an item
// is flagged out of order exactly when pushed below the last release,
// Ordered means every partition was past it, and a Pop at Deadline
// succeeds.
func FuzzAlign(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 0, 5, 1, 2, 1, 3, 0, 5, 5, 7, 5})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 2, 0, 9, 1, 1, 2, 1, 0, 2, 0, 4, 80, 6, 6, 2, 2, 1, 1, 1, 2, 5, 1, 7, 5})
	f.Add([]byte{0, 3, 2, 3, 1, 2, 3, 4, 2, 3, 0, 3, 1, 3, 6, 4, 200, 6, 2, 3, 0, 7, 1, 5, 0, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := newClock()
		a := newTest[item](t, c, WithMaxPerPartition(3))
		m := &fuzzModel{t: t, a: a, c: c, added: map[int]bool{}, wm: map[int]int64{},
			nextIdx: map[int]int{}, buffered: map[item]bool{}, released: map[item]bool{}}
		arg := func(i *int) byte {
			if *i >= len(ops) {
				return 0
			}
			*i++
			return ops[*i-1]
		}
		for i := 0; i < len(ops); {
			op := arg(&i) % 8
			p := int(arg(&i) % 4)
			switch op {
			case 0:
				err := a.Add(p)
				if (err == nil) == m.added[p] {
					t.Fatalf("add %d: %v, added before: %v", p, err, m.added[p])
				}
				if err == nil {
					m.added[p] = true
					m.wm[p] = math.MinInt64
				}
			case 1:
				var dropped []item
				n, err := a.Remove(p, func(v item) { dropped = append(dropped, v) })
				if (err == nil) != m.added[p] {
					t.Fatalf("remove %d: %v, added: %v", p, err, m.added[p])
				}
				var want []item
				for it := range m.buffered {
					if it.part == p {
						want = append(want, it)
						delete(m.buffered, it)
					}
				}
				slices.SortFunc(want, less)
				slices.SortFunc(dropped, less)
				if n != len(dropped) || !slices.Equal(dropped, want) {
					t.Fatalf("remove %d dropped %d %v, want %v", p, n, dropped, want)
				}
				delete(m.added, p)
				delete(m.wm, p)
			case 2:
				b := arg(&i)
				it := item{ts: int64(b % 16), key: string(rune('a' + b/16%3)), part: p, idx: m.nextIdx[p]}
				caughtUp := b&0x80 != 0
				err := a.Push(p, it.ts, it.key, it, caughtUp)
				if (err == nil) != m.added[p] {
					t.Fatalf("push %d: %v, added: %v", p, err, m.added[p])
				}
				if err != nil {
					break
				}
				m.nextIdx[p]++
				m.wm[p] = max(m.wm[p], it.ts)
				// Below the last release in (ts, key, partition): a later push
				// of the same partition with an equal triple is not.
				l := m.last
				l.idx = -1
				it0 := it
				it0.idx = -1
				m.buffered[it] = m.hasLast && less(it0, l) < 0
			case 3:
				if err := a.MarkCaughtUp(p); (err == nil) != m.added[p] {
					t.Fatalf("mark %d: %v, added: %v", p, err, m.added[p])
				}
			case 4:
				c.advance(time.Duration(arg(&i)) * 5 * time.Millisecond)
			case 5:
				for m.pop() {
				}
			case 6:
				m.pop()
			case 7:
				d, ok := a.Deadline()
				if ok != (a.Len() > 0) {
					t.Fatalf("deadline ok %v with %d buffered", ok, a.Len())
				}
				if !ok {
					break
				}
				if d.After(c.t) {
					c.t = d
				}
				if !m.pop() {
					t.Fatalf("no release at the deadline %v with %d buffered", d, a.Len())
				}
			}
			if a.Len() != len(m.buffered) {
				t.Fatalf("Len %d, model %d", a.Len(), len(m.buffered))
			}
		}
		// Every partition is past both bounds LagWait after the owner's
		// Deadline (which starts the quiet time of the last pushes).
		a.Deadline()
		c.advance(testLag)
		for m.pop() {
		}
		if len(m.buffered) != 0 {
			t.Fatalf("%d items never released: %v", len(m.buffered), m.buffered)
		}
		st := a.Stats()
		if st.Buffered != 0 || st.Ordered+st.IdleBound+st.LagBound+st.OutOfOrder != uint64(len(m.released)) {
			t.Fatalf("stats %+v, released %d", st, len(m.released))
		}
	})
}
