package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// TestLateFlag: an event further behind its card's newest event than the
// allowed lateness is scored, flagged "late":true in its score record and
// counted; the events in time are not flagged.
func TestLateFlag(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"tx": 1, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	brokers := k.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()

	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	ev := func(id string, ts time.Time) kafka.Message {
		return kafka.Message{Key: []byte("c1"), Value: fmt.Appendf(nil,
			`{"tx_id":%q,"ts":%q,"card_id":"c1","terminal_id":"m1","amount":12.5}`, id, ts.Format(time.RFC3339Nano))}
	}
	msgs := []kafka.Message{ev("in-1", t0), ev("in-2", t0.Add(30*time.Minute)), ev("late", t0), ev("in-3", t0.Add(29*time.Minute))}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "tx", BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(sinks.KindScore, "scores"))
	if err != nil {
		t.Fatal(err)
	}
	fan := sinks.NewFanout([]sinks.Sink{ks})
	defer fan.Close()
	reg := prometheus.NewRegistry()
	p, err := stream.New(brokers, "late", "tx", ms, fan, stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false),
		stream.WithDecisionModels(models.ShippedDecisionModel),
		stream.WithFeatureOptions(features.WithMaxLateness(5*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	waitFor(t, 30*time.Second*timeScale, "every event scored", func() bool { return p.Stats().Scored.Load() >= int64(len(msgs)) })
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, err := local.ReadAll(ctx, brokers, "scores")
	if err != nil {
		t.Fatal(err)
	}
	late := map[string]bool{}
	for _, m := range out {
		var r struct {
			TxID string `json:"tx_id"`
			Late *bool  `json:"late"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if r.Late != nil && !*r.Late {
			t.Errorf("%s: \"late\":false written; the member is only for late events", r.TxID)
		}
		late[r.TxID] = r.Late != nil
	}
	want := map[string]bool{"in-1": false, "in-2": false, "late": true, "in-3": false}
	for id, w := range want {
		if got, ok := late[id]; !ok || got != w {
			t.Errorf("%s: late %v (scored %v), want %v", id, got, ok, w)
		}
	}
	if n := metricValue(t, reg, "streamscore_stream_events_late_total"); n != 1 {
		t.Errorf("streamscore_stream_events_late_total %v, want 1", n)
	}
}
