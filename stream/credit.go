package stream

import (
	"context"
	"sync/atomic"
)

// credit is one partition's credits (partitionCredit) in a generation: the
// partition's fetcher takes one per message it hands to the feature stage,
// several at once for a slice (take), and the stage gives each back once
// the message is applied (give). A counting semaphore on one atomic
// counter: the stage gives back per message without a channel operation,
// and the fetcher takes a slice's credits in one.
type credit struct {
	max   int64
	taken atomic.Int64
	// waiting is set by a fetcher about to block on wake (every credit
	// taken); give then signals wake.
	waiting atomic.Bool
	wake    chan struct{} // capacity 1
}

func newCredit(n int) *credit {
	return &credit{max: int64(n), wake: make(chan struct{}, 1)}
}

// take takes between 1 and want (>= 1) credits, as many as are free,
// blocking while none is; it fails only when ctx ends first. For one
// goroutine at a time (the partition's fetcher).
func (c *credit) take(ctx context.Context, want int) (int, error) {
	for {
		t := c.taken.Load()
		if free := c.max - t; free > 0 {
			k := min(int64(want), free)
			if c.taken.CompareAndSwap(t, t+k) {
				return int(k), nil
			}
			continue
		}
		// Every credit is taken: say so, then look again (a give between
		// the load above and the flag would otherwise wake nobody).
		c.waiting.Store(true)
		if c.taken.Load() < c.max {
			c.waiting.Store(false)
			continue
		}
		select {
		case <-c.wake:
			c.waiting.Store(false)
		case <-ctx.Done():
			c.waiting.Store(false)
			return 0, ctx.Err()
		}
	}
}

// give gives back one credit, if any is taken (a message of a partition
// whose credits were never taken gives back nothing). Called by the stage.
func (c *credit) give() {
	for {
		t := c.taken.Load()
		if t <= 0 {
			return
		}
		if c.taken.CompareAndSwap(t, t-1) {
			break
		}
	}
	if c.waiting.Load() {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// held returns the credits taken (for tests).
func (c *credit) held() int { return int(c.taken.Load()) }
