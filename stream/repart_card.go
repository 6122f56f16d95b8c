package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/repart"
)

// The card stage's side of the repartition mode (see repart.go): the
// router writes every claimed event to R and reports each source's progress
// with watermark records; the joiner reads E[p] for every claimed p and
// hands each event's shared columns to the worker that scores it.

const (
	// routeLinger is how long the router gathers records before a write.
	routeLinger = 2 * time.Millisecond
	// routeMaxBatch flushes the router's buffer early.
	routeMaxBatch = 1024
	// markEvery is how often a source reports its progress to every R
	// partition it sent nothing to since (a watermark record).
	markEvery = 50 * time.Millisecond
	// heartbeatEvery is how often a source reports its position to every R
	// partition even without progress: a terminal stage that restarted
	// learns every source's watermark within it.
	heartbeatEvery = time.Second
)

// routed is one message of a claimed partition on its way to R: an event
// (rec set: the R record, key the entity id) or only progress (a dead
// letter: rec nil).
type routed struct {
	part     int
	off      int64
	ts       int64 // the event's time; for progress only, 0 (the source's watermark stays)
	caughtUp bool
	key      []byte
	rec      []byte
}

// srcProgress is what the router knows of one source partition.
type srcProgress struct {
	off      int64 // last offset routed (or passed: a dead letter)
	ts       int64 // time of its last event (its watermark); hasTS once one was routed
	hasTS    bool
	caughtUp bool
	sent     []int64 // per R partition: the last offset reported to it (event or mark), -1 none
}

// router writes the claimed partitions' events to R.
type router struct {
	p     *Pipeline
	w     RecordWriter
	topic string
	nR    int
	in    chan routed
	owned chan []int // a generation's claimed partitions (claim)
	srcs  map[int]*srcProgress
	buf   []OutRecord
	start time.Time // when the first buffered record came
}

func newRouter(p *Pipeline, w RecordWriter, nR int) *router {
	return &router{p: p, w: w, topic: p.cfg.repart.Topic, nR: nR, in: make(chan routed, 4096), owned: make(chan []int), srcs: map[int]*srcProgress{}}
}

// route hands the message of m (decoded into pd) to the router; called by
// m's partition's fetching goroutine, in offset order. It blocks while the
// router is behind (backpressure) or until ctx ends.
func (rt *router) route(ctx context.Context, m *kafka.Message, pd *pending) error {
	r := routed{part: m.Partition, off: m.Offset, caughtUp: m.HighWaterMark > 0 && m.Offset == m.HighWaterMark-1}
	if pd.reason == "" {
		r.ts = pd.ev.TS.UnixNano()
		r.key = []byte(rt.p.shared.SharedID(&pd.ev, 0))
		payload := pd.ev.AppendJSON(make([]byte, 0, 256))
		r.rec = repart.AppendRecord(make([]byte, 0, len(payload)+24), repart.Head{
			Kind: repart.KindEvent, Src: m.Partition, Offset: m.Offset, TS: r.ts, CaughtUp: r.caughtUp,
		}, payload)
	}
	select {
	case rt.in <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// claim tells the router a generation's claimed partitions: it stops
// reporting the progress of the others (another member owns them now; a
// stale report of this one's could tell a terminal stage that a source
// the new owner is still catching up on has caught up). It returns when
// the router has taken it, or ctx ends.
func (rt *router) claim(ctx context.Context, parts []int) {
	select {
	case rt.owned <- parts:
	case <-ctx.Done():
	}
}

// run writes what route hands it until ctx ends (then what is buffered is
// dropped: the next owner re-sends from the committed offset).
func (rt *router) run(ctx context.Context) {
	marks := time.NewTicker(markEvery)
	defer marks.Stop()
	lastBeat := time.Now()
	var linger *time.Timer
	var lingerC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-rt.in:
			rt.add(r)
			for len(rt.buf) < routeMaxBatch {
				select {
				case r := <-rt.in:
					rt.add(r)
					continue
				default:
				}
				break
			}
			if len(rt.buf) >= routeMaxBatch {
				rt.flush(ctx)
			} else if len(rt.buf) > 0 && lingerC == nil {
				d := routeLinger - time.Since(rt.start)
				if linger == nil {
					linger = time.NewTimer(d)
				} else {
					linger.Reset(d)
				}
				lingerC = linger.C
			}
		case <-lingerC:
			lingerC = nil
			rt.flush(ctx)
		case parts := <-rt.owned:
			// What the previous generation's fetchers queued first.
		queued:
			for {
				select {
				case r := <-rt.in:
					rt.add(r)
				default:
					break queued
				}
			}
			for part := range rt.srcs {
				if !slices.Contains(parts, part) {
					delete(rt.srcs, part)
				}
			}
		case now := <-marks.C:
			beat := now.Sub(lastBeat) >= heartbeatEvery
			if beat {
				lastBeat = now
			}
			rt.addMarks(beat)
			rt.flush(ctx)
		}
	}
}

// add buffers r's record (if an event) and records the source's progress.
func (rt *router) add(r routed) {
	sp := rt.srcs[r.part]
	if sp == nil {
		sp = &srcProgress{off: -1, sent: slices.Repeat([]int64{-1}, rt.nR)}
		rt.srcs[r.part] = sp
	}
	if r.off <= sp.off {
		// Re-delivered from an earlier offset (a new generation): the
		// source's progress restarts there.
		for i := range sp.sent {
			sp.sent[i] = min(sp.sent[i], r.off-1)
		}
	}
	sp.off, sp.caughtUp = r.off, r.caughtUp
	if r.rec == nil {
		return
	}
	sp.ts, sp.hasTS = r.ts, true
	to := repart.Route(string(r.key), rt.nR)
	sp.sent[to] = r.off
	if len(rt.buf) == 0 {
		rt.start = time.Now()
	}
	rt.buf = append(rt.buf, OutRecord{Partition: to, Key: r.key, Value: r.rec})
}

// addMarks buffers a watermark record to every R partition a source has
// not reported its last offset to (all of them on a heartbeat).
func (rt *router) addMarks(beat bool) {
	for part, sp := range rt.srcs {
		if !sp.hasTS {
			continue // no event yet: nothing to report a time for
		}
		for to, sent := range sp.sent {
			if sent >= sp.off && !beat {
				continue
			}
			sp.sent[to] = sp.off
			rt.buf = append(rt.buf, OutRecord{Partition: to, Value: repart.AppendRecord(nil, repart.Head{
				Kind: repart.KindMark, Src: part, Offset: sp.off, TS: sp.ts, CaughtUp: sp.caughtUp,
			}, nil)})
		}
	}
}

// flush writes the buffer, retrying until it is stored or ctx ends.
func (rt *router) flush(ctx context.Context) {
	if len(rt.buf) == 0 {
		return
	}
	b := firstBackoff
	for {
		err := rt.w.WriteRecords(ctx, rt.topic, rt.buf)
		if err == nil {
			rt.p.met.routed.Add(float64(len(rt.buf)))
			break
		}
		rt.p.met.routeErrors.Inc()
		if ctx.Err() != nil || !rt.p.retry(ctx, &b, "write to the repartition topic failed, retrying", err, "topic", rt.topic) {
			return
		}
	}
	clear(rt.buf)
	rt.buf = rt.buf[:0]
}

// joinRec is the shared half of one event, read from E.
type joinRec struct {
	eOff int64 // its offset in E (the anchor committed with T's offset)
	late bool
	cols []float32
}

// joinTable holds the E records of one claimed partition read and not yet
// passed by a commit, by source offset.
type joinTable struct {
	mu     sync.Mutex
	recs   map[int64]joinRec
	next   int64 // E offset of the next record the reader reads
	floor  int64 // source offsets below it are not needed (committed)
	closed bool
	wake   chan struct{} // closed (and replaced) when a record comes or the table closes
}

// joiner is the current generation's join tables and their readers.
type joiner struct {
	p      *Pipeline
	mu     sync.Mutex
	tables map[int]*joinTable
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// torn are the partitions of batches given up (fill false): their
	// cards hold events no record was written for (and the sequential
	// models never stepped through), so their state must not be
	// checkpointed or kept.
	torn map[int]bool
}

// begin stops the previous generation's readers (after its revoke: its
// batches are back, or abandoned) and starts one per claim, each at the
// group's committed E offset for the partition (the first retained one
// without a commit).
func (j *joiner) begin(ctx context.Context, src Source, claims []Claim) {
	j.end()
	j.mu.Lock()
	for _, t := range j.tables {
		t.mu.Lock()
		clear(t.recs)
		t.mu.Unlock()
	}
	j.tables = nil
	j.mu.Unlock()
	var anchors map[int]int64
	if cr, ok := src.(CommittedReader); ok {
		for b := firstBackoff; ; {
			var err error
			if anchors, err = cr.Committed(ctx, j.p.cfg.repart.Enriched); err == nil {
				break
			}
			if !j.p.retry(ctx, &b, "read the enriched topic's committed offsets failed, retrying", err) {
				return
			}
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	tables := map[int]*joinTable{}
	for _, c := range claims {
		at, ok := anchors[c.Partition()]
		if !ok || at < 0 {
			at = kafka.FirstOffset
		}
		t := &joinTable{recs: map[int64]joinRec{}, next: at, floor: c.Start(), wake: make(chan struct{})}
		tables[c.Partition()] = t
		j.wg.Go(func() { j.read(rctx, src, c.Partition(), t) })
	}
	j.mu.Lock()
	j.tables, j.cancel = tables, cancel
	j.mu.Unlock()
}

// end stops the readers and closes the tables: a worker waiting on a
// record not read gives its batch up (abandoned); the records read stay
// for the batches that need them and for the anchors of the last commits,
// until the next begin. The intake has stopped when it is called (a
// revoke, a shutdown): a batch waiting for its shared columns could wait
// for good — the terminal stages may hold them back until the sources of
// this member's partitions deliver again, which only their next owner
// does once this member has let them go.
func (j *joiner) end() {
	j.mu.Lock()
	tables, cancel := j.tables, j.cancel
	j.cancel = nil
	j.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	j.wg.Wait()
	for _, t := range tables {
		t.mu.Lock()
		if !t.closed {
			t.closed = true
			close(t.wake)
		}
		t.mu.Unlock()
	}
}

// abandoned records the partitions of b, given up.
func (j *joiner) abandoned(b *batch) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.torn == nil {
		j.torn = map[int]bool{}
	}
	for _, ri := range b.rowMsg {
		j.torn[b.msgs[ri].Partition] = true
	}
}

// takeTorn returns the partitions of the batches given up since the last
// call, in increasing order.
func (j *joiner) takeTorn() []int {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []int
	for part := range j.torn {
		out = append(out, part)
	}
	clear(j.torn)
	slices.Sort(out)
	return out
}

// table returns partition part's table in the current generation.
func (j *joiner) table(part int) *joinTable {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.tables[part]
}

// read reads E[part] into t until ctx ends.
func (j *joiner) read(ctx context.Context, src Source, part int, t *joinTable) {
	var rd PartitionReader
	b := firstBackoff
	for rd == nil {
		var err error
		if rd, err = src.Read(j.p.cfg.repart.Enriched, part, t.next); err != nil {
			if !j.p.retry(ctx, &b, "open the enriched topic failed, retrying", err, "partition", part) {
				return
			}
		}
	}
	defer rd.Close()
	var e repart.Enriched
	width := len(j.p.sharedCols)
	for {
		rec, err := rd.Fetch(ctx)
		if errors.Is(err, ErrFetchResumed) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrSourceClosed) {
				return
			}
			if !j.p.retry(ctx, &b, "read the enriched topic failed, retrying", err, "partition", part) {
				return
			}
			continue
		}
		b = firstBackoff
		if err := repart.ParseEnriched(rec.Value, &e); err != nil || e.Src != part || len(e.Cols) != width {
			if err == nil {
				err = fmt.Errorf("source partition %d, %d columns (want %d, %d)", e.Src, len(e.Cols), part, width)
			}
			j.p.met.joinBad.Inc()
			j.p.log.Error("enriched record refused (another build's terminal stage, or a corrupt topic): skipped",
				"partition", part, "offset", rec.Offset, "err", err)
			t.mu.Lock()
			t.next = rec.Offset + 1
			t.mu.Unlock()
			continue
		}
		t.mu.Lock()
		t.next = rec.Offset + 1
		if _, dup := t.recs[e.Offset]; !dup && e.Offset >= t.floor {
			t.recs[e.Offset] = joinRec{eOff: rec.Offset, late: e.Late, cols: slices.Clone(e.Cols)}
			close(t.wake)
			t.wake = make(chan struct{})
		}
		t.mu.Unlock()
	}
}

// wait returns the shared half of source offset off, waiting for it
// until it comes, the table closes (ok false: the generation is over) or
// the pipeline stops hard.
func (t *joinTable) wait(off int64, hard <-chan struct{}) (joinRec, bool) {
	for {
		t.mu.Lock()
		r, ok := t.recs[off]
		closed, wake := t.closed, t.wake
		t.mu.Unlock()
		if ok {
			return r, true
		}
		if closed {
			return joinRec{}, false
		}
		select {
		case <-wake:
		case <-hard:
			return joinRec{}, false
		}
	}
}

// anchor forgets the records below source offset next (committed) and
// returns the E offset from which every record at or above it can be read
// again: the smallest E offset of those it holds, or the reader's position.
func (t *joinTable) anchor(next int64) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next < 0 {
		return 0, false // nothing read yet: the committed anchor stands
	}
	t.floor = max(t.floor, next)
	at := t.next
	for off, r := range t.recs {
		if off < t.floor {
			delete(t.recs, off)
			continue
		}
		at = min(at, r.eOff)
	}
	return at, true
}

// fill writes the shared columns of every row of b, waiting for those not
// read yet. It reports false when a row's generation ended first (the
// batch is abandoned: its offsets are never acked) or on a hard stop.
func (j *joiner) fill(b *batch, cols []int, width int, hard <-chan struct{}) bool {
	for r := range b.rowMsg {
		m := &b.msgs[b.rowMsg[r]]
		t := j.table(m.Partition)
		if t == nil {
			return false
		}
		rec, ok := t.wait(m.Offset, hard)
		if !ok {
			return false
		}
		row := b.x[r*width : (r+1)*width]
		for i, c := range cols {
			row[c] = rec.cols[i]
		}
		if rec.late {
			b.late[r] = true
			b.adv[r] = false
		}
	}
	return true
}

// anchors returns, for the partitions of next, the E offsets to commit
// with them.
func (j *joiner) anchors(next map[int]int64) map[int]int64 {
	out := make(map[int]int64, len(next))
	for part, off := range next {
		if t := j.table(part); t != nil {
			if at, ok := t.anchor(off); ok {
				out[part] = at
			}
		}
	}
	return out
}

// checkRepartition validates the repartition mode's requirements at New.
func checkRepartition(cfg *config, shared *features.Shared) error {
	if cfg.repart == nil {
		return nil
	}
	switch fs := shared.SharedFields(); {
	case cfg.ckpt == nil:
		return errors.New("stream: the repartition mode needs checkpoints (WithCheckpoints): the terminal state lives in them")
	case len(fs) == 0:
		return errors.New("stream: the repartition mode needs a shared entity: the feature set keeps only card state")
	case len(fs) > 1:
		return fmt.Errorf("stream: the repartition mode routes by one shared entity, the feature set has %d (%v): use shared-state replicas", len(fs), fs)
	}
	return nil
}

// startRepartition starts the repartition mode's router (and the terminal
// stage) for Run; the returned stop ends them once the workers have
// drained: until then the open batches need them. Without the mode it
// does nothing.
func (p *Pipeline) startRepartition(ctx context.Context, src Source, dialer *kafka.Dialer) (stop func(), err error) {
	if p.cfg.repart == nil {
		return func() {}, nil
	}
	w, ok := src.(RecordWriter)
	if !ok {
		return nil, fmt.Errorf("stream: the repartition mode needs a source that writes records (%T does not)", src)
	}
	if _, ok := src.(CommittedReader); !ok {
		return nil, fmt.Errorf("stream: the repartition mode needs a source that reads committed offsets (%T does not)", src)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	rparts, err := src.Partitions(pctx, p.cfg.repart.Topic)
	cancel()
	if err != nil || len(rparts) == 0 {
		return nil, fmt.Errorf("stream: the repartition topic %q: %d partitions, err %v (create it first)", p.cfg.repart.Topic, len(rparts), err)
	}
	pctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	eparts, err := src.Partitions(pctx, p.cfg.repart.Enriched)
	cancel()
	if err != nil || len(eparts) != p.nParts {
		return nil, fmt.Errorf("stream: the enriched topic %q must have the input topic's %d partitions: %d, err %v", p.cfg.repart.Enriched, p.nParts, len(eparts), err)
	}
	tsrc := p.cfg.repart.Source
	if tsrc == nil {
		// The terminal group's member: the same connection settings, no
		// metrics of its own (its names would clash with the input's
		// source; the terminal stage exports its own).
		opts := []SourceOption{WithSourceSessionTimeout(p.cfg.sessionTimeout), WithSourceStartOffset(kafka.FirstOffset), WithSourceDialer(dialer)}
		if p.cfg.log != nil {
			opts = append(opts, WithSourceLogger(p.cfg.log))
		}
		ks, err := NewKafkaSource(p.brokers, p.terminalGroup(), p.cfg.repart.Topic, opts...)
		if err != nil {
			return nil, fmt.Errorf("stream: the terminal stage's source: %w", err)
		}
		tsrc = ks
	}
	ts, err := newTerminalStage(terminalConfig{
		src: tsrc, out: w, group: p.terminalGroup(), rTopic: p.cfg.repart.Topic, eTopic: p.cfg.repart.Enriched,
		inputParts: p.nParts,
		newShared:  func() (*features.Shared, error) { return features.NewShared(p.cfg.featureOpts...) },
		ckpt:       p.cfg.ckpt, fingerprint: p.ckptFingerprint() + "/terminal", interval: p.cfg.stateInterval,
		labelsTopic: p.cfg.labelsTopic, labelDec: p.cfg.labelDec,
		alignIdle: p.termAlignIdle, alignLag: p.cfg.alignLag,
		hard: p.hard, log: p.log, reg: p.cfg.reg,
	})
	if err != nil {
		tsrc.Close()
		return nil, err
	}
	p.terminal.Store(ts)
	p.router = newRouter(p, w, len(rparts))
	p.joins = &joiner{p: p}
	// Not ctx: the router and the terminal stage outlive intake until the
	// drain is over; a hard stop ends them at once.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(p.hard, rcancel)
	var wg sync.WaitGroup
	wg.Go(func() { p.router.run(rctx) })
	wg.Go(func() {
		if err := ts.run(rctx); err != nil {
			p.log.Error("terminal stage stopped: the pipeline stops", "err", err)
			p.cancel(err)
		}
	})
	p.log.Info("repartition mode: shared state through the repartition topic", "repartition_topic", p.cfg.repart.Topic,
		"repartition_partitions", len(rparts), "enriched_topic", p.cfg.repart.Enriched, "terminal_group", p.terminalGroup())
	return func() {
		p.joins.end()
		rcancel()
		unhook()
		wg.Wait()
		if err := closeWithin(readerCloseTimeout, tsrc.Close); err != nil && p.hard.Err() == nil {
			p.log.Warn("close the terminal stage's source", "err", err)
		}
	}, nil
}

// terminalGroup is the consumer group of the terminal stages.
func (p *Pipeline) terminalGroup() string { return p.group + ".terminals" }

// tornPartitions drops the state of the partitions whose batches were
// given up (joiner.abandoned) and returns them: their cards hold events no
// record was written for, so this member restores them from their
// checkpoints if it claims them again. Called once the batches are back
// (or abandoned).
func (p *Pipeline) tornPartitions(st *stage, running bool) []int {
	if p.joins == nil {
		return nil
	}
	torn := p.joins.takeTorn()
	if len(torn) == 0 {
		return nil
	}
	drop := func() {
		for _, part := range torn {
			delete(st.parts, part)
		}
	}
	if running {
		st.do(drop)
	} else {
		drop() // the stage and the workers are done
	}
	return torn
}

// joinGrace is how long a revoke or a shutdown lets the batches waiting
// for their shared columns wait before it gives them up.
const joinGrace = time.Second
