// Package local starts an in-process Kafka-protocol broker (franz-go's kfake)
// and a NATS server with JetStream, both on loopback, for `streamscore demo`
// and for tests that need the real protocols without installed servers.
//
// # Concepts
//
// Kafka is a kfake cluster: it speaks the Kafka wire protocol, so kafka-go,
// kcat and librdkafka clients talk to it as to a broker; it keeps everything
// in memory, unless given a data directory (WithDataDir), from which
// Restart brings it back as a restarted broker. NATS is a real nats-server (the Go module) with JetStream on a
// temporary store directory. Neither is meant for production data.
//
// # Concurrency
//
// The returned values are safe for concurrent use; Close is idempotent.
package local

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka is an in-process Kafka-protocol cluster.
type Kafka struct {
	mu      sync.Mutex // guards cluster, replaced by Restart (held while it is down)
	cluster *kfake.Cluster
	addrs   []string    // the listen addresses, the same after a restart
	opts    []kfake.Opt // the cluster's options, for Restart
	dataDir string
	once    sync.Once
	quit    chan struct{}
	wg      sync.WaitGroup
}

// KafkaOption configures StartKafka.
type KafkaOption func(*kafkaConfig)

type kafkaConfig struct {
	retentionBytes int64
	topicRetention map[string]int64 // per topic, over retentionBytes
	every          time.Duration
	tls            *tls.Config
	sasl           []kfake.Opt
	dataDir        string
}

// WithDataDir makes the cluster keep its state in dir — topics, records,
// committed offsets, group members and their sessions — written as it goes
// and on Close, so that Restart brings the broker back with its data, as a
// real broker restarts from its log directory. dir is created if needed;
// a cluster started on a dir that holds state reloads it (and does not
// create the topics again). Default: memory only, and Restart refuses. The
// trap: writes go through the page cache, not fsync, which a restart does
// not notice but a machine crash would.
func WithDataDir(dir string) KafkaOption {
	return func(c *kafkaConfig) { c.dataDir = dir }
}

// WithTLS makes the cluster's listener TLS with cfg: its Certificates, and
// ClientAuth with ClientCAs for mutual TLS. Default: plaintext. The trap:
// the helpers of this package (EndOffsets, ReadAll, ...) speak plaintext
// only; read a TLS cluster with a client configured for it.
func WithTLS(cfg *tls.Config) KafkaOption {
	return func(c *kafkaConfig) { c.tls = cfg }
}

// WithSASLUser makes the cluster require SASL authentication and adds a
// superuser with the mechanism ("PLAIN", "SCRAM-SHA-256" or
// "SCRAM-SHA-512"); give it once per user and mechanism. Default: no
// authentication. The trap: as with WithTLS, this package's helpers do not
// authenticate.
func WithSASLUser(mechanism, user, pass string) KafkaOption {
	return func(c *kafkaConfig) {
		if len(c.sasl) == 0 {
			c.sasl = append(c.sasl, kfake.EnableSASL())
		}
		c.sasl = append(c.sasl, kfake.Superuser(mechanism, user, pass))
	}
}

// WithRetentionBytes bounds the memory of the cluster: every 5s, the oldest
// records of each partition beyond n bytes are deleted (Kafka's
// log.retention.bytes, enforced by segment). Default: keep everything.
func WithRetentionBytes(n int64) KafkaOption {
	return func(c *kafkaConfig) { c.retentionBytes, c.every = n, 5*time.Second }
}

// WithTopicRetentionBytes bounds topic's partitions at n bytes each, as
// WithRetentionBytes does every topic (over it for this one): an output
// topic nothing reads back can keep little. The topic is created with
// retention.bytes set; one that exists already (reloaded from a
// WithDataDir directory) is left as it is.
func WithTopicRetentionBytes(topic string, n int64) KafkaOption {
	return func(c *kafkaConfig) {
		if c.topicRetention == nil {
			c.topicRetention = map[string]int64{}
		}
		c.topicRetention[topic] = n
		if c.every == 0 {
			c.every = 5 * time.Second
		}
	}
}

// segmentBytes is the log segment size of the embedded broker. kfake keeps
// segments in growing in-memory buffers, so the 100 MiB default costs
// gigabytes of copying under load; small segments also let retention work.
const segmentBytes = 8 << 20

// StartKafka starts a one-broker kfake cluster on a random loopback port with
// the given topics (name -> partitions) created.
func StartKafka(topics map[string]int, kopts ...KafkaOption) (*Kafka, error) {
	var kc kafkaConfig
	for _, o := range kopts {
		o(&kc)
	}
	bcfg := map[string]string{"log.segment.bytes": fmt.Sprint(segmentBytes)}
	if kc.retentionBytes > 0 {
		bcfg["log.retention.bytes"] = fmt.Sprint(kc.retentionBytes)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.BrokerConfigs(bcfg)}
	if kc.tls != nil {
		opts = append(opts, kfake.TLS(kc.tls))
	}
	opts = append(opts, kc.sasl...)
	if kc.dataDir != "" {
		opts = append(opts, kfake.DataDir(kc.dataDir))
	}
	byCount := map[int][]string{}
	for t, n := range topics {
		if n < 1 {
			return nil, fmt.Errorf("local: topic %q: %d partitions", t, n)
		}
		if _, own := kc.topicRetention[t]; own {
			continue // created below, with its retention
		}
		byCount[n] = append(byCount[n], t)
	}
	counts := make([]int, 0, len(byCount))
	for n := range byCount {
		counts = append(counts, n)
	}
	sort.Ints(counts)
	for _, n := range counts {
		opts = append(opts, kfake.SeedTopics(int32(n), byCount[n]...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start kfake cluster: %w", err)
	}
	for t, n := range kc.topicRetention {
		parts, ok := topics[t]
		if !ok || c.TopicInfo(t) != nil { // not asked for, or reloaded from the data dir
			continue
		}
		if err := c.CreateTopic(t, int32(parts), map[string]string{"retention.bytes": strconv.FormatInt(n, 10)}); err != nil {
			c.Close()
			return nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	k := &Kafka{cluster: c, addrs: c.ListenAddrs(), opts: opts, dataDir: kc.dataDir, quit: make(chan struct{})}
	if kc.every > 0 {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			t := time.NewTicker(kc.every)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					k.current().ApplyRetention()
				case <-k.quit:
					return
				}
			}
		}()
	}
	return k, nil
}

// FailProduce makes the cluster drop the connection of every Produce
// request until until is closed: a Kafka sink outage (writers see
// connection errors and retry) while fetches, commits and metadata keep
// working. For fault-injection tests.
func (k *Kafka) FailProduce(until <-chan struct{}) {
	c := k.current()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-until:
			c.DropControl()
			return nil, nil, false
		default:
			c.KeepControl()
			return nil, errors.New("local: injected produce outage"), true
		}
	})
}

// Brokers returns the host:port addresses of the cluster.
func (k *Kafka) Brokers() []string { return slices.Clone(k.addrs) }

func (k *Kafka) current() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// Restart restarts the broker as an operator would: the cluster is shut
// down (its state saved to the WithDataDir directory, every client
// connection closed, its ports refusing connections) and, after down, a new
// cluster starts on the same ports from that directory, with the records,
// the committed offsets and the group members whose session has not expired
// meanwhile (a member whose session expired must join again, in a new
// generation). Controls set before (FailProduce) do not survive it. It
// fails without WithDataDir, or if a port was taken meanwhile. While the
// broker is down, the other methods but Brokers wait for it.
func (k *Kafka) Restart(down time.Duration) error {
	if k.dataDir == "" {
		return errors.New("local: restart of a cluster without a data dir")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var ports []int
	for _, a := range k.addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("restart kfake cluster: %w", err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("restart kfake cluster: port of %s: %w", a, err)
		}
		ports = append(ports, n)
	}
	k.cluster.Close()
	time.Sleep(down)
	c, err := kfake.NewCluster(append(slices.Clip(k.opts), kfake.Ports(ports...))...)
	if err != nil {
		return fmt.Errorf("restart kfake cluster: %w", err)
	}
	k.cluster = c
	return nil
}

// Close shuts the cluster down. It is idempotent.
func (k *Kafka) Close() {
	k.once.Do(func() {
		close(k.quit)
		k.wg.Wait()
		k.current().Close()
	})
}

// NATS is an in-process NATS server with JetStream.
type NATS struct {
	srv   *server.Server
	dir   string
	owned bool
	once  sync.Once
}

// StartNATS starts a NATS server with JetStream on a random loopback port.
// storeDir holds JetStream's files; if empty, a temporary directory is made
// and removed by Close.
func StartNATS(storeDir string) (*NATS, error) {
	n := &NATS{dir: storeDir}
	if storeDir == "" {
		d, err := os.MkdirTemp("", "streamscore-nats-")
		if err != nil {
			return nil, fmt.Errorf("make nats store dir: %w", err)
		}
		n.dir, n.owned = d, true
	}
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  n.dir,
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		n.cleanup()
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		n.cleanup()
		return nil, errors.New("local: nats server not ready after 10s")
	}
	n.srv = srv
	return n, nil
}

// URL returns the client URL of the server (nats://127.0.0.1:port).
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Close shuts the server down and removes a temporary store. Idempotent.
func (n *NATS) Close() {
	n.once.Do(func() {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.cleanup()
	})
}

func (n *NATS) cleanup() {
	if n.owned {
		os.RemoveAll(n.dir)
	}
}

// newClient returns a client of brokers with a transport of its own, and a
// function that closes the transport's connections (kafka-go's default
// transport keeps them, and their goroutines, for the life of the process).
func newClient(brokers []string) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// EndOffsets returns the end offset (one past the last message) of every
// partition of topic.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	cl, done := newClient(brokers)
	defer done()
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("fetch metadata: %w", err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, fmt.Errorf("fetch metadata of %q: %v", topic, md.Topics)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := map[int]int64{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out, nil
}

// CommittedOffsets returns the offsets group has committed for every
// partition of topic (-1 where none).
func CommittedOffsets(ctx context.Context, brokers []string, group, topic string) (map[int]int64, error) {
	ends, err := EndOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	parts := make([]int, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	cl, done := newClient(brokers)
	defer done()
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets: %w", err)
	}
	out := map[int]int64{}
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		// A group that never committed (or has not joined yet) has no offsets.
		for _, p := range parts {
			out[p] = -1
		}
		return out, nil
	}
	if res.Error != nil {
		return nil, fmt.Errorf("fetch committed offsets: %w", res.Error)
	}
	for _, po := range res.Topics[topic] {
		out[po.Partition] = po.CommittedOffset
	}
	return out, nil
}

// ReadAll reads every message of topic present when it is called, from all
// partitions, without a consumer group.
func ReadAll(ctx context.Context, brokers []string, topic string) ([]kafka.Message, error) {
	ends, err := EndOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	for p, end := range ends {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 2 * time.Second,
		})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out, nil
}

// Connect connects a NATS client to url with settings suited to a sink:
// unlimited reconnects and a large reconnect buffer.
func Connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}
