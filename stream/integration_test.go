package stream_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// env is one embedded Kafka cluster and NATS server with the topics and the
// JetStream stream of the tests.
type env struct {
	nats    *local.NATS
	brokers []string
	js      jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	brokers := startKafka(t, map[string]int{
		txTopic: 4, labelsTopic: 1, scoresTopic: 2, alertsTopic: 1, auditTopic: 1, deadTopic: 1,
	})
	n, js := startJetStream(t, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: jsStreamName, Subjects: []string{scoresSubj, alertsSubj}, Storage: jetstream.MemoryStorage,
		Duplicates: 10 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return &env{nats: n, brokers: brokers, js: js}
}

// startJetStream starts a NATS server with JetStream (stopped by the
// test's cleanup) and returns it and a JetStream context of a connection
// named name.
func startJetStream(t *testing.T, name string) (*local.NATS, jetstream.JetStream) {
	t.Helper()
	n, err := local.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	nc, err := local.Connect(n.URL(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return n, js
}

// newPipeline builds a pipeline with NATS and Kafka sinks behind a fan-out.
func (e *env) newPipeline(t *testing.T, group string, reg prometheus.Registerer, opts ...stream.Option) *stream.Pipeline {
	t.Helper()
	nc, err := local.Connect(e.nats.URL(), "sink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ns, err := sinks.NewNATS(nc, sinks.WithNATSSubject(output.KindScore, scoresSubj), sinks.WithNATSSubject(output.KindAlert, alertsSubj),
		sinks.WithNATSRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := sinks.NewKafka(e.brokers,
		sinks.WithKafkaTopic(output.KindScore, scoresTopic), sinks.WithKafkaTopic(output.KindAlert, alertsTopic),
		sinks.WithKafkaTopic(output.KindAudit, auditTopic), sinks.WithKafkaTopic(output.KindDeadLetter, deadTopic),
		sinks.WithKafkaRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{ns, ks}, output.WithFanoutRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fan.Close() })
	opts = append([]stream.Option{
		stream.WithRegisterer(reg), stream.WithMaxBatch(64), stream.WithMaxDelay(5 * time.Millisecond),
		stream.WithCommitInterval(50 * time.Millisecond), stream.WithLabelsTopic(labelsTopic),
	}, opts...)
	return newPipeline(t, e.brokers, group, shippedModels(t), fan, opts...)
}

// badEvents are invalid inputs and the dead-letter reason each must get.
func badEvents(now time.Time) []struct{ value, reason string } {
	ts := now.Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	future := now.Add(24 * time.Hour).UTC().Format(time.RFC3339Nano)
	good := func(s string) string { return strings.ReplaceAll(s, "TS", ts) }
	return []struct{ value, reason string }{
		{"", features.ReasonEmpty},
		{good(`{"tx_id":"b1","ts":"TS","card_id":"c","terminal_id":"t","amount":1`), features.ReasonMalformedJSON},
		{good(`{"tx_id":"b2","ts":"TS","card_id":"c","terminal_id":"t","amount":1} {}`), features.ReasonTrailingData},
		{good(`{"tx_id":"b3","ts":"TS","card_id":"c","terminal_id":"t","amount":"12"}`), features.ReasonWrongType},
		{good(`{"tx_id":"b4","ts":"TS","card_id":"c","amount":1}`), features.ReasonMissingField},
		{good(`{"tx_id":"","ts":"TS","card_id":"c","terminal_id":"t","amount":1}`), features.ReasonEmptyField},
		{good(`{"tx_id":"b6","ts":"TS","card_id":"c","terminal_id":"t","amount":-5}`), features.ReasonInvalidAmount},
		{good(`{"tx_id":"b7","ts":"TS","card_id":"c","terminal_id":"t","amount":1e400}`), features.ReasonInvalidAmount},
		{`{"tx_id":"b8","ts":"yesterday","card_id":"c","terminal_id":"t","amount":1}`, features.ReasonInvalidTime},
		{`{"tx_id":"b9","ts":"` + future + `","card_id":"c","terminal_id":"t","amount":1}`, features.ReasonFutureTime},
		{good("{\"tx_id\":\"b10\",\"ts\":\"TS\",\"card_id\":\"c\xff\",\"terminal_id\":\"t\",\"amount\":1}"), features.ReasonInvalidUTF8},
		{good(`{"tx_id":"b11","tx_id":"b11","ts":"TS","card_id":"c","terminal_id":"t","amount":1}`), features.ReasonDuplicateField},
		{`[1,2,3]`, features.ReasonMalformedJSON},
		{`null`, features.ReasonMalformedJSON},
	}
}

type input struct {
	good map[string]bool   // tx ids of valid events
	bad  map[string]string // original bytes -> expected reason
	n    int
}

// produceInput writes n generated events (event time in the last hours) and
// the bad events, interleaved, to the transactions topic.
func (e *env) produceInput(t *testing.T, n int) input {
	t.Helper()
	g, err := synth.New(synth.Config{Seed: 7, Cards: 300, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := input{good: map[string]bool{}, bad: map[string]string{}}
	var msgs []kafka.Message
	bad := badEvents(now)
	start := now.Add(-3 * time.Hour)
	for i := range n {
		tx := g.Next(start.Add(time.Duration(i) * 3 * time.Hour / time.Duration(n)))
		in.good[tx.Event.TxID] = true
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		if i%(n/len(bad)+1) == 0 && len(bad) > 0 {
			b := bad[0]
			bad = bad[1:]
			in.bad[b.value] = b.reason
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("bad-%d", i)), Value: []byte(b.value)})
		}
	}
	for _, b := range bad {
		in.bad[b.value] = b.reason
		msgs = append(msgs, kafka.Message{Value: []byte(b.value)})
	}
	in.n = len(msgs)
	produce(t, e.brokers, txTopic, msgs...)
	return in
}

func (e *env) committedAtEnd(t *testing.T, group string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := local.EndOffsets(ctx, e.brokers, txTopic)
	if err != nil {
		t.Fatal(err)
	}
	got, err := local.CommittedOffsets(ctx, e.brokers, group, txTopic)
	if err != nil {
		t.Fatal(err)
	}
	for p, end := range ends {
		if got[p] != end {
			return false
		}
	}
	return true
}

type outputs struct {
	scores   map[string]int // tx_id -> count in the Kafka scores topic
	alerts   map[string]int
	audit    map[string]int
	dead     map[string]string // SHA-256 of the original bytes (hex) -> reason
	deadN    int
	natsScr  map[string]int // tx_id -> count in the JetStream stream (scores subject)
	natsAlrt map[string]int
}

func (e *env) readOutputs(t *testing.T) outputs {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	o := outputs{scores: map[string]int{}, alerts: map[string]int{}, audit: map[string]int{},
		dead: map[string]string{}, natsScr: map[string]int{}, natsAlrt: map[string]int{}}
	txID := func(b []byte) string {
		var r struct {
			TxID     string             `json:"tx_id"`
			Scores   map[string]float64 `json:"scores"`
			Decision string             `json:"decision"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("output record is not JSON: %v: %q", err, b)
		}
		if r.TxID == "" || len(r.Scores) == 0 || r.Decision == "" {
			t.Fatalf("incomplete score record %s", b)
		}
		return r.TxID
	}
	for topic, into := range map[string]map[string]int{scoresTopic: o.scores, alertsTopic: o.alerts, auditTopic: o.audit} {
		for _, m := range readAll(t, e.brokers, topic) {
			into[txID(m.Value)]++
		}
	}
	for _, m := range readAll(t, e.brokers, deadTopic) {
		var d struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
			Error  string `json:"error"`
			SHA256 string `json:"value_sha256"`
		}
		if err := json.Unmarshal(m.Value, &d); err != nil {
			t.Fatalf("dead letter is not JSON: %v", err)
		}
		if d.Topic != txTopic || d.Error == "" || d.SHA256 == "" {
			t.Errorf("dead letter without topic, error or digest: %s", m.Value)
		}
		o.dead[d.SHA256] = d.Reason
		o.deadN++
	}
	st, err := e.js.Stream(ctx, jsStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get stream message %d: %v", seq, err)
		}
		switch m.Subject {
		case scoresSubj:
			o.natsScr[txID(m.Data)]++
		case alertsSubj:
			o.natsAlrt[txID(m.Data)]++
		}
	}
	return o
}

// TestEndToEnd feeds good and bad events through the real protocols and
// checks the delivery contract: one score record per good event on each
// sink, one dead letter with the right reason per bad one, committed offsets
// at the end of the input, and a second run of the group that resumes there:
// it scores only an event produced after the first run.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	in := e.produceInput(t, 3000)
	reg := prometheus.NewPedanticRegistry()
	// The alert-rate guard with windows of 100 events and a factor barely
	// above 1: nearly every window of every model is counted.
	p := e.newPipeline(t, "e2e", reg, stream.WithAlertRateGuard(100, 1.0001))
	r := runPipeline(t, p)
	waitHandled(t, p, in.n)
	waitFor(t, waitBudget, "every offset committed", func() bool { return e.committedAtEnd(t, "e2e") })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after soft stop: %v", err)
	}

	o := e.readOutputs(t)
	for id := range in.good {
		if o.scores[id] != 1 || o.natsScr[id] != 1 || o.audit[id] != 1 {
			t.Fatalf("tx %s: %d Kafka score records, %d NATS, %d audit; want 1 each", id, o.scores[id], o.natsScr[id], o.audit[id])
		}
	}
	if len(o.scores) != len(in.good) || len(o.natsScr) != len(in.good) {
		t.Fatalf("score records for %d (Kafka) and %d (NATS) tx ids, want %d", len(o.scores), len(o.natsScr), len(in.good))
	}
	if o.deadN != len(in.bad) {
		t.Errorf("%d dead letters, want %d", o.deadN, len(in.bad))
	}
	for v, want := range in.bad {
		if got, ok := o.dead[sha256Hex(v)]; !ok || got != want {
			t.Errorf("bad event %q: dead-letter reason %q (present %v), want %q", v, got, ok, want)
		}
	}
	if len(o.alerts) != len(o.natsAlrt) {
		t.Errorf("alerts: %d on Kafka, %d on NATS", len(o.alerts), len(o.natsAlrt))
	}
	for id, n := range o.alerts {
		if n != 1 || o.natsAlrt[id] != 1 {
			t.Errorf("alert %s: %d on Kafka, %d on NATS, want 1 each", id, n, o.natsAlrt[id])
		}
	}
	if got := metricValue(t, reg, "streamscore_stream_events_consumed_total", "topic", txTopic); int(got) != in.n {
		t.Errorf("events consumed metric %v, want %d", got, in.n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
	for _, m := range []string{"fraud", "fraud_lr", "fraud_gru", "risk"} {
		high, _ := seriesValue(t, reg, "streamscore_stream_alert_rate_anomalies_total", "model", m, "direction", "high")
		low, _ := seriesValue(t, reg, "streamscore_stream_alert_rate_anomalies_total", "model", m, "direction", "low")
		if high+low < 1 || high+low > float64(in.n/100) {
			t.Errorf("model %s: %v high and %v low alert-rate windows of 100 events among %d events", m, high, low, in.n)
		}
	}

	// A second run of the same group must resume at the committed offsets:
	// given one event produced after the first run, it consumes that event
	// only (not one if it started at the end, more if before the committed
	// offsets) and emits its records only. (Running it for a while and
	// seeing nothing consumed passes as well if it never fetches.)
	const lateID = "after-restart"
	produce(t, e.brokers, txTopic, txEvent(lateID, "c-restart", time.Now().Add(-time.Minute)))
	p2 := e.newPipeline(t, "e2e", prometheus.NewRegistry())
	r2 := runPipeline(t, p2)
	waitScored(t, p2, 1)
	if err := r2.stop(t); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if n := p2.Stats().Consumed.Load(); n != 1 {
		t.Errorf("second run consumed %d messages, want 1 (the event produced after the first run)", n)
	}
	o2 := e.readOutputs(t)
	if len(o2.scores) != len(o.scores)+1 || o2.scores[lateID] != 1 || o2.natsScr[lateID] != 1 ||
		len(o2.natsScr) != len(o.natsScr)+1 || o2.deadN != o.deadN {
		t.Errorf("second run: scores %d->%d (Kafka), %d->%d (NATS), dead %d->%d; want one new score record each, no dead letter",
			len(o.scores), len(o2.scores), len(o.natsScr), len(o2.natsScr), o.deadN, o2.deadN)
	}
	for id, n := range o.scores {
		if o2.scores[id] != n || o2.natsScr[id] != o.natsScr[id] {
			t.Fatalf("tx %s scored again by the second run", id)
		}
	}
}

// TestKillRestart stops the engine hard in mid-stream (no drain, no final
// commit) and restarts it in the same group: every event still ends as a
// score or dead-letter record.
func TestKillRestart(t *testing.T) {
	e := newEnv(t)
	in := e.produceInput(t, 6000)
	p := e.newPipeline(t, "kill", prometheus.NewRegistry(), stream.WithMaxBatch(32))
	r := runPipeline(t, p)
	waitScored(t, p, 1501)
	p.Abort()
	if err := r.wait(t); !errors.Is(err, stream.ErrAborted) {
		t.Fatalf("Run after Abort: %v, want ErrAborted", err)
	}
	first := p.Stats().Scored.Load() + p.Stats().DeadLettered.Load()
	if first >= int64(in.n) {
		t.Fatalf("first run handled all %d events before the kill; the test needs a mid-stream kill", in.n)
	}

	p2 := e.newPipeline(t, "kill", prometheus.NewRegistry())
	r2 := runPipeline(t, p2)
	waitFor(t, waitBudget, "restarted run committed every offset", func() bool { return e.committedAtEnd(t, "kill") })
	if err := r2.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	o := e.readOutputs(t)
	var dup int
	for id := range in.good {
		if o.scores[id] < 1 {
			t.Fatalf("tx %s has no score record on Kafka after the restart", id)
		}
		if o.natsScr[id] != 1 {
			t.Fatalf("tx %s: %d records in the JetStream stream, want exactly 1 (server dedupe)", id, o.natsScr[id])
		}
		dup += o.scores[id] - 1
	}
	for v := range in.bad {
		if _, ok := o.dead[sha256Hex(v)]; !ok {
			t.Errorf("bad event %q has no dead letter after the restart", v)
		}
	}
	t.Logf("first run handled %d of %d; %d Kafka score records re-emitted after the kill (at-least-once)", first, in.n, dup)
}

// sha256Hex is the digest a dead letter without a PAN key carries of its
// message.
func sha256Hex(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}
