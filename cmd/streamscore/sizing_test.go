package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/local"
)

// sizingEnv turns on TestSizing, a measurement (about a minute) rather
// than a check.
const sizingEnv = "STREAMSCORE_SIZING"

// TestSizing measures what one `streamscore run` process costs per event
// and per card, for the README's sizing table: a backlog of two weeks of
// generated transactions (4 events per card on average, 50 cards per
// terminal) in a 4-partition topic, read by one engine with its default
// flags (score and audit records to Kafka, the shipped models) until every
// offset is committed, at two card counts. From the engine's own /metrics
// once caught up: process CPU seconds and card states held; then, after a
// collection forced through /debug/pprof/heap?gc=1, the live heap and the
// resident memory. The differences between the two sizes give the cost of one
// more event and one more card without the fixed costs (start-up, model
// loading, buffers). STREAMSCORE_SIZING_CARDS overrides the card counts
// (comma-separated); STREAMSCORE_SIZING_CPUPROFILE_DIR=dir writes the
// engine's CPU profile of the first 5 s of each catch-up there.
//
//	STREAMSCORE_SIZING=1 go test ./cmd/streamscore -run TestSizing -v
func TestSizing(t *testing.T) {
	if os.Getenv(sizingEnv) != "1" {
		t.Skipf("a measurement of about a minute; run it with %s=1 go test ./cmd/streamscore -run TestSizing -v", sizingEnv)
	}
	counts := []int{25_000, 125_000}
	if v := os.Getenv(sizingEnv + "_CARDS"); v != "" {
		counts = counts[:0]
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 50 {
				t.Fatalf("%s_CARDS: %q is not a card count of at least 50", sizingEnv, f)
			}
			counts = append(counts, n)
		}
	}
	var runs []sizingRun
	for _, cards := range counts {
		t.Run(fmt.Sprintf("%d cards", cards), func(t *testing.T) {
			r := sizingBacklog(t, cards)
			t.Logf("%d cards (%d held), %d events: caught up in %v (%.0f events/s wall), process CPU %.2f s (%.1f µs/event, %.0f events per CPU-second), RSS %.1f MB, live heap %.1f MB",
				cards, r.held, r.events, r.wall.Round(time.Millisecond), float64(r.events)/r.wall.Seconds(), r.cpu,
				1e6*r.cpu/float64(r.events), float64(r.events)/r.cpu, r.rss/1e6, r.liveHeap/1e6)
			runs = append(runs, r)
		})
	}
	for i := 1; i < len(runs); i++ {
		a, b := runs[i-1], runs[i]
		dc, de := float64(b.held-a.held), float64(b.events-a.events)
		t.Logf("%d → %d cards: %.1f µs of CPU per added event (%.0f events per CPU-second); per added card %.0f bytes of live heap, %.0f bytes of RSS (%.1f MB and %.1f MB per 100,000 cards, with %.1f events per card)",
			a.held, b.held, 1e6*(b.cpu-a.cpu)/de, de/(b.cpu-a.cpu), (b.liveHeap-a.liveHeap)/dc, (b.rss-a.rss)/dc,
			1e5*(b.liveHeap-a.liveHeap)/dc/1e6, 1e5*(b.rss-a.rss)/dc/1e6, de/dc)
	}
}

type sizingRun struct {
	cards, held, events int
	wall                time.Duration
	cpu, rss, liveHeap  float64
}

func sizingBacklog(t *testing.T, cards int) sizingRun {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, 4)
	g, err := synth.New(synth.Config{Seed: int64(cards), Cards: cards, Terminals: cards / 50})
	if err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(-time.Hour).Truncate(time.Second)
	from := to.Add(-14 * 24 * time.Hour)
	var txs []synth.Tx
	var prev time.Time
	if err := g.Simulate(from, to, float64(4*cards)/to.Sub(from).Seconds(), func(tx synth.Tx) error {
		if !tx.Event.TS.After(prev) {
			tx.Event.TS = prev.Add(time.Microsecond)
		}
		prev = tx.Event.TS
		txs = append(txs, tx)
		if len(txs) == 10_000 {
			w.produce("z", txs)
			txs = txs[:0]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.produce("z", txs)
	if _, err := local.EndOffsets(ctx, w.brokers, exactTxTopic); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "sizing-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := startStreamscore(t, nil, "run", "--brokers", strings.Join(w.brokers, ","), "--nats", "",
		"--group", exactGroup, "--topic", exactTxTopic, "--labels-topic", "",
		"--scores-topic", exactScores, "--alerts-topic", "", "--audit-topic", exactAudit, "--deadletter-topic", exactDead,
		"--metrics-addr", "127.0.0.1:0", "--session-timeout", "6s", "--drain-timeout", "20s",
		"--http-token-file", tokenFile, "--pprof")
	url := p.metricsURL()
	base := strings.TrimSuffix(url, "/metrics")
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return b, err
	}
	// The engine's own CPU profile while it catches up, when asked for.
	if dir := os.Getenv(sizingEnv + "_CPUPROFILE_DIR"); dir != "" {
		done := make(chan struct{})
		go func() {
			defer close(done)
			b, err := get("/debug/pprof/profile?seconds=5")
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("engine-%d-cards.pprof", cards)), b, 0o644)
			}
			if err != nil {
				t.Errorf("engine CPU profile: %v", err)
			}
		}()
		t.Cleanup(func() { <-done })
	}
	w.waitCommitted(p, 240*time.Second*timeScale)
	wall := time.Since(start)
	var m string
	poll(t, 10*time.Second*timeScale, "the card states counted", func() bool { // counted periodically
		_, m = getStatus(t, url)
		return metricValue(m, `streamscore_stream_state_entities{entity="card"}`) > 0
	})
	r := sizingRun{cards: cards, events: w.n, wall: wall, cpu: metricValue(m, "process_cpu_seconds_total"),
		held: int(metricValue(m, `streamscore_stream_state_entities{entity="card"}`))}
	if _, err := get("/debug/pprof/heap?gc=1"); err != nil { // a collection: the heap that follows is live
		t.Fatal(err)
	}
	_, m = getStatus(t, url)
	r.liveHeap = metricValue(m, "go_memstats_heap_alloc_bytes")
	r.rss = metricValue(m, "process_resident_memory_bytes")
	if r.cpu <= 0 || r.rss <= 0 || r.held <= 0 || r.liveHeap <= 0 {
		t.Fatalf("metrics missing: cpu %v, rss %v, heap %v, cards %v", r.cpu, r.rss, r.liveHeap, r.held)
	}
	w.stop(p)
	return r
}
