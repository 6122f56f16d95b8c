package stream_test

import (
	"encoding/json"
	"fmt"
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

// TestLabelsAlignedMatchReplay: a backlog of 14 days of events in four
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
		t.Errorf("%v events applied out of order", v)
	}
	if v := metricValue(t, reg, "streamscore_stream_labels_late_total"); v != 0 {
		t.Errorf("%v labels applied late (a backlog: every label in its place)", v)
	}
	// The events' counter counts the events, each once, not the labels.
	aligned := 0.0
	if f, ok := gatherFamily(t, reg, "streamscore_stream_aligned_events_total"); ok {
		for _, ser := range f.series {
			aligned += ser.value
		}
	}
	if aligned != float64(len(events)) {
		t.Errorf("aligned_events_total sums to %v, want the %d events", aligned, len(events))
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
			// The history is written once both members run: the labels
			// partitions, empty at the start, must hold the events back
			// until their labels come (live labels are applied on
			// arrival by default).
			stream.WithAlignIdleWait(2*time.Second), stream.WithLabelsAlignIdleWait(2*time.Second))
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
	// 14 days: the fraud features count labels of transactions 7 days
	// and more before an event, so 7 days of events can see them. Over 10
	// days (3,000 events) whether any event did depended on the time of
	// day the test ran (0 to 103 events with a non-zero fraud feature over
	// 13 runs half an hour apart: the check below failed at 02:49 UTC);
	// over 14 days (4,200 events) at least 206 over 24 ends 7 hours apart
	// (a week).
	end := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	start := end.Add(-14 * 24 * time.Hour)
	var events []features.Event
	var labels []features.Label
	var msgs []kafka.Message
	if err := g.Simulate(start, end, 4200/end.Sub(start).Seconds(), func(tx synth.Tx) error {
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

// TestLabelsAheadSurviveRestart: labels out of event-time order in their
// partition (offset 0 labels a later transaction than offset 1: producers'
// clocks, a batch of chargebacks) are applied in event-time order, so at a
// stop the label at offset 1 is in the state while offset 0 still waits for
// the events before its time. The snapshot records offset 1 as applied
// ahead of labels_next 0, and the next start reads the partition from 0
// but applies only offset 0: applied twice, a label can bring back a
// terminal that had expired (and counts twice in the metrics). In the
// crash variant the first run is killed (Abort: no shutdown snapshot) once
// an interval snapshot holds offset 1 as applied ahead.
//
// In the checkpoints variant the state lives in a checkpoint store, not in
// a state directory: the first process is killed once a shared checkpoint
// written after offset 1 was applied is stored, and a second process of
// the group, with no state of its own, restores it (the shared
// checkpoint's labels section, format version 2) and applies only offset
// 0.
func TestLabelsAheadSurviveRestart(t *testing.T) {
	t.Run("shutdown", func(t *testing.T) { labelsAheadRestart(t, false, false) })
	t.Run("crash", func(t *testing.T) { labelsAheadRestart(t, true, false) })
	t.Run("checkpoints", func(t *testing.T) { labelsAheadRestart(t, true, true) })
}

func labelsAheadRestart(t *testing.T, crash, ckpt bool) {
	brokers := startKafka(t, map[string]int{txTopic: 1, labelsTopic: 1})
	events, msgs, _, _ := history(t, 61, 400)
	n := len(events)
	split := n / 2
	label := func(tx, at int) kafka.Message {
		e := &events[tx]
		l := features.Label{TxID: e.TxID, CardID: e.CardID, TerminalID: e.TerminalID, TS: events[at].TS, TxTS: e.TS, Fraud: true}
		return kafka.Message{Key: []byte(e.CardID), Value: l.AppendJSON(nil)}
	}
	// Offset 0: placed among the second half (not fetched by the first run);
	// offset 1: among the first half.
	produce(t, brokers, labelsTopic, label(3*n/4-5, 3*n/4), label(n/4-5, n/4))
	produce(t, brokers, txTopic, msgs[:split]...)
	dir := t.TempDir()
	var interval time.Duration // snapshots at shutdown only
	if crash {
		interval = time.Second
	}
	store := stream.NewMemoryCheckpoints()
	start := func(idle time.Duration) (*stream.Pipeline, *running, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		state := stream.WithStateDir(dir)
		if ckpt {
			state = stream.WithCheckpoints(store)
		}
		p := newPipeline(t, brokers, "labels-ahead", shippedModels(t), &memSink{},
			stream.WithRegisterer(reg), stream.WithLabelsTopic(labelsTopic), stream.WithWorkers(1), state,
			stream.WithAlignIdleWait(idle), stream.WithAlignLagWait(2*time.Minute), stream.WithStateInterval(interval))
		return p, runPipeline(t, p), reg
	}
	// The first run: a quiet partition holds the others back for a minute,
	// so the label at offset 0 waits until the stop.
	p1, r1, reg1 := start(time.Minute)
	waitScored(t, p1, split-1)
	waitFor(t, waitBudget, "the label at offset 1 applied", func() bool {
		v, _ := seriesValue(t, reg1, "streamscore_stream_labels_total", "outcome", "applied")
		return v == 1
	})
	var man manifest
	switch {
	case ckpt:
		// A shared checkpoint is stored at each interval when the state
		// changed since the last one (the label applied ahead changes
		// it); a put under way when the label was applied may have taken
		// the state before it. So: one put after, then none for 2.5
		// intervals (the state no longer changes: the events wait behind
		// the quiet partition).
		puts := counterOr0(t, reg1, "streamscore_stream_shared_checkpoints_total", "op", "put", "outcome", "ok")
		last, since := puts, time.Now()
		waitFor(t, waitBudget, "the shared checkpoints stored after offset 1 was applied", func() bool {
			n := counterOr0(t, reg1, "streamscore_stream_shared_checkpoints_total", "op", "put", "outcome", "ok")
			if n != last {
				last, since = n, time.Now()
			}
			return n > puts && time.Since(since) >= 5*interval/2
		})
		p1.Abort()
		if err := r1.wait(t); err != stream.ErrAborted {
			t.Fatalf("Run after Abort: %v, want ErrAborted", err)
		}
	case crash:
		waitFor(t, waitBudget, "an interval snapshot with offset 1 applied ahead", func() bool {
			man = manifest{}
			return tryManifest(dir, &man) && slices.Equal(man.LabelsAhead["0"], []int64{1})
		})
		p1.Abort()
		if err := r1.wait(t); err != stream.ErrAborted {
			t.Fatalf("Run after Abort: %v, want ErrAborted", err)
		}
	default:
		if err := r1.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	if !ckpt {
		man = manifest{}
		readManifest(t, dir, &man)
		if man.LabelsNext["0"] != 0 || !slices.Equal(man.LabelsAhead["0"], []int64{1}) {
			t.Fatalf("snapshot: labels_next %v, labels_ahead %v; want partition 0 at 0 with offset 1 ahead", man.LabelsNext, man.LabelsAhead)
		}
	}

	produce(t, brokers, txTopic, msgs[split:]...)
	p2, r2, reg2 := start(100 * time.Millisecond)
	waitFor(t, waitBudget, "the label at offset 0 applied", func() bool {
		v, _ := seriesValue(t, reg2, "streamscore_stream_labels_total", "outcome", "applied")
		return v >= 1
	})
	waitScored(t, p2, n-split-1)
	time.Sleep(500 * time.Millisecond) // the label at offset 1 would have come with offset 0
	if err := r2.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, reg2, "streamscore_stream_labels_total", "outcome", "applied"); v != 1 {
		t.Fatalf("second run applied %v labels, want 1 (offset 0 only: offset 1 is in the restored state)", v)
	}
	if ckpt {
		if v := counterOr0(t, reg2, "streamscore_stream_shared_checkpoints_total", "op", "restore", "outcome", "ok"); v != 1 {
			t.Fatalf("second run restored %v shared checkpoints, want 1", v)
		}
		return
	}
	man = manifest{}
	readManifest(t, dir, &man)
	if man.LabelsNext["0"] != 2 || len(man.LabelsAhead) != 0 {
		t.Fatalf("final snapshot: labels_next %v, labels_ahead %v; want partition 0 at 2, none ahead", man.LabelsNext, man.LabelsAhead)
	}
}

// TestLabelsIdleWaitLatency: a live label holds the events after it only
// for the labels partitions' own idle wait (WithLabelsAlignIdleWait,
// default 0), not for the events' (WithAlignIdleWait, here 1 s): a few
// labels a second would otherwise make most events wait for the next
// label or for the whole wait. Three times, a label made now and then an
// event made now are written; the event is scored at once with the
// default, and only after the wait with WithLabelsAlignIdleWait(1s) (the
// control: the labels partition does hold the events back).
func TestLabelsIdleWaitLatency(t *testing.T) {
	const wait = time.Second
	for _, tc := range []struct {
		name   string
		labels time.Duration
	}{{"default", 0}, {"labels wait as events'", wait}} {
		t.Run(tc.name, func(t *testing.T) {
			worst, diag := labelsHoldEvents(t, wait, tc.labels)
			switch {
			case tc.labels == 0 && worst >= wait/2:
				t.Errorf("an event after a live label took %v to score, want well under the events' idle wait %v", worst, wait)
			case tc.labels > 0 && worst < tc.labels/2: // the hold runs from the label's arrival, 300 ms before the event
				t.Errorf("an event after a live label took %v to score with a labels idle wait of %v: the control does not see the labels hold the events (%s)", worst, tc.labels, diag)
			}
			t.Logf("slowest of the events after a label: %v", worst)
		})
	}
}

// hasScore reports whether sink acknowledged a score record of txID.
func hasScore(sink *memSink, txID string) bool {
	for _, m := range sink.kind(output.KindScore) {
		var rec struct {
			TxID string `json:"tx_id"`
		}
		if json.Unmarshal(m.Value, &rec) == nil && rec.TxID == txID {
			return true
		}
	}
	return false
}

// labelsHoldEvents returns the slowest of the events after a label and, for
// a failure's message, the pipeline's alignment and labels counters.
func labelsHoldEvents(t *testing.T, idle, labelsIdle time.Duration) (time.Duration, string) {
	brokers := startKafka(t, map[string]int{txTopic: 1, labelsTopic: 1})
	events, msgs, _, _ := history(t, 71, 100)
	if len(events) < 40 {
		t.Fatalf("%d events generated, want 40", len(events))
	}
	// The history: scored before the live part.
	produce(t, brokers, txTopic, msgs[:20]...)
	reg := prometheus.NewRegistry()
	opts := []stream.Option{stream.WithLabelsTopic(labelsTopic), stream.WithWorkers(1), stream.WithAlignIdleWait(idle), stream.WithRegisterer(reg)}
	if labelsIdle > 0 {
		opts = append(opts, stream.WithLabelsAlignIdleWait(labelsIdle))
	}
	sink := &memSink{}
	p := newPipeline(t, brokers, "labels-idle", shippedModels(t), sink, opts...)
	r := runPipeline(t, p)
	// Every event of the history, the last after the events partition's
	// own idle wait: the rounds below wait for their own event's score
	// record, not for a count the history's last event could meet.
	waitScored(t, p, 20)
	scored := p.Stats().Scored.Load()
	var worst time.Duration
	for i := range 3 {
		time.Sleep(idle + idle/2) // every partition idle again
		now := time.Now().UTC()
		tx := &events[i]
		l := features.Label{TxID: tx.TxID, CardID: tx.CardID, TerminalID: tx.TerminalID, TS: now, TxTS: tx.TS, Fraud: true}
		produce(t, brokers, labelsTopic, kafka.Message{Key: []byte(tx.CardID), Value: l.AppendJSON(nil)})
		// The label first: read by its own reader, it could otherwise
		// reach the stage after the event, which no label then holds.
		waitFor(t, waitBudget, "the label read", func() bool {
			v, _ := seriesValue(t, reg, "streamscore_stream_events_consumed_total", "topic", labelsTopic)
			return v == float64(i+1)
		})
		// Counted just before it is decoded and handed to the stage: time
		// for that, generous on a loaded machine.
		time.Sleep(300 * time.Millisecond)
		e := events[20+i]
		e.TS = now.Add(time.Millisecond)
		t0 := time.Now()
		produce(t, brokers, txTopic, kafka.Message{Key: []byte(e.CardID), Value: e.AppendJSON(nil)})
		// Scored once a later event passes it or the events partition's
		// own idle wait ends: a second event, right behind it, passes it.
		f := events[30+i]
		f.TS = e.TS.Add(time.Millisecond)
		produce(t, brokers, txTopic, kafka.Message{Key: []byte(f.CardID), Value: f.AppendJSON(nil)})
		waitFor(t, waitBudget, "the event after the label scored", func() bool { return hasScore(sink, e.TxID) })
		worst = max(worst, time.Since(t0))
		scored += 2 // e, and f after the events partition's idle wait
	}
	if labelsIdle == 0 {
		// A label that arrives after an event of a later time was
		// applied: applied on arrival, counted as a late label, not as an
		// event out of order.
		waitScored(t, p, int(scored))
		now := time.Now().UTC()
		e := events[23]
		e.TS = now
		produce(t, brokers, txTopic, kafka.Message{Key: []byte(e.CardID), Value: e.AppendJSON(nil)})
		waitScored(t, p, int(scored)+1)
		tx := &events[3]
		l := features.Label{TxID: tx.TxID, CardID: tx.CardID, TerminalID: tx.TerminalID, TS: now.Add(-time.Second), TxTS: tx.TS, Fraud: true}
		produce(t, brokers, labelsTopic, kafka.Message{Key: []byte(tx.CardID), Value: l.AppendJSON(nil)})
		waitFor(t, waitBudget, "the late label applied", func() bool {
			v, _ := seriesValue(t, reg, "streamscore_stream_labels_total", "outcome", "applied")
			return v == 4
		})
		if v := metricValue(t, reg, "streamscore_stream_labels_late_total"); v != 1 {
			t.Errorf("streamscore_stream_labels_late_total %v, want 1", v)
		}
		if v, _ := seriesValue(t, reg, "streamscore_stream_aligned_events_total", "outcome", "out_of_order"); v != 0 {
			t.Errorf("aligned_events_total{out_of_order} %v, want 0: a late label is counted apart", v)
		}
	}
	var diag []string
	for _, name := range []string{"streamscore_stream_aligned_events_total", "streamscore_stream_labels_total", "streamscore_stream_labels_late_total", "streamscore_stream_source_generations_total"} {
		if f, ok := gatherFamily(t, reg, name); ok {
			diag = append(diag, fmt.Sprintf("%s %v", name, f.series))
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	return worst, strings.Join(diag, "; ")
}
