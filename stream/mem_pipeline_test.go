package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// The pipeline on the in-memory broker (MemBroker): batching, commit
// capping, rebalances and the checkpoints that carry state between members,
// with no Kafka at all. The brokers the pipeline is given are an address
// nothing listens on: a test that needed them would hang or fail.

// noBrokers is where the pipeline would find Kafka, if it looked.
var noBrokers = []string{"127.0.0.1:1"}

// memSink keeps every message it acknowledges; while refuse returns true for
// a batch, WriteBatch fails it (the pipeline retries it) instead.
type memSink struct {
	mu      sync.Mutex
	msgs    []output.Message
	scores  []int       // score records per acknowledged batch
	acked   []time.Time // when each acknowledged batch was written
	refuse  func([]output.Message) bool
	refused atomic.Int64
}

func (s *memSink) Name() string { return "mem" }

func (s *memSink) WriteBatch(_ context.Context, msgs []output.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse != nil && s.refuse(msgs) {
		s.refused.Add(1)
		return errors.New("memSink: refused")
	}
	n := 0
	for _, m := range msgs {
		m.Key = append([]byte(nil), m.Key...)
		m.Value = append([]byte(nil), m.Value...)
		s.msgs = append(s.msgs, m)
		if m.Kind == output.KindScore {
			n++
		}
	}
	s.scores = append(s.scores, n)
	s.acked = append(s.acked, time.Now())
	return nil
}

func (s *memSink) Close() error { return nil }

// batches returns the score records of every acknowledged batch and when
// each was written.
func (s *memSink) batches() ([]int, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.scores...), append([]time.Time(nil), s.acked...)
}

// kind returns copies of the messages of kind k acknowledged so far.
func (s *memSink) kind(k output.Kind) []output.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ofKind(s.msgs, k)
}

// memPartition is the partition a keyed message goes to (any fixed hash
// does: a card's events stay in one partition, in order).
func memPartition(key []byte, partitions int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(partitions))
}

// appendAll appends msgs to the broker's transactions topic and returns the
// end offset of every partition.
func appendAll(t *testing.T, b *stream.MemBroker, partitions int, msgs []kafka.Message) map[int]int64 {
	t.Helper()
	ends, _ := appendAt(t, b, partitions, msgs)
	return ends
}

// memPos is a message's place in the topic.
type memPos struct {
	part int
	off  int64
}

// appendAt is appendAll, also returning where each message went.
func appendAt(t *testing.T, b *stream.MemBroker, partitions int, msgs []kafka.Message) (map[int]int64, []memPos) {
	t.Helper()
	ends := map[int]int64{}
	pos := make([]memPos, len(msgs))
	for i, m := range msgs {
		p := memPartition(m.Key, partitions)
		off, err := b.Append(txTopic, p, m.Key, m.Value)
		if err != nil {
			t.Fatal(err)
		}
		ends[p] = off + 1
		pos[i] = memPos{p, off}
	}
	return ends, pos
}

// memMember builds a pipeline consuming the broker as a new member of group.
func memMember(t *testing.T, b *stream.MemBroker, group string, sink output.Sink, opts ...stream.Option) *stream.Pipeline {
	t.Helper()
	p, _ := memMemberSource(t, b, group, sink, opts...)
	return p
}

// memMemberSource is memMember, returning the member's source too.
func memMemberSource(t *testing.T, b *stream.MemBroker, group string, sink output.Sink, opts ...stream.Option) (*stream.Pipeline, *stream.MemSource) {
	t.Helper()
	src, err := b.NewSource(group, txTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	return newPipeline(t, noBrokers, group, shippedModels(t), sink,
		append([]stream.Option{stream.WithSource(src), stream.WithWorkers(2)}, opts...)...), src
}

// waitCommittedTo waits until the group has committed every partition to
// its end offset.
func waitCommittedTo(t *testing.T, b *stream.MemBroker, group string, ends map[int]int64) {
	t.Helper()
	waitFor(t, waitBudget, "every partition committed to its end", func() bool {
		c := b.Committed(group, txTopic)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
}

// checkAgainstReplay fails the test unless every event has a score record,
// at most dupBound events have more than one, and the features of every
// event's last audit record equal a Replay of events, bit for bit.
func checkAgainstReplay(t *testing.T, sink *memSink, events []features.Event, dupBound int) {
	t.Helper()
	scored := map[string]int{}
	for _, m := range sink.kind(output.KindScore) {
		var r struct {
			TxID string `json:"tx_id"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		scored[r.TxID]++
	}
	last := map[string]map[string]float64{}
	for _, m := range sink.kind(output.KindAudit) {
		var r struct {
			TxID     string             `json:"tx_id"`
			Features map[string]float64 `json:"features"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		last[r.TxID] = r.Features
	}
	dups := 0
	for _, e := range events {
		switch n := scored[e.TxID]; {
		case n == 0:
			t.Errorf("%s: no score record", e.TxID)
		case n > 1:
			dups++
		}
	}
	if dups > dupBound {
		t.Errorf("%d events scored more than once, want at most %d", dups, dupBound)
	}
	names := features.Names()
	wrong := 0
	if err := features.Replay(events, nil, nil, func(e *features.Event, row []float32) error {
		got, ok := last[e.TxID]
		if !ok {
			t.Errorf("%s: no audit record", e.TxID)
			return nil
		}
		for i, name := range names {
			if v, ok := got[name]; !ok || math.Float32bits(float32(v)) != math.Float32bits(row[i]) {
				if wrong < 3 {
					t.Logf("%s: %s = %v, replay %v", e.TxID, name, v, row[i])
				}
				wrong++
				return nil
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events: %d scored twice or more, %d with features unlike the replay", len(events), dups, wrong)
	if wrong > 0 {
		t.Errorf("%d events whose features differ from the replay", wrong)
	}
}

// TestMemPipelineBacklog consumes a backlog of ten days over four
// partitions of the in-memory broker: every event is scored once, every
// feature row equals the replay's (the aligner applies the partitions in
// event-time order), and the group's commits reach every partition's end.
func TestMemPipelineBacklog(t *testing.T) {
	const parts = 4
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	events, msgs, _, _ := history(t, 41, 3000)
	ends := appendAll(t, b, parts, msgs)
	sink := &memSink{}
	r := runPipeline(t, memMember(t, b, "mem-backlog", sink, stream.WithMaxBatch(64)))
	waitCommittedTo(t, b, "mem-backlog", ends)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
	sizes, _ := sink.batches()
	largest := 0
	for _, n := range sizes {
		largest = max(largest, n)
	}
	if largest > 64 {
		t.Errorf("a batch of %d events, above the max batch of 64", largest)
	}
	if len(sizes) >= len(events)/4 {
		t.Errorf("%d batches for %d events of a backlog: the batches do not fill", len(sizes), len(events))
	}
	t.Logf("%d batches, the largest of %d events", len(sizes), largest)
}

// TestMemPipelineLoneEvent: a lone event at a low rate is scored at once,
// not after --max-delay (here 1 s): its batch closes as soon as the
// feature stage has nothing more to read. With WithHoldBatches it waits for
// the delay, the old behaviour kept as an option.
func TestMemPipelineLoneEvent(t *testing.T) {
	const delay = time.Second
	for _, hold := range []bool{false, true} {
		t.Run(fmt.Sprintf("hold=%v", hold), func(t *testing.T) {
			b := stream.NewMemBroker(map[string]int{txTopic: 1})
			_, msgs, _, _ := history(t, 45, 50)
			sink := &memSink{}
			// The aligner would hold a lone partition's event for its idle
			// wait: 0 takes it out of what this test measures.
			r := runPipeline(t, memMember(t, b, "mem-lone", sink, stream.WithMaxDelay(delay),
				stream.WithHoldBatches(hold), stream.WithAlignIdleWait(0)))
			var took []time.Duration
			for i := range 3 {
				t0 := time.Now()
				ends := appendAll(t, b, 1, msgs[i:i+1])
				waitCommittedTo(t, b, "mem-lone", ends)
				_, at := sink.batches()
				took = append(took, at[len(at)-1].Sub(t0))
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			t.Logf("a lone event written to the sink after %v", took)
			for _, d := range took {
				if !hold && d >= delay/2 {
					t.Errorf("a lone event waited %v for its batch (max delay %v): the batch did not close when the stage went idle", d, delay)
				}
				if hold && d < delay*9/10 {
					t.Errorf("with WithHoldBatches a lone event waited %v, less than the max delay %v", d, delay)
				}
			}
		})
	}
}

// TestMemPipelineCommitCapping refuses, for a while, every sink batch
// holding one event's records: the pipeline retries the batch, and no
// commit of that event's partition passes the event meanwhile. Once the
// sink takes it, every partition's commit reaches its end, and no event is
// lost or scored twice (a refused batch is retried whole, never
// acknowledged in part).
func TestMemPipelineCommitCapping(t *testing.T) {
	const parts = 4
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	events, msgs, _, _ := history(t, 42, 2000)
	victim := events[len(events)/3].TxID
	vPart := memPartition(msgs[len(events)/3].Key, parts)
	var holding atomic.Bool
	holding.Store(true)
	sink := &memSink{refuse: func(batch []output.Message) bool {
		if !holding.Load() {
			return false
		}
		for _, m := range batch {
			if m.Kind == output.KindScore && strings.Contains(string(m.Value), `"tx_id":"`+victim+`"`) {
				return true
			}
		}
		return false
	}}
	ends := appendAll(t, b, parts, msgs)
	vOff := int64(-1)
	for _, m := range msgs[:len(events)/3+1] {
		if memPartition(m.Key, parts) == vPart {
			vOff++
		}
	}
	// Behind a Fanout, as the engine runs its sinks: it retries the refused
	// batch.
	fan, err := output.NewFanout([]output.Sink{sink}, output.WithFanoutBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := runPipeline(t, memMember(t, b, "mem-capping", fan, stream.WithMaxBatch(32)))
	// The refused batch is retried (a sink's failure is backpressure: the
	// stage stops taking events once the worker's batches are all in
	// flight); the victim's partition stays at or below the victim's
	// offset meanwhile.
	waitFor(t, waitBudget, "the victim's batch refused three times", func() bool { return sink.refused.Load() >= 3 })
	for range 20 {
		if c := b.Committed("mem-capping", txTopic)[vPart]; c > vOff {
			t.Fatalf("partition %d committed to %d while the record of offset %d (%s) is refused by the sink", vPart, c, vOff, victim)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("partition %d held at %d (the refused event is at %d) after %d refusals", vPart, b.Committed("mem-capping", txTopic)[vPart], vOff, sink.refused.Load())
	holding.Store(false)
	waitCommittedTo(t, b, "mem-capping", ends)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
}

// TestMemPipelineRebalanceCheckpoints runs a history through two members
// sharing a memory checkpoint store on the in-memory broker: A alone, then
// B joins, then A leaves, with the broker's eager rebalances. Every event is
// scored, none twice (graceful hand-overs), and every event's features
// equal the replay's: card state followed its partitions through the
// checkpoints, and each member's terminals saw every partition (replicas
// read through Source.Read). The hostile-input catalogue is mixed in: each
// message ends as exactly one dead letter with its reason, whichever member
// owns or replicates its partition.
func TestMemPipelineRebalanceCheckpoints(t *testing.T) {
	for _, mode := range memModes {
		t.Run(mode, func(t *testing.T) { memRebalanceCheckpoints(t, mode) })
	}
}

func memRebalanceCheckpoints(t *testing.T, mode string) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 43, 3000)
	var reasons []string // of the hostile messages, by their index in msgs
	{
		var mixed []kafka.Message
		hostile := hostileEvents(time.Now())
		for i, m := range msgs {
			if i%100 == 50 && len(hostile) > 0 {
				h := hostile[0]
				hostile = hostile[1:]
				if h.reason != "" { // the valid one would change a replay's terminal
					mixed = append(mixed, h.msg)
					reasons = append(reasons, h.reason)
				}
			}
			mixed = append(mixed, m)
			reasons = append(reasons, "")
		}
		msgs = mixed
	}
	store := stream.NewMemoryCheckpoints()
	sink := &memSink{}
	opts := []stream.Option{stream.WithCheckpoints(store), stream.WithStateInterval(time.Second),
		stream.WithAlignIdleWait(2 * time.Second), stream.WithMaxBatch(64)}
	n1, n2 := len(msgs)/3, 2*len(msgs)/3
	var pos []memPos
	appendPart := func(part []kafka.Message) map[int]int64 {
		ends, at := appendAt(t, b, parts, part)
		pos = append(pos, at...)
		return ends
	}
	ends := appendPart(msgs[:n1])
	ra := runPipeline(t, memMember(t, b, "mem-rebalance", sink, withMode(t, b, "mem-rebalance", mode, opts)...))
	waitCommittedTo(t, b, "mem-rebalance", ends)
	pb, srcB := memMemberSource(t, b, "mem-rebalance", sink, withMode(t, b, "mem-rebalance", mode, opts)...)
	rb := runPipeline(t, pb)
	// B has joined (the partitions are split) before the middle third: the
	// split ownership and the replica reads are what the test walks.
	waitFor(t, waitBudget, "member B to claim partitions", func() bool { return len(srcB.Claimed()) > 0 })
	for p, e := range appendPart(msgs[n1:n2]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-rebalance", ends)
	if err := ra.stop(t); err != nil {
		t.Fatal(err)
	}
	for p, e := range appendPart(msgs[n2:]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-rebalance", ends)
	if err := rb.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)

	got := map[memPos][]string{}
	for _, m := range sink.kind(output.KindDeadLetter) {
		var rec struct {
			Partition int    `json:"partition"`
			Offset    int64  `json:"offset"`
			Reason    string `json:"reason"`
		}
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			t.Fatalf("dead letter %.200s: %v", m.Value, err)
		}
		got[memPos{rec.Partition, rec.Offset}] = append(got[memPos{rec.Partition, rec.Offset}], rec.Reason)
	}
	hostile := 0
	for i, want := range reasons {
		rs := got[pos[i]]
		delete(got, pos[i])
		switch {
		case want == "" && len(rs) > 0:
			t.Errorf("valid message at %+v dead-lettered: %v", pos[i], rs)
		case want == "":
		case len(rs) != 1 || rs[0] != want:
			t.Errorf("hostile message at %+v: dead letters %v, want one %q", pos[i], rs, want)
		default:
			hostile++
		}
	}
	if len(got) > 0 {
		t.Errorf("dead letters at unknown places: %v", got)
	}
	t.Logf("%d hostile messages, each one dead letter with its reason", hostile)
	if hostile < 15 {
		t.Errorf("only %d hostile messages checked", hostile)
	}
}

// TestMemPipelineMemberCrash: two members share a memory checkpoint
// store; one is aborted mid-stream (as if killed: no drain, no checkpoint,
// no commit after) and the broker expires it. The survivor restores the
// dead member's partitions from their last checkpoints and Kafka's
// re-delivery covers the rest: every event is scored, the duplicates are
// the dead member's events after its last committed checkpoint, and every
// event's last features equal the replay's.
func TestMemPipelineMemberCrash(t *testing.T) {
	for _, mode := range memModes {
		t.Run(mode, func(t *testing.T) { memMemberCrash(t, mode) })
	}
}

func memMemberCrash(t *testing.T, mode string) {
	const parts = 4
	b := repartBroker(parts, 3)
	events, msgs, _, _ := history(t, 44, 3000)
	store := stream.NewMemoryCheckpoints()
	sink := &memSink{}
	opts := []stream.Option{stream.WithCheckpoints(store), stream.WithStateInterval(time.Second),
		stream.WithAlignIdleWait(2 * time.Second), stream.WithMaxBatch(64)}
	aOpts, tsrcA := modeOpts(t, b, "mem-crash", mode)
	pa, srcA := memMemberSource(t, b, "mem-crash", sink, append(slices.Clone(opts), aOpts...)...)
	ra := runPipeline(t, pa)
	rb := runPipeline(t, memMember(t, b, "mem-crash", sink, withMode(t, b, "mem-crash", mode, opts)...))
	n1 := len(msgs) / 2
	ends := appendAll(t, b, parts, msgs[:n1])
	waitCommittedTo(t, b, "mem-crash", ends)
	// More events, and the crash as soon as they are scored: commits move
	// only at a checkpoint round (every second), so A's share of them is
	// scored and not committed.
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
	// What the group had not committed when A died: Kafka re-delivers it,
	// and the duplicates (A's share of it) are bounded by it.
	uncommitted := int64(0)
	c := b.Committed("mem-crash", txTopic)
	for p, end := range ends {
		uncommitted += end - c[p]
	}
	if uncommitted == 0 {
		t.Fatal("the crash landed after every commit: nothing is re-delivered, the test does not walk the crash")
	}
	b.Expire(srcA)
	if tsrcA != nil {
		b.Expire(tsrcA) // its terminal stage died with it
	}
	for p, e := range appendAll(t, b, parts, msgs[n1+n1/2:]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-crash", ends)
	if err := rb.stop(t); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events uncommitted at the crash", uncommitted)
	checkAgainstReplay(t, sink, events, int(uncommitted))
}

// TestMemPipelineBurstAfterIdle: the pipeline has consumed half a history
// and every partition has been quiet past --align-idle-wait when the other
// half (five days of event time) is written, message by message, as
// producers resuming after an outage flush their backlog. The first partition fetched must
// not race through its burst past the others' older events: before the
// aligner woke the idle partitions (align's burst rule), 159 to 1,466 of
// the 1,514 events were scored with wrong terminal features, with one
// member or two (each reading the other's partitions as replicas),
// depending on which fetch returned first. Every event must equal the
// replay.
func TestMemPipelineBurstAfterIdle(t *testing.T) {
	for _, members := range []int{1, 2} {
		t.Run(fmt.Sprintf("members=%d", members), func(t *testing.T) {
			const parts = 4
			b := stream.NewMemBroker(map[string]int{txTopic: parts})
			events, msgs, _, _ := history(t, 44, 3000)
			sink := &memSink{}
			// A woken partition gets another idle wait to deliver its
			// backlog: 500 ms, so that a loaded machine's scheduling does
			// not pass it (the documented bound, not the rule). Two members
			// share checkpoints: the second may join after the first has
			// scored events of the partitions it takes over.
			opts := []stream.Option{stream.WithMaxBatch(64), stream.WithAlignIdleWait(500 * time.Millisecond),
				stream.WithCheckpoints(stream.NewMemoryCheckpoints()), stream.WithStateInterval(time.Second)}
			var rs []*running
			for range members {
				rs = append(rs, runPipeline(t, memMember(t, b, "mem-burst", sink, opts...)))
			}
			n1 := len(msgs) / 2
			ends := appendAll(t, b, parts, msgs[:n1])
			waitCommittedTo(t, b, "mem-burst", ends)
			time.Sleep(time.Second) // every partition idle
			for p, e := range appendAll(t, b, parts, msgs[n1:]) {
				ends[p] = e
			}
			waitCommittedTo(t, b, "mem-burst", ends)
			for _, r := range rs {
				if err := r.stop(t); err != nil {
					t.Fatal(err)
				}
			}
			checkAgainstReplay(t, sink, events, 0)
		})
	}
}

// TestMemPipelineNoBroker: the address the tests above give as brokers has
// no Kafka behind it (a sanity check of the premise).
func TestMemPipelineNoBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := (&kafka.Dialer{}).DialContext(ctx, "tcp", noBrokers[0]); err == nil {
		c.Close()
		t.Fatal(fmt.Sprintf("something listens on %s", noBrokers[0]))
	}
}

// TestMemPipelineStopMidBacklog: a stop while one partition is read
// further in event time than the other (a backlog fetched unevenly)
// applies only what the event-time order allows; the rest is left
// uncommitted, fetched again at the next start, and every record of both
// runs equals a Replay of the whole history. (The stage used to apply
// everything buffered at a stop: partition 0's events went before
// partition 1's older ones, which the next start then found late and kept
// out of the terminal windows.)
func TestMemPipelineStopMidBacklog(t *testing.T) {
	const parts = 2
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	events, msgs, _, _ := history(t, 45, 2000)
	sink := &memSink{}
	opts := []stream.Option{stream.WithMaxBatch(64), stream.WithCheckpoints(stream.NewMemoryCheckpoints()),
		stream.WithStateInterval(time.Second)}
	held := append(slices.Clone(opts), stream.WithAlignIdleWait(time.Minute), stream.WithAlignLagWait(time.Minute))
	// Partition 0 gets its whole history, partition 1 its first half. The
	// first run has no wait bound within the test: what waits in the
	// aligner waits.
	var first, rest []kafka.Message
	for i, m := range msgs {
		if memPartition(m.Key, parts) == 1 && i >= len(msgs)/2 {
			rest = append(rest, m)
		} else {
			first = append(first, m)
		}
	}
	ends := appendAll(t, b, parts, first)
	r := runPipeline(t, memMember(t, b, "mem-stop", sink, held...))
	// Partition 1 is applied up to its last event (which waits for a later
	// one of its own); partition 0's events after it wait for partition 1.
	waitFor(t, waitBudget, "partition 1 committed up to its last event", func() bool {
		return b.Committed("mem-stop", txTopic)[1] >= ends[1]-1
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if c := b.Committed("mem-stop", txTopic)[0]; c >= ends[0] {
		t.Fatalf("partition 0 committed to its end (%d) at the stop: its events later than partition 1's were applied ahead of partition 1's", c)
	}
	for p, e := range appendAll(t, b, parts, rest) {
		ends[p] = e
	}
	r = runPipeline(t, memMember(t, b, "mem-stop", sink, opts...))
	waitCommittedTo(t, b, "mem-stop", ends)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkAgainstReplay(t, sink, events, 0)
}

// positionsOnce is a MemSource whose group positions can be read once
// (the generation's start) and never after: positionsLoop's reads all
// fail, so it never forgets a kept shared column.
type positionsOnce struct {
	*stream.MemSource
	calls atomic.Int32
}

func (s *positionsOnce) Positions(ctx context.Context) (map[int]stream.Position, error) {
	if s.calls.Add(1) > 1 {
		return nil, errors.New("positions unreadable (test)")
	}
	return s.MemSource.Positions(ctx)
}

// TestMemPipelineOwnCommitsTrimCols: a member forgets the shared columns
// it keeps for the partitions it claims (for their next owner) at its own
// commits, without waiting for its read of the group's positions every
// 2 s — here those reads all fail, and the columns of a 3,000-event
// backlog are still all forgotten once it is committed
// (streamscore_stream_shared_columns_held_events, published once per
// batch, back to 0). Before, a new process kept every event's columns
// until the first read of the positions, and a busy one up to 2 s of its
// traffic.
func TestMemPipelineOwnCommitsTrimCols(t *testing.T) {
	const parts = 4
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	_, msgs, _, _ := history(t, 43, 3000)
	ends := appendAll(t, b, parts, msgs)
	mem, err := b.NewSource("mem-trim", txTopic, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	src := &positionsOnce{MemSource: mem}
	reg := prometheus.NewRegistry()
	p := newPipeline(t, noBrokers, "mem-trim", shippedModels(t), &memSink{},
		stream.WithSource(src), stream.WithWorkers(2), stream.WithRegisterer(reg), stream.WithMaxBatch(64))
	r := runPipeline(t, p)
	waitCommittedTo(t, b, "mem-trim", ends)
	held := -1.0
	waitFor(t, waitBudget, "the shared columns of the committed events forgotten", func() bool {
		held = counterOr0(t, reg, "streamscore_stream_shared_columns_held_events")
		if held > 0 {
			// Published once per batch: one more batch publishes what the
			// trims that followed the last commits left.
			if _, err := b.Append(txTopic, 0, nil, []byte("not json")); err != nil {
				t.Fatal(err)
			}
			ends[0]++
			waitCommittedTo(t, b, "mem-trim", ends)
		}
		return held == 0
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// unreachableStore is a checkpoint store whose next failLatest reads fail,
// as a store does while it is unreachable (a leader moving, a network
// partition).
type unreachableStore struct {
	stream.CheckpointStore
	failLatest atomic.Int64
}

func (s *unreachableStore) Latest(ctx context.Context, key checkpoint.Key) (checkpoint.Checkpoint, bool, error) {
	if s.failLatest.Add(-1) >= 0 {
		return checkpoint.Checkpoint{}, false, errors.New("unreachableStore: unreachable")
	}
	return s.CheckpointStore.Latest(ctx, key)
}

// TestMemPipelineRestoreRetried: a member takes over a group whose
// checkpoints it cannot read at first (the store unreachable for its
// first reads). It asks again rather than starting those partitions empty
// (or from the slot older than the commit): every event of the second
// half has the replay's features. Before, the partitions whose reads
// failed started without their cards' history, and their next
// checkpoints replaced the ones that could not be read.
func TestMemPipelineRestoreRetried(t *testing.T) {
	const parts = 4
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	events, msgs, _, _ := history(t, 45, 2000)
	store := &unreachableStore{CheckpointStore: stream.NewMemoryCheckpoints()}
	sink := &memSink{}
	opts := []stream.Option{stream.WithCheckpoints(store), stream.WithStateInterval(time.Second),
		stream.WithAlignIdleWait(2 * time.Second), stream.WithMaxBatch(64)}
	n1 := len(msgs) / 2
	ends := appendAll(t, b, parts, msgs[:n1])
	ra := runPipeline(t, memMember(t, b, "mem-restore", sink, opts...))
	waitCommittedTo(t, b, "mem-restore", ends)
	if err := ra.stop(t); err != nil {
		t.Fatal(err)
	}
	// Both slots of two partitions and one slot of a third, whichever
	// the restores ask first.
	store.failLatest.Store(5)
	rb := runPipeline(t, memMember(t, b, "mem-restore", sink, opts...))
	for p, e := range appendAll(t, b, parts, msgs[n1:]) {
		ends[p] = e
	}
	waitCommittedTo(t, b, "mem-restore", ends)
	if err := rb.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := store.failLatest.Load(); n >= 0 {
		t.Fatalf("%d of the failed reads left: the restores did not meet them", n+1)
	}
	checkAgainstReplay(t, sink, events, 0)
}

// slowStore is a checkpoint store whose Puts of partitions' checkpoints
// take delay, counting those begun while another of the same partition was
// in flight.
type slowStore struct {
	stream.CheckpointStore
	delay    time.Duration
	mu       sync.Mutex
	inflight map[int]int
	overlaps atomic.Int64
	puts     atomic.Int64
	cut      atomic.Int64
}

func (s *slowStore) Put(ctx context.Context, key checkpoint.Key, offset int64, blob io.Reader) (checkpoint.Info, error) {
	if strings.HasSuffix(key.Topic, "#shared") { // the group's shared-state checkpoint: not a partition's
		return s.CheckpointStore.Put(ctx, key, offset, blob)
	}
	s.mu.Lock()
	s.inflight[key.Partition]++
	if s.inflight[key.Partition] > 1 {
		s.overlaps.Add(1)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[key.Partition]--
		s.mu.Unlock()
	}()
	s.puts.Add(1)
	select {
	case <-time.After(s.delay):
	case <-ctx.Done(): // a revoke cuts the interval round's store short
		s.cut.Add(1)
		return checkpoint.Info{}, ctx.Err()
	}
	return s.CheckpointStore.Put(ctx, key, offset, blob)
}

// TestMemPipelineCheckpointRoundsDoNotOverlap: a member's interval
// checkpoint round and the round of a revoke (another member joining or
// leaving) never store a partition's checkpoint at the same time. They
// did: the revoke's round encoded the partition into the slot the
// interval's was still storing, the two stores could land in either
// order, and each recorded the other's slot, so that the checkpoint at
// the committed offset could be overwritten (a kill then restored the
// wrong one). With a store slow enough for the rounds to meet (a put takes
// 700 ms, a round every second) and members joining and leaving, no put of
// a partition may begin while another of it is in flight; and every event
// still ends with the replay's features (also when a revoke cuts the
// interval round's store short: its own round stores those partitions).
func TestMemPipelineCheckpointRoundsDoNotOverlap(t *testing.T) {
	const parts = 4
	b := stream.NewMemBroker(map[string]int{txTopic: parts})
	events, msgs, _, _ := history(t, 46, 3000)
	store := &slowStore{CheckpointStore: stream.NewMemoryCheckpoints(), delay: 700 * time.Millisecond, inflight: map[int]int{}}
	sink := &memSink{}
	opts := []stream.Option{stream.WithCheckpoints(store), stream.WithStateInterval(time.Second),
		stream.WithAlignIdleWait(2 * time.Second), stream.WithMaxBatch(64)}
	ra := runPipeline(t, memMember(t, b, "mem-rounds", sink, opts...))
	ends := map[int]int64{}
	step := len(msgs) / 6
	for i := 0; i < 6; i++ {
		for p, e := range appendAll(t, b, parts, msgs[i*step:min((i+1)*step, len(msgs))]) {
			ends[p] = e
		}
		// A second member joins and leaves while the first's rounds run.
		time.Sleep(time.Duration(300+150*i) * time.Millisecond)
		rb := runPipeline(t, memMember(t, b, "mem-rounds", sink, opts...))
		time.Sleep(1200 * time.Millisecond)
		if err := rb.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	if len(msgs) > 6*step {
		for p, e := range appendAll(t, b, parts, msgs[6*step:]) {
			ends[p] = e
		}
	}
	waitCommittedTo(t, b, "mem-rounds", ends)
	if err := ra.stop(t); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d checkpoint puts, %d begun while another of the same partition was in flight, %d cut short by a revoke", store.puts.Load(), store.overlaps.Load(), store.cut.Load())
	if n := store.overlaps.Load(); n > 0 {
		t.Errorf("%d checkpoint puts of a partition begun while another of it was in flight", n)
	}
	checkAgainstReplay(t, sink, events, 0) // graceful hand-overs: no duplicates
}
