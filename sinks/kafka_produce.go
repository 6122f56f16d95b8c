package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/streamscore/streamscore/sinks/output"
)

// KafkaProducer is how a Kafka sink produces: see WithKafkaProducer.
type KafkaProducer int

const (
	// KafkaProducerDirect: each WriteBatch sends one produce request per
	// topic-partition it touches (concurrently), built from the messages in
	// place, through kafka-go's Client on the sink's transport (default).
	KafkaProducerDirect KafkaProducer = iota
	// KafkaProducerWriter: kafka-go's Writer, which copies every message
	// into per-partition batches it allocates for BatchSize messages and
	// merges the writes of concurrent callers within the batch timeout.
	KafkaProducerWriter
)

// ParseKafkaProducer parses "direct" or "writer".
func ParseKafkaProducer(s string) (KafkaProducer, error) {
	switch s {
	case "direct":
		return KafkaProducerDirect, nil
	case "writer":
		return KafkaProducerWriter, nil
	}
	return 0, fmt.Errorf("sinks: kafka producer %q: want direct or writer", s)
}

func (p KafkaProducer) String() string {
	switch p {
	case KafkaProducerDirect:
		return "direct"
	case KafkaProducerWriter:
		return "writer"
	}
	return fmt.Sprintf("KafkaProducer(%d)", int(p))
}

// WithKafkaProducer sets how records are produced (default
// KafkaProducerDirect). Both produce with acks=all, the same balancer, the
// same retries (WithKafkaRetries) and the same byte limit per request
// (WithKafkaBatchBytes); the direct producer keeps no batch open across
// calls, so WithKafkaBatch's timeout never delays it, and it allocates
// nothing per message. The trap of KafkaProducerWriter: it cannot compress
// one kind and not another (WithKafkaKindCompression is refused with it).
func WithKafkaProducer(p KafkaProducer) KafkaOption {
	return func(c *kafkaConfig) error {
		if p < KafkaProducerDirect || p > KafkaProducerWriter {
			return fmt.Errorf("sinks: unknown kafka producer %d", int(p))
		}
		c.producer = p
		return nil
	}
}

// WithKafkaKindCompression compresses the records of kind k with codec
// (kafka.Lz4, kafka.Zstd, kafka.Snappy, kafka.Gzip; 0 = none), overriding
// WithKafkaCompression for that kind. Default: none. Meant for the audit
// topic, whose records are large and repetitive; the cost is producer CPU
// per record (and the consumers' to decompress), the gain bytes on the wire
// and on the brokers' disks. Needs KafkaProducerDirect.
func WithKafkaKindCompression(k output.Kind, codec kafka.Compression) KafkaOption {
	return func(c *kafkaConfig) error {
		if int(k) >= output.NumKinds {
			return fmt.Errorf("sinks: kafka compression for unknown kind %d", int(k))
		}
		if codec != 0 && codec.Codec() == nil {
			return fmt.Errorf("sinks: unknown kafka compression codec %d", int(codec))
		}
		c.kindCompression[k] = codec
		c.kindCompressionSet[k] = true
		return nil
	}
}

// ParseKafkaCompression parses a codec name as kafka-go names them:
// "none" (or "uncompressed"), "gzip", "snappy", "lz4" or "zstd".
func ParseKafkaCompression(s string) (kafka.Compression, error) {
	var c kafka.Compression
	if err := c.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("sinks: kafka compression %q: %w", s, err)
	}
	return c, nil
}

// metadataTTL is how long the direct producer trusts a topic's partition
// count (kafka-go's Transport caches metadata for 6 s by default).
const metadataTTL = 5 * time.Second

// producer is the direct producer's state.
type producer struct {
	client  *kafka.Client
	scratch sync.Pool // *produceScratch

	mu    sync.Mutex
	parts map[string]topicParts

	// Statistics since the last read, as kafka.WriterStats has them.
	writes, messages, bytes, errors, retries atomic.Int64
}

type topicParts struct {
	ids []int // 0..n-1, for the balancer
	at  time.Time
}

// produceGroup is the messages of one WriteBatch bound for one
// topic-partition, and their outcome.
type produceGroup struct {
	topic     string
	partition int
	codec     kafka.Compression
	idx       []int
	err       error
}

// produceScratch is the per-call state of WriteBatch, pooled.
type produceScratch struct {
	groups []produceGroup
	n      int
	msg    kafka.Message // for the balancer
}

func (s *produceScratch) group(topic string, partition int, codec kafka.Compression) *produceGroup {
	for i := range s.groups[:s.n] {
		if g := &s.groups[i]; g.partition == partition && g.topic == topic {
			return g
		}
	}
	if s.n == len(s.groups) {
		s.groups = append(s.groups, produceGroup{})
	}
	g := &s.groups[s.n]
	s.n++
	g.topic, g.partition, g.codec, g.idx, g.err = topic, partition, codec, g.idx[:0], nil
	return g
}

// partitions returns the partition ids of topic, from a cache refreshed
// every metadataTTL (or when fresh is set).
func (k *Kafka) partitions(ctx context.Context, topic string, fresh bool) ([]int, error) {
	p := k.prod
	p.mu.Lock()
	tp, ok := p.parts[topic]
	p.mu.Unlock()
	if ok && !fresh && time.Since(tp.at) < metadataTTL {
		return tp.ids, nil
	}
	r, err := k.cfg.transport.RoundTrip(ctx, p.client.Addr, &metadataAPI.Request{
		TopicNames: []string{topic}, AllowAutoTopicCreation: k.cfg.autoCreate,
	})
	if err != nil {
		p.errors.Add(1)
		return nil, fmt.Errorf("read metadata of topic %q: %w", topic, err)
	}
	n := -1
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic {
			if t.ErrorCode != 0 {
				p.errors.Add(1)
				return nil, fmt.Errorf("read metadata of topic %q: %w", topic, kafka.Error(t.ErrorCode))
			}
			n = len(t.Partitions)
		}
	}
	if n <= 0 {
		p.errors.Add(1)
		return nil, fmt.Errorf("read metadata of topic %q: %w", topic, kafka.UnknownTopicOrPartition)
	}
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	p.mu.Lock()
	p.parts[topic] = topicParts{ids: ids, at: time.Now()}
	p.mu.Unlock()
	return ids, nil
}

// writeDirect is WriteBatch with the direct producer.
func (k *Kafka) writeDirect(ctx context.Context, msgs []output.Message) error {
	p := k.prod
	sc, _ := p.scratch.Get().(*produceScratch)
	if sc == nil {
		sc = &produceScratch{}
	}
	defer func() {
		for i := range sc.groups[:sc.n] {
			sc.groups[i].err = nil
		}
		sc.n, sc.msg = 0, kafka.Message{}
		p.scratch.Put(sc)
	}()
	var be *output.BatchError
	fail := func(i int, err error) {
		if be == nil {
			be = &output.BatchError{Sink: k.cfg.name}
		}
		be.Add(i, err)
	}
	var lastTopic string
	var ids []int
	var idsErr error
	for i := range msgs {
		m := &msgs[i]
		topic := k.cfg.route.get(m.Kind)
		if topic == "" {
			continue
		}
		if size := int64(len(m.Key) + len(m.Value) + len(output.HeaderID) + len(m.ID)); size > k.cfg.batchBytes {
			fail(i, fmt.Errorf("write message: %d bytes over the batch limit of %d: %w", size, k.cfg.batchBytes, kafka.MessageSizeTooLarge))
			continue
		}
		if topic != lastTopic {
			lastTopic = topic
			ids, idsErr = k.partitions(ctx, topic, false)
		}
		if idsErr != nil {
			fail(i, idsErr)
			continue
		}
		sc.msg.Topic, sc.msg.Key, sc.msg.Value = topic, m.Key, m.Value
		part := k.cfg.balancer.Balance(sc.msg, ids...)
		g := sc.group(topic, part, k.cfg.kindCompression[m.Kind])
		g.idx = append(g.idx, i)
	}
	switch sc.n {
	case 0:
	case 1:
		k.produceGroup(ctx, msgs, &sc.groups[0])
	default:
		var wg sync.WaitGroup
		for i := range sc.groups[:sc.n] {
			wg.Go(func() { k.produceGroup(ctx, msgs, &sc.groups[i]) })
		}
		wg.Wait()
	}
	for i := range sc.groups[:sc.n] {
		g := &sc.groups[i]
		switch {
		case g.err != nil:
			for _, j := range g.idx {
				fail(j, fmt.Errorf("write messages: %w", g.err))
			}
		}
	}
	if be != nil {
		be.Sort()
		return be
	}
	return nil
}

// produceGroup writes g's messages with as many produce requests as the
// byte limit needs, retrying retryable failures; it sets g.err on
// failure.
func (k *Kafka) produceGroup(ctx context.Context, msgs []output.Message, g *produceGroup) {
	for start := 0; start < len(g.idx); {
		end, size := start, int64(0)
		for end < len(g.idx) {
			m := &msgs[g.idx[end]]
			n := int64(len(m.Key) + len(m.Value) + len(output.HeaderID) + len(m.ID))
			if end > start && size+n > k.cfg.batchBytes {
				break
			}
			size += n
			end++
		}
		if err := k.produce(ctx, msgs, g, g.idx[start:end], size); err != nil {
			g.err = err
			return
		}
		start = end
	}
}

// produce sends msgs[idx] to g's topic-partition in one request, retrying.
func (k *Kafka) produce(ctx context.Context, msgs []output.Message, g *produceGroup, idx []int, size int64) error {
	p := k.prod
	rr := recordReader{msgs: msgs, idx: idx, now: time.Now()}
	for attempt := 1; ; attempt++ {
		if k.closed.Load() {
			return output.ErrClosed
		}
		rr.pos = 0
		p.writes.Add(1)
		res, err := p.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: g.topic, Partition: g.partition, RequiredAcks: kafka.RequireAll,
			Records: &rr, Compression: g.codec,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil && len(res.RecordErrors) > 0 {
			// The broker stores none of a request whose records it refuses
			// (they come with a partition error): the whole group fails,
			// and the Fanout retries the suspects one by one.
			err = kafka.InvalidRecord
		}
		if err != nil && res != nil && len(res.RecordErrors) > 0 {
			err = fmt.Errorf("%w (the broker's record errors: %v)", err, res.RecordErrors)
		}
		if err == nil {
			p.messages.Add(int64(len(idx)))
			p.bytes.Add(size)
			return nil
		}
		p.errors.Add(1)
		if attempt >= k.cfg.maxAttempts || !IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.NotLeaderForPartition) {
			k.partitions(ctx, g.topic, true) // partitions may have moved; the transport refreshes its leaders too
		}
		p.retries.Add(1)
		t := time.NewTimer(backoff(attempt, 10*time.Millisecond, 500*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// backoff is min(max, base·2^(attempt-1)).
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// recordReader hands msgs[idx] to kafka-go as records, in place: one Record
// and two byte readers reused for every message (kafka-go encodes each
// record before it reads the next).
type recordReader struct {
	msgs       []output.Message
	idx        []int
	pos        int
	now        time.Time
	rec        kafka.Record
	key, value bytesReader
	hdr        [1]kafka.Header
}

func (r *recordReader) ReadRecord() (*kafka.Record, error) {
	if r.pos >= len(r.idx) {
		return nil, io.EOF
	}
	m := &r.msgs[r.idx[r.pos]]
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
	if m.ID != "" {
		r.hdr[0] = kafka.Header{Key: output.HeaderID, Value: stringBytes(m.ID)}
		r.rec.Headers = r.hdr[:]
	}
	return &r.rec, nil
}

// stringBytes is s's bytes without a copy; kafka-go only reads them.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }
