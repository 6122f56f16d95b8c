package sinks

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamscore/streamscore/sinks/output"

	"github.com/streamscore/streamscore/internal/promreg"
)

// NATS publishes messages to NATS subjects, one subject per Kind.
//
// Its mode (WithNATSMode) says how. NATSModeJetStream (the default): at
// construction it asks JetStream, once per subject, which stream captures
// the subject, and fails with ErrNoStream if one does not; messages go out
// with JetStream async publish carrying the "Nats-Msg-Id" header (=
// Message.ID), and WriteBatch waits for every PubAck: the message is
// stored, and a replay with the same ID inside the stream's duplicate
// window is dropped by the server. NATSModeCore: messages are
// core-published and WriteBatch ends with a flush (PING/PONG): "acked" then
// means the server has received them, not that any subscriber has — a
// weaker guarantee the operator chooses explicitly. NATSModeAuto: JetStream
// for the subjects a stream captures, core for the others (Stream tells
// which). A stream created after NewNATS is not noticed.
//
// NATS does not own the connection: Close does not close nc.
type NATS struct {
	cfg    natsConfig
	nc     *nats.Conn
	js     jetstream.JetStream        // nil when no subject is captured by a stream
	stream [output.NumKinds]string    // stream capturing the kind's subject, "" = core
	batch  [output.NumKinds]NATSBatch // how the kind's JetStream messages are acked
	// anyBatch: some kind is batched (a stream allows it); otherwise
	// WriteBatch skips the batch step.
	anyBatch bool
	window   chan struct{} // JetStream in-flight slots shared by all callers
	m        *natsMetrics
	closed   atomic.Bool
}

// NATSOption configures NewNATS.
type NATSOption func(*natsConfig) error

type natsConfig struct {
	mode          NATSMode
	batch         NATSBatch
	name          string
	route         route
	reg           prometheus.Registerer
	maxInFlight   int
	ackTimeout    time.Duration
	lookupTimeout time.Duration
	retries       int
	retryWait     time.Duration
}

func defaultNATSConfig() natsConfig {
	return natsConfig{
		name:          "nats",
		batch:         NATSBatchFast,
		maxInFlight:   1024,
		ackTimeout:    5 * time.Second,
		lookupTimeout: 5 * time.Second,
		retries:       3,
		retryWait:     50 * time.Millisecond,
	}
}

// WithNATSSubject routes messages of kind k to subject. Kinds without a
// subject are skipped (counted as acked). No default: a NATS sink with no
// subject publishes nothing.
func WithNATSSubject(k output.Kind, subject string) NATSOption {
	return func(c *natsConfig) error {
		if err := c.route.set(k, subject); err != nil {
			return err
		}
		if err := validateSubject(subject); err != nil {
			return fmt.Errorf("sinks: nats subject %q: %w", subject, err)
		}
		return nil
	}
}

// NATSMode is how a NATS sink publishes: see NATS.
type NATSMode int

const (
	NATSModeJetStream NATSMode = iota // every subject in a stream, PubAck per message (default)
	NATSModeCore                      // core publish and a flush: received by the server, not stored
	NATSModeAuto                      // JetStream where a stream captures the subject, else core
)

// ParseNATSMode parses "jetstream", "core" or "auto".
func ParseNATSMode(s string) (NATSMode, error) {
	switch s {
	case "jetstream":
		return NATSModeJetStream, nil
	case "core":
		return NATSModeCore, nil
	case "auto":
		return NATSModeAuto, nil
	}
	return 0, fmt.Errorf("sinks: nats mode %q: want jetstream, core or auto", s)
}

func (m NATSMode) String() string {
	switch m {
	case NATSModeJetStream:
		return "jetstream"
	case NATSModeCore:
		return "core"
	case NATSModeAuto:
		return "auto"
	}
	return fmt.Sprintf("NATSMode(%d)", int(m))
}

// ErrNoStream is NewNATS's error in NATSModeJetStream when no JetStream
// stream captures a configured subject (or the server or account has no
// JetStream): publishing there would not be stored, and acks would not mean
// what the offsets committed on them promise.
var ErrNoStream = errors.New("sinks: no JetStream stream captures the subject")

// WithNATSMode sets how messages are published (default NATSModeJetStream;
// see NATS). The trap of NATSModeAuto: a subject whose stream is deleted or
// misnamed silently falls back to core publish at the next start.
func WithNATSMode(m NATSMode) NATSOption {
	return func(c *natsConfig) error {
		if m < NATSModeJetStream || m > NATSModeAuto {
			return fmt.Errorf("sinks: unknown nats mode %d", int(m))
		}
		c.mode = m
		return nil
	}
}

// WithNATSName sets the sink's Name (default "nats"), used as the sink
// metric label. Give each sink in one Fanout a distinct name.
func WithNATSName(name string) NATSOption {
	return func(c *natsConfig) error {
		if name == "" {
			return errors.New("sinks: nats name is empty")
		}
		c.name = name
		return nil
	}
}

// WithNATSRegisterer registers the NATS-specific metrics
// (streamscore_sinks_nats_*) with reg. Default: no metrics. Generic publish
// metrics come from the Fanout wrapper, not from here.
func WithNATSRegisterer(reg prometheus.Registerer) NATSOption {
	return func(c *natsConfig) error {
		c.reg = reg
		return nil
	}
}

// WithNATSMaxInFlight bounds the JetStream publishes awaiting a PubAck,
// across all concurrent WriteBatch calls (default 1024, at most 3999). The
// trap: nats.go fails publishes with ErrTooManyStalledMsgs once 4000 are
// pending, which is why larger values are refused.
func WithNATSMaxInFlight(n int) NATSOption {
	return func(c *natsConfig) error {
		if n < 1 || n > 3999 {
			return fmt.Errorf("sinks: nats max in flight %d not in [1, 3999]", n)
		}
		c.maxInFlight = n
		return nil
	}
}

// WithNATSAckTimeout bounds the wait for each PubAck (default 5s); it also
// bounds the flush after core publishes when ctx has no deadline. Without a
// timeout an ack lost with a connection would be awaited forever.
func WithNATSAckTimeout(d time.Duration) NATSOption {
	return func(c *natsConfig) error {
		if d <= 0 {
			return fmt.Errorf("sinks: nats ack timeout %v not positive", d)
		}
		c.ackTimeout = d
		return nil
	}
}

// WithNATSLookupTimeout bounds each stream lookup in NewNATS (default 5s).
func WithNATSLookupTimeout(d time.Duration) NATSOption {
	return func(c *natsConfig) error {
		if d <= 0 {
			return fmt.Errorf("sinks: nats lookup timeout %v not positive", d)
		}
		c.lookupTimeout = d
		return nil
	}
}

// WithNATSRetries sets how many times one WriteBatch republishes (same
// Msg-Id) the JetStream messages whose ack failed retryably: disconnect,
// ack timeout, stall (default 3; 0 disables). Waits start at wait and double
// (default 50ms). Beyond that WriteBatch returns a retryable BatchError and
// the caller (Fanout) retries with its own backoff.
func WithNATSRetries(n int, wait time.Duration) NATSOption {
	return func(c *natsConfig) error {
		if n < 0 || wait <= 0 {
			return fmt.Errorf("sinks: nats retries %d, wait %v: invalid", n, wait)
		}
		c.retries, c.retryWait = n, wait
		return nil
	}
}

func validateSubject(s string) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n', '*', '>':
			return nats.ErrBadSubject
		}
	}
	if s[0] == '.' || s[len(s)-1] == '.' {
		return nats.ErrBadSubject
	}
	return nil
}

// NewNATS returns a sink publishing on nc. Unless in NATSModeCore, it looks
// up, once per configured subject, the JetStream stream that captures it
// (see NATS); in NATSModeJetStream a subject without one is ErrNoStream.
func NewNATS(nc *nats.Conn, opts ...NATSOption) (*NATS, error) {
	if nc == nil {
		return nil, errors.New("sinks: new nats: nil connection")
	}
	cfg := defaultNATSConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	n := &NATS{cfg: cfg, nc: nc, window: make(chan struct{}, cfg.maxInFlight)}
	if cfg.reg != nil {
		m, err := newNATSMetrics(cfg.reg, cfg.name)
		if err != nil {
			return nil, err
		}
		n.m = m
	}
	if cfg.mode == NATSModeCore {
		return n, nil
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.maxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.ackTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			if n.m != nil {
				n.m.ackErrors.Inc()
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("sinks: new jetstream: %w", err)
	}
	for k := range output.NumKinds {
		subj := cfg.route[k]
		if subj == "" {
			continue
		}
		stream, err := lookupStream(js, subj, cfg.lookupTimeout)
		if err != nil {
			return nil, fmt.Errorf("sinks: look up stream for subject %q: %w", subj, err)
		}
		if stream == "" && cfg.mode == NATSModeJetStream {
			return nil, fmt.Errorf("%w %q (create one, or choose core publish explicitly)", ErrNoStream, subj)
		}
		n.stream[k] = stream
		if stream != "" {
			n.js = js
		}
	}
	allows := map[string]bool{}
	for k := range output.NumKinds {
		st := n.stream[k]
		if st == "" || cfg.batch == NATSBatchNone {
			continue
		}
		ok, seen := allows[st]
		if !seen {
			if ok, err = streamAllows(js, st, cfg.batch, &cfg); err != nil {
				return nil, err
			}
			allows[st] = ok
		}
		if ok {
			n.batch[k] = cfg.batch
			n.anyBatch = true
		}
	}
	return n, nil
}

// lookupStream returns the stream capturing subj, or "" when there is none
// or the server has no JetStream.
func lookupStream(js jetstream.JetStream, subj string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, subj)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return name, nil
	case errors.Is(err, jetstream.ErrStreamNotFound),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		return "", nil
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled ||
		apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabledForAccount):
		return "", nil
	}
	return "", err
}

// Name returns the sink name ("nats" unless set by WithNATSName).
func (n *NATS) Name() string { return n.cfg.name }

// Stream returns the JetStream stream that captures kind k's subject, or ""
// when k is core-published or not routed. Useful for a start-up log line.
func (n *NATS) Stream(k output.Kind) string {
	if int(k) < output.NumKinds {
		return n.stream[k]
	}
	return ""
}

// WriteBatch publishes the routed messages and returns nil once every one is
// acknowledged (PubAck for JetStream subjects, flush for core ones). On
// failure it returns a *BatchError naming the messages not acknowledged;
// IsRetryable classifies it. After a failed call some messages may have been
// delivered: core NATS redelivers them on retry, JetStream drops the
// replays by Msg-Id. Safe for concurrent use.
func (n *NATS) WriteBatch(ctx context.Context, msgs []output.Message) error {
	if n.closed.Load() {
		return output.ErrClosed
	}
	be := &output.BatchError{Sink: n.cfg.name}
	var core, js []int
	for i := range msgs {
		k := msgs[i].Kind
		subj := n.cfg.route.get(k)
		if subj == "" {
			continue
		}
		if n.stream[k] != "" {
			js = append(js, i)
			continue
		}
		if err := n.nc.PublishMsg(natsMsg(subj, &msgs[i])); err != nil {
			be.Add(i, fmt.Errorf("publish: %w", err))
			continue
		}
		core = append(core, i)
	}
	if len(core) > 0 {
		if err := n.flush(ctx); err != nil {
			for _, i := range core {
				be.Add(i, fmt.Errorf("flush: %w", err))
			}
		}
	}
	if len(js) > 0 && n.anyBatch {
		js = n.publishBatches(ctx, msgs, js)
	}
	if len(js) > 0 {
		n.publishJetStream(ctx, msgs, js, be)
	}
	if len(be.Indices) > 0 {
		be.Sort()
		return be
	}
	return nil
}

func (n *NATS) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ackTimeout)
		defer cancel()
	}
	return n.nc.FlushWithContext(ctx)
}

// natsMsg builds the NATS message for m; the ID travels in both headers.
func natsMsg(subj string, m *output.Message) *nats.Msg {
	msg := &nats.Msg{Subject: subj, Data: m.Value}
	if m.ID != "" {
		id := []string{m.ID}
		msg.Header = nats.Header{jetstream.MsgIDHeader: id, output.HeaderID: id}
	}
	return msg
}

// pending is a JetStream publish awaiting its ack.
type pending struct {
	i   int
	paf jetstream.PubAckFuture
}

// publishJetStream publishes msgs[idx] with a sliding window of in-flight
// acks, republishing retryable failures, and records the final failures in be.
func (n *NATS) publishJetStream(ctx context.Context, msgs []output.Message, idx []int, be *output.BatchError) {
	wait := n.cfg.retryWait
	for attempt := 0; ; attempt++ {
		retry, ctxErr := n.publishOnce(ctx, msgs, idx, be, attempt == n.cfg.retries)
		if len(retry) == 0 {
			return
		}
		if ctxErr == nil {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				ctxErr = ctx.Err()
			}
			t.Stop()
		}
		if ctxErr != nil {
			for _, i := range retry {
				be.Add(i, ctxErr)
			}
			return
		}
		if n.m != nil {
			n.m.republishes.Add(float64(len(retry)))
		}
		idx, wait = retry, 2*wait
	}
}

// publishOnce makes one pass over idx. It returns the indices to republish
// (retryable failures, unless last) and, if ctx ended, its error; every
// other failure is added to be.
func (n *NATS) publishOnce(ctx context.Context, msgs []output.Message, idx []int, be *output.BatchError, last bool) (retry []int, ctxErr error) {
	fail := func(i int, err error) {
		if !last && IsRetryable(err) {
			retry = append(retry, i)
			return
		}
		be.Add(i, err)
	}
	inflight := make([]pending, 0, min(len(idx), cap(n.window)))
	head := 0
	await := func(p pending) {
		defer func() { <-n.window }()
		select {
		case ack := <-p.paf.Ok():
			if ack.Duplicate && n.m != nil {
				n.m.duplicates.Inc()
			}
		case err := <-p.paf.Err():
			fail(p.i, fmt.Errorf("await pub ack: %w", err))
		case <-ctx.Done():
			ctxErr = ctx.Err()
			be.Add(p.i, ctxErr)
		}
	}
	for pos, i := range idx {
		if ctxErr != nil {
			for _, j := range idx[pos:] {
				be.Add(j, ctxErr)
			}
			break
		}
		select {
		case n.window <- struct{}{}:
		case <-ctx.Done():
			ctxErr = ctx.Err()
			be.Add(i, ctxErr) // the rest fail at the top of the loop
			continue
		default:
			if head < len(inflight) { // our own oldest ack frees a slot soonest
				await(inflight[head])
				head++
			}
			select {
			case n.window <- struct{}{}:
			case <-ctx.Done():
				ctxErr = ctx.Err()
				be.Add(i, ctxErr)
				continue
			}
		}
		m := &msgs[i]
		paf, err := n.js.PublishMsgAsync(natsMsg(n.cfg.route.get(m.Kind), m),
			jetstream.WithStallWait(n.cfg.ackTimeout))
		if err != nil {
			<-n.window
			fail(i, fmt.Errorf("publish async: %w", err))
			continue
		}
		inflight = append(inflight, pending{i: i, paf: paf})
	}
	for _, p := range inflight[head:] {
		if ctxErr != nil {
			<-n.window // the library times the ack out on its own
			be.Add(p.i, ctxErr)
			continue
		}
		await(p)
	}
	return retry, ctxErr
}

// Close stops the sink: later WriteBatch calls return ErrClosed, and
// JetStream publishes still awaiting an ack fail. It does not close the
// connection, which the caller owns. Idempotent.
func (n *NATS) Close() error {
	if n.closed.CompareAndSwap(false, true) && n.js != nil {
		n.js.CleanupPublisher()
	}
	return nil
}

type natsMetrics struct {
	ackErrors, republishes, duplicates, batchFallbacks prometheus.Counter
}

func newNATSMetrics(reg prometheus.Registerer, name string) (*natsMetrics, error) {
	l := prometheus.Labels{"sink": name}
	m := &natsMetrics{
		ackErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "streamscore_sinks_nats_ack_errors_total",
			ConstLabels: l,
			Help:        "JetStream async publishes that failed (ack timeout, disconnect, error reply), before any republish.",
		}),
		republishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "streamscore_sinks_nats_republishes_total",
			ConstLabels: l,
			Help:        "JetStream messages republished with the same Nats-Msg-Id after a retryable failure.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "streamscore_sinks_nats_duplicates_total",
			ConstLabels: l,
			Help:        "PubAcks flagged duplicate: replays the stream dropped by Nats-Msg-Id.",
		}),
		batchFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "streamscore_sinks_nats_batch_fallbacks_total",
			ConstLabels: l,
			Help:        "JetStream batches (fast or atomic) that failed and were republished message by message.",
		}),
	}
	var err error
	if m.batchFallbacks, err = promreg.Register(reg, m.batchFallbacks); err != nil {
		return nil, err
	}
	if m.ackErrors, err = promreg.Register(reg, m.ackErrors); err != nil {
		return nil, err
	}
	if m.republishes, err = promreg.Register(reg, m.republishes); err != nil {
		return nil, err
	}
	if m.duplicates, err = promreg.Register(reg, m.duplicates); err != nil {
		return nil, err
	}
	return m, nil
}
