package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// downSink fails every write with a retryable error, like a sink whose
// server is unreachable.
type downSink struct{}

func (downSink) Name() string { return "down" }
func (downSink) WriteBatch(ctx context.Context, _ []output.Message) error {
	return errors.Join(errors.New("dial tcp: connection refused"), ctx.Err())
}
func (downSink) Close() error { return nil }

// produceGood writes n valid events of 50 cards to txTopic.
func produceGood(t *testing.T, brokers []string, n int) {
	t.Helper()
	now := time.Now().Add(-time.Hour)
	var msgs []kafka.Message
	for i := range n {
		card := "c-" + strconv.Itoa(i%50)
		ev := []byte(`{"tx_id":"t-` + strconv.Itoa(i) + `","ts":` + strconv.FormatInt(now.UnixMilli()+int64(i), 10) +
			`,"card_id":"` + card + `","terminal_id":"m-1","amount":12.5}`)
		msgs = append(msgs, kafka.Message{Key: []byte(card), Value: ev})
	}
	produce(t, brokers, txTopic, msgs...)
}

// TestSoftStopWithSinkDown: SIGTERM while the only sink is down must return
// within the drain timeout (ErrDrainTimeout), commit nothing that was not
// published, and not hang on a full worker queue.
func TestSoftStopWithSinkDown(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 2})
	produceGood(t, brokers, 3000)
	fan, err := output.NewFanout([]output.Sink{downSink{}}, output.WithFanoutBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fan.Close() })
	var logs syncBuffer
	p := newPipeline(t, brokers, "down", shippedModels(t), fan, stream.WithRegisterer(prometheus.NewRegistry()),
		stream.WithMaxBatch(16), stream.WithInFlight(1), stream.WithQueueDepth(8), stream.WithDrainTimeout(time.Second),
		stream.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if ph := p.Phase(); ph != stream.PhaseNew {
		t.Fatalf("phase before Run: %v", ph)
	}
	r := runPipeline(t, p)
	waitFor(t, waitBudget, "intake to start", func() bool { return p.Stats().Consumed.Load() > 10 })
	if ph := p.Phase(); ph != stream.PhaseRunning {
		t.Fatalf("phase while consuming: %v", ph)
	}
	time.Sleep(500 * time.Millisecond) // let the queues fill behind the down sink
	r.cancel()
	waitFor(t, waitBudget, "the draining phase", func() bool { return p.Phase() == stream.PhaseDraining })
	if err := r.waitWithin(t, 10*time.Second*timeScale); !errors.Is(err, stream.ErrDrainTimeout) {
		t.Fatalf("Run: %v, want ErrDrainTimeout", err)
	}
	if ph := p.Phase(); ph != stream.PhaseStopped {
		t.Fatalf("phase after Run: %v", ph)
	}
	// The timeout says what it was waiting for, not only that it passed.
	if out := logs.String(); !regexp.MustCompile(`msg="drain timeout exceeded[^"]*" .*batches_not_acked=[1-9].*uncommitted="p\d+: \d+ after offset`).MatchString(out) {
		t.Errorf("no drain-timeout line naming what was waiting:\n%s", out)
	}
	if n := p.Stats().Scored.Load(); n != 0 {
		t.Fatalf("%d events counted as scored with the sink down", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	got, err := local.CommittedOffsets(ctx, brokers, "down", txTopic)
	if err != nil {
		t.Fatal(err)
	}
	for part, off := range got {
		if off > 0 {
			t.Fatalf("partition %d committed at %d although nothing was published", part, off)
		}
	}
}

// TestOversizedDeadLetter: a large bad message is dead-lettered with its size
// and digest only (a dead letter never keeps the message), and does not
// block the partition.
func TestOversizedDeadLetter(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, deadTopic: 1, scoresTopic: 1})
	big := append([]byte(`{"tx_id":"huge","junk":"`), bytes.Repeat([]byte("x"), 800<<10)...) // truncated JSON
	produce(t, brokers, txTopic, kafka.Message{Value: big})
	produceGood(t, brokers, 100)
	p := newPipeline(t, brokers, "big", shippedModels(t),
		kafkaSink(t, brokers, map[output.Kind]string{output.KindDeadLetter: deadTopic, output.KindScore: scoresTopic}),
		stream.WithRegisterer(prometheus.NewRegistry()))
	r := runPipeline(t, p)
	waitHandled(t, p, 101)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if s, d := p.Stats().Scored.Load(), p.Stats().DeadLettered.Load(); s != 100 || d != 1 {
		t.Fatalf("%d events scored, %d dead-lettered; want 100 and 1", s, d)
	}
	out := readAll(t, brokers, deadTopic)
	if len(out) != 1 {
		t.Fatalf("%d dead letters, want 1", len(out))
	}
	var d struct {
		Reason string `json:"reason"`
		Size   int    `json:"value_size"`
		SHA256 string `json:"value_sha256"`
	}
	if err := json.Unmarshal(out[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	if d.Reason != "malformed_json" || d.Size != len(big) || d.SHA256 != sha256Hex(string(big)) || len(out[0].Value) > 1024 {
		t.Fatalf("dead letter %+v (%d bytes), want malformed_json, size %d, its digest and nothing of the message", d, len(out[0].Value), len(big))
	}
}
