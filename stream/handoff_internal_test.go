package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
)

// TestSourceFetchBatch: a claim's and a reader's FetchBatch hand out the
// records in offset order, at least one and at most the room left in dst
// per call (several when several are read ahead), mixed freely with
// Fetch; a call with nothing to hand out blocks until ctx ends and leaves
// dst as it was; after the generation ends, ErrGenerationEnded.
func TestSourceFetchBatch(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		const n = 10
		h.produce(t, 2, n)
		s := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		g := next(t, s)
		c := claim(t, g, 2)
		bf, ok := c.(BatchFetcher)
		if !ok {
			t.Fatalf("%T is no BatchFetcher", c)
		}
		r, err := s.Read(srcTopic, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rb, ok := r.(BatchFetcher)
		if !ok {
			t.Fatalf("%T is no BatchFetcher", r)
		}
		for _, tc := range []struct {
			name  string
			fetch func(context.Context) (Record, error)
			batch func(context.Context, []Record) ([]Record, error)
		}{
			{"claim", c.Fetch, bf.FetchBatch},
			{"reader", r.Fetch, rb.FetchBatch},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var got []Record
				most := 0
				buf := make([]Record, 1, 5) // one slot used: room for 4
				for len(got) < n {
					if len(got) == 3 {
						got = append(got, fetch(t, tc.fetch)) // Fetch between two batches
						continue
					}
					out, err := tc.batch(budget(t), buf[:1])
					if err != nil {
						t.Fatalf("after %d records: %v", len(got), err)
					}
					if k := len(out) - 1; k < 1 || k > 4 {
						t.Fatalf("after %d records: %d handed out, want 1 to 4", len(got), k)
					}
					most = max(most, len(out)-1)
					got = append(got, out[1:]...)
				}
				for i, rec := range got {
					if rec.Offset != int64(i) || string(rec.Value) != fmt.Sprintf("p2-%d", i) || rec.Partition != 2 {
						t.Fatalf("record %d: partition %d offset %d %q", i, rec.Partition, rec.Offset, rec.Value)
					}
				}
				if most < 2 {
					t.Errorf("every batch held one record: nothing handed out of what was read ahead")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				out, err := tc.batch(ctx, buf[:1])
				if !errors.Is(err, context.DeadlineExceeded) || len(out) != 1 {
					t.Fatalf("past the end: %d records, %v; want dst unchanged and the context's error", len(out), err)
				}
			})
		}
		g.End()
		if _, err := bf.FetchBatch(budget(t), nil); !errors.Is(err, ErrGenerationEnded) {
			t.Fatalf("after End: %v, want ErrGenerationEnded", err)
		}
	})
}

// TestCredit: a partition's credits are taken up to what is free (at least
// one, blocking while none is), given back one at a time (never below
// none), and a fetcher blocked on them wakes at the first given back or
// when its context ends.
func TestCredit(t *testing.T) {
	for _, tc := range []struct {
		name          string
		max, taken    int
		want, gotTake int
	}{
		{"all free", 8, 0, 5, 5},
		{"fewer free than wanted", 8, 6, 5, 2},
		{"one free", 8, 7, 64, 1},
		{"exactly free", 8, 3, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCredit(tc.max)
			if tc.taken > 0 {
				if k, err := c.take(context.Background(), tc.taken); err != nil || k != tc.taken {
					t.Fatalf("setup: took %d, %v", k, err)
				}
			}
			k, err := c.take(context.Background(), tc.want)
			if err != nil || k != tc.gotTake {
				t.Fatalf("take(%d) with %d of %d taken: %d, %v; want %d", tc.want, tc.taken, tc.max, k, err, tc.gotTake)
			}
			if got, want := c.held(), tc.taken+tc.gotTake; got != want {
				t.Fatalf("held %d, want %d", got, want)
			}
		})
	}
	t.Run("never below none", func(t *testing.T) {
		c := newCredit(2)
		c.give()
		if c.held() != 0 {
			t.Fatalf("held %d after a give with none taken", c.held())
		}
		if k, _ := c.take(context.Background(), 5); k != 2 {
			t.Fatalf("took %d of 2", k)
		}
	})
	t.Run("blocked until given back", func(t *testing.T) {
		c := newCredit(3)
		if k, _ := c.take(context.Background(), 3); k != 3 {
			t.Fatalf("took %d of 3", k)
		}
		got := make(chan int)
		go func() {
			k, _ := c.take(context.Background(), 3)
			got <- k
		}()
		select {
		case k := <-got:
			t.Fatalf("took %d with every credit taken", k)
		case <-time.After(50 * time.Millisecond):
		}
		c.give()
		select {
		case k := <-got:
			if k != 1 {
				t.Fatalf("took %d after one given back, want 1", k)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a credit given back woke nobody")
		}
	})
	t.Run("context ends", func(t *testing.T) {
		c := newCredit(1)
		c.take(context.Background(), 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if k, err := c.take(ctx, 1); k != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("take with none free: %d, %v; want the context's error", k, err)
		}
	})
	t.Run("many give-backs, one taker", func(t *testing.T) {
		// The fetcher takes in slices while the stage gives back one at a
		// time: every credit given back is taken again, none is lost.
		const total, max = 100_000, 16
		c := newCredit(max)
		gives := make(chan int, max)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for n := range gives {
				for range n {
					c.give()
				}
			}
		}()
		for taken := 0; taken < total; {
			k, err := c.take(context.Background(), min(7, total-taken))
			if err != nil {
				t.Fatal(err)
			}
			if h := c.held(); h > max {
				t.Fatalf("held %d of %d", h, max)
			}
			taken += k
			gives <- k
		}
		close(gives)
		<-done
		if c.held() != 0 {
			t.Fatalf("held %d once everything was given back", c.held())
		}
	})
}

// TestHandOffSlices: a fetcher's records go to the stage in one slice,
// as many as the partition's credits allow, tracked and decoded in offset
// order, counted in flight until the stage has added the last of them;
// a slice the stage cannot take before the fetcher stops is dropped,
// in-flight count and all. The stage gives each credit back when its
// message is applied, and drops a slice of an ended generation.
func TestHandOffSlices(t *testing.T) {
	p := shippedPipeline(t, "handoff", WithWorkers(1), WithQueueDepth(maxHandOff), WithAlignIdleWait(-1))
	st := newStage(p, []*worker{newWorker(p, 0)})
	if cap(st.in) != 1 || st.handMax != maxHandOff {
		t.Fatalf("queue of %d slices of %d, want 1 of %d", cap(st.in), st.handMax, maxHandOff)
	}
	cr := newCredit(3)
	st.credits = map[int]*credit{0: cr}
	ps := st.part(0)
	ps.owned, ps.shrKnown = true, true
	ps.seq.layout = stageLayout(st, 0)
	t0 := time.Now().Add(-time.Hour)
	recs := make([]Record, 5)
	for i := range recs {
		ev := features.Event{TxID: fmt.Sprintf("t-%d", i), CardID: "c-1", TerminalID: "m-1", Amount: 10, TS: t0.Add(time.Duration(i) * time.Second)}
		recs[i] = Record{Partition: 0, Offset: int64(i), Key: []byte("c-1"), Value: ev.AppendJSON(nil), Time: ev.TS, HighWater: 5}
	}
	recs[4].Value = []byte("{") // a dead letter rides along

	ctx := context.Background()
	n, err := p.handOff(ctx, st, recs, st.epoch, false, cr)
	if err != nil || n != 3 {
		t.Fatalf("handOff of 5 with 3 credits: %d, %v; want 3", n, err)
	}
	if got := st.inFlight.Load(); got != 3 {
		t.Fatalf("in flight %d, want 3", got)
	}
	// No credit left: the next hand-off waits, and gives up with its
	// context, leaving nothing counted.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	if n, err := p.handOff(short, st, recs[3:], st.epoch, false, cr); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handOff without credits: %d, %v; want the context's error", n, err)
	}
	cancel()
	if got := st.inFlight.Load(); got != 3 {
		t.Fatalf("in flight %d after a hand-off gave up, want 3", got)
	}
	h := <-st.in
	if len(h.pds) != 3 || h.replica || h.epoch != st.epoch {
		t.Fatalf("slice of %d (replica %v, epoch %d)", len(h.pds), h.replica, h.epoch)
	}
	for i, pd := range h.pds {
		if pd.m.Offset != int64(i) || pd.reason != "" || pd.ev.TxID != fmt.Sprintf("t-%d", i) {
			t.Fatalf("item %d: offset %d tx %q reason %q", i, pd.m.Offset, pd.ev.TxID, pd.reason)
		}
	}
	st.take(h)
	if got := st.inFlight.Load(); got != 0 || st.holding != 0 {
		t.Fatalf("in flight %d, holding %d after the stage took the slice", got, st.holding)
	}
	if cr.held() != 0 {
		t.Fatalf("%d credits held once the slice is applied, want 0", cr.held())
	}
	if got := p.stats.Consumed.Load(); got != 3 {
		t.Fatalf("consumed %d, want 3", got)
	}

	// The rest, with the dead letter; the queue full (one slice), a
	// second hand-off gives up with its context and drops its slice.
	if n, err := p.handOff(ctx, st, recs[3:], st.epoch, false, cr); n != 2 || err != nil {
		t.Fatalf("handOff of the rest: %d, %v", n, err)
	}
	short, cancel = context.WithTimeout(ctx, 30*time.Millisecond)
	extra := []Record{recs[0]}
	if n, err := p.handOff(short, st, extra, st.epoch, false, cr); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handOff to a full queue: %d, %v; want the context's error", n, err)
	}
	cancel()
	if got := st.inFlight.Load(); got != 2 {
		t.Fatalf("in flight %d after a hand-off to a full queue gave up, want 2", got)
	}
	h = <-st.in
	if len(h.pds) != 2 || h.pds[1].reason == "" {
		t.Fatalf("slice of %d, the second's reason %q", len(h.pds), h.pds[1].reason)
	}
	// A slice of a generation that ended is dropped whole.
	st.epoch++
	st.take(h)
	if got := st.inFlight.Load(); got != 0 || p.stats.Consumed.Load() != 3 {
		t.Fatalf("in flight %d, consumed %d after a stale slice; want 0 and 3", got, p.stats.Consumed.Load())
	}
}

// TestPumpReplicaUntil: a replica read of the part of a claimed partition
// before its committed offset hands the stage exactly the records below
// r.until, in slices marked replica (the reader's batches run past it),
// and returns r.until; the records are not tracked for the commits.
func TestPumpReplicaUntil(t *testing.T) {
	b := NewMemBroker(map[string]int{"transactions": 1})
	t0 := time.Now().Add(-time.Hour)
	for i := range 100 {
		ev := features.Event{TxID: fmt.Sprintf("t-%d", i), CardID: "c-1", TerminalID: "m-1", Amount: 1, TS: t0.Add(time.Duration(i) * time.Second)}
		if _, err := b.Append("transactions", 0, []byte("c-1"), ev.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	src, err := b.NewSource("g", "transactions", kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	p := shippedPipeline(t, "replica", WithWorkers(1), WithQueueDepth(16*maxHandOff))
	st := newStage(p, []*worker{newWorker(p, 0)})
	for _, tc := range []struct {
		name        string
		from, until int64
	}{
		{"within one batch", 2, 7},
		{"across batches", 5, 90},
		{"at a batch's end", 0, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, err := src.Read("transactions", 0, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			r := replicaRead{part: 0, from: tc.from, until: tc.until}
			next, err := p.pumpReplica(budget(t), pr, r, tc.from, st, st.epoch, newCredit(partitionCredit))
			if err != nil || next != tc.until {
				t.Fatalf("pumpReplica: next %d, %v; want %d", next, err, tc.until)
			}
			want := tc.from
			for len(st.in) > 0 {
				h := <-st.in
				if !h.replica || len(h.pds) > maxHandOff {
					t.Fatalf("slice of %d, replica %v", len(h.pds), h.replica)
				}
				for _, pd := range h.pds {
					if pd.m.Offset != want {
						t.Fatalf("offset %d, want %d", pd.m.Offset, want)
					}
					want++
				}
				st.inFlight.Add(-int64(len(h.pds)))
				h.reset()
			}
			if want != tc.until || st.inFlight.Load() != 0 {
				t.Fatalf("handed up to %d (in flight %d), want up to %d", want, st.inFlight.Load(), tc.until)
			}
			if got := p.tracker.Partitions(); len(got) != 0 {
				t.Fatalf("replica records tracked for the commits: %v", got)
			}
		})
	}
}

// preparingDecoder is the JSON decoder with a Preparer that says a message
// whose value starts with "{\"tx_id\":\"t-2\"" may wait (when prepared is
// set), counting the Prepare calls.
type preparingDecoder struct {
	*features.Decoder
	calls    int
	prepared bool // has Prepared
}

func (d *preparingDecoder) Prepare(context.Context, []byte) error { d.calls++; return nil }

type preparedDecoder struct{ *preparingDecoder }

func (d preparedDecoder) Prepared(v []byte) bool {
	return !strings.HasPrefix(string(v), `{"tx_id":"t-2"`)
}

// TestHandOffCutsBeforeWaitingPreparation: a slice is cut before a
// message whose preparation may wait (a schema lookup), so the messages
// already read reach the stage, counted, while it waits; a Preparer that
// cannot tell hands one message per slice.
func TestHandOffCutsBeforeWaitingPreparation(t *testing.T) {
	dec, err := features.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	recs := make([]Record, 4)
	for i := range recs {
		ev := features.Event{TxID: fmt.Sprintf("t-%d", i), CardID: "c-1", TerminalID: "m-1", Amount: 10, TS: t0.Add(time.Duration(i) * time.Second)}
		recs[i] = Record{Partition: 0, Offset: int64(i), Key: []byte("c-1"), Value: ev.AppendJSON(nil), Time: ev.TS, HighWater: 4}
	}
	for _, tc := range []struct {
		name  string
		dec   EventDecoder
		want  []int // slice sizes
		calls int   // Prepare calls
	}{
		{"json", dec, []int{4}, 0},
		{"prepared", preparedDecoder{&preparingDecoder{Decoder: dec}}, []int{2, 2}, 4},
		{"cannot-tell", &preparingDecoder{Decoder: dec}, []int{1, 1, 1, 1}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := shippedPipeline(t, "handoff-prep", WithWorkers(1), WithAlignIdleWait(-1), WithEventDecoder(tc.dec))
			st := newStage(p, []*worker{newWorker(p, 0)})
			cr := newCredit(16)
			st.credits = map[int]*credit{0: cr}
			var sizes []int
			rest := recs
			for len(rest) > 0 {
				n, err := p.handOff(context.Background(), st, rest, st.epoch, false, cr)
				if err != nil {
					t.Fatal(err)
				}
				h := <-st.in
				if len(h.pds) != n || h.pds[0].m.Offset != rest[0].Offset {
					t.Fatalf("slice of %d from offset %d, handOff said %d from %d", len(h.pds), h.pds[0].m.Offset, n, rest[0].Offset)
				}
				sizes = append(sizes, n)
				rest = rest[n:]
			}
			if !slices.Equal(sizes, tc.want) {
				t.Errorf("slices %v, want %v", sizes, tc.want)
			}
			calls := 0
			switch d := tc.dec.(type) {
			case preparedDecoder:
				calls = d.calls
			case *preparingDecoder:
				calls = d.calls
			}
			if calls != tc.calls {
				t.Errorf("%d Prepare calls, want %d", calls, tc.calls)
			}
		})
	}
}

// TestStageHardStopWithoutBatch: a message the stage takes after a hard
// stop (the drain deadline) while every batch of its worker is in flight
// (a sink down) lands in no batch and not in the state, though its offset
// is counted applied: the stage must report itself torn, so that no
// shutdown snapshot or checkpoint records it (it did not: the next start
// restored a state that claimed the event and never applied it).
func TestStageHardStopWithoutBatch(t *testing.T) {
	p := shippedPipeline(t, "torn", WithWorkers(1), WithAlignIdleWait(-1))
	w := newWorker(p, 0)
	st := newStage(p, []*worker{w})
	cr := newCredit(8)
	st.credits = map[int]*credit{0: cr}
	ps := st.part(0)
	ps.owned, ps.shrKnown = true, true
	ps.seq.layout = stageLayout(st, 0)
	for len(w.free) > 0 {
		<-w.free // every batch in flight
	}
	ev := features.Event{TxID: "t-0", CardID: "c-1", TerminalID: "m-1", Amount: 10, TS: time.Now().Add(-time.Hour)}
	recs := []Record{{Partition: 0, Offset: 0, Key: []byte("c-1"), Value: ev.AppendJSON(nil), Time: ev.TS, HighWater: 1}}
	if n, err := p.handOff(context.Background(), st, recs, st.epoch, false, cr); n != 1 || err != nil {
		t.Fatalf("handOff: %d, %v", n, err)
	}
	p.cancel(ErrDrainTimeout)
	st.take(<-st.in)
	if !st.torn {
		t.Fatalf("stage not torn after a message found no batch (applied through %d, %d cards)", ps.applied, ps.build.Cards())
	}
}
