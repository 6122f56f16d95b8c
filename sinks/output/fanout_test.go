package output_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamscore/streamscore/sinks/output"
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
	batches  [][]output.Message
	got      []output.Message
	closed   int
}

var errDown = errors.New("fake: down")

func (f *flaky) Name() string { return f.name }

func (f *flaky) WriteBatch(ctx context.Context, msgs []output.Message) error {
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
	f.batches = append(f.batches, append([]output.Message(nil), msgs...))
	if f.calls <= f.fails {
		if f.partial == nil {
			return fmt.Errorf("write: %w", errDown)
		}
		be := &output.BatchError{Sink: f.name}
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

var allRouted = map[output.Kind]bool{output.KindScore: true, output.KindAlert: true, output.KindAudit: true, output.KindDeadLetter: true}

func fastBackoff() output.FanoutOption {
	return output.WithFanoutBackoff(time.Millisecond, 5*time.Millisecond)
}

func TestNewFanoutRejectsBadOptions(t *testing.T) {
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
			f, err := output.NewFanout(nil, output.WithFanoutBackoff(tc.min, tc.max))
			if tc.ok {
				if err != nil || f == nil {
					t.Fatalf("got %v, want a fanout", err)
				}
				f.Close()
				return
			}
			if !errors.Is(err, output.ErrInvalidFanoutOption) || f != nil {
				t.Fatalf("got %v, %v; want ErrInvalidFanoutOption", f, err)
			}
		})
	}
	t.Run("registerer refusing", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		// A collector of another type under one of the fanout's names.
		if err := reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "streamscore_sinks_publish_errors_total", Help: "x"})); err != nil {
			t.Fatal(err)
		}
		if _, err := output.NewFanout(nil, output.WithFanoutRegisterer(reg)); err == nil {
			t.Error("NewFanout with a registerer refusing its metrics returned no error")
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
			f, err := output.NewFanout([]output.Sink{healthy, sick}, fastBackoff(), output.WithFanoutRegisterer(reg))
			if err != nil {
				t.Fatal(err)
			}
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
			if got := sinktest.MetricValue(t, reg, "streamscore_sinks_publish_errors_total", sickL); got != float64(tc.fails) {
				t.Errorf("publish_errors_total{sick} = %v, want %d", got, tc.fails)
			}
			if got := sinktest.MetricValue(t, reg, "streamscore_sinks_publish_seconds", sickL); got != float64(tc.wantCalls) {
				t.Errorf("publish_seconds{sick} count = %v, want %d", got, tc.wantCalls)
			}
			for _, s := range []string{"healthy", "sick"} {
				if got := sinktest.MetricValue(t, reg, "streamscore_sinks_messages_total", map[string]string{"sink": s, "kind": "alert"}); got != 10 {
					t.Errorf("messages_total{%s,alert} = %v, want 10", s, got)
				}
			}
			sinktest.Lint(t, reg)
		})
	}
}

func TestFanoutContextCancel(t *testing.T) {
	down := &flaky{name: "down", fails: 1 << 30}
	healthy := &flaky{name: "healthy"}
	f, err := output.NewFanout([]output.Sink{down, healthy}, fastBackoff())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	msgs, _ := sinktest.Batch("cancel", 8, allRouted)
	start := time.Now()
	err = f.WriteBatch(ctx, msgs)
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
func (b *barrier) WriteBatch(ctx context.Context, _ []output.Message) error {
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
	ss := make([]output.Sink, len(bs))
	arrived.Add(len(bs))
	for i := range bs {
		bs[i] = &barrier{name: fmt.Sprint("s", i), arrived: &arrived, all: all}
		ss[i] = bs[i]
	}
	go func() { arrived.Wait(); close(all) }()
	f, err := output.NewFanout(ss)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WriteBatch(ctx, []output.Message{{ID: "x"}}); err != nil {
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
	f, err := output.NewFanout([]output.Sink{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if a.closed != 1 || b.closed != 1 {
		t.Errorf("sinks closed %d and %d times, want once", a.closed, b.closed)
	}
	if err := f.WriteBatch(context.Background(), []output.Message{{ID: "x"}}); !errors.Is(err, output.ErrClosed) {
		t.Errorf("WriteBatch after Close: got %v, want ErrClosed", err)
	}
}

func TestFanoutCloseStopsRetrying(t *testing.T) {
	down := &flaky{name: "down", fails: 1 << 30}
	f, err := output.NewFanout([]output.Sink{down}, output.WithFanoutBackoff(10*time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.WriteBatch(context.Background(), []output.Message{{ID: "x"}}) }()
	time.Sleep(30 * time.Millisecond)
	f.Close()
	select {
	case err := <-done:
		if !errors.Is(err, output.ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteBatch still retrying after Close")
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
	f, err := output.NewFanout([]output.Sink{f0}, fastBackoff(),
		output.WithFanoutLogger(slog.New(slog.NewTextHandler(&logBuf, nil))),
		output.WithFanoutObserver(func(sink string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if sink != "k" {
				t.Errorf("observer: sink %q", sink)
			}
			seen = append(seen, err)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WriteBatch(ctx, []output.Message{{Kind: output.KindScore, Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteBatch(ctx, []output.Message{{Kind: output.KindScore, Value: []byte("y")}}); err != nil {
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

// errTooBig stands for a transport's "message too large".
var errTooBig = errors.New("fake: too big")

// refuser refuses, one by one, every message whose value is "poison",
// with errTooBig; it classifies its errors only when classify is set.
type refuser struct {
	classify bool
	calls    atomic.Int32
}

func (r *refuser) Name() string { return "refuser" }
func (r *refuser) Close() error { return nil }
func (r *refuser) WriteBatch(_ context.Context, msgs []output.Message) error {
	r.calls.Add(1)
	be := &output.BatchError{Sink: "refuser"}
	for i, m := range msgs {
		if string(m.Value) == "poison" {
			be.Add(i, fmt.Errorf("publish: %w", errTooBig))
		}
	}
	if len(be.Indices) > 0 {
		return be
	}
	return nil
}

// classifiedRefuser is a refuser that classifies its own errors.
type classifiedRefuser struct{ refuser }

func (*classifiedRefuser) Classify(err error) output.Class {
	if errors.Is(err, errTooBig) {
		return output.ClassPermanent | output.ClassRejection
	}
	return 0
}

func tooBig(err error) output.Class {
	if errors.Is(err, errTooBig) {
		return output.ClassRejection
	}
	return 0
}

// TestFanoutClassifier: a refused message is isolated when the sink
// classifies its errors, or when WithFanoutClassifier does for a sink that
// does not (the sink's own Classify first); with neither, its error says
// nothing and the Fanout retries until ctx ends.
func TestFanoutClassifier(t *testing.T) {
	msgs := []output.Message{{Value: []byte("a")}, {Value: []byte("poison")}, {Value: []byte("b")}}
	tests := []struct {
		name     string
		sink     output.Sink
		opts     []output.FanoutOption
		rejected bool
	}{
		{"sink classifies", &classifiedRefuser{}, nil, true},
		{"option classifies", &refuser{}, []output.FanoutOption{output.WithFanoutClassifier(tooBig)}, true},
		{"sink before option", &classifiedRefuser{}, []output.FanoutOption{output.WithFanoutClassifier(func(error) output.Class { return 0 })}, true},
		{"nobody classifies", &refuser{}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := output.NewFanout([]output.Sink{tc.sink}, append(tc.opts, fastBackoff())...)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err = f.WriteBatch(ctx, msgs)
			var rej *output.RejectedError
			if tc.rejected {
				if !errors.As(err, &rej) || len(rej.Rejected) != 1 || rej.Rejected[0].Index != 1 || !errors.Is(rej.Rejected[0].Err, errTooBig) {
					t.Fatalf("WriteBatch = %v, want message 1 rejected", err)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &rej) {
				t.Fatalf("WriteBatch = %v, want the retries cut by the deadline", err)
			}
		})
	}
}
