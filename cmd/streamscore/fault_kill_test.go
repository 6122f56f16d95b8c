//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/local"
)

// killBadEvents are hostile inputs mixed into the kill -9 test's history;
// each must end as a dead letter, never stop the engine.
var killBadEvents = []string{
	"",
	`{"tx_id":"k-1","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":1`,
	`{"tx_id":"k-2","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":-3}`,
	"{\"tx_id\":\"k-3\",\"ts\":\"2026-01-01T00:00:00Z\",\"card_id\":\"c\x00\",\"terminal_id\":\"m\",\"amount\":1}",
	"{\"tx_id\":\"k-4\",\"ts\":\"2026-01-01T00:00:00Z\",\"card_id\":\"\xff\xfe\",\"terminal_id\":\"m\",\"amount\":1}",
	`{"tx_id":"k-5","ts":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"m","amount":1e999}`,
	`{"tx_id":"k-6","ts":"2026-01-01T00:00:00Z","card_id":"c","card_id":"d","terminal_id":"m","amount":1}`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	`{"tx_id":"k-8","ts":"2026-01-01T00:00:00Z","card_id":{"x":1},"terminal_id":"m","amount":1}`,
}

// TestKillLoop kills `streamscore run` with SIGKILL at random moments, over
// and over, while it consumes a history with hostile messages mixed in; a
// last run consumes to the end and stops with SIGTERM. With --state-dir and
// a state interval every input offset must end with a record (a score or a
// dead letter, duplicates allowed: at least once), and the last score record
// of every event must equal what `streamscore score` gives for the same
// events, bit for bit — the state restored after each kill is exactly the
// state the events before it built. Without --state-dir only the first
// holds (the windows restart empty).
//
// One partition: across partitions the shared terminal state is applied in
// the order the workers reach it, which a restart changes.
func TestKillLoop(t *testing.T) {
	t.Parallel() // subprocesses and a broker of its own: overlaps with the other long ones
	if testing.Short() {
		t.Skip("kills subprocesses in a loop; not in -short")
	}
	for _, tc := range []struct {
		name  string
		state bool
		kills int
	}{
		{"with state", true, 5},
		{"without state", false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) { killLoop(t, tc.state, tc.kills) })
	}
}

func killLoop(t *testing.T, withState bool, kills int) {
	const (
		txTopic = "transactions"
		scores  = "scores"
		dead    = "deadletter"
		group   = "kill-loop"
	)
	k, err := local.StartKafka(map[string]int{txTopic: 1, scores: 1, dead: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second*timeScale)
	defer cancel()

	// Two days of history ending an hour ago, in event-time order, written
	// to the topic and to a file for `score`.
	dir := t.TempDir()
	evPath := filepath.Join(dir, "events.jsonl")
	f, err := os.Create(evPath)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	g, err := synth.New(synth.Config{Seed: 23, Cards: 3000, Terminals: 300})
	if err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(-time.Hour).Truncate(time.Second)
	from := to.Add(-48 * time.Hour)
	rng := rand.New(rand.NewPCG(23, 1))
	var msgs []kafka.Message
	if err := g.Simulate(from, to, 0.18, func(tx synth.Tx) error {
		v := tx.Event.AppendJSON(nil)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: v})
		if rng.IntN(400) == 0 {
			b := killBadEvents[rng.IntN(len(killBadEvents))]
			msgs = append(msgs, kafka.Message{Key: []byte("bad"), Value: []byte(b)})
		}
		_, err := bw.Write(append(v, '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: txTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	total := int64(len(msgs))
	if total < 25000 {
		t.Fatalf("only %d messages generated", total)
	}

	stateDir := filepath.Join(dir, "state")
	args := []string{"run", "--brokers", strings.Join(brokers, ","), "--nats", "", "--group", group,
		"--topic", txTopic, "--labels-topic", "", "--scores-topic", scores, "--alerts-topic", "",
		"--audit-topic", "", "--deadletter-topic", dead, "--workers", "2", "--max-batch", "64",
		"--metrics-addr", "127.0.0.1:0", "--drain-timeout", "20s", "--session-timeout", "6s"}
	if withState {
		args = append(args, "--state-dir", stateDir, "--state-interval", "1s")
	}
	committed := func() int64 {
		c, err := local.CommittedOffsets(ctx, brokers, group, txTopic)
		if err != nil {
			t.Fatal(err)
		}
		return c[0]
	}

	var progress []int64
	consumedRe := regexp.MustCompile(`(?m)^streamscore_stream_events_consumed_total\{[^}]*\} (\d+)`)
	for i := range kills {
		sub := startStreamscore(t, nil, args...)
		url := sub.metricsURL()
		// A restarted member gets its partition once the killed one's
		// session (6 s) has expired; kill it at a random moment after it
		// has started consuming, mid-stream (the history takes seconds).
		done := false
		poll(t, 60*time.Second*timeScale, "consumption to start", func() bool {
			sub.alive()
			m := consumedRe.FindStringSubmatch(fetch(t, ctx, url))
			done = committed() == total
			return done || m != nil && m[1] != "0"
		})
		if done {
			sub.signal(syscall.SIGKILL)
			sub.wait(10 * time.Second)
			t.Logf("everything committed after %d kills", i)
			break
		}
		// Some kills before the first state snapshot of the run (interval
		// 1 s), some after one or more, and with a state directory some
		// right after a snapshot is written, before its offsets are
		// committed (the committer runs every 200 ms): the restart must
		// then restore the previous snapshot, the one the committed
		// offsets match.
		delays := []int{150, -1, 1400, -1, 2600}
		if d := delays[i%len(delays)]; d >= 0 || !withState {
			time.Sleep(time.Duration(max(d, 500)+rng.IntN(200)) * time.Millisecond)
		} else {
			n := strings.Count(sub.stderr.String(), `msg="state snapshot written"`)
			deadline := time.Now().Add(10 * time.Second * timeScale)
			for strings.Count(sub.stderr.String(), `msg="state snapshot written"`) == n && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		sub.signal(syscall.SIGKILL)
		if err := sub.wait(10 * time.Second); err == nil {
			t.Fatalf("kill %d: the process exited cleanly before SIGKILL", i)
		}
		progress = append(progress, committed())
		for _, l := range strings.Split(sub.stderr.String(), "\n") {
			if strings.Contains(l, "snapshot restored") || strings.Contains(l, "matches the committed offsets") {
				t.Logf("run %d: %.260s", i, l)
			}
		}
	}
	last := startStreamscore(t, nil, args...)
	poll(t, 30*time.Second*timeScale, "the pipeline to start", func() bool {
		last.alive()
		return strings.Contains(last.stderr.String(), `msg="pipeline started"`)
	})
	poll(t, 120*time.Second*timeScale, "everything committed", func() bool {
		last.alive()
		return committed() == total
	})
	last.signal(syscall.SIGTERM)
	if err := last.wait(30 * time.Second); err != nil {
		t.Fatalf("last run: %v", err)
	}
	t.Logf("%d messages; committed offset after each kill: %v", total, progress)

	// Every offset has a record; count the duplicates.
	seen := make([]int, total)
	records := map[string][]map[string]any{} // tx_id -> score records in topic order
	for _, topic := range []string{scores, dead} {
		out, err := local.ReadAll(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out {
			id := header(m, output.HeaderID)
			var part int
			var off int64
			kind, pos, _ := strings.Cut(id, ":")
			if _, err := fmt.Sscanf(pos, txTopic+"/%d/%d", &part, &off); err != nil || part != 0 || off < 0 || off >= total {
				t.Fatalf("record id %q in %s", id, topic)
			}
			seen[off]++
			if kind == "score" {
				var r map[string]any
				if err := json.Unmarshal(m.Value, &r); err != nil {
					t.Fatal(err)
				}
				records[r["tx_id"].(string)] = append(records[r["tx_id"].(string)], r)
			}
		}
	}
	dups := 0
	for off, n := range seen {
		if n == 0 {
			t.Errorf("offset %d has no record", off)
		}
		dups += max(n-1, 0)
	}
	t.Logf("%d offsets, %d duplicate records (at least once)", total, dups)

	// Equality with a replay of the same events.
	if !withState {
		return
	}
	replay := filepath.Join(dir, "replay.jsonl")
	if err := cmdScore(ctx, []string{"--events", evPath, "--out", replay}); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(replay)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	sc := bufio.NewScanner(rf)
	sc.Buffer(nil, 1<<20)
	n, differ := 0, 0
	for sc.Scan() {
		var want map[string]any
		if err := json.Unmarshal(sc.Bytes(), &want); err != nil {
			t.Fatal(err)
		}
		n++
		rs := records[want["tx_id"].(string)]
		if len(rs) == 0 {
			t.Fatalf("no score record for %s", want["tx_id"])
		}
		got := rs[len(rs)-1]
		for _, m := range []map[string]any{got, want} {
			delete(m, "scored_at")
			delete(m, "latency_ms")
		}
		if !reflect.DeepEqual(got, want) {
			if differ < 3 {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("%s differs from the replay:\n stream %s\n replay %s", want["tx_id"], g, w)
			}
			differ++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if differ > 0 || n == 0 {
		t.Fatalf("%d of %d score records differ from the replay", differ, n)
	}
}
