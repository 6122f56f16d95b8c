package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// Shared-state replicas (WithSharedReplicas).
//
// The state of the shared entities (terminals, and with a spec every
// entity other than card_id) depends on the events of every partition, in
// event-time order. A member of a group of several claims only some of the
// partitions; to keep the shared state exact it reads the others too,
// outside the group, as replicas: their events go through the same
// event-time aligner and update the shared entities only (Shared.Apply),
// never the cards and never a record. Every member thus holds the shared
// state a single process would hold, as Kafka Streams' global tables are
// held by every instance.
//
// When a partition moves to a member (a rebalance, a failover), that
// member has applied its events to the shared state already, up to where
// it read it as a replica, beyond the group's committed offset where the
// new owner starts scoring. For those events the member takes the shared
// columns from what it kept (colLog: every event's shared columns above the
// group's committed offset: for the partitions it claims its own commits,
// for the others the group's, polled every positionsInterval) and applies
// the card half only (Builder.UpdateLocal): the rows are those
// a single process writes. The other direction — a claimed partition whose
// shared half stands before its committed offset (a shared checkpoint
// older than the partition's) — is read from there as a replica up to the
// committed offset first.

// replicaRead is a read of partition part outside the group, from offset
// from: up to until (exclusive; the part of a claimed partition before its
// committed offset), or without end (-1: a replica).
type replicaRead struct {
	part        int
	from, until int64
}

// positionsInterval is how often the group's committed offsets are read
// to forget the shared columns kept below them.
const positionsInterval = 2 * time.Second

// maxColLog bounds the shared columns kept per partition (the commits of
// the group stall while a sink is down): past it the oldest are dropped,
// and an event that needs them after a rebalance is scored with its
// shared columns read from the state as it is (counted).
const maxColLog = 1 << 18

// colLog keeps, for events of one partition applied to the shared
// entities, the columns Shared.Apply wrote and whether it found the event
// late, in offset order.
type colLog struct {
	width int
	offs  []int64
	late  []bool
	vals  []float32 // len(offs) * width
	// peak is the largest length since the last trim, prevPeak the one
	// of the interval before: what trim sizes the slices by.
	peak, prevPeak int
}

// add keeps the shared columns of offset off (cols: the row's values at
// the Shared's columns).
func (l *colLog) add(off int64, late bool, row []float32, cols []int) {
	n := len(l.offs)
	if n >= maxColLog {
		l.trim(l.offs[n/8]) // drop the oldest eighth at once
		n = len(l.offs)
	}
	i := n
	if n > 0 && l.offs[n-1] >= off {
		i = sort.Search(n, func(k int) bool { return l.offs[k] >= off })
		if l.offs[i] == off {
			for k, c := range cols {
				l.vals[i*l.width+k] = row[c]
			}
			l.late[i] = late
			return
		}
	}
	if i == n {
		l.offs = append(l.offs, off)
		l.late = append(l.late, late)
		v := len(l.vals)
		l.vals = slices.Grow(l.vals, len(cols))[:v+len(cols)]
		for k, c := range cols {
			l.vals[v+k] = row[c]
		}
		l.peak = max(l.peak, n+1)
		return
	}
	l.offs = slices.Insert(l.offs, i, off)
	l.late = slices.Insert(l.late, i, late)
	v := make([]float32, len(cols))
	for k, c := range cols {
		v[k] = row[c]
	}
	l.vals = slices.Insert(l.vals, i*l.width, v...)
	l.peak = max(l.peak, n+1)
}

// get writes the kept columns of offset off into row and reports its late
// flag; ok is false when they are not kept.
func (l *colLog) get(off int64, row []float32, cols []int) (late, ok bool) {
	n := len(l.offs)
	i := sort.Search(n, func(k int) bool { return l.offs[k] >= off })
	if i == n || l.offs[i] != off {
		return false, false
	}
	for k, c := range cols {
		row[c] = l.vals[i*l.width+k]
	}
	return l.late[i], true
}

// trim forgets the offsets below below.
func (l *colLog) trim(below int64) {
	i := sort.Search(len(l.offs), func(k int) bool { return l.offs[k] >= below })
	if i == 0 {
		return
	}
	n := len(l.offs) - i
	// The log of a busy partition fills to what one interval between
	// trims (positionsInterval) brings, and is trimmed back to the few
	// entries above the commit: sized by what is left, it would grow
	// again from there every interval (growslice copies the log over and
	// over). So the slices shrink only when they are also far larger than
	// the previous interval needed: after a burst (commits stalled while
	// a sink was down, up to maxColLog entries), to twice what is left or
	// that interval's peak, so the memory goes back once the commits move
	// again (at the first trim that finds entries to drop; the second when
	// the burst filled the log to maxColLog, whose own trims count).
	before := l.prevPeak
	l.prevPeak, l.peak = l.peak, n
	if c := cap(l.offs); c > colLogShrinkMin && c > 4*max(n, before) {
		m := max(2*n, before)
		offs, late, vals := make([]int64, n, m), make([]bool, n, m), make([]float32, n*l.width, m*l.width)
		copy(offs, l.offs[i:])
		copy(late, l.late[i:])
		copy(vals, l.vals[i*l.width:])
		l.offs, l.late, l.vals = offs, late, vals
		return
	}
	// Moved to the front, not resliced away: the slices keep their
	// capacity, so the appends of a partition read at a steady rate stop
	// allocating (reslicing made every append reallocate sooner or later:
	// colLog.add's growslice was 2% of the engine's CPU).
	copy(l.offs, l.offs[i:])
	l.offs = l.offs[:n]
	l.late = l.late[:copy(l.late, l.late[i:])]
	l.vals = l.vals[:copy(l.vals, l.vals[i*l.width:])]
}

// colLogShrinkMin is the capacity (entries) below which a trimmed colLog
// keeps its slices whatever is left in them.
const colLogShrinkMin = 4096

func (l *colLog) len() int { return len(l.offs) }

// keepCols keeps the shared columns of ps's offset off (with replicas).
func (s *stage) keepCols(ps *partState, off int64, row []float32, late bool) {
	if !s.p.cfg.replicas {
		return
	}
	ps.cols.add(off, late, row, s.p.sharedCols)
}

// sharedCols writes the shared columns of an event of ps whose shared half
// is applied already: those kept when it was applied, else (not kept: read
// by another member, or dropped past maxColLog) the shared state's as it is
// now (Shared.Peek), counted. It returns the shared late flag.
func (s *stage) sharedCols(ps *partState, off int64, ev *features.Event, row []float32) bool {
	if late, ok := ps.cols.get(off, row, s.p.sharedCols); ok {
		return late
	}
	if s.p.cfg.replicas {
		s.p.met.sharedColsMissing.Inc()
	}
	return s.p.shared.Peek(ev, row)
}

// trimCols forgets the shared columns below the committed offsets below
// (partition -> the group's committed offset): the group's, read every
// positionsInterval (positionsLoop), or this member's own for the
// partitions it claims, at each of its commits (noteCommitted). A claimed
// partition's committed offset is this member's, so it need not wait for
// the read of the group: the columns of a partition read at a steady rate
// are kept for about a commit interval (200 ms) instead of up to ten times
// that, and a new process stops growing its logs once its first commits
// are in.
func (s *stage) trimCols(below map[int]int64) {
	held := 0
	for part, ps := range s.parts {
		if off, ok := below[part]; ok && off > 0 {
			ps.cols.trim(off)
		}
		held += ps.cols.len()
	}
	s.p.met.sharedColsHeld.Set(float64(held))
}

// noteCommitted hands the offsets of a successful commit to the stage
// (trimCols) without waiting for it: when the stage has not taken the
// previous ones yet, these replace them.
func (p *Pipeline) noteCommitted(next map[int]int64) {
	if !p.cfg.replicas || p.stage == nil {
		return
	}
	ch := p.stage.committed
	select {
	case ch <- next:
		return
	default:
	}
	// The previous offsets are still waiting: these replace them. Two
	// commits ending at once (the commit loop's and a generation's end)
	// can leave the older of the two waiting instead, which only trims
	// less: a trim below offsets already trimmed does nothing.
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- next:
	default:
	}
}

// positionsLoop reads the group's positions every positionsInterval and
// has the stage forget the shared columns below the committed offsets,
// until ctx is done.
func (p *Pipeline) positionsLoop(ctx context.Context, src Source, st *stage) {
	t := time.NewTicker(positionsInterval)
	defer t.Stop()
	var failing time.Time // when the reads began to fail (zero: they work)
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		pos, err := src.Positions(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			// Shared columns pile up (to maxColLog per partition) while
			// the reads fail: said at once, then every 5 minutes.
			if failing.IsZero() {
				failing = time.Now()
			}
			if time.Since(warned) >= 5*time.Minute {
				warned = time.Now()
				p.log.Warn("cannot read the group's committed offsets: the shared columns of the events of the partitions this member reads as replicas are kept until it can (capped per partition; check the group ACL: Describe)",
					"failing_for", time.Since(failing).Round(time.Second), "err", err)
			}
			continue
		}
		if !failing.IsZero() {
			p.log.Info("the group's committed offsets are readable again", "failed_for", time.Since(failing).Round(time.Second))
			failing, warned = time.Time{}, time.Time{}
		}
		committed := make(map[int]int64, len(pos))
		for part, po := range pos {
			committed[part] = po.Committed
		}
		st.do(func() { st.trimCols(committed) })
	}
}

// positions reads the group's positions for a generation's replicas,
// retrying for up to 10 s; nil when they stay unknown.
func (p *Pipeline) positions(ctx context.Context, src Source) map[int]Position {
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pos, err := src.Positions(pctx)
		cancel()
		if err == nil {
			return pos
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			p.log.Warn("the group's positions are unknown: this generation reads no shared-state replicas (terminal features of the partitions other members claim are missing from this member's state)", "err", err)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// fetchReplica reads r outside the group and hands its messages to the
// stage, marked replica, until ctx is done (or, for the part of a claimed
// partition before its committed offset, until r.until); then it returns
// true when r was read to its end.
func (p *Pipeline) fetchReplica(ctx context.Context, src Source, r replicaRead, st *stage, epoch uint64, cr *credit) bool {
	b := firstBackoff
	from := r.from
	for {
		if r.until >= 0 && from >= r.until {
			return true
		}
		msg := "open a shared-state replica read, retrying"
		pr, err := src.Read(p.topic, r.part, from)
		if err == nil {
			msg = "shared-state replica read failed, retrying"
			from, err = p.pumpReplica(ctx, pr, r, from, st, epoch, cr)
			pr.Close()
			if err == nil {
				return true
			}
		}
		if ctx.Err() != nil || errors.Is(err, ErrSourceClosed) {
			return false
		}
		if !p.retry(ctx, &b, msg, err, "partition", r.part, "offset", from) {
			return false
		}
	}
}

// pumpReplica hands pr's records to the stage until r.until (nil error),
// ctx is done or a fetch fails; it returns the next offset to read.
func (p *Pipeline) pumpReplica(ctx context.Context, pr PartitionReader, r replicaRead, from int64, st *stage, epoch uint64, cr *credit) (int64, error) {
	buf := make([]Record, 0, st.handMax)
	for {
		recs, err := fetchBatch(ctx, pr, buf[:0])
		if errors.Is(err, ErrFetchResumed) {
			continue
		}
		if err != nil {
			return from, err
		}
		end := false
		if r.until >= 0 {
			// Only the records below r.until (in offset order).
			n := len(recs)
			for n > 0 && recs[n-1].Offset >= r.until {
				n--
			}
			recs, end = recs[:n], n < len(recs)
		}
		for len(recs) > 0 {
			n, err := p.handOff(ctx, st, recs, epoch, true, cr)
			if err != nil {
				return from, err
			}
			from = recs[n-1].Offset + 1
			recs = recs[n:]
		}
		if end || (r.until >= 0 && from >= r.until) {
			return max(from, r.until), nil
		}
	}
}

// The shared-state checkpoint: the shared entities' state, how far each
// partition is applied to it (and the shared columns kept above the
// group's committed offsets), and the labels applied, so that a fresh
// member (or every member after a full restart) starts from the state the
// group's members hold instead of empty terminals. The member that claims
// partition 0 stores it with its partitions' checkpoints, in two slots
// alternately; a member restores the newest at start.
//
//	magic, version u32, labels topic (u32 length + bytes), written-at i64,
//	partitions u32, each: part u32, applied i64, ahead u32 + i64 each,
//	  cols u32 count, width u32, offsets i64 each, late flags 1 byte each,
//	  values f32 each;
//	labels u32, each: part u32, next i64, (version 2) ahead u32 + i64 each;
//	then features.Shared.WriteState.
//
// Version 1 has no label offsets applied ahead; this build reads it, and
// writes it while no label is applied ahead (see encodeShared).
const (
	sharedCkptMagic   = "streamscore-shared\x00"
	sharedCkptVersion = 2
	// sharedCkptPart marks the shared checkpoint among a round's blobs.
	sharedCkptPart = -1
)

// sharedKey is the store key of slot (0 or 1) of the shared checkpoint.
func (p *Pipeline) sharedKey(slot int) checkpoint.Key {
	return checkpoint.Key{Group: p.group, Topic: p.topic + "#shared", Partition: slot, Fingerprint: p.ckptFingerprint()}
}

// encodeShared serialises the shared checkpoint, if this member writes it
// (it claims partition 0) and the shared state covers every partition. The
// stage and the workers must be paused (or idle); labelMu is taken.
func (p *Pipeline) encodeShared(st *stage) (ckptBlob, bool) {
	g := p.gen.Load()
	if g == nil || !slices.Contains(g.claimed, 0) || p.cfg.repart != nil {
		return ckptBlob{}, false
	}
	parts := slices.Sorted(maps.Keys(st.parts))
	known := 0
	for _, part := range parts {
		if st.parts[part].shrKnown {
			known++
		}
	}
	if known < p.nParts {
		return ckptBlob{}, false
	}
	// Unchanged since the last one stored (nothing applied, no label):
	// not stored again.
	sig := int64(1)
	for _, part := range parts {
		sig = sig*31 + st.parts[part].shr.applied + int64(len(st.parts[part].shr.trail))
	}
	p.labelMu.Lock()
	labelsAhead := p.labelsAhead(st)
	for _, part := range slices.Sorted(maps.Keys(p.labelNext)) {
		sig = sig*31 + p.labelNext[part] + int64(len(labelsAhead[part]))
	}
	// Version 1 while no label is applied ahead (labels in event-time
	// order, the common case): a member of the previous build, during a
	// rolling upgrade, still reads it.
	version := uint32(1)
	if len(labelsAhead) > 0 {
		version = sharedCkptVersion
	}
	p.labelMu.Unlock()
	if sig == st.sharedSig {
		return ckptBlob{}, false
	}
	var b bytes.Buffer
	b.WriteString(sharedCkptMagic)
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(version)
	w(uint32(len(p.cfg.labelsTopic)))
	b.WriteString(p.cfg.labelsTopic)
	at := time.Now().UnixNano()
	w(at)
	w(uint32(known))
	for _, part := range parts {
		ps := st.parts[part]
		if !ps.shrKnown {
			continue
		}
		w(uint32(part))
		w(ps.shr.applied)
		ahead := ps.shr.ahead()
		w(uint32(len(ahead)))
		w(ahead)
		c := &ps.cols
		w(uint32(len(c.offs)))
		w(uint32(c.width))
		w(c.offs)
		for _, l := range c.late {
			if l {
				b.WriteByte(1)
			} else {
				b.WriteByte(0)
			}
		}
		w(c.vals)
	}
	p.labelMu.Lock()
	labels := slices.Sorted(maps.Keys(p.labelNext))
	w(uint32(len(labels)))
	for _, part := range labels {
		w(uint32(part))
		w(p.labelNext[part])
		if version >= 2 {
			ahead := labelsAhead[part]
			w(uint32(len(ahead)))
			w(ahead)
		}
	}
	err := p.shared.WriteState(&b)
	p.labelMu.Unlock()
	if err != nil {
		p.log.Error("encode the shared-state checkpoint", "err", err)
		return ckptBlob{}, false
	}
	return ckptBlob{part: sharedCkptPart, slot: st.sharedSlot, applied: at, blob: sealCkpt(ckptFrameShared, b.Bytes()), sig: sig}, true
}

// restoreShared restores the newest shared checkpoint into the shared
// state and st (before the stage runs, nothing applied yet). It reports
// whether one was restored.
func (p *Pipeline) restoreShared(ctx context.Context, st *stage) bool {
	t0 := time.Now()
	var best checkpoint.Checkpoint
	found := false
	bestSlot := 0
	for slot := range 2 {
		cp, ok, err := p.cfg.ckpt.Latest(ctx, p.sharedKey(slot))
		if err != nil {
			outcome := "error"
			if errors.Is(err, checkpoint.ErrFingerprintMismatch) {
				outcome = "refused"
			}
			p.met.sharedCkpt.WithLabelValues("restore", outcome).Inc()
			p.log.Warn("read a shared-state checkpoint slot", "slot", slot, "err", err)
			continue
		}
		if ok && (!found || cp.Offset > best.Offset) {
			best, found, bestSlot = cp, true, slot
		}
	}
	if !found {
		p.met.sharedCkpt.WithLabelValues("restore", "none").Inc()
		p.log.Info("no shared-state checkpoint: terminals start empty")
		return false
	}
	parts, labels, labelsAhead, err := p.decodeShared(st, best.Blob)
	if err != nil {
		p.met.sharedCkpt.WithLabelValues("restore", "refused").Inc()
		p.log.Error("shared-state checkpoint unusable: terminals start empty", "err", err)
		p.shared.ReadState(bytes.NewReader(nil)) // leaves it empty
		return false
	}
	for part, ps := range parts {
		st.setPart(part, ps)
	}
	if labels != nil {
		p.labelMu.Lock()
		p.labelNext, p.labelAhead = labels, labelsAhead
		p.labelMu.Unlock()
	}
	st.sharedSlot = 1 - bestSlot
	p.stateRestored.Store(true)
	p.met.sharedCkpt.WithLabelValues("restore", "ok").Inc()
	p.log.Info("shared state restored from its checkpoint", "bytes", len(best.Blob), "partitions", len(parts),
		"written_at", time.Unix(0, best.Offset).UTC(), "took", time.Since(t0).Round(time.Millisecond))
	return true
}

// decodeShared reads a shared checkpoint blob: the shared state goes into
// p.shared; it returns the partitions' states (shared half only) and the
// labels' next offsets (nil for another labels topic).
func (p *Pipeline) decodeShared(st *stage, blob []byte) (map[int]*partState, map[int]int64, map[int][]int64, error) {
	blob, err := openCkpt(ckptFrameShared, blob)
	if err != nil {
		return nil, nil, nil, err
	}
	r := bytes.NewReader(blob)
	bad := func(what string) error { return fmt.Errorf("%w: shared checkpoint: %s", errCheckpoint, what) }
	magic := make([]byte, len(sharedCkptMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != sharedCkptMagic {
		return nil, nil, nil, bad("no magic")
	}
	rd := func(v any) bool { return binary.Read(r, binary.LittleEndian, v) == nil }
	var v, n uint32
	if !rd(&v) || v < 1 || v > sharedCkptVersion {
		return nil, nil, nil, bad(fmt.Sprintf("version %d, this build reads %d", v, sharedCkptVersion))
	}
	if !rd(&n) || int(n) > r.Len() {
		return nil, nil, nil, bad("labels topic")
	}
	topic := make([]byte, n)
	io.ReadFull(r, topic)
	var at int64
	var nParts uint32
	if !rd(&at) || !rd(&nParts) || nParts > maxSnapPartition {
		return nil, nil, nil, bad("header")
	}
	parts := map[int]*partState{}
	for range nParts {
		var part, nAhead, nCols, width uint32
		var applied int64
		if !rd(&part) || part > maxSnapPartition || !rd(&applied) || applied < -1 || !rd(&nAhead) || nAhead > maxSnapAhead {
			return nil, nil, nil, bad("partition header")
		}
		ahead := make([]int64, nAhead)
		if !rd(ahead) {
			return nil, nil, nil, bad("offsets ahead")
		}
		tr, err := restoredTrail(strconv.Itoa(int(part)), applied, ahead)
		if err != nil {
			return nil, nil, nil, bad(err.Error())
		}
		if !rd(&nCols) || nCols > maxColLog || !rd(&width) || int(width) != len(p.sharedCols) || int(nCols)*(9+4*int(width)) > r.Len() {
			return nil, nil, nil, bad("shared columns")
		}
		ps := p.newPartState(int(part))
		ps.shr, ps.shrKnown = tr, true
		ps.cols.offs = make([]int64, nCols)
		ps.cols.late = make([]bool, nCols)
		ps.cols.vals = make([]float32, int(nCols)*int(width))
		flags := make([]byte, nCols)
		if !rd(ps.cols.offs) || !rd(flags) || !rd(ps.cols.vals) || !slices.IsSorted(ps.cols.offs) {
			return nil, nil, nil, bad("shared columns")
		}
		for i, f := range flags {
			ps.cols.late[i] = f != 0
		}
		parts[int(part)] = ps
	}
	var nLabels uint32
	if !rd(&nLabels) || nLabels > maxSnapPartition {
		return nil, nil, nil, bad("labels")
	}
	labels := map[int]int64{}
	ahead := map[string][]int64{}
	for range nLabels {
		var part, nAhead uint32
		var next int64
		if !rd(&part) || part > maxSnapPartition || !rd(&next) || next < 0 {
			return nil, nil, nil, bad("labels")
		}
		labels[int(part)] = next
		if v < 2 {
			continue
		}
		if !rd(&nAhead) || nAhead > maxSnapAhead {
			return nil, nil, nil, bad("labels ahead")
		}
		if nAhead > 0 {
			a := make([]int64, nAhead)
			if !rd(a) {
				return nil, nil, nil, bad("labels ahead")
			}
			ahead[strconv.Itoa(int(part))] = a
		}
	}
	labelsAhead, err := restoredLabels(labels, ahead)
	if err != nil {
		return nil, nil, nil, bad(err.Error())
	}
	if string(topic) != p.cfg.labelsTopic {
		labels, labelsAhead = nil, nil
	}
	if err := p.shared.ReadState(r); err != nil {
		return nil, nil, nil, err
	}
	for _, ps := range parts {
		ps.build = p.partBuilder(p.shared)
		ps.seq.layout = stageLayout(st, ps.part)
	}
	return parts, labels, labelsAhead, nil
}
