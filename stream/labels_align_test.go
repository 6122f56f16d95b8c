package stream_test

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// TestLabelsAlignedMatchReplay: a backlog of ten days of events in four
// partitions and their delayed fraud labels (without tx_ts: each is placed
// by finding its transaction in the terminal's history) in two partitions
// of the labels topic, all in Kafka before the engine starts. The stage applies
// each label among the events in event-time order (after every event
// before its time, before every event at or after it), as Replay does, so
// every feature of every event — the label-delayed fraud features of cards
// and terminals included — equals Replay's, bit for bit.
func TestLabelsAlignedMatchReplay(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 4, labelsTopic: 2, auditTopic: 1})
	events, labels, produceAll := labelsBacklog(t, brokers)
	produceAll()

	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "labels-aligned", shippedModels(t), kafkaSink(t, brokers, map[output.Kind]string{output.KindAudit: auditTopic}),
		stream.WithRegisterer(reg), stream.WithLabelsTopic(labelsTopic))
	r := runPipeline(t, p)
	waitScored(t, p, len(events))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := metricValue(t, reg, "streamscore_stream_labels_total", "outcome", "applied"); n != float64(len(labels)) {
		t.Fatalf("%v labels applied, want %d", n, len(labels))
	}
	if v, _ := seriesValue(t, reg, "streamscore_stream_aligned_events_total", "outcome", "out_of_order"); v != 0 {
		t.Errorf("%v events or labels applied out of order", v)
	}
	compareLabelledReplay(t, brokers, events, labels)
}

// TestLabelsAlignedTwoMembers: the same backlog consumed by two members of
// one group started together (shared-state replicas, checkpoints in
// memory): every member reads every label and every partition, so each
// event's last audit record — label-delayed fraud features of terminals
// included — equals Replay's, whichever member scored it.
func TestLabelsAlignedTwoMembers(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 4, labelsTopic: 2, auditTopic: 1})
	events, labels, produceAll := labelsBacklog(t, brokers)
	store := stream.NewMemoryCheckpoints()
	var runs []*running
	var ps []*stream.Pipeline
	var regs []*prometheus.Registry
	for range 2 {
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		p := newPipeline(t, brokers, "labels-two", shippedModels(t), kafkaSink(t, brokers, map[output.Kind]string{output.KindAudit: auditTopic}),
			stream.WithRegisterer(reg), stream.WithLabelsTopic(labelsTopic), stream.WithWorkers(2),
			stream.WithCheckpoints(store), stream.WithStateInterval(time.Second), stream.WithSessionTimeout(6*time.Second),
			stream.WithAlignIdleWait(2*time.Second))
		runs = append(runs, runPipeline(t, p))
		ps = append(ps, p)
	}
	// The history goes in once the partitions are split between the two.
	waitFor(t, 60*time.Second, "both members to claim partitions", func() bool {
		for _, reg := range regs {
			if v, _ := seriesValue(t, reg, "streamscore_stream_source_partitions_claimed"); v == 0 {
				return false
			}
		}
		return true
	})
	produceAll()
	waitAudited(t, brokers, events)
	for _, r := range runs {
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("scored by the members: %d and %d", ps[0].Stats().Scored.Load(), ps[1].Stats().Scored.Load())
	if ps[0].Stats().Scored.Load() == 0 || ps[1].Stats().Scored.Load() == 0 {
		t.Fatal("one member scored nothing: the test does not see two members")
	}
	compareLabelledReplay(t, brokers, events, labels)
}

// labelsBacklog makes ten days of events and their delayed fraud labels
// (without tx_ts), and a function that produces them into txTopic and
// labelsTopic.
func labelsBacklog(t *testing.T, brokers []string) ([]features.Event, []features.Label, func()) {
	t.Helper()
	g, err := synth.New(synth.Config{Seed: 31, Cards: 300, Terminals: 30, FraudRate: 0.05, LabelDelay: 2 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	start := end.Add(-10 * 24 * time.Hour)
	var events []features.Event
	var labels []features.Label
	var msgs []kafka.Message
	if err := g.Simulate(start, end, 3000/end.Sub(start).Seconds(), func(tx synth.Tx) error {
		events = append(events, tx.Event)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		if l, ok := g.LabelFor(tx); ok && l.TS.Before(end) {
			// Without tx_ts: the label is placed by finding its
			// transaction in its terminal's history, which must hold it
			// when the label is applied — the order matters.
			l.TxTS = time.Time{}
			labels = append(labels, l)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(labels, func(a, b features.Label) int { return features.CompareLabels(&a, &b) })
	var lmsgs []kafka.Message
	for i := range labels {
		lmsgs = append(lmsgs, kafka.Message{Key: []byte(labels[i].TxID), Value: labels[i].AppendJSON(nil)})
	}
	return events, labels, func() {
		produce(t, brokers, txTopic, msgs...)
		produce(t, brokers, labelsTopic, lmsgs...)
	}
}

// compareLabelledReplay fails the test unless every event's last audit
// record's features equal Replay's over events and labels, and some event
// has a non-zero fraud feature.
func compareLabelledReplay(t *testing.T, brokers []string, events []features.Event, labels []features.Label) {
	t.Helper()
	got := map[string]map[string]float64{}
	for _, m := range readAll(t, brokers, auditTopic) {
		var r struct {
			TxID     string             `json:"tx_id"`
			Features map[string]float64 `json:"features"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		got[r.TxID] = r.Features
	}
	names := features.Names()
	wrong, fraudNonZero := 0, 0
	if err := features.Replay(events, labels, nil, func(e *features.Event, row []float32) error {
		fs, ok := got[e.TxID]
		if !ok {
			t.Errorf("%s: no audit record", e.TxID)
			return nil
		}
		for i, name := range names {
			if v := fs[name]; math.Float32bits(float32(v)) != math.Float32bits(row[i]) {
				if wrong < 3 {
					t.Logf("%s: %s = %v, replay %v", e.TxID, name, v, row[i])
				}
				wrong++
				return nil
			}
		}
		for i, name := range names {
			if row[i] != 0 && strings.Contains(name, "fraud") {
				fraudNonZero++
				break
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, %d labels; %d events with a non-zero fraud feature; %d differ from the replay", len(events), len(labels), fraudNonZero, wrong)
	if fraudNonZero == 0 {
		t.Fatal("no event has a non-zero fraud feature: the labels do not reach the features, the comparison covers nothing")
	}
	if wrong > 0 {
		t.Errorf("%d events whose features differ from a replay with the same labels", wrong)
	}
}
