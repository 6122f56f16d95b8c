package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/align"
	"github.com/streamscore/streamscore/stream/internal/repart"
)

// The terminal stage of the repartition mode (repart.go): a member of the
// terminal group on the repartition topic R. For each R partition r it
// claims it keeps one features.Shared (the shared entities routed to r),
// restored from r's checkpoint, and applies R[r]'s events — coming from
// every source partition of the input topic — in event-time order (ties by
// tx_id) with an align.Aligner whose partitions are the sources (and the
// labels partitions): a source's watermark records are Advances. Each
// applied event's shared columns go to the enriched topic E, partition
// Src (repart.AppendEnriched). A source's events are applied once, by
// source offset: a re-send (a card stage that failed over re-sends from
// its committed offset) or a record re-read after a restore is skipped.
//
// Per r, every interval and when r is revoked or the stage stops, the
// stage takes r's state (the Shared, per source the offsets applied and
// the last applied event time, per labels partition the label offsets
// applied, and the R position: every R record below it is handled), waits
// until every E record queued so far is stored, stores the checkpoint,
// and only then commits R[r] at the R position, through the generation
// (fenced). R is never committed past a stored checkpoint; a crash between
// the store and the commit re-reads records the checkpoint holds, skipped
// as duplicates.
//
// Labels: every member reads every labels partition outside the group,
// per claimed r from r's checkpointed label offsets; a label whose
// Route(terminal_id) is r waits in r's aligner (a labels partition is an
// aligner partition, ids from inputParts on) and is applied with
// ApplyLabelShared; the others only advance their partition. Bad labels
// are counted (the card stage dead-letters them).
//
// The fetchers and labels readers hand their records to the stage in
// slices (termBatch: what the claim or reader has read ahead, up to
// maxHandOff, parsed and decoded by the fetcher), taking the slice's
// credits in one step; messages and slices are pooled.
//
// Goroutines (all joined by run): the stage loop (run's own), one E writer
// for run's life, and per generation one fetcher per claimed R partition,
// one labels reader per (claimed R partition, labels partition) and at most
// one checkpoint round in flight.

// terminalCredit bounds, per claimed R partition, the records fetched and
// not yet handled (queued to the stage, or waiting in the aligner for the
// other sources). When a partition's credits are all taken, releases stop
// waiting for R's fetch to catch up (PopExact) and take the aligner's wait
// bounds (Pop), so a source that is absent from a backlog costs at most
// LagWait, never unbounded memory. The trap: the fetch being blocked, every
// source looks silent then, so the release is exact only if the sources
// are within terminalCredit records of each other in event time in R (card
// stages that keep their partitions aligned write it so); otherwise it is
// counted lag_bound (and out_of_order for what comes after).
const terminalCredit = 16384

// terminalLabelProbe is how long a labels reader waits for a label before
// it reports its partition caught up (an empty labels partition must not
// hold the events back for the aligner's lag wait).
const terminalLabelProbe = 200 * time.Millisecond

// terminalQueue is the depth, in messages, of the stage's input channel
// (what the fetchers and labels readers have handed over, not yet taken).
const terminalQueue = 256

// finalGrace bounds the final checkpoint and commit of a stop when the
// stage has no hard-stop context.
const finalGrace = 30 * time.Second

// terminalConfig configures a terminal stage (newTerminalStage).
type terminalConfig struct {
	// src is a member of the terminal group on R: its claims are R
	// partitions. Its Read serves the labels topic.
	src Source
	// out writes the E records.
	out RecordWriter
	// group is the terminal group id: the checkpoint keys are
	// {Group: group, Topic: rTopic, Partition: r}.
	group          string
	rTopic, eTopic string
	// inputParts is the input topic's partition count: the sources are
	// 0..inputParts-1, and E has as many partitions.
	inputParts int
	// newShared returns a fresh Shared, one per claimed R partition (the
	// pipeline's feature options).
	newShared func() (*features.Shared, error)
	// ckpt is required: the terminal state lives in R's checkpoints.
	ckpt CheckpointStore
	// fingerprint names the state format (the lead's spec+models').
	fingerprint string
	// interval is the checkpoint-and-commit cadence. Default 1 s.
	interval time.Duration
	// labelsTopic ("": none) and labelDec (nil: JSON) read the labels.
	labelsTopic string
	labelDec    LabelDecoder
	// alignIdle is the aligner's idle wait, as given (0: a caught-up
	// source never holds the others back: WithAlignIdleWait(0)); alignLag
	// its lag wait (0: align's default, 10 s).
	alignIdle, alignLag time.Duration
	// labelsIdle is the labels partitions' idle wait
	// (WithLabelsAlignIdleWait), at most alignLag.
	labelsIdle time.Duration
	// labelsLate counts the live labels applied on arrival
	// (streamscore_stream_labels_late_total); nil: not counted.
	labelsLate prometheus.Counter
	// credit is terminalCredit (0) or, in tests, a smaller bound.
	credit int
	// deadAfter is how long a caught-up source may stay unheard (no
	// event, mark or heartbeat) before it holds the others back again as
	// a lagging one: its owner may have died, and the events written to
	// its partition since are not routed until a new owner takes it.
	// The pipeline gives three quarters of the align idle wait (its
	// routers heartbeat four times per idle wait: Pipeline.deadAfter): a
	// source busy until its owner died is suspected before it could turn
	// idle. 0: no check.
	deadAfter time.Duration
	// hard ends the stage at once (the pipeline's hard stop): nothing more
	// is written or committed. Nil: the final checkpoint of a stop gets 30 s.
	hard context.Context
	log  *slog.Logger
	reg  prometheus.Registerer
}

// terminalStage is the terminal stage; run drives it.
type terminalStage struct {
	cfg     terminalConfig
	met     *terminalMetrics
	dec     *features.Decoder // R payloads (validated by the card stage already)
	ldec    LabelDecoder
	cols    []int // the Shared's columns (Shared.Columns), in row order
	width   int
	restore atomic.Int32 // R partitions being restored now
	w       *eWriter
	// bad counts the records skipped, for the log's rate limit.
	bad atomic.Uint64
}

// newTerminalStage checks cfg and returns a stage.
func newTerminalStage(cfg terminalConfig) (*terminalStage, error) {
	switch {
	case cfg.src == nil:
		return nil, errors.New("stream: terminal stage: no source")
	case cfg.out == nil:
		return nil, errors.New("stream: terminal stage: no record writer for the enriched topic")
	case cfg.group == "" || cfg.rTopic == "" || cfg.eTopic == "":
		return nil, errors.New("stream: terminal stage: group, repartition topic and enriched topic are required")
	case cfg.inputParts <= 0 || cfg.inputParts > align.MaxPartition/2:
		return nil, fmt.Errorf("stream: terminal stage: input partition count %d out of range", cfg.inputParts)
	case cfg.newShared == nil:
		return nil, errors.New("stream: terminal stage: no Shared constructor")
	case cfg.ckpt == nil:
		return nil, errors.New("stream: terminal stage: a checkpoint store is required")
	case cfg.fingerprint == "":
		return nil, errors.New("stream: terminal stage: no state fingerprint")
	case cfg.interval < 0:
		return nil, fmt.Errorf("stream: terminal stage: negative checkpoint interval %v", cfg.interval)
	}
	if cfg.interval == 0 {
		cfg.interval = time.Second
	}
	if cfg.credit <= 0 {
		cfg.credit = terminalCredit
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	cfg.log = cfg.log.With("stage", "terminal")
	sh, err := cfg.newShared()
	if err != nil {
		return nil, fmt.Errorf("stream: terminal stage: make shared state: %w", err)
	}
	// The card stage checked the event with the pipeline's decoder (its
	// field bounds, its future skew): the payload is its AppendJSON, read
	// back without those bounds. One the stage still refuses gets a
	// refused E record (the card stage dead-letters it).
	dec, err := features.NewDecoder(features.WithMaxFutureSkew(-1), features.WithMaxFieldBytes(1<<20))
	if err != nil {
		return nil, fmt.Errorf("stream: terminal stage: %w", err)
	}
	ldec := cfg.labelDec
	if ldec == nil {
		if ldec, err = features.NewDecoder(); err != nil {
			return nil, fmt.Errorf("stream: terminal stage: %w", err)
		}
	}
	if _, err := align.New[*termMsg](alignOpts(cfg)...); err != nil {
		return nil, fmt.Errorf("stream: terminal stage: %w", err)
	}
	met, err := newTerminalMetrics(cfg.reg)
	if err != nil {
		return nil, err
	}
	t := &terminalStage{cfg: cfg, met: met, dec: dec, ldec: ldec, cols: sh.Columns(), width: sh.Width()}
	t.w = newEWriter(cfg.out, cfg.eTopic, cfg.log, met)
	return t, nil
}

func alignOpts(cfg terminalConfig) []align.Option {
	opts := []align.Option{align.WithIdleWait(cfg.alignIdle)}
	if cfg.alignLag > 0 {
		opts = append(opts, align.WithLagWait(cfg.alignLag))
	}
	// Backpressure is the partition's credits (terminalCredit), not Full.
	return append(opts, align.WithMaxPerPartition(max(cfg.credit, 1)))
}

// restoring returns the number of R partitions being restored now.
func (t *terminalStage) restoring() int { return int(t.restore.Load()) }

// termMsg is one record on its way to the stage (from a claim's fetcher or
// a labels reader), and, pushed, the aligner's item.
type termMsg struct {
	r      int
	kind   byte  // 'r': an R record; 'l': a label; 'q': a labels partition found caught up
	off    int64 // the record's offset (R, or labels)
	hw     int64
	h      repart.Head
	ev     features.Event
	err    error  // the record is bad (counted under reason)
	reason string // bad: record, payload, source, label
	lp     int    // labels partition
	l      features.Label
	credit *credit // one credit given back when handled
}

// termMsgPool holds the messages the stage is done with: taken by the
// fetchers and the labels readers, given back by the stage (free).
var termMsgPool = sync.Pool{New: func() any { return new(termMsg) }}

// newTermMsg returns an empty message. Safe for concurrent use.
func newTermMsg() *termMsg { return termMsgPool.Get().(*termMsg) }

// free gives m back to the pool: the stage is done with it (handled
// without waiting in the aligner, or applied). Its credit is given back
// before (giveCredit).
func (m *termMsg) free() {
	*m = termMsg{}
	termMsgPool.Put(m)
}

// giveCredit gives m's credit back, once.
func (m *termMsg) giveCredit() {
	if m.credit != nil {
		m.credit.give()
		m.credit = nil
	}
}

// termBatch is a slice of messages of one R partition (r records, in
// offset order) or of one labels partition, on its way from its fetcher
// or labels reader to the stage, each holding a credit: one channel
// operation per slice (at most maxHandOff) instead of one per record.
// Pooled: the stage gives it back once it has taken every message.
// Measured against one record per hand-off (BenchmarkTerminalStage, 5
// alternating rounds, medians of the stage ÷ the same run's reference):
// 5.34 -> 3.61 (0.68x); allocations 212,935 -> 193,374 per 20,000 events.
// An R slice counts in its partition's inFlight from before its first
// record is decoded until the stage has taken it, then in holding until
// the stage has handled its last message (termLoop.take).
type termBatch struct {
	r    int
	rec  bool // R records (else labels)
	msgs []*termMsg
}

var termBatchPool = sync.Pool{New: func() any { return &termBatch{msgs: make([]*termMsg, 0, maxHandOff)} }}

// drop frees the messages of b from i on, giving back their credits
// (none applied), and b itself.
func (b *termBatch) drop(i int) {
	for _, m := range b.msgs[i:] {
		m.giveCredit()
		m.free()
	}
	b.put()
}

// put gives b back to the pool (its messages are the stage's or freed).
func (b *termBatch) put() {
	clear(b.msgs)
	b.msgs = b.msgs[:0]
	termBatchPool.Put(b)
}

// termSrc is one source partition as seen by an R partition.
type termSrc struct {
	// trail: the source offsets applied (done) or waiting in the aligner.
	trail offTrail
	// through is the highest source offset reported (event or mark) since
	// the partition was restored: a mark at or below it is not progress.
	through  int64
	caughtUp bool
	// lastTS is the event time of the last event applied (hasTS).
	lastTS int64
	hasTS  bool
	// heard is when the last record of the source came (an event, a mark,
	// a heartbeat); suspect that it fell silent past deadAfter while
	// caught up (its owner may be gone: see checkLive).
	heard   time.Time
	suspect bool
}

// termPart is the state of one claimed R partition; the stage goroutine
// owns it (inFlight excepted).
type termPart struct {
	r      int
	claim  Claim
	shared *features.Shared
	row    []float32
	enr    repart.Enriched
	al     *align.Aligner[*termMsg]
	stats  align.Stats // the aligner's counters already counted
	// released: the labels the aligner released (stats: events only).
	released labelReleases
	srcs     []termSrc
	labels   map[int]*offTrail // labels partition -> label offsets applied (done) or waiting
	// rTrail: how far R[r] is handled; the R position is applied+1.
	rTrail offTrail
	credit *credit
	// inFlight counts the records the fetcher has taken a credit for and
	// the stage has not taken (termLoop.take): while > 0, R is not caught
	// up. holding counts those of the slice the stage is taking that it
	// has not handled yet (the stage's own).
	inFlight atomic.Int64
	holding  int
	behind   bool      // the last R record received was not the last R had
	lastRecv time.Time // when the last R record was received
	// version moves with every change a checkpoint holds; ckptVersion is
	// the version of the last stored checkpoint.
	version, ckptVersion uint64
	// unknown: the restore was cut short by a stop; the state is never
	// stored (it would replace the checkpoint that holds the history).
	unknown bool
}

// rPos is the R position to commit: every record below it is handled.
func (tp *termPart) rPos() int64 { return tp.rTrail.applied + 1 }

// trailHolds reports whether off is applied or waits in the aligner.
func trailHolds(tr *offTrail, off int64) bool {
	if off <= tr.applied {
		return true
	}
	if off > tr.seen {
		return false
	}
	for _, e := range tr.trail {
		if e.off == off {
			return true
		}
	}
	return false
}

// newPart returns an empty state for R partition c, with its aligner.
func (t *terminalStage) newPart(c Claim) (*termPart, error) {
	sh, err := t.cfg.newShared()
	if err != nil {
		return nil, fmt.Errorf("make shared state: %w", err)
	}
	al, err := align.New[*termMsg](alignOpts(t.cfg)...)
	if err != nil {
		return nil, err
	}
	tp := &termPart{r: c.Partition(), claim: c, shared: sh, row: make([]float32, t.width), al: al,
		srcs: make([]termSrc, t.cfg.inputParts), labels: map[int]*offTrail{},
		rTrail: newOffTrail(c.Start() - 1), credit: newCredit(t.cfg.credit)}
	tp.enr.Cols = make([]float32, len(t.cols))
	for i := range tp.srcs {
		tp.srcs[i] = termSrc{trail: newOffTrail(-1), through: -1}
	}
	return tp, nil
}

// run runs the stage's generations until ctx ends, then checkpoints and
// commits what it applied (unless stopped hard). It returns nil, or the
// error of a source closed under it.
func (t *terminalStage) run(ctx context.Context) error {
	hard := t.cfg.hard
	if hard == nil {
		// The final checkpoint and commit of a stop get finalGrace.
		h, hcancel := context.WithCancel(context.WithoutCancel(ctx))
		defer hcancel()
		defer context.AfterFunc(ctx, func() { time.AfterFunc(finalGrace, hcancel) })()
		hard = h
	}
	wctx, wcancel := context.WithCancel(hard)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer wcancel()
	wg.Go(func() { t.w.run(wctx) })
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(hard, cancel)
	defer stop()

	nR, labelParts, err := t.topics(fctx)
	if err != nil || fctx.Err() != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	for {
		gen, err := t.cfg.src.Next(fctx)
		if err != nil {
			if fctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrSourceClosed) {
				return fmt.Errorf("stream: terminal stage: join group: %w", err)
			}
			wait := 100 * time.Millisecond
			if !rebalancing(err) {
				level := slog.LevelWarn
				if IsFatalSourceError(err) {
					level = slog.LevelError
				}
				t.cfg.log.Log(context.Background(), level, "join terminal group failed, retrying", "err", err, "backoff", backoff)
				wait = backoff
				backoff = min(backoff*2, 5*time.Second)
			}
			select {
			case <-fctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		backoff = 100 * time.Millisecond
		err = t.generation(fctx, hard, gen, nR, labelParts)
		if err == nil && fctx.Err() != nil {
			// Stopping: the source's Close ends gen after it has closed
			// the group (ended first, the member would rejoin before
			// leaving: see KafkaSource.Close).
			return nil
		}
		gen.End()
		if err != nil {
			return err
		}
	}
}

// topics looks up R's partition count (labels are routed by it), the
// labels topic's partitions and E's partition count, retrying until ctx
// ends (nothing returned). E must have the input topic's partition count:
// another is an error (an E record of a source beyond it could never be
// written).
func (t *terminalStage) topics(ctx context.Context) (nR int, labelParts []int, err error) {
	b := 100 * time.Millisecond
	for {
		var rp, ep []int
		rp, err = t.cfg.src.Partitions(ctx, t.cfg.rTopic)
		if err == nil && len(rp) == 0 {
			err = fmt.Errorf("topic %q has no partitions", t.cfg.rTopic)
		}
		if err == nil {
			ep, err = t.cfg.src.Partitions(ctx, t.cfg.eTopic)
		}
		if err == nil && len(ep) != t.cfg.inputParts {
			return 0, nil, fmt.Errorf("stream: terminal stage: the enriched topic %q has %d partitions, the input topic %d: they must be equal",
				t.cfg.eTopic, len(ep), t.cfg.inputParts)
		}
		if err == nil && t.cfg.labelsTopic != "" {
			labelParts, err = t.cfg.src.Partitions(ctx, t.cfg.labelsTopic)
		}
		if err == nil {
			return len(rp), labelParts, nil
		}
		if ctx.Err() != nil {
			return 0, nil, nil
		}
		t.cfg.log.Warn("look up the repartition, enriched and labels topics, retrying", "err", err, "backoff", b)
		select {
		case <-ctx.Done():
			return 0, nil, nil
		case <-time.After(b):
		}
		b = min(2*b, 5*time.Second)
	}
}

// generation works on gen's claims until gen ends or ctx does, then
// checkpoints and commits every claimed partition through gen (under
// hard). It returns an error only when a partition's state cannot be made.
func (t *terminalStage) generation(ctx, hard context.Context, gen Generation, nR int, labelParts []int) error {
	claims := gen.Claims()
	t.met.claimed.Set(float64(len(claims)))
	defer t.met.claimed.Set(0)
	ids := make([]int, len(claims))
	for i, c := range claims {
		ids[i] = c.Partition()
	}
	t.cfg.log.Info("terminal group generation", "generation", gen.ID(), "partitions", fmt.Sprint(ids))
	parts, err := t.restoreAll(ctx, claims)
	if err != nil {
		return err
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Its capacity is terminalQueue messages in slices of maxHandOff.
	in := make(chan *termBatch, max(1, terminalQueue/maxHandOff))
	var wg sync.WaitGroup
	for _, tp := range parts {
		for _, lp := range labelParts {
			id := t.cfg.inputParts + lp
			if err := tp.al.Add(id); err != nil {
				return fmt.Errorf("stream: terminal stage: add labels partition %d to the aligner: %w", lp, err)
			}
			if err := tp.al.SetIdleWait(id, t.cfg.labelsIdle); err != nil {
				return fmt.Errorf("stream: terminal stage: labels partition %d: %w", lp, err)
			}
			if _, ok := tp.labels[lp]; !ok {
				tr := newOffTrail(-1)
				tp.labels[lp] = &tr
			}
		}
	}
	for _, tp := range parts {
		wg.Go(func() { t.fetch(gctx, tp, in) })
		for _, lp := range labelParts {
			start := tp.labels[lp].applied + 1
			if start == 0 {
				start = kafka.FirstOffset
			}
			wg.Go(func() { t.readLabels(gctx, tp.r, lp, start, nR, in) })
		}
	}
	byR := map[int]*termPart{}
	for _, tp := range parts {
		byR[tp.r] = tp
	}
	l := termLoop{t: t, gen: gen, parts: parts, byR: byR, nR: nR}
	l.loop(ctx, hard, gen.Done(), in)
	cancel()
	wg.Wait()
	// What waits in the aligners is dropped (the next owner reads it
	// again); the state applied is stored and R committed to it.
	l.waitRound()
	dropped := 0
	for _, tp := range parts {
		dropped += tp.al.Len()
		for i := range tp.srcs {
			tp.srcs[i].trail.dropWaiting()
		}
		for _, tr := range tp.labels {
			tr.dropWaiting()
		}
	}
	stored := len(l.round(hard, l.snapshot(true)))
	t.cfg.log.Info("terminal partitions released", "generation", gen.ID(), "partitions", fmt.Sprint(ids),
		"dropped_unapplied", dropped, "checkpointed", stored)
	return nil
}

// fetch fetches R[tp.r] and hands its records, parsed and decoded, to the
// stage in slices (termBatch: what the claim has read ahead, up to
// maxHandOff and the credits free, at least one) until ctx ends or the
// generation does.
func (t *terminalStage) fetch(ctx context.Context, tp *termPart, in chan<- *termBatch) {
	b := 100 * time.Millisecond
	buf := make([]Record, 0, maxHandOff)
	for {
		recs, err := fetchBatch(ctx, tp.claim, buf[:0])
		if errors.Is(err, ErrFetchResumed) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrGenerationEnded) || errors.Is(err, ErrSourceClosed) {
				return
			}
			t.cfg.log.Warn("fetch repartition record failed, retrying", "partition", tp.r, "err", err, "backoff", b)
			select {
			case <-ctx.Done():
				return
			case <-time.After(b):
			}
			b = min(2*b, 5*time.Second)
			continue
		}
		b = 100 * time.Millisecond
		for len(recs) > 0 {
			n, err := tp.credit.take(ctx, len(recs))
			if err != nil {
				return
			}
			// In flight from before the first is decoded until the stage
			// has taken the slice: R is not caught up meanwhile.
			tp.inFlight.Add(int64(n))
			bt := termBatchPool.Get().(*termBatch)
			bt.r, bt.rec = tp.r, true
			for i := range recs[:n] {
				bt.msgs = append(bt.msgs, t.parse(tp, &recs[i]))
			}
			select {
			case in <- bt:
			case <-ctx.Done():
				tp.inFlight.Add(-int64(n))
				bt.drop(0)
				return
			}
			recs = recs[n:]
		}
	}
}

// parse returns R record rec of tp as a message: its head parsed, an
// event's payload decoded, or the reason it is bad.
func (t *terminalStage) parse(tp *termPart, rec *Record) *termMsg {
	m := newTermMsg()
	m.r, m.kind, m.off, m.hw, m.credit = tp.r, 'r', rec.Offset, rec.HighWater, tp.credit
	var payload []byte
	m.h, payload, m.err = repart.ParseRecord(rec.Value)
	switch {
	case m.err != nil:
		m.reason = "record"
	case m.h.Src >= t.cfg.inputParts:
		m.reason = "source"
		m.err = fmt.Errorf("source partition %d, the input topic has %d", m.h.Src, t.cfg.inputParts)
	case m.h.Kind == repart.KindEvent:
		if err := t.dec.Decode(payload, &m.ev); err != nil {
			m.reason, m.err = "payload", err
		}
	}
	return m
}

// readLabels reads labels partition lp from start for R partition r and
// hands its labels to the stage in slices (which keeps those routed to r),
// and, when the partition has nothing more for terminalLabelProbe, reports
// it caught up.
func (t *terminalStage) readLabels(ctx context.Context, r, lp int, start int64, nR int, in chan<- *termBatch) {
	var rd PartitionReader
	b := 100 * time.Millisecond
	for {
		var err error
		if rd, err = t.cfg.src.Read(t.cfg.labelsTopic, lp, start); err == nil {
			break
		}
		t.cfg.log.Warn("open labels reader failed, retrying", "partition", lp, "err", err, "backoff", b)
		select {
		case <-ctx.Done():
			return
		case <-time.After(b):
		}
		b = min(2*b, 5*time.Second)
	}
	defer rd.Close()
	cr := newCredit(labelCredit)
	quiet := false
	// send hands the first n of recs (all when recs is empty: a caught-up
	// report) to the stage, n as many as credits are free, at least one.
	send := func(recs []Record) (int, bool) {
		n, err := cr.take(ctx, max(1, len(recs)))
		if err != nil {
			return 0, false
		}
		bt := termBatchPool.Get().(*termBatch)
		bt.r, bt.rec = r, false
		if len(recs) == 0 {
			m := newTermMsg()
			m.r, m.kind, m.lp, m.credit = r, 'q', lp, cr
			bt.msgs = append(bt.msgs, m)
		}
		for i := range recs[:min(n, len(recs))] {
			rec := &recs[i]
			m := newTermMsg()
			m.r, m.kind, m.off, m.hw, m.lp, m.credit = r, 'l', rec.Offset, rec.HighWater, lp, cr
			if err := t.ldec.DecodeLabel(rec.Value, &m.l); err != nil {
				m.reason, m.err = "label", err
			} else if repart.Route(m.l.TerminalID, nR) != r {
				m.reason = "other" // another R partition's: only its progress counts here
			}
			bt.msgs = append(bt.msgs, m)
		}
		select {
		case in <- bt:
			return n, true
		case <-ctx.Done():
			bt.drop(0)
			return 0, false
		}
	}
	buf := make([]Record, 0, maxHandOff)
	b = 100 * time.Millisecond
	for {
		pctx, pcancel := context.WithTimeout(ctx, terminalLabelProbe)
		recs, err := fetchBatch(pctx, rd, buf[:0])
		pcancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrSourceClosed) {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) {
				if !quiet {
					quiet = true
					if _, ok := send(nil); !ok {
						return
					}
				}
				continue
			}
			t.cfg.log.Warn("fetch label failed, retrying", "partition", lp, "err", err, "backoff", b)
			select {
			case <-ctx.Done():
				return
			case <-time.After(b):
			}
			b = min(2*b, 5*time.Second)
			continue
		}
		b = 100 * time.Millisecond
		quiet = false
		for len(recs) > 0 {
			n, ok := send(recs)
			if !ok {
				return
			}
			recs = recs[n:]
		}
	}
}

// termLoop is one generation's stage loop and its checkpoint rounds.
type termLoop struct {
	t     *terminalStage
	gen   Generation
	parts []*termPart
	byR   map[int]*termPart
	nR    int
	// A checkpoint round in flight (at most one): its result arrives on
	// roundDone.
	roundBusy bool
	roundDone chan []termBlob
	roundWG   sync.WaitGroup
}

// loop handles records, releases, timers and checkpoint rounds until done
// closes or ctx ends.
func (l *termLoop) loop(ctx, hard context.Context, done <-chan struct{}, in <-chan *termBatch) {
	t := l.t
	l.roundDone = make(chan []termBlob, 1)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	tick := time.NewTicker(t.cfg.interval)
	defer tick.Stop()
	var armedAt time.Time
	for {
		// Checked first: select picks at random among ready cases, and a
		// record must not be applied once the generation or the stage
		// ended.
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		default:
		}
		var d time.Time
		ok := false
		for _, tp := range l.parts {
			ad, aok := tp.al.Deadline()
			if !aok {
				continue
			}
			if l.exact(tp) {
				// Nothing goes by a wait bound while R's fetch is behind:
				// not before the fetch has stalled for the lag wait.
				if w := tp.lastRecv.Add(t.lagWait()); w.After(ad) {
					ad = w
				}
			}
			if !ok || ad.Before(d) {
				d, ok = ad, true
			}
		}
		if ok && !d.Equal(armedAt) {
			timer.Stop()
			timer.Reset(time.Until(d))
			armedAt = d
		}
		select {
		case bt := <-in:
			if !l.take(ctx, hard, done, bt) {
				return
			}
		case <-timer.C:
			armedAt = time.Time{}
			for _, tp := range l.parts {
				if !l.release(hard, tp) {
					return
				}
			}
		case <-tick.C:
			if !l.roundBusy {
				if rd := l.snapshot(false); len(rd.blobs) > 0 {
					l.roundBusy = true
					l.roundWG.Go(func() { l.roundDone <- l.round(hard, rd) })
				}
			}
		case stored := <-l.roundDone:
			l.roundBusy = false
			l.stored(stored)
		case <-done:
			return
		case <-ctx.Done():
			return
		}
	}
}

// take handles the messages of slice bt in order; false when the
// generation or the stage ended (checked before each message: none is
// handled after) or it was stopped hard meanwhile. An R slice stops
// counting in inFlight and counts in holding until its last message is
// handled: releases wait for R's fetch while any of it is left.
func (l *termLoop) take(ctx, hard context.Context, done <-chan struct{}, bt *termBatch) bool {
	tp := l.byR[bt.r]
	if tp == nil {
		bt.drop(0)
		return true
	}
	if bt.rec {
		tp.inFlight.Add(-int64(len(bt.msgs)))
		tp.holding = len(bt.msgs)
	}
	for i, m := range bt.msgs {
		if closed(done) || closed(ctx.Done()) {
			tp.holding = 0
			bt.drop(i)
			return false
		}
		if bt.rec {
			tp.holding--
		}
		if !l.handle(hard, tp, m) {
			tp.holding = 0
			bt.drop(i + 1)
			return false
		}
	}
	bt.put()
	return true
}

// closed reports whether ch is closed (never blocks).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// handle takes one message of tp; false when stopped hard meanwhile.
func (l *termLoop) handle(hard context.Context, tp *termPart, m *termMsg) bool {
	t := l.t
	switch m.kind {
	case 'q':
		tp.al.MarkCaughtUp(t.cfg.inputParts + m.lp)
		m.giveCredit()
		m.free()
		return true
	case 'l':
		return l.addLabel(hard, tp, m)
	}
	tp.behind = m.hw > 0 && m.off < m.hw-1
	if tp.behind {
		tp.lastRecv = time.Now()
	}
	if m.err != nil {
		t.met.bad.WithLabelValues(m.reason).Inc()
		if n := t.bad.Add(1); n == 1 || n%1000 == 0 {
			t.cfg.log.Error("repartition record skipped", "partition", tp.r, "offset", m.off, "reason", m.reason, "err", m.err, "skipped_total", n)
		}
		if m.reason == "payload" && !l.refuse(hard, tp, m) {
			m.giveCredit() // a hard stop: the caller drops the rest of the slice
			m.free()
			return false
		}
		l.done(tp, m)
		return l.release(hard, tp)
	}
	s := &tp.srcs[m.h.Src]
	s.heard = time.Now()
	if s.suspect {
		s.suspect = false
		t.met.revived.Inc()
	}
	switch m.h.Kind {
	case repart.KindMark:
		t.met.marks.Inc()
		if m.h.Offset > s.through {
			s.through, s.caughtUp = m.h.Offset, m.h.CaughtUp
			tp.al.Advance(m.h.Src, m.h.TS, m.h.CaughtUp)
		} else if m.h.Offset == s.through && m.h.CaughtUp && !s.caughtUp {
			// Only a report of the source's last position: a stale one (an
			// earlier owner's) must not declare caught up a source its new
			// owner is catching up on.
			s.caughtUp = true
			tp.al.MarkCaughtUp(m.h.Src)
		}
		l.done(tp, m)
	default:
		if trailHolds(&s.trail, m.h.Offset) {
			t.met.duplicates.Inc()
			l.done(tp, m)
			break
		}
		s.trail.fetched(m.h.Offset, false)
		s.through, s.caughtUp = max(s.through, m.h.Offset), m.h.CaughtUp
		tp.rTrail.fetched(m.off, false)
		tp.al.Push(m.h.Src, m.ev.TS.UnixNano(), m.ev.TxID, m, m.h.CaughtUp)
	}
	return l.release(hard, tp)
}

// done records R record m as handled without waiting in the aligner, and
// frees m.
func (l *termLoop) done(tp *termPart, m *termMsg) {
	tp.rTrail.fetched(m.off, true)
	tp.version++
	m.giveCredit()
	m.free()
}

// addLabel takes a label of tp: one routed to tp's R partition waits in
// the aligner for its turn (applied after every event before its time,
// before those at or after it, as Replay does); another's, or a bad one,
// only advances its labels partition.
func (l *termLoop) addLabel(hard context.Context, tp *termPart, m *termMsg) bool {
	t := l.t
	tr := tp.labels[m.lp]
	if tr == nil || trailHolds(tr, m.off) {
		m.giveCredit()
		m.free()
		return true
	}
	id := t.cfg.inputParts + m.lp
	caughtUp := m.hw > 0 && m.off == m.hw-1
	switch {
	case m.err != nil:
		t.met.bad.WithLabelValues(m.reason).Inc()
		if n := t.bad.Add(1); n == 1 || n%1000 == 0 {
			t.cfg.log.Warn("label skipped by the terminal stage (the card stage dead-letters it)", "labels_partition", m.lp, "offset", m.off, "err", m.err, "skipped_total", n)
		}
		tr.fetched(m.off, true)
		tp.version++
		if caughtUp {
			tp.al.MarkCaughtUp(id)
		}
		m.giveCredit()
		m.free()
	case m.reason != "":
		tr.fetched(m.off, true)
		tp.version++
		tp.al.Advance(id, m.l.TS.UnixNano(), caughtUp)
		m.giveCredit()
		m.free()
	default:
		tr.fetched(m.off, false)
		// "\x00" sorts a label before every event of its time.
		tp.al.Push(id, m.l.TS.UnixNano(), "\x00"+m.l.TxID, m, caughtUp)
	}
	return l.release(hard, tp)
}

// release applies what tp's aligner lets go: while R's fetch is behind
// (and credits are left), only what no source can precede any more
// (PopExact: the sources' silence is R's lag); else with the wait bounds.
// False when stopped hard while an E record waited to be queued.
func (l *termLoop) release(hard context.Context, tp *termPart) bool {
	l.checkLive(tp)
	n := 0
	for {
		var m *termMsg
		var ok bool
		var why align.Reason
		if l.exact(tp) {
			m, why, ok = tp.al.PopExact()
		} else {
			m, why, ok = tp.al.Pop()
		}
		if !ok {
			break
		}
		if m.kind == 'l' {
			tp.released.released(why, l.t.cfg.labelsLate)
		}
		n++
		if !l.apply(hard, tp, m) {
			return false
		}
	}
	if n > 0 {
		l.countAlign(tp)
	}
	return true
}

// checkLive makes every caught-up source of tp unheard for deadAfter hold
// the others back again (a lagging source: for the lag wait at most, or
// until it reports again): a caught-up source is ignored after the idle
// wait, which is right while its owner is there to route what comes next
// at once, and wrong when the owner died — the events written to its
// partition meanwhile come only after the failover, older than what the
// idle bound let through. The routers heartbeat every caught-up source
// several times per idle wait, so a live one is never suspected for long.
func (l *termLoop) checkLive(tp *termPart) {
	if l.t.cfg.deadAfter <= 0 {
		return
	}
	now := time.Now()
	for src := range tp.srcs {
		s := &tp.srcs[src]
		if !s.caughtUp || s.suspect || s.heard.IsZero() || now.Sub(s.heard) < l.t.cfg.deadAfter {
			continue
		}
		s.suspect, s.caughtUp = true, false
		tp.al.Advance(src, math.MinInt64, false) // not caught up: it holds the others back
		l.t.met.suspected.Inc()
	}
}

// exact reports whether tp's releases must wait for R's fetch: records
// are on their way to the stage (inFlight) or left in the slice it is
// taking (holding), or the last one received was not R's
// last and the fetch has delivered within the lag wait (a fetch stalled
// longer is the sources' silence too, as a lagging partition's is); and
// credits are left (see terminalCredit).
func (l *termLoop) exact(tp *termPart) bool {
	if tp.credit.taken.Load() >= tp.credit.max {
		return false
	}
	return tp.holding > 0 || tp.inFlight.Load() > 0 || (tp.behind && time.Since(tp.lastRecv) < l.t.lagWait())
}

// lagWait is the aligner's lag wait.
func (t *terminalStage) lagWait() time.Duration {
	if t.cfg.alignLag > 0 {
		return t.cfg.alignLag
	}
	return 10 * time.Second // align's default
}

// apply applies a released event (or label) to tp's Shared and queues the
// event's E record.
func (l *termLoop) apply(hard context.Context, tp *termPart, m *termMsg) bool {
	t := l.t
	tp.version++
	m.giveCredit()
	if m.kind == 'l' {
		tp.shared.ApplyLabelShared(&m.l)
		tp.labels[m.lp].markApplied(m.off)
		m.free()
		t.met.labels.Inc()
		return true
	}
	late := tp.shared.Apply(&m.ev, tp.row)
	e := &tp.enr
	e.Src, e.Offset, e.Late = m.h.Src, m.h.Offset, late
	for i, c := range t.cols {
		e.Cols[i] = tp.row[c]
	}
	rec := OutRecord{Partition: m.h.Src, Value: repart.AppendEnriched(nil, e)}
	s := &tp.srcs[m.h.Src]
	s.trail.markApplied(m.h.Offset)
	s.lastTS, s.hasTS = m.ev.TS.UnixNano(), true
	tp.rTrail.markApplied(m.off)
	m.free()
	t.met.applied.Inc()
	blocked := time.Now()
	if !t.w.add(hard, rec) {
		return false
	}
	if d := time.Since(blocked); d > time.Millisecond {
		tp.al.Resume(d) // the enriched topic held the stage, not the sources
	}
	return true
}

// refuse answers an event whose payload does not decode with a refused E
// record, once per source offset: its card stage dead-letters it rather
// than wait for its columns for good (which would stop its partition).
// False when stopped hard.
func (l *termLoop) refuse(hard context.Context, tp *termPart, m *termMsg) bool {
	s := &tp.srcs[m.h.Src]
	if trailHolds(&s.trail, m.h.Offset) {
		return true
	}
	s.trail.fetched(m.h.Offset, true)
	s.through = max(s.through, m.h.Offset)
	e := repart.Enriched{Src: m.h.Src, Offset: m.h.Offset, Refused: true}
	return l.t.w.add(hard, OutRecord{Partition: m.h.Src, Value: repart.AppendEnriched(nil, &e)})
}

// countAlign publishes the growth of tp's aligner counters.
func (l *termLoop) countAlign(tp *termPart) {
	st := tp.released.eventsOnly(tp.al.Stats())
	for _, c := range []struct {
		outcome   string
		now, seen uint64
	}{
		{"ordered", st.Ordered, tp.stats.Ordered}, {"idle_bound", st.IdleBound, tp.stats.IdleBound},
		{"lag_bound", st.LagBound, tp.stats.LagBound}, {"out_of_order", st.OutOfOrder, tp.stats.OutOfOrder},
	} {
		if c.now > c.seen {
			l.t.met.aligned.WithLabelValues(c.outcome).Add(float64(c.now - c.seen))
		}
	}
	tp.stats = st
	buffered := 0
	for _, p := range l.parts {
		buffered += p.al.Len()
	}
	l.t.met.buffered.Set(float64(buffered))
}
