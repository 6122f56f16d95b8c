package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/local"
)

// The run test gives each setting a non-default value from exactly one
// source, so that where the output lands proves which source was used.
const (
	runTxTopic     = "transactions"
	runLabelsTopic = "labels"
	runScoresTopic = "scores.yaml"     // --config
	runAlertsTopic = "alerts.yaml"     // --config
	runAuditYAML   = "audit.yaml"      // --config, overridden by the environment
	runAuditTopic  = "audit.env"       // STREAMSCORE_AUDIT_TOPIC
	runDeadTopic   = "deadletter.env"  // STREAMSCORE_DEADLETTER_TOPIC
	runScoresSubj  = "test.env.scores" // STREAMSCORE_SCORES_SUBJECT
	runAlertsSubj  = "test.env.alerts" // STREAMSCORE_ALERTS_SUBJECT
	runGroup       = "group-flag"      // --group, also set in env and YAML
	runDrain       = 20 * time.Second  // --config drain-timeout
)

// runBadEvents are invalid inputs with the dead-letter reason each must get.
var runBadEvents = []struct{ value, reason string }{
	{"", "empty_message"},
	{`{"tx_id":"bad-1","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":1`, "malformed_json"},
	{`{"tx_id":"bad-2","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":-3}`, "invalid_amount"},
	{`{"tx_id":"bad-3","ts":"yesterday","card_id":"c","terminal_id":"m","amount":1}`, "invalid_timestamp"},
	{`{"tx_id":"bad-4","ts":"2026-01-01T00:00:00Z","card_id":"c","amount":1}`, "missing_field"},
}

// TestRunSubprocess runs `streamscore run` against an embedded broker and
// NATS server, configured through flags, environment and a YAML file; lets
// it consume a first load fully, then sends SIGTERM once it has committed
// part of a second load (usually with a backlog still unconsumed), and
// checks the exit code and the commit contract.
func TestRunSubprocess(t *testing.T) {
	k, err := local.StartKafka(map[string]int{
		runTxTopic: 4, runLabelsTopic: 1, runScoresTopic: 2, runAlertsTopic: 1,
		runAuditYAML: 1, runAuditTopic: 1, runDeadTopic: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ns, err := local.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	nc, err := local.Connect(ns.URL(), "run-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second*timeScale)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SCORES", Subjects: []string{runScoresSubj, runAlertsSubj},
		Storage: jetstream.MemoryStorage, Duplicates: 10 * time.Minute,
		AllowBatchPublish: true, // --nats-batch fast (the default) is used
	})
	if err != nil {
		t.Fatal(err)
	}

	// First load: 2000 generated events over the last three hours, with the
	// bad events spread among them.
	g, err := synth.New(synth.Config{Seed: 11, Cards: 300, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: runTxTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 500, RequiredAcks: kafka.RequireAll}
	t.Cleanup(func() { w.Close() })
	now := time.Now()
	const first = 2000
	var msgs []kafka.Message
	start := now.Add(-3 * time.Hour)
	for i := range first {
		tx := g.Next(start.Add(time.Duration(i) * 2 * time.Hour / first))
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		if i%(first/len(runBadEvents)) == 7 {
			b := runBadEvents[i/(first/len(runBadEvents))]
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("bad-%d", i)), Value: []byte(b.value)})
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	firstTotal := int64(len(msgs))

	// Config: every source used, with overrides to check the precedence.
	cfgPath := filepath.Join(t.TempDir(), "streamscore.yaml")
	stateDir := filepath.Join(t.TempDir(), "state")
	yaml := fmt.Sprintf(`# streamscore run test
brokers: 127.0.0.1:1          # overridden by --brokers
group: group-yaml             # overridden by env and --group
topic: %s
labels-topic: %s
scores-topic: %s
alerts-topic: %s
audit-topic: %s               # overridden by STREAMSCORE_AUDIT_TOPIC
max-delay: 5ms
audit-compression: zstd       # the audit records read back below are decompressed
drain-timeout: %s
workers: 2
state-dir: %s
`, runTxTopic, runLabelsTopic, runScoresTopic, runAlertsTopic, runAuditYAML, runDrain, stateDir)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := startStreamscore(t, []string{
		"STREAMSCORE_GROUP=group-env",
		"STREAMSCORE_AUDIT_TOPIC=" + runAuditTopic,
		"STREAMSCORE_DEADLETTER_TOPIC=" + runDeadTopic,
		"STREAMSCORE_SCORES_SUBJECT=" + runScoresSubj,
		"STREAMSCORE_ALERTS_SUBJECT=" + runAlertsSubj,
		"STREAMSCORE_MAX_BATCH=64",
	}, "run",
		"--config", cfgPath,
		"--brokers", strings.Join(brokers, ","),
		"--nats", ns.URL(),
		"--group", runGroup,
		"--metrics-addr", "127.0.0.1:0",
	)

	committed := func() map[int]int64 {
		t.Helper()
		c, err := local.CommittedOffsets(ctx, brokers, runGroup, runTxTopic)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ends := func(topic string) map[int]int64 {
		t.Helper()
		e, err := local.EndOffsets(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	sum := func(m map[int]int64) (s int64) {
		for _, v := range m {
			s += max(v, 0)
		}
		return s
	}

	metricsURL := sub.metricsURL()

	// Wait for the first load to be committed in full.
	firstEnds := ends(runTxTopic)
	if got := sum(firstEnds); got != firstTotal {
		t.Fatalf("transactions topic holds %d messages, want %d", got, firstTotal)
	}
	poll(t, 60*time.Second*timeScale, "the first load committed", func() bool {
		sub.alive()
		c := committed()
		for p, end := range firstEnds {
			if c[p] != end {
				return false
			}
		}
		return true
	})

	if got := fetch(t, ctx, strings.TrimSuffix(metricsURL, "/metrics")+"/readyz"); got != "running\n" {
		t.Errorf("GET /readyz while consuming: %q, want \"running\"", got)
	}
	body := fetch(t, ctx, metricsURL)
	for _, name := range []string{
		"streamscore_stream_events_consumed_total",
		"streamscore_stream_events_deadlettered_total",
		"streamscore_stream_batch_size_events",
		"streamscore_stream_commits_total",
		"streamscore_sinks_messages_total",
		"streamscore_sinks_publish_seconds",
		"go_goroutines",
	} {
		if !regexp.MustCompile(`(?m)^` + name + `[ {_]`).MatchString(body) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if m := regexp.MustCompile(`(?m)^streamscore_stream_events_consumed_total\{topic="transactions"\} (\S+)$`).FindStringSubmatch(body); m == nil {
		t.Errorf("/metrics has no events_consumed_total for topic transactions")
	} else if v, _ := strconv.ParseFloat(m[1], 64); int64(v) != firstTotal {
		t.Errorf("events_consumed_total = %v after the first load, want %d", v, firstTotal)
	}

	// Second load: produced in small batches while the engine is stopped.
	var (
		prodWG   sync.WaitGroup
		prodErr  error
		produced int64
	)
	stopProd := make(chan struct{})
	prodWG.Add(1)
	go func() {
		defer prodWG.Done()
		start := now.Add(-time.Hour)
		for i := 0; i < 4000; i += 50 {
			select {
			case <-stopProd:
				return
			default:
			}
			batch := make([]kafka.Message, 0, 50)
			for j := i; j < i+50; j++ {
				tx := g.Next(start.Add(time.Duration(j) * 50 * time.Minute / 4000))
				batch = append(batch, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
			}
			if err := w.WriteMessages(ctx, batch...); err != nil {
				prodErr = err
				return
			}
			produced += int64(len(batch))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	stopProducer := func() {
		select {
		case <-stopProd:
		default:
			close(stopProd)
		}
		prodWG.Wait()
	}
	defer stopProducer()

	// SIGTERM once the engine has committed part of the second load.
	poll(t, 60*time.Second*timeScale, "part of the second load committed", func() bool {
		sub.alive()
		return sum(committed()) > firstTotal
	})
	sigAt := time.Now()
	sub.signal(syscall.SIGTERM)
	exitErr := sub.wait(runDrain + 15*time.Second*timeScale)
	stopProducer()
	if prodErr != nil {
		t.Fatalf("produce the second load: %v", prodErr)
	}
	if exitErr != nil {
		t.Fatalf("streamscore run exited with %v after SIGTERM, want exit 0", exitErr)
	}
	t.Logf("exit %v after SIGTERM; %d events produced in the second load", time.Since(sigAt).Round(time.Millisecond), produced)

	if !regexp.MustCompile(`msg="nats output" .*batch=fast`).MatchString(sub.stderr.String()) {
		t.Errorf("no nats output log line with batch=fast")
	}
	// What the engine consumed, from its final log line.
	m := regexp.MustCompile(`msg="run finished" .*consumed=(\d+) scored=(\d+) deadlettered=(\d+)`).FindStringSubmatch(sub.stderr.String())
	if m == nil {
		t.Fatalf("no run finished log line with the counts")
	}
	consumed, _ := strconv.ParseInt(m[1], 10, 64)
	scored, _ := strconv.ParseInt(m[2], 10, 64)
	deadlettered, _ := strconv.ParseInt(m[3], 10, 64)
	// Consumed counts what the fetch loop handed to a worker (a message
	// kafka-go returns after the stop is not counted), and every worker
	// drains what it was handed: they are equal.
	processed := scored + deadlettered
	if consumed != processed {
		t.Errorf("run finished: consumed %d, scored %d + dead-lettered %d: want them equal", consumed, scored, deadlettered)
	}

	// Contract: committed offsets cover exactly what was processed (one
	// process, group starting at the beginning), never beyond the end, and
	// every committed offset has its score or dead-letter record.
	final := committed()
	endsNow := ends(runTxTopic)
	for p, end := range endsNow {
		if final[p] < firstEnds[p] || final[p] > end {
			t.Errorf("partition %d: committed %d, want in [%d, %d]", p, final[p], firstEnds[p], end)
		}
	}
	switch got := sum(final); {
	case strings.Contains(sub.stderr.String(), "partition re-delivered"):
		// A rebalance re-fetched from the last commit, so processed counts
		// some offsets twice; only the upper bound holds.
		if got > processed {
			t.Errorf("committed offsets sum to %d, more than the %d events processed", got, processed)
		}
	case got != processed:
		t.Errorf("committed offsets sum to %d, but the engine processed %d: a drain that exits 0 must commit everything it processed", got, processed)
	}
	// The shutdown snapshot (state-dir in the YAML): every committed
	// partition's last applied offset is the one before its commit.
	var man struct {
		Reason  string           `json:"reason"`
		Workers int              `json:"workers"`
		Applied map[string]int64 `json:"applied"`
	}
	if cur, err := os.ReadFile(filepath.Join(stateDir, "CURRENT")); err != nil {
		t.Errorf("no state snapshot after SIGTERM: %v", err)
	} else if b, err := os.ReadFile(filepath.Join(stateDir, strings.Fields(string(cur))[0], "manifest.json")); err != nil {
		t.Errorf("state snapshot: %v", err)
	} else if err := json.Unmarshal(b, &man); err != nil {
		t.Errorf("state snapshot manifest: %v", err)
	} else if man.Reason != "shutdown" || man.Workers != 2 {
		t.Errorf("state snapshot: reason %q, %d workers; want shutdown, 2", man.Reason, man.Workers)
	}
	for p, c := range final {
		if c > 0 && man.Applied[strconv.Itoa(p)] != c-1 {
			t.Errorf("partition %d: committed %d, snapshot applied through %d", p, c, man.Applied[strconv.Itoa(p)])
		}
	}
	if sum(endsNow) > sum(final) {
		t.Logf("%d of %d events were not processed before intake stopped and stay uncommitted", sum(endsNow)-sum(final), sum(endsNow))
	}

	covered := map[int]map[int64]string{} // partition -> offset -> kind
	// mark records the input offsets the records of topic stand for and
	// returns how many distinct ones there are (a retried Kafka write may
	// store a record twice).
	mark := func(topic, kind string) int {
		ids := map[string]bool{}
		recs, err := local.ReadAll(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			id := header(r, output.HeaderID)
			rest, ok := strings.CutPrefix(id, kind+":"+runTxTopic+"/")
			if !ok {
				t.Fatalf("%s record with id %q, want %s:%s/<partition>/<offset>", topic, id, kind, runTxTopic)
			}
			ps, offs, _ := strings.Cut(rest, "/")
			p, err1 := strconv.Atoi(ps)
			o, err2 := strconv.ParseInt(offs, 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s record with id %q", topic, id)
			}
			ids[id] = true
			if kind == "alert" {
				continue // alerts repeat score records; coverage is scores and dead letters
			}
			if covered[p] == nil {
				covered[p] = map[int64]string{}
			}
			if prev, dup := covered[p][o]; dup && prev != kind {
				t.Errorf("offset %d/%d has both a %s and a %s record", p, o, prev, kind)
			}
			covered[p][o] = kind
		}
		return len(ids)
	}
	nScores := mark(runScoresTopic, "score")
	nDead := mark(runDeadTopic, "dead_letter")
	for p, c := range final {
		for o := range c {
			if _, ok := covered[p][o]; !ok {
				t.Fatalf("offset %d/%d is committed but has no score or dead-letter record", p, o)
			}
		}
	}
	if int64(nDead) != deadlettered || nDead != len(runBadEvents) {
		t.Errorf("%d dead-letter records, engine dead-lettered %d, want %d", nDead, deadlettered, len(runBadEvents))
	}
	if int64(nScores) < scored {
		t.Errorf("%d score records on Kafka, engine scored %d", nScores, scored)
	}

	// Dead letters carry the right reasons.
	dls, err := local.ReadAll(ctx, brokers, runDeadTopic)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, r := range dls {
		var d struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(r.Value, &d); err != nil || d.Topic != runTxTopic {
			t.Errorf("dead letter %s: %v", r.Value, err)
		}
		reasons[d.Reason]++
	}
	for _, b := range runBadEvents {
		if reasons[b.reason] == 0 {
			t.Errorf("no dead letter with reason %q", b.reason)
		}
	}

	// The other sinks: audit from the environment (not the YAML value),
	// alerts topic from the YAML file, NATS subjects from the environment.
	if n := sum(ends(runAuditTopic)); n < scored {
		t.Errorf("%s holds %d audit records, want at least %d (one per scored event)", runAuditTopic, n, scored)
	}
	if n := sum(ends(runAuditYAML)); n != 0 {
		t.Errorf("%s (YAML value overridden by the environment) holds %d records, want 0", runAuditYAML, n)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var natsScores, natsAlerts int64
	for subj, n := range subjectCounts(t, ctx, st, info.State.LastSeq) {
		switch subj {
		case runScoresSubj:
			natsScores = n
		case runAlertsSubj:
			natsAlerts = n
		}
	}
	if natsScores != scored {
		t.Errorf("JetStream holds %d score records, engine scored %d", natsScores, scored)
	}
	if n := int64(mark(runAlertsTopic, "alert")); natsAlerts != n {
		t.Errorf("%d alerts on NATS, %d on Kafka topic %s", natsAlerts, n, runAlertsTopic)
	}

	// The group came from the flag, not from the environment or the file.
	for _, g := range []string{"group-env", "group-yaml"} {
		c, err := local.CommittedOffsets(ctx, brokers, g, runTxTopic)
		if err == nil && sum(c) != 0 {
			t.Errorf("group %s has committed offsets %v; --group should have won", g, c)
		}
	}
	t.Logf("consumed %d (first load %d), scored %d, dead-lettered %d, NATS alerts %d", consumed, firstTotal, scored, deadlettered, natsAlerts)
}

// subjectCounts counts the messages of a JetStream stream by subject.
func subjectCounts(t *testing.T, ctx context.Context, st jetstream.Stream, last uint64) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for seq := uint64(1); seq <= last; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get stream message %d: %v", seq, err)
		}
		out[m.Subject]++
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
