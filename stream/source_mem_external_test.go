package stream_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream"
)

// TestMemBrokerFromOutside: the in-memory Source of the package's tests is
// usable by its external tests too (pipeline tests without a broker): a
// rebalance on demand ends the generation, the drained work is committed
// before End, and the next generation starts there.
func TestMemBrokerFromOutside(t *testing.T) {
	b := stream.NewMemBroker(map[string]int{"tx": 2})
	for i := range 3 {
		if _, err := b.Append("tx", 1, []byte("card"), []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	src, err := b.NewSource("g", "tx", kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := g.Claims()[1]
	r, err := c.Fetch(ctx)
	if err != nil || c.Partition() != 1 || r.Offset != 0 || string(r.Value) != "a" || r.HighWater != 3 {
		t.Fatalf("fetch: %+v %v", r, err)
	}
	b.Rebalance("g")
	<-g.Done()
	if _, err := c.Fetch(ctx); !errors.Is(err, stream.ErrGenerationEnded) {
		t.Fatalf("fetch after the rebalance: %v", err)
	}
	if err := g.Commit(ctx, map[int]int64{1: 1}); err != nil {
		t.Fatalf("commit between Done and End: %v", err)
	}
	g.End()
	g2, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID() <= g.ID() || g2.Claims()[1].Start() != 1 {
		t.Fatalf("next generation %d starts partition 1 at %d", g2.ID(), g2.Claims()[1].Start())
	}
	if got := b.Committed("g", "tx"); got[1] != 1 {
		t.Fatalf("committed %v", got)
	}
}
