// Package sinktest is a conformance suite for implementations of
// output.Sink: run it from the implementation's tests against a real (or
// embedded) downstream system.
//
// # Concepts
//
// A Target is a freshly created sink plus a way to read back what arrived
// downstream. Run creates one Target per subtest and checks that WriteBatch
// delivers every routed message (value, ID and, where the transport keeps
// it, key), skips unrouted kinds, is safe for concurrent use, never reports
// success for messages that did not arrive, and that Close is idempotent
// and makes WriteBatch fail with output.ErrClosed.
//
// # Concurrency
//
// Run calls t.Run sequentially; the subtests do not call t.Parallel.
//
// # Metrics
//
// None of its own. MetricValue and Lint read and check what a sink
// registered on a prometheus.Gatherer.
package sinktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/sinks/output"
)

// Received is a message as the downstream side holds it.
type Received struct {
	Kind  output.Kind // from the destination it arrived on
	Key   []byte
	Value []byte
	ID    string // from the streamscore-id header
}

// Target is one sink under test.
type Target struct {
	Sink output.Sink
	// Routed lists the kinds Sink has a destination for (at least one).
	// Every other kind must be skipped.
	Routed []output.Kind
	// Collect returns every message delivered since the Target was
	// created, waiting up to timeout for at least n of them.
	Collect func(t *testing.T, n int, timeout time.Duration) []Received
	// KeepsKey is true when the transport delivers Message.Key (Kafka),
	// false when it drops it (NATS).
	KeepsKey bool
	// Timeout bounds each WriteBatch and each wait for deliveries
	// (default 10s).
	Timeout time.Duration
}

func (tg *Target) timeout() time.Duration {
	if tg.Timeout > 0 {
		return tg.Timeout
	}
	return 10 * time.Second
}

// Run runs the conformance suite. newTarget must return a fresh Target
// (its own destinations or its own server) on every call and register its
// cleanup with t.Cleanup; Run closes the sink itself.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	t.Run("Batch", func(t *testing.T) { testBatch(t, newTarget(t)) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, newTarget(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newTarget(t)) })
	t.Run("CanceledContext", func(t *testing.T) { testCanceled(t, newTarget(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, newTarget(t)) })
}

func routedSet(tg Target) map[output.Kind]bool {
	m := make(map[output.Kind]bool)
	for _, k := range tg.Routed {
		m[k] = true
	}
	return m
}

var allKinds = []output.Kind{output.KindScore, output.KindAlert, output.KindAudit, output.KindDeadLetter}

// Batch returns n messages cycling over every kind, with distinct IDs
// prefixed by prefix, and the number of them whose kind is in routed.
func Batch(prefix string, n int, routed map[output.Kind]bool) ([]output.Message, int) {
	msgs := make([]output.Message, n)
	want := 0
	for i := range msgs {
		k := allKinds[i%len(allKinds)]
		msgs[i] = output.Message{
			Kind:  k,
			Key:   fmt.Appendf(nil, "c-%d", i%7),
			Value: fmt.Appendf(nil, `{"tx_id":"%s-%d","n":%d}`, prefix, i, i),
			ID:    fmt.Sprintf("%s-%d", prefix, i),
		}
		if routed[k] {
			want++
		}
	}
	return msgs, want
}

// Check asserts that got holds each routed message of msgs exactly once
// (by ID, with its kind, value and, if keepsKey, key) and nothing else.
func Check(t *testing.T, msgs []output.Message, routed map[output.Kind]bool, got []Received, keepsKey bool) {
	t.Helper()
	byID := make(map[string]*output.Message, len(msgs))
	for i := range msgs {
		byID[msgs[i].ID] = &msgs[i]
	}
	seen := make(map[string]int, len(got))
	for _, r := range got {
		seen[r.ID]++
		m, ok := byID[r.ID]
		switch {
		case !ok:
			t.Errorf("unexpected message id %q value %q", r.ID, r.Value)
		case !routed[m.Kind]:
			t.Errorf("message %s of unrouted kind %s was delivered", r.ID, m.Kind)
		case r.Kind != m.Kind:
			t.Errorf("message %s: arrived as %s, want %s", r.ID, r.Kind, m.Kind)
		case string(r.Value) != string(m.Value):
			t.Errorf("message %s: value %q, want %q", r.ID, r.Value, m.Value)
		case keepsKey && string(r.Key) != string(m.Key):
			t.Errorf("message %s: key %q, want %q", r.ID, r.Key, m.Key)
		}
	}
	for _, m := range msgs {
		if routed[m.Kind] && seen[m.ID] != 1 {
			t.Errorf("message %s (%s): delivered %d times, want 1", m.ID, m.Kind, seen[m.ID])
		}
	}
}

func closeSink(t *testing.T, s output.Sink) {
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func testBatch(t *testing.T, tg Target) {
	defer closeSink(t, tg.Sink)
	routed := routedSet(tg)
	msgs, want := Batch("batch", 200, routed)
	ctx, cancel := context.WithTimeout(context.Background(), tg.timeout())
	defer cancel()
	if err := tg.Sink.WriteBatch(ctx, msgs); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
	got := tg.Collect(t, want, tg.timeout())
	if len(got) == want { // give stray (unrouted or duplicate) messages a moment to show
		got = tg.Collect(t, want+1, 200*time.Millisecond)
	}
	Check(t, msgs, routed, got, tg.KeepsKey)
}

func testEmpty(t *testing.T, tg Target) {
	defer closeSink(t, tg.Sink)
	ctx, cancel := context.WithTimeout(context.Background(), tg.timeout())
	defer cancel()
	if err := tg.Sink.WriteBatch(ctx, nil); err != nil {
		t.Errorf("WriteBatch(nil): %v", err)
	}
	routed := routedSet(tg)
	var unrouted []output.Message
	for _, k := range allKinds {
		if !routed[k] {
			unrouted = append(unrouted, output.Message{Kind: k, Value: []byte("x"), ID: "unrouted-" + k.String()})
		}
	}
	unrouted = append(unrouted, output.Message{Kind: output.Kind(200), Value: []byte("x"), ID: "unknown-kind"})
	if err := tg.Sink.WriteBatch(ctx, unrouted); err != nil {
		t.Errorf("WriteBatch(unrouted kinds): %v", err)
	}
	if got := tg.Collect(t, 1, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("unrouted messages were delivered: %v", got)
	}
}

func testConcurrent(t *testing.T, tg Target) {
	defer closeSink(t, tg.Sink)
	routed := routedSet(tg)
	const writers, per = 4, 50
	var all []output.Message
	want := 0
	batches := make([][]output.Message, writers)
	for w := range batches {
		var n int
		batches[w], n = Batch(fmt.Sprintf("w%d", w), per, routed)
		all = append(all, batches[w]...)
		want += n
	}
	ctx, cancel := context.WithTimeout(context.Background(), tg.timeout())
	defer cancel()
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range batches {
		wg.Go(func() { errs[w] = tg.Sink.WriteBatch(ctx, batches[w]) })
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", w, err)
		}
	}
	Check(t, all, routed, tg.Collect(t, want, tg.timeout()), tg.KeepsKey)
}

func testCanceled(t *testing.T, tg Target) {
	defer closeSink(t, tg.Sink)
	routed := routedSet(tg)
	msgs, want := Batch("canceled", 20, routed)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tg.Sink.WriteBatch(ctx, msgs); err == nil {
		// Success with a dead context is allowed only if it is true.
		Check(t, msgs, routed, tg.Collect(t, want, tg.timeout()), tg.KeepsKey)
	}
	// The sink stays usable.
	msgs, want = Batch("after-cancel", 20, routed)
	ctx2, cancel2 := context.WithTimeout(context.Background(), tg.timeout())
	defer cancel2()
	if err := tg.Sink.WriteBatch(ctx2, msgs); err != nil {
		t.Fatalf("WriteBatch after a canceled one: %v", err)
	}
	got := tg.Collect(t, want, tg.timeout())
	var mine []Received
	for _, r := range got {
		if len(r.ID) > len("after-cancel") && r.ID[:len("after-cancel")] == "after-cancel" {
			mine = append(mine, r)
		}
	}
	if len(mine) < want { // the canceled batch may have arrived in part
		got = tg.Collect(t, len(got)+want-len(mine), tg.timeout())
		mine = mine[:0]
		for _, r := range got {
			if len(r.ID) > len("after-cancel") && r.ID[:len("after-cancel")] == "after-cancel" {
				mine = append(mine, r)
			}
		}
	}
	Check(t, msgs, routed, mine, tg.KeepsKey)
}

func testClose(t *testing.T, tg Target) {
	routed := routedSet(tg)
	msgs, _ := Batch("close", 4, routed)
	if err := tg.Sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tg.Sink.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tg.timeout())
	defer cancel()
	if err := tg.Sink.WriteBatch(ctx, msgs); !errors.Is(err, output.ErrClosed) {
		t.Errorf("WriteBatch after Close: got %v, want output.ErrClosed", err)
	}
}
