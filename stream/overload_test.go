package stream_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
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

// Overload measurement: set STREAMSCORE_OVERLOAD_SECONDS to run it (it
// takes that long plus a warm-up; the README's Memory budget quotes it).
const (
	overloadEnv  = "STREAMSCORE_OVERLOAD_SECONDS"
	overloadRate = 8000 // events per second produced; the sink takes half
	overloadWarm = 20 * time.Second
)

// TestOverloadRSS runs the engine at twice its capacity: a broker in
// another process (this test binary, re-executed) receives 8,000 events/s
// of 100,000 made-up cards, and the engine's sink accepts 4,000/s. The
// backlog must grow in Kafka, not in the engine: after a warm-up, the
// engine process's resident memory (VmRSS) stays within 20% while the lag
// grows by millions of bytes of events. The caps keep the state flat too
// (--max-cards 20,000 of 100,000 cards, --max-points 64).
func TestOverloadRSS(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv(overloadEnv))
	if secs <= 0 {
		t.Skipf("set %s to run the overload measurement", overloadEnv)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestOverloadBrokerProcess$")
	cmd.Env = append(os.Environ(), "STREAMSCORE_OVERLOAD_BROKER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // the broker process stops when its stdin closes
		cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	var brokers []string
	for lines.Scan() {
		if b, ok := strings.CutPrefix(lines.Text(), "brokers "); ok {
			brokers = strings.Split(b, ",")
			break
		}
	}
	if brokers == nil {
		t.Fatal("the broker process gave no address")
	}
	go func() { // drain its output
		for lines.Scan() {
		}
	}()

	sink := &throttledSink{per: time.Second / (overloadRate / 2)}
	p := newPipeline(t, brokers, "overload", shippedModels(t), sink,
		stream.WithWorkers(2), stream.WithRegisterer(prometheus.NewRegistry()), stream.WithAudit(false),
		stream.WithDecisionModels(models.ShippedDecisionModel), stream.WithDecoderOptions(features.WithMaxFutureSkew(-1)),
		stream.WithFeatureOptions(features.WithMaxCards(20000), features.WithMaxPoints(64), features.WithMaxTerminals(2000)))
	r := runPipeline(t, p)
	start := time.Now()
	time.Sleep(overloadWarm)
	rss0, scored0 := vmRSS(t), p.Stats().Scored.Load()
	t.Logf("after %v: RSS %.1f MB, %d scored", overloadWarm, float64(rss0)/1e6, scored0)
	maxRSS := rss0
	for i := 1; i <= secs; i++ {
		time.Sleep(time.Second)
		rss := vmRSS(t)
		maxRSS = max(maxRSS, rss)
		if i%5 == 0 || i == secs {
			el := time.Since(start).Seconds()
			scored := p.Stats().Scored.Load()
			t.Logf("t=%3.0fs RSS %6.1f MB  scored %7d (%.0f/s)  lag ~%7.0f events", el, float64(rss)/1e6, scored,
				float64(scored-scored0)/float64(i), el*overloadRate-float64(scored))
		}
	}
	scored := p.Stats().Scored.Load()
	if err := r.stopWithin(t, stopBudget); err != nil {
		t.Fatal(err)
	}
	rate := float64(scored-scored0) / float64(secs)
	growth := float64(maxRSS-rss0) / float64(rss0)
	t.Logf("%d s at %d events/s offered, %.0f/s taken: RSS %.1f MB -> max %.1f MB (%+.1f%%)",
		secs, overloadRate, rate, float64(rss0)/1e6, float64(maxRSS)/1e6, 100*growth)
	if rate > 0.75*overloadRate {
		t.Errorf("the engine took %.0f events/s: not overloaded", rate)
	}
	if growth > 0.2 {
		t.Errorf("RSS grew %.0f%% under overload: the backlog is buffered in the engine", 100*growth)
	}
}

// TestOverloadBrokerProcess is the broker process of TestOverloadRSS: an
// embedded Kafka whose transactions topic receives overloadRate generated
// events per second until stdin closes.
func TestOverloadBrokerProcess(t *testing.T) {
	if os.Getenv("STREAMSCORE_OVERLOAD_BROKER") != "1" {
		t.Skip("the broker process of TestOverloadRSS")
	}
	k, err := local.StartKafka(map[string]int{txTopic: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	fmt.Printf("brokers %s\n", strings.Join(k.Brokers(), ","))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // stop when the parent closes stdin
		bufio.NewReader(os.Stdin).ReadString('\n')
		cancel()
	}()
	g, err := synth.New(synth.Config{Seed: 1, Cards: 100000, Terminals: 2000, FraudRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: txTopic, Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, BatchBytes: 4 << 20, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	ts := time.Now().Add(-24 * time.Hour)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	msgs := make([]kafka.Message, overloadRate/10)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for j := range msgs {
			ts = ts.Add(time.Second / overloadRate)
			tx := g.Next(ts)
			tx.Event.TxID = fmt.Sprint("o-", i, "-", j)
			msgs[j] = kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
	}
}

// throttledSink accepts score records at one per per (all workers
// together), discarding them: a downstream slower than the input.
type throttledSink struct {
	per  time.Duration
	mu   sync.Mutex
	next time.Time
}

func (s *throttledSink) Name() string { return "throttled" }

func (s *throttledSink) WriteBatch(ctx context.Context, msgs []output.Message) error {
	n := 0
	for _, m := range msgs {
		if m.Kind == output.KindScore {
			n++
		}
	}
	s.mu.Lock()
	now := time.Now()
	if s.next.Before(now) {
		s.next = now
	}
	s.next = s.next.Add(time.Duration(n) * s.per)
	wait := s.next.Sub(now)
	s.mu.Unlock()
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *throttledSink) Close() error { return nil }

// vmRSS returns this process's resident set size, from /proc/self/status.
func vmRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
