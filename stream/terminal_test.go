package stream

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/internal/checkpoint"
	"github.com/streamscore/streamscore/stream/internal/repart"
)

// The terminal stage (terminal.go) on the in-memory broker: a test router
// writes a generated history to R as the card stage will (each source's
// events in offset order to R[Route(terminal)], watermarks for the R
// partitions a source sent nothing to for a while), and the E records the
// stage writes must equal, bit for bit, the shared columns of one
// features.Shared applying every event (and label) in Replay's order.

const (
	termR      = "R"
	termE      = "E"
	termLabels = "L"
	termSrcs   = 4 // input partitions
	termRParts = 3
	termGroup  = "terms"
	termBudget = 60 * time.Second
)

// termTestWriter is the stage's RecordWriter in these tests: MemBroker.Append
// per record; the first fail calls fail (a write error to retry).
type termTestWriter struct {
	b     *MemBroker
	fail  atomic.Int64
	calls atomic.Int64
}

func (w *termTestWriter) WriteRecords(ctx context.Context, topic string, recs []OutRecord) error {
	w.calls.Add(1)
	if w.fail.Add(-1) >= 0 {
		return errors.New("termTestWriter: refused")
	}
	for _, r := range recs {
		if _, err := w.b.Append(topic, r.Partition, r.Key, r.Value); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// termHist is a generated history split over the input partitions by card.
type termHist struct {
	events []features.Event
	labels []features.Label
	src    []int   // per event: its input partition
	off    []int64 // per event: its offset there
	bySrc  [][]int // per input partition: its events, in offset order
}

func termHistory(t *testing.T, seed int64, n, days int, withLabels bool) *termHist {
	t.Helper()
	terminals := 240 // a few hundred terminals over three R partitions
	if withLabels {
		terminals = 60 // more frauds per terminal: lagged fraud columns that are not zero
	}
	g, err := synth.New(synth.Config{Seed: seed, Cards: 400, Terminals: terminals, FraudRate: 0.1, LabelDelay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	h := &termHist{bySrc: make([][]int, termSrcs)}
	if err := g.Simulate(start, end, float64(n)/end.Sub(start).Seconds(), func(tx synth.Tx) error {
		i := len(h.events)
		h.events = append(h.events, tx.Event)
		p := int(crc32.ChecksumIEEE([]byte(tx.Event.CardID)) % termSrcs)
		h.src = append(h.src, p)
		h.off = append(h.off, int64(len(h.bySrc[p])))
		h.bySrc[p] = append(h.bySrc[p], i)
		if l, ok := g.LabelFor(tx); withLabels && ok && l.TS.Before(end) {
			if len(h.labels)%2 == 0 {
				l.TxTS = time.Time{} // placed by its terminal's history
			}
			h.labels = append(h.labels, l)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(h.labels, func(a, b features.Label) int { return features.CompareLabels(&a, &b) })
	return h
}

// termRouter writes events to R as the card stage does.
type termRouter struct {
	t      *testing.T
	b      *MemBroker
	h      *termHist
	since  [termSrcs][termRParts]int
	next   [termSrcs]int // per source: its next event (index into bySrc)
	lastTS [termSrcs]int64
}

func (rt *termRouter) append(r int, hd repart.Head, payload []byte) {
	if _, err := rt.b.Append(termR, r, nil, repart.AppendRecord(nil, hd, payload)); err != nil {
		rt.t.Fatal(err)
	}
}

// send writes source src's next event, and a watermark to every R
// partition src has sent nothing to for 50 events.
func (rt *termRouter) send(src int) {
	i := rt.h.bySrc[src][rt.next[src]]
	rt.next[src]++
	ev := &rt.h.events[i]
	r := repart.Route(ev.TerminalID, termRParts)
	ts := ev.TS.UnixNano()
	rt.lastTS[src] = ts
	rt.append(r, repart.Head{Kind: repart.KindEvent, Src: src, Offset: rt.h.off[i], TS: ts}, ev.AppendJSON(nil))
	rt.since[src][r] = 0
	for o := range termRParts {
		if o == r {
			continue
		}
		if rt.since[src][o]++; rt.since[src][o] >= 50 {
			rt.since[src][o] = 0
			rt.append(o, repart.Head{Kind: repart.KindMark, Src: src, Offset: rt.h.off[i], TS: ts}, nil)
		}
	}
}

// left reports whether source src has events to send.
func (rt *termRouter) left(src int) bool { return rt.next[src] < len(rt.h.bySrc[src]) }

// sendUntil interleaves the sources at random (each in its offset order)
// until the events before time until are sent (every event if until is
// zero).
func (rt *termRouter) sendUntil(rng *rand.Rand, until time.Time) {
	for {
		var ready []int
		for src := range termSrcs {
			if rt.left(src) && (until.IsZero() || rt.h.events[rt.h.bySrc[src][rt.next[src]]].TS.Before(until)) {
				ready = append(ready, src)
			}
		}
		if len(ready) == 0 {
			return
		}
		rt.send(ready[rng.IntN(len(ready))])
	}
}

// sendOrdered sends every event in event-time order across the sources
// (as card stages that keep their partitions aligned write R).
func (rt *termRouter) sendOrdered() {
	for {
		best := -1
		for src := range termSrcs {
			if rt.left(src) && (best < 0 || features.CompareEvents(&rt.h.events[rt.h.bySrc[src][rt.next[src]]], &rt.h.events[rt.h.bySrc[best][rt.next[best]]]) < 0) {
				best = src
			}
		}
		if best < 0 {
			return
		}
		rt.send(best)
	}
}

// finish writes every source's last watermark, caught up, to every R
// partition: the sources have nothing more.
func (rt *termRouter) finish() {
	for src := range termSrcs {
		last := int64(len(rt.h.bySrc[src]) - 1)
		if last < 0 {
			continue // a source absent from R
		}
		for r := range termRParts {
			rt.append(r, repart.Head{Kind: repart.KindMark, Src: src, Offset: last, TS: rt.lastTS[src], CaughtUp: true}, nil)
		}
	}
}

// termKey is an event's place: source partition and offset.
type termKey struct {
	src int
	off int64
}

// termReference applies every event (and label) to one Shared in Replay's
// order and returns each event's shared columns.
func termReference(t *testing.T, h *termHist) map[termKey]repart.Enriched {
	t.Helper()
	sh, err := features.NewShared()
	if err != nil {
		t.Fatal(err)
	}
	cols := sh.Columns()
	idx := make([]int, len(h.events))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return features.CompareEvents(&h.events[a], &h.events[b]) })
	row := make([]float32, sh.Width())
	out := map[termKey]repart.Enriched{}
	li := 0
	for _, i := range idx {
		e := &h.events[i]
		for li < len(h.labels) && !h.labels[li].TS.After(e.TS) {
			sh.ApplyLabelShared(&h.labels[li])
			li++
		}
		late := sh.Apply(e, row)
		en := repart.Enriched{Src: h.src[i], Offset: h.off[i], Late: late, Cols: make([]float32, len(cols))}
		for j, c := range cols {
			en.Cols[j] = row[c]
		}
		out[termKey{h.src[i], h.off[i]}] = en
	}
	return out
}

// termEnriched reads every E record of the broker, by event.
func termEnriched(t *testing.T, b *MemBroker) map[termKey][]repart.Enriched {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[termKey][]repart.Enriched{}
	for p, log := range b.logs[termE] {
		for _, rec := range log {
			var e repart.Enriched
			if err := repart.ParseEnriched(rec.Value, &e); err != nil {
				t.Fatalf("E[%d] offset %d: %v", p, rec.Offset, err)
			}
			if e.Src != p {
				t.Fatalf("E[%d] offset %d holds an event of source %d", p, rec.Offset, e.Src)
			}
			k := termKey{e.Src, e.Offset}
			out[k] = append(out[k], e)
		}
	}
	return out
}

// termCompare fails the test unless every event of h has an E record and
// every E record equals the reference bit for bit; it returns the events
// with more than one E record.
func termCompare(t *testing.T, b *MemBroker, h *termHist, ref map[termKey]repart.Enriched) (dups int) {
	t.Helper()
	got := termEnriched(t, b)
	missing, wrong := 0, 0
	for k, want := range ref {
		recs := got[k]
		if len(recs) == 0 {
			missing++
			continue
		}
		if len(recs) > 1 {
			dups++
		}
		for _, e := range recs {
			if !termEqual(e, want) {
				if wrong < 3 {
					t.Logf("source %d offset %d: E %v late %v, reference %v late %v", k.src, k.off, e.Cols, e.Late, want.Cols, want.Late)
				}
				wrong++
			}
		}
	}
	extra := 0
	for k, recs := range got {
		if _, ok := ref[k]; !ok && !slices.ContainsFunc(recs, func(e repart.Enriched) bool { return !e.Refused }) {
			continue // a refused record: its event did not decode (TestTerminalBadRecords counts them)
		}
		if _, ok := ref[k]; !ok {
			extra++
		}
	}
	if extra > 0 {
		t.Errorf("%d E records name no event", extra)
	}
	if missing > 0 || wrong > 0 {
		t.Errorf("%d events: %d without an E record, %d E records unlike the reference", len(ref), missing, wrong)
	}
	return dups
}

func termEqual(a, b repart.Enriched) bool {
	if a.Late != b.Late || len(a.Cols) != len(b.Cols) {
		return false
	}
	for i := range a.Cols {
		if math.Float32bits(a.Cols[i]) != math.Float32bits(b.Cols[i]) {
			return false
		}
	}
	return true
}

// termEvents counts the E records written so far.
func termEvents(b *MemBroker) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, log := range b.logs[termE] {
		n += len(log)
	}
	return n
}

func termWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(termBudget)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTermBroker() *MemBroker {
	return NewMemBroker(map[string]int{termR: termRParts, termE: termSrcs, termLabels: 2})
}

// termMember is a running terminal stage.
type termMember struct {
	st     *terminalStage
	src    *MemSource
	w      *termTestWriter
	cancel context.CancelFunc // soft stop: final checkpoint and commit
	crash  context.CancelFunc // hard stop
	err    chan error
}

func termLog() *slog.Logger {
	if os.Getenv("TERM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startTerm starts a terminal stage as a new member of the terminal group.
func startTerm(t *testing.T, b *MemBroker, store CheckpointStore, edit func(*terminalConfig)) *termMember {
	t.Helper()
	src, err := b.NewSource(termGroup, termR, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	w := &termTestWriter{b: b}
	cfg := terminalConfig{src: src, out: w, group: termGroup, rTopic: termR, eTopic: termE, inputParts: termSrcs,
		newShared: func() (*features.Shared, error) { return features.NewShared() },
		ckpt:      store, fingerprint: "test:features", interval: 30 * time.Millisecond,
		alignIdle: 100 * time.Millisecond, alignLag: 30 * time.Second, log: termLog(), reg: prometheus.NewRegistry()}
	if edit != nil {
		edit(&cfg)
	}
	hard, crash := context.WithCancel(context.Background())
	cfg.hard = hard
	st, err := newTerminalStage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &termMember{st: st, src: src, w: w, cancel: cancel, crash: crash, err: make(chan error, 1)}
	go func() { m.err <- st.run(ctx) }()
	t.Cleanup(func() {
		crash()
		cancel()
		src.Close()
	})
	return m
}

// stop stops m softly and waits for run to return.
func (m *termMember) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.err:
		if err != nil {
			t.Fatalf("terminal stage: %v", err)
		}
	case <-time.After(termBudget):
		t.Fatal("terminal stage did not stop")
	}
	m.crash()
	m.src.Close()
}

// rEnds returns the end offset of every R partition.
func rEnds(b *MemBroker) map[int]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[int]int64{}
	for p, log := range b.logs[termR] {
		out[p] = int64(len(log))
	}
	return out
}

func waitRCommitted(t *testing.T, b *MemBroker) {
	t.Helper()
	ends := rEnds(b)
	termWait(t, fmt.Sprintf("R committed to its ends %v", ends), func() bool {
		c := b.Committed(termGroup, termR)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
}

// TestTerminalExact: a backlog of three days over four sources, one
// stage: every event gets exactly one E record, equal to the reference;
// R is committed to its end; a failing E write is retried.
func TestTerminalExact(t *testing.T) {
	h := termHistory(t, 11, 3000, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendUntil(rand.New(rand.NewPCG(1, 2)), time.Time{})
	rt.finish()
	m := startTerm(t, b, NewMemoryCheckpoints(), nil)
	m.w.fail.Store(3)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	met := m.st.met
	if got := testutil.ToFloat64(met.applied); got != float64(len(h.events)) {
		t.Errorf("events applied = %v, want %d", got, len(h.events))
	}
	if got := testutil.ToFloat64(met.duplicates); got != 0 {
		t.Errorf("duplicates = %v, want 0", got)
	}
	if got := testutil.ToFloat64(met.writeErrors); got != 3 {
		t.Errorf("E write errors = %v, want 3", got)
	}
	if got := testutil.ToFloat64(met.marks); got == 0 {
		t.Error("no watermark counted: the router wrote some")
	}
	if got := testutil.ToFloat64(met.aligned.WithLabelValues("out_of_order")); got != 0 {
		t.Errorf("%v events applied out of order", got)
	}
	if got := testutil.ToFloat64(met.checkpoints.WithLabelValues("restore", "none")); got != termRParts {
		t.Errorf("restores without a checkpoint = %v, want %d", got, termRParts)
	}
	t.Logf("%d events, %d R records, aligned ordered %v idle_bound %v lag_bound %v", len(h.events), sum(rEnds(b)),
		testutil.ToFloat64(met.aligned.WithLabelValues("ordered")), testutil.ToFloat64(met.aligned.WithLabelValues("idle_bound")),
		testutil.ToFloat64(met.aligned.WithLabelValues("lag_bound")))
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// TestTerminalFailover: two members while the history is written live,
// one crashes (expired by the group, its hard stop: nothing more
// committed) mid-way and a fresh one joins: every event still has an E
// record, every E record equals the reference (duplicates allowed).
func TestTerminalFailover(t *testing.T) {
	h := termHistory(t, 23, 3000, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	store := NewMemoryCheckpoints()
	a := startTerm(t, b, store, nil)
	c := startTerm(t, b, store, nil)
	rt := &termRouter{t: t, b: b, h: h}
	rng := rand.New(rand.NewPCG(3, 4))
	from := h.events[0].TS
	step := 6 * time.Hour
	crashed := false
	var fresh *termMember
	for until := from.Add(step); ; until = until.Add(step) {
		rt.sendUntil(rng, until)
		time.Sleep(20 * time.Millisecond)
		if !crashed && until.Sub(from) > 36*time.Hour {
			termWait(t, "the crashing member to have claimed partitions", func() bool { return len(a.src.Claimed()) > 0 })
			a.crash()
			b.Expire(a.src)
			a.cancel()
			crashed = true
			fresh = startTerm(t, b, store, nil)
		}
		if !until.Before(h.events[len(h.events)-1].TS) {
			break
		}
	}
	rt.sendUntil(rng, time.Time{})
	rt.finish()
	termWait(t, "an E record per event", func() bool { return len(termEnriched(t, b)) >= len(h.events) })
	waitRCommitted(t, b)
	c.stop(t)
	fresh.stop(t)
	dups := termCompare(t, b, h, ref)
	restored := testutil.ToFloat64(c.st.met.checkpoints.WithLabelValues("restore", "ok")) +
		testutil.ToFloat64(fresh.st.met.checkpoints.WithLabelValues("restore", "ok"))
	t.Logf("%d events; %d with more than one E record; restores from checkpoints: %v", len(h.events), dups, restored)
	if restored == 0 {
		t.Error("no partition restored from a checkpoint: the test does not cover the hand-over")
	}
	for _, m := range []*termMember{a, c, fresh} {
		if got := testutil.ToFloat64(m.st.met.aligned.WithLabelValues("out_of_order")); got != 0 {
			t.Errorf("%v events applied out of order", got)
		}
	}
}

// TestTerminalRebalance: two members while the history is written live,
// and the group rebalanced three times mid-way (no crash): every revoked
// partition is checkpointed and committed before the next owner restores
// it, so E holds exactly one record per event, equal to the reference.
func TestTerminalRebalance(t *testing.T) {
	h := termHistory(t, 59, 3000, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	store := NewMemoryCheckpoints()
	a := startTerm(t, b, store, nil)
	c := startTerm(t, b, store, nil)
	rt := &termRouter{t: t, b: b, h: h}
	rng := rand.New(rand.NewPCG(23, 24))
	from := h.events[0].TS
	for i := 1; i <= 12; i++ {
		rt.sendUntil(rng, from.Add(time.Duration(i)*6*time.Hour))
		time.Sleep(20 * time.Millisecond)
		if i%4 == 0 {
			b.Rebalance(termGroup)
		}
	}
	rt.sendUntil(rng, time.Time{})
	rt.finish()
	termWait(t, "an E record per event", func() bool { return len(termEnriched(t, b)) >= len(h.events) })
	waitRCommitted(t, b)
	a.stop(t)
	c.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	restored := testutil.ToFloat64(a.st.met.checkpoints.WithLabelValues("restore", "ok")) +
		testutil.ToFloat64(c.st.met.checkpoints.WithLabelValues("restore", "ok"))
	if restored < termRParts {
		t.Errorf("%v partitions restored from checkpoints, want at least %d: the test does not cover the hand-over", restored, termRParts)
	}
}

// TestTerminalResends: a source re-sends from an earlier offset (a card
// stage failing over): its events are skipped as duplicates and E holds
// one record per event, equal to the reference.
func TestTerminalResends(t *testing.T) {
	h := termHistory(t, 5, 2000, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	rt := &termRouter{t: t, b: b, h: h}
	rng := rand.New(rand.NewPCG(5, 6))
	resent := 0
	for rt.left(1) {
		rt.sendUntil(rng, h.events[rt.h.bySrc[1][rt.next[1]]].TS.Add(4*time.Hour))
		// Source 1 fails over: it re-sends its last 60 events (and
		// watermarks) from its committed offset.
		back := min(60, rt.next[1])
		rt.next[1] -= back
		for range back {
			rt.send(1)
		}
		resent += back
	}
	rt.sendUntil(rng, time.Time{})
	rt.finish()
	m := startTerm(t, b, NewMemoryCheckpoints(), nil)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	if got := testutil.ToFloat64(m.st.met.duplicates); got != float64(resent) {
		t.Errorf("duplicates = %v, want %d (re-sent)", got, resent)
	}
}

// TestTerminalRestart: a stage stopped mid-way (events of the sources not
// caught up still waiting in its aligners) checkpoints and commits; a new
// one on the same broker and store resumes at the committed R offset with
// the checkpointed state: E holds exactly one record per event (the events
// applied ahead of the committed offset are skipped, the dropped ones read
// again), equal to the reference.
func TestTerminalRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels bool
	}{
		{"events", false},
		{"labels", true}, // the labels applied are not applied again, those dropped are read again
	} {
		t.Run(tc.name, func(t *testing.T) {
			days := 3
			if tc.labels {
				days = 10
			}
			h := termHistory(t, 17, 3000, days, tc.labels)
			ref := termReference(t, h)
			b := newTermBroker()
			termLabelsTopic(t, b, h)
			edit := func(c *terminalConfig) {
				if tc.labels {
					c.labelsTopic = termLabels
				}
			}
			store := NewMemoryCheckpoints()
			rt := &termRouter{t: t, b: b, h: h}
			rng := rand.New(rand.NewPCG(7, 8))
			rt.sendUntil(rng, h.events[len(h.events)/2].TS)
			first := startTerm(t, b, store, edit)
			termWait(t, "E records for 40% of the events", func() bool { return termEvents(b) >= len(h.events)*2/5 })
			first.stop(t)
			stopped := termEvents(b)
			committed := b.Committed(termGroup, termR)
			ends := rEnds(b)
			if len(committed) != termRParts || sum(committed) >= sum(ends) {
				t.Fatalf("the stopped stage committed %v of %v: want every partition, not to the end", committed, ends)
			}
			rt.sendUntil(rng, time.Time{})
			rt.finish()
			second := startTerm(t, b, store, edit)
			termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
			waitRCommitted(t, b)
			second.stop(t)
			if dups := termCompare(t, b, h, ref); dups > 0 {
				t.Errorf("%d events with more than one E record, want none", dups)
			}
			if got := testutil.ToFloat64(second.st.met.checkpoints.WithLabelValues("restore", "ok")); got != termRParts {
				t.Errorf("partitions restored = %v, want %d", got, termRParts)
			}
			l1, l2 := testutil.ToFloat64(first.st.met.labels), testutil.ToFloat64(second.st.met.labels)
			if tc.labels && (l1 == 0 || l2 == 0 || l1+l2 < float64(len(h.labels))) {
				t.Errorf("labels applied: %v then %v, want some by each and %d in all", l1, l2, len(h.labels))
			}
			t.Logf("first stage: %d E records, %v labels, committed %v of %v; second: %v duplicates skipped, %v labels", stopped, l1, committed, ends,
				testutil.ToFloat64(second.st.met.duplicates), l2)
		})
	}
}

// termLabelsTopic writes h's labels to the labels topic, by tx_id.
func termLabelsTopic(t *testing.T, b *MemBroker, h *termHist) {
	t.Helper()
	for _, l := range h.labels {
		p := int(crc32.ChecksumIEEE([]byte(l.TxID)) % 2)
		if _, err := b.Append(termLabels, p, []byte(l.TxID), l.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTerminalHardStop: a stage stopped hard commits nothing more (no
// final checkpoint, no commit); stopped softly it checkpoints and commits.
func TestTerminalHardStop(t *testing.T) {
	h := termHistory(t, 19, 1500, 3, false)
	for _, tc := range []struct {
		name   string
		hard   bool
		commit bool
	}{
		{"hard", true, false},
		{"soft", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTermBroker()
			store := NewMemoryCheckpoints()
			rt := &termRouter{t: t, b: b, h: h}
			rt.sendUntil(rand.New(rand.NewPCG(17, 18)), time.Time{})
			rt.finish()
			m := startTerm(t, b, store, func(c *terminalConfig) { c.interval = time.Hour })
			termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
			if c := b.Committed(termGroup, termR); len(c) != 0 {
				t.Fatalf("committed %v before any checkpoint", c)
			}
			if tc.hard {
				m.crash()
			}
			m.stop(t)
			c := b.Committed(termGroup, termR)
			if got := len(c) > 0; got != tc.commit {
				t.Errorf("committed %v after the stop, want a commit: %v", c, tc.commit)
			}
			_, found, err := store.Latest(context.Background(), checkpoint.Key{Group: termGroup, Topic: termR, Partition: 0, Fingerprint: "test:features"})
			if err != nil || found != tc.commit {
				t.Errorf("checkpoint of R[0] found %v (err %v), want %v", found, err, tc.commit)
			}
		})
	}
}

// failingStore is a checkpoint store whose Puts fail while fail is set,
// and whose next failLatest Latest calls fail.
type failingStore struct {
	CheckpointStore
	fail       atomic.Bool
	failLatest atomic.Int64
}

func (s *failingStore) Latest(ctx context.Context, key checkpoint.Key) (checkpoint.Checkpoint, bool, error) {
	if s.failLatest.Add(-1) >= 0 {
		return checkpoint.Checkpoint{}, false, errors.New("failingStore: unreachable")
	}
	return s.CheckpointStore.Latest(ctx, key)
}

func (s *failingStore) Put(ctx context.Context, key checkpoint.Key, offset int64, blob io.Reader) (checkpoint.Info, error) {
	if s.fail.Load() {
		return checkpoint.Info{}, errors.New("failingStore: refused")
	}
	return s.CheckpointStore.Put(ctx, key, offset, blob)
}

// TestTerminalRestoreRetried: a checkpoint read that fails (the store
// unreachable) is tried again rather than starting the partition empty,
// whose next checkpoint would replace the history for good.
func TestTerminalRestoreRetried(t *testing.T) {
	h := termHistory(t, 37, 1200, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	store := &failingStore{CheckpointStore: NewMemoryCheckpoints()}
	rt := &termRouter{t: t, b: b, h: h}
	rng := rand.New(rand.NewPCG(21, 22))
	rt.sendUntil(rng, h.events[len(h.events)/2].TS)
	first := startTerm(t, b, store, nil)
	termWait(t, "E records for 40% of the events", func() bool { return termEvents(b) >= len(h.events)*2/5 })
	first.stop(t)
	rt.sendUntil(rng, time.Time{})
	rt.finish()
	store.failLatest.Store(1)
	second := startTerm(t, b, store, nil)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	second.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	if got := testutil.ToFloat64(second.st.met.checkpoints.WithLabelValues("restore", "ok")); got != termRParts {
		t.Errorf("partitions restored = %v, want %d", got, termRParts)
	}
}

// TestTerminalCommitAtCheckpoints: while checkpoints cannot be stored, R
// is not committed; once they can, it is, to the checkpoints' offsets.
func TestTerminalCommitAtCheckpoints(t *testing.T) {
	h := termHistory(t, 29, 1500, 3, false)
	b := newTermBroker()
	store := &failingStore{CheckpointStore: NewMemoryCheckpoints()}
	store.fail.Store(true)
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendUntil(rand.New(rand.NewPCG(19, 20)), time.Time{})
	rt.finish()
	m := startTerm(t, b, store, nil)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	termWait(t, "failed checkpoint rounds", func() bool {
		return testutil.ToFloat64(m.st.met.checkpoints.WithLabelValues("put", "error")) >= 2*termRParts
	})
	if c := b.Committed(termGroup, termR); len(c) != 0 {
		t.Fatalf("committed %v while no checkpoint could be stored", c)
	}
	store.fail.Store(false)
	waitRCommitted(t, b)
	m.stop(t)
	for r, end := range rEnds(b) {
		cp, found, err := store.Latest(context.Background(), checkpoint.Key{Group: termGroup, Topic: termR, Partition: r, Fingerprint: "test:features"})
		if err != nil || !found || cp.Offset != end {
			t.Errorf("checkpoint of R[%d]: offset %d found %v err %v, want offset %d (the committed one)", r, cp.Offset, found, err, end)
		}
	}
}

// TestTerminalAbsentSource: a source that writes nothing to R at all (its
// card stage is down) while R holds a backlog larger than the stage's
// credits: the stage does not wait for R to catch up (it cannot, its
// credits are taken) but for the lag wait, then goes on without the source;
// the other sources, written to R in event-time order (card stages keep
// their partitions aligned), have E records equal to the reference without
// it. (Sources far apart in event time within R would be released by the
// lag bound too, out of order: the price of bounded memory.)
func TestTerminalAbsentSource(t *testing.T) {
	full := termHistory(t, 47, 1500, 3, false)
	h := &termHist{bySrc: make([][]int, termSrcs)}
	for i, e := range full.events {
		if full.src[i] == termSrcs-1 {
			continue
		}
		h.bySrc[full.src[i]] = append(h.bySrc[full.src[i]], len(h.events))
		h.events = append(h.events, e)
		h.src = append(h.src, full.src[i])
		h.off = append(h.off, full.off[i])
	}
	ref := termReference(t, h)
	b := newTermBroker()
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendOrdered()
	rt.finish()
	m := startTerm(t, b, NewMemoryCheckpoints(), func(c *terminalConfig) {
		c.credit = 64
		c.alignLag = 200 * time.Millisecond
	})
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	if got := testutil.ToFloat64(m.st.met.aligned.WithLabelValues("lag_bound")); got == 0 {
		t.Error("no event released by the lag bound: the absent source held nothing back?")
	}
}

// TestTerminalEnrichedPartitions: an enriched topic with another partition
// count than the input topic's is an error of run, not a stage that
// retries writes forever.
func TestTerminalEnrichedPartitions(t *testing.T) {
	b := NewMemBroker(map[string]int{termR: termRParts, termE: termSrcs - 1})
	m := startTerm(t, b, NewMemoryCheckpoints(), nil)
	select {
	case err := <-m.err:
		if err == nil || !strings.Contains(err.Error(), "partitions") {
			t.Errorf("run: %v, want an error about E's partitions", err)
		}
	case <-time.After(termBudget):
		t.Fatal("run did not return")
	}
}

// TestTerminalMetricsLint: the terminal stage's metrics pass promlint.
func TestTerminalMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newTerminalMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.bad.WithLabelValues("record").Inc()
	m.checkpoints.WithLabelValues("put", "ok").Inc()
	m.aligned.WithLabelValues("ordered").Inc()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if _, err := newTerminalMetrics(reg); err == nil {
		t.Error("registering the metrics twice: no error")
	}
}

// TestTerminalLabels: with a labels topic (fraud labels of some
// transactions, delayed, half without tx_ts), E equals the reference with
// the labels applied in Replay's order, and some label-fed column is not
// zero.
func TestTerminalLabels(t *testing.T) {
	h := termHistory(t, 31, 4000, 10, true)
	if len(h.labels) < 20 {
		t.Fatalf("%d labels: too few to test", len(h.labels))
	}
	ref := termReference(t, h)
	b := newTermBroker()
	termLabelsTopic(t, b, h)
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendUntil(rand.New(rand.NewPCG(9, 10)), time.Time{})
	rt.finish()
	m := startTerm(t, b, NewMemoryCheckpoints(), func(c *terminalConfig) { c.labelsTopic = termLabels })
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	if dups := termCompare(t, b, h, ref); dups > 0 {
		t.Errorf("%d events with more than one E record, want none", dups)
	}
	sh, _ := features.NewShared()
	names := features.Names()
	nonZero := 0
	for _, e := range ref {
		for j, c := range sh.Columns() {
			if strings.Contains(names[c], "fraud") && e.Cols[j] != 0 {
				nonZero++
				break
			}
		}
	}
	applied := testutil.ToFloat64(m.st.met.labels)
	t.Logf("%d events, %d labels (%v applied by the stage); %d events with a non-zero fraud column", len(h.events), len(h.labels), applied, nonZero)
	if nonZero == 0 {
		t.Fatal("no event has a non-zero fraud column: the labels do not reach the columns, the comparison covers nothing")
	}
	if applied == 0 || applied > float64(len(h.labels)) {
		t.Errorf("labels applied = %v, want between 1 and %d", applied, len(h.labels))
	}
	// The aligned counter counts the events, each once, not the labels.
	aligned := 0.0
	for _, o := range []string{"ordered", "idle_bound", "lag_bound", "out_of_order"} {
		aligned += testutil.ToFloat64(m.st.met.aligned.WithLabelValues(o))
	}
	if aligned != float64(len(h.events)) {
		t.Errorf("terminal aligned_events_total sums to %v, want the %d events", aligned, len(h.events))
	}
}

// TestTerminalBadRecords: records that are not R records, an unknown
// version or kind, an event whose payload does not decode and a source
// beyond the input topic's partitions are skipped and counted; the stage
// goes on and E equals the reference.
func TestTerminalBadRecords(t *testing.T) {
	h := termHistory(t, 41, 1500, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	rt := &termRouter{t: t, b: b, h: h}
	rng := rand.New(rand.NewPCG(11, 12))
	bad := [][]byte{
		[]byte("not a repartition record"),
		{'R', 9, 'e', 0, 0},
		{'R', 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		repart.AppendRecord(nil, repart.Head{Kind: repart.KindEvent, Src: 0, Offset: 1 << 40, TS: 1}, []byte(`{"tx_id":`)),
		repart.AppendRecord(nil, repart.Head{Kind: repart.KindMark, Src: termSrcs + 3, Offset: 5, TS: 1}, nil),
	}
	want := map[string]float64{"record": 3, "payload": 1, "source": 1}
	third := h.events[len(h.events)/3].TS
	rt.sendUntil(rng, third)
	for r := range termRParts {
		for _, v := range bad {
			if _, err := b.Append(termR, r, nil, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	rt.sendUntil(rng, time.Time{})
	rt.finish()
	m := startTerm(t, b, NewMemoryCheckpoints(), nil)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	termCompare(t, b, h, ref)
	// The event whose payload does not decode gets a refused E record
	// from each R partition it was written to (its card stage
	// dead-letters it instead of waiting for good), and nothing else.
	refused := termEnriched(t, b)[termKey{0, 1 << 40}]
	if len(refused) != termRParts || slices.ContainsFunc(refused, func(e repart.Enriched) bool { return !e.Refused || len(e.Cols) != 0 }) {
		t.Errorf("E records of the undecodable event: %+v, want %d refused without columns", refused, termRParts)
	}
	for reason, n := range want {
		if got := testutil.ToFloat64(m.st.met.bad.WithLabelValues(reason)); got != n*termRParts {
			t.Errorf("bad records %s = %v, want %v", reason, got, n*termRParts)
		}
	}
}

// TestTerminalCheckpointRefused: a corrupt checkpoint and one written for
// other features are refused (counted) and their partitions start empty;
// R being read from its start, E still equals the reference.
func TestTerminalCheckpointRefused(t *testing.T) {
	h := termHistory(t, 43, 1200, 3, false)
	ref := termReference(t, h)
	b := newTermBroker()
	store := NewMemoryCheckpoints()
	ctx := context.Background()
	key := func(r int, fp string) checkpoint.Key {
		return checkpoint.Key{Group: termGroup, Topic: termR, Partition: r, Fingerprint: fp}
	}
	corrupt := sealCkpt(ckptFrameTerminal, []byte(termCkptMagic+"\x01\x00\x00\x00garbage"))
	corrupt[len(corrupt)-1] ^= 0xff // and a bad CRC
	if _, err := store.Put(ctx, key(0, "test:features"), 0, strings.NewReader(string(corrupt))); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, key(1, "other:features"), 0, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	rt := &termRouter{t: t, b: b, h: h}
	rt.sendUntil(rand.New(rand.NewPCG(13, 14)), time.Time{})
	rt.finish()
	m := startTerm(t, b, store, nil)
	termWait(t, "an E record per event", func() bool { return termEvents(b) >= len(h.events) })
	waitRCommitted(t, b)
	m.stop(t)
	termCompare(t, b, h, ref)
	for outcome, n := range map[string]float64{"refused": 2, "none": 1} {
		if got := testutil.ToFloat64(m.st.met.checkpoints.WithLabelValues("restore", outcome)); got != n {
			t.Errorf("restores %s = %v, want %v", outcome, got, n)
		}
	}
}

// TestTerminalCheckpointCodec: a partition's checkpoint decodes to the
// state it was taken from, and a truncated one is refused.
func TestTerminalCheckpointCodec(t *testing.T) {
	st, err := newTerminalStage(terminalConfig{src: &MemSource{}, out: &termTestWriter{}, group: "g", rTopic: "R", eTopic: "E",
		inputParts: 2, newShared: func() (*features.Shared, error) { return features.NewShared() },
		ckpt: NewMemoryCheckpoints(), fingerprint: "fp", alignIdle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := &memClaim{p: 1, start: 10}
	tp, err := st.newPart(c)
	if err != nil {
		t.Fatal(err)
	}
	tp.rTrail.fetched(41, true)
	tp.srcs[0].trail.fetched(7, true)
	tp.srcs[0].trail.fetched(9, false)
	tp.srcs[0].trail.fetched(12, true) // applied ahead of 9
	tp.srcs[0].lastTS, tp.srcs[0].hasTS = 12345, true
	lt := newOffTrail(3)
	tp.labels[2] = &lt
	ev := features.Event{TxID: "t1", TS: time.Unix(100, 0), CardID: "c", TerminalID: "m", Amount: 5}
	tp.shared.Apply(&ev, tp.row)
	blob, err := encodeTermPart(tp)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := st.newPart(c)
	rPos, err := st.decodeTermPart(got, blob)
	if err != nil {
		t.Fatal(err)
	}
	if rPos != 42 {
		t.Errorf("R position = %d, want 42", rPos)
	}
	s := got.srcs[0]
	if s.trail.applied != 7 || !s.trail.isApplied(12) || trailHolds(&s.trail, 9) || s.lastTS != 12345 || !s.hasTS {
		t.Errorf("source 0 = applied %d trail %v ts %d/%v, want applied 7, 12 ahead, ts 12345", s.trail.applied, s.trail.trail, s.lastTS, s.hasTS)
	}
	if got.srcs[1].trail.applied != -1 || got.srcs[1].hasTS {
		t.Errorf("source 1 = %+v, want empty", got.srcs[1])
	}
	if l := got.labels[2]; l == nil || l.applied != 3 {
		t.Errorf("labels partition 2 = %+v, want applied 3", l)
	}
	if got.shared.Stats().Entities != 1 {
		t.Errorf("shared entities = %d, want 1", got.shared.Stats().Entities)
	}
	for _, cut := range []int{1, len(blob) / 2, len(blob) - 1} {
		fresh, _ := st.newPart(c)
		if _, err := st.decodeTermPart(fresh, blob[:cut]); !errors.Is(err, errCheckpoint) {
			t.Errorf("blob cut at %d: err %v, want errCheckpoint", cut, err)
		}
	}
}
