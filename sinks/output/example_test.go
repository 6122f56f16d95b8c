package output_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/streamscore/streamscore/sinks/output"
)

// printSink acknowledges every message at once, printing it.
type printSink struct{}

func (printSink) Name() string { return "print" }
func (printSink) WriteBatch(_ context.Context, msgs []output.Message) error {
	for _, m := range msgs {
		fmt.Printf("%s %s\n", m.ID, m.Value)
	}
	return nil
}
func (printSink) Close() error { return nil }

// A Fanout writes every batch to all its sinks (NATS, Kafka, or any
// Sink), retrying a failing one with backoff until each has acknowledged
// every message, or ctx ends.
func ExampleNewFanout() {
	f, err := output.NewFanout([]output.Sink{printSink{}}, output.WithFanoutBackoff(10*time.Millisecond, time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	err = f.WriteBatch(context.Background(), []output.Message{
		{Kind: output.KindScore, ID: "transactions/0/41", Value: []byte(`{"tx_id":"t-1"}`)},
		{Kind: output.KindScore, ID: "transactions/0/42", Value: []byte(`{"tx_id":"t-2"}`)},
	})
	fmt.Println("acknowledged:", err == nil)
	// Output:
	// transactions/0/41 {"tx_id":"t-1"}
	// transactions/0/42 {"tx_id":"t-2"}
	// acknowledged: true
}
