package stream_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
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

// TestSnapshotRestartMatchesReplay stops a pipeline half-way through a
// history (it writes its state to the state directory), restarts a new one
// on the same directory and group for the second half, and requires every
// record of both runs to equal, bit for bit, a Replay of the whole history
// that never stopped — windows, terminal state and the GRU/CNN/LSTM card
// states included. A cold replay of the second half alone must differ: the
// restored state is what makes the records right.
//
// In the crash variant the first run writes snapshots every second and is
// aborted (no snapshot at shutdown) once one holds every event it applied
// and everything is committed; the second run restores that snapshot.
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
	var man manifest
	run := func(n int, crash bool) prometheus.Gatherer {
		reg := prometheus.NewRegistry()
		o := append(opts, stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false), stream.WithStateDir(dir))
		if crash {
			o = append(o, stream.WithStateInterval(time.Second))
		}
		p := newPipeline(t, brokers, "snap", ms, kafkaSink(t, brokers, map[sinks.Kind]string{sinks.KindScore: scoresTopic}), o...)
		r := runPipeline(t, p)
		waitScored(t, p, n)
		if !crash {
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			return reg
		}
		waitFor(t, waitBudget, "everything committed and in a snapshot", func() bool {
			lag, ok := seriesValue(t, reg, "streamscore_stream_commit_lag_events", "partition", "0")
			if !ok || lag != 0 {
				return false
			}
			man = manifest{}
			return tryManifest(dir, &man) && man.Applied["0"] == int64(n-1)
		})
		p.Abort()
		if err := r.wait(t); err != stream.ErrAborted {
			t.Fatalf("Run after Abort: %v, want ErrAborted", err)
		}
		return reg
	}

	produce(t, brokers, txTopic, msgs[:split]...)
	reg1 := run(split, crash)
	if v := metricValue(t, reg1, "streamscore_stream_state_restores_total", "outcome", "none"); v != 1 {
		t.Errorf("first run: restores{none} = %v, want 1", v)
	}
	if v := metricValue(t, reg1, "streamscore_stream_state_snapshots_total", "outcome", "ok"); v < 1 || (!crash && v != 1) {
		t.Errorf("first run: snapshots{ok} = %v, want 1 (at least 1 with an interval)", v)
	}
	man = manifest{}
	readManifest(t, dir, &man)
	reason := map[bool]string{false: "shutdown", true: "interval"}[crash]
	if man.Reason != reason || len(man.Applied) != 1 || man.Applied["0"] != int64(split-1) || man.Cards[0] == 0 {
		t.Fatalf("manifest %+v, want reason %s, partition 0 applied to offset %d, cards", man, reason, split-1)
	}

	produce(t, brokers, txTopic, msgs[split:]...)
	reg2 := run(len(events)-split, false)
	if v := metricValue(t, reg2, "streamscore_stream_state_restores_total", "outcome", "ok"); v != 1 {
		t.Errorf("second run: restores{ok} = %v, want 1", v)
	}
	if v := metricValue(t, reg2, "streamscore_stream_events_redelivered_total"); v != 0 {
		t.Errorf("second run: %v events redelivered, want 0 (the first run committed everything)", v)
	}
	if v := metricValue(t, reg2, "streamscore_stream_state_offsets_skipped_total"); v != 0 {
		t.Errorf("second run: %v offsets skipped, want 0", v)
	}

	streamed := map[string]scoreJSON{}
	for _, m := range readAll(t, brokers, scoresTopic) {
		var r scoreJSON
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		streamed[r.TxID] = r
	}
	compareReplay(t, events, ms, start, end, streamed, opts)

	// The control: the second half scored from empty state.
	differ, n := 0, 0
	splitAt := events[split].TS
	err := stream.Replay(events[split:], nil, ms, splitAt, end.Add(time.Millisecond), func(rec *sinks.ScoreRecord) error {
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

// manifest is the part of a snapshot's manifest.json the tests read.
type manifest struct {
	Reason  string           `json:"reason"`
	Workers int              `json:"workers"`
	Applied map[string]int64 `json:"applied"`
	Cards   []int            `json:"cards"`
}

// currentSnapshot returns the directory of dir's current snapshot.
func currentSnapshot(t *testing.T, dir string) string {
	t.Helper()
	cur, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, strings.TrimSpace(string(cur)))
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
	b, err := os.ReadFile(filepath.Join(dir, strings.TrimSpace(string(cur)), "manifest.json"))
	return err == nil && json.Unmarshal(b, m) == nil
}

// TestSnapshotPartitionsAndRefusals runs four partitions on two workers:
// a restored snapshot puts every partition's applied offset back with the
// worker that owns it (a new group re-delivers everything, and every event
// is scored without being applied again); events committed after the
// snapshot by a run without it are counted as skipped; a snapshot that
// does not fit (another worker count, a corrupt file) is refused, kept
// aside, and the run starts empty.
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
		p := newPipeline(t, brokers, group, ms, kafkaSink(t, brokers, map[sinks.Kind]string{sinks.KindScore: scoresTopic}), o...)
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

	// Another worker count: refused, kept aside, started empty.
	refused := filepath.Base(currentSnapshot(t, dir))
	res = run("g3", 1, n1+n2+n3, dir)
	if v := metricValue(t, res.reg, "streamscore_stream_state_restores_total", "outcome", "failed"); v != 1 {
		t.Errorf("1 worker on a 2-worker snapshot: restores{failed} = %v, want 1", v)
	}
	if v := metricValue(t, res.reg, "streamscore_stream_events_redelivered_total"); v != 0 {
		t.Errorf("refused snapshot: %v events redelivered, want 0 (empty state)", v)
	}
	if !strings.Contains(res.logs, "snapshot written by 2 workers, this pipeline has 1") {
		t.Errorf("refusal does not say why:\n%s", res.logs)
	}
	if _, err := os.Stat(filepath.Join(dir, "refused-"+refused, "manifest.json")); err != nil {
		t.Errorf("refused snapshot not kept aside: %v", err)
	}

	// A corrupt file (the 1-worker snapshot just written, one byte
	// flipped): refused on its SHA-256 or its own checks.
	cards := filepath.Join(currentSnapshot(t, dir), "worker-0.cards")
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
	if !strings.Contains(res.logs, "worker-0.cards") {
		t.Errorf("refusal of the corrupt snapshot does not name the file:\n%s", res.logs)
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
