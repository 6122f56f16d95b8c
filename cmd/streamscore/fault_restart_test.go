package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/local"
)

// TestNATSRestart shuts the NATS server down while the engine publishes
// live traffic to a JetStream stream (file storage), and starts it again a
// few seconds later on the same port with the same store directory, as an
// operator restarting the server would. While it is down the engine holds
// back: /readyz is 503 naming NATS, nothing is acked, no offset is
// committed, the lag grows in Kafka; and every offset committed by then has
// its record in the store (checked on a second server opened on the store
// before the real restart). Once the server is back /readyz turns 200, and
// at the end every input offset has exactly one score record in the stream
// — the publishes whose acks the shutdown lost are replayed with their
// Nats-Msg-Id and dropped by the server as duplicates — and every offset is
// committed.
func TestNATSRestart(t *testing.T) {
	const (
		group   = "nats-restart"
		subject = "sec.scores" // natsEngineArgs's scores subject
		backlog = 3000
		rate    = 2000 // events per second of live traffic
		outage  = 4 * time.Second
	)
	store := t.TempDir()
	srv := startTestNATS(t, -1, store)
	port := natsPort(srv)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	k, err := local.StartKafka(map[string]int{"transactions": 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second*timeScale)
	defer cancel()
	clearEnv(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	scoresStream(t, ctx, nc) // file storage, 10 min duplicate window
	nc.Close()

	g, err := synth.New(synth.Config{Seed: 31, Cards: 400, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	live := newLiveProducer(t, ctx, brokers, g, backlog, rate)
	// A partition quiet for longer than --align-idle-wait is passed by the
	// others; the race detector slows fetches beyond the 100 ms default,
	// and the terminal state would then differ from `score`'s.
	r := startTestEngine(t, natsEngineArgs(brokers, url, "--group", group, "--workers", "2", "--max-batch", "64",
		"--align-idle-wait", "2s"))
	scored := func() int64 { return r.e.pipeline.Stats().Scored.Load() }
	poll(t, 30*time.Second*timeScale, "the backlog scored", func() bool { return scored() >= backlog })
	time.Sleep(500 * time.Millisecond) // publishing live traffic, acks in flight

	committed := func() map[int]int64 {
		c, err := local.CommittedOffsets(ctx, brokers, group, "transactions")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	down := time.Now()
	scoredAtStop := scored()
	poll(t, 5*time.Second*timeScale, "/readyz 503 naming nats", func() bool {
		code, body := r.ready()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "nats down")
	})
	_, body := r.ready()
	t.Logf("/readyz while NATS is down: %q", body)
	time.Sleep(time.Until(down.Add(1500 * time.Millisecond))) // acks in flight at the stop have failed
	c1, s1 := committed(), scored()
	time.Sleep(time.Until(down.Add(outage)))
	c2, s2 := committed(), scored()
	_, bodyLate := r.ready()
	ends, err := local.EndOffsets(ctx, brokers, "transactions")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(c1, c2) || s1 != s2 {
		t.Errorf("while NATS was down: committed %v then %v, scored %d then %d: want no change", c1, c2, s1, s2)
	}
	if sum(ends)-sum(c2) < rate {
		t.Errorf("while NATS was down: lag %d (ends %v, committed %v): the live traffic did not wait in Kafka", sum(ends)-sum(c2), ends, c2)
	}

	// Every offset committed during the outage is in the store: read it
	// through a server of its own before NATS comes back on its port.
	inspect := startTestNATS(t, -1, store)
	stored, _ := storedRecords(t, ctx, inspect.ClientURL(), "SECSCORES")
	inspect.Shutdown()
	inspect.WaitForShutdown()
	for p, c := range c2 {
		for o := int64(0); o < c; o++ {
			if stored[scoreID(p, o)] == 0 {
				t.Errorf("offset %d/%d committed during the outage but not in the store", p, o)
			}
		}
	}
	storedAtRestart := len(stored)

	startTestNATS(t, port, store)
	back := time.Now()
	poll(t, 15*time.Second*timeScale, "/readyz 200 after the restart", func() bool {
		code, _ := r.ready()
		return code == http.StatusOK
	})
	readyAfter := time.Since(back)
	time.Sleep(time.Second) // more live traffic after the restart
	total := live.stop()
	poll(t, 30*time.Second*timeScale, "every offset committed", func() bool {
		c, err := local.CommittedOffsets(ctx, brokers, group, "transactions")
		return err == nil && sum(c) == total
	})
	if err := r.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	ends, err = local.EndOffsets(ctx, brokers, "transactions")
	if err != nil {
		t.Fatal(err)
	}
	if sum(ends) != total || !maps.Equal(committed(), ends) {
		t.Errorf("committed %v, end offsets %v (%d produced)", committed(), ends, total)
	}

	// The invariant: one record per input offset, none other.
	ids, recs := storedRecords(t, ctx, url, "SECSCORES")
	missing, doubled := 0, 0
	for _, p := range slices.Sorted(maps.Keys(ends)) {
		for o := range ends[p] {
			switch n := ids[scoreID(p, o)]; {
			case n == 0:
				missing++
			case n > 1:
				doubled++
			}
			delete(ids, scoreID(p, o))
		}
	}
	if missing > 0 || doubled > 0 || len(ids) > 0 {
		t.Errorf("%d offsets without a score record, %d with several, %d records of no input offset", missing, doubled, len(ids))
	}
	// The scores equal a replay of the same events by `score`: the outage
	// changed what was published when, not what.
	want, err := replayScores(ctx, t.TempDir(), live.eventsFile(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	cmp := compareExact("score records in the stream vs `score`", recs, want, scoreRecordVolatile)
	if !cmp.Exact() || cmp.Duplicates > 0 {
		t.Errorf("%s", cmp)
	}
	logs := r.logs.String()
	for _, want := range []string{`msg="connection down" transport=nats cause=disconnected`, `msg="connection back" transport=nats`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	disconnects := testutil.ToFloat64(r.e.health.failures.WithLabelValues(natsTransport, "disconnected"))
	t.Logf("/readyz at the end of the outage: %q", bodyLate)
	t.Logf("NATS restart: %d events (%d backlog + live at %d/s), server down %v (%d scored before, %d records in the store at the restart), "+
		"/readyz 200 %v after it came back; missing %d, duplicated %d, differing from `score` %d; nats disconnections counted: %v; acks failed %v, republished %v, replays dropped by Nats-Msg-Id %v",
		total, backlog, rate, back.Sub(down).Round(100*time.Millisecond), scoredAtStop, storedAtRestart, readyAfter.Round(10*time.Millisecond),
		missing, doubled, cmp.Mismatches, disconnects, metricSum(t, r, "streamscore_sinks_nats_ack_errors_total"),
		metricSum(t, r, "streamscore_sinks_nats_republishes_total"), metricSum(t, r, "streamscore_sinks_nats_duplicates_total"))
}

// scoreID is the Nats-Msg-Id of the score record of input offset p/o.
func scoreID(p int, o int64) string {
	return fmt.Sprintf("%s:transactions/%d/%d", output.KindScore, p, o)
}

func sum(m map[int]int64) (s int64) {
	for _, v := range m {
		s += v
	}
	return s
}

// metricSum is the sum of every series of the named metric in the engine's
// registry (0 when it has none).
func metricSum(t *testing.T, r *runningEngine, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			s += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return s
}

// storedRecords reads every message of the JetStream stream on the server
// at url, counts them by their streamscore id header and decodes them.
func storedRecords(t *testing.T, ctx context.Context, url, stream string) (map[string]int, []exactRecord) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	var recs []exactRecord
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			ids[m.Headers().Get(output.HeaderID)]++
			r, err := decodeExact(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
			n++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read stream %s: %v", stream, err)
		}
		if n == 0 {
			t.Fatalf("read stream %s: %d of %d messages, then nothing", stream, read, info.State.Msgs)
		}
		read += uint64(n)
	}
	return ids, recs
}

// liveProducer writes generated events to the transactions topic at a
// steady rate, in batches every 50 ms, until stop.
// A backlog (events from an hour ago, a second apart) is written first,
// then live events (now) in batches every 50 ms; every event is also kept,
// in the order written (event-time order), for `score`.
type liveProducer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	w      *kafka.Writer
	g      *synth.Generator
	events [][]byte  // every event written; read after stop
	last   time.Time // the time of the last live event
	err    error
	t      *testing.T
}

func newLiveProducer(t *testing.T, ctx context.Context, brokers []string, g *synth.Generator, backlog, rate int) *liveProducer {
	ctx, cancel := context.WithCancel(ctx)
	lp := &liveProducer{cancel: cancel, t: t, g: g, w: &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "transactions",
		Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}}
	start := time.Now().Add(-time.Hour)
	if err := lp.write(backlog, func(i int) time.Time { return start.Add(time.Duration(i) * time.Second) }); err != nil {
		t.Fatal(err)
	}
	lp.wg.Add(1)
	go func() {
		defer lp.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := lp.write(rate/20, lp.now); err != nil {
				lp.err = err
				return
			}
		}
	}()
	t.Cleanup(func() { lp.stop() })
	return lp
}

// now returns the time, strictly after the last it returned: no two
// events have the same time, so the order of events is the same in the
// engine and in `score` whatever rule breaks ties.
func (lp *liveProducer) now(int) time.Time {
	ts := time.Now().UTC()
	if !ts.After(lp.last) {
		ts = lp.last.Add(time.Microsecond)
	}
	lp.last = ts
	return ts
}

// write writes n events at the times at(i), with tx ids in writing order.
func (lp *liveProducer) write(n int, at func(i int) time.Time) error {
	msgs := make([]kafka.Message, 0, n)
	for i := range n {
		tx := lp.g.Next(at(i))
		tx.Event.TxID = fmt.Sprintf("nr-%07d", len(lp.events))
		v := tx.Event.AppendJSON(nil)
		lp.events = append(lp.events, v)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: v})
	}
	// Not the producer's ctx: a batch begun is written whole, so that the
	// events kept are the events written.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lp.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce %d events: %w", n, err)
	}
	return nil
}

// stop stops the producer and returns how many events it wrote, backlog
// included. Idempotent.
func (lp *liveProducer) stop() int64 {
	lp.cancel()
	lp.wg.Wait()
	lp.w.Close()
	if lp.err != nil {
		lp.t.Fatalf("live traffic: %v", lp.err)
	}
	return int64(len(lp.events))
}

// eventsFile writes the events to dir/events.jsonl and returns its path.
func (lp *liveProducer) eventsFile(dir string) string {
	lp.t.Helper()
	path := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(path, append(bytes.Join(lp.events, []byte("\n")), '\n'), 0o600); err != nil {
		lp.t.Fatal(err)
	}
	return path
}
