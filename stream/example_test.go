package stream_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// A pipeline is one member of a consumer group: it scores the transactions
// of the partitions it claims with the models and publishes score, alert
// and audit records through the sink; its cards' state follows its
// partitions through the checkpoint store, and it reads the other
// partitions as shared-state replicas so that terminal features are exact.
// Run returns after a soft shutdown (drain, checkpoint, commit) when ctx
// ends.
func ExampleNew() {
	brokers := []string{"localhost:9092"}
	ms, err := models.Shipped()
	if err != nil {
		log.Fatal(err)
	}
	sink, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(output.KindScore, "scores"),
		sinks.WithKafkaTopic(output.KindAudit, "audit"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	store, err := stream.NewKafkaCheckpoints(ctx, brokers, "streamscore-checkpoints", nil)
	if err != nil {
		log.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{sink})
	if err != nil {
		log.Fatal(err)
	}
	defer fan.Close()
	p, err := stream.New(brokers, "streamscore", "transactions", ms, fan,
		stream.WithCheckpoints(store), stream.WithStateInterval(10*time.Second),
		stream.WithLabelsTopic("labels"))
	if err != nil {
		log.Fatal(err) // a bad option: the error names it
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
