package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/sinktest"

	"github.com/streamscore/streamscore/sinks/output"
)

const kafkaPartitions = 3

var kafkaTopics = map[output.Kind]string{output.KindScore: "scores", output.KindAlert: "alerts", output.KindAudit: "audit"}

func startKafkaB(t testing.TB) *kfake.Cluster { return startKafka(t, "scores") }

func startKafka(t testing.TB, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(kafkaPartitions, topics...))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// received is one record read back, with its partition.
type received struct {
	sinktest.Received
	Partition int
}

// readAll reads every partition of the topics from the start until stopped;
// it is owned by the test (stopped and joined in Cleanup).
func readAll(t *testing.T, addrs []string, topics map[output.Kind]string) <-chan received {
	ch := make(chan received, 100000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for kind, topic := range topics {
		for p := range kafkaPartitions {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: addrs, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond,
			})
			wg.Go(func() {
				defer r.Close()
				for {
					m, err := r.ReadMessage(ctx)
					if err != nil {
						return
					}
					var id string
					for _, h := range m.Headers {
						if h.Key == output.HeaderID {
							id = string(h.Value)
						}
					}
					ch <- received{sinktest.Received{Kind: kind, Key: m.Key, Value: m.Value, ID: id}, m.Partition}
				}
			})
		}
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ch
}

func kafkaTarget(t *testing.T) sinktest.Target { return kafkaTargetWith(t) }

func kafkaTargetWith(t *testing.T, opts ...sinks.KafkaOption) sinktest.Target {
	c := startKafka(t, "scores", "alerts", "audit")
	ch := readAll(t, c.ListenAddrs(), kafkaTopics)
	sink, err := sinks.NewKafka(c.ListenAddrs(), append([]sinks.KafkaOption{
		sinks.WithKafkaTopic(output.KindScore, "scores"),
		sinks.WithKafkaTopic(output.KindAlert, "alerts"),
		sinks.WithKafkaTopic(output.KindAudit, "audit")}, opts...)...)
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	var got []sinktest.Received
	partOf := map[string]int{} // key -> partition
	return sinktest.Target{
		Sink:     sink,
		Routed:   []output.Kind{output.KindScore, output.KindAlert, output.KindAudit},
		KeepsKey: true,
		Collect: func(t *testing.T, n int, timeout time.Duration) []sinktest.Received {
			deadline := time.After(timeout)
			for len(got) < n {
				select {
				case r := <-ch:
					k := r.Kind.String() + "/" + string(r.Key)
					if p, ok := partOf[k]; ok && p != r.Partition {
						t.Errorf("key %s in partitions %d and %d", k, p, r.Partition)
					}
					partOf[k] = r.Partition
					got = append(got, r.Received)
				case <-deadline:
					return got
				}
			}
			return got
		},
	}
}

func TestKafkaConformance(t *testing.T) { sinktest.Run(t, kafkaTarget) }

func TestKafkaWriterConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target {
		return kafkaTargetWith(t, sinks.WithKafkaProducer(sinks.KafkaProducerWriter))
	})
}

// The audit records compressed (each codec), the others not: every record
// read back intact (kafka-go's reader decompresses).
func TestKafkaKindCompressionConformance(t *testing.T) {
	for _, codec := range []string{"lz4", "zstd", "snappy", "gzip"} {
		t.Run(codec, func(t *testing.T) {
			c, err := sinks.ParseKafkaCompression(codec)
			if err != nil {
				t.Fatal(err)
			}
			sinktest.Run(t, func(t *testing.T) sinktest.Target {
				return kafkaTargetWith(t, sinks.WithKafkaKindCompression(output.KindAudit, c))
			})
		})
	}
}

// TestKafkaProducersPartitionAlike: the direct producer puts every key in
// the partition kafka-go's Writer puts it in (the same balancer), so
// switching producers keeps each card's records in one partition.
func TestKafkaProducersPartitionAlike(t *testing.T) {
	c := startKafka(t, "scores")
	ch := readAll(t, c.ListenAddrs(), map[output.Kind]string{output.KindScore: "scores"})
	const n = 300
	for _, tc := range []struct {
		name string
		p    sinks.KafkaProducer
	}{{"writer", sinks.KafkaProducerWriter}, {"direct", sinks.KafkaProducerDirect}} {
		sink, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaProducer(tc.p))
		if err != nil {
			t.Fatal(err)
		}
		msgs := make([]output.Message, n)
		for i := range msgs {
			msgs[i] = output.Message{Kind: output.KindScore, Key: fmt.Appendf(nil, "card-%d", i%50), Value: []byte(tc.name), ID: fmt.Sprintf("%s-%d", tc.name, i)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = sink.WriteBatch(ctx, msgs)
		cancel()
		sink.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	part := map[string]int{}
	deadline := time.After(10 * time.Second)
	for seen := 0; seen < 2*n; seen++ {
		select {
		case r := <-ch:
			if p, ok := part[string(r.Key)]; ok && p != r.Partition {
				t.Fatalf("key %s in partitions %d and %d (last by %s)", r.Key, p, r.Partition, r.Value)
			}
			part[string(r.Key)] = r.Partition
		case <-deadline:
			t.Fatalf("read %d of %d records", seen, 2*n)
		}
	}
}

func TestKafkaLatency(t *testing.T) {
	c := startKafka(t, "scores")
	sink, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "scores"))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, _ := sinktest.Batch("lat", 10, map[output.Kind]bool{output.KindScore: true})
	if err := sink.WriteBatch(ctx, msgs); err != nil { // warm up: metadata, connections
		t.Fatal(err)
	}
	start := time.Now()
	const rounds = 20
	for range rounds {
		if err := sink.WriteBatch(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	// kafka-go's default BatchTimeout (1s) would make this take 20s.
	if per := time.Since(start) / rounds; per > 200*time.Millisecond {
		t.Errorf("partial batch write takes %v: batch timeout not applied", per)
	}
}

func TestKafkaMissingTopic(t *testing.T) {
	c := startKafka(t, "scores")
	reg := prometheus.NewPedanticRegistry()
	sink, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "nope"),
		sinks.WithKafkaRetries(1, 2*time.Second), sinks.WithKafkaRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := []output.Message{{Kind: output.KindAlert, ID: "a"}, {Kind: output.KindScore, Key: []byte("k"), Value: []byte("v"), ID: "s"}}
	err = sink.WriteBatch(ctx, msgs)
	var be *output.BatchError
	if !errors.As(err, &be) || be.Failed(1) == nil || be.Failed(0) != nil {
		t.Fatalf("got %v, want a BatchError for index 1 only", err)
	}
	t.Logf("missing topic: %v (retryable %v)", err, sinks.IsRetryable(err))
	sinktest.Lint(t, reg)
	if v := sinktest.MetricValue(t, reg, "streamscore_sinks_kafka_errors_total", map[string]string{"sink": "kafka"}); v < 1 {
		t.Errorf("kafka errors metric %v after a write to a missing topic, want >= 1", v)
	}
}

func TestKafkaOptions(t *testing.T) {
	tests := []struct {
		name    string
		brokers []string
		opt     sinks.KafkaOption
	}{
		{"no brokers", nil, sinks.WithKafkaAutoCreateTopics(true)},
		{"empty topic", []string{"x:1"}, sinks.WithKafkaTopic(output.KindScore, "")},
		{"bad batch", []string{"x:1"}, sinks.WithKafkaBatch(0, time.Millisecond)},
		{"bad retries", []string{"x:1"}, sinks.WithKafkaRetries(0, time.Second)},
		{"nil balancer", []string{"x:1"}, sinks.WithKafkaBalancer(nil)},
		{"bad batch bytes", []string{"x:1"}, sinks.WithKafkaBatchBytes(0)},
		{"unknown producer", []string{"x:1"}, sinks.WithKafkaProducer(sinks.KafkaProducer(7))},
		{"unknown codec", []string{"x:1"}, sinks.WithKafkaKindCompression(output.KindAudit, kafka.Compression(9))},
		{"unknown kind", []string{"x:1"}, sinks.WithKafkaKindCompression(output.Kind(9), kafka.Lz4)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sinks.NewKafka(tc.brokers, tc.opt); err == nil {
				t.Error("got nil error")
			}
		})
	}
	t.Run("kind compression with the writer", func(t *testing.T) {
		_, err := sinks.NewKafka([]string{"x:1"}, sinks.WithKafkaProducer(sinks.KafkaProducerWriter),
			sinks.WithKafkaKindCompression(output.KindAudit, kafka.Zstd))
		if err == nil || !strings.Contains(err.Error(), "direct producer") {
			t.Errorf("got %v, want an error naming the direct producer", err)
		}
	})
	for _, tc := range []struct {
		in   string
		want kafka.Compression
		err  bool
	}{
		{"none", 0, false}, {"lz4", kafka.Lz4, false}, {"zstd", kafka.Zstd, false}, {"uncompressed", 0, false}, {"LZ4", 0, true}, {"", 0, true},
	} {
		got, err := sinks.ParseKafkaCompression(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseKafkaCompression(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// countingConn counts the bytes written to the broker.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestKafkaKindCompressionBytes: audit records compressed with lz4 or zstd
// put a fraction of their bytes on the wire; the other kinds are untouched.
func TestKafkaKindCompressionBytes(t *testing.T) {
	c := startKafka(t, "audit")
	value := []byte(strings.Repeat(`{"feature":"card_amount_sum_1h","value":12.5},`, 40)) // ~1.9 KB, repetitive like an audit record
	wire := func(t *testing.T, opts ...sinks.KafkaOption) int64 {
		var n atomic.Int64
		d := &net.Dialer{}
		tr := &kafka.Transport{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, &n}, nil
		}}
		defer tr.CloseIdleConnections()
		sink, err := sinks.NewKafka(c.ListenAddrs(), append([]sinks.KafkaOption{sinks.WithKafkaTopic(output.KindAudit, "audit"), sinks.WithKafkaTransport(tr)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		msgs := make([]output.Message, 500)
		for i := range msgs {
			msgs[i] = output.Message{Kind: output.KindAudit, Key: fmt.Appendf(nil, "c-%d", i), Value: value, ID: fmt.Sprint(i)}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sink.WriteBatch(ctx, msgs[:1]); err != nil { // metadata and connections
			t.Fatal(err)
		}
		before := n.Load()
		if err := sink.WriteBatch(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		return n.Load() - before
	}
	plain := wire(t)
	if plain < 500*int64(len(value)) {
		t.Fatalf("uncompressed write put %d bytes on the wire, want at least %d", plain, 500*len(value))
	}
	for _, codec := range []kafka.Compression{kafka.Lz4, kafka.Zstd} {
		got := wire(t, sinks.WithKafkaKindCompression(output.KindAudit, codec))
		t.Logf("%s: %d bytes on the wire, uncompressed %d (%.3f)", codec, got, plain, float64(got)/float64(plain))
		if got > plain/4 {
			t.Errorf("%s: %d bytes on the wire, uncompressed %d: not compressed", codec, got, plain)
		}
		// Compressing another kind leaves the audit records alone.
		if other := wire(t, sinks.WithKafkaKindCompression(output.KindScore, codec)); other < plain*9/10 {
			t.Errorf("%s on scores: audit write put %d bytes on the wire, uncompressed %d", codec, other, plain)
		}
	}
}

// TestKafkaDirectBatchBytes: the direct producer splits a partition's
// records over requests of at most WithKafkaBatchBytes, and fails only the
// record that alone exceeds it, permanently.
func TestKafkaDirectBatchBytes(t *testing.T) {
	c := startKafka(t, "scores")
	ch := readAll(t, c.ListenAddrs(), map[output.Kind]string{output.KindScore: "scores"})
	reg := prometheus.NewPedanticRegistry()
	sink, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "scores"),
		sinks.WithKafkaBatchBytes(4096), sinks.WithKafkaRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	value := []byte(strings.Repeat("x", 1000))
	msgs := make([]output.Message, 40)
	for i := range msgs {
		msgs[i] = output.Message{Kind: output.KindScore, Key: []byte("one-card"), Value: value, ID: fmt.Sprint(i)}
	}
	msgs[17].Value = []byte(strings.Repeat("y", 5000)) // alone over the limit
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = sink.WriteBatch(ctx, msgs)
	var be *output.BatchError
	if !errors.As(err, &be) || len(be.Indices) != 1 || be.Indices[0] != 17 || !sinks.IsPermanent(err) {
		t.Fatalf("got %v, want a permanent BatchError for index 17 only", err)
	}
	for seen := 0; seen < len(msgs)-1; seen++ {
		select {
		case r := <-ch:
			if r.ID == "17" {
				t.Fatal("the oversized record was written")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("read %d of %d records", seen, len(msgs)-1)
		}
	}
	// 39 records of about 1 KB in one partition, at most 4 KB a request.
	if got := sinktest.MetricValue(t, reg, "streamscore_sinks_kafka_requests_total", map[string]string{"sink": "kafka"}); got < 10 {
		t.Errorf("requests_total = %v for 39 records of 1 KB with a 4 KB limit, want at least 10", got)
	}
}

// TestKafkaDirectRetries: a produce request refused with a retryable error
// (NOT_LEADER_FOR_PARTITION, twice) is retried by the direct producer and
// the records land once; a permanent refusal is not retried.
func TestKafkaDirectRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		code      int16
		refusals  int
		wantErr   bool
		wantTries float64 // produce requests
	}{
		{"retryable", kerr.NotLeaderForPartition.Code, 2, false, 3},
		{"permanent", kerr.MessageTooLarge.Code, 1, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startKafka(t, "scores")
			var refused int
			c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
				if refused >= tc.refusals {
					return nil, nil, false
				}
				c.KeepControl()
				refused++
				pr := req.(*kmsg.ProduceRequest)
				resp := pr.ResponseKind().(*kmsg.ProduceResponse)
				for _, rt := range pr.Topics {
					st := kmsg.NewProduceResponseTopic()
					st.Topic = rt.Topic
					for _, rp := range rt.Partitions {
						sp := kmsg.NewProduceResponseTopicPartition()
						sp.Partition, sp.ErrorCode = rp.Partition, tc.code
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
			ch := readAll(t, c.ListenAddrs(), map[output.Kind]string{output.KindScore: "scores"})
			reg := prometheus.NewPedanticRegistry()
			sink, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "scores"),
				sinks.WithKafkaRetries(3, 5*time.Second), sinks.WithKafkaRegisterer(reg))
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			msgs := []output.Message{{Kind: output.KindScore, Key: []byte("k"), Value: []byte("v"), ID: "only"}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = sink.WriteBatch(ctx, msgs)
			if (err != nil) != tc.wantErr {
				t.Fatalf("WriteBatch: %v, want error %v", err, tc.wantErr)
			}
			sinkL := map[string]string{"sink": "kafka"}
			if got := sinktest.MetricValue(t, reg, "streamscore_sinks_kafka_requests_total", sinkL); got != tc.wantTries {
				t.Errorf("requests_total = %v, want %v", got, tc.wantTries)
			}
			if tc.wantErr {
				if !sinks.IsPermanent(err) {
					t.Errorf("%v: not permanent", err)
				}
				return
			}
			select {
			case r := <-ch:
				if r.ID != "only" {
					t.Errorf("read %q", r.ID)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("record not written")
			}
			select {
			case r := <-ch:
				t.Errorf("record written twice: %q", r.ID)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}
