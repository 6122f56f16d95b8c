package checkpoint

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// DefaultKafkaTopic is the checkpoint topic NewKafka uses without
// WithKafkaTopic.
const DefaultKafkaTopic = "streamscore-checkpoints"

const (
	defaultChunkSize = 900 << 10 // fits the broker default max.message.bytes (1 MiB) with room for headers
	chunkOverhead    = 4 << 10   // record batch and record headers, key: kept free under max.message.bytes
	minChunkSize     = 1 << 10
	tombstoneBatch   = 500              // tombstones per produce request
	fetchMaxBytes    = 16 << 20         // one fetch response at most (a larger first batch still comes whole)
	scanFetchBytes   = 1 << 20          // one fetch response while looking for a manifest
	manifestVersion  = 1                // the manifest format written and understood
	maxManifestBytes = 64 << 20         // a manifest value larger than this is refused as corrupt
	defaultTimeout   = 30 * time.Second // one broker request
)

// Kafka is a Store on a compacted Kafka topic.
//
// # Records
//
// A checkpoint of key K (id = escaped group/topic/partition) written by one
// Put with a fresh random put id P is:
//
//	c/<id>/<P>/<seq>  one record per chunk of the blob (seq 0, 1, …), in order
//	m/<id>            the manifest, written last: the fingerprint, the input
//	                  offset, the blob's length and CRC-32C, and for every chunk
//	                  its Kafka offset, length and CRC-32C
//
// All records of K go to one partition of the checkpoint topic,
// (fnv32a(id without the partition) + partition) mod partitions, so the
// partitions of one input topic spread over distinct checkpoint partitions
// when the checkpoint topic has at least as many. A checkpoint exists once
// its manifest is acknowledged (acks=all); chunks without a manifest are
// never read. After the manifest, Put writes a tombstone for every chunk key
// of the manifest it superseded and for every orphan chunk it knows of
// (chunks of a Put that failed or crashed before its manifest). Compaction
// then keeps, per key, the newest manifest and its chunks only: chunk keys
// are unique per Put, so only their tombstones let compaction free them.
//
// # Restore
//
// Latest reads the key's checkpoint partition backwards from its end, in
// growing windows, until it meets the key's newest manifest, then reads the
// chunks at the offsets the manifest lists (compaction keeps offsets) and
// verifies each chunk and the whole. In the usual case (the manifest is the
// partition's last record) it reads the blob and the manifest and nothing
// else, compacted or not. A manifest whose chunks are missing or corrupt is
// skipped for the next older one (counted in Info.Skipped); if none is
// left, Latest returns ErrCorrupt.
//
// A store learns which chunks a new checkpoint supersedes from the scan of
// Latest, then from its own Puts and a forward read of what others appended
// since; the first Put or Delete of a key without a Latest before it scans
// back to the newest manifest (up to a few MB more than the tail).
//
// # Traps
//
// The partition of a key depends on the topic's partition count: never add
// partitions to the checkpoint topic (existing checkpoints would not be
// found; the members would start empty). Create a new topic instead.
type Kafka struct {
	cl        *kafka.Client
	own       *kafka.Transport // the transport NewKafka made (none given), closed with the store
	topic     string
	parts     int
	chunkSize int
	maxMsg    int

	mu     sync.Mutex
	keys   map[string]*keyState
	closed atomic.Bool
}

// keyState is what the store knows of one key's records in the log.
type keyState struct {
	mu      sync.Mutex // serialises Put, Latest and Delete of the key
	known   bool       // cur and garbage reflect the log (a scan or a Put of ours)
	cur     *manifest  // the newest manifest in the log; nil: none
	garbage []string   // live chunk keys that no manifest of cur references
	end     int64      // the log below end is reflected in cur and garbage
}

// manifest is the value of an m/<id> record.
type manifest struct {
	Version     int          `json:"v"`
	Group       string       `json:"group"`
	Topic       string       `json:"topic"`
	Partition   int          `json:"partition"`
	Fingerprint string       `json:"fingerprint"`
	Offset      int64        `json:"offset"`
	PutID       string       `json:"put_id"`
	Size        int64        `json:"size"`
	CRC         uint32       `json:"crc32c"`
	CreatedAt   time.Time    `json:"created_at"`
	Chunks      []chunkEntry `json:"chunks"`

	logOffset int64 // where the manifest record sits (read side only)
}

type chunkEntry struct {
	Offset int64  `json:"offset"` // Kafka offset of the chunk record
	Size   int    `json:"size"`
	CRC    uint32 `json:"crc32c"`
}

func (m *manifest) key() Key {
	return Key{Group: m.Group, Topic: m.Topic, Partition: m.Partition, Fingerprint: m.Fingerprint}
}

func (m *manifest) chunkKey(seq int) string { return chunkKey(m.key().id(), m.PutID, seq) }

func (m *manifest) chunkKeys() []string {
	ks := make([]string, len(m.Chunks))
	for i := range m.Chunks {
		ks[i] = m.chunkKey(i)
	}
	return ks
}

func manifestKey(id string) string { return "m/" + id }
func chunkPrefix(id string) string { return "c/" + id + "/" }
func chunkKey(id, putID string, seq int) string {
	return chunkPrefix(id) + putID + "/" + strconv.Itoa(seq)
}

// KafkaOption configures NewKafka.
type KafkaOption func(*kafkaConfig) error

type kafkaConfig struct {
	topic       string
	transport   kafka.RoundTripper
	dialer      *kafka.Dialer
	partitions  int
	replication int
	chunkSize   int
	create      bool
	timeout     time.Duration
}

func defaultKafkaConfig() kafkaConfig {
	return kafkaConfig{topic: DefaultKafkaTopic, partitions: 16, replication: -1, create: true, timeout: defaultTimeout}
}

// WithKafkaTopic sets the checkpoint topic (default DefaultKafkaTopic). Trap:
// every member of a group must use the same topic, and one topic may serve
// several groups (keys carry the group).
func WithKafkaTopic(topic string) KafkaOption {
	return func(c *kafkaConfig) error {
		if topic == "" {
			return errors.New("checkpoint: kafka topic is empty")
		}
		c.topic = topic
		return nil
	}
}

// WithKafkaTransport sets the kafka-go transport (TLS, SASL, dial hooks) of
// every request; the store does not close it. Default: a plain transport the
// store owns. Exclusive with WithKafkaDialer.
func WithKafkaTransport(t kafka.RoundTripper) KafkaOption {
	return func(c *kafkaConfig) error {
		if t == nil {
			return errors.New("checkpoint: nil kafka transport")
		}
		c.transport = t
		return nil
	}
}

// WithKafkaDialer takes TLS, SASL, client id and dial hook from a kafka-go
// Dialer (the one the pipeline's readers use) into a transport the store
// owns. Exclusive with WithKafkaTransport.
func WithKafkaDialer(d *kafka.Dialer) KafkaOption {
	return func(c *kafkaConfig) error {
		if d == nil {
			return errors.New("checkpoint: nil kafka dialer")
		}
		c.dialer = d
		return nil
	}
}

// WithKafkaPartitions sets the partition count of the checkpoint topic when
// NewKafka creates it (default 16; an existing topic keeps its own). Give it
// at least the input topic's partition count so each restore reads its own
// partition. Trap: never change it afterwards (see Kafka).
func WithKafkaPartitions(n int) KafkaOption {
	return func(c *kafkaConfig) error {
		if n < 1 || n > 10000 {
			return fmt.Errorf("checkpoint: kafka partitions %d: want 1 to 10000", n)
		}
		c.partitions = n
		return nil
	}
}

// WithKafkaReplicationFactor sets the replication factor of a topic NewKafka
// creates (default -1: the broker's default.replication.factor). Use 3 in
// production: the checkpoint is the only copy of the state.
func WithKafkaReplicationFactor(n int) KafkaOption {
	return func(c *kafkaConfig) error {
		if n != -1 && (n < 1 || n > 100) {
			return fmt.Errorf("checkpoint: kafka replication factor %d: want -1 or 1 to 100", n)
		}
		c.replication = n
		return nil
	}
}

// WithKafkaChunkSize sets the blob bytes per chunk record. Default: 900 KiB,
// lowered to the topic's max.message.bytes less 4 KiB when that is smaller.
// A size that does not fit the topic's max.message.bytes is an error of
// NewKafka. Trap: larger chunks need a matching max.message.bytes on the topic
// and fetch.max.bytes / replica.fetch.max.bytes on the brokers.
func WithKafkaChunkSize(n int) KafkaOption {
	return func(c *kafkaConfig) error {
		if n < minChunkSize || n > 64<<20 {
			return fmt.Errorf("checkpoint: kafka chunk size %d: want %d to %d bytes", n, minChunkSize, 64<<20)
		}
		c.chunkSize = n
		return nil
	}
}

// WithKafkaCreateTopic sets whether NewKafka creates a missing topic (default
// true, with cleanup.policy=compact). When false, a missing topic is an error:
// for clusters where topics are provisioned by their operators.
func WithKafkaCreateTopic(create bool) KafkaOption {
	return func(c *kafkaConfig) error {
		c.create = create
		return nil
	}
}

// WithKafkaTimeout bounds each broker request (default 30 s); a context
// deadline that is sooner wins.
func WithKafkaTimeout(d time.Duration) KafkaOption {
	return func(c *kafkaConfig) error {
		if d <= 0 {
			return fmt.Errorf("checkpoint: kafka timeout %v: want > 0", d)
		}
		c.timeout = d
		return nil
	}
}

// NewKafka opens the checkpoint topic on brokers, creating it compacted if
// it is missing (unless WithKafkaCreateTopic(false)). It returns
// ErrNotCompacted when the topic exists with a policy that deletes records
// (cleanup.policy=delete, or compact,delete with a finite retention).
func NewKafka(ctx context.Context, brokers []string, opts ...KafkaOption) (*Kafka, error) {
	cfg := defaultKafkaConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if len(brokers) == 0 {
		return nil, errors.New("checkpoint: no kafka brokers")
	}
	if cfg.transport != nil && cfg.dialer != nil {
		return nil, errors.New("checkpoint: WithKafkaTransport and WithKafkaDialer are exclusive")
	}
	s := &Kafka{topic: cfg.topic, keys: make(map[string]*keyState)}
	rt := cfg.transport
	if rt == nil {
		s.own = &kafka.Transport{ClientID: "streamscore-checkpoint"}
		if d := cfg.dialer; d != nil {
			s.own.Dial, s.own.DialTimeout, s.own.TLS, s.own.SASL = d.DialFunc, d.Timeout, d.TLS, d.SASLMechanism
			if d.ClientID != "" {
				s.own.ClientID = d.ClientID
			}
		}
		rt = s.own
	}
	s.cl = &kafka.Client{Addr: kafka.TCP(brokers...), Transport: rt, Timeout: cfg.timeout}
	if err := s.open(ctx, cfg); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// open finds or creates the topic and checks its configuration.
func (s *Kafka) open(ctx context.Context, cfg kafkaConfig) error {
	parts, err := s.partitionCount(ctx)
	if errors.Is(err, kafka.UnknownTopicOrPartition) && cfg.create {
		res, cerr := s.cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: s.topic, NumPartitions: cfg.partitions, ReplicationFactor: cfg.replication,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
		}}})
		if cerr != nil {
			return fmt.Errorf("create checkpoint topic %s: %w", s.topic, cerr)
		}
		if e := res.Errors[s.topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create checkpoint topic %s: %w", s.topic, e)
		}
		for range 50 { // metadata follows creation after a moment on real clusters
			if parts, err = s.partitionCount(ctx); err == nil || !errors.Is(err, kafka.UnknownTopicOrPartition) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("open checkpoint topic %s: %w", s.topic, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err != nil {
		return fmt.Errorf("open checkpoint topic %s: %w", s.topic, err)
	}
	s.parts = parts
	conf, err := s.topicConfig(ctx, "cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes")
	if err != nil {
		return err
	}
	if err := checkPolicy(s.topic, conf); err != nil {
		return err
	}
	s.maxMsg = 1048588 // Kafka's default, if the broker does not say
	if v, ok := conf["max.message.bytes"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("checkpoint topic %s: max.message.bytes %q is not a positive integer", s.topic, v)
		}
		s.maxMsg = n
	}
	switch {
	case cfg.chunkSize == 0:
		s.chunkSize = min(defaultChunkSize, s.maxMsg-chunkOverhead)
		if s.chunkSize < minChunkSize {
			return fmt.Errorf("checkpoint topic %s: max.message.bytes %d leaves no room for chunks", s.topic, s.maxMsg)
		}
	case cfg.chunkSize > s.maxMsg-chunkOverhead:
		return fmt.Errorf("checkpoint topic %s: chunk size %d does not fit max.message.bytes %d (less %d of headers)",
			s.topic, cfg.chunkSize, s.maxMsg, chunkOverhead)
	default:
		s.chunkSize = cfg.chunkSize
	}
	return nil
}

// checkPolicy refuses a topic that deletes records by age or size.
func checkPolicy(topic string, conf map[string]string) error {
	policy := strings.Split(strings.ReplaceAll(conf["cleanup.policy"], " ", ""), ",")
	if !slices.Contains(policy, "compact") {
		return fmt.Errorf("checkpoint topic %s has cleanup.policy=%q, want compact (it would delete the newest checkpoint of a partition once it is older than retention.ms): %w",
			topic, conf["cleanup.policy"], ErrNotCompacted)
	}
	if slices.Contains(policy, "delete") {
		if rm := conf["retention.ms"]; rm != "-1" {
			return fmt.Errorf("checkpoint topic %s has cleanup.policy=%q with retention.ms=%s: want compact alone, or retention.ms=-1: %w",
				topic, conf["cleanup.policy"], rm, ErrNotCompacted)
		}
		if rb := conf["retention.bytes"]; rb != "" && rb != "-1" {
			return fmt.Errorf("checkpoint topic %s has cleanup.policy=%q with retention.bytes=%s: want compact alone, or retention.bytes=-1: %w",
				topic, conf["cleanup.policy"], rb, ErrNotCompacted)
		}
	}
	return nil
}

func (s *Kafka) partitionCount(ctx context.Context) (int, error) {
	md, err := s.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{s.topic}})
	if err != nil {
		return 0, fmt.Errorf("read metadata: %w", err)
	}
	for _, t := range md.Topics {
		if t.Name != s.topic {
			continue
		}
		if t.Error != nil {
			return 0, t.Error
		}
		if len(t.Partitions) == 0 {
			return 0, kafka.UnknownTopicOrPartition
		}
		return len(t.Partitions), nil
	}
	return 0, kafka.UnknownTopicOrPartition
}

func (s *Kafka) topicConfig(ctx context.Context, names ...string) (map[string]string, error) {
	res, err := s.cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: s.topic, ConfigNames: names,
	}}})
	if err != nil {
		return nil, fmt.Errorf("describe checkpoint topic %s: %w", s.topic, err)
	}
	conf := make(map[string]string)
	for _, r := range res.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe checkpoint topic %s: %w", s.topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			conf[e.ConfigName] = e.ConfigValue
		}
	}
	return conf, nil
}

// Topic returns the checkpoint topic's name.
func (s *Kafka) Topic() string { return s.topic }

// ChunkSize returns the blob bytes per chunk record in use.
func (s *Kafka) ChunkSize() int { return s.chunkSize }

// Partition returns the checkpoint-topic partition that holds key's records.
func (s *Kafka) Partition(key Key) int { return partitionOf(key, s.parts) }

func partitionOf(key Key, parts int) int {
	h := fnv.New32a()
	io.WriteString(h, url.PathEscape(key.Group)+"/"+url.PathEscape(key.Topic))
	return int((h.Sum32() + uint32(key.Partition)) % uint32(parts))
}

func (s *Kafka) state(id string) *keyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[id]
	if ks == nil {
		ks = &keyState{}
		s.keys[id] = ks
	}
	return ks
}

// Put implements Store. It writes the chunks one produce request each
// (acks=all), then the manifest, then tombstones for the superseded chunks.
// The first Put of a key in a process that did not call Latest for it
// first reads the key's partition back to its newest manifest, to learn
// which chunks the new checkpoint supersedes.
func (s *Kafka) Put(ctx context.Context, key Key, offset int64, blob io.Reader) (Info, error) {
	start := time.Now()
	if err := checkPut(key, offset, blob); err != nil {
		return Info{}, err
	}
	if s.closed.Load() {
		return Info{}, ErrClosed
	}
	id := key.id()
	ks := s.state(id)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	part := s.Partition(key)
	var written int64
	if err := s.learn(ctx, key, ks); err != nil {
		return Info{}, fmt.Errorf("put checkpoint of %s: %w", key, err)
	}
	var pid [8]byte
	if _, err := rand.Read(pid[:]); err != nil {
		return Info{}, fmt.Errorf("put checkpoint of %s: make put id: %w", key, err)
	}
	m := &manifest{
		Version: manifestVersion, Group: key.Group, Topic: key.Topic, Partition: key.Partition,
		Fingerprint: key.Fingerprint, Offset: offset, PutID: hex.EncodeToString(pid[:]), CreatedAt: start.UTC(),
	}
	whole := crc32.New(castagnoli)
	buf := make([]byte, s.chunkSize)
	for seq := 0; ; seq++ {
		n, rerr := io.ReadFull(blob, buf)
		if n > 0 {
			whole.Write(buf[:n])
			ck := m.chunkKey(seq)
			off, err := s.produce(ctx, part, kafka.Record{Key: kafka.NewBytes([]byte(ck)), Value: kafka.NewBytes(buf[:n])})
			if err != nil {
				// The chunk may have been appended all the same: tombstone it
				// with the others after the next manifest.
				ks.garbage = append(ks.garbage, m.chunkKeys()...)
				ks.garbage = append(ks.garbage, ck)
				return Info{}, fmt.Errorf("put checkpoint of %s: write chunk %d: %w", key, seq, err)
			}
			written += int64(n)
			m.Chunks = append(m.Chunks, chunkEntry{Offset: off, Size: n, CRC: crc32.Checksum(buf[:n], castagnoli)})
			m.Size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			ks.garbage = append(ks.garbage, m.chunkKeys()...)
			return Info{}, fmt.Errorf("read checkpoint blob of %s: %w", key, rerr)
		}
	}
	m.CRC = whole.Sum32()
	mv, err := json.Marshal(m)
	if err != nil {
		return Info{}, fmt.Errorf("put checkpoint of %s: encode manifest: %w", key, err)
	}
	if len(mv) > s.maxMsg-chunkOverhead {
		ks.garbage = append(ks.garbage, m.chunkKeys()...)
		return Info{}, fmt.Errorf("put checkpoint of %s: manifest of %d chunks is %d bytes, over max.message.bytes %d: raise the chunk size",
			key, len(m.Chunks), len(mv), s.maxMsg)
	}
	last, err := s.produce(ctx, part, kafka.Record{Key: kafka.NewBytes([]byte(manifestKey(id))), Value: kafka.NewBytes(mv)})
	if err != nil {
		// If the manifest was appended after all, it is the newest; its
		// chunks are tombstoned once a later manifest supersedes it.
		ks.garbage = append(ks.garbage, m.chunkKeys()...)
		return Info{}, fmt.Errorf("put checkpoint of %s: write manifest: %w", key, err)
	}
	written += int64(len(mv))
	info := Info{Key: key, Offset: offset, Size: m.Size, Chunks: len(m.Chunks), CreatedAt: start}
	var dead []string
	if ks.cur != nil {
		dead = ks.cur.chunkKeys()
	}
	dead = append(dead, ks.garbage...)
	ks.cur, ks.garbage, ks.known, ks.end = m, nil, true, last+1
	n, tlast, err := s.tombstones(ctx, part, dead)
	written += n
	ks.end = max(ks.end, tlast+1)
	info.Transferred = written
	info.Duration = time.Since(start)
	if err != nil {
		ks.garbage = dead
		return info, fmt.Errorf("put checkpoint of %s: tombstone %d superseded chunks: %w: %w", key, len(dead), ErrCleanup, err)
	}
	return info, nil
}

// produce appends one record to the checkpoint partition and returns its
// offset.
func (s *Kafka) produce(ctx context.Context, part int, rec kafka.Record) (int64, error) {
	res, err := s.cl.Produce(ctx, &kafka.ProduceRequest{
		Topic: s.topic, Partition: part, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(rec),
	})
	if err != nil {
		return 0, err
	}
	if res.Error != nil {
		return 0, res.Error
	}
	for _, e := range res.RecordErrors {
		return 0, e
	}
	return res.BaseOffset, nil
}

// tombstones writes a null value for every key, in batches; it returns the
// key bytes written and the offset of the last tombstone (-1: none).
func (s *Kafka) tombstones(ctx context.Context, part int, keys []string) (int64, int64, error) {
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var n int64
	last := int64(-1)
	for len(keys) > 0 {
		batch := keys[:min(len(keys), tombstoneBatch)]
		keys = keys[len(batch):]
		recs := make([]kafka.Record, len(batch))
		for i, k := range batch {
			recs[i] = kafka.Record{Key: kafka.NewBytes([]byte(k))}
			n += int64(len(k))
		}
		res, err := s.cl.Produce(ctx, &kafka.ProduceRequest{
			Topic: s.topic, Partition: part, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil {
			return n, last, err
		}
		last = res.BaseOffset + int64(len(batch)) - 1
	}
	return n, last, nil
}

// Latest implements Store.
func (s *Kafka) Latest(ctx context.Context, key Key) (Checkpoint, bool, error) {
	start := time.Now()
	if err := key.Validate(); err != nil {
		return Checkpoint{}, false, err
	}
	if s.closed.Load() {
		return Checkpoint{}, false, ErrClosed
	}
	ks := s.state(key.id())
	ks.mu.Lock()
	defer ks.mu.Unlock()
	sc, err := s.scan(ctx, key, true)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %w", key, err)
	}
	ks.apply(sc)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s (%d manifests skipped): %w", key, sc.skipped, err)
	}
	if sc.chosen == nil {
		return Checkpoint{}, false, nil
	}
	m := sc.chosen
	if m.Fingerprint != key.Fingerprint {
		return Checkpoint{}, false, &MismatchError{Key: key, Stored: m.Fingerprint, Offset: m.Offset}
	}
	return Checkpoint{
		Info: Info{
			Key: key, Offset: m.Offset, Size: m.Size, Chunks: len(m.Chunks), CreatedAt: m.CreatedAt,
			Duration: time.Since(start), Transferred: sc.read, Skipped: sc.skipped,
		},
		Blob: sc.blob,
	}, true, nil
}

// Delete implements Store: a tombstone for the manifest, then for every
// chunk the store knows of.
func (s *Kafka) Delete(ctx context.Context, key Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	id := key.id()
	ks := s.state(id)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if err := s.learn(ctx, key, ks); err != nil {
		return fmt.Errorf("delete checkpoint of %s: %w", key, err)
	}
	part := s.Partition(key)
	if _, _, err := s.tombstones(ctx, part, []string{manifestKey(id)}); err != nil {
		return fmt.Errorf("delete checkpoint of %s: %w", key, err)
	}
	dead := ks.garbage
	if ks.cur != nil {
		dead = append(dead, ks.cur.chunkKeys()...)
	}
	ks.cur, ks.garbage, ks.known = nil, nil, false
	if _, _, err := s.tombstones(ctx, part, dead); err != nil {
		ks.garbage = dead
		return fmt.Errorf("delete checkpoint of %s: tombstone %d chunks: %w: %w", key, len(dead), ErrCleanup, err)
	}
	return nil
}

// Close implements Store; it closes the transport the store made.
func (s *Kafka) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.own != nil {
		s.own.CloseIdleConnections()
	}
	return nil
}

// scanResult is what a backward read of a key's partition found.
type scanResult struct {
	chosen  *manifest // the newest manifest that verified (or, without load, the newest); nil: none
	blob    []byte    // chosen's blob (load only)
	skipped int       // newer manifests that did not verify
	garbage []string  // live chunk keys chosen does not reference
	read    int64     // value bytes read
	end     int64     // the partition's end when the scan began
}

// apply takes a scan's findings into ks. What ks knew before is kept: a
// backward scan stops at the newest manifest and does not see older chunks
// that a failed cleanup left, or those of a manifest of ours that another
// writer superseded.
func (ks *keyState) apply(sc scanResult) {
	garbage := sc.garbage
	if ks.known {
		garbage = append(garbage, ks.garbage...)
		if ks.cur != nil && (sc.chosen == nil || ks.cur.PutID != sc.chosen.PutID) {
			garbage = append(garbage, ks.cur.chunkKeys()...)
		}
	}
	if sc.chosen != nil {
		used := make(map[string]bool, len(sc.chosen.Chunks))
		for _, k := range sc.chosen.chunkKeys() {
			used[k] = true
		}
		garbage = slices.DeleteFunc(garbage, func(k string) bool { return used[k] })
	}
	slices.Sort(garbage)
	ks.cur, ks.garbage, ks.known, ks.end = sc.chosen, slices.Compact(garbage), true, sc.end
}

// learn brings ks up to the end of the log before a write: a backward scan
// to the newest manifest when the store knows nothing of the key yet, else
// a forward read of the records appended since ks.end (cheap when nobody
// else wrote; it picks up another member's manifest and chunks, so their
// chunks are tombstoned once superseded).
func (s *Kafka) learn(ctx context.Context, key Key, ks *keyState) error {
	if ks.known {
		part := s.Partition(key)
		first, end, err := s.bounds(ctx, part)
		if err != nil {
			return err
		}
		if ks.end >= first {
			if ks.end >= end {
				return nil
			}
			return s.catchUp(ctx, key, ks, end)
		}
		// The log start moved past what we know (records deleted): rescan.
	}
	sc, err := s.scan(ctx, key, false)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return err
	}
	ks.apply(sc)
	return nil
}

// catchUp applies the key's records in [ks.end, end) to ks, in log order.
func (s *Kafka) catchUp(ctx context.Context, key Key, ks *keyState, end int64) error {
	id := key.id()
	recs, _, err := s.readRange(ctx, s.Partition(key), ks.end, end, manifestKey(id), chunkPrefix(id), scanFetchBytes)
	if err != nil {
		return err
	}
	pending := make(map[string]bool) // chunk keys met whose newest record is a value
	for _, r := range recs {
		if r.key == manifestKey(id) {
			if ks.cur != nil {
				ks.garbage = append(ks.garbage, ks.cur.chunkKeys()...)
			}
			ks.cur = nil
			if !r.tomb {
				if m, err := decodeManifest(r.val, key); err == nil {
					m.logOffset = r.off
					ks.cur = m
				}
			}
			continue
		}
		if r.tomb {
			delete(pending, r.key)
		} else {
			pending[r.key] = true
		}
	}
	used := make(map[string]bool)
	if ks.cur != nil {
		for _, k := range ks.cur.chunkKeys() {
			used[k] = true
		}
	}
	for k := range pending {
		if !used[k] {
			ks.garbage = append(ks.garbage, k)
		}
	}
	ks.garbage = slices.DeleteFunc(ks.garbage, func(k string) bool { return used[k] })
	ks.end = end
	return nil
}

// rec is one record of the scanned key.
type rec struct {
	off  int64
	key  string
	val  []byte
	tomb bool
}

// scan reads key's checkpoint partition backwards from its end until it
// finds the newest manifest of key that verifies (load) or the newest one
// (!load). A manifest key whose newest record is a tombstone means deleted.
func (s *Kafka) scan(ctx context.Context, key Key, load bool) (scanResult, error) {
	var sc scanResult
	id := key.id()
	part := s.Partition(key)
	first, end, err := s.bounds(ctx, part)
	if err != nil {
		return sc, err
	}
	sc.end = end
	mkey, cpre := manifestKey(id), chunkPrefix(id)
	seen := make(map[string]bool)  // chunk keys whose newest record was met
	live := make(map[string]int64) // chunk keys whose newest record is a value
	vals := make(map[int64]rec)    // chunk records by offset (load only)
	var cands []*manifest          // manifests met, newest first
	tried, deleted, metManifest := 0, false, false
	hi, w := end, int64(1)
	next := int64(-1)   // lower bound of the next window when chunks of a candidate are needed
	var nextBytes int64 // their bytes
	for hi > first && sc.chosen == nil && !deleted {
		// Scan windows fetch little at a time (the tail after a manifest is
		// tombstones); a candidate's chunks are fetched in responses sized
		// to them, so no response runs far past hi.
		lo, fetchMax := max(first, hi-w), int32(scanFetchBytes)
		if next >= 0 {
			lo, fetchMax, next = max(first, next), int32(min(fetchMaxBytes, nextBytes+scanFetchBytes)), -1
		} else {
			w *= 4
		}
		recs, n, err := s.readRange(ctx, part, lo, hi, mkey, cpre, fetchMax)
		sc.read += n
		if err != nil {
			return sc, err
		}
		for i := len(recs) - 1; i >= 0; i-- {
			r := recs[i]
			if r.key == mkey {
				if !metManifest && r.tomb {
					deleted = true
					break
				}
				metManifest = true
				if r.tomb {
					continue
				}
				m, err := decodeManifest(r.val, key)
				if err != nil {
					sc.skipped++
					continue
				}
				m.logOffset = r.off
				cands = append(cands, m)
				continue
			}
			if !seen[r.key] {
				seen[r.key] = true
				if !r.tomb {
					live[r.key] = r.off
				}
			}
			if load && !r.tomb {
				vals[r.off] = r
			}
		}
		hi = lo
		for tried < len(cands) && !deleted {
			m := cands[tried]
			if !load || m.Fingerprint != key.Fingerprint {
				sc.chosen = m // a mismatch is reported without reading its chunks
				break
			}
			low, need := m.logOffset, int64(0)
			for _, c := range m.Chunks {
				low = min(low, c.Offset)
				if c.Offset < hi {
					need += int64(c.Size)
				}
			}
			if low < hi && hi > first {
				next, nextBytes = low, need // read down to the first chunk, then try again
				break
			}
			tried++
			if blob, ok := assemble(m, vals); ok {
				sc.chosen, sc.blob = m, blob
				break
			}
			sc.skipped++
		}
	}
	// Candidates whose chunks lie before the log start are incomplete.
	if sc.chosen == nil && !deleted && load {
		sc.skipped += len(cands) - tried
	}
	used := make(map[string]bool)
	if sc.chosen != nil {
		for _, k := range sc.chosen.chunkKeys() {
			used[k] = true
		}
	}
	for k := range live {
		if !used[k] {
			sc.garbage = append(sc.garbage, k)
		}
	}
	slices.Sort(sc.garbage)
	if sc.chosen == nil && sc.skipped > 0 && !deleted {
		return sc, ErrCorrupt
	}
	return sc, nil
}

// assemble checks every chunk of m against the records read and returns
// the blob.
func assemble(m *manifest, vals map[int64]rec) ([]byte, bool) {
	blob := make([]byte, 0, m.Size)
	for i, c := range m.Chunks {
		r, ok := vals[c.Offset]
		if !ok || r.key != m.chunkKey(i) || len(r.val) != c.Size || crc32.Checksum(r.val, castagnoli) != c.CRC {
			return nil, false
		}
		blob = append(blob, r.val...)
	}
	if int64(len(blob)) != m.Size || crc32.Checksum(blob, castagnoli) != m.CRC {
		return nil, false
	}
	return blob, true
}

func decodeManifest(v []byte, key Key) (*manifest, error) {
	if len(v) > maxManifestBytes {
		return nil, fmt.Errorf("manifest of %d bytes", len(v))
	}
	var m manifest
	if err := json.NewDecoder(bytes.NewReader(v)).Decode(&m); err != nil {
		return nil, err
	}
	switch {
	case m.Version != manifestVersion:
		return nil, fmt.Errorf("manifest version %d, want %d", m.Version, manifestVersion)
	case m.Group != key.Group || m.Topic != key.Topic || m.Partition != key.Partition:
		return nil, fmt.Errorf("manifest of %s under the key of %s", m.key(), key)
	case m.Size < 0 || m.Offset < 0 || m.PutID == "":
		return nil, errors.New("manifest with a negative size or offset, or no put id")
	}
	return &m, nil
}

// bounds returns the partition's log start offset and high watermark.
func (s *Kafka) bounds(ctx context.Context, part int) (first, end int64, err error) {
	res, err := s.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		s.topic: {kafka.FirstOffsetOf(part), kafka.LastOffsetOf(part)},
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", s.topic, part, err)
	}
	for _, p := range res.Topics[s.topic] {
		if p.Partition != part {
			continue
		}
		if p.Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", s.topic, part, p.Error)
		}
		return p.FirstOffset, p.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets of %s/%d: partition missing from the answer", s.topic, part)
}

// readRange reads the records of [lo, hi) and returns those whose key is
// mkey or starts with cpre, in offset order, and the value bytes read.
func (s *Kafka) readRange(ctx context.Context, part int, lo, hi int64, mkey, cpre string, maxBytes int32) ([]rec, int64, error) {
	var out []rec
	var read int64
	for off, empty := lo, 0; off < hi; {
		res, err := s.cl.Fetch(ctx, &kafka.FetchRequest{
			Topic: s.topic, Partition: part, Offset: off, MinBytes: 1, MaxBytes: int64(maxBytes), MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return nil, read, fmt.Errorf("fetch %s/%d at %d: %w", s.topic, part, off, err)
		}
		if res.Error != nil {
			return nil, read, fmt.Errorf("fetch %s/%d at %d: %w", s.topic, part, off, res.Error)
		}
		next, err := readRecords(res.Records, off, hi, mkey, cpre, &out, &read)
		if err != nil {
			return nil, read, fmt.Errorf("fetch %s/%d at %d: %w", s.topic, part, off, err)
		}
		if next == off {
			if empty++; empty == 3 {
				return nil, read, fmt.Errorf("fetch %s/%d at %d: no records below the high watermark %d", s.topic, part, off, hi)
			}
			continue
		}
		empty, off = 0, next
	}
	return out, read, nil
}

// readRecords appends the records of one fetch response in [off, hi) that
// belong to the key to out, and returns the offset after the last record.
func readRecords(rr kafka.RecordReader, off, hi int64, mkey, cpre string, out *[]rec, read *int64) (int64, error) {
	if c, ok := rr.(io.Closer); ok {
		defer c.Close()
	}
	next := off
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			return next, nil
		}
		if err != nil {
			return next, fmt.Errorf("read record: %w", err)
		}
		next = max(next, r.Offset+1)
		if r.Offset < off || r.Offset >= hi {
			continue
		}
		k, err := readBytes(r.Key)
		if err != nil {
			return next, fmt.Errorf("read key at %d: %w", r.Offset, err)
		}
		ks := string(k)
		if ks != mkey && !strings.HasPrefix(ks, cpre) {
			if r.Value != nil {
				*read += int64(r.Value.Len())
			}
			continue
		}
		v, err := readBytes(r.Value)
		if err != nil {
			return next, fmt.Errorf("read value at %d: %w", r.Offset, err)
		}
		*read += int64(len(v))
		*out = append(*out, rec{off: r.Offset, key: ks, val: v, tomb: r.Value == nil})
	}
}

func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	v := make([]byte, b.Len())
	_, err := io.ReadFull(b, v)
	return v, err
}
