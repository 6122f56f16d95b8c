package stream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// The terminal stage's writer of enriched (E) records: the stage queues
// each released event's record (add), one goroutine (run) writes what is
// queued at most every eLinger or eBatch records, retrying a failed write
// with a backoff until it is stored or the writer's context ends (a hard
// stop), and a checkpoint waits (waitAcked) for every record queued before
// it to be stored: R is never committed past an event whose E record could
// be lost.
const (
	// eLinger is how long the first queued record waits for others.
	eLinger = 2 * time.Millisecond
	// eBatch queued records are written at once.
	eBatch = 256
	// eMaxQueued bounds the records queued and not yet taken by a write:
	// add blocks above it (the enriched topic is down or slow).
	eMaxQueued = 1 << 16
)

type eWriter struct {
	out   RecordWriter
	topic string
	log   *slog.Logger
	met   *terminalMetrics

	mu      sync.Mutex
	queued  []OutRecord
	seq     uint64        // records queued since the start
	acked   uint64        // records stored (a prefix of seq)
	changed chan struct{} // closed and replaced when acked moves or the queue shrinks
	kick    chan struct{} // a record was queued (cap 1)
	full    chan struct{} // eBatch queued, or a flush asked (cap 1)
}

func newEWriter(out RecordWriter, topic string, log *slog.Logger, met *terminalMetrics) *eWriter {
	return &eWriter{out: out, topic: topic, log: log, met: met, changed: make(chan struct{}),
		kick: make(chan struct{}, 1), full: make(chan struct{}, 1)}
}

func eSignal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// add queues rec; it blocks while eMaxQueued records wait, until the
// writer takes them or ctx ends (false: not queued).
func (w *eWriter) add(ctx context.Context, rec OutRecord) bool {
	w.mu.Lock()
	for len(w.queued) >= eMaxQueued {
		ch := w.changed
		w.mu.Unlock()
		eSignal(w.full)
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
		w.mu.Lock()
	}
	w.queued = append(w.queued, rec)
	w.seq++
	n := len(w.queued)
	w.mu.Unlock()
	eSignal(w.kick)
	if n >= eBatch {
		eSignal(w.full)
	}
	return true
}

// mark returns the number of records queued so far: waitAcked(mark) waits
// for all of them.
func (w *eWriter) mark() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// waitAcked flushes and waits until the first seq records queued are
// stored; false if ctx ended first.
func (w *eWriter) waitAcked(ctx context.Context, seq uint64) bool {
	for {
		w.mu.Lock()
		done, ch := w.acked >= seq, w.changed
		w.mu.Unlock()
		if done {
			return true
		}
		eSignal(w.full)
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// broadcast wakes the waiters; w.mu is held.
func (w *eWriter) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// run writes the queued records until ctx ends.
func (w *eWriter) run(ctx context.Context) {
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var batch []OutRecord
	for {
		select {
		case <-w.kick:
		case <-w.full:
		case <-ctx.Done():
			return
		}
		w.mu.Lock()
		n := len(w.queued)
		w.mu.Unlock()
		if n > 0 && n < eBatch {
			linger.Reset(eLinger)
			select {
			case <-w.full:
				linger.Stop()
			case <-linger.C:
			case <-ctx.Done():
				return
			}
		}
		w.mu.Lock()
		batch = append(batch[:0], w.queued...)
		clear(w.queued)
		w.queued = w.queued[:0]
		w.broadcast()
		w.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if !w.write(ctx, batch) {
			return
		}
		w.mu.Lock()
		w.acked += uint64(len(batch))
		w.broadcast()
		w.mu.Unlock()
		w.met.written.Add(float64(len(batch)))
		clear(batch)
	}
}

// write stores batch, retrying with a backoff (100 ms doubling to 5 s)
// until it is stored (true) or ctx ends.
func (w *eWriter) write(ctx context.Context, batch []OutRecord) bool {
	b := 100 * time.Millisecond
	for {
		err := w.out.WriteRecords(ctx, w.topic, batch)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.met.writeErrors.Inc()
		w.log.Warn("write enriched records failed, retrying", "topic", w.topic, "records", len(batch), "err", err, "backoff", b)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(b):
		}
		b = min(2*b, 5*time.Second)
	}
}
