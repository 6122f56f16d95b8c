package stream_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// history returns n-ish generated events over the 10 days before now and
// their Kafka messages (key = card).
func history(t *testing.T, seed int64, n int) (events []features.Event, msgs []kafka.Message, start, end time.Time) {
	t.Helper()
	g, err := synth.New(synth.Config{Seed: seed, Cards: 400, Terminals: 40, FraudRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	end = time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	start = end.Add(-10 * 24 * time.Hour)
	if err := g.Simulate(start, end, float64(n)/end.Sub(start).Seconds(), func(tx synth.Tx) error {
		events = append(events, tx.Event)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return events, msgs, start, end
}

// TestSnapshotRestartMatchesReplay stops a pipeline part-way through a
// history (it writes its state to the state directory), restarts a new one
// on the same directory and group for the rest, and requires every record
// of both runs to equal, bit for bit, a Replay of the whole history that
// never stopped — windows, terminal state and the GRU/CNN/LSTM card states
// included. A cold replay of the second half alone must differ: the
// restored state is what makes the records right.
//
// In the crash variant the first run writes a snapshot every 2 s; once one
// holds the first half, it scores a third of the rest and is aborted (no
// snapshot at shutdown), normally before the next snapshot. Its commits
// must not pass the current snapshot, so the second run gets every event
// the restored state lacks again and applies it: nothing is skipped, and
// the events scored by both runs have equal records.
func TestSnapshotRestartMatchesReplay(t *testing.T) {
	t.Run("shutdown", func(t *testing.T) { snapshotRestart(t, false) })
	t.Run("crash", func(t *testing.T) { snapshotRestart(t, true) })
}

func snapshotRestart(t *testing.T, crash bool) {
	ms := shippedModels(t)
	for i, fam := range []string{models.FamilyGRU, models.FamilyCNN, models.FamilyLSTM} {
		ms = append(ms, seqModel(t, fam, "seq_"+fam, uint64(i+1)))
	}
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	events, msgs, start, end := history(t, 11, 3000)
	split := len(events) / 2
	dir := t.TempDir()
	opts := []stream.Option{stream.WithDecisionModels(models.ShippedDecisionModel, "seq_gru")}
	start1 := func(crash bool) (*stream.Pipeline, *running, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		o := append(opts, stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false), stream.WithStateDir(dir))
		if crash {
			o = append(o, stream.WithStateInterval(2*time.Second))
		}
		p := newPipeline(t, brokers, "snap", ms, kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}), o...)
		return p, runPipeline(t, p), reg
	}

	produce(t, brokers, txTopic, msgs[:split]...)
	p1, r1, reg1 := start1(crash)
	waitScored(t, p1, split)
	var man manifest
	committed, produced := int64(split), split
	if !crash {
		if err := r1.stop(t); err != nil {
			t.Fatal(err)
		}
		readManifest(t, dir, &man)
		if man.Reason != "shutdown" || man.Applied["0"] != int64(split-1) {
			t.Fatalf("manifest %+v, want reason shutdown, partition 0 applied to offset %d", man, split-1)
		}
	} else {
		waitFor(t, waitBudget, "a snapshot of the first half, committed", func() bool {
			man = manifest{}
			return tryManifest(dir, &man) && man.Applied["0"] == int64(split-1) &&
				committedOffset(t, brokers, "snap") == int64(split)
		})
		third := split + (len(events)-split)/3
		produce(t, brokers, txTopic, msgs[split:third]...)
		produced = third
		waitScored(t, p1, third)
		time.Sleep(300 * time.Millisecond) // a commit interval and more: the committer runs
		p1.Abort()
		if err := r1.wait(t); err != stream.ErrAborted {
			t.Fatalf("Run after Abort: %v, want ErrAborted", err)
		}
		man = manifest{}
		readManifest(t, dir, &man)
		committed = committedOffset(t, brokers, "snap")
		if man.Reason != "interval" || committed > man.Applied["0"]+1 || committed < int64(split) {
			t.Fatalf("after the crash: committed offset %d, snapshot %+v: want the commit at most one past the snapshot's applied offset, and at least %d", committed, man, split)
		}
		if held := metricValue(t, reg1, "streamscore_stream_commit_held_offsets", "partition", "0"); held != float64(int64(third)-committed) {
			t.Errorf("commit held back by %v offsets at the abort, want %d (scored %d, committed %d)", held, int64(third)-committed, third, committed)
		}
		if man.Applied["0"] == int64(third-1) {
			t.Logf("a snapshot was written after the last event before the abort: nothing to re-apply (slow machine)")
		}
	}
	if v := metricValue(t, reg1, "streamscore_stream_state_restores_total", "outcome", "none"); v != 1 {
		t.Errorf("first run: restores{none} = %v, want 1", v)
	}
	if v := metricValue(t, reg1, "streamscore_stream_state_snapshots_total", "outcome", "ok"); v < 1 || (!crash && v != 1) {
		t.Errorf("first run: snapshots{ok} = %v, want 1 (at least 1 with an interval)", v)
	}

	produce(t, brokers, txTopic, msgs[produced:]...)
	// The second run gets every event from the committed offset: those at
	// or below the snapshot's applied offset are scored against the
	// restored state (re-delivered), the rest are applied.
	p2, r2, reg2 := start1(false)
	waitScored(t, p2, len(events)-int(committed))
	if err := r2.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, reg2, "streamscore_stream_state_restores_total", "outcome", "ok"); v != 1 {
		t.Errorf("second run: restores{ok} = %v, want 1", v)
	}
	if got, want := p2.Stats().Consumed.Load(), int64(len(events))-committed; got != want {
		t.Errorf("second run consumed %d, want %d (from the committed offset %d)", got, want, committed)
	}
	if v, want := metricValue(t, reg2, "streamscore_stream_events_redelivered_total"), float64(man.Applied["0"]+1-committed); v != want {
		t.Errorf("second run: %v events re-delivered, want %v (between the committed and the snapshot's offsets)", v, want)
	}
	if v := metricValue(t, reg2, "streamscore_stream_state_offsets_skipped_total"); v != 0 {
		t.Errorf("second run: %v offsets skipped, want 0", v)
	}

	streamed := map[string]scoreJSON{}
	dups := 0
	for _, m := range readAll(t, brokers, scoresTopic) {
		var r scoreJSON
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if prev, ok := streamed[r.TxID]; ok {
			dups++
			if !reflect.DeepEqual(prev, r) {
				t.Fatalf("tx %s scored twice with different records: %+v, then %+v", r.TxID, prev, r)
			}
		}
		streamed[r.TxID] = r
	}
	if want := int(p2.Stats().Consumed.Load()) - (len(events) - produced); dups != want {
		t.Errorf("%d events scored by both runs, want %d", dups, want)
	}
	t.Logf("%d events scored by both runs, with equal records", dups)
	compareReplay(t, events, ms, start, end, streamed, opts)

	// The control: the second half scored from empty state.
	differ, n := 0, 0
	splitAt := events[split].TS
	err := stream.Replay(events[split:], nil, ms, splitAt, end.Add(time.Millisecond), func(rec *output.ScoreRecord) error {
		var got scoreJSON
		if err := json.Unmarshal(rec.AppendJSON(nil), &got); err != nil {
			return err
		}
		n++
		want := streamed[got.TxID]
		for name, v := range want.Scores {
			if got.Scores[name] != v {
				differ++
				break
			}
		}
		return nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if differ < n/2 {
		t.Fatalf("a cold replay of the second half differs from the restarted stream on %d of %d events: the restored state does not matter to this test", differ, n)
	}
	t.Logf("cold replay of the second half differs on %d of %d events", differ, n)
}

// committedOffset returns group's committed offset of txTopic partition 0
// (-1 when none).
func committedOffset(t *testing.T, brokers []string, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	got, err := local.CommittedOffsets(ctx, brokers, group, txTopic)
	if err != nil {
		t.Fatal(err)
	}
	if off, ok := got[0]; ok {
		return off
	}
	return -1
}

// manifest is the part of a snapshot's manifest.json the tests read.
type manifest struct {
	LabelsNext  map[string]int64   `json:"labels_next"`
	LabelsAhead map[string][]int64 `json:"labels_ahead"`
	Reason      string             `json:"reason"`
	Workers     int                `json:"workers"`
	Applied     map[string]int64   `json:"applied"`
	Cards       map[string]int     `json:"cards"`
}

// currentSnapshot returns the directory of dir's current snapshot.
func currentSnapshot(t *testing.T, dir string) string {
	t.Helper()
	cur, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := strings.Cut(strings.TrimSpace(string(cur)), " ")
	return filepath.Join(dir, name)
}

func readManifest(t *testing.T, dir string, m *manifest) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(currentSnapshot(t, dir), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

// tryManifest reads the current manifest of dir if there is one.
func tryManifest(dir string, m *manifest) bool {
	cur, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if err != nil {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimSpace(string(cur)), " ")
	b, err := os.ReadFile(filepath.Join(dir, name, "manifest.json"))
	return err == nil && json.Unmarshal(b, m) == nil
}

// TestSnapshotPartitionsAndRefusals runs four partitions on two workers:
// a restored snapshot puts every partition's applied offset back with the
// worker that owns it (a new group re-delivers everything, and every event
// is scored without being applied again); events committed after the
// snapshot by a run without it are counted as skipped; a snapshot that
// does not fit (an older format, a corrupt file) is refused, kept aside,
// and the run starts empty. State is per partition: another worker count
// restores it.
func TestSnapshotPartitionsAndRefusals(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 4, scoresTopic: 1})
	ms := shippedModels(t)
	dir := t.TempDir()
	g, err := synth.New(synth.Config{Seed: 5, Cards: 200, Terminals: 30})
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, brokers, txTopic)
	start := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	const n1, n2, n3 = 600, 150, 50
	type result struct {
		reg  prometheus.Gatherer
		logs string
	}
	run := func(group string, workers, n int, stateDir string) result {
		reg := prometheus.NewRegistry()
		var logs syncBuffer
		o := []stream.Option{stream.WithWorkers(workers), stream.WithRegisterer(reg), stream.WithAudit(false),
			stream.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}
		if stateDir != "" {
			o = append(o, stream.WithStateDir(stateDir))
		}
		p := newPipeline(t, brokers, group, ms, kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}), o...)
		r := runPipeline(t, p)
		waitHandled(t, p, n)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		return result{reg, logs.String()}
	}

	produceSynth(t, w, g, "a", start, n1)
	run("g1", 2, n1, dir)
	var man manifest
	readManifest(t, dir, &man)
	total := int64(0)
	for _, off := range man.Applied {
		total += off + 1
	}
	if man.Workers != 2 || len(man.Applied) != 4 || total != n1 {
		t.Fatalf("manifest: %d workers, applied %v (%d events); want 2 workers, 4 partitions, %d events", man.Workers, man.Applied, total, n1)
	}

	// A new group starts at offset 0: everything is re-delivered, and the
	// restored offsets say it is all in the state already.
	res := run("g2", 2, n1, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_events_redelivered_total"); v != n1 {
		t.Errorf("new group on the restored state: %v events redelivered, want all %d", v, n1)
	}

	// g1 moves on without the state directory; the snapshot then lacks n2
	// committed events.
	produceSynth(t, w, g, "b", start.Add(time.Hour), n2)
	run("g1", 2, n2, "")
	produceSynth(t, w, g, "c", start.Add(2*time.Hour), n3)
	res = run("g1", 2, n3, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_state_offsets_skipped_total"); v != n2 {
		t.Errorf("restored past a gap: %v offsets skipped, want %d", v, n2)
	}
	if !strings.Contains(res.logs, "partition resumes past the restored state") {
		t.Errorf("no log line about the skipped offsets:\n%s", res.logs)
	}

	// Another worker count: the state is per partition, so it restores.
	res = run("g3", 1, n1+n2+n3, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_state_restores_total", "outcome", "ok"); v != 1 {
		t.Errorf("1 worker on a 2-worker snapshot: restores{ok} = %v, want 1", v)
	}
	if v := metricValue(t, res.reg, "streamscore_stream_events_redelivered_total"); v != n1+n2+n3 {
		t.Errorf("1 worker on a 2-worker snapshot: %v events redelivered, want all %d", v, n1+n2+n3)
	}

	// A snapshot of format 1 (state per worker, before per-partition
	// state): refused, saying why, kept aside, started empty.
	refused := filepath.Base(currentSnapshot(t, dir))
	manPath := filepath.Join(currentSnapshot(t, dir), "manifest.json")
	mb, err := os.ReadFile(manPath)
	if err != nil {
		t.Fatal(err)
	}
	mb = bytes.Replace(mb, []byte(`"format": 2`), []byte(`"format": 1`), 1)
	if err := os.WriteFile(manPath, mb, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(mb)
	if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte(refused+" "+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = run("g3b", 2, n1+n2+n3, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_state_restores_total", "outcome", "failed"); v != 1 {
		t.Errorf("format-1 snapshot: restores{failed} = %v, want 1", v)
	}
	if v := metricValue(t, res.reg, "streamscore_stream_events_redelivered_total"); v != 0 {
		t.Errorf("refused snapshot: %v events redelivered, want 0 (empty state)", v)
	}
	if !strings.Contains(res.logs, "snapshot format 1, this build reads 2 (format 1 kept card state per worker") {
		t.Errorf("refusal does not say why:\n%s", res.logs)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused-"+refused, "manifest.json")); err != nil {
		t.Errorf("refused snapshot not kept aside: %v", err)
	}

	// A corrupt file (the snapshot just written, one byte
	// flipped): refused on its SHA-256 or its own checks.
	cards := filepath.Join(currentSnapshot(t, dir), "part-0.cards")
	b, err := os.ReadFile(cards)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(cards, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res = run("g4", 1, n1+n2+n3, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_state_restores_total", "outcome", "failed"); v != 1 {
		t.Errorf("corrupt snapshot: restores{failed} = %v, want 1", v)
	}
	if !strings.Contains(res.logs, "part-0.cards") {
		t.Errorf("refusal of the corrupt snapshot does not name the file:\n%s", res.logs)
	}
}

// TestSnapshotCoversDeadLetters: a dead-lettered message changes no state,
// but the snapshot covers its offset, so a restart after it reports no gap.
func TestSnapshotCoversDeadLetters(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1, deadTopic: 1})
	ms := shippedModels(t)
	dir := t.TempDir()
	_, msgs, _, _ := history(t, 3, 40)
	bad := kafka.Message{Key: []byte("c"), Value: []byte(`{"tx_id":"broken"`)}
	run := func(n int) prometheus.Gatherer {
		reg := prometheus.NewRegistry()
		p := newPipeline(t, brokers, "dead", ms, kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic, output.KindDeadLetter: deadTopic}),
			stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false), stream.WithStateDir(dir))
		r := runPipeline(t, p)
		waitHandled(t, p, n)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		return reg
	}
	produce(t, brokers, txTopic, append(slices.Clone(msgs[:10]), bad, bad)...)
	run(12)
	var man manifest
	readManifest(t, dir, &man)
	if man.Applied["0"] != 11 {
		t.Fatalf("snapshot applied offset %d, want 11 (the last dead letter's)", man.Applied["0"])
	}
	produce(t, brokers, txTopic, msgs[10:15]...)
	reg := run(5)
	if v := metricValue(t, reg, "streamscore_stream_state_offsets_skipped_total"); v != 0 {
		t.Errorf("restart after dead letters: %v offsets skipped, want 0", v)
	}
}

// syncBuffer is a bytes.Buffer safe for the pipeline's goroutines to log
// into while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gateSink holds every write until open is closed, then fails it: a sink
// that breaks for good.
type gateSink struct{ open chan struct{} }

func (gateSink) Name() string { return "gate" }
func (g gateSink) WriteBatch(ctx context.Context, _ []output.Message) error {
	select {
	case <-g.open:
		return errors.New("sink refused the batch for good")
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (gateSink) Close() error { return nil }

// TestSnapshotNotAfterTornStop: a sink failure stops the pipeline hard
// while a worker holds an open batch (its events are in the windows, but
// the GRU has not stepped for them): no shutdown snapshot is written, since
// it would not match its offsets, and an earlier snapshot stays current.
func TestSnapshotNotAfterTornStop(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1})
	dir := t.TempDir()
	// A current snapshot from an earlier run with nothing to score.
	p0 := newPipeline(t, brokers, "torn", shippedModels(t), gateSink{open: make(chan struct{})},
		stream.WithRegisterer(prometheus.NewRegistry()), stream.WithStateDir(dir), stream.WithWorkers(1))
	if err := runPipeline(t, p0).stop(t); err != nil {
		t.Fatal(err)
	}
	before := currentSnapshot(t, dir)

	start := time.Now().Add(-time.Hour)
	var msgs []kafka.Message
	for i := range 25 {
		msgs = append(msgs, txEvent(fmt.Sprintf("t-%d", i), "card-1", start.Add(time.Duration(i)*time.Second)))
	}
	produce(t, brokers, txTopic, msgs...)
	gate := gateSink{open: make(chan struct{})}
	var logs syncBuffer
	p := newPipeline(t, brokers, "torn", shippedModels(t), gate,
		stream.WithRegisterer(prometheus.NewRegistry()), stream.WithStateDir(dir), stream.WithWorkers(1),
		stream.WithMaxBatch(10), stream.WithMaxDelay(time.Minute), stream.WithHoldBatches(true), stream.WithInFlight(2),
		stream.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	r := runPipeline(t, p)
	// Two batches of 10 held at the gate by the two senders, the last 5
	// events in the open third batch (the pool has in-flight + 1).
	waitFor(t, waitBudget, "25 events consumed", func() bool { return p.Stats().Consumed.Load() == 25 })
	time.Sleep(300 * time.Millisecond) // for the worker to take them from its queue
	close(gate.open)
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "for good") {
		t.Fatalf("Run: %v, want the sink's error", err)
	}
	if got := currentSnapshot(t, dir); got != before {
		t.Errorf("current snapshot %s after a torn stop, want the earlier %s", got, before)
	}
	if !strings.Contains(logs.String(), "no state snapshot at shutdown") {
		t.Errorf("no log line about the skipped snapshot:\n%s", logs.String())
	}
}

// TestSnapshotLabelOffsets: a restored pipeline resumes every labels
// partition where the snapshot left it instead of applying every label
// again; labels produced after the snapshot are applied.
func TestSnapshotLabelOffsets(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, labelsTopic: 3, deadTopic: 1})
	ts := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	labels := func(from, n int) []kafka.Message {
		var msgs []kafka.Message
		for i := from; i < from+n; i++ {
			v := fmt.Sprintf(`{"tx_id":"t-%d","card_id":"c-%d","terminal_id":"m-%d","ts":"%s","fraud":true}`, i, i, i%4, ts)
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(v)})
		}
		return msgs
	}
	dir := t.TempDir()
	const name = "streamscore_stream_labels_total"
	run := func(want float64) *manifest {
		reg := prometheus.NewRegistry()
		p := newPipeline(t, brokers, "labels-snap", shippedModels(t), kafkaSink(t, brokers, map[output.Kind]string{output.KindDeadLetter: deadTopic}),
			stream.WithRegisterer(reg), stream.WithLabelsTopic(labelsTopic), stream.WithStateDir(dir))
		r := runPipeline(t, p)
		waitFor(t, waitBudget, fmt.Sprintf("%v labels applied", want), func() bool {
			v, _ := seriesValue(t, reg, name, "outcome", "applied")
			return v >= want
		})
		time.Sleep(200 * time.Millisecond) // room for labels that should not come
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		if v := metricValue(t, reg, name, "outcome", "applied"); v != want {
			t.Fatalf("%v labels applied, want %v", v, want)
		}
		var m manifest
		readManifest(t, dir, &m)
		return &m
	}
	produce(t, brokers, labelsTopic, labels(0, 30)...)
	m := run(30)
	total := int64(0)
	for _, next := range m.LabelsNext {
		total += next
	}
	if len(m.LabelsNext) != 3 || total != 30 {
		t.Fatalf("labels_next %v, want 3 partitions summing to 30", m.LabelsNext)
	}
	produce(t, brokers, labelsTopic, labels(30, 6)...)
	m = run(6)
	total = 0
	for _, next := range m.LabelsNext {
		total += next
	}
	if total != 36 {
		t.Fatalf("labels_next %v after the restart, want a sum of 36", m.LabelsNext)
	}
}

// TestSnapshotTampered: a snapshot whose manifest was edited (CURRENT
// holds its SHA-256), or whose directory is gone, is refused and the run
// starts empty; an empty directory, a snapshot written later, works again.
func TestSnapshotTampered(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1})
	dir := t.TempDir()
	run := func(want string) string {
		reg := prometheus.NewRegistry()
		var logs syncBuffer
		p := newPipeline(t, brokers, "tamper", shippedModels(t), gateSink{open: make(chan struct{})},
			stream.WithRegisterer(reg), stream.WithStateDir(dir), stream.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		if err := runPipeline(t, p).stop(t); err != nil {
			t.Fatal(err)
		}
		if v := metricValue(t, reg, "streamscore_stream_state_restores_total", "outcome", want); v != 1 {
			t.Errorf("restores{%s} = %v, want 1\n%s", want, v, logs.String())
		}
		return logs.String()
	}
	run("none")
	man := filepath.Join(currentSnapshot(t, dir), "manifest.json")
	b, err := os.ReadFile(man)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(`"applied": {}`), []byte(`"applied": {"50000000": 7}`), 1)
	if err := os.WriteFile(man, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if logs := run("failed"); !strings.Contains(logs, "manifest.json: SHA-256") {
		t.Errorf("refusal of an edited manifest does not say so:\n%s", logs)
	}
	run("ok") // the snapshot written at the refused run's shutdown
	if err := os.RemoveAll(currentSnapshot(t, dir)); err != nil {
		t.Fatal(err)
	}
	if logs := run("failed"); !strings.Contains(logs, "which has no manifest.json") {
		t.Errorf("refusal of a missing snapshot does not say so:\n%s", logs)
	}
	run("ok")
}

// TestStateDirLocked: two pipelines cannot share a state directory.
func TestStateDirLocked(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1})
	dir := t.TempDir()
	p1 := newPipeline(t, brokers, "lock", shippedModels(t), gateSink{open: make(chan struct{})},
		stream.WithRegisterer(prometheus.NewRegistry()), stream.WithStateDir(dir))
	r1 := runPipeline(t, p1)
	waitFor(t, waitBudget, "the first pipeline to hold the directory", func() bool {
		_, err := os.Stat(filepath.Join(dir, "LOCK"))
		return err == nil
	})
	p2 := newPipeline(t, brokers, "lock", shippedModels(t), gateSink{open: make(chan struct{})},
		stream.WithRegisterer(prometheus.NewRegistry()), stream.WithStateDir(dir))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // bounds Run if the lock fails to hold
	defer cancel()
	if err := p2.Run(ctx); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second pipeline on the same state directory: %v, want in use", err)
	}
	if err := r1.stop(t); err != nil {
		t.Fatal(err)
	}
}
