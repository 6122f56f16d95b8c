package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/local"
)

// readmeAuditDescriptor compiles the audit record schema as the README
// publishes it (the ```proto block an operator copies) and returns its
// AuditRecord message. The README's file must describe the same messages
// as output.AuditProtoSchema (comments aside): a consumer built from
// either decodes the same.
func readmeAuditDescriptor(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```proto\n")
	if !ok {
		t.Fatal("README.md has no ```proto block")
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatal("README.md's ```proto block is not closed")
	}
	compile := func(src string) *descriptorProtoFile {
		const name = "streamscore/audit/v1/audit.proto"
		c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(map[string]string{name: src})})}
		files, err := c.Compile(context.Background(), name)
		if err != nil {
			t.Fatalf("compile the audit schema: %v\n%s", err, src)
		}
		fdp := protodesc.ToFileDescriptorProto(files[0])
		fdp.SourceCodeInfo = nil
		return &descriptorProtoFile{fd: files[0], b: mustMarshal(t, fdp)}
	}
	fromReadme, fromPackage := compile(block), compile(output.AuditProtoSchema)
	if !bytes.Equal(fromReadme.b, fromPackage.b) {
		t.Fatalf("the README's audit schema differs from output.AuditProtoSchema:\n%s", block)
	}
	md := fromReadme.fd.Messages().ByName("AuditRecord")
	if md == nil || string(md.FullName()) != output.AuditProtoType {
		t.Fatalf("README schema: no message %s", output.AuditProtoType)
	}
	return md
}

// descriptorProtoFile is a compiled schema and its descriptor's bytes.
type descriptorProtoFile struct {
	fd protoreflect.FileDescriptor
	b  []byte
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pbAuditRec is an audit record decoded with the published schema.
type pbAuditRec struct {
	txID, cardID, decision string
	ts, scoredAt           time.Time
	amount, latencyMS      float64
	late                   bool
	scores                 []pbScore
	reasons                []output.Reason
	names                  []string
	features               []float32
	thresholds             []string // names
}

type pbScore struct {
	name, model string
	value       float64
}

// decodePBAudit decodes b with md through the protobuf library (dynamicpb):
// a record the library refuses, or one with fields the schema does not
// have, fails the test.
func decodePBAudit(t *testing.T, md protoreflect.MessageDescriptor, b []byte) pbAuditRec {
	t.Helper()
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("audit record %.80q does not decode as %s: %v", b, md.FullName(), err)
	}
	if len(m.GetUnknown()) != 0 {
		t.Fatalf("audit record has fields the published schema lacks: %x", m.GetUnknown())
	}
	f := func(name string) protoreflect.Value { return m.Get(md.Fields().ByName(protoreflect.Name(name))) }
	stamp := func(name string) time.Time {
		ts := f(name).Message()
		d := ts.Descriptor().Fields()
		return time.Unix(ts.Get(d.ByName("seconds")).Int(), ts.Get(d.ByName("nanos")).Int()).UTC()
	}
	r := pbAuditRec{
		txID: f("tx_id").String(), cardID: f("card_id").String(), decision: f("decision").String(),
		ts: stamp("ts"), scoredAt: stamp("scored_at"),
		amount: f("amount").Float(), latencyMS: f("latency_ms").Float(), late: f("late").Bool(),
	}
	list := func(name string, each func(protoreflect.Value)) {
		l := f(name).List()
		for i := range l.Len() {
			each(l.Get(i))
		}
	}
	sub := func(v protoreflect.Value, name string) protoreflect.Value {
		msg := v.Message()
		return msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	list("scores", func(v protoreflect.Value) {
		r.scores = append(r.scores, pbScore{sub(v, "name").String(), sub(v, "model").String(), sub(v, "value").Float()})
	})
	list("reasons", func(v protoreflect.Value) {
		r.reasons = append(r.reasons, output.Reason{Feature: sub(v, "feature").String(), Contribution: sub(v, "contribution").Float()})
	})
	list("feature_names", func(v protoreflect.Value) { r.names = append(r.names, v.String()) })
	list("features", func(v protoreflect.Value) { r.features = append(r.features, float32(v.Float())) })
	list("thresholds", func(v protoreflect.Value) { r.thresholds = append(r.thresholds, sub(v, "name").String()) })
	return r
}

// jsonScoreRec is a score (or alert) record as a consumer reads it.
type jsonScoreRec struct {
	TxID     string             `json:"tx_id"`
	CardID   string             `json:"card_id"`
	TS       time.Time          `json:"ts"`
	Amount   float64            `json:"amount"`
	ScoredAt time.Time          `json:"scored_at"`
	Scores   map[string]float64 `json:"scores"`
	Decision string             `json:"decision"`
	Models   map[string]string  `json:"models"`
	Reasons  []struct {
		Feature      string  `json:"feature"`
		Contribution float64 `json:"contribution"`
	} `json:"reasons"`
	LatencyMS float64 `json:"latency_ms"`
	Late      bool    `json:"late"`
}

// auditPBBadEvents are the hostile inputs of TestRunKafkaAuditProtobuf,
// with the dead-letter reason each must get: one in the backlog the first
// run consumes, one produced while the command is stopped. The second is
// an audit record in Protobuf written back to the input by mistake.
var auditPBBadEvents = []struct {
	value  []byte
	reason string
}{
	{[]byte(`{"tx_id":"pb-bad-1","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":1`), "malformed_json"},
	{(&output.AuditRecord{ScoreRecord: output.ScoreRecord{TxID: "pb-bad-2", CardID: "c", Decision: "alert"}}).AppendProto(nil), "malformed_json"},
}

// headerID returns m's streamscore-id header ("" without one).
func headerID(m kafka.Message) string {
	for _, h := range m.Headers {
		if h.Key == output.HeaderID {
			return string(h.Value)
		}
	}
	return ""
}

// TestRunKafkaAuditProtobuf runs the real `streamscore run --audit-format
// protobuf` (with --state-dir and a 1 s --state-interval) against an
// embedded Kafka-protocol broker, Kafka in and out, over a 2-partition
// input with two hostile messages, in three processes: the first stopped
// with SIGTERM, the second killed with SIGKILL before its first state
// interval commits, the third run to the end while more input arrives.
// Then it reads the topics back as a consumer would:
//   - every audit record decodes with a descriptor compiled from the
//     schema the README publishes (the protobuf library, dynamicpb; no
//     unknown field), and that schema equals output.AuditProtoSchema;
//   - every valid event has an audit record, and only inputs not committed
//     at the kill have several (at least once: README "Delivery"); the
//     SIGTERM'd process wrote records only for inputs it committed;
//   - each audit record carries the streamscore-id and Kafka key of its
//     event's score record, and equals the score record of the same
//     scoring: tx_id, card_id, ts, amount, scored_at, scores (as float32)
//     with their model idents, decision, reasons, latency_ms, late;
//   - its 39 feature names and float32 values equal, bit for bit,
//     `streamscore features` over the same events;
//   - score, alert and dead-letter records stay JSON: alerts for exactly
//     the events whose audit records decide "alert", one dead letter
//     (malformed_json) per hostile message.
func TestRunKafkaAuditProtobuf(t *testing.T) {
	const (
		group                       = "audit-pb"
		scores, alerts, audit, dead = "scores", "alerts", "audit", "deadletter"
	)
	md := readmeAuditDescriptor(t)
	// A broker that allows short sessions: the run started after the
	// SIGKILL gets the partitions once the killed member's session ends.
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second),
		kfake.SeedTopics(2, "transactions"), kfake.SeedTopics(1, scores, alerts, audit, dead))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second*timeScale)
	defer cancel()

	txs := mprocHistory(t, 83, 1200) // about 1,200 events over 3 days
	n := len(txs)
	// The input in four parts: A before the first run, B while it runs
	// (SIGTERM after), C while it is stopped (the second run is killed
	// with SIGKILL before its first state interval), D while the third
	// runs to the end.
	cuts := []int{0, n * 45 / 100, n * 70 / 100, n * 85 / 100, n}
	dir := t.TempDir()
	var events bytes.Buffer
	msgs := make([]kafka.Message, len(txs))
	for i := range txs {
		txs[i].Event.TxID = fmt.Sprintf("pb-%07d", i)
		v := txs[i].Event.AppendJSON(nil)
		events.Write(append(v, '\n'))
		msgs[i] = kafka.Message{Key: []byte(txs[i].Event.CardID), Value: v}
	}
	evPath := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(evPath, events.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "transactions", Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	// produce writes part i of the input, with hostile message bad (if
	// any) a third of the way in.
	produce := func(i int, bad []byte) {
		t.Helper()
		ms := msgs[cuts[i]:cuts[i+1]]
		if bad != nil {
			at := len(ms) / 3
			ms = append(slices.Clone(ms[:at]), append([]kafka.Message{{Key: []byte("hostile"), Value: bad}}, ms[at:]...)...)
		}
		if err := w.WriteMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
	}

	stateDir := filepath.Join(dir, "state")
	start := func() *proc {
		return startStreamscore(t, nil, "run", "--brokers", strings.Join(brokers, ","), "--nats", "",
			"--group", group, "--topic", "transactions", "--labels-topic", "",
			"--scores-topic", scores, "--alerts-topic", alerts, "--audit-topic", audit, "--deadletter-topic", dead,
			"--audit-format", "protobuf", "--state-dir", stateDir, "--state-interval", "1s",
			"--session-timeout", "2s", "--metrics-addr", "127.0.0.1:0", "--drain-timeout", "20s")
	}
	stop := func(p *proc) {
		t.Helper()
		p.signal(syscall.SIGTERM)
		if err := p.wait(30 * time.Second * timeScale); err != nil {
			t.Fatalf("run exited with %v after SIGTERM", err)
		}
	}
	endSum := func(topic string) int64 {
		e, err := local.EndOffsets(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		return sum(e)
	}
	committed := func() map[int]int64 {
		c, err := local.CommittedOffsets(ctx, brokers, group, "transactions")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	read := func(topic string) []kafka.Message {
		ms, err := local.ReadAll(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	// inputOf returns the partition and offset of the input behind a
	// record, from its streamscore-id ("<kind>:transactions/<p>/<o>").
	inputOf := func(m kafka.Message, kind output.Kind) (id string, part int, off int64) {
		t.Helper()
		id, ok := strings.CutPrefix(headerID(m), kind.String()+":transactions/")
		ps, offs, ok2 := strings.Cut(id, "/")
		p, err1 := strconv.Atoi(ps)
		o, err2 := strconv.ParseInt(offs, 10, 64)
		if !ok || !ok2 || err1 != nil || err2 != nil {
			t.Fatalf("%s record at %s/%d/%d: streamscore-id %q", kind, m.Topic, m.Partition, m.Offset, headerID(m))
		}
		return id, p, o
	}

	// First run: A, then B while it runs, and SIGTERM while B is still
	// arriving. (A stop used to apply everything the event-time alignment
	// held, one partition's part of B ahead of the other's unfetched
	// events, which the next run then scored as late and never applied:
	// terminal features unlike `features` for the rest of the history in
	// about half the runs. STREAMSCORE_AUDITPB_CALM_SIGTERM=1 waits for B
	// to be scored first.)
	produce(0, auditPBBadEvents[0].value)
	run := start()
	poll(t, 60*time.Second*timeScale, "part A scored", func() bool {
		run.alive()
		return endSum(audit) >= int64(cuts[1])
	})
	produce(1, nil)
	if os.Getenv("STREAMSCORE_AUDITPB_CALM_SIGTERM") == "1" {
		poll(t, 60*time.Second*timeScale, "part B scored", func() bool {
			run.alive()
			return endSum(audit) >= int64(cuts[2])
		})
	}
	stop(run)
	softAt, softInputs := committed(), endSum("transactions")
	// A soft stop drains and commits: every record it wrote is of an
	// input below its committed offsets, and every input below them has
	// exactly one record (audit or dead letter).
	var firstRun int64
	seen := map[string]bool{}
	for _, m := range read(audit) {
		id, p, o := inputOf(m, output.KindAudit)
		if o >= softAt[p] || seen[id] {
			t.Errorf("first run: audit record of input %s (committed %v, seen before %v) after SIGTERM", id, softAt, seen[id])
		}
		seen[id] = true
		firstRun++
	}
	if firstRun+endSum(dead) != sum(softAt) {
		t.Errorf("first run: %d audit records and %d dead letters for %d committed inputs", firstRun, endSum(dead), sum(softAt))
	}
	t.Logf("SIGTERM: %d of %d input offsets committed (%d audit records)", sum(softAt), softInputs, firstRun)

	// Second run: C produced while stopped; SIGKILL once it has written
	// audit records, before its first state interval commits them.
	produce(2, auditPBBadEvents[1].value)
	run = start()
	poll(t, 60*time.Second*timeScale, "the second run's audit records", func() bool {
		run.alive()
		return endSum(audit) > firstRun+int64(cuts[3]-cuts[2])/2
	})
	run.signal(syscall.SIGKILL)
	if err := run.wait(10 * time.Second * timeScale); err == nil {
		t.Fatal("run exited 0 after SIGKILL")
	}
	killAt := committed() // final: the process is gone
	t.Logf("SIGKILL: %d input offsets committed, %d audit records written", sum(killAt), endSum(audit))

	// Third run: D while it runs, to the end.
	run = start()
	produce(3, nil)
	inputs := endSum("transactions")
	poll(t, 60*time.Second*timeScale, "every input offset committed", func() bool {
		run.alive()
		return sum(committed()) == inputs
	})
	stop(run)

	// redelivered reports whether input p/o may have several records:
	// only what was not committed when the second run was killed.
	redelivered := func(p int, o int64) bool { return o >= killAt[p] }

	// Score records: JSON; at least one per valid event, several only
	// for inputs re-delivered after the kill.
	type scored struct {
		rec jsonScoreRec
		key string
	}
	scoresByID := map[string][]scored{}
	scoreTx := map[string]bool{}
	for _, m := range read(scores) {
		var r jsonScoreRec
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("score record %.120q is not JSON: %v", m.Value, err)
		}
		id, p, o := inputOf(m, output.KindScore)
		if len(scoresByID[id]) > 0 && !redelivered(p, o) {
			t.Errorf("input %s (%s) has several score records but was committed before the kill (%v)", id, r.TxID, killAt)
		}
		scoresByID[id] = append(scoresByID[id], scored{r, string(m.Key)})
		scoreTx[r.TxID] = true
	}
	if len(scoreTx) != n {
		t.Errorf("score records for %d events, want %d", len(scoreTx), n)
	}

	// Feature rows of the same events, replayed.
	wantRows, err := replayFeatures(ctx, dir, evPath)
	if err != nil {
		t.Fatal(err)
	}
	header := replayFeatureNames(t, filepath.Join(dir, "replay-features.csv"))
	rowByTx := map[string]map[string]any{}
	for _, r := range wantRows {
		rowByTx[r["tx_id"].(string)] = r["features"].(map[string]any)
	}

	// Audit records: Protobuf; at least one per valid event (several only
	// if re-delivered after the kill), each equal to the score record of
	// the same scoring (same input, same scored_at) and to the replay's
	// feature row.
	auditByTx := map[string][]pbAuditRec{}
	auditIDs := map[string]int{}
	alerting := map[string]bool{}
	auditRecs := read(audit)
	for _, m := range auditRecs {
		if json.Valid(m.Value) {
			t.Fatalf("audit record %.120q is JSON with --audit-format protobuf", m.Value)
		}
		a := decodePBAudit(t, md, m.Value)
		id, p, o := inputOf(m, output.KindAudit)
		if auditIDs[id]++; auditIDs[id] > 1 && !redelivered(p, o) {
			t.Errorf("input %s (%s) has several audit records but was committed before the kill (%v)", id, a.txID, killAt)
		}
		auditByTx[a.txID] = append(auditByTx[a.txID], a)
		if a.decision == "alert" {
			alerting[a.txID] = true
		}
		var pair *scored
		for i, s := range scoresByID[id] {
			if s.rec.ScoredAt.Equal(a.scoredAt) {
				pair = &scoresByID[id][i]
			}
		}
		switch {
		case pair == nil && len(scoresByID[id]) > 0 && redelivered(p, o):
			// Its score record was lost with the killed process;
			// compare with the re-delivery's, the moment of scoring aside.
			s := scoresByID[id][0]
			s.rec.ScoredAt, s.rec.LatencyMS = a.scoredAt, a.latencyMS
			pair = &s
		case pair == nil:
			t.Fatalf("audit record %s (input %s, scored at %v) has no score record", a.txID, id, a.scoredAt)
		}
		if string(m.Key) != pair.key {
			t.Errorf("audit record %s: key %q, score record's %q", a.txID, m.Key, pair.key)
		}
		if diff := compareAuditScore(a, pair.rec); diff != "" {
			t.Errorf("audit record %s differs from its score record: %s", a.txID, diff)
		}
		if !slices.Equal(a.names, header) || len(a.features) != len(a.names) {
			t.Fatalf("audit record %s: %d feature names %v, %d values; want the %d of `features`: %v",
				a.txID, len(a.names), a.names, len(a.features), len(header), header)
		}
		row := rowByTx[a.txID]
		for i, name := range a.names {
			want, err := strconv.ParseFloat(string(row[name].(json.Number)), 32)
			if err != nil {
				t.Fatalf("`features` %s %s: %v", a.txID, name, err)
			}
			if math.Float32bits(a.features[i]) != math.Float32bits(float32(want)) {
				t.Errorf("audit record %s: %s = %v (%08x), `features` %v", a.txID, name, a.features[i], math.Float32bits(a.features[i]), row[name])
			}
		}
		if len(a.thresholds) == 0 {
			t.Errorf("audit record %s has no thresholds", a.txID)
		}
	}
	for _, tx := range txs {
		if len(auditByTx[tx.Event.TxID]) == 0 {
			t.Errorf("no audit record for %s", tx.Event.TxID)
		}
	}
	if len(auditByTx) != n {
		t.Errorf("audit records for %d events, want %d", len(auditByTx), n)
	}

	// Alerts: JSON, for exactly the events whose audit records decide
	// "alert".
	alertRecs := read(alerts)
	alerted := map[string]bool{}
	for _, m := range alertRecs {
		var r jsonScoreRec
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("alert record %.120q is not JSON: %v", m.Value, err)
		}
		if !alerting[r.TxID] || r.Decision != "alert" {
			t.Errorf("alert record %s (decision %q): its audit records do not decide alert", r.TxID, r.Decision)
		}
		alerted[r.TxID] = true
	}
	if len(alerted) != len(alerting) || len(alerting) == 0 {
		t.Errorf("alert records for %d events, audit records deciding alert for %d: want equal and some", len(alerted), len(alerting))
	}

	// Dead letters: JSON, one per hostile message with its reason (two if
	// it was re-delivered after the kill).
	deadRecs := read(dead)
	deadAt := map[string]string{} // "p/o" -> reason
	for _, m := range deadRecs {
		var r struct {
			Partition int    `json:"partition"`
			Offset    int64  `json:"offset"`
			Reason    string `json:"reason"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("dead letter %.120q is not JSON: %v", m.Value, err)
		}
		at := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
		if _, dup := deadAt[at]; dup && !redelivered(r.Partition, r.Offset) {
			t.Errorf("two dead letters for input %s, committed before the kill", at)
		}
		deadAt[at] = r.Reason
		if r.Reason != "malformed_json" {
			t.Errorf("dead letter %s: reason %q, want malformed_json", m.Value, r.Reason)
		}
	}
	if len(deadAt) != len(auditPBBadEvents) {
		t.Errorf("dead letters for %d inputs, want %d", len(deadAt), len(auditPBBadEvents))
	}
	t.Logf("%d events (+%d hostile), three runs: %d audit records (Protobuf, %d features each; %d re-delivered after the kill), %d alert, %d dead-letter records (JSON)",
		n, len(auditPBBadEvents), len(auditRecs), len(header), len(auditRecs)-n, len(alertRecs), len(deadRecs))
}

// replayFeatureNames returns the feature columns of a `features` CSV, in
// order.
func replayFeatureNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, err := csv.NewReader(f).Read()
	if err != nil {
		t.Fatal(err)
	}
	return head[len(featureIDColumns):]
}

// compareAuditScore returns how a Protobuf audit record differs from the
// JSON score record of the same event ("" when it does not). Scores and
// contributions are float32s widened: JSON prints their float32 form.
func compareAuditScore(a pbAuditRec, s jsonScoreRec) string {
	var d []string
	if a.txID != s.TxID || a.cardID != s.CardID || a.decision != s.Decision || a.late != s.Late {
		d = append(d, fmt.Sprintf("tx_id/card_id/decision/late %q %q %q %v, JSON %q %q %q %v",
			a.txID, a.cardID, a.decision, a.late, s.TxID, s.CardID, s.Decision, s.Late))
	}
	if !a.ts.Equal(s.TS) || !a.scoredAt.Equal(s.ScoredAt) {
		d = append(d, fmt.Sprintf("ts %v scored_at %v, JSON %v %v", a.ts, a.scoredAt, s.TS, s.ScoredAt))
	}
	if a.amount != s.Amount || a.latencyMS != s.LatencyMS {
		d = append(d, fmt.Sprintf("amount %v latency_ms %v, JSON %v %v", a.amount, a.latencyMS, s.Amount, s.LatencyMS))
	}
	if len(a.scores) != len(s.Scores) || len(a.scores) == 0 {
		d = append(d, fmt.Sprintf("%d scores, JSON %d", len(a.scores), len(s.Scores)))
	}
	for _, sc := range a.scores {
		v, ok := s.Scores[sc.name]
		if !ok || float32(sc.value) != float32(v) || sc.model != s.Models[sc.name] {
			d = append(d, fmt.Sprintf("score %s = %v (%s), JSON %v (%s)", sc.name, sc.value, sc.model, v, s.Models[sc.name]))
		}
	}
	if len(a.reasons) != len(s.Reasons) {
		d = append(d, fmt.Sprintf("%d reasons, JSON %d", len(a.reasons), len(s.Reasons)))
	} else {
		for i, r := range a.reasons {
			if r.Feature != s.Reasons[i].Feature || float32(r.Contribution) != float32(s.Reasons[i].Contribution) {
				d = append(d, fmt.Sprintf("reason %d %s %v, JSON %s %v", i, r.Feature, r.Contribution, s.Reasons[i].Feature, s.Reasons[i].Contribution))
			}
		}
	}
	return strings.Join(d, "; ")
}
