package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/sinks/sinktest"
)

// TestFanoutConformance runs the suite over a Fanout of one NATS and one
// Kafka sink, reading back from Kafka: the fan-out is a Sink too.
func TestFanoutConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target {
		k := kafkaTarget(t)
		n := coreTarget(t)
		f, err := output.NewFanout([]output.Sink{n.Sink, k.Sink}, output.WithFanoutRegisterer(prometheus.NewPedanticRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		k.Sink = f
		k.Routed = []output.Kind{output.KindScore, output.KindAlert, output.KindAudit}
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
		{"closed", output.ErrClosed, false},
		{"canceled", context.Canceled, false},
		{"wrapped deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"batch of retryable", &output.BatchError{Indices: []int{0}, Errs: []error{fmt.Errorf("x: %w", errors.Join(errDown, context.DeadlineExceeded))}}, false},
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
		{"batch all retryable", &output.BatchError{Indices: []int{0, 1}, Errs: []error{nats.ErrTimeout, kafka.RequestTimedOut}}, true},
		{"batch one permanent", &output.BatchError{Indices: []int{0, 1}, Errs: []error{nats.ErrTimeout, nats.ErrMaxPayload}}, false},
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

// The transports classify their errors for a Fanout; so do the fakes
// below, with the same function, standing for a transport that fails.
var (
	_ output.Classifier = (*sinks.NATS)(nil)
	_ output.Classifier = (*sinks.Kafka)(nil)
	_ output.Router     = (*sinks.NATS)(nil)
	_ output.Router     = (*sinks.Kafka)(nil)
)

var errDown = errors.New("fake: down")

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want output.Class
	}{
		{"nil", nil, 0},
		{"unknown", errDown, 0},
		{"closed", output.ErrClosed, 0},
		{"nats timeout", nats.ErrTimeout, output.ClassRetryable},
		{"nats max payload", fmt.Errorf("publish: %w", nats.ErrMaxPayload), output.ClassPermanent | output.ClassRejection},
		{"nats authorization", nats.ErrAuthorization, output.ClassPermanent},
		{"kafka leader", kafka.LeaderNotAvailable, output.ClassRetryable},
		{"kafka too large", kafka.MessageSizeTooLarge, output.ClassPermanent | output.ClassRejection},
		{"kafka client-side too large", kafka.MessageTooLargeError{}, output.ClassPermanent | output.ClassRejection},
		{"kafka topic authorization", kafka.TopicAuthorizationFailed, output.ClassPermanent},
		{"batch one permanent", &output.BatchError{Indices: []int{0, 1}, Errs: []error{nats.ErrTimeout, nats.ErrAuthorization}}, output.ClassPermanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sinks.Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %b, want %b", tc.err, got, tc.want)
			}
		})
	}
}

// rejecting fails every write with a permanent Kafka error.
type rejecting struct{ calls int }

func (r *rejecting) Classify(err error) output.Class { return sinks.Classify(err) }

func (r *rejecting) Name() string { return "rejecting" }
func (r *rejecting) WriteBatch(context.Context, []output.Message) error {
	r.calls++
	return kafka.MessageSizeTooLarge
}
func (r *rejecting) Close() error { return nil }

func TestFanoutStopsOnPermanentError(t *testing.T) {
	r := &rejecting{}
	f, err := output.NewFanout([]output.Sink{r}, output.WithFanoutBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = f.WriteBatch(ctx, []output.Message{{Kind: output.KindScore, Value: []byte("x")}})
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

func (p *poisoned) Name() string                    { return "poisoned" }
func (p *poisoned) Classify(err error) output.Class { return sinks.Classify(err) }
func (p *poisoned) Close() error                    { return nil }
func (p *poisoned) WriteBatch(_ context.Context, msgs []output.Message) error {
	for _, m := range msgs {
		if string(m.Value) == "poison" {
			be := &output.BatchError{Sink: "poisoned"}
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
	msgs := []output.Message{{Value: []byte("a")}, {Value: []byte("poison")}, {Value: []byte("b")}, {Value: []byte("poison")}, {Value: []byte("c")}}
	for _, err := range []error{kafka.MessageSizeTooLarge, nats.ErrMaxPayload, kafka.MessageTooLargeError{}} {
		p, ok := &poisoned{err: err}, &accepting{}
		var observed atomic.Int32
		f, err := output.NewFanout([]output.Sink{p, ok}, output.WithFanoutBackoff(time.Millisecond, 5*time.Millisecond),
			output.WithFanoutObserver(func(string, error) { observed.Add(1) }))
		if err != nil {
			t.Fatal(err)
		}
		got := f.WriteBatch(ctx, msgs)
		var rej *output.RejectedError
		if !errors.As(got, &rej) || len(rej.Rejected) != 2 || rej.Rejected[0].Index != 1 || rej.Rejected[1].Index != 3 ||
			rej.Rejected[0].Sink != "poisoned" || !sinks.IsRejection(rej.Rejected[0].Err) {
			t.Fatalf("%v: WriteBatch = %v, want the two poison messages rejected", err, got)
		}
		if want := []string{"a", "b", "c"}; fmt.Sprint(p.accepted) != fmt.Sprint(want) {
			t.Errorf("%v: the poisoned sink accepted %v, want %v", err, p.accepted, want)
		}
		if n := ok.n.Load(); n != int64(len(msgs)) {
			t.Errorf("%v: the other sink got %d messages, want %d", err, n, len(msgs))
		}
		if n := observed.Load(); n != 0 {
			t.Errorf("%v: the observer heard %d failures: a refused record is not a sink in trouble (readiness would stay 503)", err, n)
		}
		f.Close()
	}
	p := &poisoned{err: kafka.TopicAuthorizationFailed}
	f, err := output.NewFanout([]output.Sink{p}, output.WithFanoutBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := f.WriteBatch(ctx, msgs)
	var rej *output.RejectedError
	if got == nil || errors.As(got, &rej) || !errors.Is(got, kafka.TopicAuthorizationFailed) {
		t.Fatalf("authorization refused: WriteBatch = %v, want the error itself, not rejections", got)
	}
}

// accepting acknowledges every message at once, counting them.
type accepting struct{ n atomic.Int64 }

func (a *accepting) Name() string { return "ok" }
func (a *accepting) Close() error { return nil }
func (a *accepting) WriteBatch(_ context.Context, msgs []output.Message) error {
	a.n.Add(int64(len(msgs)))
	return nil
}
