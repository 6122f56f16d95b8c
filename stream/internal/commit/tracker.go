// Package commit tracks, per Kafka partition, which fetched offsets have been
// fully handled (every sink acknowledged their records) and yields the offset
// that is safe to commit: the end of the contiguous acknowledged prefix.
//
// # Concepts
//
// Offsets are tracked in fetch order. Acks may arrive in any order (batches of
// different workers finish independently), but committing offset N tells
// Kafka that everything below N is done, so the committable offset only moves
// over a prefix in which every tracked offset was acked. Offsets need not be
// contiguous (compacted topics, transaction markers): the tracker never
// assumes N+1 follows N.
//
// # Concurrency
//
// A Tracker is safe for concurrent use: the fetch loop calls Track, workers
// call Ack, the committer calls Committable.
package commit

import (
	"fmt"
	"sort"
	"sync"
)

// Tracker is the per-partition acknowledgement tracker of one topic.
type Tracker struct {
	mu    sync.Mutex
	parts map[int]*partition
}

type partition struct {
	// offsets holds the tracked, not yet committable offsets in fetch order
	// and acked whether each was acknowledged (the same index); head is the
	// index of the first one still in use (a queue over a slice).
	offsets []int64
	acked   []bool
	head    int
	// next is the offset to commit (one past the last offset of the acked
	// prefix); -1 when nothing was acked since the partition was (re)started.
	next      int64
	committed int64 // last offset reported committed by MarkCommitted; -1 none
	tracked   int64 // number of offsets tracked and not yet released
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{parts: make(map[int]*partition)}
}

func (t *Tracker) part(p int) *partition {
	pp := t.parts[p]
	if pp == nil {
		pp = &partition{next: -1, committed: -1}
		t.parts[p] = pp
	}
	return pp
}

// Track registers offset as fetched and not yet handled. Offsets of one
// partition must be tracked in increasing order; an offset at or below the
// last tracked one means the partition was re-delivered from an earlier
// position (a rebalance or a retry after an error): the partition's pending
// state is reset and reset is true, so the caller can log it. Acks for offsets
// of the abandoned state are then ignored.
func (t *Tracker) Track(p int, offset int64) (reset bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pp := t.part(p)
	if n := len(pp.offsets); n > pp.head && pp.offsets[n-1] >= offset {
		pp.offsets = pp.offsets[:0]
		pp.acked = pp.acked[:0]
		pp.head = 0
		pp.tracked = 0
		reset = true
	}
	pp.offsets = append(pp.offsets, offset)
	pp.acked = append(pp.acked, false)
	pp.tracked++
	return reset
}

// Ack marks offset of partition p as handled. Acking an offset that is not
// tracked (already released, or from state abandoned by a reset) is a no-op
// and returns false.
func (t *Tracker) Ack(p int, offset int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ack(p, offset)
}

// Ack is one acknowledged offset, for AckAll.
type Ack struct {
	Partition int
	Offset    int64
}

// AckAll acks every offset of acks under one lock (a batch's worth).
func (t *Tracker) AckAll(acks []Ack) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range acks {
		t.ack(a.Partition, a.Offset)
	}
}

func (t *Tracker) ack(p int, offset int64) bool {
	pp := t.parts[p]
	if pp == nil {
		return false
	}
	live := pp.offsets[pp.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i] >= offset })
	if i == len(live) || live[i] != offset || pp.acked[pp.head+i] {
		return false
	}
	pp.acked[pp.head+i] = true
	// Advance over the acked prefix.
	for pp.head < len(pp.offsets) && pp.acked[pp.head] {
		pp.next = pp.offsets[pp.head] + 1
		pp.head++
		pp.tracked--
	}
	// Compact when the dead prefix dominates, so memory stays bounded.
	if pp.head > 1024 && pp.head*2 > len(pp.offsets) {
		n := copy(pp.offsets, pp.offsets[pp.head:])
		copy(pp.acked, pp.acked[pp.head:])
		pp.offsets = pp.offsets[:n]
		pp.acked = pp.acked[:n]
		pp.head = 0
	}
	return true
}

// Commit is an offset that is safe to commit for a partition: every offset
// below Next that was tracked has been acked.
type Commit struct {
	Partition int
	Next      int64
}

func (c Commit) String() string { return fmt.Sprintf("p%d@%d", c.Partition, c.Next) }

// Committable returns, for every partition whose acked prefix moved past the
// last committed offset, the offset to commit now, sorted by partition.
func (t *Tracker) Committable() []Commit {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Commit
	for p, pp := range t.parts {
		if pp.next >= 0 && pp.next > pp.committed {
			out = append(out, Commit{Partition: p, Next: pp.next})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// MarkCommitted records that c was committed to Kafka.
func (t *Tracker) MarkCommitted(c Commit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pp := t.part(c.Partition)
	if c.Next > pp.committed {
		pp.committed = c.Next
	}
}

// Forget drops partition p: its tracked offsets, acks and committed
// offset (the partition was revoked; a later claim starts it afresh).
func (t *Tracker) Forget(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.parts, p)
}

// Pending returns the number of tracked offsets of partition p not yet
// released (fetched but not covered by the acked prefix), and the last
// committed offset (-1 when none).
func (t *Tracker) Pending(p int) (pending, committed int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pp := t.parts[p]
	if pp == nil {
		return 0, -1
	}
	return pp.tracked, pp.committed
}

// Acked returns the end of partition p's acked prefix as far as it is known:
// the offset after the last acked one, or the last committed offset if that
// is further (a partition that has seen nothing since it was committed);
// -1 when neither is known.
func (t *Tracker) Acked(p int) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	pp := t.parts[p]
	if pp == nil {
		return -1
	}
	return max(pp.next, pp.committed)
}

// Partitions returns the partitions seen so far, sorted.
func (t *Tracker) Partitions() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.parts))
	for p := range t.parts {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// Idle reports whether every tracked offset has been acked.
func (t *Tracker) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, pp := range t.parts {
		if pp.tracked > 0 {
			return false
		}
	}
	return true
}
