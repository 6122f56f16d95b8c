package bench

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/sinks"

	"github.com/streamscore/streamscore/sinks/output"
)

// countingTransport is a kafka-go transport counting the bytes written to
// the brokers into n.
func countingTransport(n *atomic.Int64) *kafka.Transport {
	d := &net.Dialer{}
	return &kafka.Transport{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, n}, nil
	}}
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// before is the sinks' settings before issue 13's I/O work: a PubAck per
// JetStream message, kafka-go's Writer.
var before = floorIO{
	nats:  []sinks.NATSOption{sinks.WithNATSBatch(sinks.NATSBatchNone)},
	kafka: []sinks.KafkaOption{sinks.WithKafkaProducer(sinks.KafkaProducerWriter)},
}

// BenchmarkFloorIO measures the sink settings on the floor of
// BenchmarkFloor (same servers' process, same reads, same records), each
// against impl=floor-before — the settings before issue 13's I/O work (a
// PubAck per JetStream message, kafka-go's Writer) — measured in the same
// run:
//
//   - floor-before, floor (today's defaults: JetStream fast batches, the
//     direct Kafka producer);
//   - one setting changed from the defaults: nats=none, nats=atomic,
//     kafka=writer;
//   - the engine with both sinks, with the previous and today's settings
//     (streamscore-before, streamscore), and with the audit records
//     compressed (audit=lz4, audit=zstd: against streamscore).
//
// Each reports events/s, cpu-µs/event (this process), servers-cpu-µs/event,
// kafka-wire-B/event (bytes written to the broker, requests included) and
// its ratios to its reference (x-ref-cpu, x-ref-rate): floor-before for the
// floor variants, streamscore-before for streamscore, streamscore for the
// compressed ones.
//
//	go test -run '^$' -bench BenchmarkFloorIO -benchtime 3x ./bench/
func BenchmarkFloorIO(b *testing.B) {
	w := getRemoteWorld(b)
	total := w.total(b)
	variants := []struct {
		name   string
		io     floorIO
		engine bool
		ref    string
	}{
		{"floor-before", before, false, ""},
		{"floor", floorIO{}, false, "floor-before"},
		{"floor-nats=none", floorIO{nats: []sinks.NATSOption{sinks.WithNATSBatch(sinks.NATSBatchNone)}}, false, "floor-before"},
		{"floor-nats=atomic", floorIO{nats: []sinks.NATSOption{sinks.WithNATSBatch(sinks.NATSBatchAtomic)}}, false, "floor-before"},
		{"floor-kafka=writer", floorIO{kafka: []sinks.KafkaOption{sinks.WithKafkaProducer(sinks.KafkaProducerWriter)}}, false, "floor-before"},
		{"streamscore-before", before, true, ""},
		{"streamscore", floorIO{}, true, "streamscore-before"},
		// Compression on the engine's own audit records (the floor's are
		// padded with blanks, which compress far better than real ones).
		{"streamscore-audit=lz4", floorIO{kafka: []sinks.KafkaOption{sinks.WithKafkaKindCompression(output.KindAudit, kafka.Lz4)}}, true, "streamscore"},
		{"streamscore-audit=zstd", floorIO{kafka: []sinks.KafkaOption{sinks.WithKafkaKindCompression(output.KindAudit, kafka.Zstd)}}, true, "streamscore"},
	}
	type fig struct{ cpu, rate float64 }
	figs := map[string]fig{}
	for _, v := range variants {
		b.Run("impl="+v.name, func(b *testing.B) {
			var busy, cpu, scpu time.Duration
			var wire atomic.Int64
			io := v.io
			io.wire = &wire
			var n int
			for b.Loop() {
				n++
				c0, s0, start := cpuTime(), procCPU(w.pid), time.Now()
				if v.engine {
					runPipelineCounted(b, w, total, nil, nil, io)
				} else {
					runFloorOn(b, w, floorRun{topic: "transactions", start: kafka.FirstOffset, total: total, io: io})
				}
				busy += time.Since(start)
				cpu += cpuTime() - c0
				scpu += procCPU(w.pid) - s0
			}
			events := float64(total) * float64(n)
			f := fig{cpu: float64(cpu.Microseconds()) / events, rate: events / busy.Seconds()}
			figs[v.name] = f
			b.ReportMetric(f.rate, "events/s")
			b.ReportMetric(f.cpu, "cpu-µs/event")
			b.ReportMetric(float64(scpu.Microseconds())/events, "servers-cpu-µs/event")
			b.ReportMetric(float64(wire.Load())/events, "kafka-wire-B/event")
			if ref, ok := figs[v.ref]; ok && ref.cpu > 0 {
				b.ReportMetric(f.cpu/ref.cpu, "x-ref-cpu")
				b.ReportMetric(f.rate/ref.rate, "x-ref-rate")
			}
		})
	}
}

// auditCapture is a sink that acks at once and keeps a copy of the first
// audit records it sees.
type auditCapture struct {
	mu   sync.Mutex
	max  int
	recs [][]byte
}

func (*auditCapture) Name() string { return "audit-capture" }
func (*auditCapture) Close() error { return nil }
func (c *auditCapture) WriteBatch(ctx context.Context, msgs []output.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range msgs {
		if msgs[i].Kind == output.KindAudit && len(c.recs) < c.max {
			c.recs = append(c.recs, bytes.Clone(msgs[i].Value))
		}
	}
	return ctx.Err()
}

// BenchmarkAuditCompression measures the CPU and the size of compressing
// the engine's own audit records (captured from a run over the preloaded
// events) with each of kafka-go's codecs, in groups of 64 records — about
// what one produce request per partition carries at the default micro-batch
// of 256 over 4 partitions. Reports ns/record to compress, the compressed
// bytes per record and the ratio to the uncompressed bytes.
//
//	go test -run '^$' -bench BenchmarkAuditCompression ./bench/
func BenchmarkAuditCompression(b *testing.B) {
	w := getRemoteWorld(b)
	capture := &auditCapture{max: 8192}
	runPipelineCounted(b, w, w.total(b), capture, nil, floorIO{})
	recs := capture.recs
	if len(recs) < 1024 {
		b.Fatalf("captured %d audit records", len(recs))
	}
	var raw int64
	for _, r := range recs {
		raw += int64(len(r))
	}
	const group = 64
	for _, codec := range []kafka.Compression{kafka.Lz4, kafka.Zstd, kafka.Snappy, kafka.Gzip} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			var buf bytes.Buffer
			var out int64
			var n int
			for b.Loop() {
				n++
				out = 0
				for start := 0; start < len(recs); start += group {
					buf.Reset()
					zw := codec.Codec().NewWriter(&buf)
					for _, r := range recs[start:min(len(recs), start+group)] {
						if _, err := zw.Write(r); err != nil {
							b.Fatal(err)
						}
					}
					if err := zw.Close(); err != nil {
						b.Fatal(err)
					}
					out += int64(buf.Len())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(recs)), "ns/record")
			b.ReportMetric(float64(raw)/float64(len(recs)), "raw-B/record")
			b.ReportMetric(float64(out)/float64(len(recs)), "compressed-B/record")
			b.ReportMetric(float64(out)/float64(raw), "ratio")
		})
	}
}
