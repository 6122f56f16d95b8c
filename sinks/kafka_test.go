package sinks_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/sinks/sinktest"
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

func kafkaTarget(t *testing.T) sinktest.Target {
	c := startKafka(t, "scores", "alerts", "audit")
	ch := readAll(t, c.ListenAddrs(), kafkaTopics)
	sink, err := sinks.NewKafka(c.ListenAddrs(),
		sinks.WithKafkaTopic(output.KindScore, "scores"),
		sinks.WithKafkaTopic(output.KindAlert, "alerts"),
		sinks.WithKafkaTopic(output.KindAudit, "audit"))
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
	if v := sinktest.MetricValue(t, reg, "streamscore_sinks_kafka_errors_total", map[string]string{"sink": "kafka"}); v < 0 {
		t.Error("kafka errors metric missing")
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sinks.NewKafka(tc.brokers, tc.opt); err == nil {
				t.Error("got nil error")
			}
		})
	}
}
