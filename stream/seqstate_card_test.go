package stream

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/streamscore/streamscore/features"
)

// TestNewCardSeq checks a new card's state at sizes around the inline
// classes: len and cap the layout's size, zero, its time and layout; and
// that a card idle past the TTL starts again from zero in the current
// layout.
func TestNewCardSeq(t *testing.T) {
	for _, n := range []int{0, 1, 8, 9, 16, 17, 32, 33, 64, 65, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			l := &seqLayout{slots: []seqSlot{{name: "m", key: "score:m", shape: "s", size: n}}, size: n}
			c := newCardSeq(42, l)
			if len(c.data) != n || cap(c.data) != n || c.last != 42 || c.layout != l {
				t.Fatalf("len %d cap %d last %d layout %p, want %d %d 42 %p", len(c.data), cap(c.data), c.last, c.layout, n, n, l)
			}
			for i, v := range c.data {
				if v != 0 {
					t.Fatalf("data[%d] = %v", i, v)
				}
			}
			ss := newSeqStates(time.Second, nil, nil)
			ss.layout = l
			t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			e := features.Event{CardID: "c-1", TS: t0}
			c = ss.cardOf(&e)
			for i := range c.data {
				c.data[i] = float32(i + 1)
			}
			e.TS = t0.Add(500 * time.Millisecond)
			if c2 := ss.cardOf(&e); c2 != c || (n > 0 && c2.data[n-1] != float32(n)) {
				t.Fatal("state lost within the TTL")
			}
			e.TS = t0.Add(3 * time.Second)
			c2 := ss.cardOf(&e)
			if len(c2.data) != n {
				t.Fatalf("after the TTL: len %d, want %d", len(c2.data), n)
			}
			for i, v := range c2.data {
				if v != 0 {
					t.Fatalf("after the TTL: data[%d] = %v, want 0", i, v)
				}
			}
		})
	}
}

// BenchmarkSeqStatesCard measures the worker's per-row state lookup
// (seqCards: seqStates.cardOf) and a read of the state (the GRU's copy of
// it), over 200,000 cards seen in random order (a state that no longer
// fits the caches), GRU state of 16 values. Each look-up is made with an id
// of its own bytes, as a decoded event's is (not the string the card was
// first stored under, which a string compare would match by its pointer).
func BenchmarkSeqStatesCard(b *testing.B) {
	const cards = 200_000
	ss := newSeqStates(time.Hour, nil, nil)
	ss.layout = &seqLayout{slots: []seqSlot{{name: "gru", key: "score:gru", shape: "gru:16", size: 16}}, size: 16}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	evs := make([]features.Event, cards)
	for i := range evs {
		evs[i] = features.Event{CardID: fmt.Sprintf("c-%08d", i), TS: t0}
		ss.cardOf(&evs[i])
	}
	for i := range evs {
		evs[i].CardID = strings.Clone(evs[i].CardID)
	}
	r := rand.New(rand.NewPCG(1, 2))
	order := r.Perm(cards)
	var sum float32
	i := 0
	for b.Loop() {
		c := ss.cardOf(&evs[order[i]])
		sum += c.data[3]
		if i++; i == cards {
			i = 0
		}
	}
	_ = sum
}

// TestSeqStatesKeyOwnBytes checks that a card's state is stored under a
// copy of its id: a decoded event's CardID is part of one string holding
// all of the event's fields, which a key sharing it would keep alive for
// as long as the card's state.
func TestSeqStatesKeyOwnBytes(t *testing.T) {
	ss := newSeqStates(time.Hour, nil, nil)
	ss.layout = &seqLayout{slots: []seqSlot{{name: "gru", key: "score:gru", shape: "gru:2", size: 2}}, size: 2}
	fields := "t-000001c-42m-7EUR5411posFR"
	e := features.Event{TxID: fields[:8], CardID: fields[8:12], TerminalID: fields[12:15], TS: time.Unix(1, 0)}
	ss.cardOf(&e)
	e.CardID, e.CardAlias = fields[15:20], fields[8:12] // a rotation: the state moves to another id
	ss.cardOf(&e)
	e.CardID, e.CardAlias = fields[20:24], ""
	ss.cardOf(&e)
	lo := uintptr(unsafe.Pointer(unsafe.StringData(fields)))
	hi := lo + uintptr(len(fields))
	for k := range ss.cards {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(k))); p >= lo && p < hi {
			t.Errorf("card %q is stored under the event's own string", k)
		}
	}
	if len(ss.cards) != 2 {
		t.Errorf("%d cards, want 2", len(ss.cards))
	}
}
