package stream

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/align"
)

// partState is the state of one input partition: the feature windows of
// its cards, their sequential-model states, and how far the partition is
// applied. It belongs to the partition, not to a worker or a process: a
// snapshot holds it per partition, so any worker count (and, through a
// checkpoint, any member of the group) restores it.
//
// build is the feature stage's; seq is the scoring worker's (the worker of
// partition mod workers), each touched by that goroutine only (and by a
// snapshot while both are paused).
type partState struct {
	part     int
	build    *features.Builder
	seq      *seqStates
	offTrail      // how far the partition is applied (or dead-lettered: it changes no state, but a snapshot covers it)
	aligned  bool // added to the stage's aligner
	// ckptApplied is applied as of the partition's newest stored
	// checkpoint (-1 none): an unchanged partition is not stored again.
	ckptApplied int64
	ckptSlot    int // the checkpoint slot the next one is stored in (see ckptKey)
	// ckptOff is the offset each slot's checkpoint is stored at (-1: none
	// known), and startOff the generation's start of the partition (the
	// group's committed offset): a slot that holds the group's commit is
	// not overwritten before the commit has moved on (keepsCommitSlot).
	ckptOff  [2]int64
	startOff int64
	// restoredFrom is the offset a restore left applied until the
	// partition's first message was checked against it (checkGap), else -1.
	restoredFrom int64

	// owned: claimed in the current generation (its events are scored);
	// else the member reads it as a shared-state replica (WithSharedReplicas):
	// its events update the shared entities only.
	owned bool
	// shr is how far the partition's events are applied to the shared
	// entities (terminals): with the card trail for a partition applied by
	// this member throughout, ahead of it for one read as a replica.
	// shrKnown says the shared state holds a defined prefix of the
	// partition (restored, or read from a known offset on).
	shr      offTrail
	shrKnown bool
	// cols keeps the shared columns of the partition's events applied to
	// the shared entities above the group's committed offset (replicas).
	cols colLog

	// joinq holds, in the repartition mode, the partition's messages in
	// offset order from the first whose shared columns have not come back
	// from the terminal stage (see stage.drainJoin).
	joinq []*pending

	// The Builder's counters already added to the metrics.
	late, rekeyed uint64
	evicted       features.StateStats
}

func (p *Pipeline) newPartState(part int) *partState {
	return &partState{
		part:         part,
		build:        p.partBuilder(p.shared),
		seq:          newSeqStates(p.shared.TTL(), p.met.stateResets, p.log),
		offTrail:     newOffTrail(-1),
		shr:          newOffTrail(-1),
		restoredFrom: -1,
		ckptApplied:  -1,
		ckptOff:      [2]int64{-1, -1},
		startOff:     -1,
		cols:         colLog{width: len(p.sharedCols)},
	}
}

// offTrail tracks how far a partition's messages are applied when the
// aligner applies them in event-time order, which may differ from offset
// order: applied is the highest offset up to which every message fetched
// is applied (-1 none); trail holds the offsets fetched above it, in offset
// order, each applied already (done) or waiting in the aligner; seen is the
// highest offset fetched (or restored).
type offTrail struct {
	applied int64
	trail   []trailEntry
	seen    int64
}

func newOffTrail(applied int64) offTrail { return offTrail{applied: applied, seen: applied} }

type trailEntry struct {
	off  int64
	done bool
}

// isApplied reports whether offset off is in the state already.
func (ps *offTrail) isApplied(off int64) bool {
	if off <= ps.applied {
		return true
	}
	if off > ps.seen {
		return false
	}
	for _, e := range ps.trail {
		if e.off == off {
			return e.done
		}
	}
	return false
}

// fetched records a new offset (above seen), applied already (done) or
// waiting in the aligner.
func (ps *offTrail) fetched(off int64, done bool) {
	if done && len(ps.trail) == 0 && off > ps.seen {
		ps.applied, ps.seen = off, off
		return
	}
	// In offset order (a partition fetched again after its waiting
	// offsets were dropped may deliver below seen).
	i := len(ps.trail)
	for i > 0 && ps.trail[i-1].off > off {
		i--
	}
	ps.trail = slices.Insert(ps.trail, i, trailEntry{off: off, done: done})
	ps.seen = max(ps.seen, off)
	if done {
		ps.markApplied(off)
	}
}

// markApplied records that the waiting offset off is applied, and moves
// applied past every leading done offset.
func (ps *offTrail) markApplied(off int64) {
	for i := range ps.trail {
		if ps.trail[i].off == off {
			ps.trail[i].done = true
			break
		}
	}
	n := 0
	for n < len(ps.trail) && ps.trail[n].done {
		ps.applied = ps.trail[n].off
		n++
	}
	switch rest := len(ps.trail) - n; {
	case n == 0:
	case rest <= n || rest <= 64:
		// Move the rest to the front, keeping the capacity: live, a
		// handful of offsets wait, and reslicing would eat the
		// capacity from the front until an append reallocated (0.4
		// allocations per event in BenchmarkFloor, 2.4 in
		// TestStagePathAllocs). Amortised O(1): no more moved than
		// dropped, or at most 64 entries (1 KiB).
		ps.trail = ps.trail[:copy(ps.trail, ps.trail[n:])]
	default:
		// Drop the head by reslicing, not by moving the rest: a backlog
		// keeps thousands waiting, and an append that outgrows the
		// capacity copies only the live entries.
		ps.trail = ps.trail[n:]
	}
}

// ahead returns the offsets above applied that are in the state (applied
// before an earlier offset that still waits).
func (ps *offTrail) ahead() []int64 {
	var out []int64
	for _, e := range ps.trail {
		if e.done {
			out = append(out, e.off)
		}
	}
	return out
}

// waiting reports whether an offset of the trail waits in the aligner.
func (ps *offTrail) waiting() bool {
	for _, e := range ps.trail {
		if !e.done {
			return true
		}
	}
	return false
}

// dropWaiting forgets the offsets waiting in the aligner (dropped, or the
// partition revoked): they will be fetched again.
func (ps *offTrail) dropWaiting() {
	keep := ps.trail[:0]
	for _, e := range ps.trail {
		if e.done {
			keep = append(keep, e)
		}
	}
	ps.trail = keep
	ps.seen = ps.applied
	if n := len(keep); n > 0 {
		ps.seen = keep[n-1].off
	}
}

// stage is the feature stage: one goroutine that takes every fetched
// message decoded (by its partition's fetching goroutine: decode), applies
// it to its partition's card state and to the shared terminal state, writes its feature row into the open batch of the worker
// of its partition, and hands batches to the workers for scoring when they
// close (max batch size, or max delay after their first message). Being one
// goroutine, it applies the events that update shared state in one order —
// the order it is given them.
type stage struct {
	p       *Pipeline
	workers []*worker
	dec     EventDecoder
	// sdec is dec when it is the JSON decoder itself, which decodes a
	// slice of messages against one clock reading (decode), else nil.
	sdec  *features.Decoder
	width int
	parts map[int]*partState
	// lastPart is the partition state part returned last (see part);
	// whatever replaces a partition's state in parts (a checkpoint
	// restore) goes through setPart, which forgets it.
	lastPart *partState
	open     []*batch    // per worker: its open batch, or nil
	due      []time.Time // per worker: when its open batch closes
	// in carries the fetchers' slices of messages (handOff), at most
	// handMax each: its capacity is the queue depth in slices
	// (WithQueueDepth ÷ handMax), so that what waits in it stays within
	// the queue depth in messages.
	in      chan *handoff
	handMax int
	// inFlight counts the messages a fetcher has started to hand over
	// (handOff: decoding, then waiting to send) and the stage has not
	// received yet: their partitions are not silent. holding counts those
	// of the slice the stage is taking (take) not added yet: received, so
	// no longer in inFlight, but not in the aligner either.
	inFlight atomic.Int64
	holding  int
	warmSum  int64       // see warm
	ctl      chan func() // work to run in the stage's goroutine (do)
	// committed carries the offsets this member just committed for the
	// partitions it claims (commitOnce; the newest waiting is enough):
	// their shared columns below are forgotten (trimCols).
	committed chan map[int]int64
	pause     chan *pauseReq
	// epoch counts the generations the stage was given (assign, revoke):
	// a message fetched in another one is dropped. credits are the
	// current generation's per-partition credits (partitionCredit), one
	// taken by the fetcher per message, given back when it is applied.
	epoch   uint64
	credits map[int]*credit
	labels  chan *labelMsg
	// labelTrail is, per labels partition, how far its labels are applied
	// (the snapshot's labels_next is applied+1).
	labelTrail    map[int]*offTrail
	alLabels      map[int]bool // aligner ids of the labels partitions added
	labelsApplied prometheus.Counter
	consumed      prometheus.Counter
	// al orders the events of the partitions this process reads by event
	// time (then tx_id) before they update the state; nil without
	// alignment (WithAlignment(false)).
	al        *align.Aligner[*pending]
	alStats   align.Stats   // the aligner's counters already added to the metrics
	labelsOut labelReleases // the labels the aligner released (alStats: events only)
	// sharedSlot is the slot the next shared checkpoint is stored in;
	// sharedSig what the last one stored covers (encodeShared).
	sharedSlot int
	sharedSig  int64
	// scratch is the row a replica's shared half is written to.
	scratch       []float32
	replicaEvents prometheus.Counter
	// torn reports, once run returned on a hard stop, that an open batch
	// held events applied to the windows but not scored (the sequential
	// models have not stepped), or that a message counted applied found no
	// batch (apply).
	torn bool
}

func newStage(p *Pipeline, workers []*worker) *stage {
	s := &stage{
		p:          p,
		workers:    workers,
		dec:        p.eventDecoder(),
		sdec:       jsonDecoder(p.eventDecoder()),
		width:      len(p.names),
		parts:      map[int]*partState{},
		open:       make([]*batch, len(workers)),
		due:        make([]time.Time, len(workers)),
		in:         make(chan *handoff, max(1, p.cfg.queueDepth/maxHandOff)),
		handMax:    min(maxHandOff, p.cfg.queueDepth),
		ctl:        make(chan func()),
		committed:  make(chan map[int]int64, 1),
		labels:     make(chan *labelMsg, 64),
		labelTrail: map[int]*offTrail{},
		pause:      make(chan *pauseReq),
		scratch:    make([]float32, len(p.names)),
	}
	s.replicaEvents = p.met.replicaEvents
	s.consumed = p.met.consumed.WithLabelValues(p.topic)
	s.labelsApplied = p.met.labels.WithLabelValues("applied")
	if p.cfg.alignIdle >= 0 {
		// The options were checked by New.
		s.al, _ = align.New[*pending](align.WithIdleWait(p.cfg.alignIdle), align.WithLagWait(p.cfg.alignLag))
	}
	return s
}

// setPart makes ps the state of partition part, replacing any (a
// checkpoint restore), and forgets the one part returned last.
func (s *stage) setPart(part int, ps *partState) {
	s.parts[part] = ps
	s.lastPart = nil
}

// part returns the state of partition part, creating it empty.
func (s *stage) part(part int) *partState {
	// A fetcher's slice is of one partition: the one before is most often
	// the one asked for (a restore that replaces its state clears
	// lastPart: setPart).
	if ps := s.lastPart; ps != nil && ps.part == part && (s.al == nil || ps.aligned) {
		return ps
	}
	ps, ok := s.parts[part]
	if !ok {
		ps = s.p.newPartState(part)
		s.parts[part] = ps
	}
	s.lastPart = ps
	if s.al != nil && !ps.aligned {
		s.alignPart(ps, false)
	}
	return ps
}

// do runs fn in the stage's goroutine, between two messages, and waits
// for it. It reports false on a hard stop (fn may not have run).
func (s *stage) do(fn func()) bool {
	done := make(chan struct{})
	select {
	case s.ctl <- func() { fn(); close(done) }:
	case <-s.p.hard.Done():
		return false
	}
	select {
	case <-done:
		return true
	case <-s.p.hard.Done():
		return false
	}
}

// assign starts a generation: the claimed partitions take part in the
// event-time alignment (one with nothing to read is caught up from the
// start), each partition with state from before (a snapshot, or an earlier
// generation) has its first message checked for a gap, and the stage
// takes the generation's credits. The replicas, partitions the member
// reads outside the group for the shared state (WithSharedReplicas), take
// part too, from where their shared half stands (pos: the group's
// positions, for a partition the shared state knows nothing of). It
// returns the generation's epoch and the reads to start: a replica's, and
// for a claimed partition whose shared half stands before its committed
// offset, the part between.
func (s *stage) assign(claims []Claim, replicas []int, pos map[int]Position, credits map[int]*credit) (uint64, []replicaRead) {
	s.epoch++
	s.credits = credits
	var reads []replicaRead
	for _, c := range claims {
		ps, ok := s.parts[c.Partition()]
		if !ok {
			ps = s.p.newPartState(c.Partition())
			s.parts[c.Partition()] = ps
		} else if ps.applied >= 0 && ps.restoredFrom < 0 {
			ps.restoredFrom = ps.applied
		}
		ps.owned = true
		ps.startOff = c.Start()
		po, known := pos[c.Partition()]
		switch {
		case !ps.shrKnown && s.p.cfg.replicas && s.p.cfg.startOffset == kafka.FirstOffset && known && po.First < c.Start() &&
			s.rebuildable(c.Partition(), c.Start()-po.First):
			// The shared state knows nothing of the partition (no shared
			// checkpoint yet: a new group, or one started at once): with
			// the start policy "first" it is built from the partition's
			// first retained event, as the other members' is.
			ps.shr = newOffTrail(po.First - 1)
			ps.shrKnown = true
			reads = append(reads, replicaRead{part: c.Partition(), from: po.First, until: c.Start()})
		case !ps.shrKnown:
			// Else it starts where the partition's cards do.
			ps.shr = newOffTrail(c.Start() - 1)
			ps.shrKnown = true
		case ps.shr.applied+1 < c.Start() && s.p.cfg.replicas:
			reads = append(reads, replicaRead{part: c.Partition(), from: ps.shr.applied + 1, until: c.Start()})
		}
		if s.al != nil && !ps.aligned {
			s.alignPart(ps, c.Start() >= c.HighWater() && ps.shr.applied+1 >= c.Start())
		}
	}
	for _, part := range replicas {
		ps, ok := s.parts[part]
		if !ok {
			ps = s.p.newPartState(part)
			s.parts[part] = ps
		}
		ps.owned = false
		po, known := pos[part]
		if !ps.shrKnown {
			// Where a member without state would start the partition: its
			// first retained event with the start policy "first" (the
			// shared state then holds the same history as the other
			// members'), else the group's committed offset.
			from := po.Committed
			switch {
			case s.p.cfg.startOffset == kafka.FirstOffset && (from < 0 || s.rebuildable(part, from-po.First)):
				from = po.First
			case from < 0:
				from = po.HighWater
			}
			ps.shr = newOffTrail(from - 1)
			ps.shrKnown = true
		}
		from := ps.shr.applied + 1
		reads = append(reads, replicaRead{part: part, from: from, until: -1})
		if s.al != nil && !ps.aligned {
			s.alignPart(ps, known && from >= po.HighWater)
		}
	}
	return s.epoch, reads
}

// maxSharedRebuild bounds the events of one partition a member without
// shared state reads from the partition's first retained event to build
// its terminals (a new group, or every member started together): beyond
// it (a restart of a deployment that keeps no state: no --state-dir, no
// checkpoint store) the partition's shared half starts at the group's
// committed offset, as its cards do, rather than holding scoring back
// while the whole retained topic is read (about 2 µs an event).
const maxSharedRebuild = 1_000_000

// rebuildable reports whether n events of partition part are few enough
// to build the shared state from (maxSharedRebuild), logging when not.
func (s *stage) rebuildable(part int, n int64) bool {
	if n <= maxSharedRebuild {
		return true
	}
	s.p.log.Warn("no shared state for the partition and too much history to rebuild it before scoring: its terminals start at the group's committed offset (keep state with --checkpoint-store or --state-dir)",
		"partition", part, "events", n, "max", maxSharedRebuild)
	return false
}

// revoke ends the stage's part of a generation: what waits in the
// aligner is dropped (fetched, never applied: it is fetched again, by this
// member or the next owner), messages still queued from the generation
// will be dropped, and the open batches go to the workers. It returns the
// number of claimed messages dropped.
func (s *stage) revoke() int {
	s.epoch++
	s.credits = nil
	dropped := 0
	count := func(pd *pending) {
		if !pd.replica {
			dropped++
		}
		s.recycle(pd)
	}
	for _, ps := range s.parts {
		for _, pd := range ps.joinq {
			count(pd) // not applied: fetched again, by this member or the next owner
		}
		clear(ps.joinq)
		ps.joinq = ps.joinq[:0]
		if !ps.aligned {
			continue
		}
		s.al.Remove(ps.part, count)
		ps.aligned = false
		ps.dropWaiting()
		ps.shr.dropWaiting()
	}
	if dropped > 0 {
		s.p.stats.Consumed.Add(int64(-dropped))
	}
	for wi := range s.open {
		s.closeBatch(wi)
	}
	return dropped
}

// idle reports whether every batch the stage handed out has come back
// from the workers and their senders (safe from any goroutine; call it
// after revoke).
func (s *stage) idle() bool {
	for _, w := range s.workers {
		if len(w.ready) > 0 || len(w.free) < cap(w.free) {
			return false
		}
	}
	return true
}

// syncWorkers takes every batch waiting in the workers' free lists and
// puts it back. Run by the stage goroutine once idle reported every batch
// back (idle reads only the channels' lengths, which orders nothing): the
// receive orders the workers' and senders' last writes — the sequence
// states of the batches they scored — before what the stage does next
// (encoding the state for a checkpoint).
func (s *stage) syncWorkers() {
	for _, w := range s.workers {
		for range len(w.free) {
			b := <-w.free
			w.free <- b
		}
	}
}

// credit gives back the credit of a message of partition part.
func (s *stage) credit(part int) {
	if c, ok := s.credits[part]; ok {
		c.give()
	}
}

// alignPart adds partition ps to the aligner; caughtUp says Kafka has
// nothing for it beyond what was applied (an empty partition must not hold
// the others back).
func (s *stage) alignPart(ps *partState, caughtUp bool) {
	if err := s.al.Add(ps.part); err != nil {
		s.p.log.Error("event-time aligner refused a partition: its events are applied in arrival order", "partition", ps.part, "err", err)
		return
	}
	ps.aligned = true
	if caughtUp {
		s.al.MarkCaughtUp(ps.part)
	}
}

// run is the stage's loop. It returns when its input is closed (after
// applying every event fetched and handing every open batch to its
// worker) or when the pipeline is stopped hard; either way it closes every
// worker's input.
func (s *stage) run() {
	defer func() {
		for _, w := range s.workers {
			close(w.ready)
		}
	}()
	hard := s.p.hard.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armedAt time.Time // zero: not armed
	for {
		if s.p.hard.Err() != nil { // select picks at random among ready cases
			s.stopHard()
			return
		}
		if !s.p.cfg.holdBatches && len(s.in) == 0 && len(s.labels) == 0 {
			// Nothing more to read now: the open batches go to their
			// workers at once rather than at --max-delay, so a lone event
			// at a low rate is scored without waiting. Under load the
			// input is never empty and batches fill; when every batch of a
			// worker is in flight, the stage waits (batchOf) and the next
			// batch gathers what queued meanwhile.
			for wi, b := range s.open {
				if b != nil && len(b.msgs) > 0 {
					s.closeBatch(wi)
				}
			}
		}
		// One timer for the earliest of the open batches' deadlines and
		// the aligner's (a silent partition's wait bound).
		d, ok := s.nextDue()
		if s.al != nil && s.credits != nil { // nothing is released without a generation
			if ad, aok := s.al.Deadline(); aok && (!ok || ad.Before(d)) {
				d, ok = ad, true
			}
		}
		if ok && !d.Equal(armedAt) {
			timer.Stop()
			timer.Reset(time.Until(d))
			armedAt = d
		}
		// The aligner's memory is bounded by the partitions' credits
		// (partitionCredit, labelCredit): a partition ahead in event time
		// stops fetching, the one holding it back can always deliver.
		select {
		case <-s.joined():
			for _, ps := range s.parts {
				if len(ps.joinq) > 0 {
					s.drainJoin(ps)
				}
			}
		case h, ok := <-s.in:
			if !ok {
				s.dropJoinq()
				if n := s.settleAligner(); n > 0 {
					s.p.log.Info("events not applied at stop, left for the next start", "events", n)
				}
				for wi := range s.open {
					s.closeBatch(wi)
				}
				return
			}
			s.take(h)
		case lm := <-s.labels:
			s.addLabel(lm)
			s.release()
		case fn := <-s.ctl:
			fn()
		case next := <-s.committed:
			s.trimCols(next)
		case <-timer.C:
			armedAt = time.Time{}
			s.release()
			now := time.Now()
			for wi, b := range s.open {
				if b != nil && !now.Before(s.due[wi]) {
					s.closeBatch(wi)
				}
			}
		case req := <-s.pause:
			t0 := time.Now()
			if !s.pauseAll(req) {
				s.stopHard()
				return
			}
			if s.al != nil {
				s.al.Resume(time.Since(t0)) // the pause is not the partitions' silence
			}
		case <-hard:
			s.stopHard()
			return
		}
	}
}

// take takes a fetcher's slice of messages: each, unless fetched in a
// generation that ended (then dropped: fetched again), is added and the
// aligner releases what it may, as if each came alone. The messages of
// the slice not added yet count as queued (holding) for release.
func (s *stage) take(h *handoff) {
	n := len(h.pds)
	s.inFlight.Add(-int64(n))
	if h.epoch != s.epoch {
		for _, pd := range h.pds {
			s.recycle(pd)
		}
		h.reset()
		return
	}
	if !h.replica {
		// Counted per slice, not per message (a prometheus counter and an
		// atomic add each): the slice's messages are all added below.
		s.consumed.Add(float64(n))
		s.p.stats.Consumed.Add(int64(n))
	}
	s.warm(h.pds)
	s.holding = n
	for _, pd := range h.pds {
		s.holding--
		s.add(fetched{pd: pd, epoch: h.epoch, replica: h.replica})
		s.release()
	}
	h.reset()
}

// warm reads, for every item of a fetcher's slice, the words of it the
// stage reads first (add, then applyAligned), before it handles the first
// one. The items were written by the fetching goroutine, most likely on
// another core: each cache line the stage touches first is a transfer
// from that core's cache (in BenchmarkFloor's profile, about 0.13 µs per
// event at add's first read of an item and as much at applyAligned's).
// Read one item at a time, those transfers come one after the other, each
// waiting for the previous; read here in a loop of independent loads, the
// CPU has many in flight at once. It only reads: what the stage does with
// the items is unchanged. The sum is kept so that the loads are not
// dropped as dead code; nothing reads it.
func (s *stage) warm(pds []*pending) {
	var sum int64
	for _, pd := range pds {
		sum += int64(pd.m.Partition) + pd.m.Offset + pd.m.HighWaterMark +
			int64(len(pd.reason)) + int64(len(pd.ev.TxID)) + pd.ev.TS.UnixNano()
		if pd.label != nil {
			sum++
		}
	}
	s.warmSum += sum
}

func (s *stage) stopHard() {
	for _, b := range s.open {
		if b != nil && len(b.msgs) > 0 {
			s.torn = true
		}
	}
}

// nextDue returns the earliest deadline of an open batch.
func (s *stage) nextDue() (time.Time, bool) {
	var d time.Time
	ok := false
	for wi, b := range s.open {
		if b != nil && (!ok || s.due[wi].Before(d)) {
			d, ok = s.due[wi], true
		}
	}
	return d, ok
}

// pauseAll closes every open batch, has every worker score what it was
// handed and wait, and waits itself until req.resume is closed (a state
// snapshot). It returns false on a hard stop.
func (s *stage) pauseAll(req *pauseReq) bool {
	for wi := range s.open {
		s.closeBatch(wi)
	}
	hard := s.p.hard.Done()
	bars := make([]*batch, len(s.workers))
	for i, w := range s.workers {
		bars[i] = &batch{barrier: &pauseReq{paused: make(chan struct{}), resume: req.resume}}
		select {
		case w.ready <- bars[i]:
		case <-hard:
			return false
		}
	}
	for _, b := range bars {
		select {
		case <-b.barrier.paused:
		case <-hard:
			return false
		}
	}
	close(req.paused)
	select {
	case <-req.resume:
		return true
	case <-hard:
		return false
	}
}

// batchOf returns worker wi's open batch, opening one (blocking while every
// batch of that worker is in flight: backpressure). It reports false on a
// hard stop.
func (s *stage) batchOf(wi int) (*batch, bool) {
	if b := s.open[wi]; b != nil {
		return b, true
	}
	w := s.workers[wi]
	var b *batch
	select {
	case b = <-w.free:
	default:
		// Every batch of the worker is in flight (a slow or down sink):
		// wait, and do not count the wait as the partitions' silence.
		// The aligner's gauge is brought up to date first (it is set per
		// batch, and the events pushed since the last one wait here too:
		// an operator looking during an outage, or TestSinkOutage's bound,
		// would see them as held nowhere).
		if s.al != nil {
			s.p.met.alignBuffered.Set(float64(s.al.Len()))
		}
		select {
		case b = <-w.free:
		case <-s.p.hard.Done():
			return nil, false
		}
		if s.al != nil {
			// Every partition's silence restarts: the stage blocks here
			// only while it releases events, so this cannot hold a quiet
			// partition's bound off for ever (a pause, which comes every
			// state interval whatever the traffic, takes out only its own
			// time); and after a block the fetchers' messages queue up
			// behind a burst, on a machine that may be short of CPU.
			s.al.Resume(restartSilence)
		}
	}
	b.opened = time.Now()
	// Between batches: pick up a newly published model set. Every record
	// of the batch comes from this one.
	b.set = s.p.set.Load()
	ws := b.set.workers[wi]
	b.fit(len(ws.scorers), len(ws.shadows), s.p.cfg.maxBatch)
	s.open[wi], s.due[wi] = b, b.opened.Add(s.p.cfg.maxDelay)
	return b, true
}

// closeBatch hands worker wi's open batch, if any, to the worker.
func (s *stage) closeBatch(wi int) {
	b := s.open[wi]
	if b == nil {
		return
	}
	s.open[wi] = nil
	s.countState()
	select {
	case s.workers[wi].ready <- b:
	case <-s.p.hard.Done():
		if len(b.msgs) > 0 {
			s.torn = true
		}
	}
}

// pending is a fetched message decoded, waiting for its turn in the
// stage: its event, or why it is a dead letter.
//
// Its layout is for the stage's first touch (see warm): the fields add
// and applyAligned read before apply copies the message and the event
// (ps, label, the flags, and m's partition, offset and high-water mark)
// share the first 64 bytes, and the size is a multiple of 64, so that
// the allocator's size class for it (448) puts every item at a cache
// line's start (TestPendingLayout).
type pending struct {
	// ps is the state of the item's partition (set by add; nil for a
	// label).
	ps *partState
	// label, when set, makes the item a label of labels partition
	// m.Partition (ev, reason and err unused).
	label *labelMsg
	// replica: read outside the claim (a partition read as a shared-state
	// replica, or the part of a claimed one before its committed offset
	// that the shared state lacks): it updates the shared entities only and
	// is not scored.
	replica bool
	// needShared and needLocal: the event's shared half (terminals) and
	// card half are not in the state yet.
	needShared, needLocal bool
	m                     kafka.Message
	reason                string // dead letter: the reason code ("" for an event)
	err                   string // dead letter: the decoder's error
	ev                    features.Event
	// join is the event's shared half from the terminal stage (the
	// repartition mode: WithRepartition).
	join joinRec
}

// pendingPool holds the pending items the stage is done with: they are
// taken by the fetching goroutines (decode) and given back by the stage,
// so a free list of the stage's own would need a lock too.
var pendingPool = sync.Pool{New: func() any { return new(pending) }}

// newPending returns an empty pending item. Safe for concurrent use.
func (s *stage) newPending() *pending { return pendingPool.Get().(*pending) }

// jsonDecoder returns d when it is the JSON decoder itself, else nil. Not
// any type with its Now and DecodeAt: a WithEventDecoder type that embeds
// *features.Decoder and overrides Decode has them too (promoted), and
// DecodeAt would bypass its Decode.
func jsonDecoder(d EventDecoder) *features.Decoder {
	fd, _ := d.(*features.Decoder)
	return fd
}

// now returns the clock reading the messages of one fetched slice are
// decoded against (decode): the JSON decoder's (features.Decoder.Now), read once
// per slice instead of once per message; the zero Time for a decoder that
// reads its own.
func (s *stage) now() time.Time {
	if s.sdec == nil {
		return time.Time{}
	}
	return s.sdec.Now()
}

// decode decodes rec, a record of topic, into a pending item for the
// stage (its message pd.m). It is called by the fetching goroutine of
// rec's partition, before the item is handed to the stage, so that decoding runs in parallel, one goroutine per partition,
// instead of in the stage's one goroutine: safe for concurrent use (the
// decoder is: see EventDecoder). now is the slice's clock reading (see
// stage.now).
func (s *stage) decode(topic string, rec *Record, now time.Time) *pending {
	pd := s.newPending()
	// Field by field into the pooled item: not a kafka.Message built by
	// the caller and copied in whole (one copy of its pointers fewer, each
	// under the write barrier while the GC marks).
	m := &pd.m
	m.Topic, m.Partition, m.Offset, m.HighWaterMark = topic, rec.Partition, rec.Offset, rec.HighWater
	m.Key, m.Value, m.Time = rec.Key, rec.Value, rec.Time
	var err error
	if s.sdec != nil {
		err = s.sdec.DecodeAt(m.Value, &pd.ev, now)
	} else {
		err = s.dec.Decode(m.Value, &pd.ev)
	}
	if err != nil {
		pd.reason = decodeReason(err)
		pd.err = err.Error()
	}
	return pd
}

// recycle returns pd to the pool.
func (s *stage) recycle(pd *pending) {
	*pd = pending{}
	pendingPool.Put(pd)
}

// add takes a fetched message: one whose halves are both in the state
// already (re-delivered after a rebalance or a restore) is scored at once
// against the state as it is; a dead letter changes no state and is
// recorded at once; an event with a half still to apply waits in the
// aligner for its turn (release), or is applied at once without alignment.
// A replica message (f.replica, or of a partition this member does not
// claim) is never scored: only its shared half is applied.
func (s *stage) add(f fetched) {
	pd := f.pd
	m := &pd.m
	ps := s.part(m.Partition)
	replica := f.replica || !ps.owned
	if ps.restoredFrom >= 0 && !replica {
		s.checkGap(ps, m.Offset)
	}
	pd.replica = replica
	pd.ps = ps
	if s.p.joins != nil {
		// The repartition mode: in offset order, each once its shared
		// columns are back (a dead letter needs none, but keeps its
		// place: see the dead-letter case below).
		pd.needLocal = !ps.isApplied(m.Offset)
		ps.joinq = append(ps.joinq, pd)
		s.drainJoin(ps)
		return
	}
	pd.needShared = !ps.shr.isApplied(m.Offset)
	pd.needLocal = !replica && !ps.isApplied(m.Offset)
	switch {
	case !pd.needShared && !pd.needLocal:
		if !replica {
			s.apply(pd, ps)
		}
		s.credit(m.Partition) // before recycle: m is pd's
		s.recycle(pd)
	case pd.reason != "" && pd.needLocal && ps.aligned && ps.waiting():
		// A dead letter behind events of its partition still waiting in
		// the aligner waits behind them (at the partition's watermark,
		// keyed after every tx_id): recorded before them, a revoke that
		// drops them would leave the committed offset below it, and the
		// next owner would dead-letter it again.
		wm, _ := s.al.Watermark(m.Partition)
		s.fetchedTrails(pd, ps, false)
		s.al.Push(m.Partition, wm, deadLetterKey, pd, m.HighWaterMark > 0 && m.Offset == m.HighWaterMark-1)
	case pd.reason != "" || !ps.aligned || (!pd.needShared && !ps.waiting()):
		// A dead letter changes no state; an event whose shared half is
		// applied already (read as a replica before this member claimed
		// the partition) changes only its partition's cards, which follow
		// the partition's order: neither waits for the other partitions.
		s.fetchedTrails(pd, ps, true)
		s.apply(pd, ps)
		s.credit(m.Partition) // before recycle: m is pd's
		s.recycle(pd)
	default:
		s.fetchedTrails(pd, ps, false)
		s.al.Push(m.Partition, pd.ev.TS.UnixNano(), pd.ev.TxID, pd, m.HighWaterMark > 0 && m.Offset == m.HighWaterMark-1)
	}
}

// deadLetterKey is the aligner key of a dead letter: above every tx_id (a
// tx_id is valid UTF-8, whose bytes never reach 0xff).
const deadLetterKey = "\xff"

// fetchedTrails records pd's offset in the trails of the halves it still
// needs, applied already (done) or waiting.
func (s *stage) fetchedTrails(pd *pending, ps *partState, done bool) {
	if pd.needLocal {
		ps.fetched(pd.m.Offset, done)
	}
	if pd.needShared {
		ps.shr.fetched(pd.m.Offset, done)
	}
}

// release applies every event (and label) the aligner lets go: only
// while the member holds a generation, so that labels never run ahead of
// the event partitions not yet (or no longer) claimed.
func (s *stage) release() {
	if s.al == nil || s.credits == nil {
		return
	}
	for s.p.hard.Err() == nil {
		var pd *pending
		var why align.Reason
		var ok bool
		if s.holding > 0 || s.inFlight.Load() > 0 {
			// More messages are on their way (being decoded by their
			// fetchers, queued, or behind this one in the slice being
			// taken): their partitions are not silent, only not read
			// yet, so no wait bound may release anything. Counted until
			// the stage adds them: a fetcher starved of CPU mid-decode,
			// or between decoding and sending, let the others' events
			// pass its partition's (TestReplayRunMatchesScore with the
			// machine's cores busy).
			pd, why, ok = s.al.PopExact()
		} else {
			pd, why, ok = s.al.Pop()
		}
		if !ok {
			return
		}
		if pd.label != nil {
			s.labelsOut.released(why, s.p.met.labelsLate)
		}
		s.applyAligned(pd)
	}
}

// settleAligner ends the aligner's work at a stop: what it can release
// now is applied (in event-time order, or past a partition's wait bound,
// as while running); the rest is dropped as a revoke drops it (fetched,
// never applied, its offsets not committed: fetched again at the next
// start, by this member or the next owner), labels waiting in it too. It
// used to apply everything buffered: a partition ahead of another (a
// backlog fetched unevenly) then had its events applied before the other's
// older ones, which the next process found behind the terminal windows, as
// late events, for good. It returns the number of claimed messages dropped.
func (s *stage) settleAligner() int {
	if s.al == nil {
		return 0
	}
	s.release()
	dropped := 0
	for _, ps := range s.parts {
		if !ps.aligned {
			continue
		}
		s.al.Remove(ps.part, func(pd *pending) {
			if !pd.replica {
				dropped++
			}
			s.recycle(pd)
		})
		ps.aligned = false
		ps.dropWaiting()
		ps.shr.dropWaiting()
	}
	for id := range s.alLabels {
		part := id - labelAlignBase
		s.al.Remove(id, func(pd *pending) {
			giveBack(pd.label.credit)
			s.recycle(pd)
		})
		s.labelTrailOf(part).dropWaiting()
	}
	clear(s.alLabels)
	if dropped > 0 {
		s.p.stats.Consumed.Add(int64(-dropped))
	}
	return dropped
}

func (s *stage) applyAligned(pd *pending) {
	if pd.label != nil {
		s.applyLabel(pd.label)
		s.recycle(pd)
		return
	}
	ps := pd.ps
	// Re-checked: a revoke and a re-fetch may have applied it meanwhile.
	pd.needShared = pd.needShared && !ps.shr.isApplied(pd.m.Offset)
	pd.needLocal = pd.needLocal && !ps.isApplied(pd.m.Offset)
	if !pd.replica || pd.needShared {
		s.apply(pd, ps)
	}
	if pd.needLocal {
		ps.markApplied(pd.m.Offset)
	}
	if pd.needShared {
		ps.shr.markApplied(pd.m.Offset)
	}
	s.credit(pd.m.Partition)
	s.recycle(pd)
}

// apply handles a decoded message of partition ps. A replica message's
// event is applied to the shared entities (if pd.needShared) and its
// columns kept (colLog). Otherwise a valid event's halves still missing
// from the state are applied (the others read as they are: re-delivered),
// its row appended to the open batch of its worker; a dead letter is
// recorded in that batch.
func (s *stage) apply(pd *pending, ps *partState) {
	if pd.replica {
		if pd.reason == "" && pd.needShared {
			row := s.scratch
			late := s.p.shared.Apply(&pd.ev, row)
			s.keepCols(ps, pd.m.Offset, row, late)
		}
		s.replicaEvents.Inc()
		return
	}
	m := &pd.m
	wi := s.place().worker(m.Partition)
	b, ok := s.batchOf(wi)
	if !ok {
		// A hard stop while every batch of the worker was in flight: the
		// message is in no batch and not in the state, though the caller
		// counts it applied; no snapshot or checkpoint may say so.
		s.torn = true
		return
	}
	i := len(b.msgs)
	b.msgs = append(b.msgs, *m)
	if pd.reason != "" {
		// Handled: it changes no state, but a snapshot covers its offset
		// (no gap after a restore, and commits held at the snapshot pass
		// it): the caller counts it applied.
		b.dead = append(b.dead, deadEntry{msg: i, reason: pd.reason, err: pd.err})
	} else {
		b.events = append(b.events, pd.ev)
		ev := &b.events[len(b.events)-1]
		rows := len(b.rowMsg)
		row := b.x[rows*s.width : (rows+1)*s.width]
		var sharedLate bool
		switch {
		case s.p.joins != nil:
			// The terminal stage's columns (drainJoin waited for them).
			for i, c := range s.p.sharedCols {
				row[c] = pd.join.cols[i]
			}
			sharedLate = pd.join.late
		case pd.needShared:
			sharedLate = s.p.shared.Apply(ev, row)
			s.keepCols(ps, m.Offset, row, sharedLate)
		default:
			sharedLate = s.sharedCols(ps, m.Offset, ev, row)
		}
		if pd.needLocal {
			ps.build.UpdateLocal(ev, row, sharedLate)
			for _, id := range ps.build.EvictedCards() {
				b.evicted = append(b.evicted, evictEntry{row: rows, ps: ps, id: id})
			}
		} else {
			// Re-delivered (a rebalance restarts partitions at the
			// committed offset): the event is already in the windows, so
			// score it against them without applying it twice.
			ps.build.PeekLocal(ev, row, sharedLate)
			s.p.met.redelivered.Inc()
		}
		late := ps.build.LastLate()
		b.late = append(b.late, late)
		// A late event is not applied to the windows; it does not advance
		// the sequential models' state either.
		b.adv = append(b.adv, pd.needLocal && !late)
		b.rowPart = append(b.rowPart, ps)
		b.slots = append(b.slots, ps.build.LastCardSlot())
		b.rowMsg = append(b.rowMsg, i)
	}
	if len(b.msgs) >= s.p.cfg.maxBatch {
		s.closeBatch(wi)
	}
}

// checkGap is called for the first message of a partition after a
// restore: offsets between the restored one and this one are not in the
// state.
func (s *stage) checkGap(ps *partState, offset int64) {
	from := ps.restoredFrom
	ps.restoredFrom = -1
	if gap := offset - from - 1; gap > 0 {
		s.p.met.stateGap.Add(float64(gap))
		s.p.log.Warn("partition resumes past the restored state: the offsets between are not in it (events committed after the snapshot was written, or transaction markers)",
			"partition", ps.part, "restored_offset", from, "first_offset", offset, "offsets_skipped", gap)
	}
}

// countState publishes the growth of every partition Builder's counters
// (late events, rekeyed cards, evictions), the cards held and the shared
// columns kept (colLog). Called once per batch.
func (s *stage) countState() {
	var cards int64
	held := 0
	for _, ps := range s.parts {
		held += ps.cols.len()
		b := ps.build
		if n := b.Late(); n > ps.late {
			s.p.met.late.Add(float64(n - ps.late))
			ps.late = n
		}
		if n := b.Rekeyed(); n > ps.rekeyed {
			s.p.met.rekeyed.Add(float64(n - ps.rekeyed))
			ps.rekeyed = n
		}
		st := b.Stats()
		cards += int64(st.Entities)
		if st.EvictedTTL > ps.evicted.EvictedTTL {
			s.p.counts.cardTTL.Add(st.EvictedTTL - ps.evicted.EvictedTTL)
		}
		if st.EvictedCap > ps.evicted.EvictedCap {
			s.p.counts.cardCap.Add(st.EvictedCap - ps.evicted.EvictedCap)
		}
		ps.evicted = st
	}
	s.p.counts.cards.Store(cards)
	if s.p.cfg.replicas {
		s.p.met.sharedColsHeld.Set(float64(held))
	}
	if s.al != nil {
		st := s.labelsOut.eventsOnly(s.al.Stats())
		for _, c := range []struct {
			outcome   string
			now, seen uint64
		}{
			{"ordered", st.Ordered, s.alStats.Ordered}, {"idle_bound", st.IdleBound, s.alStats.IdleBound},
			{"lag_bound", st.LagBound, s.alStats.LagBound}, {"out_of_order", st.OutOfOrder, s.alStats.OutOfOrder},
		} {
			if c.now > c.seen {
				s.p.met.aligned.WithLabelValues(c.outcome).Add(float64(c.now - c.seen))
			}
		}
		s.alStats = st
		s.p.met.alignBuffered.Set(float64(st.Buffered))
	}
}

// stageLayout returns the sequential-model state layout of the worker that
// scores partition part.
func stageLayout(st *stage, part int) *seqLayout {
	return st.workers[st.place().worker(part)].layout
}

// restartSilence given to align.Resume restarts every partition's silence.
const restartSilence = time.Duration(1 << 62)

// labelReleases counts the labels an aligner released, by reason: its
// Stats count them with the events, and the aligned-events metric counts
// events only (the labels have theirs: labels_total, labels_late_total).
type labelReleases [align.Drained + 1]uint64

// released counts a label released for why; one released out of order (a
// live label applied on arrival: the labels' idle wait) counts in late.
func (r *labelReleases) released(why align.Reason, late prometheus.Counter) {
	r[why]++
	if why == align.OutOfOrder && late != nil {
		late.Inc()
	}
}

// eventsOnly returns st with the labels' releases taken out.
func (r *labelReleases) eventsOnly(st align.Stats) align.Stats {
	st.Ordered -= r[align.Ordered]
	st.IdleBound -= r[align.IdleBound]
	st.LagBound -= r[align.LagBound]
	st.OutOfOrder -= r[align.OutOfOrder]
	return st
}

// labelAlignBase is added to a labels partition's number to make its id in
// the aligner (input partitions use their own numbers).
const labelAlignBase = align.MaxPartition/2 + 1

// labelMsg is a label (or a label's dead letter) on its way to the stage,
// from the label consumer of its partition.
type labelMsg struct {
	m      kafka.Message
	l      features.Label
	dead   bool          // dead-lettered by the consumer: only its offset is handled
	credit chan struct{} // the partition's credits: one given back when handled
}

// labelTrailOf returns labels partition part's trail, starting after a
// restored labels_next, with the offsets restored as applied above it.
func (s *stage) labelTrailOf(part int) *offTrail {
	tr, ok := s.labelTrail[part]
	if !ok {
		s.p.labelMu.Lock()
		next, restored := s.p.labelNext[part]
		ahead := s.p.labelAhead[part]
		s.p.labelMu.Unlock()
		t := newOffTrail(-1)
		if restored {
			// Checked when restored (restoredLabels): in order, bounded.
			t, _ = restoredTrail("labels "+strconv.Itoa(part), next-1, ahead)
		}
		tr = &t
		s.labelTrail[part] = tr
	}
	return tr
}

// addLabel takes a label: it waits in the aligner for the events before
// it (a label is applied after every event before its time and before
// every event at or after it, as Replay applies them), or, a dead letter or
// without alignment, is handled at once.
func (s *stage) addLabel(lm *labelMsg) {
	part := lm.m.Partition
	tr := s.labelTrailOf(part)
	id := labelAlignBase + part
	caughtUp := lm.m.HighWaterMark > 0 && lm.m.Offset == lm.m.HighWaterMark-1
	if tr.isApplied(lm.m.Offset) {
		// In the restored state already (applied ahead of an earlier
		// offset before a restart): not again, but it is the partition's
		// progress, as a push would have been — without it, the partition
		// would hold the others back as one still to deliver.
		if s.al != nil && s.alignLabels(id) == nil {
			switch {
			case !lm.dead:
				s.al.Advance(id, lm.l.TS.UnixNano(), caughtUp)
			case caughtUp: // a dead letter has no time of its own
				s.al.MarkCaughtUp(id)
			}
		}
		giveBack(lm.credit)
		return
	}
	if lm.dead || s.al == nil {
		tr.fetched(lm.m.Offset, false)
		s.applyLabel(lm)
		if caughtUp && s.al != nil && s.alignLabels(id) == nil {
			s.al.MarkCaughtUp(id) // the partition's last: it holds nothing back
		}
		return
	}
	if err := s.alignLabels(id); err != nil {
		s.p.log.Error("event-time aligner refused a labels partition: its labels are applied on arrival", "partition", part, "err", err)
		tr.fetched(lm.m.Offset, false)
		s.applyLabel(lm)
		return
	}
	tr.fetched(lm.m.Offset, false)
	pd := s.newPending()
	pd.label = lm
	// "\x00" sorts a label before every event of the same time (tx ids
	// hold no control characters), labels among themselves by tx_id.
	s.al.Push(id, lm.l.TS.UnixNano(), "\x00"+lm.l.TxID, pd, caughtUp)
}

// alignLabels adds labels partition id to the aligner unless it is in it
// (labels partitions join before anything is fetched, or when they first
// deliver); an id the aligner refused is tried again with the next label.
func (s *stage) alignLabels(id int) error {
	if s.alLabels[id] {
		return nil
	}
	if err := s.al.Add(id); err != nil {
		return err
	}
	if err := s.al.SetIdleWait(id, s.p.cfg.labelsIdle); err != nil {
		return err // New checks it against the lag wait: not reached
	}
	if s.alLabels == nil {
		s.alLabels = map[int]bool{}
	}
	s.alLabels[id] = true
	return nil
}

// applyLabel applies a label to the shared state (a dead letter's offset
// only), and records its offset as handled.
func (s *stage) applyLabel(lm *labelMsg) {
	part := lm.m.Partition
	tr := s.labelTrailOf(part)
	// Under labelMu: a snapshot sees a label applied with its offset
	// recorded, or neither.
	s.p.labelMu.Lock()
	placed := true
	switch {
	case lm.dead:
	case s.p.cfg.repart != nil:
		// The terminal stage applies the shared half (its terminals').
		placed = s.p.shared.ApplyLabelLocal(&lm.l)
	default:
		placed = s.p.shared.ApplyLabel(&lm.l)
	}
	tr.markApplied(lm.m.Offset)
	s.p.setLabelNext(part, tr.applied+1)
	s.p.labelMu.Unlock()
	giveBack(lm.credit)
	if lm.dead {
		return
	}
	s.labelsApplied.Inc()
	if !placed {
		// Logged for the first and then every 1000th: a feed of labels
		// without tx_ts could otherwise flood the log.
		if n := s.p.shared.UnplacedLabels(); n == 1 || n%1000 == 0 {
			s.p.log.Warn("fraud label without a usable tx_ts whose transaction is not in its terminal's retained history: "+
				"it counts in no transaction-time fraud feature", "partition", part, "offset", lm.m.Offset, "unplaced_total", n)
		}
	}
}

// giveBack returns one credit of c, if any is taken.
func giveBack(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}
