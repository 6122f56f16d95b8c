package stream

import (
	"context"
	"errors"
	"fmt"
	"github.com/streamscore/streamscore/stream/internal/align"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/internal/commit"
)

var (
	// ErrDrainTimeout is returned by Run when the soft shutdown did not finish
	// within the drain timeout; uncommitted events are re-delivered on restart.
	ErrDrainTimeout = errors.New("stream: drain timeout exceeded")
	// ErrAborted is returned by Run after Abort.
	ErrAborted = errors.New("stream: aborted")
	// ErrClosed is returned by Run when it is called twice.
	ErrClosed = errors.New("stream: pipeline already ran")
)

// Pipeline consumes transactions from one Kafka topic as a member of a
// consumer group, scores them in micro-batches and publishes the records to
// a sink. See the package documentation for the delivery contract.
type Pipeline struct {
	cfg     config
	brokers []string
	group   string
	topic   string
	sink    output.Sink
	dec     *features.Decoder // the JSON decoder, of cfg.decoderOpts (safe for concurrent use)
	names   []string
	defs    []models.FeatureDef // the definitions of names, in order

	// set is the active model set; workers load it when they open a batch.
	// setMu serialises reloads; activeLabels are the label values of the
	// active-model gauge (guarded by setMu).
	set          atomic.Pointer[modelSet]
	setMu        sync.Mutex
	activeLabels [][4]string

	shared *features.Shared
	// restoredSnapshot: Run restored a state-directory snapshot (the
	// shared checkpoint is then not restored).
	restoredSnapshot bool
	// sharedCols are the row columns of the shared entities
	// (Shared.Columns).
	sharedCols []int
	// nParts is the number of partitions of the topic (learnt at Run; 0
	// unknown): the card cap is divided among them.
	nParts int
	stage  *stage // Run's feature stage: the partitions' state
	// router and joins: the card side of the repartition mode
	// (WithRepartition), nil without it.
	router   *router
	joins    *joiner
	terminal atomic.Pointer[terminalStage]
	// noSideCommit: the warning that the source cannot commit E's
	// offsets was logged.
	noSideCommit atomic.Bool
	// termAlignIdle is WithAlignIdleWait for the terminal stage (the card
	// stage does not align in the repartition mode).
	termAlignIdle time.Duration
	// gen is the consumer-group generation the committer commits through
	// (nil between generations).
	gen atomic.Pointer[genRef]
	// ckptRound serialises checkpoint rounds (encode, store, record the
	// slots, set the commit cap): the interval's, run by the snapshot
	// loop, and a revoke's, run by the consumer. Overlapping, both
	// encoded a partition into the same slot, could store in either
	// order and recorded each other's slots, so that the slot at the
	// committed offset was not kept. commitMu serialises commits (the
	// committer's and a revoke's), so that an older cap computed before a
	// revoke's is not sent after it, moving the group's offset back.
	ckptRound sync.Mutex
	commitMu  sync.Mutex
	// cutInterval cancels the store of the interval round in flight (nil
	// when none): a revoke waiting for ckptRound has the rebalance timeout
	// to finish in, and stores the same partitions again anyway.
	cutMu       sync.Mutex
	cutInterval context.CancelFunc
	// restoring counts the partitions being restored from checkpoints.
	restoring atomic.Int32
	counts    stateCounts // state size and evictions, for the metrics
	// labelMu serialises label application with state snapshots;
	// labelNext is, per labels partition, the next offset to read (every
	// label before it is applied to shared).
	labelMu   sync.Mutex
	labelNext map[int]int64
	// stateRestored is set once any state was restored at a start (a
	// snapshot, or a partition's or the shared checkpoint): the alert-rate
	// guard says when the state started empty instead.
	stateRestored atomic.Bool
	// labelAhead is, per labels partition, the label offsets above
	// labelNext that a restored snapshot or checkpoint holds as applied (a
	// label of an earlier event time applied before one still waiting:
	// labels out of event-time order in their partition): the stage's
	// trail of the partition starts with them (labelTrailOf), so that a
	// restart skips them instead of applying them twice. Snapshots and
	// checkpoints take them from the trails (labelsAhead).
	labelAhead map[int][]int64

	tracker *commit.Tracker
	// With a state interval, a commit is always exactly the state of one
	// snapshot: caps holds, oldest first, the snapshots written (or
	// restored) whose offsets may still be committed, each with the next
	// offset it covers per partition (applied + 1); the committer commits
	// the newest one every partition of which is acked, and drops the older
	// ones. A partition in no snapshot commits nothing. capMu guards caps.
	capMu sync.Mutex
	caps  []snapCap
	met   *metrics
	log   *slog.Logger
	// commitLog rate-limits the warning of failing commits (tried every
	// commit interval while the coordinator is unreachable).
	commitLog failureLog

	started atomic.Bool
	phase   atomic.Int32    // a Phase
	hard    context.Context // cancelled on Abort or when the drain times out
	cancel  context.CancelCauseFunc

	stats Stats
}

// Stats are running totals of a pipeline, safe to read while it runs.
type Stats struct {
	Consumed     atomic.Int64 // input messages fetched and handed to a worker
	Scored       atomic.Int64 // events whose score records every sink acked
	DeadLettered atomic.Int64 // messages whose dead-letter records every sink acked
	Alerts       atomic.Int64 // score records with decision alert, acked
	Committed    atomic.Int64 // successful offset commits
}

// New returns a pipeline that reads topic as member of group on brokers,
// scores every event with each of ms and writes the records to sink (usually
// a output.Fanout). The models must all bind to the feature layout; New fails
// naming the first input a model needs that the features do not provide.
// SetModels and Reload replace the models while the pipeline runs.
func New(brokers []string, group, topic string, ms []*models.Model, sink output.Sink, opts ...Option) (*Pipeline, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	switch {
	case len(brokers) == 0:
		return nil, errors.New("stream: no brokers")
	case group == "":
		return nil, errors.New("stream: empty consumer group")
	case topic == "":
		return nil, errors.New("stream: empty topic")
	case len(ms) == 0:
		return nil, errors.New("stream: no models")
	case sink == nil:
		return nil, errors.New("stream: nil sink")
	case cfg.stateInterval > 0 && cfg.stateDir == "" && cfg.ckpt == nil:
		return nil, errors.New("stream: a state interval needs a state directory (WithStateDir) or checkpoints (WithCheckpoints)")
	case cfg.ckpt != nil && cfg.stateInterval <= 0:
		return nil, errors.New("stream: checkpoints need a state interval (WithStateInterval), their cadence")
	}
	if cfg.alignIdle >= 0 && cfg.repart == nil {
		// The stage's aligner, with the options newStage gives it: a
		// refusal here (an idle wait above the lag wait) stops New instead
		// of leaving the stage without alignment, silently. (In the
		// repartition mode the terminal stage aligns, with a longer lag
		// wait: terminalLagWait.)
		if _, err := align.New[*pending](align.WithIdleWait(cfg.alignIdle), align.WithLagWait(cfg.alignLag)); err != nil {
			return nil, fmt.Errorf("stream: event-time alignment: %w", err)
		}
	}
	if cfg.labelsIdle > cfg.alignLag {
		return nil, fmt.Errorf("stream: event-time alignment: the labels' idle wait %v is above the lag wait %v", cfg.labelsIdle, cfg.alignLag)
	}
	// The feature and decoder options are checked here, once: the workers
	// build their Builders and Decoders later from the same options.
	shared, err := features.NewShared(cfg.featureOpts...)
	if err != nil {
		return nil, fmt.Errorf("stream: feature options: %w", err)
	}
	dec, err := features.NewDecoder(cfg.decoderOpts...)
	if err != nil {
		return nil, fmt.Errorf("stream: decoder options: %w", err)
	}
	met, err := newMetrics(cfg.reg)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{
		cfg: cfg, brokers: brokers, group: group, topic: topic, sink: sink,
		shared:  shared,
		dec:     dec,
		tracker: commit.New(),
		met:     met,
		log:     cfg.log.With("component", "stream", "topic", topic, "group", group),
	}
	if err := p.registerStateMetrics(cfg.reg); err != nil {
		return nil, err
	}
	// Bind here so a layout mismatch fails at start-up, not in a worker.
	b, err := features.NewBuilder(p.shared, cfg.featureOpts...)
	if err != nil {
		return nil, fmt.Errorf("stream: feature options: %w", err)
	}
	if err := checkRepartition(&cfg, shared); err != nil {
		return nil, err
	}
	if cfg.repart != nil {
		// The terminal stage holds the shared state: no replicas; the card
		// stage applies each partition in its own order (cards live in one
		// partition), without waiting for the others.
		cfg.replicas = false
		if cfg.alignIdle < 0 {
			return nil, fmt.Errorf("stream: the repartition mode applies the terminal state in event-time order always: an align idle wait of %v (no alignment) is not supported; 0 gives the lowest latency", cfg.alignIdle)
		}
		p.termAlignIdle = cfg.alignIdle
		cfg.alignIdle = -1
		p.cfg = cfg
	}
	p.names, p.defs = b.Names(), ModelFeatureDefs(b.Definitions())
	p.sharedCols = p.shared.Columns()
	set, err := p.newModelSet(ms, cfg.shadows)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidModelSet, err)
	}
	p.publish(set)
	p.hard, p.cancel = context.WithCancelCause(context.Background())
	return p, nil
}

// Stats returns the pipeline's running totals.
func (p *Pipeline) Stats() *Stats { return &p.stats }

// Phase is where a pipeline is in its life, for readiness probes and
// status pages.
type Phase int32

const (
	PhaseNew      Phase = iota // Run not called yet
	PhaseStarting              // Run called: taking the state directory, restoring its snapshot
	PhaseRunning               // fetching and scoring
	PhaseDraining              // intake stopped: flushing batches, the shutdown snapshot, the final commit
	PhaseStopped               // Run returned
)

func (ph Phase) String() string {
	switch ph {
	case PhaseNew:
		return "new"
	case PhaseStarting:
		return "starting"
	case PhaseRunning:
		return "running"
	case PhaseDraining:
		return "draining"
	case PhaseStopped:
		return "stopped"
	}
	return fmt.Sprintf("Phase(%d)", int32(ph))
}

// Restoring returns the number of partitions being restored from
// checkpoints (WithCheckpoints) right now: a readiness probe may say so.
func (p *Pipeline) Restoring() int {
	n := int(p.restoring.Load())
	if ts := p.terminal.Load(); ts != nil {
		n += ts.restoring() // the repartition mode's terminal stage
	}
	return n
}

// Phase returns the pipeline's current phase. Only PhaseRunning means it
// is consuming: a readiness probe should hold a new instance back until
// then (a large state snapshot takes seconds to restore).
func (p *Pipeline) Phase() Phase { return Phase(p.phase.Load()) }

func (p *Pipeline) setPhase(ph Phase) { p.phase.Store(int32(ph)) }

// Abort stops the pipeline hard: intake and sink writes are cancelled and no
// further offset is committed, as if the process had been killed. Events not
// yet committed are re-delivered to the next member of the group.
func (p *Pipeline) Abort() { p.cancel(ErrAborted) }

// Run consumes, scores and publishes until ctx is done, then shuts down
// softly: it stops fetching, drains in-flight batches through the sinks,
// commits their offsets and returns nil. It returns ErrDrainTimeout if the
// drain takes longer than the drain timeout, ErrAborted after Abort, or the
// error that stopped the pipeline. Run may be called once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	p.setPhase(PhaseStarting)
	defer p.setPhase(PhaseStopped)
	defer p.cancel(nil)

	dialer := p.cfg.dialer
	if dialer == nil {
		dialer = &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	}
	src := p.cfg.source
	if src == nil {
		opts := append(p.cfg.sourceOptions(), WithSourceDialer(dialer))
		ks, err := NewKafkaSource(p.brokers, p.group, p.topic, opts...)
		if err != nil {
			return err
		}
		src = ks
	}
	// Leaving the group can hang on a broker that is gone: it gets a
	// deadline like every other shutdown step.
	closeSource := func() {
		if cerr := closeWithin(readerCloseTimeout, src.Close); cerr != nil && p.hard.Err() == nil {
			p.log.Warn("close kafka source", "err", cerr)
		}
	}

	var labels *labelConsumer
	if p.cfg.labelsTopic != "" {
		labels = newLabelConsumer(p, dialer)
	}

	// The topic's partitions (the card cap is divided among them) and the
	// group's committed offsets, which pick the snapshot to restore;
	// without them (the brokers unreachable for 10 s) the current one is
	// used.
	var committed map[int]int64
	if p.cfg.stateDir != "" {
		var err error
		if committed, _, _, err = p.topicOffsets(ctx, dialer); err != nil {
			p.log.Warn("committed offsets unknown: restoring the current state snapshot", "err", err)
			committed = nil
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	parts, err := src.Partitions(pctx, p.topic)
	pcancel()
	p.nParts = len(parts)
	if err != nil || p.nParts == 0 {
		p.log.Warn("the topic's partitions are unknown: the card cap is divided by the workers", "err", err)
		p.nParts = p.cfg.workers
	}
	stopRepart, err := p.startRepartition(ctx, src, dialer)
	if err != nil {
		closeSource()
		return err
	}
	repartStopped := false
	defer func() {
		if !repartStopped { // an early return
			stopRepart()
			repartStopped = true
		}
	}()
	workers := make([]*worker, p.cfg.workers)
	for i := range workers {
		workers[i] = newWorker(p, i)
	}
	st := newStage(p, workers)
	p.stage = st
	if p.cfg.stateDir != "" {
		unlock, err := lockStateDir(p.cfg.stateDir)
		if err != nil {
			closeSource()
			return err
		}
		defer unlock()
		if err := p.restoreState(st, committed); err != nil {
			closeSource()
			return err
		}
	}
	if p.cfg.ckpt != nil && !p.restoredSnapshot && p.cfg.repart == nil {
		// The shared entities' state (terminals) as the group holds it:
		// before anything is applied and before the labels are read.
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
		p.restoreShared(rctx, st)
		rcancel()
	}
	if labels != nil {
		// The labels partitions take part in the event-time order from the
		// start (a label must not arrive after the events it precedes): one
		// with nothing to read from where the consumer resumes is caught up.
		labels.parts = p.alignLabels(ctx, st, dialer)
	}
	var wg sync.WaitGroup
	stageDone := make(chan struct{})
	go func() { defer close(stageDone); st.run() }()
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run() }()
		for range p.cfg.inFlight {
			wg.Add(1)
			go func() { defer wg.Done(); w.send() }()
		}
	}

	// The committer runs until every worker and sender is done, then makes
	// the final commit (unless stopped hard).
	committerDone := make(chan struct{})
	stopCommitter := make(chan struct{})
	go func() {
		defer close(committerDone)
		p.commitLoop(stopCommitter)
	}()

	var labelsDone chan struct{}
	if labels != nil {
		labelsDone = make(chan struct{})
		go func() {
			defer close(labelsDone)
			labels.run(ctx)
		}()
	}

	p.log.Info("pipeline started", "workers", p.cfg.workers, "max_batch", p.cfg.maxBatch,
		"max_delay", p.cfg.maxDelay, "models", p.activeIdents(), "shadow_models", len(p.cfg.shadows), "features", len(p.names))

	// The drain deadline starts when ctx is done: from then on, everything
	// still blocked (a full worker queue, a sink that is down, a commit
	// during a rebalance, a label's dead letter) has drainTimeout to finish
	// before the pipeline is stopped hard.
	drainDone := make(chan struct{})
	deadlineDone := make(chan struct{})
	go func() {
		defer close(deadlineDone)
		select {
		case <-ctx.Done():
		case <-drainDone:
			return
		}
		t := time.NewTimer(p.cfg.drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			p.logDrainTimeout(workers)
			p.cancel(ErrDrainTimeout)
		case <-drainDone:
		}
	}()
	defer func() { close(drainDone); <-deadlineDone }()

	var snapStop chan struct{}
	var snapDone chan struct{}
	if p.cfg.stateInterval > 0 {
		snapStop, snapDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(snapDone)
			p.snapshotLoop(st, snapStop)
		}()
	}

	p.setPhase(PhaseRunning)
	fetchErr := p.consume(ctx, src, st)
	p.setPhase(PhaseDraining)
	if snapStop != nil {
		// Before the workers' input closes: a worker that has returned
		// would never answer a pause.
		close(snapStop)
		<-snapDone
	}

	// Soft phase: intake stopped, workers flush their open batches and the
	// senders wait for sink acks; then the shutdown snapshot and the final
	// commit, in that order (with a state interval the commit may only
	// cover what a snapshot holds). A hard stop (Abort, or the drain
	// deadline) cancels whatever is still waiting.
	if p.router != nil {
		p.router.claim(nil) // intake stopped: see revoke
	}
	close(st.in)
	<-stageDone
	wg.Wait()
	// Every batch is scored (or given up): the router and the E readers
	// are done, and the terminal stage stores its state and leaves.
	stopRepart()
	if p.cfg.ckpt != nil && p.hard.Err() == nil && !st.torn && !workersTorn(workers) {
		// The commit first catches up with the last checkpoint (a
		// checkpoint does not overwrite the one the commit matches:
		// keepsCommitSlot), so that this one is stored and committed.
		p.commitOnce()
		p.checkpointNow(p.hard, st, false, "shutdown")
	}
	if p.cfg.stateDir != "" && !errors.Is(context.Cause(p.hard), ErrAborted) {
		p.shutdownSnapshot(st)
	}
	close(stopCommitter)
	<-committerDone
	if labelsDone != nil {
		<-labelsDone
	}
	err = nil
	// The source's Close ends the generation after it has closed the
	// group: ended first, the member would rejoin before leaving (see
	// KafkaSource.Close).
	p.gen.Swap(nil)
	closeSource()
	if cause := context.Cause(p.hard); p.hard.Err() != nil && cause != nil {
		err = cause
	}
	if fetchErr != nil && err == nil {
		err = fetchErr
	}
	p.log.Info("pipeline stopped", "consumed", p.stats.Consumed.Load(), "scored", p.stats.Scored.Load(),
		"deadlettered", p.stats.DeadLettered.Load(), "err", err)
	return err
}

// readerCloseTimeout bounds the Kafka source's Close at shutdown.
const readerCloseTimeout = 10 * time.Second

// closeWithin calls close and waits at most d for it: past d it returns an
// error saying so and leaves close running (the process is stopping).
func closeWithin(d time.Duration, close func() error) error {
	done := make(chan error, 1)
	go func() { done <- close() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("stream: close did not finish within %v; left behind", d)
	}
}

// logDrainTimeout says, when the drain deadline passes, what the drain was
// still waiting for: batches handed to the sinks and not acknowledged, and
// per partition the offsets fetched and not committed. (The sinks' own
// failures, with their causes, are logged by the sinks and in /readyz.)
func (p *Pipeline) logDrainTimeout(workers []*worker) {
	waiting := 0
	for _, w := range workers {
		waiting += len(w.out) + (cap(w.free) - len(w.free))
	}
	var pending []string
	for _, part := range p.tracker.Partitions() {
		if n, committed := p.tracker.Pending(part); n > 0 {
			pending = append(pending, fmt.Sprintf("p%d: %d after offset %d", part, n, committed))
		}
	}
	p.log.Error("drain timeout exceeded: stopping hard; uncommitted events are re-delivered on restart",
		"drain_timeout", p.cfg.drainTimeout, "batches_not_acked", waiting, "uncommitted", strings.Join(pending, ", "))
}

// isFatalFetch reports whether a fetch error is a refusal retrying cannot fix
// (authentication or authorization): the pipeline stops with it rather than
// logging it forever.
func isFatalFetch(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kafka.TopicAuthorizationFailed, kafka.GroupAuthorizationFailed, kafka.ClusterAuthorizationFailed,
		kafka.SASLAuthenticationFailed, kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState:
		return true
	}
	return false
}

// commitLoop commits the acked prefix of every partition each commit
// interval, and once more when stop is closed (unless stopped hard).
func (p *Pipeline) commitLoop(stop <-chan struct{}) {
	t := time.NewTicker(p.cfg.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if p.hard.Err() == nil {
				p.commitOnce()
			}
		case <-stop:
			// Final commit: retried until it succeeds or the pipeline is
			// stopped hard (Abort or the drain deadline).
			for p.hard.Err() == nil && !p.commitOnce() {
				select {
				case <-time.After(p.cfg.commitInterval):
				case <-p.hard.Done():
				}
			}
			return
		case <-p.hard.Done():
			return
		}
	}
}

// capCommits reports whether commits are held at the current snapshot:
// with a state interval, so that after a crash Kafka re-delivers every
// event the restored state lacks (see WithStateInterval).
func (p *Pipeline) capCommits() bool {
	return p.cfg.stateInterval > 0 && (p.cfg.stateDir != "" || p.cfg.ckpt != nil)
}

// snapCap is a snapshot as far as commits are concerned: its directory
// name and, per partition, the next offset its state covers.
type snapCap struct {
	name string
	next map[int]int64
}

// maxSnapCaps bounds the snapshots waiting for their offsets to be acked
// (a sink outage with a short state interval): the oldest are dropped, and
// only a newer one can then be committed.
const maxSnapCaps = 4

// setCommitCap records the applied offsets (partition -> highest offset in
// the state) of the snapshot name, just written or restored.
func (p *Pipeline) setCommitCap(name string, applied map[int]int64) {
	c := snapCap{name: name, next: make(map[int]int64, len(applied))}
	for part, off := range applied {
		c.next[part] = off + 1
	}
	p.capMu.Lock()
	p.caps = append(p.caps, c)
	if len(p.caps) > maxSnapCaps {
		p.caps = slices.Delete(p.caps, 0, len(p.caps)-maxSnapCaps)
	}
	p.capMu.Unlock()
}

// committedSnapshot returns the name of the oldest snapshot whose offsets
// may still be the group's committed ones (the last one committed, or one
// not yet committed), which must stay on disk; "" when there is none.
func (p *Pipeline) committedSnapshot() string {
	p.capMu.Lock()
	defer p.capMu.Unlock()
	if len(p.caps) == 0 {
		return ""
	}
	return p.caps[0].name
}

// capToSnapshot replaces the acked prefixes cs by the offsets of the newest
// snapshot every partition of which is acked — so that a crash always
// finds, on disk, the snapshot whose state is exactly what Kafka
// re-delivers after (see restoreState) — dropping those that would not
// move past the last committed offset, and sets the held-back gauge
// (offsets acked beyond what is committed).
func (p *Pipeline) capToSnapshot(cs []commit.Commit) []commit.Commit {
	p.capMu.Lock()
	defer p.capMu.Unlock()
	chosen := -1
	for j := len(p.caps) - 1; j >= 0 && chosen < 0; j-- {
		chosen = j
		for part, next := range p.caps[j].next {
			if p.tracker.Acked(part) < next {
				chosen = -1
				break
			}
		}
	}
	var target map[int]int64
	if chosen >= 0 {
		target = p.caps[chosen].next
		p.caps = p.caps[chosen:]
	}
	out := cs[:0]
	for _, c := range cs {
		next, ok := target[c.Partition]
		held := c.Next - max(next, 0)
		if !ok {
			_, committed := p.tracker.Pending(c.Partition)
			held = c.Next - max(committed, 0)
		}
		p.met.commitHeld.WithLabelValues(strconv.Itoa(c.Partition)).Set(float64(max(held, 0)))
	}
	parts := make([]int, 0, len(target))
	for part := range target {
		parts = append(parts, part)
	}
	slices.Sort(parts)
	for _, part := range parts {
		if _, committed := p.tracker.Pending(part); target[part] > committed {
			out = append(out, commit.Commit{Partition: part, Next: target[part]})
		}
	}
	return out
}

// failureLog rate-limits the log of a failure that repeats (a commit tried
// every commit interval while the coordinator is unreachable): the first
// failure is logged at once, then at most one every failureLogEvery with
// the number not logged; the first success after failures is logged too.
type failureLog struct {
	mu       sync.Mutex
	last     time.Time
	unlogged int
	failures int // since the last success
}

// failureLogEvery is the least time between two log lines of one failure.
const failureLogEvery = 10 * time.Second

// failed records a failure at now and reports whether to log it, and how
// many failures were not logged since the last line.
func (f *failureLog) failed(now time.Time) (log bool, unlogged int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures++
	if !f.last.IsZero() && now.Sub(f.last) < failureLogEvery {
		f.unlogged++
		return false, 0
	}
	unlogged, f.unlogged, f.last = f.unlogged, 0, now
	return true, unlogged
}

// succeeded records a success and returns the failures before it (0: none,
// nothing to log).
func (f *failureLog) succeeded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.failures
	f.failures, f.unlogged, f.last = 0, 0, time.Time{}
	return n
}

// commitTimeout bounds one commit request: kafka-go's synchronous commit
// waits for the group's commit loop, which never runs while the group cannot
// rejoin (a coordinator outage, a long rebalance).
const commitTimeout = 5 * time.Second

// commitOnce commits the acked prefix of every partition the current
// generation claims (capped at a snapshot's offsets with a state
// interval), as that generation. It reports false when a commit failed (to
// be retried) and true when there was nothing to do, no generation, or the
// commit was fenced (retrying cannot succeed: the partitions are another
// member's now).
func (p *Pipeline) commitOnce() (ok bool) {
	p.commitMu.Lock()
	defer p.commitMu.Unlock()
	ok = true
	cs := p.tracker.Committable()
	if p.capCommits() {
		cs = p.capToSnapshot(cs)
	}
	g := p.gen.Load()
	if g == nil {
		cs = nil
	}
	if len(cs) > 0 {
		next := make(map[int]int64, len(cs))
		kept := cs[:0]
		for _, c := range cs {
			if slices.Contains(g.claimed, c.Partition) {
				next[c.Partition] = c.Next
				kept = append(kept, c)
			}
		}
		cs = kept
		ctx, cancel := context.WithTimeout(p.hard, commitTimeout)
		var err error
		sc, side := g.gen.(SideCommitter)
		switch {
		case side && p.joins != nil:
			// With T's offsets, in the same fenced request, the E offsets
			// the next owner of each partition reads its shared columns from.
			err = sc.CommitWith(ctx, next, map[string]map[int]int64{p.cfg.repart.Enriched: p.joins.anchors(next)})
		case p.joins != nil && p.noSideCommit.CompareAndSwap(false, true):
			p.log.Error("the source's generations cannot commit the enriched topic's offsets (SideCommitter): each partition's next owner reads the enriched topic from its first retained record",
				"source", fmt.Sprintf("%T", g.gen))
			fallthrough
		default:
			err = g.gen.Commit(ctx, next)
		}
		cancel()
		switch {
		case errors.Is(err, ErrFenced):
			if p.hard.Err() == nil {
				p.log.Warn("commit fenced: the partitions belong to a newer generation; their uncommitted events are re-delivered to their new owner", "err", err, "commits", fmt.Sprint(cs))
			}
			p.met.committed.WithLabelValues("fenced").Inc()
		case err != nil:
			ok = false
			if log, unlogged := p.commitLog.failed(time.Now()); log && p.hard.Err() == nil {
				p.log.Warn("commit offsets", "err", err, "commits", fmt.Sprint(cs), "failures_not_logged", unlogged)
			}
			p.met.committed.WithLabelValues("error").Inc()
		default:
			if failures := p.commitLog.succeeded(); failures > 0 {
				p.log.Info("commits succeed again", "failed_commits", failures)
			}
			for _, c := range cs {
				p.tracker.MarkCommitted(c)
			}
			p.noteCommitted(next)
			p.met.committed.WithLabelValues("ok").Inc()
			p.stats.Committed.Add(1)
		}
	}
	for _, part := range p.tracker.Partitions() {
		pending, _ := p.tracker.Pending(part)
		p.met.commitLag.WithLabelValues(strconv.Itoa(part)).Set(float64(pending))
	}
	return ok
}

// workersTorn reports whether a hard stop left a worker with batches it
// did not score.
func workersTorn(workers []*worker) bool {
	for _, w := range workers {
		if w.torn {
			return true
		}
	}
	return false
}

// alignLabels adds every partition of the labels topic to the stage's
// aligner before anything is fetched, and returns them (nil when unknown:
// the consumer looks them up and they join as they deliver).
func (p *Pipeline) alignLabels(ctx context.Context, st *stage, d *kafka.Dialer) []int {
	_, first, next, err := p.offsetsOf(ctx, d, p.cfg.labelsTopic, "")
	if err != nil {
		p.log.Warn("the labels topic's offsets are unknown: its partitions join the event-time order as they deliver", "topic", p.cfg.labelsTopic, "err", err)
		return nil
	}
	parts := slices.Sorted(maps.Keys(next))
	if st.al == nil {
		return parts
	}
	for _, part := range parts {
		id := labelAlignBase + part
		if err := st.alignLabels(id); err != nil {
			continue
		}
		p.labelMu.Lock()
		start, restored := p.labelNext[part]
		p.labelMu.Unlock()
		if !restored {
			start = first[part]
		}
		if start >= next[part] {
			st.al.MarkCaughtUp(id)
		}
	}
	return parts
}
