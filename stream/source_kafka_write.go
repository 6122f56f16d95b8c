package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// The write side of KafkaSource (RecordWriter) and its group-offset reads
// (CommittedReader), for the repartition mode (repart.go): the R and E
// topics are written, and their offsets committed and read, through the
// source's own client, so with its TLS and SASL.

var (
	_ RecordWriter    = (*KafkaSource)(nil)
	_ CommittedReader = (*KafkaSource)(nil)
	_ SideCommitter   = (*kafkaGeneration)(nil)
)

// recordOverhead bounds the bytes a record adds to a v2 record batch
// beside its key and value (length, attributes, timestamp and offset
// deltas, key and value lengths, header count: varints of at most 5 bytes
// each, one byte in practice).
const recordOverhead = 5 * 6

// batchOverhead is the size of a v2 record batch header.
const batchOverhead = 61

// WithSourceMaxWriteBytes sets the most bytes of records (keys, values and
// their framing) one Produce request of WriteRecords carries: a partition's
// records of one call go in one request up to it, and in further requests,
// one after the other and in order, beyond it. Default 1,000,000, under
// Kafka's default message.max.bytes (1,048,588). The trap: the broker's
// limit (message.max.bytes, or the topic's max.message.bytes) is what
// counts: keep n at or below it, or the broker refuses the request
// (kafka.MessageSizeTooLarge, returned, not retried). A record larger than
// n alone is refused by WriteRecords before anything is sent.
func WithSourceMaxWriteBytes(n int) SourceOption {
	return func(c *sourceConfig) error {
		if n < 1<<10 || n > 256<<20 {
			return fmt.Errorf("stream: source max write bytes %d out of range [1 KiB, 256 MiB]", n)
		}
		c.writeBytes = n
		return nil
	}
}

// outRecordSize is the bytes r takes in a record batch.
func outRecordSize(r *OutRecord) int { return len(r.Key) + len(r.Value) + recordOverhead }

// writeGroup is the records of one WriteRecords call bound for one
// partition, and their outcome.
type writeGroup struct {
	partition int
	idx       []int32 // into the call's records, in the order given
	count     int
	rr        outRecordReader
	err       error
}

// writeScratch is the per-call state of WriteRecords, pooled so a call
// allocates nothing per record.
type writeScratch struct {
	groups []writeGroup
	n      int
	idx    []int32
}

func (sc *writeScratch) reset() {
	for i := range sc.groups[:sc.n] {
		g := &sc.groups[i]
		g.idx, g.err, g.count = nil, nil, 0
		g.rr = outRecordReader{}
	}
	sc.n = 0
	sc.idx = sc.idx[:0]
}

// WriteRecords implements RecordWriter: one Produce request (acks=all) per
// partition of the call, the partitions in parallel, through the source's
// client (its TLS and SASL). A partition's records go in one request up to
// WithSourceMaxWriteBytes, in consecutive requests beyond. Retriable
// failures (a leader moving, not enough replicas, timeouts, a dropped
// connection) are retried with a backoff of 20 ms doubling to 1 s until ctx
// ends; each attempt is also bounded by the dialer's timeout. A topic or
// partition the broker does not know (checked again on a fresh metadata
// request: kafka-go's cache lags up to 6 s behind a new topic), a record
// the broker finds too large, an authorization or authentication refusal
// are returned at once. Errors name the topic and partition; errors of
// several partitions are joined (errors.Join). A record with a negative
// partition, or larger than WithSourceMaxWriteBytes, fails the call before
// anything is sent. After Close it returns ErrSourceClosed.
func (s *KafkaSource) WriteRecords(ctx context.Context, topic string, recs []OutRecord) error {
	if s.isClosed() {
		return ErrSourceClosed
	}
	if topic == "" {
		return errors.New("stream: write records: empty topic")
	}
	if len(recs) == 0 {
		return nil
	}
	sc, _ := s.writeScratch.Get().(*writeScratch)
	if sc == nil {
		sc = &writeScratch{}
	}
	defer func() {
		sc.reset()
		s.writeScratch.Put(sc)
	}()
	if err := s.groupRecords(sc, topic, recs); err != nil {
		return err
	}
	now := time.Now()
	groups := sc.groups[:sc.n]
	if len(groups) == 1 {
		s.writeGroup(ctx, topic, recs, &groups[0], now)
	} else {
		var wg sync.WaitGroup
		for i := range groups {
			wg.Go(func() { s.writeGroup(ctx, topic, recs, &groups[i], now) })
		}
		wg.Wait()
	}
	var errs []error
	for i := range groups {
		if err := groups[i].err; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// groupRecords sorts the indexes of recs by partition into sc, keeping the
// order given within a partition (a counting sort: no allocation once the
// scratch has grown), and checks every record.
func (s *KafkaSource) groupRecords(sc *writeScratch, topic string, recs []OutRecord) error {
	last := -1
	for i := range recs {
		r := &recs[i]
		if r.Partition < 0 {
			return fmt.Errorf("stream: write %s: record %d: negative partition %d", topic, i, r.Partition)
		}
		if n := outRecordSize(r) + batchOverhead; n > s.cfg.writeBytes {
			return fmt.Errorf("stream: write %s/%d: record %d: %d bytes over the limit of %d (WithSourceMaxWriteBytes): %w",
				topic, r.Partition, i, n, s.cfg.writeBytes, kafka.MessageSizeTooLarge)
		}
		if last >= 0 && sc.groups[last].partition == r.Partition {
			sc.groups[last].count++
			continue
		}
		last = -1
		for j := range sc.groups[:sc.n] {
			if sc.groups[j].partition == r.Partition {
				last = j
				break
			}
		}
		if last < 0 {
			if sc.n == len(sc.groups) {
				sc.groups = append(sc.groups, writeGroup{})
			}
			last = sc.n
			sc.n++
			sc.groups[last].partition = r.Partition
		}
		sc.groups[last].count++
	}
	// Each group's slice of sc.idx, in order of first appearance.
	sc.idx = slices.Grow(sc.idx[:0], len(recs))[:len(recs)]
	start := 0
	for i := range sc.groups[:sc.n] {
		g := &sc.groups[i]
		g.idx = sc.idx[start : start : start+g.count]
		start += g.count
	}
	last = -1
	for i := range recs {
		p := recs[i].Partition
		if last < 0 || sc.groups[last].partition != p {
			for j := range sc.groups[:sc.n] {
				if sc.groups[j].partition == p {
					last = j
					break
				}
			}
		}
		g := &sc.groups[last]
		g.idx = append(g.idx, int32(i))
	}
	return nil
}

// writeGroup writes g's records in requests of at most the write limit,
// one after the other; it sets g.err on failure.
func (s *KafkaSource) writeGroup(ctx context.Context, topic string, recs []OutRecord, g *writeGroup, now time.Time) {
	for start := 0; start < len(g.idx); {
		end, size := start, batchOverhead
		for end < len(g.idx) {
			n := outRecordSize(&recs[g.idx[end]])
			if end > start && size+n > s.cfg.writeBytes {
				break
			}
			size += n
			end++
		}
		g.rr = outRecordReader{recs: recs, idx: g.idx[start:end], now: now}
		if err := s.produce(ctx, topic, g.partition, &g.rr); err != nil {
			g.err = fmt.Errorf("stream: write %d records to %s/%d: %w", len(g.idx)-start, topic, g.partition, err)
			return
		}
		s.met.written.WithLabelValues(topic).Add(float64(end - start))
		start = end
	}
}

// produce sends rr's records to topic/partition in one request, retrying
// retriable failures until ctx ends.
func (s *KafkaSource) produce(ctx context.Context, topic string, partition int, rr *outRecordReader) error {
	checked := false // the topic and partition were seen on a fresh metadata request
	for attempt := 1; ; attempt++ {
		if s.isClosed() {
			return ErrSourceClosed
		}
		rr.pos = 0
		res, err := s.cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: partition,
			RequiredAcks: kafka.RequireAll, Records: rr})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil && len(res.RecordErrors) > 0 {
			// The broker stores none of a batch it refuses a record of.
			err = fmt.Errorf("%w (the broker's record errors: %v)", kafka.InvalidRecord, res.RecordErrors)
		}
		if err == nil {
			return nil
		}
		s.met.writeErrors.WithLabelValues(topic).Inc()
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w (last error: %w)", cerr, err)
		}
		retry := writeRetriable(err)
		if retry && !checked && unknownPartition(err) {
			ok, merr := s.partitionExists(ctx, topic, partition)
			switch {
			case merr != nil && isFatalFetch(merr):
				return fmt.Errorf("read metadata: %w (after: %w)", merr, err)
			case merr != nil:
				// The check failed (the network): keep retrying.
			case !ok:
				return fmt.Errorf("%w: the broker has no such topic or partition (fresh metadata; %w)", kafka.UnknownTopicOrPartition, err)
			default:
				checked = true // the cache is behind the broker: it refreshes within its TTL
			}
		}
		if !retry {
			if errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) {
				return fmt.Errorf("%d records of %d bytes refused by the broker as too large (its message.max.bytes or the topic's max.message.bytes; see WithSourceMaxWriteBytes): %w",
					len(rr.idx), rr.size(), err)
			}
			return err
		}
		t := time.NewTimer(min(20*time.Millisecond<<min(attempt-1, 6), time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
}

// writeRetriable reports whether a failed Produce is worth another try:
// Kafka's retriable codes (a leader moving, not enough replicas, timeouts,
// an unknown topic or partition: see produce) and errors of the network;
// not a refusal of the records or of the credentials.
func writeRetriable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	// kafka-go's own errors: a topic or partition its metadata cache does
	// not have (yet), a partition without a leader, are worth a retry;
	// anything else of the network too (a dropped connection, a dial
	// timeout).
	return !errors.Is(err, ErrSourceClosed)
}

// unknownPartition reports whether err says the topic or partition is not
// known, by the broker or by kafka-go's metadata cache.
func unknownPartition(err error) bool {
	return errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, protocol.ErrNoTopic) ||
		errors.Is(err, protocol.ErrNoPartition)
}

// partitionExists asks the broker, on a new connection (kafka-go's client
// serves metadata from a cache), whether topic has partition. It never
// creates the topic. A refusal of the credentials is returned as the
// broker's error (kafka.SASLAuthenticationFailed): it dials with the
// source's dialer first, because kafka-go's client sees a failed SCRAM
// exchange only as a connection the broker closed.
func (s *KafkaSource) partitionExists(ctx context.Context, topic string, partition int) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cl.Timeout)
	defer cancel()
	var err error
	for _, b := range s.brokers {
		var conn *kafka.Conn
		if conn, err = s.cfg.dialer.DialContext(ctx, "tcp", b); err == nil {
			conn.Close()
			break
		}
	}
	if err != nil {
		return false, err
	}
	tr := &kafka.Transport{Dial: s.tr.Dial, DialTimeout: s.tr.DialTimeout, ClientID: s.tr.ClientID, TLS: s.tr.TLS,
		SASL: s.tr.SASL, MetadataTopics: []string{topic}}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: s.cl.Addr, Timeout: s.cl.Timeout, Transport: tr}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, err
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return false, nil
		}
		if t.Error != nil {
			return false, t.Error
		}
		return slices.ContainsFunc(t.Partitions, func(p kafka.Partition) bool { return p.ID == partition }), nil
	}
	return false, nil
}

// outRecordReader hands recs[idx] to kafka-go as records, in place: one
// Record and two byte readers reused for every record (kafka-go encodes
// each record before it reads the next).
type outRecordReader struct {
	recs       []OutRecord
	idx        []int32
	pos        int
	now        time.Time
	rec        kafka.Record
	key, value byteReader
}

// ReadRecord implements kafka.RecordReader.
func (r *outRecordReader) ReadRecord() (*kafka.Record, error) {
	if r.pos >= len(r.idx) {
		return nil, io.EOF
	}
	m := &r.recs[r.idx[r.pos]]
	r.pos++
	r.rec = kafka.Record{Time: r.now}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

// size is the bytes of the reader's records (an estimate of their batch).
func (r *outRecordReader) size() int {
	n := batchOverhead
	for _, i := range r.idx {
		n += outRecordSize(&r.recs[i])
	}
	return n
}

// byteReader is a kafka.Bytes over a slice, without a copy.
type byteReader struct{ bytes.Reader }

// Close implements io.Closer.
func (*byteReader) Close() error { return nil }

// Committed implements CommittedReader: the group's committed offsets of
// every partition of topic, in one OffsetFetch (the partitions from the
// client's metadata). A partition without a committed offset is absent
// from the map, never -1. After Close it returns ErrSourceClosed.
func (s *KafkaSource) Committed(ctx context.Context, topic string) (map[int]int64, error) {
	if s.isClosed() {
		return nil, ErrSourceClosed
	}
	parts, err := s.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	return s.committed(ctx, topic, parts)
}

// committed reads the group's committed offsets of parts of topic;
// partitions without one are absent.
func (s *KafkaSource) committed(ctx context.Context, topic string, parts []int) (map[int]int64, error) {
	of, err := s.cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{topic: parts}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if err != nil {
		return nil, fmt.Errorf("stream: committed offsets of group %q on %q: %w", s.group, topic, err)
	}
	out := make(map[int]int64, len(parts))
	for _, po := range of.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("stream: committed offset of %s/%d: %w", topic, po.Partition, po.Error)
		}
		if po.CommittedOffset >= 0 {
			out[po.Partition] = po.CommittedOffset
		}
	}
	return out, nil
}
