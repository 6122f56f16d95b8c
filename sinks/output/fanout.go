package output

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamscore/streamscore/internal/promreg"
)

// Fanout writes every batch to several sinks concurrently and is itself a
// Sink. It is also the metrics wrapper of the package: each sink's publish
// latency, errors and acked messages are observed here, once, whatever the
// sink (wrap a single sink in a one-element Fanout to get its metrics).
//
// A failing sink is retried with capped exponential backoff (with jitter)
// until it acknowledges or ctx ends; when it reports which messages failed
// (*BatchError), only those are retried. A sink that is down therefore
// blocks WriteBatch — backpressure — and never loses a record. Other sinks
// of the batch are not held back by it, but the call returns only when all
// are done.
type Fanout struct {
	sinks   []Sink
	cfg     fanoutConfig
	metrics []*sinkMetrics // per sink, nil without a registerer
	health  []sinkHealth   // per sink: failing since, last log line
	quit    chan struct{}
	once    sync.Once
	err     error
}

// sinkHealth is one sink's failure state, for the observer and the
// rate-limited log.
type sinkHealth struct {
	mu         sync.Mutex
	failing    bool
	lastLog    time.Time
	suppressed int
}

// FanoutOption configures NewFanout.
type FanoutOption func(*fanoutConfig) error

type fanoutConfig struct {
	min, max time.Duration
	reg      prometheus.Registerer
	log      *slog.Logger
	logEvery time.Duration
	observe  func(sink string, err error)
	classify func(err error) Class
}

// WithFanoutObserver calls f(sink, err) after every failed write to a sink
// (err the sink's error) and once after the first successful write that
// follows failures (err nil): the engine turns it into readiness (a sink
// that keeps failing — down, or a misnamed topic retried without end —
// makes the instance unready with the cause). f must be quick and safe for
// concurrent use. Default: none.
func WithFanoutObserver(f func(sink string, err error)) FanoutOption {
	return func(c *fanoutConfig) error { c.observe = f; return nil }
}

// WithFanoutClassifier classifies the errors of the sinks that do not
// implement Classifier themselves (a sink wrapped in a type of the
// caller's, or one of another package), e.g. with sinks.Classify. f must
// be quick and safe for concurrent use. Default: none, and such a sink's
// errors are all retried (backpressure). The trap: without it, a wrapper
// that hides its sink's Classify also hides that a record was refused for
// good, and the Fanout retries that record without end.
func WithFanoutClassifier(f func(err error) Class) FanoutOption {
	return func(c *fanoutConfig) error { c.classify = f; return nil }
}

// WithFanoutBackoff sets the first and the largest wait between retries of
// a failing sink (default 10ms and 5s; the wait doubles, with jitter).
// min must be > 0 and max >= min, or NewFanout fails with
// ErrInvalidFanoutOption. The trap: a large max delays recovery after a
// short outage by up to max.
func WithFanoutBackoff(min, max time.Duration) FanoutOption {
	return func(c *fanoutConfig) error {
		if min <= 0 || max < min {
			return fmt.Errorf("%w: backoff min %v, max %v: want 0 < min <= max", ErrInvalidFanoutOption, min, max)
		}
		c.min, c.max = min, max
		return nil
	}
}

// WithFanoutRegisterer registers the sink metrics (streamscore_sinks_publish_seconds,
// streamscore_sinks_publish_errors_total, streamscore_sinks_messages_total)
// with reg. Default: no metrics. Sinks must have distinct names, which
// become the sink label. NewFanout fails if reg refuses the metrics for a
// reason other than their being already registered (a wiring bug).
func WithFanoutRegisterer(reg prometheus.Registerer) FanoutOption {
	return func(c *fanoutConfig) error { c.reg = reg; return nil }
}

// WithFanoutLogger logs failed sink writes at Warn level with the cause:
// the first failure of a sink at once, then at most one line every 10 s
// per sink while it keeps failing (with the number of failures not
// logged), and a line at Info when it recovers. Default: no logging;
// failures are otherwise visible only in the metrics, since WriteBatch
// retries them.
func WithFanoutLogger(l *slog.Logger) FanoutOption {
	return func(c *fanoutConfig) error { c.log = l; return nil }
}

// ErrInvalidFanoutOption is wrapped by NewFanout's error for an option
// given a value out of its range.
var ErrInvalidFanoutOption = errors.New("sinks: invalid fanout option")

// NewFanout returns a Fanout over sinks, which it owns: Close closes them.
// It fails for an invalid option (ErrInvalidFanoutOption) or metrics the
// registerer refuses; the sinks are then not closed.
func NewFanout(sinks []Sink, opts ...FanoutOption) (*Fanout, error) {
	cfg := fanoutConfig{min: 10 * time.Millisecond, max: 5 * time.Second, logEvery: 10 * time.Second}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	f := &Fanout{sinks: append([]Sink(nil), sinks...), cfg: cfg, quit: make(chan struct{}), health: make([]sinkHealth, len(sinks))}
	if cfg.reg != nil {
		fm, err := newFanoutMetrics(cfg.reg)
		if err != nil {
			return nil, fmt.Errorf("register fanout metrics: %w", err)
		}
		f.metrics = make([]*sinkMetrics, len(f.sinks))
		for i, s := range f.sinks {
			f.metrics[i] = fm.forSink(s)
		}
	}
	return f, nil
}

// Name returns "fanout".
func (f *Fanout) Name() string { return "fanout" }

// WriteBatch writes msgs to every sink concurrently and returns nil once all
// have acknowledged every routed message. It returns ctx's error if ctx ends
// first (some sinks may then hold part of the batch; replaying it is safe
// thanks to the IDs), ErrClosed if the Fanout or a sink is closed, and a
// *RejectedError when every message was acknowledged but some that a sink
// rejected for good, one by one (Classifier: ClassRejection, such as a
// message too large): a message rejected within a larger write is retried
// alone first, so that a poison message never takes the others of its
// batch with it. A permanent error
// that names no message (a whole write refused: authorization, an unknown
// topic) is returned as is. Every other error is retried with backoff,
// without end. It starts one goroutine per sink beyond the first and joins
// them all before returning. Safe for concurrent use if the sinks are.
func (f *Fanout) WriteBatch(ctx context.Context, msgs []Message) error {
	select {
	case <-f.quit:
		return ErrClosed
	default:
	}
	if len(msgs) == 0 || len(f.sinks) == 0 {
		return nil
	}
	if len(f.sinks) == 1 {
		return f.write(ctx, 0, msgs)
	}
	errs := make([]error, len(f.sinks))
	var wg sync.WaitGroup
	for i := 1; i < len(f.sinks); i++ {
		wg.Go(func() { errs[i] = f.write(ctx, i, msgs) })
	}
	errs[0] = f.write(ctx, 0, msgs)
	wg.Wait()
	var rej *RejectedError
	for _, err := range errs {
		var r *RejectedError
		switch {
		case err == nil:
		case errors.As(err, &r):
			if rej == nil {
				rej = &RejectedError{}
			}
			rej.Rejected = append(rej.Rejected, r.Rejected...)
		default:
			return err
		}
	}
	if rej != nil {
		slices.SortStableFunc(rej.Rejected, func(a, b Rejection) int { return a.Index - b.Index })
		return rej
	}
	return nil
}

// RejectedError is WriteBatch's error when every message was acknowledged
// except some that a sink rejected for good, each alone: the caller decides
// what replaces them (the stream writes a dead letter without payload).
type RejectedError struct {
	Rejected []Rejection // sorted by Index
}

// Rejection is one message a sink refused for good.
type Rejection struct {
	Index int    // in the msgs given to WriteBatch
	Sink  string // the sink's Name
	Err   error
}

func (e *RejectedError) Error() string {
	if len(e.Rejected) == 0 {
		return "sinks: no message rejected"
	}
	r := e.Rejected[0]
	return fmt.Sprintf("sinks: %d message(s) rejected for good, first at index %d by %s: %v", len(e.Rejected), r.Index, r.Sink, r.Err)
}

// Unwrap returns the rejections' errors.
func (e *RejectedError) Unwrap() []error {
	out := make([]error, len(e.Rejected))
	for i, r := range e.Rejected {
		out[i] = r.Err
	}
	return out
}

// write writes msgs to sink i, retrying until it acks, ctx ends or the
// Fanout is closed. Messages the sink rejects for good are set aside and
// written alone once the rest is acknowledged; those it still rejects
// alone are returned in a *RejectedError.
func (f *Fanout) write(ctx context.Context, i int, msgs []Message) error {
	s, m := f.sinks[i], (*sinkMetrics)(nil)
	if f.metrics != nil {
		m = f.metrics[i]
	}
	all := msgs
	var idx []int // position in all of each message of msgs; nil: the same position
	at := func(j int) int {
		if idx == nil {
			return j
		}
		return idx[j]
	}
	var suspects []int // positions in all rejected for good within a larger write
	var rejected []Rejection
	wait := f.cfg.min
	for len(msgs) > 0 {
		start := time.Now()
		err := s.WriteBatch(ctx, msgs)
		if m != nil {
			m.seconds.Observe(time.Since(start).Seconds())
		}
		if err == nil {
			m.acked(msgs, nil)
			f.succeeded(i)
			break
		}
		if m != nil {
			m.errors.Inc()
		}
		var be *BatchError
		perMessage := errors.As(err, &be) && validIndices(be.Indices, len(msgs))
		if !perMessage || !f.allRejections(i, be) {
			// A sink refusing a record for what it is (too large) is not
			// a sink in trouble: it says nothing of its health.
			f.failed(i, len(msgs), wait, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("write to sink %s: %w", s.Name(), err)
		}
		if !perMessage {
			if f.class(i, err).Has(ClassPermanent) {
				return fmt.Errorf("write to sink %s: rejected for good: %w", s.Name(), err)
			}
		} else {
			m.acked(msgs, be.Indices)
			var retry []Message
			var retryIdx []int
			for j, k := range be.Indices {
				c := f.class(i, be.Errs[j])
				switch {
				case c.Has(ClassRejection) && len(all) == 1:
					rejected = append(rejected, Rejection{Index: at(k), Sink: s.Name(), Err: be.Errs[j]})
				case c.Has(ClassRejection):
					suspects = append(suspects, at(k))
				case c.Has(ClassPermanent):
					return fmt.Errorf("write to sink %s: rejected for good: %w", s.Name(), be.Errs[j])
				default:
					retry = append(retry, msgs[k])
					retryIdx = append(retryIdx, at(k))
				}
			}
			msgs, idx = retry, retryIdx
			if len(msgs) == 0 {
				break
			}
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-f.quit:
			t.Stop()
			return ErrClosed
		}
		wait = min(2*wait, f.cfg.max)
	}
	// A broker refuses a whole partition batch for one oversized message:
	// each suspect is tried alone, so only the poison ones are rejected.
	for _, k := range suspects {
		err := f.write(ctx, i, all[k:k+1])
		var r *RejectedError
		switch {
		case err == nil:
		case errors.As(err, &r):
			for _, x := range r.Rejected {
				x.Index = k
				rejected = append(rejected, x)
			}
		default:
			return err
		}
	}
	if len(rejected) > 0 {
		slices.SortStableFunc(rejected, func(a, b Rejection) int { return a.Index - b.Index })
		return &RejectedError{Rejected: rejected}
	}
	return nil
}

// failed records a failed write to sink i: observer, rate-limited log.
func (f *Fanout) failed(i, n int, wait time.Duration, err error) {
	name := f.sinks[i].Name()
	if f.cfg.observe != nil {
		f.cfg.observe(name, err)
	}
	h := &f.health[i]
	h.mu.Lock()
	h.failing = true
	if f.cfg.log == nil {
		h.mu.Unlock()
		return
	}
	now := time.Now()
	if !h.lastLog.IsZero() && now.Sub(h.lastLog) < f.cfg.logEvery {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	suppressed := h.suppressed
	h.lastLog, h.suppressed = now, 0
	h.mu.Unlock()
	c := f.class(i, err)
	f.cfg.log.Warn("sink write failed", "sink", name, "messages", n, "retryable", c.Has(ClassRetryable),
		"permanent", c.Has(ClassPermanent), "retry_in", wait, "failures_not_logged", suppressed, "err", err)
}

// succeeded records a successful write to sink i: after failures, the
// observer and the log hear that it recovered.
func (f *Fanout) succeeded(i int) {
	h := &f.health[i]
	h.mu.Lock()
	was := h.failing
	h.failing, h.lastLog, h.suppressed = false, time.Time{}, 0
	h.mu.Unlock()
	if !was {
		return
	}
	if f.cfg.observe != nil {
		f.cfg.observe(f.sinks[i].Name(), nil)
	}
	if f.cfg.log != nil {
		f.cfg.log.Info("sink writes succeed again", "sink", f.sinks[i].Name())
	}
}

// allRejections reports whether sink i classifies every failure of be as
// a rejection of the message itself.
func (f *Fanout) allRejections(i int, be *BatchError) bool {
	for _, e := range be.Errs {
		if !f.class(i, e).Has(ClassRejection) {
			return false
		}
	}
	return true
}

// class is what sink i says of err (Classifier), else what the
// WithFanoutClassifier function says, else nothing (the zero Class:
// retried).
func (f *Fanout) class(i int, err error) Class {
	if err == nil {
		return 0
	}
	if cl, ok := f.sinks[i].(Classifier); ok {
		return cl.Classify(err)
	}
	if f.cfg.classify != nil {
		return f.cfg.classify(err)
	}
	return 0
}

// validIndices reports whether idx is a non-empty, strictly increasing list
// of indices below n (so a BatchError can narrow the retry to them).
func validIndices(idx []int, n int) bool {
	if len(idx) == 0 {
		return false
	}
	prev := -1
	for _, i := range idx {
		if i <= prev || i >= n {
			return false
		}
		prev = i
	}
	return true
}

// Close closes every sink (once; later calls return the same result) and
// makes retry loops in progress return ErrClosed.
func (f *Fanout) Close() error {
	f.once.Do(func() {
		close(f.quit)
		var errs []error
		for _, s := range f.sinks {
			if err := s.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close sink %s: %w", s.Name(), err))
			}
		}
		f.err = errors.Join(errs...)
	})
	return f.err
}

type fanoutMetrics struct {
	seconds  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	messages *prometheus.CounterVec
}

func newFanoutMetrics(reg prometheus.Registerer) (*fanoutMetrics, error) {
	m := &fanoutMetrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "streamscore_sinks_publish_seconds",
			Help:    "Duration of one WriteBatch attempt on a sink, until every message is acknowledged or the attempt fails.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16), // 0.2ms .. 6.5s
		}, []string{"sink"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_sinks_publish_errors_total",
			Help: "Failed WriteBatch attempts on a sink (each is retried).",
		}, []string{"sink"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_sinks_messages_total",
			Help: "Messages acknowledged by a sink, by kind (unrouted kinds are not counted).",
		}, []string{"sink", "kind"}),
	}
	var err error
	if m.seconds, err = promreg.Register(reg, m.seconds); err != nil {
		return nil, err
	}
	if m.errors, err = promreg.Register(reg, m.errors); err != nil {
		return nil, err
	}
	if m.messages, err = promreg.Register(reg, m.messages); err != nil {
		return nil, err
	}
	return m, nil
}

// sinkMetrics holds one sink's children of the fanout metrics.
type sinkMetrics struct {
	seconds prometheus.Observer
	errors  prometheus.Counter
	kinds   [NumKinds]prometheus.Counter // nil for kinds the sink does not route
}

func (fm *fanoutMetrics) forSink(s Sink) *sinkMetrics {
	name := s.Name()
	m := &sinkMetrics{
		seconds: fm.seconds.WithLabelValues(name),
		errors:  fm.errors.WithLabelValues(name),
	}
	r, _ := s.(Router)
	for k := range Kind(NumKinds) {
		if r == nil || r.Routes(k) {
			m.kinds[k] = fm.messages.WithLabelValues(name, k.String())
		}
	}
	return m
}

// acked counts msgs as acknowledged, except those at the indices in failed
// (sorted). It is a no-op on a nil receiver.
func (m *sinkMetrics) acked(msgs []Message, failed []int) {
	if m == nil {
		return
	}
	var n [NumKinds]int
	for i := range msgs {
		if len(failed) > 0 && failed[0] == i {
			failed = failed[1:]
			continue
		}
		if k := msgs[i].Kind; int(k) < NumKinds {
			n[k]++
		}
	}
	for k, c := range n {
		if c > 0 && m.kinds[k] != nil {
			m.kinds[k].Add(float64(c))
		}
	}
}
