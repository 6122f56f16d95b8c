// Package align merges the partitions one process reads into a single stream
// in event-time order, so that state shared across partitions (terminals, any
// non-card entity of the spec) is updated in the order `streamscore score`
// and features.Replay apply the same events: by event time, ties by tx_id.
//
// # Concepts
//
// An [Aligner] buffers items pushed per partition, each in its partition's
// offset order, and releases them (Pop) in the total order
// (ts, key, partition, push order): key is the tie key both the stream and
// score know (tx_id); two items with the same ts and key (a duplicated
// tx_id) come out by partition number, then, within a partition, in offset
// order, which makes the order a function of the log and not of the fetch
// timing.
//
// Every partition is assumed to be in event-time order (ts non-decreasing
// along its offsets). A partition's watermark is the largest ts it has
// delivered: it can still deliver items at that ts (with any key) and
// later, never earlier. The smallest buffered item h is released when every
// partition — including h's own, since a later offset of it may carry the
// same ts with a smaller key — has a watermark above h.ts, or is silent past
// its wait bound:
//
//   - idle: the partition was caught up at its last delivery (the item was
//     the last Kafka had: offset == high-water − 1, or MarkCaughtUp) and has
//     delivered nothing for IdleWait. It holds nothing back until it
//     delivers again, which makes it active again.
//   - lagging: it was not caught up (Kafka has more; the fetch is under
//     way) and has delivered nothing for LagWait, a larger safety bound.
//
// Silence is measured on a monotonic clock from the partition's last push,
// precisely from the first clock read after it: Push does not read the
// clock (a read costs about as much as a push); Deadline, Add,
// MarkCaughtUp and a Pop that finds the head held back do. The owner calls
// Deadline before each wait, so the difference is at most one turn of its
// loop, and only ever makes a partition hold longer, never shorter.
//
// A newly added partition has no watermark and is lagging until it
// delivers or is marked caught up. An item released while an idle (lagging)
// partition whose watermark is not above it was ignored is counted as
// released by the idle (lag) bound ([IdleBound], [LagBound]); otherwise it is
// [Ordered]: exact. These count exposure, not errors: while a partition
// stays empty (or silent since an old event) every release is counted
// IdleBound, though the order is wrong only if that partition wakes up
// with an event older than what was released, counted [OutOfOrder].
//
// An item pushed below the last item already released (an idle partition
// waking up with an older event, a lagging one past LagWait, a partition not
// in event-time order) cannot be placed in order any more: it is released
// by the next Pop, before any buffered item, with the reason [OutOfOrder].
// This is the only way the release order departs from the global sort,
// and it happens only through the two wait bounds or a partition out of
// event-time order. (The global sort itself equals features.Replay's stable
// sort by (ts, tx_id) except for a (ts, tx_id) pair duplicated across
// partitions, which Replay keeps in input order.)
//
// Remove drops a partition (revoked by a consumer-group rebalance) and its
// buffered items: they are never released. Add starts one.
//
// A burst after quiet: when an idle partition delivers an item that is not
// the last Kafka has (not caught up: a backlog written at once, producers
// resuming after an outage), every other caught-up partition silent past
// IdleWait is made to hold the others back again — its silence restarts
// at the wake-up — until it delivers or for another IdleWait (counted in
// Stats.Woken): its own burst may have been written at the same moment and
// be on its way. Otherwise the first partition fetched would race through
// its burst past the others' older items. A partition woken by a single
// item (caught up again: live traffic) wakes no one.
//
// Backpressure: Full(p) reports that p has MaxPerPartition items buffered
// and the caller should stop reading p. A partition that holds the head back
// (watermark not above the head's ts) is never Full, whatever it buffers, so
// a driver that reads every partition that is not Full and wakes up at
// Deadline always makes progress: either the blocking partition delivers
// (its watermark rises or its equal-ts run ends) or it falls silent and its
// wait bound expires at Deadline. The price is that a run of more than
// MaxPerPartition items with one ts in one partition is buffered whole.
//
// Cost: Push and Pop are O(log n) in the buffered items plus O(log P) in the
// partitions when a watermark moves, and allocate nothing once the buffers
// have grown to their steady size. Items are stored by value in a heap: T
// should be small (a pointer or an index).
//
// # Concurrency
//
// An Aligner is not safe for concurrent use: one goroutine (the feature
// stage) owns it and runs a loop such as
//
//	for {
//		for {
//			v, why, ok := a.Pop()
//			if !ok {
//				break
//			}
//			apply(v, why)
//		}
//		d, ok := a.Deadline() // before waiting; arm a timer at d if ok
//		select {
//		// an item of a partition p with !a.Full(p): a.Push(p, ...)
//		// a fetch that found p at its high-water mark: a.MarkCaughtUp(p)
//		// an assignment change: a.Add(p), a.Remove(p, drop)
//		// the timer
//		}
//	}
//
// It starts no goroutine.
//
// # Metrics
//
// The package registers no metric; [Aligner.Stats] returns the counters and
// gauges the owner exports: items released per [Reason], items dropped by
// Remove, items buffered, idle and lagging partitions, and the watermark.
package align
