package main

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

type demoConfig struct {
	duration    time.Duration
	rate        float64
	cards       int
	terminals   int
	txPerDay    float64
	history     time.Duration
	warmup      time.Duration
	fraudRate   float64
	labelDelay  time.Duration
	badRate     float64
	seed        int64
	partitions  int
	workers     int
	maxBatch    int
	maxDelay    time.Duration
	metricsAddr string
	quiet       bool
	cpuProfile  string
}

// cmdDemo runs the whole system in one process: an embedded Kafka-protocol
// broker and NATS server, the generator producing transactions and delayed
// labels into Kafka, and the engine scoring them.
func cmdDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var c demoConfig
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.Float64Var(&c.rate, "rate", 2000, "transactions produced per second (wall clock)")
	fs.IntVar(&c.cards, "cards", 10000, "cards in the synthetic population")
	fs.IntVar(&c.terminals, "terminals", 2000, "terminals in the synthetic population")
	fs.Float64Var(&c.txPerDay, "tx-per-card-day", 2, "transactions per card per day of event time (the shipped models were trained at 2); with --rate and --cards it sets how fast event time runs")
	fs.DurationVar(&c.history, "history", 90*24*time.Hour, "event time starts this long before now and runs towards now (never past it)")
	fs.DurationVar(&c.warmup, "warmup", 30*24*time.Hour, "event time replayed as fast as possible before the live phase, so the 30-day windows are full (0: none); precision, recall and latency are measured on the live phase only")
	fs.Float64Var(&c.fraudRate, "fraud-rate", synth.DefaultFraudRate, "fraction of generated transactions that are fraud")
	fs.DurationVar(&c.labelDelay, "label-delay", synth.DefaultLabelDelay, "mean delay, in event time, before a fraud label (chargeback) is published")
	fs.Float64Var(&c.badRate, "bad-rate", 0.001, "fraction of malformed messages injected to show the dead-letter path")
	fs.Int64Var(&c.seed, "seed", 1, "generator seed")
	fs.IntVar(&c.partitions, "partitions", 4, "partitions of the transactions topic")
	fs.IntVar(&c.workers, "workers", 2, "engine partition workers")
	fs.IntVar(&c.maxBatch, "max-batch", 256, "engine micro-batch size")
	fs.DurationVar(&c.maxDelay, "max-delay", 2*time.Millisecond, "engine micro-batch max delay")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:0", "address of /metrics (port 0: any free port)")
	fs.BoolVar(&c.quiet, "quiet", false, "no live status line, only the summary")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole demo to this file (go tool pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.rate <= 0 || c.txPerDay <= 0 || c.partitions < 1 || c.history <= 0 {
		return errors.New("demo: --rate, --tx-per-card-day, --partitions and --history must be positive")
	}
	if c.warmup < 0 || c.warmup >= c.history {
		return errors.New("demo: --warmup must be in [0, --history)")
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Engine logs go to stderr at warn level so the status line stays readable.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	out := os.Stdout

	if os.Getenv("GOMEMLIMIT") == "" {
		// The broker's and NATS's records are most of the demo's heap, and
		// their churn made the heap (twice the live one between
		// collections) peak at 3.3 GB of RSS in the warm-up; a soft limit
		// has the collector run earlier instead (scaled with what they may
		// retain: below the live heap, the collector would run non-stop).
		debug.SetMemoryLimit(demoMemLimit(c.partitions))
	}
	kfk, err := local.StartKafka(map[string]int{
		"transactions": c.partitions, "labels": 1, "scores": c.partitions, "alerts": 1, "audit": c.partitions, "deadletter": 1,
	}, local.WithRetentionBytes(demoRetention), // the demo runs for hours in bounded memory
		local.WithTopicRetentionBytes("scores", demoOutputRetention), local.WithTopicRetentionBytes("alerts", demoOutputRetention),
		local.WithTopicRetentionBytes("audit", demoOutputRetention), local.WithTopicRetentionBytes("deadletter", demoOutputRetention))
	if err != nil {
		return err
	}
	defer kfk.Close()
	ns, err := local.StartNATS("")
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := demoStreams(ctx, ns.URL()); err != nil {
		return err
	}
	brokers := kfk.Brokers()
	fmt.Fprintf(out, "demo: Kafka broker %s (topics transactions, labels, scores, alerts, audit, deadletter)\n", brokers[0])
	fmt.Fprintf(out, "demo: NATS server %s (subjects streamscore.scores, streamscore.alerts; JetStream streams SCORES, ALERTS)\n", ns.URL())

	reg := newRegistry()
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	maddr, mwait, err := serveMetrics(mctx, c.metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer mwait()
	fmt.Fprintf(out, "demo: metrics http://%s/metrics\n", maddr)

	// Latency is measured for events appended once the engine has caught up
	// with the warm-up backlog (caughtUp, unix nanos; 0 until then).
	lat, window := newLatencyHist(), newLatencyHist()
	var caughtUp atomic.Int64
	if c.warmup == 0 {
		caughtUp.Store(1)
	}
	ecfg := engineConfig{
		Brokers: brokers[0], Group: "streamscore-demo", Topic: "transactions", LabelsTopic: "labels",
		NATS: ns.URL(), NATSMode: "jetstream", ScoresSubject: "streamscore.scores", AlertsSubject: "streamscore.alerts",
		ScoresTopic: "scores", AlertsTopic: "alerts", AuditTopic: "audit", DeadLetterTopic: "deadletter",
		MaxBatch: c.maxBatch, MaxDelay: c.maxDelay, Workers: c.workers, InFlight: 4,
		DrainTimeout: 30 * time.Second, MaxFutureSkew: 5 * time.Minute,
		// Event time runs thousands of times faster than the wall clock, so
		// the workers' event-time clocks drift days apart while they catch
		// up: allow that much lateness on the shared terminal windows.
		MaxLateness:    7 * 24 * time.Hour,
		TTL:            35 * 24 * time.Hour,
		SessionTimeout: 10 * time.Second,
		AlignIdleWait:  100 * time.Millisecond,
		AlignLagWait:   10 * time.Second,
		// One process: no checkpoints shared with other members.
		CheckpointStore: "none",
		memConfig:       defaultMemConfig(),
		sinkIO:          defaultSinkIO(),
	}
	eng, err := buildEngine(&ecfg, reg, log, stream.WithLatencyObserver(func(appended time.Time, d time.Duration) {
		if t := caughtUp.Load(); t != 0 && appended.UnixNano() >= t {
			window.Observe(d)
		}
	}))
	if err != nil {
		return err
	}
	defer eng.Close()
	for _, m := range eng.models {
		fmt.Fprintf(out, "demo: model %s = %s\n", m.Name(), m.Ident())
	}

	truth := &groundTruth{fraud: map[string]bool{}}
	nc, err := local.Connect(ns.URL(), "streamscore-demo-observer")
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe("streamscore.alerts", truth.onAlert)
	if err != nil {
		return fmt.Errorf("subscribe to alerts: %w", err)
	}
	sub.SetPendingLimits(-1, -1)

	gen, err := synth.New(synth.Config{Seed: c.seed, Cards: c.cards, Terminals: c.terminals,
		FraudRate: c.fraudRate, LabelDelay: c.labelDelay})
	if err != nil {
		return err
	}
	meanRate := float64(c.cards) * c.txPerDay / 86400 // transactions per second of event time
	speed := c.rate / meanRate
	liveFor := time.Duration(float64(c.history-c.warmup) / speed).Round(time.Second)
	fmt.Fprintf(out, "demo: %d cards, %d terminals, %.0f tx/s; event time starts %s ago and runs about %.0fx real time; the live phase can last %s\n",
		c.cards, c.terminals, c.rate, c.history, speed, liveFor)

	runCtx := ctx
	if c.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}

	// The engine runs until the producer is done and has caught up.
	engCtx, engStop := context.WithCancel(context.Background())
	defer engStop()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.pipeline.Run(engCtx) }()

	prod := &demoProducer{cfg: c, gen: gen, truth: truth, meanRate: meanRate, brokers: brokers, seed: c.seed}
	prodDone := make(chan error, 1)
	go func() { prodDone <- prod.run(runCtx) }()

	// Status line every second until the run ends. The live phase is
	// measured from the moment the engine has caught up with the warm-up.
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastScored, lastAlerts, liveScored0 int64
	measuring, warmReported := c.warmup == 0, false
	status := func() {
		st := eng.pipeline.Stats()
		scored, alerts := st.Scored.Load(), st.Alerts.Load()
		sec := newLatencyHist()
		window.SwapInto(sec)
		phase := "live"
		if !measuring {
			phase = "warm-up"
			if w := prod.warmProduced.Load(); w > 0 && prod.live.Load() && scored+st.DeadLettered.Load() >= w {
				measuring = true
				caughtUp.Store(time.Now().UnixNano())
				liveScored0 = scored
				if !warmReported {
					warmReported = true
					el := time.Since(start).Seconds()
					fmt.Fprintf(out, "demo: warm-up done: %d events (%s of event time) scored in %.1fs, %.0f events/s\n",
						w, c.warmup, el, float64(w)/el)
				}
			}
		}
		lat.Merge(sec)
		if !c.quiet {
			lat := "p50       -     p99       -   " // not measured while catching up
			if sec.Count() > 0 {
				lat = fmt.Sprintf("p50 %7.2f ms  p99 %7.2f ms", ms(sec.Quantile(0.5)), ms(sec.Quantile(0.99)))
			}
			fmt.Fprintf(out, "demo: %5.0fs %-7s event time %s  %6d events/s  %s  %4d alerts/s  dead letters %d  labels %d\n",
				time.Since(start).Seconds(), phase, prod.clock().Format("2006-01-02 15:04"), scored-lastScored,
				lat, alerts-lastAlerts, st.DeadLettered.Load(), prod.labels.Load())
		}
		lastScored, lastAlerts = scored, alerts
	}
	var prodErr error
loop:
	for {
		select {
		case <-tick.C:
			status()
		case prodErr = <-prodDone:
			break loop
		case err := <-engDone:
			return fmt.Errorf("engine stopped: %w", err)
		}
	}
	if prodErr != nil {
		engStop()
		<-engDone
		return prodErr
	}
	if prod.reachedNow.Load() {
		fmt.Fprintln(out, "demo: event time reached the present; stopping (raise --history or lower --rate for a longer run)")
	}
	// Let the engine catch up with everything produced, then drain it.
	produced := prod.produced.Load()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := eng.pipeline.Stats()
		if st.Scored.Load()+st.DeadLettered.Load() >= produced || time.Now().After(deadline) {
			break
		}
		select {
		case <-tick.C:
			status()
		case <-time.After(50 * time.Millisecond):
		}
	}
	engStop()
	if err := <-engDone; err != nil {
		return fmt.Errorf("engine drain: %w", err)
	}
	status()
	nc.Flush()
	sub.Drain()
	time.Sleep(100 * time.Millisecond) // let the alert handler finish the last messages

	st := eng.pipeline.Stats()
	if !measuring {
		// Precision, recall and latency are of the live phase: there are
		// none to give.
		fmt.Fprintf(out, "demo: stopped during the warm-up: scored %d events; precision, recall and latency are measured in the live phase, which this run did not reach (give it a longer --duration)\n",
			st.Scored.Load())
		return nil
	}
	tp, alerts, frauds := truth.counts()
	precision, recall := ratio(tp, alerts), ratio(tp, frauds)
	fmt.Fprintf(out, "demo: scored %d events, %d alerts, precision %.3f, recall %.3f, p99 latency %.2f ms\n",
		st.Scored.Load()-liveScored0, alerts, precision, recall, ms(lat.Quantile(0.99)))
	return nil
}

// The demo's broker and NATS server keep their records in memory, bounded
// (the oldest dropped): 64 MiB per partition of the input topics (they
// hold the whole warm-up, about 150,000 events a partition, with room to
// spare), 16 MiB per partition of the output topics (nothing reads them
// back but a user's kcat), 64 MiB per JetStream stream (3). At 128 MiB
// every partition and 256 MiB a stream, a 90 s run reached 4.1 GB of RSS,
// most of it retained output records.
const (
	demoRetention       = 64 << 20
	demoOutputRetention = 16 << 20
	demoStreamBytes     = 64 << 20
)

// demoMemLimit is the demo's soft memory limit (GOMEMLIMIT overrides it)
// with partitions partitions of the transactions topic: twice what the
// broker and NATS may retain, plus room for the engine and the generator,
// and at least 1.5 GiB (the default 4 partitions: 1.6 GiB; a 90 s run's
// live heap was 0.7-1.3 GB).
func demoMemLimit(partitions int) int64 {
	inputs := int64(partitions+1) * demoRetention          // transactions, labels
	outputs := int64(2*partitions+2) * demoOutputRetention // scores, audit, alerts, deadletter
	return max(1536<<20, 2*(inputs+outputs+3*demoStreamBytes)+256<<20)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// demoStreams creates the JetStream streams that capture the output subjects,
// so the NATS sink publishes with acks and server-side dedupe. They keep at
// most demoStreamBytes each in memory, dropping the oldest records.
func demoStreams(ctx context.Context, url string) error {
	nc, err := local.Connect(url, "streamscore-demo-setup")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	for name, subj := range map[string]string{"SCORES": "streamscore.scores", "ALERTS": "streamscore.alerts"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{subj}, Storage: jetstream.MemoryStorage,
			MaxBytes: demoStreamBytes, Discard: jetstream.DiscardOld, Duplicates: 2 * time.Minute,
			AllowBatchPublish: true, // --nats-batch fast
		}); err != nil {
			return fmt.Errorf("create stream %s: %w", name, err)
		}
	}
	return nil
}

// groundTruth joins the alerts the engine publishes with the generator's
// knowledge of which transactions were fraud, for the transactions of the
// live phase (event time at or after liveFrom). Only fraud ids are kept, so
// memory grows with the fraud count, not the event count.
type groundTruth struct {
	liveFrom atomic.Int64 // unix nanos of the first live event time; 0: not live yet

	mu      sync.Mutex
	fraud   map[string]bool // tx id -> alerted
	frauds  int64
	alerts  int64
	truePos int64
}

func (g *groundTruth) addFraud(txID string) {
	g.mu.Lock()
	if _, ok := g.fraud[txID]; !ok {
		g.fraud[txID] = false
		g.frauds++
	}
	g.mu.Unlock()
}

func (g *groundTruth) onAlert(m *nats.Msg) {
	var r struct {
		TxID string    `json:"tx_id"`
		TS   time.Time `json:"ts"`
	}
	if json.Unmarshal(m.Data, &r) != nil {
		return
	}
	if from := g.liveFrom.Load(); from == 0 || r.TS.UnixNano() < from {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.alerts++
	if alerted, ok := g.fraud[r.TxID]; ok && !alerted {
		g.fraud[r.TxID] = true
		g.truePos++
	}
}

func (g *groundTruth) counts() (tp, alerts, frauds int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.truePos, g.alerts, g.frauds
}

// demoProducer produces generated transactions: first the warm-up as fast
// as the broker takes it, then at a fixed wall-clock rate. Event time starts
// at now-history and advances by the population's mean gap between
// transactions at the time of day (capped at now); each label is published
// once event time passes its timestamp.
type demoProducer struct {
	cfg      demoConfig
	gen      *synth.Generator
	truth    *groundTruth
	meanRate float64 // mean transactions per second of event time
	brokers  []string
	seed     int64

	produced     atomic.Int64
	warmProduced atomic.Int64
	live         atomic.Bool
	reachedNow   atomic.Bool
	labels       atomic.Int64
	simNanos     atomic.Int64

	rng     *rand.Rand
	out     *pacedProducer // unpaced (speed 0): run paces by the wall clock
	pending labelQueue
	buf     []byte
	key     []byte
}

func (p *demoProducer) clock() time.Time { return time.Unix(0, p.simNanos.Load()).UTC() }

func (p *demoProducer) run(ctx context.Context) error {
	w := &kafka.Writer{Addr: kafka.TCP(p.brokers...), Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: pacedBatch, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	p.out = newPacedProducer(w, 0)
	p.rng = rand.New(rand.NewPCG(uint64(p.seed), 99))
	now := time.Now()
	p.simNanos.Store(now.Add(-p.cfg.history).UnixNano())

	// Warm-up: fill the windows with history, 1000 events a write.
	warmEnd := now.Add(-p.cfg.history + p.cfg.warmup)
	for p.clock().Before(warmEnd) {
		if ctx.Err() != nil {
			return nil
		}
		if err := p.produce(ctx, 1000, warmEnd); err != nil {
			return err
		}
	}
	p.warmProduced.Store(p.produced.Load())
	p.truth.liveFrom.Store(p.simNanos.Load())
	p.live.Store(true)

	// Live: a fixed rate on the wall clock.
	start := time.Now()
	var sent int64
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		n := int64(now.Sub(start).Seconds()*p.cfg.rate) - sent
		if n <= 0 {
			continue
		}
		n = min(n, int64(p.cfg.rate)) // never more than a second's worth at once
		if err := p.produce(ctx, int(n), now); err != nil {
			return err
		}
		sent += n
		if !p.clock().Before(now) {
			// Event time caught up with the wall clock: going on would
			// squeeze the whole rate into real time and make every card
			// look like a burst. The demo ends here.
			p.reachedNow.Store(true)
			return nil
		}
	}
}

// produce writes n transactions (some malformed, at the bad rate), advancing
// event time up to limit, then the labels that became due. It returns nil
// when ctx ends.
func (p *demoProducer) produce(ctx context.Context, n int, limit time.Time) error {
	live := p.live.Load()
	sim := p.clock()
	for range n {
		// Quiet nights pass quickly, busy evenings slowly, so each card sees
		// a realistic day.
		sim = sim.Add(time.Duration(1e9 / (p.meanRate * synth.Intensity(sim))))
		if sim.After(limit) {
			sim = limit
		}
		if p.rng.Float64() < p.cfg.badRate {
			p.buf = append(p.buf[:0], badDemoEvent(p.rng, sim)...)
			p.key = append(p.key[:0], "bad"...)
		} else {
			tx := p.gen.Next(sim)
			if tx.Fraud && live {
				p.truth.addFraud(tx.Event.TxID)
			}
			if l, ok := p.gen.LabelFor(tx); ok {
				heap.Push(&p.pending, l)
			}
			p.buf = tx.Event.AppendJSON(p.buf[:0])
			p.key = append(p.key[:0], tx.Event.CardID...)
		}
		if err := p.out.add(ctx, "transactions", p.key, p.buf, sim); err != nil {
			return demoProduceErr(ctx, "transactions", err)
		}
	}
	if err := p.out.flush(ctx); err != nil {
		return demoProduceErr(ctx, "transactions", err)
	}
	p.produced.Add(int64(n))
	p.simNanos.Store(sim.UnixNano())

	labels := 0
	for len(p.pending) > 0 && !p.pending[0].TS.After(sim) {
		l := heap.Pop(&p.pending).(features.Label)
		p.buf = l.AppendJSON(p.buf[:0])
		if err := p.out.add(ctx, "labels", []byte(l.CardID), p.buf, l.TS); err != nil {
			return demoProduceErr(ctx, "labels", err)
		}
		labels++
	}
	if err := p.out.flush(ctx); err != nil {
		return demoProduceErr(ctx, "labels", err)
	}
	p.labels.Add(int64(labels))
	return nil
}

// demoProduceErr is nil when ctx ended (the demo stops), else err naming
// what was produced.
func demoProduceErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("produce %s: %w", what, err)
}

// badDemoEvent returns one of a few kinds of malformed input.
func badDemoEvent(rng *rand.Rand, ts time.Time) []byte {
	t := ts.Format(time.RFC3339Nano)
	switch rng.IntN(4) {
	case 0:
		return []byte(`{"tx_id":"bad","ts":"` + t + `","card_id":"c-1","terminal_id":"m-1","amount":-12.5}`)
	case 1:
		return []byte(`{"tx_id":"bad","ts":"` + t + `","card_id":"c-1","terminal_id":"m-1","amount":12.5`)
	case 2:
		return []byte(`{"tx_id":"bad","ts":"not a time","card_id":"c-1","terminal_id":"m-1","amount":3}`)
	default:
		return []byte(`{"tx_id":"bad","ts":"` + t + `","card_id":"c-1","amount":3}`)
	}
}
