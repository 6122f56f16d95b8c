package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// TestLabelsAllPartitions: labels are read from every partition of the
// labels topic, valid ones applied and bad ones dead-lettered, and a second
// pipeline (another process, or a restart) reads them all again.
func TestLabelsAllPartitions(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"tx": 1, "lab": 3, "deadletter": 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ts := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	var msgs []kafka.Message
	for i := range 30 {
		v := fmt.Sprintf(`{"tx_id":"t-%d","card_id":"c-%d","terminal_id":"m-%d","ts":"%s","fraud":true}`, i, i, i%4, ts)
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(v)})
	}
	msgs = append(msgs, kafka.Message{Key: []byte("bad"), Value: []byte(`{"tx_id":"x","fraud":"yes"}`)})
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: "lab", Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		ks, err := sinks.NewKafka(k.Brokers(), sinks.WithKafkaTopic(sinks.KindDeadLetter, "deadletter"))
		if err != nil {
			t.Fatal(err)
		}
		fan := sinks.NewFanout([]sinks.Sink{ks})
		reg := prometheus.NewRegistry()
		p, err := stream.New(k.Brokers(), "labels-test", "tx", ms, fan, stream.WithRegisterer(reg), stream.WithLabelsTopic("lab"))
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(rctx) }()
		count := func(outcome string) float64 {
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "streamscore_stream_labels_total" {
					for _, m := range mf.GetMetric() {
						if m.GetLabel()[0].GetValue() == outcome {
							return m.GetCounter().GetValue()
						}
					}
				}
			}
			return 0
		}
		waitFor(t, 30*time.Second*timeScale, "every label read", func() bool { return count("applied") == 30 && count("deadlettered") == 1 })
		rcancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		fan.Close()
		out, err := local.ReadAll(ctx, k.Brokers(), "deadletter")
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != run+1 {
			t.Fatalf("run %d: %d dead letters, want %d (one per run, same id)", run, len(out), run+1)
		}
		var d struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(out[run].Value, &d); err != nil || d.Topic != "lab" || d.Reason != "wrong_type" {
			t.Fatalf("dead letter %s: %+v %v, want topic lab, reason wrong_type", out[run].Value, d, err)
		}
	}
}
