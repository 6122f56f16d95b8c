package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// TestPoisonKey: a message with a 170 KB key of control bytes (JSON
// escaping grows it six-fold) and an undecodable value used to make a dead
// letter larger than the broker takes: the write failed for good, the
// engine exited, and every restart met the same uncommitted message. Now
// the dead letter keeps the first output.MaxDeadLetterKey bytes of the key
// and its length, is written, and the events after it are scored and
// committed.
func TestPoisonKey(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1, deadTopic: 1})
	now := time.Now().UTC()
	key := bytes.Repeat([]byte{0x01}, 170_000)
	msgs := []kafka.Message{txEvent("before", "c1", now.Add(-2*time.Second)), {Key: key, Value: []byte(`{"tx_id":`)}, txEvent("after", "c1", now.Add(-time.Second))}
	w := newWriter(t, brokers, txTopic)
	w.BatchBytes = 4 << 20
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	sink := kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic, output.KindDeadLetter: deadTopic})
	p := newPipeline(t, brokers, "poison-key", shippedModels(t), sink, stream.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	r := runPipeline(t, p)
	waitHandled(t, p, 3)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := committedOffset(t, brokers, "poison-key"); got != 3 {
		t.Fatalf("committed offset %d, want 3", got)
	}
	dead := readAll(t, brokers, deadTopic)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	if n := len(dead[0].Value) + len(dead[0].Key); n > 8<<10 {
		t.Errorf("dead letter of %d bytes for a 170 KB key", n)
	}
	var dl struct {
		Key     string `json:"key_b64"`
		KeySize int    `json:"key_size"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal(dead[0].Value, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.KeySize != len(key) || dl.Reason != "malformed_json" || len(dead[0].Key) != output.MaxDeadLetterKey {
		t.Errorf("dead letter %s (key %d bytes), want the key cut to %d bytes and key_size %d", dead[0].Value, len(dead[0].Key), output.MaxDeadLetterKey, len(key))
	}
	if scores := readAll(t, brokers, scoresTopic); len(scores) != 2 {
		t.Errorf("%d score records, want 2", len(scores))
	}
}

// refusing is a sink that refuses for good, one by one, every score, alert
// or audit record whose value holds "poison" (as a sink refuses a record too
// large for it), and records the others (dead letters included).
type refusing struct {
	mu  sync.Mutex
	got []output.Message
}

func (r *refusing) Name() string { return "refusing" }

// Classify classifies as the NATS sink does (its refusal is NATS's).
func (r *refusing) Classify(err error) output.Class { return sinks.Classify(err) }
func (r *refusing) Close() error                    { return nil }
func (r *refusing) WriteBatch(_ context.Context, msgs []output.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	be := &output.BatchError{Sink: "refusing"}
	for i, m := range msgs {
		if m.Kind != output.KindDeadLetter && bytes.Contains(m.Value, []byte("poison")) {
			be.Indices = append(be.Indices, i)
			be.Errs = append(be.Errs, fmt.Errorf("publish: %w", nats.ErrMaxPayload))
			continue
		}
		m.Value = bytes.Clone(m.Value)
		r.got = append(r.got, m)
	}
	if len(be.Indices) > 0 {
		return be
	}
	return nil
}

// TestRecordRejected: a score record a sink refuses for good (too large)
// no longer stops the engine: it is counted, its event gets a dead letter
// with reason record_rejected and no payload, the other events of its batch
// are published, and every offset is committed.
func TestRecordRejected(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1})
	now := time.Now().UTC()
	var msgs []kafka.Message
	for i := range 20 {
		id := fmt.Sprintf("t-%d", i)
		if i == 7 {
			id = "poison-7"
		}
		msgs = append(msgs, txEvent(id, fmt.Sprintf("c%d", i%3), now.Add(time.Duration(i-30)*time.Second)))
	}
	produce(t, brokers, txTopic, msgs...)
	ref := &refusing{}
	fan, err := output.NewFanout([]output.Sink{ref}, output.WithFanoutBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fan.Close() })
	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "rejected", shippedModels(t), fan, stream.WithRegisterer(reg), stream.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		stream.WithAudit(false))
	r := runPipeline(t, p)
	waitHandled(t, p, len(msgs))
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := committedOffset(t, brokers, "rejected"); got != int64(len(msgs)) {
		t.Fatalf("committed offset %d, want %d", got, len(msgs))
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	scores, dead := 0, 0
	for _, m := range ref.got {
		switch m.Kind {
		case output.KindScore:
			scores++
		case output.KindDeadLetter:
			dead++
			if !strings.Contains(string(m.Value), `"reason":"record_rejected"`) || !strings.Contains(string(m.Value), `"offset":7`) ||
				m.ID != "dead_letter:"+txTopic+"/0/7" {
				t.Errorf("dead letter %s (id %s), want record_rejected for offset 7", m.Value, m.ID)
			}
		}
	}
	if scores != len(msgs)-1 || dead != 1 {
		t.Errorf("%d score records and %d dead letters, want %d and 1", scores, dead, len(msgs)-1)
	}
	if got := metricValue(t, reg, "streamscore_stream_records_rejected_total", "kind", "score", "sink", "refusing"); got != 1 {
		t.Errorf("streamscore_stream_records_rejected_total{kind=score} = %v, want 1", got)
	}
}
