//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/local"
	"github.com/twmb/franz-go/pkg/kfake"
)

// The multi-process acceptance tests of issue 16: several `streamscore run`
// processes in one consumer group on a 6-partition topic of the embedded
// broker, sharing per-partition checkpoints in a compacted Kafka topic
// (--checkpoint-store kafka, --state-interval 1s), while a generated
// history is produced into the topic. Members are killed (SIGKILL),
// restarted one at a time (SIGTERM), added and removed; at the end every
// event must have a score record, and every event's last audit record must
// equal `streamscore features` bit for bit, and its last score record
// `streamscore score`'s (every model, the GRU's state included): the card
// windows and sequence states followed their partitions from member to
// member, and every member's terminals saw every partition's events in
// event-time order (shared-state replicas, --shared-replicas).

// mprocPartitions is the transactions topic's partition count.
const mprocPartitions = 6

// mprocFlags are the flags every member of these tests runs with on top of
// startEngine's: shared checkpoints every second (the commit cadence, and
// what a killed member's successor re-scores at most). The session timeout
// is startEngine's 6 s, kfake's minimum (group.min.session.timeout.ms, as
// Kafka's default): a killed member's partitions move 6 s after its last
// heartbeat.
//
// --align-idle-wait is 2 s: the feeder sends a chunk every 50 ms keyed by
// card over 6 partitions, with event times 72 h apart over 4,000 events,
// so a partition quiet for more than the default 100 ms is common and the
// others would pass it (the documented one source of inexactness:
// streamscore_stream_aligned_events_total{outcome="out_of_order"}).
var mprocFlags = []string{"--checkpoint-store", "kafka", "--state-interval", "1s", "--align-idle-wait", "2s"}

// mprocGate skips the tests in -short: each runs several subprocesses for
// 20 to 40 s.
func mprocGate(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs several streamscore run processes for tens of seconds; not in -short")
	}
}

// member is one `streamscore run` process of the group.
type member struct {
	name    string
	p       *proc
	ready   string // URL of /readyz
	stopped bool
}

var (
	genLineRe     = regexp.MustCompile(`msg="consumer group generation" [^\n]*?generation=(\d+) partitions="?\[([\d ]*)\]"?`)
	restoredRe    = regexp.MustCompile(`time=(\S+) level=INFO msg="partition restored from its checkpoint" [^\n]*?partition=(\d+) offset=(\d+) committed=(\d+) bytes=(\d+) cards=(\d+) took=(\S+) offsets_behind_committed=(\d+)`)
	restoredAllRe = regexp.MustCompile(`time=(\S+) level=INFO msg="partitions restored from checkpoints" [^\n]*?partitions=(\d+) took=(\S+)`)
)

// mprocLogsEnv names a directory where a failed multi-process test
// writes every member's log (STREAMSCORE_MPROC_LOGS=/tmp/logs); with
// STREAMSCORE_MPROC_LOGS_ALL set too, every test does.
const mprocLogsEnv = "STREAMSCORE_MPROC_LOGS"

// startMember starts a member with mprocFlags and extra (later flags
// override earlier ones) and waits for its metrics listener.
func (w *exactWorld) startMember(name string, extra ...string) *member {
	w.t.Helper()
	p := w.startEngine(append(slices.Clone(mprocFlags), extra...)...)
	if dir := os.Getenv(mprocLogsEnv); dir != "" {
		// A failed test's member logs, whole, for a post-mortem.
		w.t.Cleanup(func() {
			if w.t.Failed() || os.Getenv(mprocLogsEnv+"_ALL") != "" {
				f := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(w.t.Name())+"-"+name+".log")
				if err := os.WriteFile(f, []byte(p.stderr.String()), 0o644); err != nil {
					w.t.Logf("write %s: %v", f, err)
				}
			}
		})
	}
	url := p.metricsURL()
	return &member{name: name, p: p, ready: strings.TrimSuffix(url, "/metrics") + "/readyz"}
}

// generation returns the member's current generation and its partitions
// (the last "consumer group generation" line it logged).
func (m *member) generation() (gen int, parts []int, ok bool) {
	all := genLineRe.FindAllStringSubmatch(m.p.stderr.String(), -1)
	if len(all) == 0 {
		return 0, nil, false
	}
	last := all[len(all)-1]
	gen, _ = strconv.Atoi(last[1])
	for _, f := range strings.Fields(last[2]) {
		n, _ := strconv.Atoi(f)
		parts = append(parts, n)
	}
	return gen, parts, true
}

// exposure scrapes the members' metrics for what may make a shared
// feature differ from a replay: events the aligner applied out of
// event-time order, released past a wait bound, and events scored after a
// rebalance without their kept shared columns. Logged; it returns the
// out-of-order and missing-columns counts summed over the members.
func (w *exactWorld) exposure(ms ...*member) (outOfOrder, missing float64) {
	w.t.Helper()
	re := regexp.MustCompile(`(?m)^(streamscore_stream_(?:terminal_)?aligned_events_total\{outcome="(\w+)"\}|streamscore_stream_terminal_(?:sources_suspected|sources_revived|duplicates|bad_records)_total(?:\{reason="\w+"\})?|streamscore_stream_shared_columns_missing_total|streamscore_stream_replica_events_total|streamscore_stream_align_buffered_events|streamscore_stream_commit_lag_events\{partition="\d+"\}) (\S+)$`)
	for _, m := range ms {
		if m.stopped {
			continue
		}
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(m.ready, "/readyz")+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			w.t.Logf("%s: metrics: %v", m.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		var parts []string
		for _, g := range re.FindAllStringSubmatch(string(body), -1) {
			v, _ := strconv.ParseFloat(g[3], 64)
			name := g[1]
			switch {
			case g[2] == "out_of_order":
				outOfOrder += v
			case strings.HasPrefix(name, "streamscore_stream_shared_columns_missing"):
				missing += v
			}
			if g[2] != "" {
				name = "aligned " + g[2]
				if strings.Contains(g[1], "terminal") {
					name = "terminal " + name
				}
			}
			parts = append(parts, fmt.Sprintf("%s=%g", name, v))
		}
		w.t.Logf("%s: %s", m.name, strings.Join(parts, ", "))
	}
	return outOfOrder, missing
}

// isReady reports whether GET /readyz answers 200.
func (m *member) isReady(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.ready, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitBalanced waits until the live members are in one generation that
// gives every partition to exactly one of them, each at least one, and
// returns the assignment.
func (w *exactWorld) waitBalanced(members []*member, d time.Duration) map[string][]int {
	w.t.Helper()
	var out map[string][]int
	poll(w.t, d, "the group to settle with every member claiming partitions", func() bool {
		out = map[string][]int{}
		owner := map[int]string{}
		g0 := -1
		for _, m := range members {
			if m.stopped {
				continue
			}
			m.p.alive()
			g, parts, ok := m.generation()
			if !ok || len(parts) == 0 || (g0 >= 0 && g != g0) {
				return false
			}
			g0 = g
			for _, p := range parts {
				if _, dup := owner[p]; dup {
					return false
				}
				owner[p] = m.name
			}
			out[m.name] = parts
		}
		return len(owner) == mprocPartitions
	})
	return out
}

// feeder produces a generated history into the transactions topic at a
// steady rate from its own goroutine, while the test changes the group.
type feeder struct {
	sent atomic.Int64  // events produced so far
	done chan struct{} // closed when the goroutine has returned
	quit chan struct{} // closed by the test's cleanup
	err  error         // set before done is closed
}

// mprocHistory generates about n events of a 3-day history ending an hour
// ago (event times strictly increasing), for 300 cards sharing 60
// terminals.
func mprocHistory(t *testing.T, seed int64, n int) []synth.Tx {
	return mprocHistorySpan(t, seed, n, 72*time.Hour)
}

// mprocHistorySpan is mprocHistory over span of event time.
func mprocHistorySpan(t *testing.T, seed int64, n int, span time.Duration) []synth.Tx {
	t.Helper()
	txs, _ := mprocHistoryOf(t, synth.Config{Seed: seed, Cards: 300, Terminals: 60}, n, span)
	return txs
}

// mprocLabelledHistory is mprocHistory over 16 days (the label-derived
// features count the frauds of their terminal 7 days back and more) with
// 10% fraud and its labels, about 12 hours after their transactions (mean),
// as the labels topic delivers
// them (features.CompareLabels); labels later than the last transaction are
// left out. The transactions carry the tx_ids the feeder gives them
// ("m-<n>"), which the labels name. The labels have no tx_ts: a label is
// placed by finding its transaction in its terminal's history, so the
// order in which a member applies labels and events matters.
func mprocLabelledHistory(t *testing.T, seed int64, n int) ([]synth.Tx, []features.Label) {
	t.Helper()
	txs, g := mprocHistoryOf(t, synth.Config{Seed: seed, Cards: 300, Terminals: 60, FraudRate: 0.1, LabelDelay: 12 * time.Hour}, n, 16*24*time.Hour)
	last := txs[len(txs)-1].Event.TS
	var labels []features.Label
	for i := range txs {
		txs[i].Event.TxID = fmt.Sprintf("m-%07d", i)
		if l, ok := g.LabelFor(txs[i]); ok && !l.TS.After(last) {
			l.TxTS = time.Time{}
			labels = append(labels, l)
		}
	}
	slices.SortStableFunc(labels, func(a, b features.Label) int { return features.CompareLabels(&a, &b) })
	if len(labels) < n/100 {
		t.Fatalf("only %d labels for %d events", len(labels), len(txs))
	}
	return txs, labels
}

// mprocHistoryOf generates about n events of cfg's population over span of
// event time ending an hour ago, event times strictly increasing.
func mprocHistoryOf(t *testing.T, cfg synth.Config, n int, span time.Duration) ([]synth.Tx, *synth.Generator) {
	t.Helper()
	g, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(-time.Hour).Truncate(time.Second)
	from := to.Add(-span)
	var txs []synth.Tx
	var prev time.Time
	if err := g.Simulate(from, to, float64(n)/to.Sub(from).Seconds(), func(tx synth.Tx) error {
		if !tx.Event.TS.After(prev) {
			tx.Event.TS = prev.Add(time.Microsecond)
		}
		prev = tx.Event.TS
		txs = append(txs, tx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(txs) < n/2 {
		t.Fatalf("only %d events generated", len(txs))
	}
	return txs, g
}

// feed starts producing txs at rate events per second (chunks every 50 ms).
// The test's cleanup stops the feeder and waits for it.
func (w *exactWorld) feed(txs []synth.Tx, rate int) *feeder {
	return w.feedLabelled(txs, nil, rate)
}

// feedLabelled is feed with labels: after each chunk of events, the labels
// whose time has come (at or before the chunk's last event) go to the
// labels topic; the labels file the replays read holds them all.
func (w *exactWorld) feedLabelled(txs []synth.Tx, labels []features.Label, rate int) *feeder {
	var lw *kafka.Writer
	if len(labels) > 0 {
		w.labels = filepath.Join(w.dir, "labels.jsonl")
		var buf []byte
		for i := range labels {
			buf = append(labels[i].AppendJSON(buf), '\n')
		}
		if err := os.WriteFile(w.labels, buf, 0o600); err != nil {
			w.t.Fatal(err)
		}
		tr := &kafka.Transport{}
		lw = &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: exactLabels, BatchTimeout: time.Millisecond,
			RequiredAcks: kafka.RequireAll, Transport: tr}
		w.t.Cleanup(func() { lw.Close(); tr.CloseIdleConnections() })
	}
	f := &feeder{done: make(chan struct{}), quit: make(chan struct{})}
	w.t.Cleanup(func() { close(f.quit); <-f.done })
	go func() {
		defer close(f.done)
		start := time.Now()
		sent, lsent := 0, 0
		for sent < len(txs) {
			due := min(len(txs), int(time.Since(start).Seconds()*float64(rate))+1)
			if due > sent {
				if err := w.produceErr("m", txs[sent:due]); err != nil {
					f.err = err
					return
				}
				sent = due
				f.sent.Store(int64(sent))
				var lmsgs []kafka.Message
				for ; lsent < len(labels) && !labels[lsent].TS.After(txs[due-1].Event.TS); lsent++ {
					lmsgs = append(lmsgs, kafka.Message{Key: []byte(labels[lsent].TxID), Value: labels[lsent].AppendJSON(nil)})
				}
				if len(lmsgs) > 0 {
					if err := lw.WriteMessages(w.ctx, lmsgs...); err != nil {
						f.err = fmt.Errorf("produce %d labels: %w", len(lmsgs), err)
						return
					}
				}
			}
			select {
			case <-w.ctx.Done():
				f.err = w.ctx.Err()
				return
			case <-f.quit:
				f.err = errors.New("stopped")
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return f
}

// waitSent waits until the feeder has produced n events.
func (f *feeder) waitSent(t *testing.T, n int) {
	t.Helper()
	poll(t, 60*time.Second*timeScale, fmt.Sprintf("%d events produced", n), func() bool {
		select {
		case <-f.done:
			if f.err != nil {
				t.Fatalf("feeder: %v", f.err)
			}
		default:
		}
		return f.sent.Load() >= int64(n)
	})
}

// wait waits for the feeder to finish.
func (f *feeder) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(120 * time.Second * timeScale):
		t.Fatal("feeder did not finish")
	}
	if f.err != nil {
		t.Fatalf("feeder: %v", f.err)
	}
}

// produceErr is produce for a goroutine other than the test's: it returns
// its error. Only one goroutine may produce at a time.
func (w *exactWorld) produceErr(prefix string, txs []synth.Tx) error {
	msgs := make([]kafka.Message, len(txs))
	for i := range txs {
		txs[i].Event.TxID = fmt.Sprintf("%s-%07d", prefix, w.n)
		w.n++
		v := txs[i].Event.AppendJSON(nil)
		msgs[i] = kafka.Message{Key: []byte(txs[i].Event.CardID), Value: v}
		if _, err := w.bw.Write(append(v, '\n')); err != nil {
			return err
		}
	}
	if err := w.w.WriteMessages(w.ctx, msgs...); err != nil {
		return fmt.Errorf("produce %d events: %w", len(msgs), err)
	}
	return nil
}

// waitAllCommitted waits until every partition is committed to its end by
// whichever members own it now.
func (w *exactWorld) waitAllCommitted(members []*member, d time.Duration) {
	w.t.Helper()
	ends, err := local.EndOffsets(w.ctx, w.brokers, exactTxTopic)
	if err != nil {
		w.t.Fatal(err)
	}
	var last map[int]int64
	defer func() {
		if w.t.Failed() {
			w.t.Logf("committed %v, ends %v", last, ends)
			w.exposure(members...)
		}
	}()
	poll(w.t, d, "every offset committed", func() bool {
		for _, m := range members {
			if !m.stopped {
				m.p.alive()
			}
		}
		c, err := local.CommittedOffsets(w.ctx, w.brokers, exactGroup, exactTxTopic)
		if err != nil {
			return false
		}
		last = c
		for part, end := range ends {
			if c[part] != end {
				return false
			}
		}
		return true
	})
}

// stopMembers sends SIGTERM to the members at once and waits for their
// clean exits.
func (w *exactWorld) stopMembers(ms ...*member) {
	w.t.Helper()
	for _, m := range ms {
		m.p.signal(syscall.SIGTERM)
	}
	for _, m := range ms {
		if err := m.p.wait(40 * time.Second * timeScale); err != nil {
			w.t.Fatalf("%s exited with %v after SIGTERM", m.name, err)
		}
		m.stopped = true
	}
}

// scoreRec is one score record with where its event came from.
type scoreRec struct {
	txID     string
	part     int
	off      int64
	scoredAt time.Time
}

// mprocResult is what mprocCompare found.
type mprocResult struct {
	Card     exactSummary // card (non-shared) feature columns of the audit records vs `features`
	Features exactSummary // every feature column
	Scores   exactSummary // score records vs `score`
	Dead     int64
	scores   []scoreRec // in publication order
	dupParts map[int][]int64
}

// mprocCompare reads what the members published and compares it with the
// replays of the events produced: the card columns of the feature rows
// (every column but features.NewShared().Columns() of the default spec),
// the whole feature rows, and the score records. It logs the summaries and
// the duplicates per partition (with their offsets).
func (w *exactWorld) mprocCompare() mprocResult {
	w.t.Helper()
	t, ctx := w.t, w.ctx
	evPath := w.eventsPath()
	dead, err := local.EndOffsets(ctx, w.brokers, exactDead)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := local.ReadAll(ctx, w.brokers, exactScores)
	if err != nil {
		t.Fatal(err)
	}
	var scores []exactRecord
	var recs []scoreRec
	for _, m := range msgs {
		r, err := decodeExact(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		scores = append(scores, r)
		id := header(m, output.HeaderID)
		var sr scoreRec
		sr.txID = r["tx_id"].(string)
		_, pos, _ := strings.Cut(id, ":")
		if _, err := fmt.Sscanf(pos, exactTxTopic+"/%d/%d", &sr.part, &sr.off); err != nil {
			t.Fatalf("score record id %q: %v", id, err)
		}
		at, _ := r["scored_at"].(string)
		if sr.scoredAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
			t.Fatalf("score record %s: scored_at %q: %v", sr.txID, at, err)
		}
		recs = append(recs, sr)
	}
	audit, err := readTopicRecords(ctx, w.brokers, exactAudit)
	if err != nil {
		t.Fatal(err)
	}
	wantScores, wantRows := w.replays(evPath)
	names := features.Names()
	shared := map[string]bool{}
	defaultShared, err := features.NewShared()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range defaultShared.Columns() {
		shared[names[c]] = true
	}
	if len(shared) == 0 || len(shared) == len(names) {
		t.Fatalf("%d shared columns of %d: the card columns cannot be told apart", len(shared), len(names))
	}
	if fm, _ := wantRows[0]["features"].(map[string]any); len(fm) != len(names) {
		t.Fatalf("`features` writes %d columns, the default spec has %d", len(fm), len(names))
	}
	cardOnly := func(rs []exactRecord) []exactRecord {
		out := make([]exactRecord, len(rs))
		for i, r := range rs {
			fm, _ := r["features"].(map[string]any)
			c := make(map[string]any, len(fm))
			for k, v := range fm {
				if !shared[k] {
					c[k] = v
				}
			}
			out[i] = exactRecord{"tx_id": r["tx_id"], "features": c}
		}
		return out
	}
	rows := auditFeatures(audit)
	res := mprocResult{Dead: dead[0], scores: recs, dupParts: map[int][]int64{},
		Card:     compareExact("card feature columns (engine vs `features`)", cardOnly(rows), cardOnly(wantRows), nil),
		Features: compareExact("all feature columns (engine vs `features`)", rows, wantRows, nil),
		Scores:   compareExact("score records (engine vs `score`)", scores, wantScores, scoreRecordVolatile)}
	count := map[string]int{}
	for _, r := range recs {
		count[r.txID]++
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if count[r.txID] > 1 && !seen[r.txID] {
			seen[r.txID] = true
			res.dupParts[r.part] = append(res.dupParts[r.part], r.off)
		}
	}
	t.Logf("%s", res.Card)
	t.Logf("%s", res.Features)
	t.Logf("%s", res.Scores)
	t.Logf("dead letters %d; duplicated events per partition: %s", res.Dead, dupSummary(res.dupParts))
	return res
}

// dupSummary describes duplicated events per partition: how many, and
// their offset range.
func dupSummary(dups map[int][]int64) string {
	if len(dups) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(dups)) {
		offs := dups[p]
		slices.Sort(offs)
		fmt.Fprintf(&b, "partition %d: %d (offsets %d..%d); ", p, len(offs), offs[0], offs[len(offs)-1])
	}
	return b.String()
}

// assertExact fails the test unless every event has a score record and
// an audit record, none is extra, there is no dead letter, and every
// event's last audit record's feature columns equal `features`' and its
// last score record equals `score`'s.
func (w *exactWorld) assertExact(res mprocResult) {
	w.t.Helper()
	w.assertCardExact(res)
	if !res.Features.Exact() {
		w.t.Errorf("feature columns: %d of %d events differ from `features`", res.Features.Mismatches, res.Features.Events)
	}
	if !res.Scores.Exact() {
		w.t.Errorf("score records: %d of %d events differ from `score`", res.Scores.Mismatches, res.Scores.Events)
	}
}

// assertCardExact fails the test unless every event has a score record
// and an audit record, none is extra, there is no dead letter, and the
// card columns of every event's last audit record equal `features`'.
func (w *exactWorld) assertCardExact(res mprocResult) {
	w.t.Helper()
	if res.Dead != 0 {
		w.t.Errorf("%d dead letters for valid events", res.Dead)
	}
	if res.Scores.Missing != 0 || res.Scores.Extra != 0 {
		w.t.Errorf("score records: %d events without one, %d extra", res.Scores.Missing, res.Scores.Extra)
	}
	if !res.Card.Exact() {
		w.t.Errorf("card feature columns: %d of %d events differ from `features`, %d missing, %d extra",
			res.Card.Mismatches, res.Card.Events, res.Card.Missing, res.Card.Extra)
	}
}

// ckptStoredLine is logged by a member when it has stored a checkpoint
// round (the committer then moves the committed offsets to it).
const ckptStoredLine = `msg="partition checkpoints stored"`

// poll1ms is poll with a 1 ms period, to act right after a log line.
func poll1ms(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// logRestores logs every "partition restored from its checkpoint" line of
// the members after since; it returns the longest restore and how many
// restored checkpoints were ahead of the partition's committed offset.
func logRestores(t *testing.T, since time.Time, ms ...*member) (longest time.Duration, ahead int) {
	t.Helper()
	for _, m := range ms {
		for _, l := range restoredRe.FindAllStringSubmatch(m.p.stderr.String(), -1) {
			at, err := time.Parse(time.RFC3339Nano, l[1])
			if err != nil || at.Before(since) {
				continue
			}
			took, _ := time.ParseDuration(l[7])
			longest = max(longest, took)
			if l[3] != l[4] {
				ahead++
			}
			t.Logf("%s restored partition %s at %s: checkpoint offset %s, committed %s, %s bytes, %s cards, took %s, %s offsets behind the committed one",
				m.name, l[2], at.Format("15:04:05.000"), l[3], l[4], l[5], l[6], l[7], l[8])
		}
		for _, l := range restoredAllRe.FindAllStringSubmatch(m.p.stderr.String(), -1) {
			if at, err := time.Parse(time.RFC3339Nano, l[1]); err == nil && !at.Before(since) {
				t.Logf("%s: a restore round of %s partitions (with or without a checkpoint) took %s", m.name, l[2], l[3])
			}
		}
	}
	return longest, ahead
}

// resumedAfter returns, for the partitions, the first moment after at
// that one of their events was scored (scored_at), and the time from at.
func resumedAfter(recs []scoreRec, parts []int, at time.Time) (time.Duration, bool) {
	var first time.Time
	for _, r := range recs {
		if slices.Contains(parts, r.part) && r.scoredAt.After(at) && (first.IsZero() || r.scoredAt.Before(first)) {
			first = r.scoredAt
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(at), true
}

// checkMemberLogs fails the test if a member logged a state gap (a
// partition resumed past its restored state: events missing from its
// windows) or an error, and logs the revokes whose batches were abandoned
// (not drained within the revoke timeout: their events are re-scored by
// the next owner).
func checkMemberLogs(t *testing.T, ms ...*member) {
	t.Helper()
	for _, m := range ms {
		for _, l := range strings.Split(m.p.stderr.String(), "\n") {
			switch {
			case strings.Contains(l, "partition resumes past the restored state"):
				t.Errorf("%s: state gap: %s", m.name, l)
			case strings.Contains(l, "level=ERROR"):
				t.Errorf("%s: %s", m.name, l)
			case strings.Contains(l, "batches_abandoned=true"):
				t.Logf("%s: %s", m.name, l)
			}
		}
	}
}

// longestPause returns the longest time between two consecutive scorings
// (scored_at) of one partition's events, and the partition: how long a
// handover or a failover left a partition unscored while its events kept
// coming (the history is produced at a steady rate, a few tens of events
// per partition and second, so the normal gap is tens of milliseconds).
func longestPause(recs []scoreRec) (part int, pause time.Duration) {
	byPart := map[int][]time.Time{}
	for _, r := range recs {
		byPart[r.part] = append(byPart[r.part], r.scoredAt)
	}
	for p, ts := range byPart {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(ts); i++ {
			if d := ts[i].Sub(ts[i-1]); d > pause {
				part, pause = p, d
			}
		}
	}
	return part, pause
}

// TestThreeMembersKill is the second "done when" of issue 16, for the
// state that follows its partitions: three members in one group on a
// 6-partition topic consume a history produced while they run (250
// events/s, with its fraud labels on a labels topic at their own time);
// one of them is killed with SIGKILL mid-stream, and once its partitions
// have moved (its session expired: 6 s) a fresh member joins. At the end
// every event has a score record, and every event's last score record
// equals `streamscore score`'s and its last audit record's feature row
// `streamscore features`' over the same events and labels, bit for bit —
// card and terminal windows, the label-delayed fraud features, the GRU's
// state: the survivors restored the killed member's partitions from their
// checkpoints, Kafka re-delivered what the checkpoints lacked, the fresh
// member restored what the graceful handover stored, and every member
// applied every partition's events and every label to its terminals in
// event-time order.
//
// Two moments of the kill, relative to the victim's checkpoint rounds
// (every --state-interval a round is stored, then the committer's next
// tick, within 200 ms, moves the committed offsets to it):
//   - after a round's commit: the successors restore checkpoints at the
//     committed offsets, and Kafka re-delivers the events after them;
//   - between a round's store and its commit: the newest checkpoint is
//     ahead of the committed offsets, and the successors restore the
//     other slot's, the one at the committed offsets (a partition's
//     checkpoints alternate between two slots). Before that, restoring the
//     newest one made the re-delivered events, already in the state, be
//     scored with features.Builder.Peek: about 20 of 4,300 events' card
//     columns differed.
//
// Measured and logged: the failover time (the kill to the first record of
// the killed member's partitions scored by a survivor) and the restores
// (from the members' logs). The duplicates (events the killed member
// scored after its last committed checkpoint) are asserted to be on its
// partitions only and within about three --state-interval of them.
func TestThreeMembersKill(t *testing.T) {
	// Not parallel: its duplicate bound and the logged failover and
	// restore times are wall-clock figures.
	for _, mode := range terminalModes {
		for _, tc := range []struct {
			name        string
			uncommitted bool
		}{
			{"after a checkpoint's commit", false},
			{"between a checkpoint's store and its commit", true},
		} {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				mprocGate(t)
				threeMembersKill(t, tc.uncommitted, 0, mode.flags...)
			})
		}
	}
}

// threeMembersKill runs the scenario of TestThreeMembersKill and returns
// the failover time. session is the members' --session-timeout on a broker
// that allows it (0: startEngine's 6 s on the default broker).
func threeMembersKill(t *testing.T, uncommitted bool, session time.Duration, modeFlags ...string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	var w *exactWorld
	var flags []string
	if session == 0 {
		w = newExactWorld(t, ctx, mprocPartitions)
		session = 6 * time.Second
	} else {
		w = newExactWorldMinSession(t, ctx, mprocPartitions, time.Second)
		flags = []string{"--session-timeout", session.String()}
	}
	// With fraud labels, about 12 h after their transactions: the members
	// read every label, the label-delayed features of cards and terminals
	// must follow the partitions too.
	txs, labels := mprocLabelledHistory(t, 16, 4000)
	flags = append(flags, "--labels-topic", exactLabels)
	flags = append(flags, modeFlags...)
	const rate = 250

	t0 := time.Now()
	members := []*member{w.startMember("A", flags...), w.startMember("B", flags...), w.startMember("C", flags...)}
	assign := w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("three members settled in %v: %v", time.Since(t0).Round(time.Millisecond), assign)

	f := w.feedLabelled(txs, labels, rate)
	t.Logf("%d events and %d labels to feed", len(txs), len(labels))
	f.waitSent(t, len(txs)/4)
	victim := members[1]
	_, lost, _ := victim.generation()
	committed := func() map[int]int64 {
		c, err := local.CommittedOffsets(ctx, w.brokers, exactGroup, exactTxTopic)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The kill lands right after the victim stored a checkpoint round:
	// at once (uncommitted: most often before its offsets are committed —
	// the committer's next tick, once the round's events are acked), or
	// once the committed offsets of its partitions have moved to the
	// round's and stayed there 400 ms (acks flow all the time: committed
	// offsets that stop moving have reached the round's cap), before the
	// next round.
	stored := func() int { return strings.Count(victim.p.stderr.String(), ckptStoredLine) }
	for try := 0; ; try++ {
		if try == 20 {
			t.Fatal("no checkpoint round of the victim was committed and held for 400 ms before the next one, 20 times")
		}
		before := committed()
		n := stored()
		poll1ms(t, 10*time.Second*timeScale, "the victim to store a checkpoint round", func() bool {
			victim.p.alive()
			return stored() > n
		})
		if uncommitted {
			break
		}
		n = stored()
		last, since := before, time.Now()
		held := false
		for stored() == n && time.Since(since) < 2*time.Second {
			c := committed()
			if slices.ContainsFunc(lost, func(p int) bool { return c[p] != last[p] }) {
				last, since = c, time.Now()
			} else if !slices.ContainsFunc(lost, func(p int) bool { return c[p] == before[p] }) && time.Since(since) >= 400*time.Millisecond {
				held = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if held && stored() == n {
			t.Logf("killing B with its partitions committed at %v", last)
			break
		}
	}
	kill := time.Now()
	victim.p.signal(syscall.SIGKILL)
	if err := victim.p.wait(10 * time.Second); err == nil {
		t.Fatal("the killed member exited cleanly")
	}
	victim.stopped = true
	t.Logf("killed B (partitions %v) after %d events", lost, f.sent.Load())

	// Its partitions move to the survivors once its session has expired.
	assign = w.waitBalanced(members, 60*time.Second*timeScale)
	moved := time.Since(kill)
	t.Logf("survivors own every partition %v after the kill: %v", moved.Round(time.Millisecond), assign)

	f.waitSent(t, 3*len(txs)/4)
	fresh := w.startMember("D", flags...)
	members = append(members, fresh)
	joined := time.Now()
	assign = w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("fresh member D joined: settled in %v: %v", time.Since(joined).Round(time.Millisecond), assign)

	f.wait(t)
	w.waitAllCommitted(members, 90*time.Second*timeScale)
	t.Logf("%d events produced and committed %v after the first member started", w.n, time.Since(t0).Round(time.Millisecond))
	live := []*member{members[0], members[2], fresh}
	w.exposure(live...)
	w.stopMembers(live...)

	res := w.mprocCompare()
	w.assertExact(res)
	checkMemberLogs(t, members...)
	failover, ok := resumedAfter(res.scores, lost, kill)
	if ok {
		t.Logf("failover: the killed member's partitions %v scored again %v after the kill (group moved them after %v; session timeout %v)",
			lost, failover.Round(time.Millisecond), moved.Round(time.Millisecond), session)
	} else {
		t.Errorf("the killed member's partitions %v were not scored after the kill", lost)
	}
	if p, d := longestPause(res.scores); d > 0 {
		t.Logf("longest pause in a partition's scoring: %v (partition %d)", d.Round(time.Millisecond), p)
	}
	longest, ahead := logRestores(t, kill, live...)
	t.Logf("longest partition restore after the kill: %v; restored checkpoints ahead of the committed offset (killed between a checkpoint's store and its commit): %d",
		longest, ahead)
	if uncommitted && ahead == 0 {
		t.Logf("the kill came after the commit: this run did not reproduce a checkpoint ahead of the committed offset")
	}

	// The duplicates: the events the killed member scored after the
	// offsets its last checkpoint committed. Bound: one --state-interval
	// (1 s) of its partitions' events, plus the checkpoint's store and
	// commit.
	perPartSec := float64(rate) / mprocPartitions
	bound := int(perPartSec * float64(len(lost)) * 1.5)
	dups, outside := 0, 0
	for p, offs := range res.dupParts {
		dups += len(offs)
		if !slices.Contains(lost, p) {
			outside += len(offs)
		}
	}
	t.Logf("duplicated events: %d (%d outside the killed member's partitions %v); bound about %d (1 s of %d partitions at %.0f events/s each, plus half a second for the store and commit)",
		dups, outside, lost, bound, len(lost), perPartSec)
	// Graceful handovers (the fresh member's join) re-score nothing; the
	// killed member's partitions re-score what followed their last
	// committed checkpoint: asserted with room for a slow checkpoint
	// store under load (3 intervals). (With the repartition mode the
	// other partitions' events waiting for their terminal columns at the
	// rebalance were not scored yet: dropped, fetched again, no
	// duplicate either.)
	if outside > 0 {
		t.Errorf("%d duplicated events on partitions the killed member did not own: %s", outside, dupSummary(res.dupParts))
	}
	if dups > 2*bound {
		t.Errorf("%d duplicated events, more than 3 state intervals of the killed member's partitions (%d): %s", dups, 2*bound, dupSummary(res.dupParts))
	}
	return failover
}

// failoverEnv turns on TestFailoverTime, a measurement (about 90 s).
const failoverEnv = "STREAMSCORE_FAILOVER"

// TestFailoverTime measures how long a killed member's partitions stay
// unscored as a function of the group session timeout: the scenario of
// TestThreeMembersKill (kill after a checkpoint's commit, with its
// assertions) with --session-timeout 2 s, 6 s and 10 s, on a broker that
// allows 1 s (group.min.session.timeout.ms; Kafka's default is 6 s).
func TestFailoverTime(t *testing.T) {
	if os.Getenv(failoverEnv) != "1" {
		t.Skipf("a failover measurement of about 90 s; run it with %s=1 go test ./cmd/streamscore -run TestFailoverTime -v", failoverEnv)
	}
	var rows []string
	for _, session := range []time.Duration{2 * time.Second, 6 * time.Second, 10 * time.Second} {
		t.Run(session.String(), func(t *testing.T) {
			d := threeMembersKill(t, false, session)
			rows = append(rows, fmt.Sprintf("session %v: failover %v", session, d.Round(10*time.Millisecond)))
		})
	}
	t.Logf("kill -9 to the killed member's partitions scored again: %s", strings.Join(rows, "; "))
}

// newExactWorldMinSession is newExactWorld on a broker whose group minimum
// session timeout is minSession (kfake's default, like Kafka's, is 6 s).
func newExactWorldMinSession(t *testing.T, ctx context.Context, partitions int, minSession time.Duration) *exactWorld {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(minSession),
		kfake.BrokerConfigs(map[string]string{"log.segment.bytes": fmt.Sprint(8 << 20)}),
		kfake.SeedTopics(int32(partitions), exactTxTopic), kfake.SeedTopics(1, exactSideTopics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	brokers := c.ListenAddrs()
	tr := &kafka.Transport{}
	kw := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: exactTxTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll, Transport: tr}
	t.Cleanup(func() { kw.Close(); tr.CloseIdleConnections() })
	return &exactWorld{t: t, ctx: ctx, brokers: brokers, dir: dir, events: f, bw: bufio.NewWriter(f), w: kw}
}

// TestRollingRestart is the third "done when" of issue 16: three members
// consume a history produced while they run, and each is restarted in
// turn — SIGTERM, wait for its exit, start its replacement, and go on to
// the next only once the replacement is ready (its partitions restored
// from their checkpoints and /readyz 200) and another fifth of the history
// has been produced. A graceful handover checkpoints
// and commits each revoked partition after its drain, so nothing is
// scored twice: no event is missing, none has two score records, and the
// card columns of every event equal `streamscore features` bit for bit.
func TestRollingRestart(t *testing.T) {
	t.Parallel() // subprocesses and a broker of its own: overlaps with the other long ones
	for _, mode := range terminalModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			mprocGate(t)
			rollingRestart(t, mode.flags...)
		})
	}
}

func rollingRestart(t *testing.T, flags ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, mprocPartitions)
	txs := mprocHistory(t, 17, 4000)
	const rate = 200

	t0 := time.Now()
	members := []*member{w.startMember("A", flags...), w.startMember("B", flags...), w.startMember("C", flags...)}
	assign := w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("three members settled in %v: %v", time.Since(t0).Round(time.Millisecond), assign)

	f := w.feed(txs, rate)
	for i := range 3 {
		f.waitSent(t, (i+1)*len(txs)/5) // the next restart once a fifth more of the history is in
		old := members[i]
		t1 := time.Now()
		w.stopMembers(old)
		stopped := time.Since(t1)
		repl := w.startMember(old.name+"'", flags...)
		members = append(members, repl)
		poll(t, 60*time.Second*timeScale, repl.name+" to restore its partitions and be ready", func() bool {
			repl.p.alive()
			return restoredAllRe.MatchString(repl.p.stderr.String()) && repl.isReady(ctx)
		})
		_, parts, _ := repl.generation()
		t.Logf("%s stopped in %v; %s ready with partitions %v %v after the SIGTERM (%d events produced)",
			old.name, stopped.Round(time.Millisecond), repl.name, parts, time.Since(t1).Round(time.Millisecond), f.sent.Load())
	}
	f.wait(t)
	live := members[3:]
	w.waitAllCommitted(live, 90*time.Second*timeScale)
	t.Logf("%d events produced and committed %v after the first member started", w.n, time.Since(t0).Round(time.Millisecond))
	w.exposure(live...)
	w.stopMembers(live...)

	res := w.mprocCompare()
	w.assertExact(res)
	checkMemberLogs(t, members...)
	logRestores(t, t0, live...)
	if p, d := longestPause(res.scores); d > 0 {
		t.Logf("longest pause in a partition's scoring during the rolling restart: %v (partition %d)", d.Round(time.Millisecond), p)
	}
	// Graceful handovers re-score nothing, in both modes (with the
	// repartition mode the events still waiting for their terminal columns
	// at a handover were not scored: dropped, and fetched again by the
	// partition's next owner).
	if res.Scores.Duplicates != 0 {
		t.Errorf("%d duplicate score records after a rolling restart (graceful handovers): %s", res.Scores.Duplicates, dupSummary(res.dupParts))
	}
}

// TestRebalance2to3to1 is the fourth "done when" of issue 16: two members
// consume a history produced while they run, a third joins, then two of
// the three stop at once (SIGTERM) and the last one consumes the rest. No
// state is lost on the way: every event has a score record and the card
// columns of every event equal `streamscore features` bit for bit. The
// same run without checkpoints (--checkpoint-store none: a partition's
// new owner starts its cards empty) is the control: its card columns must
// differ, or the comparison does not see the state move.
func TestRebalance2to3to1(t *testing.T) {
	t.Parallel() // subprocesses and a broker of its own: overlaps with the other long ones
	for _, tc := range []struct {
		name    string
		control bool
		flags   []string
	}{
		{"checkpoints", false, nil},
		{"checkpoints, repartition", false, terminalModes[1].flags},
		{"no checkpoints (control)", true, []string{"--checkpoint-store", "none", "--state-interval", "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mprocGate(t)
			res := rebalance2to3to1(t, tc.flags)
			if !tc.control {
				res.w.assertExact(res.mprocResult)
				return
			}
			if res.Scores.Missing != 0 || res.Dead != 0 {
				t.Errorf("control: %d events without a score record, %d dead letters", res.Scores.Missing, res.Dead)
			}
			if res.Card.Mismatches == 0 {
				t.Errorf("control: without checkpoints no event's card columns differ: the test does not see the state move")
			}
		})
	}
}

type rebalanceResult struct {
	mprocResult
	w *exactWorld
}

func rebalance2to3to1(t *testing.T, flags []string) rebalanceResult {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	t.Cleanup(cancel)
	w := newExactWorld(t, ctx, mprocPartitions)
	txs := mprocHistory(t, 18, 4000)
	const rate = 300

	t0 := time.Now()
	members := []*member{w.startMember("A", flags...), w.startMember("B", flags...)}
	assign := w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("two members settled in %v: %v", time.Since(t0).Round(time.Millisecond), assign)

	f := w.feed(txs, rate)
	f.waitSent(t, len(txs)/3)
	members = append(members, w.startMember("C", flags...))
	t1 := time.Now()
	assign = w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("C joined after %d events: settled in %v: %v", f.sent.Load(), time.Since(t1).Round(time.Millisecond), assign)

	f.waitSent(t, 2*len(txs)/3)
	t2 := time.Now()
	w.stopMembers(members[0], members[1])
	assign = w.waitBalanced(members, 60*time.Second*timeScale)
	t.Logf("A and B stopped after %d events: C alone %v after the SIGTERMs: %v", f.sent.Load(), time.Since(t2).Round(time.Millisecond), assign)

	f.wait(t)
	w.waitAllCommitted(members, 90*time.Second*timeScale)
	t.Logf("%d events produced and committed %v after the first member started", w.n, time.Since(t0).Round(time.Millisecond))
	w.exposure(members[2])
	w.stopMembers(members[2])

	res := w.mprocCompare()
	checkMemberLogs(t, members...)
	logRestores(t, t0, members...)
	if p, d := longestPause(res.scores); d > 0 {
		t.Logf("longest pause in a partition's scoring: %v (partition %d)", d.Round(time.Millisecond), p)
	}
	t.Logf("duplicate score records: %d (%s)", res.Scores.Duplicates, dupSummary(res.dupParts))
	return rebalanceResult{res, w}
}

// TestBacklogThreeMembers is the first "done when" of issue 16 with three
// processes: two weeks of events (6,000) are in the 6-partition topic
// before three members start in one group; they catch up in parallel,
// each reading the partitions the others claim as shared-state replicas,
// and every event's record equals `score`'s and `features`' bit for bit.
func TestBacklogThreeMembers(t *testing.T) {
	for _, mode := range terminalModes {
		t.Run(mode.name, func(t *testing.T) {
			mprocGate(t)
			backlogThreeMembers(t, mode.flags)
		})
	}
}

// terminalModes are the two places terminal state is kept with several
// members (--terminal-stage): the multi-process tests run in both.
var terminalModes = []struct {
	name  string
	flags []string
}{
	{"replicas", nil},
	{"repartition", []string{"--terminal-stage", "repartition", "--repartition-partitions", "4"}},
}

func backlogThreeMembers(t *testing.T, flags []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, mprocPartitions)
	txs := mprocHistorySpan(t, 19, 6000, 14*24*time.Hour)
	if err := w.produceErr("k", txs); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	members := []*member{w.startMember("A", flags...), w.startMember("B", flags...), w.startMember("C", flags...)}
	w.waitAllCommitted(members, 120*time.Second*timeScale)
	t.Logf("%d events of two weeks caught up by three members in %v", w.n, time.Since(t0).Round(time.Millisecond))
	w.exposure(members...)
	w.stopMembers(members...)
	res := w.mprocCompare()
	w.assertExact(res)
	checkMemberLogs(t, members...)
}
