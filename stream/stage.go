package stream

import (
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
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
	part  int
	build *features.Builder
	seq   *seqStates
	// applied is the highest offset applied to the state (or
	// dead-lettered: it changes no state, but a snapshot covers it), -1
	// none.
	applied int64
	// restoredFrom is the offset a restore left applied until the
	// partition's first message was checked against it (checkGap), else -1.
	restoredFrom int64

	// The Builder's counters already added to the metrics.
	late, rekeyed uint64
	evicted       features.StateStats
}

func (p *Pipeline) newPartState(part int) *partState {
	return &partState{
		part:         part,
		build:        features.NewBuilder(p.shared, p.partFeatureOpts()...),
		seq:          newSeqStates(features.TTL(p.cfg.featureOpts...), p.met.stateResets, p.log),
		applied:      -1,
		restoredFrom: -1,
	}
}

// stage is the feature stage: one goroutine that decodes every fetched
// message, applies it to its partition's card state and to the shared
// terminal state, writes its feature row into the open batch of the worker
// of its partition, and hands batches to the workers for scoring when they
// close (max batch size, or max delay after their first message). Being one
// goroutine, it applies the events that update shared state in one order —
// the order it is given them.
type stage struct {
	p       *Pipeline
	workers []*worker
	dec     *features.Decoder
	width   int
	parts   map[int]*partState
	open    []*batch    // per worker: its open batch, or nil
	due     []time.Time // per worker: when its open batch closes
	in      chan kafka.Message
	pause   chan *pauseReq
	spare   []*pending // free list of decoded messages
	// torn reports, once run returned on a hard stop, that an open batch
	// held events applied to the windows but not scored (the sequential
	// models have not stepped).
	torn bool
}

func newStage(p *Pipeline, workers []*worker) *stage {
	return &stage{
		p:       p,
		workers: workers,
		dec:     features.NewDecoder(p.cfg.decoderOpts...),
		width:   len(p.names),
		parts:   map[int]*partState{},
		open:    make([]*batch, len(workers)),
		due:     make([]time.Time, len(workers)),
		in:      make(chan kafka.Message, p.cfg.queueDepth),
		pause:   make(chan *pauseReq),
	}
}

// part returns the state of partition part, creating it empty.
func (s *stage) part(part int) *partState {
	ps, ok := s.parts[part]
	if !ok {
		ps = s.p.newPartState(part)
		s.parts[part] = ps
	}
	return ps
}

// run is the stage's loop. It returns when its input is closed (after
// handing every open batch to its worker) or when the pipeline is stopped
// hard; either way it closes every worker's input.
func (s *stage) run() {
	defer func() {
		for _, w := range s.workers {
			close(w.ready)
		}
	}()
	hard := s.p.hard.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		if s.p.hard.Err() != nil { // select picks at random among ready cases
			s.stopHard()
			return
		}
		if !armed {
			if d, ok := s.nextDue(); ok {
				timer.Reset(time.Until(d))
				armed = true
			}
		}
		select {
		case m, ok := <-s.in:
			if !ok {
				for wi := range s.open {
					s.closeBatch(wi)
				}
				return
			}
			s.add(m)
		case <-timer.C:
			armed = false
			now := time.Now()
			for wi, b := range s.open {
				if b != nil && !now.Before(s.due[wi]) {
					s.closeBatch(wi)
				}
			}
		case req := <-s.pause:
			if armed {
				timer.Stop()
				armed = false
			}
			if !s.pauseAll(req) {
				s.stopHard()
				return
			}
		case <-hard:
			s.stopHard()
			return
		}
	}
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
	case <-s.p.hard.Done():
		return nil, false
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
type pending struct {
	m      kafka.Message
	ev     features.Event
	reason string // dead letter: the reason code ("" for an event)
	err    string // dead letter: the decoder's error
}

// decode decodes m into a pending item from the stage's free list.
func (s *stage) decode(m kafka.Message) *pending {
	var pd *pending
	if n := len(s.spare); n > 0 {
		pd, s.spare = s.spare[n-1], s.spare[:n-1]
	} else {
		pd = new(pending)
	}
	pd.m = m
	if err := s.dec.Decode(m.Value, &pd.ev); err != nil {
		pd.reason = reasonUndecodable
		var de *features.DecodeError
		if errors.As(err, &de) {
			pd.reason = de.Reason
		}
		pd.err = err.Error()
	}
	return pd
}

// release returns pd to the free list.
func (s *stage) release(pd *pending) {
	*pd = pending{}
	s.spare = append(s.spare, pd)
}

// add decodes m and applies it.
func (s *stage) add(m kafka.Message) {
	pd := s.decode(m)
	s.apply(pd)
	s.release(pd)
}

// apply applies a decoded message: a valid event to the feature state, its
// row appended to the open batch of its worker; a dead letter recorded in
// that batch.
func (s *stage) apply(pd *pending) {
	m := &pd.m
	ps := s.part(m.Partition)
	if ps.restoredFrom >= 0 {
		s.checkGap(ps, m.Offset)
	}
	wi := m.Partition % len(s.workers)
	b, ok := s.batchOf(wi)
	if !ok {
		return
	}
	i := len(b.msgs)
	b.msgs = append(b.msgs, *m)
	if pd.reason != "" {
		b.dead = append(b.dead, deadEntry{msg: i, reason: pd.reason, err: pd.err})
		// Handled: it changes no state, but a snapshot covers its offset
		// (no gap after a restore, and commits held at the snapshot
		// pass it).
		ps.applied = max(ps.applied, m.Offset)
	} else {
		b.events = append(b.events, pd.ev)
		ev := &b.events[len(b.events)-1]
		rows := len(b.rowMsg)
		row := b.x[rows*s.width : (rows+1)*s.width]
		applied := true
		if m.Offset <= ps.applied {
			// Re-delivered (a rebalance restarts partitions at the
			// committed offset): the event is already in the windows, so
			// score it against them without applying it twice.
			ps.build.Peek(ev, row)
			s.p.met.redelivered.Inc()
			applied = false
		} else {
			ps.build.Update(ev, row)
			ps.applied = m.Offset
			for _, id := range ps.build.EvictedCards() {
				b.evicted = append(b.evicted, evictEntry{row: rows, ps: ps, id: id})
			}
		}
		late := ps.build.LastLate()
		b.late = append(b.late, late)
		// A late event is not applied to the windows; it does not advance
		// the sequential models' state either.
		b.adv = append(b.adv, applied && !late)
		b.rowPart = append(b.rowPart, ps)
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
// (late events, rekeyed cards, evictions) and the cards held. Called once
// per batch.
func (s *stage) countState() {
	var cards int64
	for _, ps := range s.parts {
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
}

// stageLayout returns the sequential-model state layout of the worker that
// scores partition part.
func stageLayout(st *stage, part int) *seqLayout {
	return st.workers[part%len(st.workers)].layout
}
