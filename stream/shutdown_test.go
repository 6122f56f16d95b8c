package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// downSink fails every write with a retryable error, like a sink whose
// server is unreachable.
type downSink struct{}

func (downSink) Name() string { return "down" }
func (downSink) WriteBatch(ctx context.Context, _ []sinks.Message) error {
	return errors.Join(errors.New("dial tcp: connection refused"), ctx.Err())
}
func (downSink) Close() error { return nil }

func produceGood(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	now := time.Now().Add(-time.Hour)
	var msgs []kafka.Message
	for i := range n {
		ev := []byte(`{"tx_id":"t-` + itoa(i) + `","ts":` + itoa(int(now.UnixMilli())+i) + `,"card_id":"c-` + itoa(i%50) + `","terminal_id":"m-1","amount":12.5}`)
		msgs = append(msgs, kafka.Message{Key: []byte("c-" + itoa(i%50)), Value: ev})
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return string(appendInt(nil, i)) }
func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

// TestSoftStopWithSinkDown: SIGTERM while the only sink is down must return
// within the drain timeout (ErrDrainTimeout), commit nothing that was not
// published, and not hang on a full worker queue.
func TestSoftStopWithSinkDown(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"tx": 2})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	produceGood(t, k.Brokers(), "tx", 3000)
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	fan := sinks.NewFanout([]sinks.Sink{downSink{}}, sinks.WithFanoutBackoff(time.Millisecond, 10*time.Millisecond))
	defer fan.Close()
	p, err := stream.New(k.Brokers(), "down", "tx", ms, fan, stream.WithRegisterer(prometheus.NewRegistry()),
		stream.WithMaxBatch(16), stream.WithInFlight(1), stream.WithQueueDepth(8), stream.WithDrainTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, 30*time.Second*timeScale, "intake to start", func() bool { return p.Stats().Consumed.Load() > 10 })
	time.Sleep(500 * time.Millisecond) // let the queues fill behind the down sink
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, stream.ErrDrainTimeout) {
			t.Fatalf("Run: %v, want ErrDrainTimeout", err)
		}
	case <-time.After(10 * time.Second * timeScale):
		t.Fatal("Run did not return within the drain timeout with the sink down")
	}
	if n := p.Stats().Scored.Load(); n != 0 {
		t.Fatalf("%d events counted as scored with the sink down", n)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	got, err := local.CommittedOffsets(cctx, k.Brokers(), "down", "tx")
	if err != nil {
		t.Fatal(err)
	}
	for part, off := range got {
		if off > 0 {
			t.Fatalf("partition %d committed at %d although nothing was published", part, off)
		}
	}
}

// TestOversizedDeadLetter: a bad message too large to dead-letter whole is
// dead-lettered truncated, with its size and digest, and does not block the
// partition.
func TestOversizedDeadLetter(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"tx": 1, "deadletter": 1, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	big := append([]byte(`{"tx_id":"huge","junk":"`), bytes.Repeat([]byte("x"), 800<<10)...) // truncated JSON
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: "tx", BatchTimeout: time.Millisecond, BatchBytes: 2 << 20}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Value: big}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	produceGood(t, k.Brokers(), "tx", 100)
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := sinks.NewKafka(k.Brokers(), sinks.WithKafkaTopic(sinks.KindDeadLetter, "deadletter"), sinks.WithKafkaTopic(sinks.KindScore, "scores"))
	if err != nil {
		t.Fatal(err)
	}
	fan := sinks.NewFanout([]sinks.Sink{ks})
	defer fan.Close()
	p, err := stream.New(k.Brokers(), "big", "tx", ms, fan, stream.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	waitFor(t, 30*time.Second*timeScale, "all 101 messages handled", func() bool {
		return p.Stats().Scored.Load()+p.Stats().DeadLettered.Load() >= 101
	})
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, err := local.ReadAll(ctx, k.Brokers(), "deadletter")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("%d dead letters, want 1", len(out))
	}
	var d struct {
		Reason    string `json:"reason"`
		Truncated bool   `json:"value_truncated"`
		Size      int    `json:"value_size"`
	}
	if err := json.Unmarshal(out[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	if d.Reason != "malformed_json" || !d.Truncated || d.Size != len(big) {
		t.Fatalf("dead letter %+v, want malformed_json, truncated, size %d", d, len(big))
	}
}
