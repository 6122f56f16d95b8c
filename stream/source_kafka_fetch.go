package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// partitionFetcher reads one partition for a claim or a PartitionReader:
// its goroutine, started by the first fetch, holds a connection to the
// partition's leader and fetches (kafka.Conn.ReadBatchWith, read-committed)
// one response ahead of the caller, handing over whole responses; the
// caller's fetch takes records from the response in hand without any
// synchronisation. This costs less than half the CPU per record of a
// kafka.Reader, which hands every record over a channel
// (BenchmarkSourceFetch), and a cancelled fetch loses nothing: the response
// in flight is kept for the next one.
//
// Read-ahead is bounded: one response queued, one being fetched, one in the
// caller's hands, each of at most maxBytes (except a single larger record).
type partitionFetcher struct {
	s         *KafkaSource
	topic     string
	partition int
	start     int64 // absolute, or FirstOffset/LastOffset; set before the first fetch
	closedErr error // what fetch returns once closed
	counted   bool  // a claim of the input topic: counted in the source's metrics

	// Caller side: one goroutine at a time.
	cur []Record
	pos int

	started   sync.Once
	quit      chan struct{}
	ctx       context.Context // cancelled by close: stops dials
	cancel    context.CancelFunc
	responses chan fetchedBatch // capacity 1
	free      chan []Record     // buffers back from the caller, capacity 2
	read      atomic.Int64      // records read from the broker (tests)
	// most is the largest response (records) the loop has read: a new
	// buffer is made that large, not grown to it record by record.
	most int

	mu     sync.Mutex // guards conn and closed, for close
	conn   *kafka.Conn
	closed bool
	wg     sync.WaitGroup
}

type fetchedBatch struct {
	recs []Record
	err  error
}

func (s *KafkaSource) newFetcher(topic string, partition int, start int64, closedErr error) *partitionFetcher {
	f := &partitionFetcher{s: s, topic: topic, partition: partition, start: start, closedErr: closedErr,
		quit: make(chan struct{}), responses: make(chan fetchedBatch, 1), free: make(chan []Record, 2)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

// fetch returns the next record; done (may be nil) ends it with closedErr.
func (f *partitionFetcher) fetch(ctx context.Context, done <-chan struct{}) (Record, error) {
	select {
	case <-done:
		return Record{}, f.closedErr
	case <-f.quit:
		return Record{}, f.closedErr
	default:
	}
	for {
		if f.pos < len(f.cur) {
			r := f.cur[f.pos]
			f.pos++
			return r, nil
		}
		if f.cur != nil {
			clear(f.cur) // drop the keys and values the caller now owns
			select {
			case f.free <- f.cur[:0]:
			default:
			}
			f.cur, f.pos = nil, 0
		}
		f.started.Do(f.startLoop)
		select {
		case b := <-f.responses:
			if b.err != nil {
				return Record{}, b.err
			}
			f.cur, f.pos = b.recs, 0
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-done:
			return Record{}, f.closedErr
		case <-f.quit:
			return Record{}, f.closedErr
		}
	}
}

// fetchBatch appends to dst the next record (as fetch) and the rest of
// the response in hand, up to cap(dst) records in all (at least one).
func (f *partitionFetcher) fetchBatch(ctx context.Context, done <-chan struct{}, dst []Record) ([]Record, error) {
	r, err := f.fetch(ctx, done)
	if err != nil {
		return dst, err
	}
	dst = append(dst, r)
	n := min(cap(dst)-len(dst), len(f.cur)-f.pos)
	if n > 0 {
		dst = append(dst, f.cur[f.pos:f.pos+n]...)
		f.pos += n
	}
	return dst, nil
}

func (f *partitionFetcher) startLoop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.wg.Add(1)
	go f.loop()
}

// close stops the fetching goroutine, closing its connection (a fetch
// waiting at the broker is cut short), and joins it. Idempotent.
func (f *partitionFetcher) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.wg.Wait()
		return
	}
	f.closed = true
	close(f.quit)
	f.cancel()
	if f.conn != nil {
		f.conn.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// setConn records the connection in use so close can cut it; false (and c
// closed) if the fetcher is closed.
func (f *partitionFetcher) setConn(c *kafka.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		if c != nil {
			c.Close()
		}
		return false
	}
	f.conn = c
	return true
}

// send hands b to the caller; false once closed.
func (f *partitionFetcher) send(b fetchedBatch) bool {
	select {
	case f.responses <- b:
		return true
	case <-f.quit:
		return false
	}
}

// sleep waits d; false once closed.
func (f *partitionFetcher) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.quit:
		return false
	}
}

// buffer returns a buffer for the next response: one the caller gave
// back, or a new one with room for the largest response read so far (a
// response of maxBytes holds thousands of small records: grown from 256
// by appends, each new buffer's copies were the fetch loop's largest
// cost after kafka-go's own in a BenchmarkFloor run). The loop holds at
// most three buffers per partition (queued, in the caller's hands, being
// filled).
func (f *partitionFetcher) buffer() []Record {
	select {
	case b := <-f.free:
		return b
	default:
		return make([]Record, 0, max(256, f.most))
	}
}

// loop fetches until close. Errors are handed to the caller (its Fetch
// returns them, in order with the records) and retried after a backoff on a
// new connection; the caller decides whether to go on (IsFatalSourceError).
func (f *partitionFetcher) loop() {
	defer f.wg.Done()
	var conn *kafka.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	offset := f.start
	errs := 0
	fail := func(err error) bool {
		if conn != nil {
			conn.Close()
			conn = nil
		}
		errs++
		if f.counted {
			f.s.met.fetchErrors.WithLabelValues(strconv.Itoa(f.partition)).Inc()
		}
		return f.send(fetchedBatch{err: err}) && f.sleep(min(100*time.Millisecond<<min(errs-1, 6), 5*time.Second))
	}
	for {
		if conn == nil {
			c, off, err := f.connect(offset)
			if err != nil {
				if f.ctx.Err() != nil || !fail(fmt.Errorf("stream: connect to %s/%d: %w", f.topic, f.partition, err)) {
					return
				}
				continue
			}
			if !f.setConn(c) {
				return
			}
			conn, offset = c, off
		}
		conn.SetReadDeadline(time.Now().Add(f.s.cfg.maxWait + f.s.cl.Timeout))
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: f.s.cfg.maxBytes,
			IsolationLevel: kafka.ReadCommitted, MaxWait: f.s.cfg.maxWait})
		hw := batch.HighWaterMark()
		recs := f.buffer()
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			recs = append(recs, Record{Partition: f.partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time, HighWater: hw})
		}
		err := batch.Close()
		f.most = max(f.most, len(recs))
		if n := len(recs); n > 0 {
			offset = recs[n-1].Offset + 1
			f.read.Add(int64(n))
			if !f.send(fetchedBatch{recs: recs}) {
				return
			}
		} else {
			select {
			case f.free <- recs:
			default:
			}
		}
		select {
		case <-f.quit:
			return
		default:
		}
		if (err == nil || errors.Is(err, kafka.RequestTimedOut)) && errs > 0 {
			// A healthy round trip after failures: say so even without
			// a record (an idle partition), so the caller can report the
			// connection up again.
			errs = 0
			if len(recs) == 0 && !f.send(fetchedBatch{err: ErrFetchResumed}) {
				return
			}
		}
		switch {
		case err == nil:
			errs = 0
			continue
		case errors.Is(err, kafka.RequestTimedOut):
			continue
		case errors.Is(err, kafka.OffsetOutOfRange):
			first, last, oerr := f.offsets(conn)
			if oerr == nil && offset < first {
				f.skip(offset, first)
				offset = first
				conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck)
				continue
			}
			if oerr == nil {
				err = fmt.Errorf("%w: offset %d past the end %d", err, offset, last)
			}
		}
		if !fail(fmt.Errorf("stream: fetch %s/%d at %d: %w", f.topic, f.partition, offset, err)) {
			return
		}
	}
}

// connect dials the partition's leader and positions the connection at
// offset, resolving FirstOffset and LastOffset, and moving an offset below
// the first retained one up to it (the records between are gone).
func (f *partitionFetcher) connect(offset int64) (*kafka.Conn, int64, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.s.cl.Timeout)
	defer cancel()
	var conn *kafka.Conn
	var err error
	for _, b := range f.s.brokers {
		if conn, err = f.s.cfg.dialer.DialLeader(ctx, "tcp", b, f.topic, f.partition); err == nil {
			break
		}
	}
	if err != nil {
		return nil, 0, err
	}
	first, last, err := f.offsets(conn)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	switch {
	case offset == kafka.FirstOffset:
		offset = first
	case offset == kafka.LastOffset:
		offset = last
	case offset < first:
		f.skip(offset, first)
		offset = first
	}
	if _, err := conn.Seek(offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		conn.Close()
		return nil, 0, err
	}
	return conn, offset, nil
}

// offsets reads the partition's first and last offsets on conn.
func (f *partitionFetcher) offsets(conn *kafka.Conn) (first, last int64, err error) {
	conn.SetDeadline(time.Now().Add(f.s.cl.Timeout))
	defer conn.SetDeadline(time.Time{})
	return conn.ReadOffsets()
}

// skip reports the records from offset to first (excluded) as lost to
// retention.
func (f *partitionFetcher) skip(offset, first int64) {
	f.s.cfg.log.Warn("kafka source: records deleted by retention before they were read, skipping them",
		"topic", f.topic, "partition", f.partition, "from", offset, "to", first)
	if f.counted {
		f.s.met.skipped.WithLabelValues(strconv.Itoa(f.partition)).Add(float64(first - offset))
	}
}
