package stream

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCardTableCollisions drives a cardTable whose hash puts many ids on
// one value (so most of them live in its overflow map) through random
// puts, gets, deletes, sweeps and walks, against a map[string] doing the
// same: every path must find exactly the cards the map holds.
func TestCardTableCollisions(t *testing.T) {
	for _, tc := range []struct {
		name string
		hash func(string) uint64
	}{
		{"seeded", nil},
		{"all-one", func(string) uint64 { return 7 }},
		{"by-length", func(s string) uint64 { return uint64(len(s)) }},
		{"by-last-byte", func(s string) uint64 { return uint64(s[len(s)-1] % 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newCardTable(0)
			tab.testHash = tc.hash
			ref := map[string]*cardSeq{}
			l := &seqLayout{size: 4}
			r := rand.New(rand.NewPCG(3, 4))
			id := func() string {
				n := r.IntN(60)
				if r.IntN(2) == 0 {
					return fmt.Sprintf("c-%d", n) // short: the id in the card's allocation
				}
				return fmt.Sprintf("p1:k:%s-%d", strings.Repeat("x", 40), n) // longer than cardIDInline
			}
			check := func(step int) {
				t.Helper()
				if tab.len() != len(ref) {
					t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(ref))
				}
				var walked []string
				for c := range tab.all() {
					walked = append(walked, c.id)
					if ref[c.id] != c {
						t.Fatalf("step %d: walk yields %q, not the card held", step, c.id)
					}
				}
				if len(walked) != len(ref) {
					t.Fatalf("step %d: walk yields %d cards, want %d", step, len(walked), len(ref))
				}
				for k, c := range ref {
					if got := tab.get(k); got != c {
						t.Fatalf("step %d: get(%q) = %p, want %p", step, k, got, c)
					}
				}
			}
			for step := range 3000 {
				k := id()
				switch op := r.IntN(10); {
				case op < 5:
					if got := tab.get(k); got != ref[k] {
						t.Fatalf("step %d: get(%q) = %p, want %p", step, k, got, ref[k])
					}
					if ref[k] == nil {
						c := newCardSeq(int64(step), l, k)
						tab.put(c)
						ref[k] = c
					}
				case op < 9:
					tab.del(k)
					delete(ref, k)
				default:
					cut := int64(step - 100)
					tab.deleteIf(func(c *cardSeq) bool { return c.last < cut })
					for k, c := range ref {
						if c.last < cut {
							delete(ref, k)
						}
					}
				}
				if step%50 == 0 {
					check(step)
				}
			}
			check(-1)
			if tc.hash != nil && tab.len() > 1 && len(tab.over) == 0 {
				t.Fatalf("no id in the overflow map: the test forced no collision")
			}
			tab.clear()
			if tab.len() != 0 || tab.get("c-1") != nil {
				t.Fatalf("after clear: %d cards", tab.len())
			}
		})
	}
}

// TestSeqStatesCollisions runs seqStates through card, rekey, drop, sweep
// and a snapshot round trip with every id on one hash value: the cards and
// their states are those of the same run with the seeded hash.
func TestSeqStatesCollisions(t *testing.T) {
	run := func(hash func(string) uint64) (*seqStates, []byte) {
		ss := newSeqStates(time.Hour, nil, nil)
		ss.cards.testHash = hash
		ss.layout = &seqLayout{slots: []seqSlot{{name: "gru", key: "score:gru", shape: "gru:2", size: 2}}, size: 2}
		t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for i := range 200 {
			ts := t0.Add(time.Duration(i) * time.Minute)
			c := ss.card(fmt.Sprintf("c-%d", i%37), ts.UnixNano())
			c.data[0]++
			c.data[1] = float32(i)
			if i%23 == 0 {
				ss.drop(fmt.Sprintf("c-%d", (i+5)%37))
			}
			if i%31 == 0 { // a PAN-key rotation: c-<n> becomes n-<n>
				ss.rekey(fmt.Sprintf("n-%d", i%37), fmt.Sprintf("c-%d", i%37), ts.UnixNano())
			}
			if i%40 == 0 {
				ss.sweep(1 << 20)
			}
		}
		var buf bytes.Buffer
		if err := ss.writeState(&buf); err != nil {
			t.Fatal(err)
		}
		return ss, buf.Bytes()
	}
	want, _ := run(nil)
	got, snap := run(func(string) uint64 { return 1 })
	same := func(what string, got *seqStates) {
		t.Helper()
		if got.cards.len() != want.cards.len() {
			t.Fatalf("%s: %d cards, want %d", what, got.cards.len(), want.cards.len())
		}
		for w := range want.cards.all() {
			c := got.cards.get(w.id)
			if c == nil || c.last != w.last || !slices.Equal(c.data, w.data) {
				t.Fatalf("%s: card %q: %+v, want %+v", what, w.id, c, w)
			}
		}
	}
	same("forced collisions", got)
	if len(got.cards.over) == 0 {
		t.Fatal("no card in the overflow map: the test forced no collision")
	}
	back := newSeqStates(time.Hour, nil, nil)
	back.cards.testHash = func(string) uint64 { return 1 }
	back.layout = want.layout
	if _, err := back.readState(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	same("restored with collisions", back)
	seeded := newSeqStates(time.Hour, nil, nil)
	seeded.layout = want.layout
	if _, err := seeded.readState(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	same("restored seeded", seeded)
}
