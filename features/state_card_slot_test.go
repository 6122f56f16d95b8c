package features

import (
	"bytes"
	"testing"
	"time"
	"unsafe"
)

// TestLastCardSlot checks the slot Builder.LastCardSlot hands out, for both
// engines: one per card state, kept while the state lives (and when a
// rotation renames it), nil for Peek of an unknown card or of an event with
// an alias, and a fresh, empty one after a restore.
func TestLastCardSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default", nil},
		{"spec", []Option{WithSpec(DefaultSpec())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBuilder(nil, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			row := make([]float32, b.Width())
			t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			ev := func(id, alias string, d time.Duration) *Event {
				return &Event{TxID: "t", CardID: id, CardAlias: alias, TerminalID: "m", TS: t0.Add(d), Amount: 5}
			}
			b.UpdateLocal(ev("a", "", 0), row, false)
			a := b.LastCardSlot()
			if a == nil || a.Load() != nil {
				t.Fatalf("a new card's slot: %p, holding %v; want an empty slot", a, a.Load())
			}
			var x int
			a.Store(unsafe.Pointer(&x))
			b.UpdateLocal(ev("c", "", time.Second), row, false)
			if c := b.LastCardSlot(); c == nil || c == a || c.Load() != nil {
				t.Fatal("another card got a's slot, or a filled one")
			}
			b.Update(ev("a", "", 2*time.Second), row)
			if got := b.LastCardSlot(); got != a || got.Load() != unsafe.Pointer(&x) {
				t.Fatal("a's second event: another slot, or its value lost")
			}
			b.Peek(ev("a", "", 2*time.Second), row)
			if b.LastCardSlot() != a {
				t.Fatal("Peek of a: not a's slot")
			}
			b.PeekLocal(ev("unknown", "", 2*time.Second), row, false)
			if b.LastCardSlot() != nil {
				t.Fatal("Peek of an unknown card: a slot")
			}
			b.PeekLocal(ev("n", "a", 3*time.Second), row, false)
			if b.LastCardSlot() != nil {
				t.Fatal("Peek of an event with an alias: a slot")
			}
			b.UpdateLocal(ev("n", "a", 3*time.Second), row, false) // the rotation renames a to n
			if b.Rekeyed() != 1 || b.LastCardSlot() != a {
				t.Fatalf("rekeyed %d, slot %p: want a's state and slot moved to n", b.Rekeyed(), b.LastCardSlot())
			}
			var buf bytes.Buffer
			if err := b.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			if err := b.ReadState(&buf); err != nil {
				t.Fatal(err)
			}
			if b.LastCardSlot() != nil {
				t.Fatal("a slot of the state before the restore")
			}
			b.UpdateLocal(ev("n", "", 4*time.Second), row, false)
			if s := b.LastCardSlot(); s == nil || s == a || s.Load() != nil {
				t.Fatal("after a restore: not a fresh, empty slot")
			}
		})
	}
}
