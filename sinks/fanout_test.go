package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/sinktest"
)

// flaky is a fake sink: it fails the first fails calls (with a BatchError
// for the indices in partial, if set, else with a plain error), then
// succeeds, recording every message it accepted.
type flaky struct {
	name    string
	fails   int
	partial []int
	delay   time.Duration

	mu       sync.Mutex
	calls    int
	inflight atomic.Int32
	batches  [][]sinks.Message
	got      []sinks.Message
	closed   int
}

var errDown = errors.New("fake: down")

func (f *flaky) Name() string { return f.name }

func (f *flaky) WriteBatch(ctx context.Context, msgs []sinks.Message) error {
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.batches = append(f.batches, append([]sinks.Message(nil), msgs...))
	if f.calls <= f.fails {
		if f.partial == nil {
			return fmt.Errorf("write: %w", errDown)
		}
		be := &sinks.BatchError{Sink: f.name}
		ok := map[int]bool{}
		for _, i := range f.partial {
			if i < len(msgs) {
				be.Indices = append(be.Indices, i)
				be.Errs = append(be.Errs, errDown)
				ok[i] = true
			}
		}
		for i, m := range msgs {
			if !ok[i] {
				f.got = append(f.got, m)
			}
		}
		return be
	}
	f.got = append(f.got, msgs...)
	return nil
}

func (f *flaky) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *flaky) received() []sinktest.Received {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]sinktest.Received, len(f.got))
	for i, m := range f.got {
		out[i] = sinktest.Received{Kind: m.Kind, Key: m.Key, Value: m.Value, ID: m.ID}
	}
	return out
}

var allRouted = map[sinks.Kind]bool{sinks.KindScore: true, sinks.KindAlert: true, sinks.KindAudit: true, sinks.KindDeadLetter: true}

func fastBackoff() sinks.FanoutOption {
	return sinks.WithFanoutBackoff(time.Millisecond, 5*time.Millisecond)
}

func TestMakeFanoutRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
		ok       bool
	}{
		{"defaults-like", 10 * time.Millisecond, 5 * time.Second, true},
		{"equal", time.Millisecond, time.Millisecond, true},
		{"zero min", 0, time.Second, false},
		{"negative min", -time.Millisecond, time.Second, false},
		{"max below min", time.Second, time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := sinks.MakeFanout(nil, sinks.WithFanoutBackoff(tc.min, tc.max))
			if tc.ok {
				if err != nil || f == nil {
					t.Fatalf("got %v, want a fanout", err)
				}
				f.Close()
				return
			}
			if !errors.Is(err, sinks.ErrInvalidFanoutOption) || f != nil {
				t.Fatalf("got %v, %v; want ErrInvalidFanoutOption", f, err)
			}
		})
	}
	t.Run("NewFanout panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("NewFanout with a bad backoff did not panic")
			}
		}()
		sinks.NewFanout(nil, sinks.WithFanoutBackoff(0, 0))
	})
	t.Run("registerer refusing", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		// A collector of another type under one of the fanout's names.
		if err := reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "streamscore_sinks_publish_errors_total", Help: "x"})); err != nil {
			t.Fatal(err)
		}
		if _, err := sinks.MakeFanout(nil, sinks.WithFanoutRegisterer(reg)); err == nil {
			t.Error("MakeFanout with a registerer refusing its metrics returned no error")
		}
	})
}

func TestFanoutRetriesUntilAcked(t *testing.T) {
	tests := []struct {
		name      string
		fails     int
		partial   []int
		wantCalls int
		wantLast  int // messages in the last call
	}{
		{"healthy", 0, nil, 1, 40},
		{"down three times", 3, nil, 4, 40},
		{"partial failure retries only the failed", 2, []int{1, 7, 39}, 3, 1}, // call 2 gets 3, fails its index 1
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy := &flaky{name: "healthy"}
			sick := &flaky{name: "sick", fails: tc.fails, partial: tc.partial}
			reg := prometheus.NewPedanticRegistry()
			f := sinks.NewFanout([]sinks.Sink{healthy, sick}, fastBackoff(), sinks.WithFanoutRegisterer(reg))
			defer f.Close()
			msgs, _ := sinktest.Batch("fo", 40, allRouted)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := f.WriteBatch(ctx, msgs); err != nil {
				t.Fatalf("WriteBatch: %v", err)
			}
			sinktest.Check(t, msgs, allRouted, healthy.received(), true)
			sinktest.Check(t, msgs, allRouted, sick.received(), true)
			if sick.calls != tc.wantCalls || len(sick.batches[len(sick.batches)-1]) != tc.wantLast {
				t.Errorf("sick sink: %d calls, last of %d messages; want %d, %d", sick.calls, len(sick.batches[len(sick.batches)-1]), tc.wantCalls, tc.wantLast)
			}
			sickL := map[string]string{"sink": "sick"}
			if got := metricValue(t, reg, "streamscore_sinks_publish_errors_total", sickL); got != float64(tc.fails) {
				t.Errorf("publish_errors_total{sick} = %v, want %d", got, tc.fails)
			}
			if got := metricValue(t, reg, "streamscore_sinks_publish_seconds", sickL); got != float64(tc.wantCalls) {
				t.Errorf("publish_seconds{sick} count = %v, want %d", got, tc.wantCalls)
			}
			for _, s := range []string{"healthy", "sick"} {
				if got := metricValue(t, reg, "streamscore_sinks_messages_total", map[string]string{"sink": s, "kind": "alert"}); got != 10 {
					t.Errorf("messages_total{%s,alert} = %v, want 10", s, got)
				}
			}
			lint(t, reg)
		})
	}
}

func TestFanoutContextCancel(t *testing.T) {
	down := &flaky{name: "down", fails: 1 << 30}
	healthy := &flaky{name: "healthy"}
	f := sinks.NewFanout([]sinks.Sink{down, healthy}, fastBackoff())
	defer f.Close()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	msgs, _ := sinktest.Batch("cancel", 8, allRouted)
	start := time.Now()
	err := f.WriteBatch(ctx, msgs)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %v after the deadline", d)
	}
	if down.calls < 2 {
		t.Errorf("down sink tried %d times, want retries", down.calls)
	}
	if down.inflight.Load() != 0 || healthy.inflight.Load() != 0 {
		t.Error("a sink write is still running after WriteBatch returned")
	}
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(time.Second); after > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // unrelated goroutines may still be exiting
		after = runtime.NumGoroutine()
	}
	if after > before {
		t.Errorf("goroutines: %d before, %d after", before, after)
	}
}

// barrier is a fake sink whose WriteBatch returns only once all its
// siblings have entered theirs: the Fanout must call them concurrently.
type barrier struct {
	name    string
	arrived *sync.WaitGroup
	all     chan struct{}
	timeout atomic.Bool
}

func (b *barrier) Name() string { return b.name }
func (b *barrier) Close() error { return nil }
func (b *barrier) WriteBatch(ctx context.Context, _ []sinks.Message) error {
	b.arrived.Done()
	select {
	case <-b.all:
		return nil
	case <-time.After(5 * time.Second):
		b.timeout.Store(true)
		return ctx.Err()
	}
}

func TestFanoutConcurrentSinks(t *testing.T) {
	var arrived sync.WaitGroup
	all := make(chan struct{})
	bs := make([]*barrier, 3)
	ss := make([]sinks.Sink, len(bs))
	arrived.Add(len(bs))
	for i := range bs {
		bs[i] = &barrier{name: fmt.Sprint("s", i), arrived: &arrived, all: all}
		ss[i] = bs[i]
	}
	go func() { arrived.Wait(); close(all) }()
	f := sinks.NewFanout(ss)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WriteBatch(ctx, []sinks.Message{{ID: "x"}}); err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.timeout.Load() {
			t.Errorf("sink %s waited for its siblings: sinks were not written concurrently", b.name)
		}
	}
}

func TestFanoutClose(t *testing.T) {
	a, b := &flaky{name: "a"}, &flaky{name: "b"}
	f := sinks.NewFanout([]sinks.Sink{a, b})
	for range 3 {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if a.closed != 1 || b.closed != 1 {
		t.Errorf("sinks closed %d and %d times, want once", a.closed, b.closed)
	}
	if err := f.WriteBatch(context.Background(), []sinks.Message{{ID: "x"}}); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("WriteBatch after Close: got %v, want ErrClosed", err)
	}
}

func TestFanoutCloseStopsRetrying(t *testing.T) {
	down := &flaky{name: "down", fails: 1 << 30}
	f := sinks.NewFanout([]sinks.Sink{down}, sinks.WithFanoutBackoff(10*time.Millisecond, 10*time.Millisecond))
	done := make(chan error, 1)
	go func() { done <- f.WriteBatch(context.Background(), []sinks.Message{{ID: "x"}}) }()
	time.Sleep(30 * time.Millisecond)
	f.Close()
	select {
	case err := <-done:
		if !errors.Is(err, sinks.ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteBatch still retrying after Close")
	}
}

// TestFanoutConformance runs the suite over a Fanout of one NATS and one
// Kafka sink, reading back from Kafka: the fan-out is a Sink too.
func TestFanoutConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target {
		k := kafkaTarget(t)
		n := coreTarget(t)
		f := sinks.NewFanout([]sinks.Sink{n.Sink, k.Sink}, sinks.WithFanoutRegisterer(prometheus.NewPedanticRegistry()))
		k.Sink = f
		k.Routed = []sinks.Kind{sinks.KindScore, sinks.KindAlert, sinks.KindAudit}
		return k
	})
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"closed", sinks.ErrClosed, false},
		{"canceled", context.Canceled, false},
		{"wrapped deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"batch of retryable", &sinks.BatchError{Indices: []int{0}, Errs: []error{fmt.Errorf("x: %w", errors.Join(errDown, context.DeadlineExceeded))}}, false},
		{"plain", errDown, false},
		{"nats disconnected", fmt.Errorf("await pub ack: %w", nats.ErrDisconnected), true},
		{"ack timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"stalled", jetstream.ErrTooManyStalledMsgs, true},
		{"nats closed", nats.ErrConnectionClosed, false},
		{"max payload", nats.ErrMaxPayload, false},
		{"kafka leader", kafka.LeaderNotAvailable, true},
		{"kafka too large", kafka.MessageSizeTooLarge, false},
		{"kafka write errors mixed", kafka.WriteErrors{nil, kafka.LeaderNotAvailable, kafka.MessageSizeTooLarge}, false},
		{"kafka write errors retryable", kafka.WriteErrors{nil, kafka.NotLeaderForPartition}, true},
		{"batch all retryable", &sinks.BatchError{Indices: []int{0, 1}, Errs: []error{nats.ErrTimeout, kafka.RequestTimedOut}}, true},
		{"batch one permanent", &sinks.BatchError{Indices: []int{0, 1}, Errs: []error{nats.ErrTimeout, nats.ErrMaxPayload}}, false},
		{"conn refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sinks.IsRetryable(tc.err); got != tc.want {
				t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// rejecting fails every write with a permanent Kafka error.
type rejecting struct{ calls int }

func (r *rejecting) Name() string { return "rejecting" }
func (r *rejecting) WriteBatch(context.Context, []sinks.Message) error {
	r.calls++
	return kafka.MessageSizeTooLarge
}
func (r *rejecting) Close() error { return nil }

func TestFanoutStopsOnPermanentError(t *testing.T) {
	r := &rejecting{}
	f := sinks.NewFanout([]sinks.Sink{r}, sinks.WithFanoutBackoff(time.Millisecond, time.Millisecond))
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.WriteBatch(ctx, []sinks.Message{{Kind: sinks.KindScore, Value: []byte("x")}})
	if err == nil || !errors.Is(err, kafka.MessageSizeTooLarge) || ctx.Err() != nil {
		t.Fatalf("got %v (ctx %v), want the permanent error at once", err, ctx.Err())
	}
	if r.calls != 1 {
		t.Fatalf("%d calls, want 1 (no retry of a permanent rejection)", r.calls)
	}
	if !sinks.IsPermanent(kafka.MessageSizeTooLarge) || sinks.IsPermanent(kafka.LeaderNotAvailable) || sinks.IsPermanent(errors.New("weird")) {
		t.Fatal("IsPermanent misclassifies")
	}
}

// poisoned is a fake sink that refuses a whole write, message by message,
// when any message of it is "poison" (as a broker refuses a partition's
// batch for one oversized record), with err; it records what it accepted.
type poisoned struct {
	err      error
	mu       sync.Mutex
	accepted []string
}

func (p *poisoned) Name() string { return "poisoned" }
func (p *poisoned) Close() error { return nil }
func (p *poisoned) WriteBatch(_ context.Context, msgs []sinks.Message) error {
	for _, m := range msgs {
		if string(m.Value) == "poison" {
			be := &sinks.BatchError{Sink: "poisoned"}
			for i := range msgs {
				be.Indices = append(be.Indices, i)
				be.Errs = append(be.Errs, fmt.Errorf("write message: %w", p.err))
			}
			return be
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.accepted = append(p.accepted, string(m.Value))
	}
	return nil
}

// TestFanoutIsolatesRejections: a message a sink refuses for what it is
// (too large) takes nothing else of its batch with it: the others are
// written, and only the poison ones come back in a RejectedError, with
// their index, whichever sink refused them. A permanent error that is not
// about the message (authorization) still stops the write.
func TestFanoutIsolatesRejections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs := []sinks.Message{{Value: []byte("a")}, {Value: []byte("poison")}, {Value: []byte("b")}, {Value: []byte("poison")}, {Value: []byte("c")}}
	for _, err := range []error{kafka.MessageSizeTooLarge, nats.ErrMaxPayload, kafka.MessageTooLargeError{}} {
		p, ok := &poisoned{err: err}, &flaky{name: "ok"}
		var observed atomic.Int32
		f := sinks.NewFanout([]sinks.Sink{p, ok}, fastBackoff(),
			sinks.WithFanoutObserver(func(string, error) { observed.Add(1) }))
		got := f.WriteBatch(ctx, msgs)
		var rej *sinks.RejectedError
		if !errors.As(got, &rej) || len(rej.Rejected) != 2 || rej.Rejected[0].Index != 1 || rej.Rejected[1].Index != 3 ||
			rej.Rejected[0].Sink != "poisoned" || !sinks.IsRejection(rej.Rejected[0].Err) {
			t.Fatalf("%v: WriteBatch = %v, want the two poison messages rejected", err, got)
		}
		if want := []string{"a", "b", "c"}; fmt.Sprint(p.accepted) != fmt.Sprint(want) {
			t.Errorf("%v: the poisoned sink accepted %v, want %v", err, p.accepted, want)
		}
		if n := len(ok.received()); n != len(msgs) {
			t.Errorf("%v: the other sink got %d messages, want %d", err, n, len(msgs))
		}
		if n := observed.Load(); n != 0 {
			t.Errorf("%v: the observer heard %d failures: a refused record is not a sink in trouble (readiness would stay 503)", err, n)
		}
		f.Close()
	}
	p := &poisoned{err: kafka.TopicAuthorizationFailed}
	f := sinks.NewFanout([]sinks.Sink{p}, fastBackoff())
	defer f.Close()
	got := f.WriteBatch(ctx, msgs)
	var rej *sinks.RejectedError
	if got == nil || errors.As(got, &rej) || !errors.Is(got, kafka.TopicAuthorizationFailed) {
		t.Fatalf("authorization refused: WriteBatch = %v, want the error itself, not rejections", got)
	}
}

// TestFanoutObserverAndLog: every failed write reaches the observer with
// the cause and the recovery once; the log says the first failure at once
// and then at most one line per interval, never one per retry.
func TestFanoutObserverAndLog(t *testing.T) {
	f0 := &flaky{name: "k", fails: 30}
	var mu sync.Mutex
	var seen []error
	var logBuf syncWriter
	f := sinks.NewFanout([]sinks.Sink{f0}, fastBackoff(),
		sinks.WithFanoutLogger(slog.New(slog.NewTextHandler(&logBuf, nil))),
		sinks.WithFanoutObserver(func(sink string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if sink != "k" {
				t.Errorf("observer: sink %q", sink)
			}
			seen = append(seen, err)
		}))
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WriteBatch(ctx, []sinks.Message{{Kind: sinks.KindScore, Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteBatch(ctx, []sinks.Message{{Kind: sinks.KindScore, Value: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 31 || !errors.Is(seen[0], errDown) || seen[30] != nil {
		t.Fatalf("observer saw %d calls (first %v, last %v), want 30 failures then one recovery", len(seen), seen[0], seen[len(seen)-1])
	}
	out := logBuf.String()
	if n := strings.Count(out, "sink write failed"); n != 1 {
		t.Errorf("%d 'sink write failed' lines for 30 failures in well under 10 s, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "fake: down") || strings.Count(out, "sink writes succeed again") != 1 {
		t.Errorf("log lacks the cause or the single recovery line:\n%s", out)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
