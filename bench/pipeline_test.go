package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"

	"github.com/streamscore/streamscore/sinks/output"
)

// benchEvents is the number of transactions each iteration of the end-to-end
// benchmarks moves through Kafka.
const benchEvents = 100_000

// world is an embedded broker and NATS server with benchEvents generated
// transactions (10,000 cards, 2 per card and day, ending now) preloaded into a
// 4-partition topic.
type world struct {
	kafka   *local.Kafka // nil when the servers run in a process of their own
	nats    *local.NATS
	brokers []string
	natsURL string
	pid     int // the servers' process (BenchmarkFloor), 0 when in this one
}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  error
)

func getWorld(b *testing.B) *world {
	b.Helper()
	worldOnce.Do(func() { theWorld, worldErr = newWorld() })
	if worldErr != nil {
		b.Fatal(worldErr)
	}
	return theWorld
}

func newWorld() (*world, error) {
	k, err := local.StartKafka(map[string]int{"transactions": 4, "live": 4, "live-labels": 1, "scores": 4, "alerts": 1, "audit": 4, "deadletter": 1})
	if err != nil {
		return nil, err
	}
	n, err := local.StartNATS("")
	if err != nil {
		k.Close()
		return nil, err
	}
	w := &world{kafka: k, nats: n, brokers: k.Brokers(), natsURL: n.URL()}
	nc, err := local.Connect(n.URL(), "bench-setup")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCORES", Subjects: []string{"streamscore.scores", "streamscore.alerts"},
		Storage: jetstream.MemoryStorage, MaxBytes: 512 << 20, Discard: jetstream.DiscardOld,
		AllowBatchPublish: true, AllowAtomicPublish: true}); err != nil { // for the floor's NATS batch variants
		return nil, err
	}
	g, err := synth.New(synth.Config{Seed: 1, Cards: 10_000, Terminals: 2_000})
	if err != nil {
		return nil, err
	}
	end := time.Now().Add(-time.Minute)
	start := end.Add(-time.Duration(benchEvents/20_000*24) * time.Hour)
	wr := &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: "transactions", Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	defer wr.Close()
	msgs := make([]kafka.Message, 0, 1000)
	err = g.Simulate(start, end, float64(benchEvents)/end.Sub(start).Seconds(), func(tx synth.Tx) error {
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		if len(msgs) == cap(msgs) {
			err := wr.WriteMessages(ctx, msgs...)
			msgs = msgs[:0]
			return err
		}
		return nil
	})
	if err == nil && len(msgs) > 0 {
		err = wr.WriteMessages(ctx, msgs...)
	}
	if err != nil {
		return nil, fmt.Errorf("preload transactions: %w", err)
	}
	return w, nil
}

func (w *world) total(b *testing.B) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := local.EndOffsets(ctx, w.brokers, "transactions")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

var groupSeq int

func nextGroup(prefix string) string {
	groupSeq++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), groupSeq)
}

// BenchmarkEndToEnd moves the preloaded transactions through a fresh
// consumer group per iteration and reports events/s, for:
//
//   - impl=kafka-read: the raw read path, kafka-go FetchMessage in a consumer
//     group with a commit per 1000 messages (the reference);
//   - impl=passthrough: the naive forwarder with the engine's outputs and
//     guarantees but no work: batches of 256 read messages published as they
//     are to JetStream (acked) and to the Kafka scores and audit topics
//     (acks=all), then committed — what moving the bytes costs here;
//   - impl=streamscore-discard: the engine with a sink that acks at once,
//     for its own cost;
//   - impl=streamscore: the whole engine with the shipped models, publishing
//     score and alert records to NATS JetStream (acked, deduplicated) and
//     score, alert and audit records to Kafka (acks=all), committing after
//     the acks.
//
// The ratios streamscore/kafka-read and streamscore/passthrough are the
// figures to compare across machines.
func BenchmarkEndToEnd(b *testing.B) {
	w := getWorld(b)
	total := w.total(b)
	for _, impl := range []struct {
		name string
		run  func(*testing.B)
	}{
		{"kafka-read", func(b *testing.B) { rawRead(b, w, total) }},
		{"passthrough", func(b *testing.B) { passthrough(b, w, total) }},
		{"streamscore-discard", func(b *testing.B) { runPipeline(b, w, total, discard{}) }},
		{"streamscore", func(b *testing.B) { runPipeline(b, w, total, nil) }},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			var busy time.Duration
			var n int
			for b.Loop() {
				n++
				start := time.Now()
				impl.run(b)
				busy += time.Since(start)
			}
			b.ReportMetric(float64(total)*float64(n)/busy.Seconds(), "events/s") // mean over the iterations
		})
	}
}

func rawRead(b *testing.B, w *world, total int64) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: w.brokers, GroupID: nextGroup("raw"), Topic: "transactions",
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 2 * time.Second, StartOffset: kafka.FirstOffset, ReadLagInterval: -1,
		QueueCapacity: 1024})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var n int64
	var last kafka.Message
	for n < total {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n++
		last = m
		if n%1000 == 0 {
			if err := r.CommitMessages(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := r.CommitMessages(ctx, last); err != nil {
		b.Fatal(err)
	}
}

// discard is a sink that accepts everything at once: with it the benchmark
// measures the engine's own work (decode, features, scoring, encoding,
// commits) without the servers' share of the two cores.
type discard struct{}

func (discard) Name() string                                             { return "discard" }
func (discard) WriteBatch(ctx context.Context, _ []output.Message) error { return ctx.Err() }
func (discard) Close() error                                             { return nil }

func runPipeline(b *testing.B, w *world, total int64, sink output.Sink) {
	runPipelineCounted(b, w, total, sink, nil, floorIO{})
}

// runPipelineCounted is runPipeline with the messages handed to the sinks
// counted per kind into counts (when not nil).
func runPipelineCounted(b *testing.B, w *world, total int64, sink output.Sink, counts *kindCounts, io floorIO) {
	ms, err := models.Shipped()
	if err != nil {
		b.Fatal(err)
	}
	nc, err := local.Connect(w.natsURL, "bench-sink")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ns, err := sinks.NewNATS(nc, append([]sinks.NATSOption{sinks.WithNATSSubject(output.KindScore, "streamscore.scores"),
		sinks.WithNATSSubject(output.KindAlert, "streamscore.alerts")}, io.nats...)...)
	if err != nil {
		b.Fatal(err)
	}
	kopts := append([]sinks.KafkaOption{sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaTopic(output.KindAlert, "alerts"),
		sinks.WithKafkaTopic(output.KindAudit, "audit"), sinks.WithKafkaTopic(output.KindDeadLetter, "deadletter"),
		sinks.WithKafkaBatch(256, time.Millisecond)}, io.kafka...)
	if io.wire != nil {
		tr := countingTransport(io.wire)
		defer tr.CloseIdleConnections()
		kopts = append(kopts, sinks.WithKafkaTransport(tr))
	}
	ks, err := sinks.NewKafka(w.brokers, kopts...)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ss := []output.Sink{ns, ks}
	if sink != nil {
		ss = []output.Sink{sink}
	}
	fanout, err := output.NewFanout(ss, output.WithFanoutRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	var fan output.Sink = fanout
	defer fan.Close()
	if counts != nil {
		fan = &countingSink{Sink: fan, c: counts}
	}
	p, err := stream.New(w.brokers, nextGroup("streamscore"), "transactions", ms, fan,
		append([]stream.Option{stream.WithRegisterer(reg), stream.WithMaxBatch(256),
			stream.WithDecisionModels(models.ShippedDecisionModel)}, io.engine...)...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	var last int64
	var stall, lastMove = time.Duration(0), start // the longest time without a scored event
	for {
		n := p.Stats().Scored.Load() + p.Stats().DeadLettered.Load()
		now := time.Now()
		if n != last {
			last, lastMove = n, now
		} else {
			stall = max(stall, now.Sub(lastMove))
		}
		if n >= total {
			break
		}
		if now.After(deadline) {
			b.Fatalf("pipeline scored %d of %d events in 5 minutes", p.Stats().Scored.Load(), total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Logf("%d events in %v, longest time without a scored event %v", total, time.Since(start).Round(time.Millisecond), stall.Round(time.Millisecond))
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if dl := p.Stats().DeadLettered.Load(); dl != 0 {
		b.Fatalf("%d generated events dead-lettered", dl)
	}
	reportPublishMeans(b, reg)
}

// reportPublishMeans reports the mean time of one batch write per sink, from
// the fan-out's histogram, and the events the event-time alignment released
// past its idle and lag bounds (of the last iteration).
func reportPublishMeans(b *testing.B, reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "streamscore_stream_aligned_events_total" {
			// events the event-time alignment released because a partition
			// was waited for past a bound: each one means the stage stood
			// still for up to that bound
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && (l.GetValue() == "idle_bound" || l.GetValue() == "lag_bound") {
						b.ReportMetric(m.GetCounter().GetValue(), "align-"+l.GetValue()+"-events")
					}
				}
			}
		}
		if mf.GetName() != "streamscore_sinks_publish_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" {
					b.ReportMetric(1000*h.GetSampleSum()/float64(h.GetSampleCount()), l.GetValue()+"-ms/batch")
				}
			}
		}
	}
}

func passthrough(b *testing.B, w *world, total int64) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: w.brokers, GroupID: nextGroup("pass"), Topic: "transactions",
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 2 * time.Second, StartOffset: kafka.FirstOffset, ReadLagInterval: -1,
		QueueCapacity: 1024})
	defer r.Close()
	nc, err := local.Connect(w.natsURL, "bench-pass")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ns, err := sinks.NewNATS(nc, sinks.WithNATSSubject(output.KindScore, "streamscore.scores"))
	if err != nil {
		b.Fatal(err)
	}
	ks, err := sinks.NewKafka(w.brokers, sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaTopic(output.KindAudit, "audit"),
		sinks.WithKafkaBatch(256, time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{ns, ks})
	if err != nil {
		b.Fatal(err)
	}
	defer fan.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var n int64
	batch := make([]kafka.Message, 0, 256)
	out := make([]output.Message, 0, 512)
	for n < total {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n++
		batch = append(batch, m)
		if len(batch) < cap(batch) && n < total {
			continue
		}
		out = out[:0]
		for i := range batch {
			id := fmt.Sprintf("%d/%d", batch[i].Partition, batch[i].Offset)
			out = append(out, output.Message{Kind: output.KindScore, Key: batch[i].Key, Value: batch[i].Value, ID: "s" + id},
				output.Message{Kind: output.KindAudit, Key: batch[i].Key, Value: batch[i].Value, ID: "a" + id})
		}
		if err := fan.WriteBatch(ctx, out); err != nil {
			b.Fatal(err)
		}
		if err := r.CommitMessages(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
}
