package stream_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
)

// TestLateFlag: an event further behind its card's newest event than the
// allowed lateness is scored, flagged "late":true in its score record and
// counted; the events in time are not flagged.
func TestLateFlag(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	ev := func(id string, ts time.Time) kafka.Message { return txEvent(id, "c1", ts) }
	msgs := []kafka.Message{ev("in-1", t0), ev("in-2", t0.Add(30*time.Minute)), ev("late", t0), ev("in-3", t0.Add(29*time.Minute))}
	produce(t, brokers, txTopic, msgs...)

	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "late", shippedModels(t), kafkaSink(t, brokers, map[sinks.Kind]string{sinks.KindScore: scoresTopic}),
		stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false),
		stream.WithDecisionModels(models.ShippedDecisionModel),
		stream.WithFeatureOptions(features.WithMaxLateness(5*time.Minute)))
	r := runPipeline(t, p)
	waitScored(t, p, len(msgs))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	late := map[string]bool{}
	for _, m := range readAll(t, brokers, scoresTopic) {
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
