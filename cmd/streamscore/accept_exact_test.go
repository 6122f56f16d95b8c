//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/local"
)

// latencyEnv turns on TestLiveLatency, a measurement (about 40 s) rather
// than a check.
const latencyEnv = "STREAMSCORE_LATENCY"

func requireLatencyRun(t *testing.T) {
	t.Helper()
	if os.Getenv(latencyEnv) != "1" {
		t.Skipf("a latency measurement of about 40 s; run it with %s=1 go test ./cmd/streamscore -run TestLiveLatency -v", latencyEnv)
	}
}

// Topics of the exactness tests. The score and audit topics have one
// partition each, so that their order is the order of publication.
const (
	exactTxTopic = "transactions"
	exactScores  = "scores"
	exactAudit   = "audit"
	exactDead    = "deadletter"
	exactLabels  = "labels"
	exactGroup   = "accept-exact"
)

// exactSideTopics are the one-partition topics of every exactness world
// (one partition each, so that their order is the order of publication).
var exactSideTopics = []string{exactScores, exactAudit, exactDead, exactLabels}

// exactCases are the transactions topic's partition counts the exactness
// tests run with. One partition is the control: the comparison finds no
// difference where events reach the state in order anyway. Four
// partitions is issue 16's case: the event-time alignment of the
// partitions makes it exact (before it, 99.9% of a backlog's score records
// and about half of live traffic's differed).
var exactCases = []struct {
	name       string
	partitions int
}{
	{"1 partition (control)", 1},
	{"4 partitions", 4},
}

// exactGate skips a case in -short (it runs a subprocess for seconds).
func exactGate(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs streamscore run and two replays; not in -short")
	}
}

// exactWorld is an embedded broker with the topics of the exactness tests
// and a file that receives every event produced, in event-time order.
type exactWorld struct {
	t       *testing.T
	ctx     context.Context
	brokers []string
	dir     string
	events  *os.File
	bw      *bufio.Writer
	w       *kafka.Writer
	n       int
	// labels, when set (feedLabelled), is the labels file the replays read
	// beside the events: the members read the same labels from exactLabels.
	labels string
}

func newExactWorld(t *testing.T, ctx context.Context, partitions int) *exactWorld {
	t.Helper()
	topics := map[string]int{exactTxTopic: partitions}
	for _, tp := range exactSideTopics {
		topics[tp] = 1
	}
	k, err := local.StartKafka(topics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: exactTxTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll, Transport: tr}
	t.Cleanup(func() { w.Close(); tr.CloseIdleConnections() })
	return &exactWorld{t: t, ctx: ctx, brokers: k.Brokers(), dir: dir, events: f, bw: bufio.NewWriter(f), w: w}
}

// produce writes txs to the topic keyed by card (so a card's events stay in
// one partition, in order) and appends them to the events file. The tx_ids
// are renumbered "<prefix>-<n>" with n zero-padded, so that tx_id order is
// event-time order: whatever tie rule the pipeline uses agrees with
// `score`'s (the generated times have no ties anyway).
func (w *exactWorld) produce(prefix string, txs []synth.Tx) {
	w.t.Helper()
	msgs := make([]kafka.Message, len(txs))
	for i := range txs {
		txs[i].Event.TxID = fmt.Sprintf("%s-%07d", prefix, w.n)
		w.n++
		v := txs[i].Event.AppendJSON(nil)
		msgs[i] = kafka.Message{Key: []byte(txs[i].Event.CardID), Value: v}
		if _, err := w.bw.Write(append(v, '\n')); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.w.WriteMessages(w.ctx, msgs...); err != nil {
		w.t.Fatalf("produce %d events: %v", len(msgs), err)
	}
}

// eventsPath flushes the events file and returns its path.
func (w *exactWorld) eventsPath() string {
	w.t.Helper()
	if err := w.bw.Flush(); err != nil {
		w.t.Fatal(err)
	}
	return w.events.Name()
}

// replays runs `streamscore score` and `streamscore features` over the
// events file (and the labels file, if the world has one) and returns one
// score record and one feature row per event. With labels, it fails the
// test unless at least 2.5% of the events have a non-zero label-derived
// feature: otherwise the labels' order could not make a record differ.
// (The generated histories end an hour before the test runs, so what they
// hold moves with the time of day: TestThreeMembersKill's 4,000 events
// gave 4.7% to 12.5% in runs of one evening; the bound used to be 5%,
// which failed some of them.)
func (w *exactWorld) replays(evPath string) (wantScores, wantRows []exactRecord) {
	w.t.Helper()
	t := w.t
	var err error
	wantScores, err = replayScores(w.ctx, w.dir, evPath, w.replayArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	wantRows, err = replayFeatures(w.ctx, w.dir, evPath, w.replayArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	if len(wantScores) != w.n || len(wantRows) != w.n {
		t.Fatalf("replays: %d score records and %d feature rows for %d events", len(wantScores), len(wantRows), w.n)
	}
	if w.labels != "" {
		labelled := 0
		for _, r := range wantRows {
			fm, _ := r["features"].(map[string]any)
			for k, v := range fm {
				if f, err := strconv.ParseFloat(fmt.Sprint(v), 64); err == nil && f != 0 && strings.Contains(k, "fraud") {
					labelled++
					break
				}
			}
		}
		if labelled < len(wantRows)/40 {
			t.Fatalf("%d of %d events have a non-zero label-derived (fraud) feature in the replay: too few for the labels' order to be tested", labelled, len(wantRows))
		}
		t.Logf("%d of %d events have a non-zero label-derived feature", labelled, len(wantRows))
	}
	return wantScores, wantRows
}

// replayArgs are the replays' flags beyond the events: the labels file,
// if the world has one.
func (w *exactWorld) replayArgs() []string {
	if w.labels == "" {
		return nil
	}
	return []string{"--labels", w.labels}
}

// startEngine starts `streamscore run` on the world's topics: the default
// workers, batches, lateness and models; no labels, no NATS, no alerts
// topic; extra flags last (a later flag overrides an earlier one). Every
// process started joins the same group.
func (w *exactWorld) startEngine(extra ...string) *proc {
	w.t.Helper()
	return startStreamscore(w.t, nil, append([]string{"run", "--brokers", strings.Join(w.brokers, ","), "--nats", "",
		"--group", exactGroup, "--topic", exactTxTopic, "--labels-topic", "",
		"--scores-topic", exactScores, "--alerts-topic", "", "--audit-topic", exactAudit, "--deadletter-topic", exactDead,
		"--metrics-addr", "127.0.0.1:0", "--session-timeout", "6s", "--drain-timeout", "20s"}, extra...)...)
}

// waitCommitted waits until the engine has committed every partition of the
// transactions topic to its end: every event has its records (offsets are
// committed only after the sinks' acks).
func (w *exactWorld) waitCommitted(p *proc, d time.Duration) {
	w.t.Helper()
	ends, err := local.EndOffsets(w.ctx, w.brokers, exactTxTopic)
	if err != nil {
		w.t.Fatal(err)
	}
	poll(w.t, d, "every offset committed", func() bool {
		p.alive()
		c, err := local.CommittedOffsets(w.ctx, w.brokers, exactGroup, exactTxTopic)
		if err != nil {
			return false
		}
		for part, end := range ends {
			if c[part] != end {
				return false
			}
		}
		return true
	})
}

// stop stops the engine with SIGTERM and waits for a clean exit.
func (w *exactWorld) stop(p *proc) {
	w.t.Helper()
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second * timeScale); err != nil {
		w.t.Fatalf("streamscore run exited with %v after SIGTERM", err)
	}
}

// exactResult is what compareWithReplay found.
type exactResult struct {
	Scores   exactSummary   // score records against `score`
	Features exactSummary   // audit feature rows against `features`
	Dead     int64          // dead letters
	Late     int            // engine score records marked late
	Lower    int            // events whose terminal_tx_count_* are below `features`'
	ByClass  map[string]int // events with a differing column, per entity (card, terminal, …)
	Records  []exactRecord  // the engine's score records, in publication order
}

// compareWithReplay reads what the engine published and compares it with
// the replays of the events file:
//   - each score record (scores topic) against `streamscore score` over the
//     same events, with the same (default) models and flags: every member
//     but scored_at and latency_ms (scoreRecordVolatile);
//   - the feature row of each audit record (audit topic) against the row
//     `streamscore features` writes for the event: every column, by value
//     (float32, bit for bit).
//
// It logs the summaries, the events whose terminal counts are below
// `features`' and the events with a differing card / terminal / other
// column. A test of several processes or of faults (duplicates allowed)
// asserts on the result itself; check asserts for one faultless process.
func (w *exactWorld) compareWithReplay() exactResult {
	w.t.Helper()
	t, ctx := w.t, w.ctx
	evPath := w.eventsPath()
	dead, err := local.EndOffsets(ctx, w.brokers, exactDead)
	if err != nil {
		t.Fatal(err)
	}
	scores, err := readTopicRecords(ctx, w.brokers, exactScores)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := readTopicRecords(ctx, w.brokers, exactAudit)
	if err != nil {
		t.Fatal(err)
	}
	wantScores, wantRows := w.replays(evPath)
	res := exactResult{Dead: dead[0], Records: scores,
		Scores:   compareExact("score records (engine vs `score`)", scores, wantScores, scoreRecordVolatile),
		Features: compareExact("audit feature rows (engine vs `features`)", auditFeatures(audit), wantRows, nil)}
	for _, r := range scores {
		if r["late"] == true {
			res.Late++
		}
	}
	res.Lower, res.ByClass = featureDrift(audit, wantRows, "terminal_tx_count")
	t.Logf("%s", res.Scores)
	t.Logf("%s", res.Features)
	t.Logf("dead letters %d; engine records marked late: %d of %d; events whose terminal_tx_count_* are below `features`: %d; events with a differing column per entity: %v",
		res.Dead, res.Late, len(scores), res.Lower, res.ByClass)
	return res
}

// check is compareWithReplay for one process without faults: it fails the
// test unless every score record and every feature row equals the
// replay's, with no dead letter (every event is valid), no duplicate (each
// event is scored once) and nothing missing or extra. It returns the
// engine's score records.
func (w *exactWorld) check() []exactRecord {
	w.t.Helper()
	res := w.compareWithReplay()
	if res.Dead != 0 {
		w.t.Errorf("%d dead letters for valid events", res.Dead)
	}
	for _, s := range []exactSummary{res.Scores, res.Features} {
		if !s.Exact() || s.Duplicates > 0 {
			w.t.Errorf("%s: %d of %d events differ, %d missing, %d extra, %d duplicates; want all equal, none missing, extra or duplicated",
				s.What, s.Mismatches, s.Events, s.Missing, s.Extra, s.Duplicates)
		}
	}
	return res.Records
}

// TestBacklogExact is the first "done when" of issue 16: catching up on a
// backlog of weeks in a multi-partition topic gives exactly the records of
// `streamscore score` over the same events.
//
// Two weeks of generated history (about 6,000 events; 300 cards sharing 40
// terminals, so every terminal sees many cards from every partition) are
// produced into a 4-partition topic keyed by card before the engine starts.
// One `streamscore run` (default workers, batches, lateness and models)
// consumes it to the end; then every score record must equal the `score`
// replay's record for the event, and every audit record's feature row the
// `features` row, as check describes. What legitimately differs:
// scored_at and latency_ms (the moment of scoring), the records' Kafka
// ids, offsets and timestamps (not compared); nothing else.
//
// On a pipeline that reads the partitions at their own speed, the terminal
// windows follow the fastest partition and the others' events arrive
// "late" (more than --max-lateness behind the terminal's newest event):
// terminal counts fall short and most records differ. The same backlog in
// one partition is the control (exactCases).
func TestBacklogExact(t *testing.T) {
	for _, tc := range exactCases {
		t.Run(tc.name, func(t *testing.T) {
			exactGate(t)
			backlogExact(t, tc.partitions)
		})
	}
}

func backlogExact(t *testing.T, partitions int) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, partitions)

	g, err := synth.New(synth.Config{Seed: 16, Cards: 300, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	const events = 6000
	to := time.Now().Add(-time.Hour).Truncate(time.Second)
	from := to.Add(-14 * 24 * time.Hour)
	var txs []synth.Tx
	var prev time.Time
	if err := g.Simulate(from, to, events/to.Sub(from).Seconds(), func(tx synth.Tx) error {
		if !tx.Event.TS.After(prev) { // strictly increasing: no ties
			tx.Event.TS = prev.Add(time.Microsecond)
		}
		prev = tx.Event.TS
		txs = append(txs, tx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.produce("b", txs)
	if w.n < events/2 {
		t.Fatalf("only %d events generated", w.n)
	}
	ends, err := local.EndOffsets(ctx, w.brokers, exactTxTopic)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backlog: %d events of %s..%s over partitions %v", w.n, from.Format(time.DateTime), to.Format(time.DateTime), ends)

	start := time.Now()
	p := w.startEngine()
	w.waitCommitted(p, 120*time.Second*timeScale)
	t.Logf("backlog consumed and committed in %v", time.Since(start).Round(time.Millisecond))
	w.stop(p)
	w.check()
}

// TestLiveExact is the live half of issue 16's exactness: events produced
// while the engine runs, at 1,500 events/s for 5 s over 4 partitions, each
// event's time being the moment it is produced, must give exactly the
// records of `score` (and the feature rows of `features`) over the same
// events, as check describes; scored_at and latency_ms aside.
//
// 2,000 cards share 200 terminals: each terminal sees several events a
// second, from every partition, so the 1-hour terminal windows depend on
// the order in which the terminal's events are applied. A pipeline that
// applies them in whatever order its workers reach them scores an event
// before another worker has applied the same terminal's event of a few
// milliseconds earlier (or after it has applied a later one). The same
// traffic into one partition is the control (exactCases).
func TestLiveExact(t *testing.T) {
	for _, tc := range exactCases {
		t.Run(tc.name, func(t *testing.T) {
			exactGate(t)
			liveExact(t, tc.partitions)
		})
	}
}

func liveExact(t *testing.T, partitions int) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, partitions)
	g, err := synth.New(synth.Config{Seed: 61, Cards: 2000, Terminals: 200})
	if err != nil {
		t.Fatal(err)
	}
	primed := w.liveTraffic(g, 1500, 5*time.Second)
	scores := w.check()
	t.Logf("decision latency (latency_ms: Kafka append to scoring) of the live events: %s", decisionLatency(scores, primed))
}

// TestLiveLatency measures the decision latency of the engine as the
// exactness tests run it (one process, default flags; score and audit
// records to Kafka) under live traffic at 1,000, 5,000 and 20,000 events/s
// for 5 s each, event time = produce time: the latency_ms of the score
// records (from the Kafka append of the event to its scoring), p50, p99 and
// max over the live events. It fails if an event has no score record or
// more than one. Issue 16 asks what the event-time ordering adds to it:
// run it before and after.
//
// STREAMSCORE_LATENCY_ALIGN_IDLE_WAIT (a comma-separated list of
// --align-idle-wait values, e.g. "100ms,0,-1ms") runs every rate once per
// value, in the order given, for a side-by-side comparison of the default
// bounded wait, no wait for quiet partitions (0) and no alignment (-1ms;
// the flag is a duration, "-1" alone does not parse); unset, the
// engine runs with its default.
func TestLiveLatency(t *testing.T) {
	requireLatencyRun(t)
	waits := []string{""}
	if v := os.Getenv(latencyEnv + "_ALIGN_IDLE_WAIT"); v != "" {
		waits = strings.Split(v, ",")
		for _, w := range waits {
			if _, err := time.ParseDuration(w); err != nil {
				t.Fatalf("%s_ALIGN_IDLE_WAIT: %q is not a duration", latencyEnv, w)
			}
		}
	}
	// STREAMSCORE_LATENCY_TERMINAL_STAGE=replicas,repartition measures
	// both places of the terminal state (the repartition mode's two extra
	// hops: R and E).
	stages := []string{""}
	if v := os.Getenv(latencyEnv + "_TERMINAL_STAGE"); v != "" {
		stages = strings.Split(v, ",")
	}
	for _, rate := range []int{1000, 5000, 20000} {
		for _, stage := range stages {
			for _, wait := range waits {
				name := fmt.Sprintf("%d events per second", rate)
				var extra []string
				if wait != "" {
					name += "/align-idle-wait=" + wait
					extra = []string{"--align-idle-wait", wait}
				}
				switch stage {
				case "", "replicas":
				case "repartition":
					name += "/terminal-stage=repartition"
					extra = append(extra, "--terminal-stage", "repartition", "--checkpoint-store", "kafka", "--state-interval", "1s")
				default:
					t.Fatalf("%s_TERMINAL_STAGE: %q is not replicas or repartition", latencyEnv, stage)
				}
				t.Run(name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
					defer cancel()
					w := newExactWorld(t, ctx, 4)
					g, err := synth.New(synth.Config{Seed: int64(rate), Cards: 10000, Terminals: 2000})
					if err != nil {
						t.Fatal(err)
					}
					primed := w.liveTraffic(g, rate, 5*time.Second, extra...)
					scores, err := readTopicRecords(ctx, w.brokers, exactScores)
					if err != nil {
						t.Fatal(err)
					}
					seen := map[string]int{}
					for _, r := range scores {
						seen[r["tx_id"].(string)]++
					}
					if len(seen) != w.n || len(scores) != w.n {
						t.Errorf("%d score records for %d distinct events, want one for each of %d", len(scores), len(seen), w.n)
					}
					t.Logf("%d events/s%s: decision latency %s", rate, strings.TrimPrefix(name, fmt.Sprintf("%d events per second", rate)),
						decisionLatency(scores, primed))
				})
			}
		}
	}
}

// liveTraffic starts the engine, lets it consume a few priming events
// (so that it has joined the group and reads at the end of the topic when
// the live traffic starts; they belong to the history like the others),
// then produces rate events per second for d, each event's time being the
// moment it is made, waits until everything is committed and stops the
// engine (started with the extra flags). It returns the number of priming
// events (numbered first).
func (w *exactWorld) liveTraffic(g *synth.Generator, rate int, d time.Duration, extra ...string) int {
	w.t.Helper()
	var prev time.Time
	next := func() synth.Tx {
		ts := time.Now().UTC()
		if !ts.After(prev) { // strictly increasing: no ties
			ts = prev.Add(time.Microsecond)
		}
		prev = ts
		return g.Next(ts)
	}
	p := w.startEngine(extra...)
	prime := make([]synth.Tx, 40)
	for i := range prime {
		prime[i] = next()
	}
	w.produce("l", prime)
	w.waitCommitted(p, 60*time.Second*timeScale)

	const tick = 5 * time.Millisecond
	start := time.Now()
	sent, total := 0, int(float64(rate)*d.Seconds())
	for sent < total {
		due := min(total, int(time.Since(start).Seconds()*float64(rate)))
		if due > sent {
			batch := make([]synth.Tx, due-sent)
			for i := range batch {
				batch[i] = next()
			}
			w.produce("l", batch)
			sent = due
		}
		time.Sleep(tick)
	}
	elapsed := time.Since(start)
	w.t.Logf("live: %d events in %v (%.0f events/s) after %d priming events", sent, elapsed.Round(time.Millisecond),
		float64(sent)/elapsed.Seconds(), len(prime))
	w.waitCommitted(p, 120*time.Second*timeScale)
	w.stop(p)
	return len(prime)
}

// decisionLatency summarises the latency_ms of the score records of the
// events numbered from skip on (the live ones).
func decisionLatency(scores []exactRecord, skip int) string {
	var ms []float64
	for _, r := range scores {
		_, num, _ := strings.Cut(r["tx_id"].(string), "-")
		if n, err := strconv.Atoi(num); err != nil || n < skip {
			continue
		}
		v, _ := r["latency_ms"].(json.Number)
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			continue
		}
		ms = append(ms, f)
	}
	if len(ms) == 0 {
		return "no records"
	}
	slices.Sort(ms)
	q := func(p float64) float64 { return ms[min(len(ms)-1, int(p*float64(len(ms))))] }
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d events", q(0.5), q(0.99), ms[len(ms)-1], len(ms))
}
