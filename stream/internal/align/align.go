package align

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Sentinel errors of Add, Remove, Push and MarkCaughtUp.
var (
	// ErrUnknownPartition: the partition was never added or was removed.
	// Items a revoked partition's fetcher still delivers land here; the
	// caller drops them.
	ErrUnknownPartition = errors.New("align: unknown partition")
	// ErrPartitionExists: Add of a partition already added.
	ErrPartitionExists = errors.New("align: partition already added")
	// ErrPartitionRange: a partition id outside [0, MaxPartition].
	ErrPartitionRange = errors.New("align: partition id out of range")
)

// MaxPartition is the largest partition id accepted. Ids index a slice: the
// caller maps (topic, partition) pairs to small dense ids if it merges
// topics.
const MaxPartition = 1<<20 - 1

// Reason says why an item was released.
type Reason uint8

const (
	// Ordered: every partition had moved past the item; the release is
	// exact.
	Ordered Reason = iota
	// IdleBound: released although an idle partition (caught up, silent
	// for IdleWait) could still have delivered an earlier item.
	IdleBound
	// LagBound: released although a lagging partition (Kafka had more,
	// silent for LagWait) could still have delivered an earlier item.
	// Takes precedence over IdleBound when both apply.
	LagBound
	// OutOfOrder: pushed below an item already released; released at once,
	// out of event-time order.
	OutOfOrder
	// Drained: released by Drain (the owner stops: whatever is buffered
	// goes in order, without waiting for any partition).
	Drained
)

// String returns the reason as a metric label value.
func (r Reason) String() string {
	switch r {
	case Ordered:
		return "ordered"
	case IdleBound:
		return "idle_bound"
	case LagBound:
		return "lag_bound"
	case OutOfOrder:
		return "out_of_order"
	case Drained:
		return "drained"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

type config struct {
	idleWait time.Duration
	lagWait  time.Duration
	maxPer   int
	now      func() time.Time
}

func defaultConfig() config {
	return config{
		idleWait: 100 * time.Millisecond,
		lagWait:  10 * time.Second,
		maxPer:   1024,
		now:      nil, // time.Since(t0): one monotonic clock read
	}
}

// Option configures an Aligner.
type Option func(*config) error

// WithIdleWait sets how long a caught-up partition that delivers nothing
// keeps holding the others back. Default 100ms. It is the decision latency
// a silent partition adds at live rate, and the exactness bound: an event
// that reaches this process more than IdleWait after the events of other
// partitions with later event times is applied out of order. 0 makes a
// caught-up partition hold nothing back (Kafka Streams'
// max.task.idle.ms=0): cheap, inexact as soon as partitions are fetched
// unevenly.
func WithIdleWait(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("align: idle wait %v is negative", d)
		}
		c.idleWait = d
		return nil
	}
}

// WithLagWait sets how long a partition that Kafka has more for (its fetch
// is under way) may deliver nothing and still hold the others back.
// Default 10s. It must be at least the idle wait and above 0. Too short and
// a slow broker or a fetch retry makes the partitions diverge (the backlog
// case this package exists for); too long and a stuck partition stalls all
// the others for that long.
func WithLagWait(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("align: lag wait %v is not positive", d)
		}
		c.lagWait = d
		return nil
	}
}

// WithMaxPerPartition sets the number of buffered items at which Full
// reports a partition full. Default 1024. Memory is about P × n items; a
// partition that holds the head back is never full (see the package doc),
// so a run of equal event times in one partition can exceed it. Too small
// and the partitions' fetches stall each other while a backlog is read.
func WithMaxPerPartition(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("align: max per partition %d is below 1", n)
		}
		c.maxPer = n
		return nil
	}
}

// WithClock sets the clock the wait bounds are measured with. Default: the
// monotonic clock (time.Since, which skips the wall clock time.Now also
// reads). For tests; a clock that goes backwards delays expiries.
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("align: nil clock")
		}
		c.now = now
		return nil
	}
}

// Stats are the counters and gauges of an Aligner.
type Stats struct {
	// Items released, per reason (counters).
	Ordered, IdleBound, LagBound, OutOfOrder, Drained uint64
	// Dropped counts items discarded by Remove (counter).
	Dropped uint64
	// Woken counts the idle partitions made to hold the others back again
	// because another woke up from idle with a burst (counter).
	Woken uint64
	// Buffered is the number of items held (gauge).
	Buffered int
	// Partitions, IdlePartitions and LaggingPartitions count the added
	// partitions, and those currently ignored by the idle and the lag bound
	// (as last observed by Pop; gauges).
	Partitions, IdlePartitions, LaggingPartitions int
	// Watermark is the smallest watermark (ns) over the partitions that
	// hold items back; valid only when HasWatermark (false when none has
	// delivered yet or none holds anything back).
	Watermark    int64
	HasWatermark bool
}

// entry is one buffered item.
type entry[T any] struct {
	ts   int64
	key  string
	part int
	seq  uint64
	v    T
}

// before is the release order: (ts, key, partition, push order).
func before[T any](a, b *entry[T]) bool {
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	if a.key != b.key {
		return a.key < b.key
	}
	if a.part != b.part {
		return a.part < b.part
	}
	return a.seq < b.seq
}

// Aligner merges partitions in event-time order; see the package doc.
type Aligner[T any] struct {
	cfg   config
	t0    time.Time // origin of the monotonic times below
	wall0 int64     // t0 in ns since the Unix epoch (event times' scale)
	// lastRead is the time of the last clock read, lastWall the same on
	// the event times' scale.
	lastRead, lastWall int64
	idleWait           int64
	lagWait            int64

	parts  []*partState // by id; nil: not added
	nparts int
	// Every added partition is in exactly one of these, ordered by
	// watermark: active ones may hold items back; idle and lagging ones
	// are past their wait bound and hold nothing back until they deliver.
	active, idle, lagging partHeap

	// dirty lists the partitions pushed since the clock was last read;
	// checks counts the Pops that found the head held back.
	dirty  []*partState
	checks uint64

	items []entry[T] // min-heap by before
	seq   uint64

	// late is a FIFO ring of out-of-order items waiting for Pop.
	late                []entry[T]
	lateHead, lateCount int

	// last is the last item released in order; hasLast false until one is.
	last    entry[struct{}]
	hasLast bool

	walk []int // Deadline's reusable stack

	stats Stats
}

// New returns an Aligner with no partition.
func New[T any](opts ...Option) (*Aligner[T], error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("configure aligner: %w", err)
		}
	}
	if cfg.lagWait < cfg.idleWait {
		return nil, fmt.Errorf("configure aligner: lag wait %v is below idle wait %v", cfg.lagWait, cfg.idleWait)
	}
	t0 := time.Now()
	if cfg.now != nil {
		t0 = cfg.now()
	}
	return &Aligner[T]{
		cfg:      cfg,
		t0:       t0,
		wall0:    t0.UnixNano(),
		lastWall: t0.UnixNano(),
		idleWait: int64(cfg.idleWait),
		lagWait:  int64(cfg.lagWait),
	}, nil
}

// read returns the clock in ns since t0 (monotonic by default) and
// starts the quiet time of the partitions pushed since the previous read.
// Push does not read the clock (one read costs about as much as a push);
// the wait bounds of a partition therefore count from the first read after
// its last push, which the owner's loop makes at the latest in Deadline.
func (a *Aligner[T]) read() int64 {
	var now int64
	if a.cfg.now == nil {
		now = int64(time.Since(a.t0)) // no wall clock read: half the cost
	} else {
		now = int64(a.cfg.now().Sub(a.t0))
	}
	for i, q := range a.dirty {
		q.quiet, q.dirty = now, false
		a.dirty[i] = nil
	}
	a.dirty = a.dirty[:0]
	a.lastRead, a.lastWall = now, a.wall0+now
	return now
}

func (a *Aligner[T]) part(p int) (*partState, error) {
	if p < 0 || p > MaxPartition {
		return nil, fmt.Errorf("%w: %d", ErrPartitionRange, p)
	}
	if p >= len(a.parts) || a.parts[p] == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	return a.parts[p], nil
}

// Add starts partition p: it has no watermark and holds every item back
// until it delivers, is marked caught up and stays silent for IdleWait, or
// stays silent for LagWait.
func (a *Aligner[T]) Add(p int) error {
	if p < 0 || p > MaxPartition {
		return fmt.Errorf("add partition: %w: %d", ErrPartitionRange, p)
	}
	if p < len(a.parts) && a.parts[p] != nil {
		return fmt.Errorf("add partition: %w: %d", ErrPartitionExists, p)
	}
	for len(a.parts) <= p {
		a.parts = append(a.parts, nil)
	}
	q := &partState{id: p, wm: math.MinInt64, quiet: a.read(), idleWait: a.idleWait}
	a.parts[p] = q
	a.nparts++
	a.active.push(q, inActive)
	return nil
}

// SetIdleWait gives partition p an idle wait of its own, in place of the
// Aligner's (WithIdleWait): how long it holds the others back once caught
// up and silent. It must not be negative or above the lag wait. A source of
// sparse items — fraud labels, a few a second at most, each one the last
// its partition has — holds every other partition back after each item
// until the next one or for its idle wait; 0 makes it hold nothing back
// once caught up (its items arriving after later ones were released come
// out of order, at once), while its backlog is still ordered (LagWait).
func (a *Aligner[T]) SetIdleWait(p int, d time.Duration) error {
	q, err := a.part(p)
	if err != nil {
		return fmt.Errorf("set idle wait: %w", err)
	}
	if d < 0 || int64(d) > a.lagWait {
		return fmt.Errorf("set idle wait of partition %d: %v is negative or above the lag wait %v", p, d, time.Duration(a.lagWait))
	}
	q.idleWait = int64(d)
	return nil
}

// Remove stops partition p and discards its buffered items, which are never
// released; drop, if not nil, is called with each (to return pooled
// buffers), in no particular order. It returns the number dropped.
func (a *Aligner[T]) Remove(p int, drop func(v T)) (int, error) {
	q, err := a.part(p)
	if err != nil {
		return 0, fmt.Errorf("remove partition: %w", err)
	}
	n := 0
	if q.n > 0 {
		// Filter the heap in place and restore the heap property: O(n),
		// once per revoked partition.
		keep := a.items[:0]
		for i := range a.items {
			if a.items[i].part == p {
				if drop != nil {
					drop(a.items[i].v)
				}
				n++
				continue
			}
			keep = append(keep, a.items[i])
		}
		clear(a.items[len(keep):])
		a.items = keep
		for i := len(a.items)/2 - 1; i >= 0; i-- {
			a.down(i)
		}
		// Filter the late ring, keeping FIFO order.
		if a.lateCount > 0 {
			j := 0
			for i := 0; i < a.lateCount; i++ {
				e := a.late[(a.lateHead+i)%len(a.late)]
				if e.part == p {
					if drop != nil {
						drop(e.v)
					}
					n++
					continue
				}
				// j <= i, and the slot at j was read before: safe in place.
				a.late[(a.lateHead+j)%len(a.late)] = e
				j++
			}
			for i := j; i < a.lateCount; i++ {
				a.late[(a.lateHead+i)%len(a.late)] = entry[T]{}
			}
			a.lateCount = j
		}
	}
	a.heapOf(q).remove(q.hidx)
	if q.dirty {
		a.dirty = slices.DeleteFunc(a.dirty, func(d *partState) bool { return d == q })
	}
	a.parts[p] = nil
	a.nparts--
	a.stats.Buffered -= n
	a.stats.Dropped += uint64(n)
	return n, nil
}

// MarkCaughtUp records that p has delivered everything Kafka has for it
// now (a fetch came back empty at the high-water mark): p becomes idle
// after IdleWait of silence, counted from now if it was not caught up. Call
// it for a partition that has nothing to deliver at all, or it holds the
// others back for LagWait.
func (a *Aligner[T]) MarkCaughtUp(p int) error {
	q, err := a.part(p)
	if err != nil {
		return fmt.Errorf("mark caught up: %w", err)
	}
	if q.caughtUp {
		return nil
	}
	q.caughtUp = true
	if q.where == inLagging {
		// Already ignored; it is now ignored as idle.
		a.lagging.remove(q.hidx)
		a.idle.push(q, inIdle)
		return nil
	}
	q.quiet = a.read()
	return nil
}

// Push buffers v, the next item of partition p (in p's offset order), with
// event time ts (ns) and tie key key (tx_id; not copied, and kept until v
// is released). caughtUp says the item was the last Kafka had for p when
// fetched (offset == high-water − 1). An item below the last one released
// is queued for release at once as OutOfOrder. Push makes p active if it
// was idle or lagging. It fails only for a partition not added (or
// removed): the caller drops v.
func (a *Aligner[T]) Push(p int, ts int64, key string, v T, caughtUp bool) error {
	if p < 0 || p >= len(a.parts) || a.parts[p] == nil {
		_, err := a.part(p)
		return fmt.Errorf("push item: %w", err)
	}
	q := a.parts[p]
	a.deliver(q, ts, caughtUp)
	q.n++
	a.stats.Buffered++
	a.seq++
	if a.hasLast && a.belowLast(ts, key, p) {
		a.pushLate(entry[T]{ts: ts, key: key, part: p, seq: a.seq, v: v})
		return nil
	}
	a.items = append(a.items, entry[T]{ts: ts, key: key, part: p, seq: a.seq, v: v})
	a.up(len(a.items) - 1)
	return nil
}

// Advance is a delivery without an item: p's source reports that it has
// gone past its last item, up to event time ts, with caughtUp as Push's
// (a watermark record of a source whose items went elsewhere: the
// terminal stage of a repartitioned topic hears every source's progress
// this way). It counts as a delivery — p becomes active, its silence
// restarts, an idle p wakes the others as Push would — and raises p's
// watermark to ts if ts is above it. The caller calls it only for real
// progress (the source read further); a report that repeats the last one
// must not be passed on, or a quiet source would never turn idle (use
// MarkCaughtUp when only caughtUp changed to true). It fails only for a
// partition not added (or removed).
func (a *Aligner[T]) Advance(p int, ts int64, caughtUp bool) error {
	if p < 0 || p >= len(a.parts) || a.parts[p] == nil {
		_, err := a.part(p)
		return fmt.Errorf("advance: %w", err)
	}
	a.deliver(a.parts[p], ts, caughtUp)
	return nil
}

// deliver is the bookkeeping of a delivery by q (Push, Advance): an idle q
// delivering a backlog wakes the others, q's silence restarts, it becomes
// active and its watermark rises to ts.
func (a *Aligner[T]) deliver(q *partState, ts int64, caughtUp bool) {
	if (!caughtUp || ts < a.lastWall-backlogAge) && a.wasIdle(q) {
		a.wakeIdle(q)
	}
	if !q.dirty {
		q.dirty = true
		a.dirty = append(a.dirty, q)
	}
	q.pushCheck = a.checks
	q.caughtUp = caughtUp
	q.woken = false
	switch q.where {
	case inActive:
		if ts > q.wm {
			q.wm = ts
			a.active.down(q.hidx) // a key only rises
		}
	default:
		a.heapOf(q).remove(q.hidx)
		if ts > q.wm {
			q.wm = ts
		}
		a.active.push(q, inActive)
	}
}

// backlogAge is how far behind the clock an item's event time must be for
// a partition waking from idle with it to count as a backlog (wakeIdle).
const backlogAge = int64(5 * time.Second)

// wasIdle reports whether q was silent past IdleWait, caught up, as of the
// last clock read (no read here: Push does not read the clock; the time
// since the last read only makes the silence longer).
//
// Silent past the Aligner's idle wait, not the partition's own: a source
// with a shorter one (labels, 0) is idle a moment after each item, and its
// next item is no sign that a backlog is on its way everywhere.
func (a *Aligner[T]) wasIdle(q *partState) bool {
	return q.where != inLagging && q.caughtUp && !q.dirty && a.lastRead-q.quiet >= a.idleWait
}

// wakeIdle is called when q, idle, delivers a backlog: an item that is not
// the last Kafka has (a burst: producers resuming after an outage, a
// backlog written at once) or whose event time is more than backlogAge
// behind the clock (a backlog written gradually). The other idle
// partitions may have had theirs written at the same moment, on its way:
// each restarts its silence and holds the others back again, until it
// delivers or for another IdleWait. Without it, the first partition fetched
// would race through its backlog past the others' older items (released
// out of order, each a wrong shared state for the events after it). It
// costs a backlog at most one IdleWait, and live traffic (a fresh event
// alone) nothing.
func (a *Aligner[T]) wakeIdle(q *partState) {
	now := a.read()
	// Only the partitions added: ids index a sparse slice (the labels'
	// start at MaxPartition/2+1), so walking a.parts would cost half a
	// million slots.
	qIdle := false
	for n := len(a.idle); n > 0; n = len(a.idle) {
		o := a.idle[n-1]
		a.idle.remove(n - 1) // the last: no reordering
		if o == q {
			qIdle = true
			continue
		}
		o.quiet, o.woken = now, true
		a.active.push(o, inActive)
		a.stats.Woken++
	}
	if qIdle {
		a.idle.push(q, inIdle) // Push moves it next
	}
	for _, o := range a.active {
		if o != q && o.caughtUp && now-o.quiet >= o.idleWait {
			o.quiet, o.woken = now, true // the heap is ordered by watermark: unchanged
			a.stats.Woken++
		}
	}
}

// belowLast reports whether (ts, key, p) sorts before the last item
// released in order (a later push of the same partition with the same ts
// and key does not: its push order is larger).
func (a *Aligner[T]) belowLast(ts int64, key string, p int) bool {
	l := &a.last
	if ts != l.ts {
		return ts < l.ts
	}
	if key != l.key {
		return key < l.key
	}
	return p < l.part
}

func (a *Aligner[T]) pushLate(e entry[T]) {
	if a.lateCount == len(a.late) {
		grown := make([]entry[T], max(8, 2*len(a.late)))
		for i := 0; i < a.lateCount; i++ {
			grown[i] = a.late[(a.lateHead+i)%len(a.late)]
		}
		a.late, a.lateHead = grown, 0
	}
	a.late[(a.lateHead+a.lateCount)%len(a.late)] = e
	a.lateCount++
}

// Pop releases the next item if one may go now: first any out-of-order
// item (in push order), then the smallest buffered item if no partition
// could still deliver a smaller one (see the package doc). ok is false
// when nothing may go yet: push more, or wait for Deadline.
func (a *Aligner[T]) Pop() (v T, why Reason, ok bool) {
	if a.lateCount > 0 {
		e := &a.late[a.lateHead]
		v = e.v
		a.parts[e.part].n--
		*e = entry[T]{}
		a.lateHead = (a.lateHead + 1) % len(a.late)
		a.lateCount--
		a.stats.Buffered--
		a.stats.OutOfOrder++
		return v, OutOfOrder, true
	}
	if len(a.items) == 0 {
		return v, Ordered, false
	}
	h := &a.items[0]
	if !a.releasable(h.ts) {
		return v, Ordered, false
	}
	why = Ordered
	switch {
	case len(a.lagging) > 0 && a.lagging[0].wm <= h.ts:
		why = LagBound
		a.stats.LagBound++
	case len(a.idle) > 0 && a.idle[0].wm <= h.ts:
		why = IdleBound
		a.stats.IdleBound++
	default:
		a.stats.Ordered++
	}
	v = h.v
	a.last = entry[struct{}]{ts: h.ts, key: h.key, part: h.part, seq: h.seq}
	a.hasLast = true
	a.parts[h.part].n--
	a.stats.Buffered--
	a.popRoot()
	return v, why, true
}

// popRoot removes the root of a.items (the smallest item) with Floyd's
// bottom-up sift: the hole at the root sinks along the smaller children to
// a leaf (one comparison per level), and the last item, taken out, rises
// from there to its place (rarely more than a level or two: it was a
// leaf). Moving the last item down from the root, as down does, costs two
// comparisons per level and it nearly always sinks to the bottom: Pop's
// sift was most of the aligner's cost per event. The heap holds the same
// items either way, and the release order does not depend on its layout
// (before is a strict total order).
func (a *Aligner[T]) popRoot() {
	it := a.items
	n := len(it) - 1
	x := it[n]
	it[n] = entry[T]{}
	it = it[:n]
	a.items = it
	if n == 0 {
		return
	}
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && before(&it[r], &it[l]) {
			m = r
		}
		it[i] = it[m]
		i = m
	}
	it[i] = x
	a.up(i)
}

// PopExact is Pop without the wait bounds: it releases the next item only
// when no active partition could still deliver an earlier one (or an
// out-of-order item), never because a partition has been silent. The owner
// uses it while it knows more items are on their way (queued to it, not
// pushed yet): their partitions are not silent, only not read yet.
func (a *Aligner[T]) PopExact() (v T, why Reason, ok bool) {
	if a.lateCount == 0 && len(a.items) > 0 && len(a.active) > 0 && a.active[0].wm <= a.items[0].ts {
		return v, Ordered, false
	}
	return a.Pop()
}

// Resume takes blocked, a time in which the owner could not take items
// (backpressure from downstream, a pause), out of the silence of every
// active partition: the partitions were not silent, the owner was not
// reading them. A partition silent for less than blocked restarts its
// silence from now. Only the blocked time is taken out: an owner that
// blocks briefly but often (a state snapshot every second) still lets a
// quiet partition's wait bound expire.
func (a *Aligner[T]) Resume(blocked time.Duration) {
	now := a.read()
	for _, q := range a.active {
		q.quiet = min(q.quiet+min(int64(blocked), now-q.quiet), now)
	}
}

// Drain releases the next item without waiting for any partition: the
// out-of-order ones first, then the smallest buffered item. The owner calls
// it when it stops (every item fetched is handled, in the best order still
// possible). ok is false when nothing is buffered.
func (a *Aligner[T]) Drain() (v T, ok bool) {
	if a.lateCount > 0 {
		v, _, ok = a.Pop()
		return v, ok
	}
	if len(a.items) == 0 {
		return v, false
	}
	h := &a.items[0]
	v = h.v
	a.last = entry[struct{}]{ts: h.ts, key: h.key, part: h.part, seq: h.seq}
	a.hasLast = true
	a.parts[h.part].n--
	a.stats.Buffered--
	a.stats.Drained++
	n := len(a.items) - 1
	a.items[0] = a.items[n]
	a.items[n] = entry[T]{}
	a.items = a.items[:n]
	if n > 0 {
		a.down(0)
	}
	return v, true
}

// releasable reports whether no partition could still deliver an item at
// or before ts, moving the partitions found past their wait bound out of
// the active heap. The clock is read only if a partition holds ts back
// and was not pushed since the last read.
func (a *Aligner[T]) releasable(ts int64) bool {
	var now int64
	read := false
	for len(a.active) > 0 {
		q := a.active[0]
		if q.wm > ts {
			return true
		}
		w := a.wait(q)
		if !read {
			a.checks++
			if q.dirty && w > 0 && q.pushCheck == a.checks-1 {
				// Pushed since the last check: its quiet time starts at
				// the next clock read, so it is not past its bound. The
				// next check reads (liveness without a push).
				return false
			}
			now, read = a.read(), true
		}
		if now-q.quiet < w {
			return false
		}
		a.active.remove(0)
		q.woken = false
		if q.caughtUp {
			a.idle.push(q, inIdle)
		} else {
			a.lagging.push(q, inLagging)
		}
	}
	return true
}

// satAdd is x+y for y >= 0, saturated at math.MaxInt64 (a lag wait of
// centuries means "wait for ever", not a deadline in the past).
func satAdd(x, y int64) int64 {
	if x > math.MaxInt64-y {
		return math.MaxInt64
	}
	return x + y
}

func (a *Aligner[T]) wait(q *partState) int64 {
	if q.caughtUp {
		if q.woken {
			// Another partition's backlog may have one for q on its way:
			// held as any woken partition is (a labels partition whose
			// own wait is 0 would otherwise let the events' backlog run
			// past the labels written in the same outage).
			return max(q.idleWait, a.idleWait)
		}
		return q.idleWait
	}
	return a.lagWait
}

// Deadline returns when a Pop will succeed if nothing is pushed: a time not
// after now if one succeeds at once, else the time the last wait bound of
// the partitions holding the head back expires. ok is false when nothing is
// buffered. A push or MarkCaughtUp can change the answer. The owner calls
// it before each wait: it reads the clock, which starts the quiet time of
// the partitions pushed since the last read.
func (a *Aligner[T]) Deadline() (time.Time, bool) {
	now := a.read()
	if a.lateCount > 0 {
		return a.t0.Add(time.Duration(now)), true
	}
	if len(a.items) == 0 {
		return time.Time{}, false
	}
	ts := a.items[0].ts
	if len(a.active) == 0 || a.active[0].wm > ts {
		return a.t0.Add(time.Duration(now)), true
	}
	// The holders are the active partitions with wm <= ts: a pruned walk
	// of the heap (a child's wm is not below its parent's).
	var at int64 = math.MinInt64
	stack := append(a.walk[:0], 0)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(a.active) || a.active[i].wm > ts {
			continue
		}
		q := a.active[i]
		at = max(at, satAdd(q.quiet, a.wait(q)))
		stack = append(stack, 2*i+1, 2*i+2)
	}
	a.walk = stack
	return a.t0.Add(time.Duration(at)), true
}

// Watermark returns p's watermark: the largest ts it has delivered (ok
// false for an unknown partition, math.MinInt64 before its first item). An
// item pushed at it with a key above every real key is released after
// every item of p already pushed.
func (a *Aligner[T]) Watermark(p int) (int64, bool) {
	if p < 0 || p >= len(a.parts) || a.parts[p] == nil {
		return 0, false
	}
	return a.parts[p].wm, true
}

// Full reports whether the caller should stop reading p: p has
// MaxPerPartition items or more buffered and does not hold the head back.
// Unknown partitions are not full.
func (a *Aligner[T]) Full(p int) bool {
	if p < 0 || p >= len(a.parts) || a.parts[p] == nil {
		return false
	}
	q := a.parts[p]
	if q.n < a.cfg.maxPer {
		return false
	}
	// A partition holding the head back must be read for progress.
	return !(len(a.items) > 0 && q.where == inActive && q.wm <= a.items[0].ts)
}

// Len returns the number of items buffered.
func (a *Aligner[T]) Len() int { return a.stats.Buffered }

// Stats returns the counters and gauges.
func (a *Aligner[T]) Stats() Stats {
	s := a.stats
	s.Partitions = a.nparts
	s.IdlePartitions = len(a.idle)
	s.LaggingPartitions = len(a.lagging)
	s.Watermark, s.HasWatermark = math.MinInt64, false
	if len(a.active) > 0 && a.active[0].wm != math.MinInt64 {
		s.Watermark, s.HasWatermark = a.active[0].wm, true
	}
	return s
}

func (a *Aligner[T]) heapOf(q *partState) *partHeap {
	switch q.where {
	case inIdle:
		return &a.idle
	case inLagging:
		return &a.lagging
	}
	return &a.active
}

// up and down keep a.items a min-heap by before. Both move a hole rather
// than swap: the entry sifted is held aside and written once where it
// stops, one entry copy per level instead of a swap's three (the entries
// are 48 bytes; Pop's sift was most of the aligner's cost per event).
// The release order does not depend on the heap's layout: before is a
// strict total order (seq is unique).
func (a *Aligner[T]) up(i int) {
	it := a.items
	x := it[i]
	for i > 0 {
		p := (i - 1) / 2
		if !before(&x, &it[p]) {
			break
		}
		it[i] = it[p]
		i = p
	}
	it[i] = x
}

func (a *Aligner[T]) down(i int) {
	it := a.items
	n := len(it)
	x := it[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && before(&it[r], &it[l]) {
			m = r
		}
		if !before(&it[m], &x) {
			break
		}
		it[i] = it[m]
		i = m
	}
	it[i] = x
}
