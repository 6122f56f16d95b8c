package main

import (
	"math"
	"sync"
	"time"
)

// latencyHist is a log-bucketed latency histogram with about 1% relative
// resolution from 10µs to 100s, for exact-enough percentiles of every event
// in bounded memory (prometheus histograms are too coarse for p99 on a
// status line). Safe for concurrent use.
type latencyHist struct {
	mu     sync.Mutex
	counts []int64
	n      int64
}

const (
	latMin    = 10 * time.Microsecond
	latGrowth = 1.01
)

var latBuckets = int(math.Ceil(math.Log(float64(100*time.Second/latMin))/math.Log(latGrowth))) + 1

func newLatencyHist() *latencyHist { return &latencyHist{counts: make([]int64, latBuckets)} }

func latBucket(d time.Duration) int {
	if d <= latMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(latMin))/math.Log(latGrowth)) + 1
	return min(i, latBuckets-1)
}

// Observe records one latency.
func (h *latencyHist) Observe(d time.Duration) {
	i := latBucket(d)
	h.mu.Lock()
	h.counts[i]++
	h.n++
	h.mu.Unlock()
}

// Quantile returns the q-quantile (0 < q <= 1) as the upper edge of its
// bucket, or 0 if the histogram is empty.
func (h *latencyHist) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return quantileOf(h.counts, h.n, q)
}

// Count returns the number of observations.
func (h *latencyHist) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// SwapInto moves the counts into dst (which is reset) and empties h, for a
// per-interval view.
func (h *latencyHist) SwapInto(dst *latencyHist) {
	h.mu.Lock()
	defer h.mu.Unlock()
	dst.mu.Lock()
	defer dst.mu.Unlock()
	h.counts, dst.counts = dst.counts, h.counts
	dst.n, h.n = h.n, 0
	clear(h.counts)
}

// Merge adds src's counts to h.
func (h *latencyHist) Merge(src *latencyHist) {
	src.mu.Lock()
	defer src.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range src.counts {
		h.counts[i] += c
	}
	h.n += src.n
}

func quantileOf(counts []int64, n int64, q float64) time.Duration {
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var cum int64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			if i == 0 {
				return latMin
			}
			return time.Duration(float64(latMin) * math.Pow(latGrowth, float64(i)))
		}
	}
	return 100 * time.Second
}
