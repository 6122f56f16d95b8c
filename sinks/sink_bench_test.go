package sinks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
)

// benchBatch is a pipeline-sized batch of score-record-sized messages.
func benchBatch(n int) []output.Message {
	msgs := make([]output.Message, n)
	value := make([]byte, 300)
	for i := range value {
		value[i] = 'x'
	}
	for i := range msgs {
		msgs[i] = output.Message{Kind: output.KindScore, Key: fmt.Appendf(nil, "c-%d", i%1000), Value: value, ID: fmt.Sprintf("t-%d", i)}
	}
	return msgs
}

// runSinkBench writes b.N batches; IDs are re-stamped per batch so
// JetStream does not deduplicate them.
func runSinkBench(b *testing.B, s output.Sink, size int) {
	msgs := benchBatch(size)
	ctx := context.Background()
	b.SetBytes(int64(size * len(msgs[0].Value)))
	b.ReportAllocs()
	round := 0
	start := time.Now()
	for b.Loop() {
		round++
		for i := range msgs {
			msgs[i].ID = fmt.Sprintf("r%d-%d", round, i)
		}
		if err := s.WriteBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(round*size)/time.Since(start).Seconds(), "msg/s")
}

func BenchmarkSinkWriteBatch(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("nats_core/batch=%d", size), func(b *testing.B) {
			ns := benchNATS(b, false)
			nc := connectB(b, ns)
			s, err := sinks.NewNATS(nc, sinks.WithNATSSubject(output.KindScore, "out.scores"), sinks.WithNATSMode(sinks.NATSModeCore))
			if err != nil {
				b.Fatal(err)
			}
			runSinkBench(b, s, size)
		})
		b.Run(fmt.Sprintf("nats_jetstream_mem/batch=%d", size), func(b *testing.B) {
			ns := benchNATS(b, true)
			nc := connectB(b, ns)
			createStreamB(b, nc)
			s, err := sinks.NewNATS(nc, sinks.WithNATSSubject(output.KindScore, "out.scores"))
			if err != nil {
				b.Fatal(err)
			}
			runSinkBench(b, s, size)
		})
		b.Run(fmt.Sprintf("kafka_kfake/batch=%d", size), func(b *testing.B) {
			c := startKafkaB(b)
			s, err := sinks.NewKafka(c.ListenAddrs(), sinks.WithKafkaTopic(output.KindScore, "scores"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			runSinkBench(b, s, size)
		})
	}
}

func benchNATS(b *testing.B, js bool) *server.Server {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: js, StoreDir: b.TempDir(), NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("not ready")
	}
	b.Cleanup(ns.Shutdown)
	return ns
}
