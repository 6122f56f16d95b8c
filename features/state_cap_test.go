package features

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// heapGrowth returns how much the live heap grew (bytes, after a
// collection on each side) while fn ran. fn keeps what it measures
// reachable past its return (runtime.KeepAlive in the caller).
func heapGrowth(fn func()) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// fakeCards drives n made-up card ids (one event each, one second apart,
// ten terminals) through b and returns the heap growth in bytes.
func fakeCards(b *Builder, n int) int64 {
	row := make([]float32, b.Width())
	grew := heapGrowth(func() {
		for i := range n {
			e := Event{TxID: fmt.Sprint("tx-", i), CardID: fmt.Sprintf("fake-%09d", i), TerminalID: fmt.Sprint("term-", i%10),
				TS: t0.Add(time.Duration(i) * time.Second), Amount: 10, Country: "FR"}
			b.Update(&e, row)
		}
	})
	runtime.KeepAlive(b)
	return grew
}

// TestMaxCardsFakeIDs is the regression test of the unbounded state: 200,000
// made-up card ids against a cap of 50,000 keep 50,000 cards, count 150,000
// evictions, and the heap grows by what 50,000 cards cost, not 200,000.
func TestMaxCardsFakeIDs(t *testing.T) {
	const n, limit = 200000, 50000
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"builder", nil},
		{"spec", []Option{withSpec(DefaultSpec(), true)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append(slices.Clone(tc.opts), WithMaxCards(limit))
			b := MustBuilder(nil, opts...)
			heap := fakeCards(b, n)
			st := b.Stats()
			if got, want := st.Entities, limit; got != want {
				t.Errorf("cards held = %d, want %d", got, want)
			}
			if got, want := st.EvictedCap, uint64(n-limit); got != want {
				t.Errorf("cap evictions = %d, want %d", got, want)
			}
			if st.EvictedTTL != 0 {
				t.Errorf("ttl evictions = %d, want 0 (200,000 s is within the TTL)", st.EvictedTTL)
			}
			perCard := float64(heap) / limit
			t.Logf("%d made-up cards, cap %d: heap grew %.1f MB (%.0f bytes per card held)", n, limit, float64(heap)/1e6, perCard)
			if raceEnabled {
				return
			}
			// Unbounded, the 200,000 cards cost about 4x this (measured:
			// see the README's memory budget).
			if perCard > 1500 {
				t.Errorf("heap grew %d bytes = %.0f per card held, want <= 1500: the cap does not bound memory", heap, perCard)
			}
			unbounded := fakeCards(MustBuilder(nil, tc.opts...), n)
			t.Logf("without a cap: heap grew %.1f MB", float64(unbounded)/1e6)
			if heap > unbounded/2 {
				t.Errorf("heap grew %d bytes under the cap, %d without: want under half", heap, unbounded)
			}
		})
	}
}

// TestMaxCardsEvictsLeastRecentlySeen checks the eviction order: the card
// with the oldest newest-event time goes first, whatever the arrival order,
// ties broken by the smaller id; EvictedCards names it, and a returning
// card starts from empty state.
func TestMaxCardsEvictsLeastRecentlySeen(t *testing.T) {
	for _, engine := range []struct {
		name string
		opts []Option
	}{{"builder", nil}, {"spec", []Option{withSpec(DefaultSpec(), true)}}} {
		t.Run(engine.name, func(t *testing.T) {
			b := MustBuilder(nil, append(slices.Clone(engine.opts), WithMaxCards(3))...)
			row := make([]float32, b.Width())
			count1d := slices.Index(b.Names(), "card_tx_count_1d")
			steps := []struct {
				card    string
				min     int // event time, minutes after t0
				evicted []string
				count   float32 // card_tx_count_1d of the event
			}{
				{"a", 1, nil, 1},
				{"b", 2, nil, 1},
				{"c", 3, nil, 1},
				{"a", 4, nil, 2},
				{"d", 5, []string{"b"}, 1}, // b: the oldest (2)
				{"e", 0, []string{"c"}, 1}, // out of order: c (3) is now the oldest
				{"f", 6, []string{"e"}, 1}, // e was seen at 0
				{"g", 6, []string{"a"}, 1}, // a (4)
				{"h", 7, []string{"d"}, 1}, // d (5)
				{"b", 8, []string{"f"}, 1}, // f and g both at 6: the smaller id; b starts anew
				{"b", 9, nil, 2},
			}
			for i, s := range steps {
				e := Event{TxID: fmt.Sprint(i), CardID: s.card, TerminalID: "m", TS: t0.Add(time.Duration(s.min) * time.Minute), Amount: 1}
				b.Update(&e, row)
				if got := b.EvictedCards(); !slices.Equal(got, s.evicted) {
					t.Errorf("step %d (%s at %d): evicted %q, want %q", i, s.card, s.min, got, s.evicted)
				}
				if got := row[count1d]; got != s.count {
					t.Errorf("step %d (%s at %d): card_tx_count_1d = %v, want %v", i, s.card, s.min, got, s.count)
				}
				if got := b.Cards(); got > 3 {
					t.Errorf("step %d: %d cards held, cap 3", i, got)
				}
			}
			if got, want := b.Stats().EvictedCap, uint64(6); got != want {
				t.Errorf("cap evictions = %d, want %d", got, want)
			}
		})
	}
}

// TestMaxTerminals checks that a Shared keeps at most its cap of terminals
// (shared among the stripes), and counts the evictions.
func TestMaxTerminals(t *testing.T) {
	for _, engine := range []struct {
		name string
		opts []Option
	}{{"builder", nil}, {"spec", []Option{withSpec(DefaultSpec(), true)}}} {
		t.Run(engine.name, func(t *testing.T) {
			opts := append(slices.Clone(engine.opts), WithMaxTerminals(64), WithStripes(16))
			s := MustShared(opts...)
			b := MustBuilder(s, opts...)
			row := make([]float32, b.Width())
			const n = 5000
			for i := range n {
				e := Event{TxID: fmt.Sprint(i), CardID: "c", TerminalID: fmt.Sprint("fake-term-", i), TS: t0.Add(time.Duration(i) * time.Second), Amount: 1}
				b.Update(&e, row)
			}
			st := s.Stats()
			if st.Entities > 64 {
				t.Errorf("terminals held = %d, want <= 64", st.Entities)
			}
			if got, want := st.EvictedCap, uint64(n-st.Entities); got != want {
				t.Errorf("cap evictions = %d, want %d (held %d)", got, want, st.Entities)
			}
		})
	}
}

// TestMaxCardsSnapshot checks that caps survive a snapshot: a state written
// under a larger cap is cut down to the reader's cap (least recently seen
// first), counters included, and a Builder restored under the same cap then
// evicts exactly as the one that wrote it.
func TestMaxCardsSnapshot(t *testing.T) {
	for _, engine := range []struct {
		name string
		opts []Option
	}{{"builder", nil}, {"spec", []Option{withSpec(DefaultSpec(), true)}}} {
		t.Run(engine.name, func(t *testing.T) {
			opts := func(cards int) []Option { return append(slices.Clone(engine.opts), WithMaxCards(cards)) }
			ev := func(i int) Event {
				// arrival order is not time order: times shuffle by 7 mod 101
				return Event{TxID: fmt.Sprint(i), CardID: fmt.Sprintf("card-%04d", i), TerminalID: "m",
					TS: t0.Add(time.Duration(i*7%101) * time.Minute), Amount: 1}
			}
			src := MustBuilder(nil, opts(50)...)
			row := make([]float32, src.Width())
			for i := range 80 {
				e := ev(i)
				src.Update(&e, row)
			}
			var buf bytes.Buffer
			if err := src.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			small := MustBuilder(nil, opts(10)...)
			if err := small.ReadState(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatal(err)
			}
			if got := small.Cards(); got != 10 {
				t.Fatalf("restored under cap 10: %d cards", got)
			}
			if got, want := small.Stats().EvictedCap, uint64(40); got != want {
				t.Errorf("restored under cap 10: %d cap evictions, want %d", got, want)
			}
			if got := len(small.EvictedCards()); got != 40 {
				t.Errorf("restored under cap 10: EvictedCards names %d cards, want 40", got)
			}
			// The 10 kept are the 10 most recently seen of the 50.
			var held []int64
			var all []int64
			for i := range 80 {
				e := ev(i)
				ts := e.TS.UnixNano()
				if src.peekHeld(e.CardID) {
					all = append(all, ts)
				}
				if small.peekHeld(e.CardID) {
					held = append(held, ts)
				}
			}
			slices.Sort(all)
			slices.Sort(held)
			if want := all[len(all)-10:]; !slices.Equal(held, want) {
				t.Errorf("kept times %v, want the newest %v", held, want)
			}
			same := MustBuilder(nil, opts(50)...)
			if err := same.ReadState(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatal(err)
			}
			for i := 80; i < 160; i++ {
				e := ev(i)
				src.Update(&e, row)
				want := slices.Clone(src.EvictedCards())
				same.Update(&e, row)
				if got := same.EvictedCards(); !slices.Equal(got, want) {
					t.Fatalf("event %d: restored Builder evicted %q, the writer %q", i, got, want)
				}
			}
		})
	}
}

// peekHeld reports whether b holds a state for card id.
func (b *Builder) peekHeld(id string) bool {
	if b.sp != nil {
		return b.sp.loc.cur[id] != nil || b.sp.loc.old[id] != nil
	}
	return b.cards.cur[id] != nil || b.cards.old[id] != nil
}

// BenchmarkMemoryPerCardCapped measures the heap per card of made-up
// cards with one event each, without a cap and under a cap they never
// reach: the difference is the cost of the eviction heap.
func BenchmarkMemoryPerCardCapped(b *testing.B) {
	const cards = 100000
	for _, max := range []int{0, 2 * cards} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			for b.Loop() {
				heap := fakeCards(MustBuilder(nil, WithMaxCards(max)), cards)
				b.ReportMetric(float64(heap)/cards, "bytes/card")
			}
		})
	}
}

// BenchmarkBuilderUpdateCapped is BenchmarkBuilderUpdate's large population
// (100,000 cards, 10,000 terminals) without caps, under caps it never
// reaches, and under caps of half the population (every other new card or
// terminal evicts one).
func BenchmarkBuilderUpdateCapped(b *testing.B) {
	for _, c := range []struct{ cards, terminals int }{{0, 0}, {200000, 20000}, {50000, 5000}} {
		b.Run(fmt.Sprintf("max=%d,%d", c.cards, c.terminals), func(b *testing.B) {
			benchUpdateOpts(b, 100000, 10000, WithMaxCards(c.cards), WithMaxTerminals(c.terminals))
		})
	}
}

// TestMaxPoints checks the points cap: a card and a terminal with 1,000
// events a minute apart under a cap of 100 keep 100 points each, and the
// last event's row equals that of an uncapped Builder given only the last
// 100 events (the windows count and sum the newest 100); an out-of-order
// event older than every point kept is scored but not inserted.
func TestMaxPoints(t *testing.T) {
	for _, engine := range []struct {
		name string
		opts []Option
	}{{"builder", nil}, {"spec", []Option{withSpec(DefaultSpec(), true)}}} {
		t.Run(engine.name, func(t *testing.T) {
			const n, cap = 1000, 100
			ev := func(i int) Event {
				return Event{TxID: fmt.Sprint(i), CardID: "c", TerminalID: "m", TS: t0.Add(time.Duration(i) * time.Minute),
					Amount: float64(1 + i%17), Country: "FR"}
			}
			capped := MustBuilder(nil, append(slices.Clone(engine.opts), WithMaxPoints(cap))...)
			whole := MustBuilder(nil, engine.opts...)
			tail := MustBuilder(nil, engine.opts...)
			got := make([]float32, capped.Width())
			uncapped := make([]float32, capped.Width())
			want := make([]float32, capped.Width())
			for i := range n {
				e := ev(i)
				capped.Update(&e, got)
				whole.Update(&e, uncapped)
				if i >= n-cap {
					tail.Update(&e, want)
				}
			}
			names := capped.Names()
			for k := range want {
				if d := math.Abs(float64(got[k] - want[k])); d > 1e-6*max(1, math.Abs(float64(want[k]))) {
					t.Errorf("%s = %v, want %v (the newest %d events only)", names[k], got[k], want[k], cap)
				}
			}
			// A snapshot of the capped state reads back (its structures are
			// those Update makes) and scores the next event alike.
			var buf bytes.Buffer
			if err := capped.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			restored := MustBuilder(nil, append(slices.Clone(engine.opts), WithMaxPoints(cap))...)
			if err := restored.ReadState(&buf); err != nil {
				t.Fatalf("read a capped state: %v", err)
			}
			next := ev(n)
			a, r := make([]float32, capped.Width()), make([]float32, capped.Width())
			capped.Peek(&next, a)
			restored.Peek(&next, r)
			for k := range a {
				if a[k] != r[k] && !(names[k] == "terminal_tx_count_1h" || strings.HasPrefix(names[k], "terminal_")) {
					t.Errorf("after a snapshot, %s = %v, want %v", names[k], r[k], a[k])
				}
			}
			c1d := slices.Index(names, "card_tx_count_1d")
			if got[c1d] != cap || uncapped[c1d] != n {
				t.Errorf("card_tx_count_1d %v capped, %v uncapped; want %d and %d", got[c1d], uncapped[c1d], cap, n)
			}
			if p := capped.heldPoints("c"); p != cap {
				t.Errorf("card holds %d points, want %d", p, cap)
			}
			old := ev(n - cap - 5) // within the lateness, older than every point kept
			old.TxID = "old"
			late := capped.Late()
			capped.Update(&old, got)
			if capped.Late() != late+1 || !capped.LastLate() {
				t.Errorf("an event older than every point of a full history: Late %d -> %d, want +1", late, capped.Late())
			}
			mid := ev(n - 10) // out of order, newer than the oldest kept: inserted, the oldest dropped
			mid.TxID = "mid"
			capped.Update(&mid, got)
			// At its own time it sees the kept points up to it: n-cap+1 ..
			// n-10 (the oldest was dropped for it), and itself.
			if capped.LastLate() || capped.heldPoints("c") != cap || got[c1d] != cap-10+1 {
				t.Errorf("out-of-order event inside the kept history: late %v, %d points, count %v; want false, %d, %d",
					capped.LastLate(), capped.heldPoints("c"), got[c1d], cap, cap-10+1)
			}
		})
	}
}

// heldPoints returns the live points of card id's history.
func (b *Builder) heldPoints(id string) int {
	if b.sp != nil {
		st := b.sp.loc.cur[id]
		return len(st.s.pts) - int(st.s.off)
	}
	c := b.cards.cur[id]
	return len(c.s.pts) - int(c.s.off)
}

// TestEvictionsTTL checks the ttl eviction count, and that a capped map
// releases the states the TTL dropped (its heap does not pin them).
func TestEvictionsTTL(t *testing.T) {
	b := MustBuilder(nil, WithTTL(time.Hour), WithMaxCards(1000))
	row := make([]float32, b.Width())
	for i := range 500 {
		e := Event{TxID: fmt.Sprint(i), CardID: fmt.Sprint("c", i), TerminalID: "m", TS: t0, Amount: 1}
		b.Update(&e, row)
	}
	e := Event{TxID: "late", CardID: "new", TerminalID: "m", TS: t0.Add(3 * time.Hour), Amount: 1}
	b.Update(&e, row)
	st := b.Stats()
	if st.EvictedTTL != 500 || st.EvictedCap != 0 || st.Entities != 1 {
		t.Errorf("stats %+v, want 500 ttl evictions, none for the cap, 1 card held", st)
	}
	if n := len(b.cards.lru); n > 64+1 {
		t.Errorf("the eviction heap holds %d entries for 1 card: it pins the states the TTL dropped", n)
	}
}
