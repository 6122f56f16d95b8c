package stream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// The repartition mode (WithRepartition) on the in-memory broker: the
// events go through a repartition topic keyed by terminal to the terminal
// stages, whose columns come back through the enriched topic; every
// event's last features must still equal a single replay, bit for bit,
// through a backlog, a rebalance and a member's crash.

const (
	rTopic = "transactions.repartition"
	eTopic = "transactions.enriched"
)

// repartBroker is a broker with the input topic (parts partitions), the
// repartition topic (rParts) and the enriched topic.
func repartBroker(parts, rParts int) *stream.MemBroker {
	return stream.NewMemBroker(map[string]int{txTopic: parts, rTopic: rParts, eTopic: parts})
}

// repartMember is memMemberSource in the repartition mode: the member's
// terminal stage is a member of group.terminals on the repartition topic.
func repartMember(t *testing.T, b *stream.MemBroker, group string, sink output.Sink, store stream.CheckpointStore, opts ...stream.Option) (*stream.Pipeline, *stream.MemSource) {
	t.Helper()
	tsrc, err := b.NewSource(group+".terminals", rTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	base := []stream.Option{
		stream.WithRepartition(stream.RepartitionConfig{Topic: rTopic, Enriched: eTopic, Source: tsrc}),
		stream.WithCheckpoints(store), stream.WithStateInterval(time.Second), stream.WithMaxBatch(64),
		stream.WithAlignIdleWait(500 * time.Millisecond),
	}
	return memMemberSource(t, b, group, sink, append(base, opts...)...)
}

// TestMemRepartBacklog: a backlog of ten days in four partitions, one
// member, the terminals in three repartition partitions.
func TestMemRepartBacklog(t *testing.T) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 45, 3000)
	ends := appendAll(t, b, parts, msgs)
	sink := &memSink{}
	p, _ := repartMember(t, b, "mem-repart", sink, stream.NewMemoryCheckpoints())
	r := runPipeline(t, p)
	waitCommittedTo(t, b, "mem-repart", ends)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
}

// TestMemRepartRebalance: one member consumes a third of the history,
// a second joins (partitions of both stages split) for the next third,
// the first leaves for the last: every event's last features equal the
// replay's, none scored twice (graceful hand-overs).
func TestMemRepartRebalance(t *testing.T) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 46, 3000)
	store := stream.NewMemoryCheckpoints()
	sink := &memSink{}
	n1, n2 := len(msgs)/3, 2*len(msgs)/3
	ends := appendAll(t, b, parts, msgs[:n1])
	pa, _ := repartMember(t, b, "mem-repart-rb", sink, store)
	ra := runPipeline(t, pa)
	waitCommittedTo(t, b, "mem-repart-rb", ends)
	pb, srcB := repartMember(t, b, "mem-repart-rb", sink, store)
	rb := runPipeline(t, pb)
	waitFor(t, waitBudget, "member B to claim partitions", func() bool { return len(srcB.Claimed()) > 0 })
	for p, e := range appendAll(t, b, parts, msgs[n1:n2]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-repart-rb", ends)
	if err := ra.stop(t); err != nil {
		t.Fatal(err)
	}
	for p, e := range appendAll(t, b, parts, msgs[n2:]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-repart-rb", ends)
	if err := rb.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
}

// TestMemRepartCrash: two members; one is aborted mid-stream (no drain, no
// checkpoint, no commit) and expired from both groups. The survivor takes
// over its input and repartition partitions from their checkpoints: every
// event is scored, duplicates bounded by what was uncommitted, features
// equal to the replay's.
func TestMemRepartCrash(t *testing.T) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 47, 3000)
	store := stream.NewMemoryCheckpoints()
	sink := &memSink{}
	tsrcA, err := b.NewSource("mem-repart-crash.terminals", rTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	srcA, err := b.NewSource("mem-repart-crash", txTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	pa := newPipeline(t, noBrokers, "mem-repart-crash", shippedModels(t), sink,
		stream.WithSource(srcA), stream.WithWorkers(2),
		stream.WithRepartition(stream.RepartitionConfig{Topic: rTopic, Enriched: eTopic, Source: tsrcA}),
		stream.WithCheckpoints(store), stream.WithStateInterval(time.Second), stream.WithMaxBatch(64),
		stream.WithAlignIdleWait(500*time.Millisecond))
	ra := runPipeline(t, pa)
	pb, _ := repartMember(t, b, "mem-repart-crash", sink, store)
	rb := runPipeline(t, pb)
	n1 := len(msgs) / 2
	ends := appendAll(t, b, parts, msgs[:n1])
	waitCommittedTo(t, b, "mem-repart-crash", ends)
	n2 := n1 + n1/2
	for p, e := range appendAll(t, b, parts, msgs[n1:n2]) {
		ends[p] = e
	}
	waitFor(t, waitBudget, "the second batch of events scored", func() bool {
		return len(sink.kind(output.KindScore)) >= n2
	})
	pa.Abort()
	if err := ra.wait(t); !errors.Is(err, stream.ErrAborted) {
		t.Fatalf("Run after Abort: %v, want ErrAborted", err)
	}
	uncommitted := int64(0)
	c := b.Committed("mem-repart-crash", txTopic)
	for p, end := range ends {
		uncommitted += end - c[p]
	}
	b.Expire(srcA)
	b.Expire(tsrcA)
	for p, e := range appendAll(t, b, parts, msgs[n2:]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-repart-crash", ends)
	if err := rb.stop(t); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events uncommitted at the crash", uncommitted)
	checkAgainstReplay(t, sink, events, int(uncommitted))
}

// TestMemRepartQuietPartition: one input partition has nothing at all to
// read. Its owner still reports it to every terminal stage (a caught-up
// source from its start): without that, the terminal stages would take it
// for a lagging source and hold every other partition's terminal columns
// back for their lag wait (here minutes: three session timeouts).
func TestMemRepartQuietPartition(t *testing.T) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 48, 1500)
	var kept []kafka.Message
	var keptEv []features.Event
	for i, m := range msgs {
		if memPartition(m.Key, parts) != 3 {
			kept = append(kept, m)
			keptEv = append(keptEv, events[i])
		}
	}
	ends := appendAll(t, b, parts, kept)
	sink := &memSink{}
	p, _ := repartMember(t, b, "mem-repart-quiet", sink, stream.NewMemoryCheckpoints())
	r := runPipeline(t, p)
	t0 := time.Now()
	waitCommittedTo(t, b, "mem-repart-quiet", ends)
	if d := time.Since(t0); d > 20*time.Second {
		t.Errorf("took %v: the quiet partition held the others back", d)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, keptEv, 0)
}
