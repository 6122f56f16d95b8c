package stream_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// healthLog records what the pipeline's readiness hooks heard (the reader
// observer and the sink observer, which `run` turns into /readyz): how
// many failures and recoveries each reported.
type healthLog struct {
	mu         sync.Mutex
	down, up   map[string]int
	firstCause map[string]string
}

func newHealthLog() *healthLog {
	return &healthLog{down: map[string]int{}, up: map[string]int{}, firstCause: map[string]string{}}
}

func (h *healthLog) observe(what string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.up[what]++
		return
	}
	if h.down[what] == 0 {
		h.firstCause[what] = err.Error()
	}
	h.down[what]++
}

func (h *healthLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for what, n := range h.down {
		fmt.Fprintf(&b, "%s: %d failures (first: %.120s), %d recoveries; ", what, n, h.firstCause[what], h.up[what])
	}
	return b.String()
}

// TestBrokerRestart restarts the (one-broker) Kafka cluster while the
// engine works through a backlog: the broker is shut down — every
// connection of the engine (group coordinator, fetches, commits, the Kafka
// sink's produce) closed, its port refusing connections — and started again
// on the same port from its data directory, with its records, committed
// offsets and group sessions, as a real broker restarts from its log
// directory. Two outages:
//
//   - shorter than the session timeout: the member's session survives the
//     restart. kafka-go ends the generation as soon as its heartbeat fails;
//     the drained partitions' offsets are committed once the broker is
//     back, as that generation, on a new connection (the generation's own
//     is dead), and the member joins again: no commit is fenced and no
//     event is scored twice;
//   - longer than it: the coordinator comes back without the member (its
//     session expired while the broker was down): the commit after the
//     drain is fenced by the broker (ILLEGAL_GENERATION), the member joins
//     in a new generation and re-reads from the committed offsets (the
//     events scored since the last commit get a second record, same id).
//
// Either way the engine never stops: the readiness hooks hear the failure
// and the recovery, every input offset ends with a score record (the Kafka
// sink is at least once: duplicates are counted, and carry the same
// streamscore-id), and every offset is committed.
func TestBrokerRestart(t *testing.T) {
	const session = 6 * time.Second // kfake's group.min.session.timeout.ms
	for _, tc := range []struct {
		name     string
		down     time.Duration
		expired  bool
		minFence int
	}{
		{"within the session", 2 * time.Second, false, 0},
		{"session expired", session + 2*time.Second, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := local.StartKafka(map[string]int{txTopic: 4, scoresTopic: 1}, local.WithDataDir(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(k.Close)
			brokers := k.Brokers()
			g, err := synth.New(synth.Config{Seed: 17, Cards: 300, Terminals: 40})
			if err != nil {
				t.Fatal(err)
			}
			const n = 40_000 / timeScale // the race detector slows the engine 4×
			start := time.Now().Add(-12 * time.Hour)
			events := make([]features.Event, 0, n)
			msgs := make([]kafka.Message, 0, n)
			ids := make([]string, 0, n)
			for i := range n {
				tx := g.Next(start.Add(time.Duration(i) * time.Second))
				tx.Event.TxID = fmt.Sprintf("r-%06d", i)
				events, ids = append(events, tx.Event), append(ids, tx.Event.TxID)
				msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
			}
			produce(t, brokers, txTopic, msgs...)

			health := newHealthLog()
			ks, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(output.KindScore, scoresTopic))
			if err != nil {
				t.Fatal(err)
			}
			fan, err := output.NewFanout([]output.Sink{ks}, output.WithFanoutBackoff(10*time.Millisecond, 500*time.Millisecond),
				output.WithFanoutObserver(func(sink string, err error) { health.observe("sink "+sink, err) }))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fan.Close() })
			reg := prometheus.NewRegistry()
			var logs syncBuffer
			group := "restart-" + strings.ReplaceAll(tc.name, " ", "-")
			p := newPipeline(t, brokers, group, shippedModels(t), fan, stream.WithRegisterer(reg),
				stream.WithMaxBatch(64), stream.WithSessionTimeout(session), stream.WithDrainTimeout(30*time.Second),
				stream.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
				stream.WithReaderObserver(func(reader string, err error) { health.observe("reader "+reader, err) }))
			r := runPipeline(t, p)
			waitScored(t, p, 3000) // mid-stream: the restart lands on fetches, produces and commits
			before := p.Stats().Scored.Load()
			t0 := time.Now()
			if err := k.Restart(tc.down); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			waitFor(t, waitBudget, "every offset committed", func() bool { return allCommitted(t, brokers, group, txTopic) })
			caughtUp := time.Since(back)
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}

			// The invariant: every input offset has a score record
			// (its tx_id: one per input message).
			recs := map[string]int{}
			first := map[string]scoreJSON{} // the first record of each event
			for _, m := range readAll(t, brokers, scoresTopic) {
				var rec scoreJSON
				if err := json.Unmarshal(m.Value, &rec); err != nil {
					t.Fatal(err)
				}
				if recs[rec.TxID] == 0 {
					first[rec.TxID] = rec
				}
				recs[rec.TxID]++
			}
			// The first record of every event equals a Replay of the
			// history that never stopped. (A second record, after a
			// fenced commit, is scored against the state as it is then:
			// a consumer keeps the first of each id.)
			differ := 0
			if err := stream.Replay(events, nil, shippedModels(t), start, start.Add(n*time.Second), func(rec *output.ScoreRecord) error {
				var want scoreJSON
				if err := json.Unmarshal(rec.AppendJSON(nil), &want); err != nil {
					return err
				}
				if got, ok := first[want.TxID]; ok && !reflect.DeepEqual(got, want) {
					if differ == 0 {
						t.Logf("first differing event %s: stream %+v, replay %+v", want.TxID, got, want)
					}
					differ++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if differ > 0 {
				t.Errorf("%d of %d events: first score record unlike the replay's", differ, n)
			}
			ends := map[int]int64{}
			committed, err := local.CommittedOffsets(t.Context(), brokers, group, txTopic)
			if err != nil {
				t.Fatal(err)
			}
			missing, dups := 0, 0
			for _, id := range ids {
				switch c := recs[id]; {
				case c == 0:
					missing++
				case c > 1:
					dups += c - 1
				}
				delete(recs, id)
			}
			for part, end := range endOffsets(t, brokers, txTopic) {
				ends[part] = end
				if committed[part] != end {
					t.Errorf("partition %d committed at %d, end %d", part, committed[part], end)
				}
			}
			if missing > 0 || len(recs) > 0 {
				t.Errorf("%d input offsets without a score record, %d records of no input offset", missing, len(recs))
			}
			gens := metricValue(t, reg, "streamscore_stream_source_generations_total")
			fenced := metricValue(t, reg, "streamscore_stream_source_commits_fenced_total")
			redelivered := metricValue(t, reg, "streamscore_stream_events_redelivered_total")
			if tc.expired && gens < 2 {
				t.Errorf("the member's session expired during the restart, yet %v generations", gens)
			}
			if int(fenced) < tc.minFence {
				t.Errorf("%v commits fenced, want at least %d", fenced, tc.minFence)
			}
			if !tc.expired && (fenced > 0 || dups > 0) {
				// kafka-go ends the generation when its heartbeat fails,
				// but the broker kept the member: the commit after the
				// drain goes through on a new connection, as the same
				// generation, and nothing is read twice.
				t.Errorf("the member's session survived the restart, yet %v commits fenced and %d events scored twice", fenced, dups)
			}
			health.mu.Lock()
			sinkDown := health.down["sink kafka"]
			health.mu.Unlock()
			if sinkDown == 0 || health.up["sink kafka"] == 0 {
				t.Errorf("the sink's readiness hook did not hear the broker go down and come back: %s", health)
			}
			// Failing commits are logged at once, then at most every
			// 10 s, and their end is logged. (There may be none: with the
			// sink on the same broker nothing new is acked while it is
			// down, so there may be nothing to commit.)
			out := logs.String()
			warned := strings.Count(out, `msg="commit offsets"`)
			if most := 1 + int(tc.down/(10*time.Second)) + 1; warned > most {
				t.Errorf("%d warnings of failing commits over a %v outage, want at most %d:\n%s", warned, tc.down, most, out)
			}
			if warned > 0 && !strings.Contains(out, `msg="commits succeed again"`) {
				t.Errorf("the recovery of the commits is not logged:\n%s", out)
			}
			if t.Failed() {
				t.Logf("logs:\n%s", out)
			}
			t.Logf("broker down %v (restart took %v) after %d of %d events scored: all committed %v after it came back; "+
				"%d missing, %d duplicate score records, %d first records unlike a replay; %v generations, %v commits fenced, %v events re-delivered; health: %s",
				tc.down, back.Sub(t0).Round(10*time.Millisecond), before, n, caughtUp.Round(10*time.Millisecond),
				missing, dups, differ, gens, fenced, redelivered, health)
		})
	}
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t *testing.T, brokers []string, topic string) map[int]int64 {
	t.Helper()
	ends, err := local.EndOffsets(t.Context(), brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ends
}
