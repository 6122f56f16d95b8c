package stream

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/streamscore/streamscore/features"
)

// TestSeqStatesCardVia checks that reaching a card's model state through
// its feature card state's slot (cardVia, as the workers do) gives exactly
// the state the look-up gives (cardOf), event by event, on a stream that
// takes every path that could leave a slot stale: cards evicted from the
// Builder for its cap (and recreated), idle past the TTL (reset in place,
// or swept), a PAN-key rotation (the Builder renaming card states, or not,
// and the model state moved, or not), re-deliveries (Peek), a model reload
// that changes the state's shape (migration), and restores of the model
// state alone and of both. Two seqStates are fed the same events, one
// through cardOf and one through cardVia; each event's state must hold the
// same values in both before the test writes a stamp into both.
func TestSeqStatesCardVia(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []features.Option
	}{
		{"default", nil},
		{"spec", []features.Option{features.WithSpec(features.DefaultSpec())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testCardVia(t, tc.opts)
		})
	}
}

func testCardVia(t *testing.T, opts []features.Option) {
	const (
		ttl    = time.Hour
		nCards = 60
		events = 40_000
	)
	newBuilder := func() *features.Builder {
		b, err := features.NewBuilder(nil, append([]features.Option{features.WithTTL(ttl), features.WithMaxCards(45)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := newBuilder()
	ref, via := newSeqStates(ttl, nil, nil), newSeqStates(ttl, nil, nil)
	slots, _ := ref.setModels(bind(t, gruModel(t, "g", 2, "a")), nil)
	via.setModels(bind(t, gruModel(t, "g", 2, "a")), nil)
	row := make([]float32, b.Width())
	r := rand.New(rand.NewPCG(7, 13))
	ts := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var applied []features.Event
	var hits, peeks, rotated, evicted int
	for i := range events {
		ts = ts.Add(time.Duration(r.IntN(int(2 * time.Minute))))
		if r.IntN(2000) == 0 {
			ts = ts.Add(ttl + time.Minute) // every card idle past the TTL
		}
		k := r.IntN(nCards)
		e := features.Event{TxID: fmt.Sprint("t", i), CardID: fmt.Sprint("c-", k), TerminalID: fmt.Sprint("m-", k%7), TS: ts, Amount: float64(1 + r.IntN(100))}
		if i >= 10_000 && i < 25_000 { // a PAN-key rotation
			switch r.IntN(4) {
			case 0, 1: // a clear card number: both pseudonyms
				e.CardID, e.CardAlias = fmt.Sprint("n-", k), e.CardID
			case 2: // pseudonymised upstream under the new key
				e.CardID = fmt.Sprint("n-", k)
			}
			if e.CardAlias != "" {
				rotated++
			}
		} else if i >= 25_000 {
			e.CardID = fmt.Sprint("n-", k)
		}
		switch i {
		case 20_000: // a reload: the GRU's state shape changes
			slots, _ = ref.setModels(bind(t, gruModel(t, "g", 3, "a")), nil)
			via.setModels(bind(t, gruModel(t, "g", 3, "a")), nil)
		case 30_000: // a restore of the model state alone: the Builder keeps its slots
			restoreSeq(t, ref)
			restoreSeq(t, via)
		case 35_000: // a restore of both
			var buf bytes.Buffer
			if err := b.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			b = newBuilder()
			if err := b.ReadState(&buf); err != nil {
				t.Fatal(err)
			}
			restoreSeq(t, ref)
			restoreSeq(t, via)
		}
		if len(applied) > 0 && r.IntN(20) == 0 { // a re-delivery
			e = applied[r.IntN(len(applied))]
			b.PeekLocal(&e, row, false)
			peeks++
		} else {
			b.UpdateLocal(&e, row, false)
			applied = append(applied, e)
		}
		for _, id := range b.EvictedCards() { // as seqCards does, before the row
			ref.drop(id)
			via.drop(id)
			evicted++
		}
		slot := b.LastCardSlot()
		if slot != nil {
			if c := (*cardSeq)(slot.Load()); c != nil && c.link == uintptr(unsafe.Pointer(slot)) {
				hits++
			}
		}
		cr, cv := ref.cardOf(&e), via.cardVia(&e, slot)
		if cr.last != cv.last || !slices.Equal(cr.data, cv.data) || cr.layout.size != cv.layout.size {
			t.Fatalf("event %d (card %q alias %q): via the slot last %d state %v, by look-up last %d state %v",
				i, e.CardID, e.CardAlias, cv.last, cv.data, cr.last, cr.data)
		}
		s := ref.state(cr, slots[0])
		s[0], s[1] = float32(i), s[1]+1
		copy(via.state(cv, slots[0]), s)
		if i%256 == 255 {
			ref.sweep(256)
			via.sweep(256)
		}
	}
	if len(ref.cards) != len(via.cards) {
		t.Fatalf("%d cards via the slots, %d by look-up", len(via.cards), len(ref.cards))
	}
	for id, c := range ref.cards {
		if v, ok := via.cards[id]; !ok || !slices.Equal(v.data, c.data) || v.last != c.last {
			t.Fatalf("card %q differs at the end", id)
		}
	}
	t.Logf("%d events: %d reached through the slot, %d re-deliveries, %d with an alias, %d cards evicted", events, hits, peeks, rotated, evicted)
	if hits < events/4 || peeks == 0 || rotated == 0 || evicted == 0 {
		t.Fatal("the stream did not take every path")
	}
}

// restoreSeq replaces ss's cards with a copy read back from its snapshot.
func restoreSeq(t *testing.T, ss *seqStates) {
	t.Helper()
	var buf bytes.Buffer
	if err := ss.writeState(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.readState(&buf); err != nil {
		t.Fatal(err)
	}
}

// TestSeqStatesCardViaStale checks each way a slot's state goes stale, one
// at a time: the state dropped (card cap), swept, moved to another id
// (rekey), replaced by a restore; and a slot filled under the previous
// pseudonym of a card state the Builder renamed. Each must be looked up
// again, never used.
func TestSeqStatesCardViaStale(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ev := func(id, alias string, d time.Duration) *features.Event {
		return &features.Event{CardID: id, CardAlias: alias, TS: t0.Add(d)}
	}
	tests := []struct {
		name  string
		stale func(ss *seqStates, slot *features.CardSlot)
		next  *features.Event // the card's next event, through the same slot
	}{
		{"dropped", func(ss *seqStates, _ *features.CardSlot) { ss.drop("a") }, ev("a", "", time.Minute)},
		{"swept", func(ss *seqStates, _ *features.CardSlot) {
			ss.cardOf(ev("other", "", 2*time.Hour))
			ss.sweep(seqSweepEvery)
		}, ev("a", "", 2*time.Hour)},
		{"rekeyed", func(ss *seqStates, _ *features.CardSlot) { ss.cardOf(ev("b", "a", time.Minute)) }, ev("a", "", 2*time.Minute)},
		{"restored", func(ss *seqStates, _ *features.CardSlot) { restoreSeq(t, ss) }, ev("a", "", time.Minute)},
		{"renamed in the Builder", func(ss *seqStates, slot *features.CardSlot) {
			ss.cardOf(ev("b", "", 0)) // b has a state: a's is not moved
			ss.cardVia(ev("b", "a", time.Minute), slot)
		}, ev("b", "", 2*time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ss := newSeqStates(time.Hour, nil, nil)
			slots, _ := ss.setModels(bind(t, gruModel(t, "g", 2, "a")), nil)
			var slot features.CardSlot
			c := ss.cardVia(ev("a", "", 0), &slot)
			ss.state(c, slots[0])[0] = 1
			if (*cardSeq)(slot.Load()) != c || ss.cardVia(ev("a", "", time.Second), &slot) != c {
				t.Fatal("the slot was not filled")
			}
			tc.stale(ss, &slot)
			want := ss.cards[tc.next.CardID]
			got := ss.cardVia(tc.next, &slot)
			if want != nil && got != want || want == nil && got == c {
				t.Fatalf("got the stale state (%p, stale %p, look-up %p)", got, c, want)
			}
			if got != ss.cards[tc.next.CardID] {
				t.Fatal("the state is not the card's in the map")
			}
		})
	}
}

// BenchmarkSeqStatesCardVia is BenchmarkSeqStatesCard with each card's
// state reached through its slot (cardVia, as seqCards does), the slots
// filled by a first pass: one slot per card, each in a 224-byte object
// of its own (the feature card state's size), so that loading it costs
// what it costs in the worker, a cache miss. Measured 2026-12-06 (2 shared
// cores, old and new builds alternated, 5 rounds, medians): 112 ns/op,
// against 311 ns/op for BenchmarkSeqStatesCard before this path existed
// (350 now: card's second half became a call, touch, shared with cardVia).
func BenchmarkSeqStatesCardVia(b *testing.B) {
	const cards = 200_000
	ss := newSeqStates(time.Hour, nil, nil)
	ss.layout = &seqLayout{slots: []seqSlot{{name: "gru", key: "score:gru", shape: "gru:16", size: 16}}, size: 16}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	type cardState struct {
		_    [216 - unsafe.Sizeof(features.CardSlot{})]byte
		slot features.CardSlot
	}
	evs := make([]features.Event, cards)
	states := make([]*cardState, cards)
	for i := range evs {
		evs[i] = features.Event{CardID: fmt.Sprintf("c-%08d", i), TS: t0}
		states[i] = new(cardState)
		ss.cardVia(&evs[i], &states[i].slot)
	}
	r := rand.New(rand.NewPCG(1, 2))
	order := r.Perm(cards)
	var sum float32
	i := 0
	for b.Loop() {
		k := order[i]
		c := ss.cardVia(&evs[k], &states[k].slot)
		sum += c.data[3]
		if i++; i == cards {
			i = 0
		}
	}
	_ = sum
}
