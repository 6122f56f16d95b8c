package local

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestTopicRetentionBytes: a topic given its own retention keeps about
// that many bytes a partition once the cluster's retention pass runs, while
// the others keep the cluster-wide bound (here: everything written).
func TestTopicRetentionBytes(t *testing.T) {
	k, err := StartKafka(map[string]int{"in": 1, "out": 1}, WithRetentionBytes(64<<20), WithTopicRetentionBytes("out", 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	value := bytes.Repeat([]byte("x"), 1<<10)
	for _, topic := range []string{"in", "out"} {
		w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: topic, BatchSize: 1000, BatchBytes: 4 << 20, BatchTimeout: time.Millisecond}
		msgs := make([]kafka.Message, 1000)
		for i := range msgs {
			msgs[i] = kafka.Message{Value: value}
		}
		for range 20 { // 20 MB: more than two 8 MiB segments
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
	}
	c := k.current()
	deadline := time.Now().Add(20 * time.Second)
	for c.PartitionInfo("out", 0).LogStartOffset == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("out: nothing deleted 20 s after 20 MB were written with a 1 MiB retention: %+v", *c.PartitionInfo("out", 0))
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, in := c.PartitionInfo("out", 0), c.PartitionInfo("in", 0)
	t.Logf("out keeps %d bytes from offset %d of %d; in %d bytes from %d", out.NumBytes, out.LogStartOffset, out.HighWatermark, in.NumBytes, in.LogStartOffset)
	if out.NumBytes > 10<<20 {
		t.Errorf("out keeps %d bytes with a 1 MiB retention (segments of 8 MiB)", out.NumBytes)
	}
	if in.LogStartOffset != 0 {
		t.Errorf("in: records deleted (from offset %d) under its 64 MiB retention", in.LogStartOffset)
	}
}
