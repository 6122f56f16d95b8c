package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"

	"github.com/streamscore/streamscore/sinks/output"
)

// serversEnv makes TestBenchServers the servers' process of BenchmarkFloor.
const serversEnv = "STREAMSCORE_BENCH_SERVERS"

// TestBenchServers is not a test: started by BenchmarkFloor with serversEnv
// set, it runs the embedded broker and NATS server with the preloaded
// transactions (the world of BenchmarkEndToEnd) in a process of their own,
// prints their addresses and serves until its stdin closes.
func TestBenchServers(t *testing.T) {
	if os.Getenv(serversEnv) == "" {
		t.Skip("the servers' process of BenchmarkFloor")
	}
	w, err := newWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.nats.Close()
	defer w.kafka.Close()
	fmt.Printf("SERVERS %s %s\n", strings.Join(w.brokers, ","), w.natsURL)
	io.Copy(io.Discard, os.Stdin)
}

var (
	remoteOnce  sync.Once
	remoteWorld *world
	remoteErr   error
	// remoteStdin is the servers' stdin: held for the life of this process
	// (its finalizer would close it, and the servers would exit).
	remoteStdin io.WriteCloser
)

// getRemoteWorld starts TestBenchServers in a process of its own, once per
// benchmark process, so that this process's CPU time is the engine's (or the
// floor's) alone. That process serves until its stdin closes, i.e. until
// this one exits.
func getRemoteWorld(b *testing.B) *world {
	b.Helper()
	remoteOnce.Do(func() { remoteWorld, remoteErr = startRemoteWorld() })
	if remoteErr != nil {
		b.Fatal(remoteErr)
	}
	return remoteWorld
}

func startRemoteWorld() (*world, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchServers$", "-test.v")
	cmd.Env = append(os.Environ(), serversEnv+"=1")
	cmd.Stderr = io.Discard // the servers' logs
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start servers: %w", err)
	}
	stop := func() { in.Close(); cmd.Wait() }
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "SERVERS" {
			go io.Copy(io.Discard, out)
			remoteStdin = in
			return &world{brokers: strings.Split(f[1], ","), natsURL: f[2], pid: cmd.Process.Pid}, nil
		}
	}
	stop()
	return nil, errors.New("bench servers did not start")
}

// cpuTime is the CPU (user and system) this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU (user and system) process pid has used so far, from
// /proc (clock ticks of 10 ms); 0 where there is no /proc.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from the 3rd (state) on
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// kindCounts counts the messages (and their bytes) handed to the sinks per
// kind.
type kindCounts struct {
	n, bytes [4]atomic.Int64 // by output.Kind: score, alert, audit, dead letter
}

// countingSink counts what goes through a sink.
type countingSink struct {
	output.Sink
	c *kindCounts
}

func (s *countingSink) WriteBatch(ctx context.Context, msgs []output.Message) error {
	for i := range msgs {
		if k := int(msgs[i].Kind); k >= 0 && k < len(s.c.n) {
			s.c.n[k].Add(1)
			s.c.bytes[k].Add(int64(len(msgs[i].Value)))
		}
	}
	return s.Sink.WriteBatch(ctx, msgs)
}

// floorShape is what the floor writes per input event: the mean sizes of
// the engine's score, alert and audit records and the share of events with
// an alert record. The defaults are the engine's on the preloaded traffic
// (measured 2026-12-06 with the shipped models); impl=streamscore of
// BenchmarkFloor counts its own and fails when they are more than 10% off.
type floorShape struct {
	scoreBytes, alertBytes, auditBytes int
	alertEvery                         float64 // alert records per event
}

var shape = floorShape{scoreBytes: 511, alertBytes: 668, auditBytes: 1848, alertEvery: 0.041}

// BenchmarkFloor compares the engine with the floor of its I/O, in one
// command, with the broker and the NATS server (the world of
// BenchmarkEndToEnd, 100,000 preloaded transactions) in a process of their
// own so that cpu-µs/event is this process's CPU (user + system, getrusage)
// per event — the client's, nothing of the servers':
//
//   - impl=floor: only the engine's I/O with the same libraries, settings
//     and record sizes: the engine's own Kafka source (a kafka-go connection
//     per claimed partition, the consumer group's commits every 200 ms), 2
//     workers batching up to 256 records or 2 ms, 4 batches per worker in
//     flight through the same fan-out of the same NATS (JetStream, acked) and
//     Kafka (acks=all, batches of 256, 1 ms) sinks: per event a score record
//     to both, an audit record to Kafka, an alert record to both for the
//     engine's share of alerts, with the engine's mean record sizes;
//   - impl=floor-discard: the same with a sink that acks at once: the read
//     path and the batching, the floor of impl=streamscore-discard;
//   - impl=streamscore-discard: the engine with a sink that acks at once
//     (its own work: decode, features, four models, reasons, encoding);
//     own-cpu-µs/event is its CPU per event minus floor-discard's;
//   - impl=streamscore-discard-auditpb: the same with --audit-format
//     protobuf (audit records without decimal formatting);
//   - impl=streamscore: the engine with both sinks, defaults.
//
// Every sub-benchmark reports events/s and cpu-µs/event (and the servers'
// CPU per event, servers-cpu-µs/event, from /proc); streamscore and
// streamscore-discard also report their ratios to their floor's figures of
// the same run (x-floor-cpu, x-floor-rate).
//
//	go test -run '^$' -bench BenchmarkFloor -benchtime 3x ./bench/
func BenchmarkFloor(b *testing.B) {
	w := getRemoteWorld(b)
	total := w.total(b)
	var floorCPU, floorRate, readCPU, readRate float64
	var counts kindCounts
	for _, impl := range []struct {
		name string
		run  func(*testing.B)
	}{
		{"floor", func(b *testing.B) { runFloor(b, w, total, nil) }},
		{"floor-discard", func(b *testing.B) { runFloor(b, w, total, discard{}) }},
		{"streamscore-discard", func(b *testing.B) { runPipeline(b, w, total, discard{}) }},
		{"streamscore-discard-auditpb", func(b *testing.B) {
			runPipelineCounted(b, w, total, discard{}, nil, floorIO{engine: []stream.Option{stream.WithAuditFormat(stream.AuditProtobuf)}})
		}},
		{"streamscore", func(b *testing.B) { runPipelineCounted(b, w, total, nil, &counts, floorIO{}) }},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			var busy, cpu, scpu time.Duration
			var n int
			for b.Loop() {
				n++
				c0, s0, start := cpuTime(), procCPU(w.pid), time.Now()
				impl.run(b)
				busy += time.Since(start)
				cpu += cpuTime() - c0
				scpu += procCPU(w.pid) - s0
			}
			events := float64(total) * float64(n)
			rate := events / busy.Seconds()
			perEvent := float64(cpu.Microseconds()) / events
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(perEvent, "cpu-µs/event")
			b.ReportMetric(float64(scpu.Microseconds())/events, "servers-cpu-µs/event")
			switch impl.name {
			case "floor":
				floorCPU, floorRate = perEvent, rate
			case "floor-discard":
				readCPU, readRate = perEvent, rate
			case "streamscore-discard", "streamscore-discard-auditpb":
				if readCPU > 0 {
					b.ReportMetric(perEvent/readCPU, "x-floor-cpu")
					b.ReportMetric(rate/readRate, "x-floor-rate")
					b.ReportMetric(perEvent-readCPU, "own-cpu-µs/event")
				}
			case "streamscore":
				if floorCPU > 0 {
					b.ReportMetric(perEvent/floorCPU, "x-floor-cpu")
					b.ReportMetric(rate/floorRate, "x-floor-rate")
				}
				checkShape(b, &counts)
			}
		})
	}
}

// checkShape fails when the records the engine wrote per event differ by
// more than 10% (in size, or in the share of alert records) from what the
// floor writes.
func checkShape(b *testing.B, c *kindCounts) {
	n := c.n[output.KindScore].Load()
	if n == 0 {
		b.Fatal("the engine wrote no score records")
	}
	got := floorShape{scoreBytes: int(c.bytes[output.KindScore].Load() / n),
		auditBytes: int(c.bytes[output.KindAudit].Load() / max(1, c.n[output.KindAudit].Load())),
		alertBytes: int(c.bytes[output.KindAlert].Load() / max(1, c.n[output.KindAlert].Load())),
		alertEvery: float64(c.n[output.KindAlert].Load()) / float64(n)}
	b.Logf("engine records per event: score %d B, audit %d B, alert %d B for %.3f of the events (floor: %d, %d, %d B, %.3f)",
		got.scoreBytes, got.auditBytes, got.alertBytes, got.alertEvery, shape.scoreBytes, shape.auditBytes, shape.alertBytes, shape.alertEvery)
	off := func(a, b float64) bool { return a < 0.9*b || a > 1.1*b }
	// The alert share within 25%: the world's history ends at the clock
	// and its label-derived features move with the time of day (0.041 to
	// 0.046 on one day); a quarter of a 4% share is 1% of the floor's
	// records, well inside the run-to-run spread of its CPU.
	offShare := func(a, b float64) bool { return a < 0.75*b || a > 1.25*b }
	if off(float64(got.scoreBytes), float64(shape.scoreBytes)) || off(float64(got.auditBytes), float64(shape.auditBytes)) ||
		off(float64(got.alertBytes), float64(shape.alertBytes)) || offShare(got.alertEvery, shape.alertEvery) {
		b.Fatal("the floor's records no longer match the engine's: update shape")
	}
}

// floorSinks returns the fan-out of the engine's sinks with the engine's
// settings, or of sink alone when it is not nil, and its closer.
func floorSinks(b *testing.B, w *world, sink output.Sink, io floorIO) (*output.Fanout, func()) {
	if sink != nil {
		fan, err := output.NewFanout([]output.Sink{sink})
		if err != nil {
			b.Fatal(err)
		}
		return fan, func() { fan.Close() }
	}
	nc, err := local.Connect(w.natsURL, "bench-floor")
	if err != nil {
		b.Fatal(err)
	}
	ns, err := sinks.NewNATS(nc, append([]sinks.NATSOption{sinks.WithNATSSubject(output.KindScore, "streamscore.scores"),
		sinks.WithNATSSubject(output.KindAlert, "streamscore.alerts")}, io.nats...)...)
	if err != nil {
		nc.Close()
		b.Fatal(err)
	}
	kopts := []sinks.KafkaOption{sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaTopic(output.KindAlert, "alerts"),
		sinks.WithKafkaTopic(output.KindAudit, "audit"), sinks.WithKafkaTopic(output.KindDeadLetter, "deadletter"),
		sinks.WithKafkaBatch(256, time.Millisecond)}
	var tr *kafka.Transport
	if io.wire != nil {
		tr = countingTransport(io.wire)
		kopts = append(kopts, sinks.WithKafkaTransport(tr))
	}
	ks, err := sinks.NewKafka(w.brokers, append(kopts, io.kafka...)...)
	if err != nil {
		if tr != nil {
			tr.CloseIdleConnections()
		}
		ns.Close()
		nc.Close()
		b.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{ns, ks})
	if err != nil {
		b.Fatal(err)
	}
	return fan, func() {
		fan.Close()
		nc.Close()
		if tr != nil {
			tr.CloseIdleConnections()
		}
	}
}

// floorBatch is one batch of the floor: the records read, the messages
// written for them, and the arena their payloads live in.
type floorBatch struct {
	recs  []stream.Record
	out   []output.Message
	arena []byte
}

// runFloor reads every preloaded event with a fresh consumer group through
// the engine's Kafka source and writes, per event, the engine's records
// (sizes from shape) through the engine's sinks, committing after the acks.
//
// With sink not nil the records go to it instead (impl=floor-discard: the
// read path and the batching alone, the floor of impl=streamscore-discard).
func runFloor(b *testing.B, w *world, total int64, sink output.Sink) {
	runFloorOn(b, w, floorRun{topic: "transactions", start: kafka.FirstOffset, total: total, sink: sink})
}

// floorIO is the sink settings of an I/O variant (BenchmarkFloorIO); the
// zero value is the engine's defaults.
type floorIO struct {
	nats  []sinks.NATSOption  // after the floor's own
	kafka []sinks.KafkaOption // after the floor's own
	// wire, when set, counts the bytes the Kafka sink writes to the broker.
	wire *atomic.Int64
	// engine holds the engine's options after the benchmark's own.
	engine []stream.Option
}

// floorRun is what runFloorOn reads and how.
type floorRun struct {
	topic string
	start int64 // where the fresh group starts: kafka.FirstOffset or LastOffset
	total int64 // events to move before it returns
	sink  output.Sink
	io    floorIO // the sinks' settings when sink is nil
	// ready, when set, is called once the group has its partitions (before
	// anything is read); observe with each event's record time and the
	// moment every sink acked it.
	ready   func()
	observe func(appended time.Time, latency time.Duration)
}

// floorBlanks pads the floor's payloads to the engine's record sizes.
var floorBlanks = bytes.Repeat([]byte{' '}, 4096)

func runFloorOn(b *testing.B, w *world, fr floorRun) {
	const workers, inFlight, maxBatch, maxDelay = 2, 4, 256, 2 * time.Millisecond
	total := fr.total
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fan, closeFan := floorSinks(b, w, fr.sink, fr.io)
	defer closeFan()
	src, err := stream.NewKafkaSource(w.brokers, nextGroup("floor"), fr.topic, stream.WithSourceStartOffset(fr.start))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	gen, err := src.Next(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer gen.End()
	if fr.ready != nil {
		fr.ready()
	}

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		next   = map[int]int64{} // partition -> offset after the highest acked record
		acked  atomic.Int64
		errc   = make(chan error, 16)
		inputs = make([]chan stream.Record, workers)
	)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	for i := range inputs {
		inputs[i] = make(chan stream.Record, 1024)
	}
	// One fetching goroutine per claimed partition, as the engine's source.
	var fetchers sync.WaitGroup
	for _, c := range gen.Claims() {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			in := inputs[c.Partition()%workers]
			for {
				r, err := c.Fetch(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("fetch partition %d: %w", c.Partition(), err))
					}
					return
				}
				select {
				case in <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// Workers: close a batch at maxBatch records or maxDelay after its first,
	// build the records, hand it to inFlight senders.
	for wi := range workers {
		free := make(chan *floorBatch, inFlight+1)
		for range inFlight + 1 {
			free <- &floorBatch{}
		}
		out := make(chan *floorBatch, inFlight)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(out)
			var alertDebt float64
			timer := time.NewTimer(time.Hour)
			for {
				var fb *floorBatch
				select {
				case fb = <-free:
				case <-ctx.Done():
					return
				}
				fb.recs, fb.out, fb.arena = fb.recs[:0], fb.out[:0], fb.arena[:0]
				select {
				case r := <-inputs[wi]:
					fb.recs = append(fb.recs, r)
				case <-ctx.Done():
					return
				}
				timer.Reset(maxDelay)
			fill:
				for len(fb.recs) < maxBatch {
					select {
					case r := <-inputs[wi]:
						fb.recs = append(fb.recs, r)
					case <-timer.C:
						break fill
					case <-ctx.Done():
						return
					}
				}
				timer.Stop()
				// The payloads: the event's bytes padded to each record's size.
				need := len(fb.recs) * (shape.scoreBytes + shape.auditBytes + shape.alertBytes)
				if cap(fb.arena) < need {
					fb.arena = make([]byte, 0, need)
				}
				payload := func(v []byte, size int) []byte {
					start := len(fb.arena)
					fb.arena = append(fb.arena, v[:min(len(v), size)]...)
					// Blanks by copy, not one append per byte: the
					// floor's payloads must cost what a memmove costs
					// (the loop was 1.6 µs per event of the floor's CPU).
					for len(fb.arena)-start < size {
						fb.arena = append(fb.arena, floorBlanks[:min(len(floorBlanks), size-(len(fb.arena)-start))]...)
					}
					return fb.arena[start:len(fb.arena):len(fb.arena)]
				}
				for _, r := range fb.recs {
					id := strconv.Itoa(r.Partition) + "/" + strconv.FormatInt(r.Offset, 10)
					fb.out = append(fb.out,
						output.Message{Kind: output.KindScore, Key: r.Key, Value: payload(r.Value, shape.scoreBytes), ID: "s" + id},
						output.Message{Kind: output.KindAudit, Key: r.Key, Value: payload(r.Value, shape.auditBytes), ID: "u" + id})
					if alertDebt += shape.alertEvery; alertDebt >= 1 {
						alertDebt--
						fb.out = append(fb.out, output.Message{Kind: output.KindAlert, Key: r.Key, Value: payload(r.Value, shape.alertBytes), ID: "a" + id})
					}
				}
				select {
				case out <- fb:
				case <-ctx.Done():
					return
				}
			}
		}()
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for fb := range out {
					if err := fan.WriteBatch(ctx, fb.out); err != nil {
						if ctx.Err() == nil {
							fail(fmt.Errorf("write batch: %w", err))
						}
						return
					}
					if fr.observe != nil {
						now := time.Now()
						for _, r := range fb.recs {
							fr.observe(r.Time, now.Sub(r.Time))
						}
					}
					mu.Lock()
					for _, r := range fb.recs {
						if r.Offset+1 > next[r.Partition] {
							next[r.Partition] = r.Offset + 1
						}
					}
					mu.Unlock()
					acked.Add(int64(len(fb.recs)))
					free <- fb
				}
			}()
		}
	}
	commit := func() error {
		mu.Lock()
		snap := make(map[int]int64, len(next))
		for p, o := range next {
			snap[p] = o
		}
		mu.Unlock()
		return gen.Commit(context.Background(), snap)
	}
	tick := time.NewTicker(200 * time.Millisecond) // the engine's commit interval
	defer tick.Stop()
	var ferr error
wait:
	for acked.Load() < total {
		select {
		case <-tick.C:
			if err := commit(); err != nil {
				ferr = fmt.Errorf("commit: %w", err)
				break wait
			}
		case ferr = <-errc:
			break wait
		case <-time.After(5 * time.Millisecond):
		}
	}
	if ferr == nil {
		if err := commit(); err != nil {
			ferr = fmt.Errorf("commit: %w", err)
		}
	}
	cancel()
	fetchers.Wait()
	wg.Wait()
	if ferr != nil {
		b.Fatal(ferr)
	}
	if got := acked.Load(); got != total {
		b.Fatalf("floor moved %d of %d events", got, total)
	}
}
