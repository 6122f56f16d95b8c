package align

// partState is one added partition.
type partState struct {
	id int
	// wm is the largest ts delivered; math.MinInt64 before the first.
	wm int64
	// quiet is the time (ns since the Aligner's t0) of the first clock
	// read after the last push, of Add, or of the switch to caught up by
	// MarkCaughtUp: the wait bounds count from it.
	quiet int64
	// dirty: pushed since the last clock read (quiet not yet set).
	dirty     bool
	pushCheck uint64 // Aligner.checks at the last push
	// n counts the buffered items of the partition (heap and late ring).
	n int
	// caughtUp: the last push had caughtUp, or MarkCaughtUp since.
	caughtUp bool
	// idleWait is the partition's idle wait (ns): the Aligner's, or what
	// SetIdleWait gave it.
	idleWait int64
	// woken: woken by another partition's backlog (wakeIdle) and not
	// heard since: it holds the others back for at least the Aligner's
	// idle wait, whatever its own.
	woken bool
	where heapID
	hidx  int // index in the heap named by where
}

type heapID uint8

const (
	inActive heapID = iota
	inIdle
	inLagging
)

// partHeap is a min-heap of partitions by (wm, id); each keeps its index.
type partHeap []*partState

func partLess(a, b *partState) bool {
	if a.wm != b.wm {
		return a.wm < b.wm
	}
	return a.id < b.id
}

func (h *partHeap) push(q *partState, where heapID) {
	q.where = where
	q.hidx = len(*h)
	*h = append(*h, q)
	h.up(q.hidx)
}

// remove takes out the element at index i.
func (h *partHeap) remove(i int) {
	s := *h
	n := len(s) - 1
	if i != n {
		s[i] = s[n]
		s[i].hidx = i
	}
	s[n] = nil
	*h = s[:n]
	if i < n {
		if !h.up(i) {
			h.down(i)
		}
	}
}

func (h partHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}

// up moves i towards the root; it reports whether it moved.
func (h partHeap) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !partLess(h[i], h[p]) {
			break
		}
		h.swap(i, p)
		i = p
		moved = true
	}
	return moved
}

func (h partHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && partLess(h[r], h[l]) {
			m = r
		}
		if !partLess(h[m], h[i]) {
			return
		}
		h.swap(i, m)
		i = m
	}
}
