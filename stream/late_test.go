package stream_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// TestLateFlag: an event further behind its card's newest event than the
// allowed lateness is scored, flagged "late":true in its score record and
// counted; the events in time are not flagged. (Without event-time
// alignment, events are applied in arrival order; with it, see
// TestLateAligned.)
func TestLateFlag(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	ev := func(id string, ts time.Time) kafka.Message { return txEvent(id, "c1", ts) }
	msgs := []kafka.Message{ev("in-1", t0), ev("in-2", t0.Add(30*time.Minute)), ev("late", t0), ev("in-3", t0.Add(29*time.Minute))}
	produce(t, brokers, txTopic, msgs...)

	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "late", shippedModels(t), kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}),
		stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false),
		stream.WithDecisionModels(models.ShippedDecisionModel), stream.WithAlignIdleWait(-1),
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

// TestLateAligned: with event-time alignment (the default) the events of a
// partition that are out of event-time order are applied in event-time
// order, as score applies them: the event that arrives 30 minutes behind
// its card's newest one is applied before it, so nothing is late; an event
// older than what was already applied when it arrives (the partition went
// quiet, past the idle wait, in between) is applied out of order, flagged
// late and counted.
func TestLateAligned(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	ev := func(id string, ts time.Time) kafka.Message { return txEvent(id, "c1", ts) }
	msgs := []kafka.Message{ev("in-1", t0), ev("in-2", t0.Add(30*time.Minute)), ev("early", t0.Add(time.Second)), ev("in-3", t0.Add(29*time.Minute))}
	produce(t, brokers, txTopic, msgs...)

	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "late-aligned", shippedModels(t), kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}),
		stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false),
		stream.WithDecisionModels(models.ShippedDecisionModel), stream.WithAlignIdleWait(50*time.Millisecond),
		stream.WithFeatureOptions(features.WithMaxLateness(5*time.Minute)))
	r := runPipeline(t, p)
	waitScored(t, p, len(msgs))
	// The partition is quiet past the idle wait: everything was applied.
	time.Sleep(200 * time.Millisecond)
	produce(t, brokers, txTopic, ev("late", t0.Add(time.Minute)))
	waitScored(t, p, len(msgs)+1)
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
		late[r.TxID] = r.Late != nil
	}
	want := map[string]bool{"in-1": false, "in-2": false, "early": false, "in-3": false, "late": true}
	for id, w := range want {
		if got, ok := late[id]; !ok || got != w {
			t.Errorf("%s: late %v (scored %v), want %v", id, got, ok, w)
		}
	}
	if n := metricValue(t, reg, "streamscore_stream_events_late_total"); n != 1 {
		t.Errorf("streamscore_stream_events_late_total %v, want 1", n)
	}
	if n := metricValue(t, reg, "streamscore_stream_aligned_events_total", "outcome", "out_of_order"); n != 1 {
		t.Errorf("aligned_events_total{out_of_order} %v, want 1", n)
	}
}
