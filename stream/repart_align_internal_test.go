package stream

import (
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/stream/internal/align"
)

// TestRepartAlignIdleWait: in the repartition mode WithAlignIdleWait(0)
// reaches the terminal stage's aligner as 0 (a caught-up, silent source
// holds nothing back: the event is released at once), not align's 100 ms
// default; a negative wait (no alignment) is refused by New with the way
// out in the message, not turned into 100 ms silently.
func TestRepartAlignIdleWait(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	b := NewMemBroker(map[string]int{"tx": 2, "R": 2, "E": 2})
	member := func(idle time.Duration) (*Pipeline, error) {
		src, err := b.NewSource("g", "tx", kafka.FirstOffset)
		if err != nil {
			t.Fatal(err)
		}
		tsrc, err := b.NewSource("g.terminals", "R", kafka.FirstOffset)
		if err != nil {
			t.Fatal(err)
		}
		return New([]string{"127.0.0.1:1"}, "g", "tx", ms, nopSink{}, WithSource(src),
			WithRepartition(RepartitionConfig{Topic: "R", Enriched: "E", Source: tsrc}),
			WithCheckpoints(NewMemoryCheckpoints()), WithStateInterval(time.Second),
			WithAlignIdleWait(idle))
	}
	if _, err := member(-time.Millisecond); err == nil || !strings.Contains(err.Error(), "0 gives the lowest latency") {
		t.Fatalf("New with a negative align idle wait in the repartition mode: err %v, want a refusal", err)
	}
	for _, tc := range []struct {
		idle    time.Duration
		atOnce  bool
		deadAft time.Duration
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 3 * 25 * time.Millisecond},
	} {
		p, err := member(tc.idle)
		if err != nil {
			t.Fatalf("idle %v: %v", tc.idle, err)
		}
		if p.termAlignIdle != tc.idle || p.deadAfter() != tc.deadAft {
			t.Fatalf("idle %v: terminal idle wait %v, dead after %v; want %v, %v", tc.idle, p.termAlignIdle, p.deadAfter(), tc.idle, tc.deadAft)
		}
		// The terminal stage's aligner, as newTerminalStage configures it.
		cfg := terminalConfig{alignIdle: p.termAlignIdle, alignLag: p.terminalLagWait(), credit: 8}
		now := time.Unix(1_700_000_000, 0)
		al, err := align.New[*termMsg](append(alignOpts(cfg), align.WithClock(func() time.Time { return now }))...)
		if err != nil {
			t.Fatal(err)
		}
		for s := range 2 {
			if err := al.Add(s); err != nil {
				t.Fatal(err)
			}
		}
		if err := al.MarkCaughtUp(1); err != nil { // source 1: caught up, silent
			t.Fatal(err)
		}
		// Source 0's event, the last its partition has (live traffic).
		if err := al.Push(0, 1000, "tx-1", &termMsg{}, true); err != nil {
			t.Fatal(err)
		}
		_, _, ok := al.Pop()
		if ok != tc.atOnce {
			t.Fatalf("idle %v: released at once %v, want %v", tc.idle, ok, tc.atOnce)
		}
		for i := 0; !ok && i < 3; i++ { // the idle wait counts from the next clock read
			now = now.Add(tc.idle)
			_, _, ok = al.Pop()
		}
		if !ok {
			t.Fatalf("idle %v: not released after the idle wait", tc.idle)
		}
	}
}
