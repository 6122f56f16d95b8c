package stream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
)

// TestTerminalSliceAccounting: the terminal stage's fetcher hands R in
// slices (more than one record, at most maxHandOff, in offset order), each
// record holding a credit and counted in flight until the stage takes its
// slice; after a slice is taken nothing is left in flight or holding, and
// the credits still taken are exactly the slices not taken plus what
// waits in the aligner. A slice taken after the generation ended handles
// nothing and gives its credits back, as does the fetcher's slice when
// its context ends.
func TestTerminalSliceAccounting(t *testing.T) {
	h := termHistory(t, 5, 2000, 2, false)
	b := newTermBroker()
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendOrdered()
	rt.finish()
	src, err := b.NewSource(termGroup, termR, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	st, err := newTerminalStage(terminalConfig{src: src, out: &termTestWriter{b: b}, group: termGroup, rTopic: termR, eTopic: termE,
		inputParts: termSrcs, newShared: func() (*features.Shared, error) { return features.NewShared() },
		ckpt: NewMemoryCheckpoints(), fingerprint: "fp", alignIdle: 100 * time.Millisecond, reg: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gen, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.End()
	parts, err := st.restoreAll(ctx, gen.Claims())
	if err != nil {
		t.Fatal(err)
	}
	var tp *termPart
	for _, p := range parts {
		if rEnds(b)[p.r] > 2*maxHandOff {
			tp = p
			break
		}
	}
	if tp == nil {
		t.Fatalf("no R partition with more than %d records", 2*maxHandOff)
	}
	in := make(chan *termBatch)
	fctx, fcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { st.fetch(fctx, tp, in) })
	defer wg.Wait()
	defer fcancel()

	bt := <-in
	if !bt.rec || bt.r != tp.r || len(bt.msgs) < 2 || len(bt.msgs) > maxHandOff {
		t.Fatalf("first slice: r %d rec %v with %d records, want R partition %d's, 2..%d records", bt.r, bt.rec, len(bt.msgs), tp.r, maxHandOff)
	}
	for i, m := range bt.msgs {
		if m.off != int64(i) || m.credit != tp.credit || m.err != nil {
			t.Fatalf("record %d of the first slice: offset %d err %v, want offset %d, no error, the partition's credit", i, m.off, m.err, i)
		}
	}
	// The fetcher waits with its next slice: every credit it took is in
	// flight, and those of the slice received too, until the stage takes it.
	termWait(t, "the next slice counted in flight", func() bool {
		return tp.inFlight.Load() == int64(tp.credit.held()) && tp.credit.held() > len(bt.msgs)
	})
	next := int64(tp.credit.held() - len(bt.msgs))

	done := make(chan struct{})
	l := termLoop{t: st, gen: gen, parts: parts, byR: map[int]*termPart{tp.r: tp}, nR: termRParts}
	n := len(bt.msgs)
	if !l.take(ctx, ctx, done, bt) {
		t.Fatal("take: false, want true")
	}
	if tp.holding != 0 || tp.inFlight.Load() != next {
		t.Fatalf("after a slice: holding %d, in flight %d, want 0 and the next slice's %d", tp.holding, tp.inFlight.Load(), next)
	}
	if got, want := tp.credit.held(), int(next)+tp.al.Len(); got != want {
		t.Fatalf("after a slice: %d credits taken, want %d (the next slice) + %d (waiting in the aligner)", got, next, tp.al.Len())
	}
	if got := tp.rTrail.seen; got != int64(n-1) {
		t.Fatalf("R offsets seen through %d, want %d", got, n-1)
	}

	// The generation ended: the next slice is dropped whole.
	bt = <-in
	pos, waiting := tp.rTrail.seen, tp.al.Len()
	close(done)
	if l.take(ctx, ctx, done, bt) {
		t.Fatal("take after the generation ended: true, want false")
	}
	if tp.rTrail.seen != pos || tp.al.Len() != waiting || tp.holding != 0 {
		t.Fatalf("a record handled after the generation ended: seen %d -> %d, waiting %d -> %d, holding %d",
			pos, tp.rTrail.seen, waiting, tp.al.Len(), tp.holding)
	}
	// The fetcher stops: the slice it waited with is given back.
	fcancel()
	wg.Wait()
	if tp.inFlight.Load() != 0 || tp.credit.held() != tp.al.Len() {
		t.Fatalf("fetcher stopped: in flight %d, credits %d, want 0 and %d (waiting in the aligner)", tp.inFlight.Load(), tp.credit.held(), tp.al.Len())
	}
}
