package stream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream/local"
)

// benchBrokerEnv makes TestSourceBenchBroker run the broker of
// BenchmarkSourceFetch.
const benchBrokerEnv = "SOURCE_BENCH_BROKER"

// TestSourceBenchBroker is the helper process of BenchmarkSourceFetch, not
// a test: with benchBrokerEnv set it runs an embedded broker, prints its
// address and returns when its stdin closes, so that the benchmark's CPU is
// the client's alone.
func TestSourceBenchBroker(t *testing.T) {
	if os.Getenv(benchBrokerEnv) == "" {
		t.Skip("the broker process of BenchmarkSourceFetch")
	}
	k, err := local.StartKafka(map[string]int{srcTopic: srcParts})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	fmt.Println("BROKER", k.Brokers()[0])
	io.Copy(io.Discard, os.Stdin)
}

// startBenchBroker starts TestSourceBenchBroker in a process of its own.
func startBenchBroker(b *testing.B) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSourceBenchBroker$", "-test.v")
	cmd.Env = append(os.Environ(), benchBrokerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "BROKER "); ok {
			addr = a
			break
		}
	}
	go io.Copy(io.Discard, out) // joined by cmd.Wait, which waits for the pipe to close
	b.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	if addr == "" {
		b.Fatal("bench broker did not start")
	}
	return addr
}

// cpuTime is the CPU (user and system) used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSourceFetch compares the per-record cost of reading a 4-partition
// topic with today's group reader (one kafka.Reader with GroupID,
// FetchMessage from one goroutine), with KafkaSource's claims (a partition
// reader each, one goroutine per claim), and with raw kafka.Conn batches. The
// broker runs in its own process; cpu-ns/rec is this process's CPU. Each
// iteration reads the whole topic once, timed from the first record.
//
//	go test ./stream -run '^$' -bench BenchmarkSourceFetch -benchtime 3x
func BenchmarkSourceFetch(b *testing.B) {
	const perPart = 50_000
	addr := startBenchBroker(b)
	brokers := []string{addr}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: srcTopic, BatchTimeout: time.Millisecond, BatchSize: 1000, Transport: tr,
		RequiredAcks: kafka.RequireAll, Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	value := []byte(strings.Repeat("x", 200))
	msgs := make([]kafka.Message, 0, 1000)
	for p := range srcParts {
		for i := 0; i < perPart; i += 1000 {
			msgs = msgs[:0]
			for range 1000 {
				msgs = append(msgs, kafka.Message{Partition: p, Key: []byte("card-0000000001"), Value: value})
			}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
		}
	}
	w.Close()
	total := srcParts * perPart
	group := 0

	measure := func(b *testing.B, read func(started func())) {
		var wall, cpu time.Duration
		var mallocs uint64
		for range b.N {
			var t0 time.Time
			var c0 time.Duration
			var m0 runtime.MemStats
			read(func() {
				runtime.ReadMemStats(&m0)
				t0, c0 = time.Now(), cpuTime()
			})
			wall += time.Since(t0)
			cpu += cpuTime() - c0
			var m1 runtime.MemStats
			runtime.ReadMemStats(&m1)
			mallocs += m1.Mallocs - m0.Mallocs
		}
		n := float64(b.N * total)
		b.ReportMetric(float64(wall.Nanoseconds())/n, "ns/rec")
		b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/rec")
		b.ReportMetric(float64(mallocs)/n, "allocs/rec")
	}

	b.Run("group_reader", func(b *testing.B) {
		measure(b, func(started func()) {
			group++
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: fmt.Sprintf("bench-%d", group), Topic: srcTopic,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 2 * time.Second, QueueCapacity: 500 * 4,
				IsolationLevel: kafka.ReadCommitted, StartOffset: kafka.FirstOffset, SessionTimeout: 6 * time.Second,
				HeartbeatInterval: 600 * time.Millisecond, ReadLagInterval: -1})
			defer r.Close()
			for i := range total {
				if _, err := r.FetchMessage(context.Background()); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					started()
				}
			}
		})
	})

	b.Run("source_claims", func(b *testing.B) {
		measure(b, func(started func()) {
			group++
			s, err := NewKafkaSource(brokers, fmt.Sprintf("bench-%d", group), srcTopic, WithSourceSessionTimeout(6*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			g, err := s.Next(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer g.End()
			var first, rest sync.WaitGroup
			start := make(chan struct{})
			var failed atomic.Value
			for _, c := range g.Claims() {
				first.Add(1)
				rest.Go(func() {
					for i := range perPart {
						if _, err := c.Fetch(context.Background()); err != nil {
							failed.Store(err)
							if i == 0 {
								first.Done()
							}
							return
						}
						if i == 0 {
							first.Done()
							<-start
						}
					}
				})
			}
			first.Wait()
			started()
			close(start)
			rest.Wait()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
		})
	})

	b.Run("conn_batches", func(b *testing.B) {
		measure(b, func(started func()) {
			conns := make([]*kafka.Conn, srcParts)
			for p := range conns {
				c, err := kafka.DialLeader(context.Background(), "tcp", addr, srcTopic, p)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Seek(0, kafka.SeekAbsolute); err != nil {
					b.Fatal(err)
				}
				conns[p] = c
			}
			started()
			var wg sync.WaitGroup
			var failed atomic.Value
			for _, c := range conns {
				wg.Go(func() {
					n := 0
					for n < perPart {
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						batch := c.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 1 << 20, IsolationLevel: kafka.ReadCommitted})
						for {
							if _, err := batch.ReadMessage(); err != nil {
								break
							}
							n++
						}
						if err := batch.Close(); err != nil {
							failed.Store(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
		})
	})
}
