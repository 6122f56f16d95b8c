package stream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/repart"
)

// The card stage's side of the repartition mode (see repart.go): the
// router writes every claimed event to R and reports each source's progress
// with watermark records; the joiner reads E[p] for every claimed p, and
// the feature stage applies each event once its shared columns are read
// (stage.drainJoin).

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
	// learns every source's watermark within it. A caught-up source does
	// more often (router.liveEvery): see terminalConfig.deadAfter.
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
	owned chan []claimStart // a generation's claims (claim): the latest wins
	srcs  map[int]*srcProgress
	// liveEvery is how often a caught-up source's heartbeat goes to every
	// R partition (Pipeline.liveEvery).
	liveEvery time.Duration
	buf       []OutRecord
	start     time.Time // when the first buffered record came
}

func newRouter(p *Pipeline, w RecordWriter, nR int) *router {
	return &router{p: p, w: w, topic: p.cfg.repart.Topic, nR: nR, in: make(chan routed, 4096), owned: make(chan []claimStart, 1), srcs: map[int]*srcProgress{},
		liveEvery: p.liveEvery()}
}

// route hands the message of m (decoded into pd) to the router; called by
// m's partition's fetching goroutine, in offset order. It blocks while the
// router is behind (backpressure) or until ctx ends.
func (rt *router) route(ctx context.Context, m *kafka.Message, pd *pending) error {
	r := routed{part: m.Partition, off: m.Offset, caughtUp: m.HighWaterMark > 0 && m.Offset == m.HighWaterMark-1}
	if pd.reason == "" {
		// One allocation: the key, then the record with its payload
		// encoded in place (both kept until the write).
		r.ts = pd.ev.TS.UnixNano()
		buf := append(make([]byte, 0, 320), rt.p.shared.SharedID(&pd.ev, 0)...)
		k := len(buf)
		buf = repart.AppendRecord(buf, repart.Head{
			Kind: repart.KindEvent, Src: m.Partition, Offset: m.Offset, TS: r.ts, CaughtUp: r.caughtUp,
		}, nil)
		buf = pd.ev.AppendJSON(buf)
		r.key, r.rec = buf[:k:k], buf[k:]
	}
	select {
	case rt.in <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// claimStart is a claimed partition and where the generation starts it.
type claimStart struct {
	part     int
	start    int64 // the group's committed offset
	caughtUp bool  // nothing to read at the start (start >= high-water)
}

// claimStarts returns the starts of claims (nil: none, intake stopped).
func claimStarts(claims []Claim) []claimStart {
	out := make([]claimStart, 0, len(claims))
	for _, c := range claims {
		out = append(out, claimStart{part: c.Partition(), start: c.Start(), caughtUp: c.Start() >= c.HighWater()})
	}
	return out
}

// claim tells the router a generation's claims (none: intake stopped): it
// stops reporting the progress of the other partitions and drops the
// watermarks of theirs it still holds (another member owns them now; a
// stale report of this one's could tell a terminal stage that a source
// the new owner is still catching up on has caught up), and reports each
// claimed partition from its start on, even one with nothing new to read
// (a terminal stage must hear of every source, or it holds the others
// back for its lag wait). It does not block: the router takes the latest
// claims when it can (it may be retrying a write).
func (rt *router) claim(claims []claimStart) {
	select {
	case <-rt.owned: // not taken yet: superseded
	default:
	}
	rt.owned <- claims // the one sender, the buffer just emptied
}

// takeClaims applies claims (see claim) once what the previous
// generation's fetchers queued is in.
func (rt *router) takeClaims(claims []claimStart) {
queued:
	for {
		select {
		case r := <-rt.in:
			rt.add(r)
		default:
			break queued
		}
	}
	owned := map[int]claimStart{}
	for _, c := range claims {
		owned[c.part] = c
	}
	for part := range rt.srcs {
		if _, ok := owned[part]; !ok {
			delete(rt.srcs, part)
		}
	}
	rt.buf = slices.DeleteFunc(rt.buf, func(r OutRecord) bool {
		h, _, err := repart.ParseRecord(r.Value)
		_, ok := owned[h.Src]
		return err == nil && h.Kind == repart.KindMark && !ok
	})
	for _, c := range claims {
		if _, ok := rt.srcs[c.part]; !ok {
			// Known from its start: reported (and heartbeated if caught up)
			// before it delivers anything, at no event time yet.
			rt.srcs[c.part] = &srcProgress{off: c.start - 1, caughtUp: c.caughtUp, sent: slices.Repeat([]int64{-1}, rt.nR)}
		}
	}
}

// run writes what route hands it until ctx ends (then what is buffered is
// dropped: the next owner re-sends from the committed offset).
func (rt *router) run(ctx context.Context) {
	tick := min(markEvery, rt.liveEvery/2)
	marks := time.NewTicker(tick)
	defer marks.Stop()
	lastBeat, lastLive := time.Now(), time.Now()
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
		case claims := <-rt.owned:
			rt.takeClaims(claims)
		case now := <-marks.C:
			beat := now.Sub(lastBeat) >= heartbeatEvery
			if beat {
				lastBeat = now
			}
			live := now.Sub(lastLive) >= rt.liveEvery-tick/2 // ticks jitter
			if live {
				lastLive = now
			}
			rt.addMarks(beat, live)
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
// not reported its last offset to; to all of them on a heartbeat (beat),
// and for a caught-up source on a liveness heartbeat (live).
func (rt *router) addMarks(beat, live bool) {
	for part, sp := range rt.srcs {
		ts := sp.ts
		if !sp.hasTS {
			ts = math.MinInt64 // no event yet: progress without a time (Advance never lowers a watermark)
		}
		all := beat || (live && sp.caughtUp)
		for to, sent := range sp.sent {
			if sent >= sp.off && !all {
				continue
			}
			sp.sent[to] = sp.off
			rt.buf = append(rt.buf, OutRecord{Partition: to, Value: repart.AppendRecord(nil, repart.Head{
				Kind: repart.KindMark, Src: part, Offset: sp.off, TS: ts, CaughtUp: sp.caughtUp,
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
		select {
		case claims := <-rt.owned: // a revoke meanwhile: its stale watermarks go
			rt.takeClaims(claims)
		default:
		}
	}
	clear(rt.buf)
	rt.buf = rt.buf[:0]
}

// joinRec is the shared half of one event, read from E.
type joinRec struct {
	eOff int64 // its offset in E (the anchor committed with T's offset)
	cols []float32
	why  string
	late bool
	// refused: the terminal stage could not read the event, or this stage
	// could not read its record (another build's width): dead-lettered.
	refused bool
}

// joinTable holds the E records of one claimed partition read and not yet
// passed by a commit, by source offset.
type joinTable struct {
	mu    sync.Mutex
	recs  map[int64]joinRec
	next  int64 // E offset of the next record the reader reads
	floor int64 // source offsets below it are not needed (committed)
}

// joiner is the current generation's join tables and their readers.
type joiner struct {
	p      *Pipeline
	mu     sync.Mutex
	tables map[int]*joinTable
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// notify is signalled (without blocking) when a reader adds a
	// record: the stage drains the partitions waiting for one.
	notify chan struct{}
}

// begin stops the previous generation's readers (its revoke is over: what
// waited for its shared columns was dropped), forgets their records, and
// starts one reader per claim, each at the group's committed E offset for
// the partition (the first retained one without a commit: on a group's
// first start, the whole retained enriched partition is read once).
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
		t := &joinTable{recs: map[int64]joinRec{}, next: at, floor: c.Start()}
		tables[c.Partition()] = t
		j.wg.Go(func() { j.read(rctx, src, c.Partition(), t) })
	}
	j.mu.Lock()
	j.tables, j.cancel = tables, cancel
	j.mu.Unlock()
}

// end stops the readers. Their tables stay, for the anchors of the
// generation's last commits, until the next begin.
func (j *joiner) end() {
	j.mu.Lock()
	cancel := j.cancel
	j.cancel = nil
	j.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	j.wg.Wait()
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
	buf := make([]Record, 0, maxHandOff)
	type joinIn struct {
		srcOff int64
		jr     joinRec
		ok     bool // false: skipped (only the reader's position moves)
	}
	got := make([]joinIn, 0, maxHandOff)
	for {
		// What E's reader has read ahead, up to maxHandOff records: the
		// table's lock and the stage's signal once per slice.
		recs, err := fetchBatch(ctx, rd, buf[:0])
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
		// The slice's columns share one allocation (a record's stay
		// referenced until its offset is committed).
		slab := make([]float32, 0, len(recs)*width)
		got = got[:0]
		for i := range recs {
			rec := &recs[i]
			err := repart.ParseEnriched(rec.Value, &e)
			jr := joinRec{eOff: rec.Offset, late: e.Late, refused: e.Refused}
			switch {
			case err != nil || e.Src != part:
				if err == nil {
					err = fmt.Errorf("source partition %d, this is %d", e.Src, part)
				}
				j.p.met.joinBad.Inc()
				j.p.log.Error("enriched record refused (another build's terminal stage, or a corrupt topic): skipped",
					"partition", part, "offset", rec.Offset, "err", err)
				got = append(got, joinIn{})
				continue
			case e.Refused:
				jr.why = "the terminal stage could not decode the event's repartition record"
			case len(e.Cols) != width:
				// Its event is known: dead-lettered, not waited for for good.
				j.p.met.joinBad.Inc()
				j.p.log.Error("enriched record of another width (another build's features): its event is dead-lettered",
					"partition", part, "offset", rec.Offset, "source_offset", e.Offset, "columns", len(e.Cols), "want", width)
				jr.refused, jr.why = true, fmt.Sprintf("its enriched record has %d terminal columns, this build %d", len(e.Cols), width)
			default:
				n := len(slab)
				slab = append(slab, e.Cols...)
				jr.cols = slab[n:len(slab):len(slab)]
			}
			got = append(got, joinIn{srcOff: e.Offset, jr: jr, ok: true})
		}
		t.mu.Lock()
		t.next = recs[len(recs)-1].Offset + 1
		for _, g := range got {
			if !g.ok {
				continue
			}
			if _, dup := t.recs[g.srcOff]; !dup && g.srcOff >= t.floor {
				t.recs[g.srcOff] = g.jr
			}
		}
		t.mu.Unlock()
		select {
		case j.notify <- struct{}{}:
		default: // signalled already
		}
	}
}

// lookup returns the shared half of source offset off, if it has come.
func (t *joinTable) lookup(off int64) (joinRec, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.recs[off]
	return r, ok
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
// drained (the terminal stage stores its state and leaves its group last:
// the other members' partitions may still need its columns) and closes
// the terminal stage's source. Without the mode it does nothing.
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
		alignIdle: p.termAlignIdle, alignLag: p.terminalLagWait(), labelsIdle: p.cfg.labelsIdle, labelsLate: p.met.labelsLate, deadAfter: p.deadAfter(),
		hard: p.hard, log: p.log, reg: p.cfg.reg,
	})
	if err != nil {
		tsrc.Close()
		return nil, err
	}
	p.terminal.Store(ts)
	p.router = newRouter(p, w, len(rparts))
	p.joins = &joiner{p: p, notify: make(chan struct{}, 1)}
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

// terminalLagWait is how long a terminal stage waits for a source that is
// not caught up and silent: WithAlignLagWait plus three session timeouts.
// A member's crash silences the sources of its partitions until the group
// has moved them (the session timeout, then a rebalance) and their next
// owner routes them again; released earlier, the other sources' events
// would be applied ahead of theirs (out of order: wrong terminal features
// for a while). The price: the terminal columns of every partition wait
// for the failover (replicas do not: every member reads every partition).
func (p *Pipeline) terminalLagWait() time.Duration {
	return p.cfg.alignLag + 3*p.cfg.sessionTimeout
}

// liveEvery is how often a router heartbeats a caught-up source to every R
// partition: a quarter of the align idle wait, 10 ms to 1 s.
func (p *Pipeline) liveEvery() time.Duration {
	if p.termAlignIdle <= 0 {
		return heartbeatEvery // no liveness check (deadAfter 0): the slow heartbeat only
	}
	return min(max(p.termAlignIdle/4, 10*time.Millisecond), time.Second)
}

// deadAfter is how long a terminal stage lets a caught-up source go
// unheard before it holds the others back again (terminalConfig.deadAfter):
// three heartbeats, three quarters of the idle wait. A source busy until
// its owner died is suspected before its silence makes it idle: nothing
// passes it. One idle already (silent, heartbeating) when its owner died
// is passed for at most deadAfter — the events written to its partition
// in that time may come after later ones of the others were applied (out
// of order, as an idle partition's new event in one process may be for
// the time it takes to fetch it). 0 (no idle wait): no check.
func (p *Pipeline) deadAfter() time.Duration {
	if p.termAlignIdle <= 0 {
		return 0
	}
	return 3 * p.liveEvery()
}

// terminalGroup is the consumer group of the terminal stages.
func (p *Pipeline) terminalGroup() string { return p.group + ".terminals" }

// reasonTerminalRefused is the dead-letter reason of an event whose
// terminal columns cannot be had (the repartition mode): the terminal
// stage could not decode it, or its enriched record is another build's.
const reasonTerminalRefused = "terminal_refused"

// joined is the channel the E readers signal when shared columns come
// back (nil without the repartition mode: never ready).
func (s *stage) joined() <-chan struct{} {
	if s.p.joins == nil {
		return nil
	}
	return s.p.joins.notify
}

// drainJoin applies ps's waiting messages in offset order while the head
// has its shared columns (a dead letter needs none). A card's events are
// all in its partition, so its state needs only the partition's order;
// the terminals' order is the terminal stage's. Waiting here, before
// anything is applied, a revoke or a stop drops what has not come back
// (fetched again by the partition's next owner) and the partition's state
// never holds an event that was not scored.
func (s *stage) drainJoin(ps *partState) {
	t := s.p.joins.table(ps.part) // one lock of the joiner per drain, not per event
	n := 0
	for ; n < len(ps.joinq); n++ {
		pd := ps.joinq[n]
		if pd.reason == "" {
			if t == nil {
				break
			}
			rec, ok := t.lookup(pd.m.Offset)
			if !ok {
				break
			}
			pd.join = rec
			if rec.refused {
				pd.reason, pd.err = reasonTerminalRefused, rec.why
			}
		}
		if pd.needLocal {
			ps.fetched(pd.m.Offset, true)
		}
		s.apply(pd, ps)
		s.credit(ps.part) // before recycle: m is pd's
		s.recycle(pd)
		ps.joinq[n] = nil
	}
	if n > 0 {
		ps.joinq = append(ps.joinq[:0], ps.joinq[n:]...)
	}
}

// dropJoinq drops every message waiting for its shared columns (the stage
// stops: they are not applied, not scored, not acknowledged).
func (s *stage) dropJoinq() {
	dropped := 0
	for _, ps := range s.parts {
		for _, pd := range ps.joinq {
			dropped++
			s.recycle(pd)
		}
		clear(ps.joinq)
		ps.joinq = ps.joinq[:0]
	}
	if dropped > 0 {
		s.p.stats.Consumed.Add(int64(-dropped))
		s.p.log.Info("events waiting for their terminal columns at the stop: not scored, re-delivered to their partition's next owner", "events", dropped)
	}
}
