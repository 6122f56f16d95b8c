package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/sinks/output"
)

// Kafka produces messages to Kafka topics, one topic per Kind, acks=all:
// by default each WriteBatch sends one produce request per topic-partition
// it touches, through kafka-go's Client (KafkaProducerDirect), or through
// one kafka-go Writer (KafkaProducerWriter; see WithKafkaProducer).
//
// Message.Key is the record key and picks the partition (Hash balancer by
// default: all records of a card land in one partition, in order);
// Message.ID travels in the "streamscore-id" header.
//
// Delivery is at least once. kafka-go has no idempotent producer: a write
// the broker appended but answered with a retriable error is retried by the
// Writer (or by the caller) and the record is stored twice. Consumers drop
// duplicates by the streamscore-id header (or by tx_id in the value).
type Kafka struct {
	cfg    kafkaConfig
	w      *kafka.Writer    // KafkaProducerWriter
	prod   *producer        // KafkaProducerDirect
	own    *kafka.Transport // the transport NewKafka made (none given), closed with the sink
	closed atomic.Bool
}

// KafkaOption configures NewKafka.
type KafkaOption func(*kafkaConfig) error

type kafkaConfig struct {
	name         string
	route        route
	reg          prometheus.Registerer
	transport    kafka.RoundTripper
	balancer     kafka.Balancer
	autoCreate   bool
	batchSize    int
	batchBytes   int64
	batchTimeout time.Duration
	writeTimeout time.Duration
	maxAttempts  int
	compression  kafka.Compression
	producer     KafkaProducer

	kindCompression    [output.NumKinds]kafka.Compression
	kindCompressionSet [output.NumKinds]bool
}

func defaultKafkaConfig() kafkaConfig {
	return kafkaConfig{
		name:         "kafka",
		batchSize:    1000,
		batchBytes:   1 << 20,
		batchTimeout: time.Millisecond,
		writeTimeout: 10 * time.Second,
		maxAttempts:  3,
	}
}

// WithKafkaTopic routes messages of kind k to topic. Kinds without a topic
// are skipped (counted as acked). No default.
func WithKafkaTopic(k output.Kind, topic string) KafkaOption {
	return func(c *kafkaConfig) error { return c.route.set(k, topic) }
}

// WithKafkaName sets the sink's Name (default "kafka"), used as the sink
// metric label. Give each sink in one Fanout a distinct name.
func WithKafkaName(name string) KafkaOption {
	return func(c *kafkaConfig) error {
		if name == "" {
			return errors.New("sinks: kafka name is empty")
		}
		c.name = name
		return nil
	}
}

// WithKafkaRegisterer registers the Kafka-specific metrics
// (streamscore_sinks_kafka_*, from the Writer's statistics) with reg.
// Default: no metrics. Generic publish metrics come from the Fanout wrapper.
func WithKafkaRegisterer(reg prometheus.Registerer) KafkaOption {
	return func(c *kafkaConfig) error {
		c.reg = reg
		return nil
	}
}

// WithKafkaTransport sets the kafka-go transport (TLS, SASL, a Dial hook for
// fault injection); the caller owns it (Close leaves it open). Default: a
// transport of the sink's own, whose connections Close closes (not
// kafka.DefaultTransport, whose pooled connections would outlive the sink).
func WithKafkaTransport(t kafka.RoundTripper) KafkaOption {
	return func(c *kafkaConfig) error {
		c.transport = t
		return nil
	}
}

// WithKafkaBalancer sets the partitioner (default &kafka.Hash{}: FNV-1a of
// the key, nil keys round-robin). The trap: Hash does not place keys where
// Java clients' default (murmur2) does; use &kafka.Murmur2Balancer{} when
// the output must be co-partitioned with topics written by Java producers.
func WithKafkaBalancer(b kafka.Balancer) KafkaOption {
	return func(c *kafkaConfig) error {
		if b == nil {
			return errors.New("sinks: kafka balancer is nil")
		}
		c.balancer = b
		return nil
	}
}

// WithKafkaAutoCreateTopics lets the broker create missing topics on first
// write (default false: a missing topic fails the write, which is what
// production wants; tests and the demo may pre-create topics instead).
func WithKafkaAutoCreateTopics(on bool) KafkaOption {
	return func(c *kafkaConfig) error {
		c.autoCreate = on
		return nil
	}
}

// WithKafkaBatch sets the Writer's per-partition batch limits
// (KafkaProducerWriter only; the direct producer keeps no batch open): size
// messages (default 1000, match the pipeline's micro-batch) and timeout
// (default 1ms). The trap: kafka-go's own default timeout is 1s, and every
// WriteBatch whose last partition batch is not full waits that long.
func WithKafkaBatch(size int, timeout time.Duration) KafkaOption {
	return func(c *kafkaConfig) error {
		if size < 1 || timeout <= 0 {
			return fmt.Errorf("sinks: kafka batch size %d, timeout %v: invalid", size, timeout)
		}
		c.batchSize, c.batchTimeout = size, timeout
		return nil
	}
}

// WithKafkaBatchBytes caps the bytes of one produce request per partition
// (default 1 MiB, the broker's default message.max.bytes; counted before
// compression). A single larger message fails with a permanent error.
func WithKafkaBatchBytes(n int64) KafkaOption {
	return func(c *kafkaConfig) error {
		if n < 1 {
			return fmt.Errorf("sinks: kafka batch bytes %d not positive", n)
		}
		c.batchBytes = n
		return nil
	}
}

// WithKafkaRetries sets the Writer's attempts per batch (default 3) and its
// write timeout (default 10s). Retries beyond these are the caller's (the
// Fanout retries forever with backoff). Each retry may duplicate records.
func WithKafkaRetries(attempts int, writeTimeout time.Duration) KafkaOption {
	return func(c *kafkaConfig) error {
		if attempts < 1 || writeTimeout <= 0 {
			return fmt.Errorf("sinks: kafka attempts %d, write timeout %v: invalid", attempts, writeTimeout)
		}
		c.maxAttempts, c.writeTimeout = attempts, writeTimeout
		return nil
	}
}

// WithKafkaCompression sets the batch compression of every kind (default
// none); WithKafkaKindCompression overrides it per kind.
func WithKafkaCompression(codec kafka.Compression) KafkaOption {
	return func(c *kafkaConfig) error {
		c.compression = codec
		return nil
	}
}

// NewKafka returns a sink producing to the given bootstrap brokers. It does
// not connect: the first WriteBatch does.
func NewKafka(brokers []string, opts ...KafkaOption) (*Kafka, error) {
	if len(brokers) == 0 {
		return nil, errors.New("sinks: new kafka: no brokers")
	}
	cfg := defaultKafkaConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.balancer == nil {
		cfg.balancer = &kafka.Hash{}
	}
	var own *kafka.Transport
	if cfg.transport == nil {
		own = &kafka.Transport{}
		cfg.transport = own
	}
	if cfg.producer == KafkaProducerWriter {
		for k := range output.NumKinds {
			if cfg.kindCompressionSet[k] {
				return nil, fmt.Errorf("sinks: new kafka: compression for kind %s needs the direct producer", output.Kind(k))
			}
		}
	}
	for k := range output.NumKinds {
		if !cfg.kindCompressionSet[k] {
			cfg.kindCompression[k] = cfg.compression
		}
	}
	if cfg.producer == KafkaProducerDirect {
		k := &Kafka{cfg: cfg, own: own, prod: &producer{
			client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: cfg.transport, Timeout: cfg.writeTimeout},
			parts:  map[string]topicParts{},
		}}
		if cfg.reg != nil {
			if err := cfg.reg.Register(newKafkaCollector(cfg.name, k.prod.stats)); err != nil {
				return nil, fmt.Errorf("sinks: register kafka metrics: %w", err)
			}
		}
		return k, nil
	}
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Balancer:               cfg.balancer,
		MaxAttempts:            cfg.maxAttempts,
		WriteBackoffMin:        10 * time.Millisecond,
		WriteBackoffMax:        500 * time.Millisecond,
		BatchSize:              cfg.batchSize,
		BatchBytes:             cfg.batchBytes,
		BatchTimeout:           cfg.batchTimeout,
		WriteTimeout:           cfg.writeTimeout,
		RequiredAcks:           kafka.RequireAll,
		Compression:            cfg.compression,
		Transport:              cfg.transport,
		AllowAutoTopicCreation: cfg.autoCreate,
	}
	k := &Kafka{cfg: cfg, w: w, own: own}
	if cfg.reg != nil {
		if err := cfg.reg.Register(newKafkaCollector(cfg.name, writerStats(w))); err != nil {
			return nil, fmt.Errorf("sinks: register kafka metrics: %w", err)
		}
	}
	return k, nil
}

// Name returns the sink name ("kafka" unless set by WithKafkaName).
func (k *Kafka) Name() string { return k.cfg.name }

// WriteBatch writes the routed messages (one produce request per
// topic-partition, sent concurrently, or one WriteMessages call with the
// Writer) and returns once every one is acknowledged by all in-sync
// replicas. On partial failure it returns a *BatchError naming the failed
// messages; IsRetryable classifies it. Safe for concurrent use (the Writer
// batches across callers; the direct producer sends each call's records
// on their own).
func (k *Kafka) WriteBatch(ctx context.Context, msgs []output.Message) error {
	if k.closed.Load() {
		return output.ErrClosed
	}
	if k.prod != nil {
		return k.writeDirect(ctx, msgs)
	}
	kms := make([]kafka.Message, 0, len(msgs))
	idx := make([]int, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		topic := k.cfg.route.get(m.Kind)
		if topic == "" {
			continue
		}
		km := kafka.Message{Topic: topic, Key: m.Key, Value: m.Value}
		if m.ID != "" {
			km.Headers = []kafka.Header{{Key: output.HeaderID, Value: []byte(m.ID)}}
		}
		kms = append(kms, km)
		idx = append(idx, i)
	}
	if len(kms) == 0 {
		return nil
	}
	err := k.w.WriteMessages(ctx, kms...)
	if err == nil {
		return nil
	}
	be := &output.BatchError{Sink: k.cfg.name}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(kms) {
		for j, e := range we {
			if e != nil {
				be.Add(idx[j], fmt.Errorf("write message: %w", e))
			}
		}
		if len(be.Indices) > 0 {
			return be
		}
		return nil
	}
	if k.closed.Load() && errors.Is(err, io.ErrClosedPipe) {
		err = output.ErrClosed
	}
	for _, i := range idx {
		be.Add(i, fmt.Errorf("write messages: %w", err))
	}
	return be
}

// Close flushes and closes the Writer; later WriteBatch calls return
// ErrClosed. Idempotent.
func (k *Kafka) Close() error {
	if !k.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if k.w != nil {
		err = k.w.Close()
	}
	if k.own != nil {
		k.own.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("close kafka writer: %w", err)
	}
	return nil
}

// kafkaCollector turns the Writer's statistics (which reset on every read)
// into cumulative counters.
type kafkaCollector struct {
	stats func() [5]int64 // since the last call

	writes, messages, bytes, errors, retries *prometheus.Desc

	mu sync.Mutex
	st [5]float64
}

// writerStats reads w's statistics (which reset on every read).
func writerStats(w *kafka.Writer) func() [5]int64 {
	return func() [5]int64 {
		s := w.Stats()
		return [5]int64{s.Writes, s.Messages, s.Bytes, s.Errors, s.Retries}
	}
}

// stats returns the direct producer's statistics since the last call.
func (p *producer) stats() [5]int64 {
	return [5]int64{p.writes.Swap(0), p.messages.Swap(0), p.bytes.Swap(0), p.errors.Swap(0), p.retries.Swap(0)}
}

func newKafkaCollector(name string, stats func() [5]int64) *kafkaCollector {
	l := prometheus.Labels{"sink": name}
	d := func(n, help string) *prometheus.Desc {
		return prometheus.NewDesc("streamscore_sinks_kafka_"+n, help, nil, l)
	}
	return &kafkaCollector{
		stats:    stats,
		writes:   d("requests_total", "Produce requests sent by the Kafka producer."),
		messages: d("messages_total", "Messages written by the Kafka producer."),
		bytes:    d("written_bytes_total", "Message bytes written by the Kafka producer (before compression)."),
		errors:   d("errors_total", "Errors seen by the Kafka producer, retried ones included."),
		retries:  d("retries_total", "Produce request retries by the Kafka producer (each may duplicate records)."),
	}
}

func (c *kafkaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.writes
	ch <- c.messages
	ch <- c.bytes
	ch <- c.errors
	ch <- c.retries
}

func (c *kafkaCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	for i, v := range c.stats() {
		c.st[i] += float64(v)
	}
	st := c.st
	c.mu.Unlock()
	for i, d := range []*prometheus.Desc{c.writes, c.messages, c.bytes, c.errors, c.retries} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, st[i])
	}
}
