package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// BenchmarkFloorLatency measures end-to-end latency at fixed rates, the
// floor of the engine's I/O and the engine (defaults, both sinks) in the
// same command, against the servers in a process of their own (as
// BenchmarkFloor): a producer in this process writes rate events per second
// for STREAMSCORE_FLOOR_SECONDS (default 3) into a 4-partition topic, each
// event's time and Kafka timestamp the moment it is made, and a fresh
// consumer group reads it from its end. Latency is the client's view, the
// same for both: from the record's Kafka timestamp to the moment every sink
// acknowledged its records (the engine's WithLatencyObserver; the floor's
// senders). Rates: STREAMSCORE_FLOOR_RATES, default 1000,5000,20000.
// impl=floor-before and impl=streamscore-before use the sink settings
// before issue 13's I/O work (a PubAck per JetStream message, kafka-go's
// Writer).
//
// Implementations, in this order (STREAMSCORE_FLOOR_IMPLS picks some):
// produce (the producer alone: its CPU is taken out of the others'),
// floor, streamscore (defaults: a batch goes to its worker as soon as the
// stage has nothing more to read) and streamscore-hold (WithHoldBatches:
// batches wait for 256 events or --max-delay); streamscore-idle0
// (WithAlignIdleWait(0): no wait for a caught-up partition, live events
// applied in arrival order — what the engine adds besides the event-time
// alignment's wait) is run only when named, and so are
// streamscore-labels (the engine with a labels topic: the producer also
// writes a fraud label for one event in labelsEvery, made the moment it is
// written, into a 1-partition live-labels topic) and
// streamscore-labels-hold (the same with WithLabelsAlignIdleWait(100ms):
// labels partitions held the events as the events' partitions do, the
// behaviour before 2026-12-07). cpu-µs/event is this
// process's CPU from the paced phase's start until every paced event is
// acknowledged, per paced event; reader-cpu-µs/event the same minus the
// producer's (impl=produce of the same rate); x-floor-cpu and
// p50-over-floor-ms compare with impl=floor of the same rate.
//
//	go test -run '^$' -bench BenchmarkFloorLatency -benchtime 1x ./bench/
func BenchmarkFloorLatency(b *testing.B) {
	w := getRemoteWorld(b)
	secs := 3.0
	if v := os.Getenv("STREAMSCORE_FLOOR_SECONDS"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0) {
			b.Fatalf("STREAMSCORE_FLOOR_SECONDS=%q: want a positive number", v)
		}
		secs = f
	}
	rates := []int{1000, 5000, 20000}
	if v := os.Getenv("STREAMSCORE_FLOOR_RATES"); v != "" {
		rates = rates[:0]
		for f := range strings.SplitSeq(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				b.Fatalf("STREAMSCORE_FLOOR_RATES=%q: want positive integers", v)
			}
			rates = append(rates, r)
		}
	}
	impls := []string{"produce", "floor", "floor-before", "streamscore", "streamscore-hold", "streamscore-before"}
	known := append(slices.Clone(impls), "streamscore-idle0", "streamscore-labels", "streamscore-labels-hold")
	if v := os.Getenv("STREAMSCORE_FLOOR_IMPLS"); v != "" {
		impls = impls[:0]
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(known, f) {
				b.Fatalf("STREAMSCORE_FLOOR_IMPLS=%q: %q is not one of %s", v, f, strings.Join(known, ", "))
			}
			impls = append(impls, f)
		}
	}
	d := time.Duration(secs * float64(time.Second))
	g, err := synth.New(synth.Config{Seed: 5, Cards: 10_000, Terminals: 2_000})
	if err != nil {
		b.Fatal(err)
	}
	for _, rate := range rates {
		var produceCPU, floorCPU, floorP50 float64
		for _, impl := range impls {
			b.Run(fmt.Sprintf("rate=%d/impl=%s", rate, impl), func(b *testing.B) {
				var lat latencies
				var produced, cpu time.Duration
				var n int64
				for b.Loop() {
					pr := newPacer(b, w, g, rate, d)
					pr.cpu = &cpu
					switch impl {
					case "produce":
						pr.start()
					case "floor", "floor-before":
						var acked atomic.Int64
						obs := lat.since(&pr.t0)
						fr := floorRun{topic: "live", start: kafka.LastOffset, total: pr.total, ready: pr.start,
							observe: func(appended time.Time, d time.Duration) {
								obs(appended, d)
								if s := pr.t0.Load(); s != 0 && appended.UnixNano() >= s && acked.Add(1) == pr.total {
									pr.finish()
								}
							}}
						if impl == "floor-before" {
							fr.io = before // the sink settings before issue 13's I/O work
						}
						runFloorOn(b, w, fr)
					case "streamscore-before":
						runEngineLive(b, w, pr, nil, lat.since(&pr.t0), before)
					default:
						var opts []stream.Option
						switch impl {
						case "streamscore-hold":
							opts = append(opts, stream.WithHoldBatches(true))
						case "streamscore-idle0":
							opts = append(opts, stream.WithAlignIdleWait(0))
						case "streamscore-labels", "streamscore-labels-hold":
							pr.labels(w)
							opts = append(opts, stream.WithLabelsTopic("live-labels"))
							if impl == "streamscore-labels-hold" {
								opts = append(opts, stream.WithLabelsAlignIdleWait(100*time.Millisecond))
							}
						}
						runEngineLive(b, w, pr, opts, lat.since(&pr.t0), floorIO{})
					}
					produced += pr.wait(b)
					n += pr.total
				}
				perEvent := float64(cpu.Microseconds()) / float64(n)
				b.ReportMetric(float64(n)/produced.Seconds(), "produced-events/s")
				b.ReportMetric(perEvent, "cpu-µs/event")
				if impl == "produce" {
					produceCPU = perEvent
					return
				}
				p50, p99, max := lat.quantiles(b, n)
				b.ReportMetric(p50, "p50-ms")
				b.ReportMetric(p99, "p99-ms")
				b.ReportMetric(max, "max-ms")
				own := perEvent - produceCPU // the reader's CPU: the producer's taken out
				if produceCPU > 0 {
					b.ReportMetric(own, "reader-cpu-µs/event")
				}
				if impl == "floor" {
					floorCPU, floorP50 = own, p50
				} else if floorCPU > 0 {
					b.ReportMetric(own/floorCPU, "x-floor-cpu")
					b.ReportMetric(p50-floorP50, "p50-over-floor-ms")
				}
			})
		}
	}
}

// latencies collects the latencies of the paced events.
type latencies struct {
	mu sync.Mutex
	v  []time.Duration
}

// since returns an observer keeping the latencies of the records appended
// at or after *t0 (the paced phase; set before it starts).
func (l *latencies) since(t0 *atomic.Int64) func(time.Time, time.Duration) {
	return func(appended time.Time, d time.Duration) {
		if s := t0.Load(); s == 0 || appended.UnixNano() < s {
			return
		}
		l.mu.Lock()
		l.v = append(l.v, d)
		l.mu.Unlock()
	}
}

// quantiles returns p50, p99 and the maximum in milliseconds, failing when
// fewer than n latencies were seen (an event never acked).
func (l *latencies) quantiles(b *testing.B, n int64) (p50, p99, max float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int64(len(l.v)) < n {
		b.Fatalf("%d latencies for %d paced events", len(l.v), n)
	}
	slices.Sort(l.v)
	q := func(p float64) float64 {
		return float64(l.v[min(len(l.v)-1, int(p*float64(len(l.v))))].Microseconds()) / 1000
	}
	return q(0.5), q(0.99), float64(l.v[len(l.v)-1].Microseconds()) / 1000
}

// pacer produces rate events per second for d into the live topic, from
// the moment start is called, in a goroutine joined by wait.
type pacer struct {
	w     *world
	g     *synth.Generator
	rate  int
	d     time.Duration
	total int64
	t0    atomic.Int64 // UnixNano of the paced phase's start, 0 before
	done  chan error
	took  time.Duration
	wr    *kafka.Writer
	prev  time.Time
	// lw, when set (labels), gets a fraud label for one paced event in
	// labelsEvery.
	lw   *kafka.Writer
	made int64
	// cpu, when set, gets the process's CPU from start to finish (the
	// first call; wait calls it if nobody did).
	cpu      *time.Duration
	cpu0     time.Duration
	finished sync.Once
}

// finish ends the paced phase's CPU measurement: call it once every paced
// event is acknowledged.
func (p *pacer) finish() {
	p.finished.Do(func() {
		if p.cpu != nil {
			*p.cpu += cpuTime() - p.cpu0
		}
	})
}

func newPacer(b *testing.B, w *world, g *synth.Generator, rate int, d time.Duration) *pacer {
	return &pacer{w: w, g: g, rate: rate, d: d, total: int64(float64(rate) * d.Seconds()), done: make(chan error, 1),
		wr: &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: "live", Balancer: &kafka.Hash{},
			BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}}
}

// labelsEvery is one label per this many paced events with labels: 1%,
// about the demo's share (its chargebacks are 0.75% of the transactions,
// each labelled once, plus analysts' verdicts).
const labelsEvery = 100

// labels makes the pacer write labels to the live-labels topic too.
func (p *pacer) labels(w *world) {
	p.lw = &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: "live-labels", Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
}

// next returns a message of an event made now (strictly increasing times),
// and with labels, for one in labelsEvery, a label of it (made after it).
func (p *pacer) next() (kafka.Message, *kafka.Message) {
	ts := time.Now().UTC()
	if !ts.After(p.prev) {
		ts = p.prev.Add(time.Microsecond)
	}
	p.prev = ts
	tx := p.g.Next(ts)
	m := kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil), Time: ts}
	if p.made++; p.lw == nil || p.made%labelsEvery != 0 {
		return m, nil
	}
	e := &tx.Event
	l := features.Label{TxID: e.TxID, CardID: e.CardID, TerminalID: e.TerminalID, TS: ts.Add(time.Microsecond), TxTS: ts, Fraud: true}
	return m, &kafka.Message{Key: []byte(e.CardID), Value: l.AppendJSON(nil), Time: l.TS}
}

// prime writes one event made now (not part of the paced phase).
func (p *pacer) prime(ctx context.Context) error {
	m, _ := p.next()
	return p.wr.WriteMessages(ctx, m)
}

// start begins the paced phase in a goroutine.
func (p *pacer) start() {
	p.cpu0 = cpuTime()
	p.t0.Store(time.Now().UnixNano())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.d+time.Minute)
		defer cancel()
		const tick = 2 * time.Millisecond
		start := time.Now()
		var sent int64
		msgs := make([]kafka.Message, 0, 1024)
		var labels []kafka.Message
		for sent < p.total {
			due := min(p.total, int64(time.Since(start).Seconds()*float64(p.rate)))
			msgs, labels = msgs[:0], labels[:0]
			for ; sent < due; sent++ {
				m, l := p.next()
				msgs = append(msgs, m)
				if l != nil {
					labels = append(labels, *l)
				}
			}
			if len(msgs) > 0 {
				if err := p.wr.WriteMessages(ctx, msgs...); err != nil {
					p.done <- fmt.Errorf("produce: %w", err)
					return
				}
			}
			if len(labels) > 0 {
				if err := p.lw.WriteMessages(ctx, labels...); err != nil {
					p.done <- fmt.Errorf("produce labels: %w", err)
					return
				}
			}
			time.Sleep(tick)
		}
		p.took = time.Since(start)
		p.done <- nil
	}()
}

// wait joins the producer and returns how long the paced phase took.
func (p *pacer) wait(b *testing.B) time.Duration {
	err := <-p.done
	p.finish()
	p.wr.Close()
	if p.lw != nil {
		p.lw.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	return p.took
}

// runEngineLive runs the engine (defaults, both sinks with io) on the live topic
// from its end: it primes it with events until one is scored (the group has
// formed), starts the paced phase and returns once every paced event is
// acknowledged by the sinks.
func runEngineLive(b *testing.B, w *world, pr *pacer, extra []stream.Option, observe func(time.Time, time.Duration), io floorIO) {
	ms, err := models.Shipped()
	if err != nil {
		b.Fatal(err)
	}
	nc, err := local.Connect(w.natsURL, "bench-live")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ns, err := sinks.NewNATS(nc, append([]sinks.NATSOption{sinks.WithNATSSubject(output.KindScore, "streamscore.scores"),
		sinks.WithNATSSubject(output.KindAlert, "streamscore.alerts")}, io.nats...)...)
	if err != nil {
		b.Fatal(err)
	}
	ks, err := sinks.NewKafka(w.brokers, append([]sinks.KafkaOption{sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaTopic(output.KindAlert, "alerts"),
		sinks.WithKafkaTopic(output.KindAudit, "audit"), sinks.WithKafkaTopic(output.KindDeadLetter, "deadletter"),
		sinks.WithKafkaBatch(256, time.Millisecond)}, io.kafka...)...)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	fan, err := output.NewFanout([]output.Sink{ns, ks}, output.WithFanoutRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	defer fan.Close()
	var acked atomic.Int64
	p, err := stream.New(w.brokers, nextGroup("live"), "live", ms, fan,
		append([]stream.Option{stream.WithRegisterer(reg), stream.WithMaxBatch(256), stream.WithStartOffset(kafka.LastOffset),
			stream.WithDecisionModels(models.ShippedDecisionModel),
			stream.WithLatencyObserver(func(appended time.Time, d time.Duration) {
				if s := pr.t0.Load(); s != 0 && appended.UnixNano() >= s {
					acked.Add(1)
				}
				observe(appended, d)
			})}, extra...)...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for p.Stats().Scored.Load() == 0 {
		if time.Now().After(deadline) {
			stop()
			b.Fatal("the engine scored no priming event in a minute")
		}
		if err := pr.prime(ctx); err != nil {
			stop()
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pr.start()
	deadline = time.Now().Add(pr.d + 2*time.Minute)
	for acked.Load() < pr.total {
		if time.Now().After(deadline) {
			stop()
			b.Fatalf("%d of %d paced events acknowledged", acked.Load(), pr.total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	pr.finish()
	stop()
}
