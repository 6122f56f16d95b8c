package stream_test

import (
	"slices"
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
// event's last features must still equal a single replay, bit for bit:
// here through a backlog and a quiet partition; the rebalance test (with
// the hostile catalogue) and the crash test of mem_pipeline_test.go run in
// this mode too (memModes).

const (
	rTopic = "transactions.repartition"
	eTopic = "transactions.enriched"
)

// repartBroker is a broker with the input topic (parts partitions), the
// repartition topic (rParts) and the enriched topic.
func repartBroker(parts, rParts int) *stream.MemBroker {
	return stream.NewMemBroker(map[string]int{txTopic: parts, rTopic: rParts, eTopic: parts})
}

// memModes are the two places the shared entities' state can be kept:
// the pipeline tests that walk rebalances and crashes run in both.
var memModes = []string{"replicas", "repartition"}

// modeOpts returns the options of a member in mode, and in the
// repartition mode its terminal stage's source (expire it with the
// member's to kill both).
func modeOpts(t *testing.T, b *stream.MemBroker, group, mode string) ([]stream.Option, *stream.MemSource) {
	t.Helper()
	if mode != "repartition" {
		return nil, nil
	}
	tsrc, err := b.NewSource(group+".terminals", rTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	return []stream.Option{stream.WithRepartition(stream.RepartitionConfig{Topic: rTopic, Enriched: eTopic, Source: tsrc})}, tsrc
}

// withMode is opts plus modeOpts (a new terminal source per call).
func withMode(t *testing.T, b *stream.MemBroker, group, mode string, opts []stream.Option) []stream.Option {
	t.Helper()
	more, _ := modeOpts(t, b, group, mode)
	return append(slices.Clone(opts), more...)
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
func TestMemRepartBacklog(t *testing.T) { memRepartBacklog(t, 45, "mem-repart") }

// TestMemRepartBacklogNoIdleWait: the same backlog with WithAlignIdleWait(0),
// which reaches the terminal stage's aligner as 0 (it used to become the
// default 100 ms): a backlog is still applied in event-time order (only a
// caught-up, silent source stops holding the others back).
func TestMemRepartBacklogNoIdleWait(t *testing.T) {
	memRepartBacklog(t, 46, "mem-repart-idle0", stream.WithAlignIdleWait(0))
}

// memRepartBacklog runs a history of seed through one repartition-mode
// member of group and checks every record against Replay.
func memRepartBacklog(t *testing.T, seed int64, group string, opts ...stream.Option) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, seed, 3000)
	ends := appendAll(t, b, parts, msgs)
	sink := &memSink{}
	p, _ := repartMember(t, b, group, sink, stream.NewMemoryCheckpoints(), opts...)
	r := runPipeline(t, p)
	waitCommittedTo(t, b, group, ends)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
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
