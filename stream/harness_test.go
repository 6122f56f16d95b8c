package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// Topics and subjects of the tests.
const (
	txTopic      = "transactions"
	labelsTopic  = "labels"
	scoresTopic  = "scores"
	alertsTopic  = "alerts"
	auditTopic   = "audit"
	deadTopic    = "deadletter"
	scoresSubj   = "streamscore.scores"
	alertsSubj   = "streamscore.alerts"
	jsStreamName = "SCORES"
)

// Budgets for waiting on the pipeline; a test that needs them is broken,
// not slow, so they are generous (and stretched under the race detector).
const (
	waitBudget = 60 * time.Second * timeScale // for events to be handled
	ioBudget   = 30 * time.Second * timeScale // for one produce or read
	stopBudget = 30 * time.Second * timeScale // for Run to return
)

// startKafka starts an embedded Kafka cluster with topics (name ->
// partitions), closed when the test ends, and returns its brokers.
func startKafka(t *testing.T, topics map[string]int) []string {
	t.Helper()
	k, err := local.StartKafka(topics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k.Brokers()
}

// newWriter returns a writer to topic, closed when the test ends: keyed
// messages are hashed to partitions (keyless ones spread round robin), and
// writes return once every replica has the batch (acks=all).
func newWriter(t *testing.T, brokers []string, topic string) *kafka.Writer {
	t.Helper()
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 500, BatchBytes: 2 << 20, RequiredAcks: kafka.RequireAll, Transport: tr}
	t.Cleanup(func() { w.Close(); tr.CloseIdleConnections() })
	return w
}

// produce writes msgs to topic with a newWriter.
func produce(t *testing.T, brokers []string, topic string, msgs ...kafka.Message) {
	t.Helper()
	w := newWriter(t, brokers, topic)
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce %d messages to %s: %v", len(msgs), topic, err)
	}
}

// txEvent is a valid event of card at ts, keyed by the card, for amount 12.5
// at terminal m1.
func txEvent(id, card string, ts time.Time) kafka.Message {
	return kafka.Message{Key: []byte(card), Value: fmt.Appendf(nil,
		`{"tx_id":%q,"ts":%q,"card_id":%q,"terminal_id":"m1","amount":12.5}`, id, ts.Format(time.RFC3339Nano), card)}
}

// produceSynth writes n generated events with tx ids prefix-<i>, one second
// apart from start, and returns the ids.
func produceSynth(t *testing.T, w *kafka.Writer, g *synth.Generator, prefix string, start time.Time, n int) []string {
	t.Helper()
	ids, err := writeSynth(w, g, prefix, start, n)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// writeSynth is produceSynth for goroutines other than the test's.
func writeSynth(w *kafka.Writer, g *synth.Generator, prefix string, start time.Time, n int) ([]string, error) {
	ids := make([]string, 0, n)
	msgs := make([]kafka.Message, 0, n)
	for i := range n {
		tx := g.Next(start.Add(time.Duration(i) * time.Second))
		tx.Event.TxID = prefix + "-" + strconv.Itoa(i)
		ids = append(ids, tx.Event.TxID)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return nil, fmt.Errorf("produce %s: %w", prefix, err)
	}
	return ids, nil
}

// readAll returns every message of topic present when it is called, by
// partition and offset. It fetches with kafka-go's Client instead of calling
// local.ReadAll, whose Reader.Close waits out a pending long-poll fetch: a
// second per partition read.
func readAll(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	ends, err := local.EndOffsets(ctx, brokers, topic)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	var out []kafka.Message
	for _, part := range slices.Sorted(maps.Keys(ends)) {
		for off := int64(0); off < ends[part]; {
			from := off
			res, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: part, Offset: off,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
			if err == nil {
				err = res.Error
			}
			if err != nil {
				t.Fatalf("read %s/%d at %d: %v", topic, part, off, err)
			}
			for {
				rec, err := res.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("read %s/%d at %d: %v", topic, part, off, err)
				}
				if rec.Offset < off || rec.Offset >= ends[part] { // a batch may start before off
					continue
				}
				out = append(out, kafka.Message{Topic: topic, Partition: part, Offset: rec.Offset, Time: rec.Time,
					Key: readBytes(t, rec.Key), Value: readBytes(t, rec.Value)})
				off = rec.Offset + 1
			}
			if off == from {
				t.Fatalf("read %s/%d: no record at offset %d, below the end offset %d", topic, part, off, ends[part])
			}
		}
	}
	return out
}

func readBytes(t *testing.T, b kafka.Bytes) []byte {
	t.Helper()
	if b == nil {
		return nil
	}
	defer b.Close()
	out, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kafkaSink returns a fan-out over one Kafka sink that writes each kind of
// record in topics to its topic; it is closed when the test ends.
func kafkaSink(t *testing.T, brokers []string, topics map[output.Kind]string) *output.Fanout {
	t.Helper()
	var kopts []sinks.KafkaOption
	for kind, topic := range topics {
		kopts = append(kopts, sinks.WithKafkaTopic(kind, topic))
	}
	ks, err := sinks.NewKafka(brokers, kopts...)
	if err != nil {
		t.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{ks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fan.Close() })
	return fan
}

// shippedModels returns the shipped model set.
func shippedModels(t *testing.T) []*models.Model {
	t.Helper()
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// newPipeline returns a pipeline that consumes txTopic on brokers as member
// of group, scores with ms and writes to sink.
func newPipeline(t *testing.T, brokers []string, group string, ms []*models.Model, sink output.Sink, opts ...stream.Option) *stream.Pipeline {
	t.Helper()
	p, err := stream.New(brokers, group, txTopic, ms, sink, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// running is a pipeline whose Run is in progress on its own goroutine.
type running struct {
	cancel   context.CancelFunc
	done     chan error
	returned bool // Run's error is in err; touched by the test goroutine only
	err      error
}

// runPipeline calls p.Run on a goroutine. The run is stopped softly when
// the test ends if the test has not stopped it.
func runPipeline(t *testing.T, p *stream.Pipeline) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		if !r.returned {
			r.stop(t)
		}
		cancel()
	})
	return r
}

// stop stops the run softly (cancels Run's context) and returns Run's
// error, failing the test if Run takes longer than stopBudget to return.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	return r.stopWithin(t, stopBudget)
}

// stopWithin is stop with a budget of d.
func (r *running) stopWithin(t *testing.T, d time.Duration) error {
	t.Helper()
	r.cancel()
	return r.waitWithin(t, d)
}

// wait returns Run's error once Run has returned without a stop (after
// Abort), failing the test if that takes longer than stopBudget.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	return r.waitWithin(t, stopBudget)
}

func (r *running) waitWithin(t *testing.T, d time.Duration) error {
	t.Helper()
	if !r.returned {
		select {
		case r.err = <-r.done:
			r.returned = true
		case <-time.After(d):
			t.Fatalf("Run did not return within %v", d)
		}
	}
	return r.err
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitScored waits until p has scored n events (every sink acked them).
func waitScored(t *testing.T, p *stream.Pipeline, n int) {
	t.Helper()
	waitFor(t, waitBudget, fmt.Sprintf("%d events scored", n), func() bool { return p.Stats().Scored.Load() >= int64(n) })
}

// waitHandled waits until p has scored or dead-lettered n messages.
func waitHandled(t *testing.T, p *stream.Pipeline, n int) {
	t.Helper()
	waitFor(t, waitBudget, fmt.Sprintf("%d messages scored or dead-lettered", n), func() bool {
		return p.Stats().Scored.Load()+p.Stats().DeadLettered.Load() >= int64(n)
	})
}

// unscored returns how many of ids have no score record on topic (records
// deduplicated by tx_id): the events a fault lost.
func unscored(t *testing.T, brokers []string, topic string, ids []string) int {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range readAll(t, brokers, topic) {
		var rec struct {
			TxID string `json:"tx_id"`
		}
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			t.Fatal(err)
		}
		seen[rec.TxID] = true
	}
	lost := 0
	for _, id := range ids {
		if !seen[id] {
			lost++
		}
	}
	return lost
}

// allCommitted reports whether group has committed every partition of
// topic to its end.
func allCommitted(t *testing.T, brokers []string, group, topic string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	ends, err := local.EndOffsets(ctx, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := local.CommittedOffsets(ctx, brokers, group, topic)
	if err != nil {
		return false
	}
	for part, end := range ends {
		if committed[part] != end {
			return false
		}
	}
	return true
}
