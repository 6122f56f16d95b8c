package checkpoint_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

func startKafka(t testing.TB, brokers int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newKafka(t testing.TB, c *kfake.Cluster, opts ...checkpoint.KafkaOption) *checkpoint.Kafka {
	t.Helper()
	s, err := checkpoint.NewKafka(context.Background(), c.ListenAddrs(), opts...)
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestKafkaConformance(t *testing.T) {
	// Three brokers: produce, fetch and list-offsets requests must reach
	// each checkpoint partition's leader.
	runConformance(t, func(t *testing.T) target {
		c := startKafka(t, 3)
		s := newKafka(t, c, checkpoint.WithKafkaChunkSize(64<<10), checkpoint.WithKafkaPartitions(4))
		return target{
			store: s, big: 300 << 10, chunked: true,
			crash: func(t *testing.T, key checkpoint.Key, blob []byte) {
				if _, err := s.PutChunksOnly(context.Background(), key, blob); err != nil {
					t.Fatalf("write chunks without a manifest: %v", err)
				}
			},
		}
	})
}

// TestKafkaTopic: the topic NewKafka creates is compacted (kfake keeps the
// configs given to CreateTopics), and an existing topic that deletes records
// or cannot hold a chunk is refused.
func TestKafkaTopic(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		existing  map[string]string // configs of a topic created before NewKafka; nil: none
		opts      []checkpoint.KafkaOption
		wantErr   error  // errors.Is
		wantText  string // in the error, when wantErr is nil and an error is expected
		wantChunk int
	}{
		{name: "created", wantChunk: 900 << 10},
		{name: "existing-compact", existing: map[string]string{"cleanup.policy": "compact"}, wantChunk: 900 << 10},
		{name: "existing-delete", existing: map[string]string{}, wantErr: checkpoint.ErrNotCompacted},
		{name: "existing-explicit-delete", existing: map[string]string{"cleanup.policy": "delete"}, wantErr: checkpoint.ErrNotCompacted},
		{name: "compact-delete-finite", existing: map[string]string{"cleanup.policy": "compact,delete"}, wantErr: checkpoint.ErrNotCompacted},
		{name: "compact-delete-infinite", existing: map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "-1"}, wantChunk: 900 << 10},
		{name: "compact-delete-bytes", existing: map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "-1", "retention.bytes": "1000000"}, wantErr: checkpoint.ErrNotCompacted},
		{name: "small-max-message", existing: map[string]string{"cleanup.policy": "compact", "max.message.bytes": "65536"}, wantChunk: 65536 - 4096},
		{name: "chunk-too-big", existing: map[string]string{"cleanup.policy": "compact", "max.message.bytes": "65536"},
			opts: []checkpoint.KafkaOption{checkpoint.WithKafkaChunkSize(900 << 10)}, wantText: "does not fit max.message.bytes"},
		{name: "missing-no-create", opts: []checkpoint.KafkaOption{checkpoint.WithKafkaCreateTopic(false)}, wantErr: kafka.UnknownTopicOrPartition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startKafka(t, 1)
			const topic = "ckpt"
			if tc.existing != nil {
				if err := c.CreateTopic(topic, 2, tc.existing); err != nil {
					t.Fatalf("create topic: %v", err)
				}
			}
			opts := append([]checkpoint.KafkaOption{checkpoint.WithKafkaTopic(topic), checkpoint.WithKafkaPartitions(5)}, tc.opts...)
			s, err := checkpoint.NewKafka(ctx, c.ListenAddrs(), opts...)
			if tc.wantErr != nil || tc.wantText != "" {
				if err == nil {
					s.Close()
					t.Fatal("NewKafka: no error")
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantText) {
					t.Fatalf("NewKafka: %v, want %v %q", err, tc.wantErr, tc.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewKafka: %v", err)
			}
			defer s.Close()
			if got := s.ChunkSize(); got != tc.wantChunk {
				t.Fatalf("chunk size %d, want %d", got, tc.wantChunk)
			}
			ti := c.TopicInfo(topic)
			if ti == nil {
				t.Fatal("topic missing")
			}
			if v := ti.Configs["cleanup.policy"]; v == nil || !strings.Contains(*v, "compact") {
				t.Fatalf("topic configs %v: want cleanup.policy compact", ti.Configs)
			}
			// A blob of several chunks fits the topic's max.message.bytes.
			key := checkpoint.Key{Group: "g", Topic: "t", Partition: 3, Fingerprint: "f"}
			blob := randBlob(1, 3*s.ChunkSize()+17)
			if _, err := s.Put(ctx, key, 9, bytes.NewReader(blob)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			cp, found, err := s.Latest(ctx, key)
			if err != nil || !found || !bytes.Equal(cp.Blob, blob) || cp.Chunks != 4 {
				t.Fatalf("Latest: found %v, err %v, chunks %d, equal %v", found, err, cp.Chunks, bytes.Equal(cp.Blob, blob))
			}
		})
	}
	t.Run("created-partitions", func(t *testing.T) {
		c := startKafka(t, 1)
		newKafka(t, c, checkpoint.WithKafkaPartitions(7))
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		md, err := (&kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{checkpoint.DefaultKafkaTopic}})
		if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 7 {
			t.Fatalf("metadata: %v %+v, want one topic of 7 partitions", err, md)
		}
	})
}

// writeRaw appends messages to the default checkpoint topic of a cluster
// whose topic has one partition, as another writer would.
func writeRaw(t *testing.T, c *kfake.Cluster, msgs ...kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr: kafka.TCP(c.ListenAddrs()...), Topic: checkpoint.DefaultKafkaTopic, Transport: tr,
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
	}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("write raw records: %v", err)
	}
}

// liveKeys returns the key's records whose newest record is a value, as
// compaction would keep them (tombstones aside).
func liveKeys(t *testing.T, s *checkpoint.Kafka, key checkpoint.Key) (live map[string]bool, values, tombstones int) {
	t.Helper()
	recs, err := s.RawRecords(context.Background(), key)
	if err != nil {
		t.Fatalf("raw records: %v", err)
	}
	live = make(map[string]bool)
	for _, r := range recs {
		if r.Tombstone {
			delete(live, r.Key)
			tombstones++
		} else {
			live[r.Key] = true
			values++
		}
	}
	return live, values, tombstones
}

// TestKafkaCompaction: after any sequence of Puts, crashed Puts, failed
// Puts and a change of writer, the only live keys of a partition's
// checkpoint are its newest manifest and that manifest's chunks: every
// older chunk has a tombstone, so compaction (kfake compacts) leaves one
// checkpoint per partition, which still restores.
func TestKafkaCompaction(t *testing.T) {
	ctx := context.Background()
	c := startKafka(t, 1)
	opts := []checkpoint.KafkaOption{checkpoint.WithKafkaChunkSize(16 << 10), checkpoint.WithKafkaPartitions(1)}
	first := newKafka(t, c, opts...)
	key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 2, Fingerprint: "f1"}
	other := checkpoint.Key{Group: "g", Topic: "tx", Partition: 3, Fingerprint: "f1"} // same checkpoint partition
	wantLive := func(s *checkpoint.Kafka, chunks int) {
		t.Helper()
		live, _, _ := liveKeys(t, s, key)
		if !live[checkpoint.ManifestKey(key)] || len(live) != chunks+1 {
			t.Fatalf("live keys %v: want the manifest and %d chunks", live, chunks)
		}
	}
	put := func(s *checkpoint.Kafka, k checkpoint.Key, off int64, blob []byte) {
		t.Helper()
		if _, err := s.Put(ctx, k, off, bytes.NewReader(blob)); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	put(first, key, 1, randBlob(1, 70<<10)) // 5 chunks
	put(first, other, 1, randBlob(2, 20<<10))
	put(first, key, 2, randBlob(3, 40<<10)) // 3 chunks
	wantLive(first, 3)
	// In-process failure midway: its chunks are tombstoned by the next Put.
	if _, err := first.Put(ctx, key, 3, &cancelReader{r: bytes.NewReader(randBlob(4, 60<<10)), after: 1 << 30}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	wantLive(first, 4)
	broken := bytes.NewReader(randBlob(5, 50<<10))
	if _, err := first.Put(ctx, key, 4, &limitErrReader{r: broken, n: 40 << 10}); err == nil {
		t.Fatal("Put with a failing reader: no error")
	}
	// A writer killed between chunks, then a new member takes over.
	if _, err := first.PutChunksOnly(ctx, key, randBlob(6, 100<<10)); err != nil {
		t.Fatal(err)
	}
	second := newKafka(t, c, opts...)
	if cp, found, err := second.Latest(ctx, key); err != nil || !found || cp.Offset != 3 {
		t.Fatalf("Latest on the new member: offset %d, found %v, err %v; want offset 3", cp.Offset, found, err)
	}
	put(second, key, 5, randBlob(7, 30<<10)) // 2 chunks
	wantLive(second, 2)
	// The old member writes again (the partition came back to it): it
	// learns the other member's records first and supersedes them too.
	put(first, key, 6, randBlob(8, 50<<10)) // 4 chunks
	wantLive(first, 4)
	put(first, other, 2, randBlob(9, 20<<10))

	c.Compact()
	live, values, _ := liveKeys(t, first, key)
	if values != len(live) || len(live) != 5 {
		t.Fatalf("after compaction: %d value records, live keys %v; want the manifest and 4 chunks only", values, live)
	}
	third := newKafka(t, c, opts...)
	for _, tc := range []struct {
		k    checkpoint.Key
		off  int64
		blob []byte
	}{{key, 6, randBlob(8, 50<<10)}, {other, 2, randBlob(9, 20<<10)}} {
		cp, found, err := third.Latest(ctx, tc.k)
		if err != nil || !found || cp.Offset != tc.off || !bytes.Equal(cp.Blob, tc.blob) {
			t.Fatalf("Latest %s after compaction: offset %d, found %v, err %v; want offset %d", tc.k, cp.Offset, found, err, tc.off)
		}
	}
	// Delete leaves no live key.
	if err := third.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if live, _, _ := liveKeys(t, third, key); len(live) != 0 {
		t.Fatalf("after Delete: live keys %v", live)
	}
}

// TestKafkaCorruptFallsBack: a manifest whose chunks were lost falls back
// to the previous complete checkpoint while it is in the log, and reports
// ErrCorrupt once none is left.
func TestKafkaCorruptFallsBack(t *testing.T) {
	ctx := context.Background()
	c := startKafka(t, 1)
	s := newKafka(t, c, checkpoint.WithKafkaChunkSize(16<<10), checkpoint.WithKafkaPartitions(1))
	key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 0, Fingerprint: "f"}
	old := randBlob(1, 40<<10)
	if _, err := s.Put(ctx, key, 10, bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	// A foreign writer (out of contract) tombstones the newest chunks.
	if _, err := s.Put(ctx, key, 20, bytes.NewReader(randBlob(2, 40<<10))); err != nil {
		t.Fatal(err)
	}
	live, _, _ := liveKeys(t, s, key)
	var dead []kafka.Message
	for k := range live {
		if strings.HasPrefix(k, checkpoint.ChunkPrefix(key)) {
			dead = append(dead, kafka.Message{Key: []byte(k)})
		}
	}
	writeRaw(t, c, dead...)
	// Compaction leaves the last batch (the active segment) alone, and
	// only records before it are superseded: close it with another key.
	writeRaw(t, c, kafka.Message{Key: []byte("filler"), Value: []byte("x")})
	c.Compact() // removes the newest chunks; the old ones had tombstones too
	reader := newKafka(t, c, checkpoint.WithKafkaPartitions(1))
	_, found, err := reader.Latest(ctx, key)
	if !errors.Is(err, checkpoint.ErrCorrupt) || found {
		t.Fatalf("Latest with every chunk compacted away: found %v, err %v; want ErrCorrupt", found, err)
	}

	// Before compaction the older checkpoint is still there: a newest
	// manifest that does not verify, or does not decode, is skipped for it.
	c2 := startKafka(t, 1)
	s2 := newKafka(t, c2, checkpoint.WithKafkaChunkSize(16<<10), checkpoint.WithKafkaPartitions(1))
	newer := randBlob(2, 40<<10)
	for i, b := range [][]byte{old, newer} {
		if _, err := s2.Put(ctx, key, int64(10*(i+1)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	forged := `{"v":1,"group":"g","topic":"tx","partition":0,"fingerprint":"f","offset":30,"put_id":"dead","size":10,"crc32c":1,"chunks":[{"offset":0,"size":10,"crc32c":1}]}`
	for i, v := range []string{forged, "{not json"} {
		writeRaw(t, c2, kafka.Message{Key: []byte(checkpoint.ManifestKey(key)), Value: []byte(v)})
		cp, found, err := newKafka(t, c2, checkpoint.WithKafkaPartitions(1)).Latest(ctx, key)
		if err != nil || !found || cp.Offset != 20 || !bytes.Equal(cp.Blob, newer) || cp.Skipped != i+1 {
			t.Fatalf("Latest under %d bad manifests: offset %d, skipped %d, found %v, err %v; want offset 20", i+1, cp.Offset, cp.Skipped, found, err)
		}
	}
	writeRaw(t, c2, kafka.Message{Key: []byte("filler"), Value: []byte("x")})
	c2.Compact() // the bad manifest is now the only one
	if _, found, err := newKafka(t, c2, checkpoint.WithKafkaPartitions(1)).Latest(ctx, key); !errors.Is(err, checkpoint.ErrCorrupt) || found {
		t.Fatalf("Latest under an undecodable manifest alone: found %v, err %v; want ErrCorrupt", found, err)
	}
}

// TestKafkaSharedPartition: keys sharing a checkpoint partition restore
// each their own; the key written last reads little more than its blob.
func TestKafkaSharedPartition(t *testing.T) {
	ctx := context.Background()
	c := startKafka(t, 1)
	s := newKafka(t, c, checkpoint.WithKafkaChunkSize(32<<10), checkpoint.WithKafkaPartitions(1))
	keys := make([]checkpoint.Key, 4)
	for p := range keys {
		keys[p] = checkpoint.Key{Group: "g", Topic: "tx", Partition: p, Fingerprint: "f"}
	}
	for round := range 3 {
		for p, k := range keys {
			if _, err := s.Put(ctx, k, int64(round), bytes.NewReader(randBlob(uint64(10*round+p), 200<<10))); err != nil {
				t.Fatal(err)
			}
		}
	}
	reader := newKafka(t, c, checkpoint.WithKafkaPartitions(1))
	for p, k := range keys {
		cp, found, err := reader.Latest(ctx, k)
		if err != nil || !found || cp.Offset != 2 || !bytes.Equal(cp.Blob, randBlob(uint64(20+p), 200<<10)) {
			t.Fatalf("Latest %s: offset %d, found %v, err %v", k, cp.Offset, found, err)
		}
		t.Logf("%s: %d blob bytes, %d bytes read", k, cp.Size, cp.Transferred)
		if p == len(keys)-1 && cp.Transferred > cp.Size+4096 {
			t.Fatalf("the key written last read %d bytes for a blob of %d", cp.Transferred, cp.Size)
		}
	}
}

// TestKafkaPartitionOf pins the checkpoint partition of a key: changing it
// would make every member miss every existing checkpoint.
func TestKafkaPartitionOf(t *testing.T) {
	k := func(g, topic string, p int) checkpoint.Key {
		return checkpoint.Key{Group: g, Topic: topic, Partition: p, Fingerprint: "x"}
	}
	for _, tc := range []struct {
		key   checkpoint.Key
		parts int
		want  int
	}{
		// (fnv32a("<group>/<topic>", both path-escaped) + partition) mod parts
		{k("scoring", "transactions", 0), 16, 2},
		{k("scoring", "transactions", 5), 7, 4},
		{k("g/1", "t", 1), 16, 8},
		{k("other", "transactions", 0), 16, 11},
		{k("other", "transactions", 0), 1, 0},
	} {
		if got := checkpoint.PartitionOf(tc.key, tc.parts); got != tc.want {
			t.Fatalf("PartitionOf(%s, %d) = %d, want %d", tc.key, tc.parts, got, tc.want)
		}
	}
	// The partitions of one input topic land on distinct checkpoint
	// partitions when there are at least as many.
	seen := make(map[int]bool)
	for p := range 16 {
		cp := checkpoint.PartitionOf(k("scoring", "transactions", p), 16)
		if seen[cp] {
			t.Fatalf("input partition %d shares checkpoint partition %d", p, cp)
		}
		seen[cp] = true
	}
	if got := checkpoint.ID(k("a/b", "c d", 3)); got != "a%2Fb/c%20d/3" {
		t.Fatalf("ID = %q", got)
	}
}

// TestKafkaSizes measures Put and restore (Latest from a fresh store, as a
// member that was just assigned the partition) of 10 and 50 MB checkpoints
// on the embedded broker, with the default chunk size.
func TestKafkaSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 120 MB to the embedded broker")
	}
	ctx := context.Background()
	for _, mb := range []int{10, 50} {
		t.Run(fmt.Sprintf("%dMB", mb), func(t *testing.T) {
			c := startKafka(t, 1)
			s := newKafka(t, c)
			key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 0, Fingerprint: "f"}
			blob := randBlob(uint64(mb), mb<<20)
			var puts []time.Duration
			for i := range 2 { // the second Put also tombstones the first
				info, err := s.Put(ctx, key, int64(i), bytes.NewReader(blob))
				if err != nil {
					t.Fatal(err)
				}
				puts = append(puts, info.Duration)
			}
			fresh := newKafka(t, c)
			start := time.Now()
			cp, found, err := fresh.Latest(ctx, key)
			elapsed := time.Since(start)
			if err != nil || !found || !bytes.Equal(cp.Blob, blob) {
				t.Fatalf("Latest: found %v, err %v", found, err)
			}
			if cp.Transferred > cp.Size+64<<10 {
				t.Fatalf("restore read %d bytes for a blob of %d: the backward scan should read the blob and little else", cp.Transferred, cp.Size)
			}
			mbps := func(d time.Duration) float64 { return float64(mb) / d.Seconds() }
			t.Logf("%d MB in %d chunks: put %v (%.0f MB/s), put again %v (%.0f MB/s), restore %v (%.0f MB/s, %d bytes read)",
				mb, cp.Chunks, puts[0].Round(time.Millisecond), mbps(puts[0]), puts[1].Round(time.Millisecond), mbps(puts[1]),
				elapsed.Round(time.Millisecond), mbps(elapsed), cp.Transferred)
		})
	}
}

// TestKafkaParallelRestore measures what a member assigned four partitions
// waits for: four 10 MB checkpoints restored in parallel through one store.
func TestKafkaParallelRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 40 MB to the embedded broker")
	}
	ctx := context.Background()
	c := startKafka(t, 1)
	s := newKafka(t, c)
	const parts = 4
	keys := make([]checkpoint.Key, parts)
	for p := range keys {
		keys[p] = checkpoint.Key{Group: "g", Topic: "tx", Partition: p, Fingerprint: "f"}
		if _, err := s.Put(ctx, keys[p], int64(p), bytes.NewReader(randBlob(uint64(p), 10<<20))); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newKafka(t, c)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, parts)
	for p, k := range keys {
		wg.Go(func() {
			cp, found, err := fresh.Latest(ctx, k)
			switch {
			case err != nil:
				errs[p] = err
			case !found || !bytes.Equal(cp.Blob, randBlob(uint64(p), 10<<20)):
				errs[p] = fmt.Errorf("partition %d: found %v, wrong blob", p, found)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d x 10 MB restored in parallel in %v (%.0f MB/s)", parts, elapsed.Round(time.Millisecond), float64(parts*10)/elapsed.Seconds())
	seq := newKafka(t, c)
	start = time.Now()
	for _, k := range keys {
		if _, _, err := seq.Latest(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	one := time.Since(start)
	t.Logf("%d x 10 MB restored one after the other in %v (%.0f MB/s)", parts, one.Round(time.Millisecond), float64(parts*10)/one.Seconds())
}

// limitErrReader returns n bytes of r, then an error.
type limitErrReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (l *limitErrReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errBroken
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// TestKafkaCleanupRetried: when the tombstones after a manifest fail, Put
// returns ErrCleanup, the new checkpoint is in place, and the next Put
// tombstones what the failed cleanup left.
func TestKafkaCleanupRetried(t *testing.T) {
	ctx := context.Background()
	c := startKafka(t, 1)
	s := newKafka(t, c, checkpoint.WithKafkaChunkSize(16<<10), checkpoint.WithKafkaPartitions(1))
	key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 0, Fingerprint: "f"}
	if _, err := s.Put(ctx, key, 1, bytes.NewReader(randBlob(1, 48<<10))); err != nil { // 3 chunks
		t.Fatal(err)
	}
	// Fail the next produce request of more than one record: the tombstones.
	c.ControlKey(kmsg.Produce.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.ProduceRequest)
		raw := req.Topics[0].Partitions[0].Records
		if len(raw) < 61 || binary.BigEndian.Uint32(raw[57:61]) < 2 { // RecordBatch.NumRecords
			c.KeepControl()
			return nil, nil, false
		}
		c.DropControl() // one failure only
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = req.Topics[0].Topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.Partition = req.Topics[0].Partitions[0].Partition
		rp.ErrorCode = 87 // INVALID_RECORD: not retried by the client
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	b := randBlob(2, 32<<10)
	if _, err := s.Put(ctx, key, 2, bytes.NewReader(b)); !errors.Is(err, checkpoint.ErrCleanup) {
		t.Fatalf("Put with failing tombstones: %v, want ErrCleanup", err)
	}
	if cp, found, err := s.Latest(ctx, key); err != nil || !found || cp.Offset != 2 || !bytes.Equal(cp.Blob, b) {
		t.Fatalf("Latest after ErrCleanup: offset %d, found %v, err %v; want offset 2", cp.Offset, found, err)
	}
	if live, _, _ := liveKeys(t, s, key); len(live) != 1+3+2 {
		t.Fatalf("live keys after a failed cleanup %v: want the manifest, 3 old and 2 new chunks", live)
	}
	if _, err := s.Put(ctx, key, 3, bytes.NewReader(randBlob(3, 16<<10))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if live, _, _ := liveKeys(t, s, key); len(live) != 1+1 {
		t.Fatalf("live keys after the next Put %v: want the manifest and 1 chunk", live)
	}
}

// TestKafkaSASL: the store authenticates with the Dialer or Transport the
// pipeline uses (SCRAM here), and fails clearly without it.
func TestKafkaSASL(t *testing.T) {
	ctx := context.Background()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "ckpt", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mech, err := scram.Mechanism(scram.SHA512, "ckpt", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if s, err := checkpoint.NewKafka(short, c.ListenAddrs(), checkpoint.WithKafkaTimeout(time.Second)); err == nil {
		s.Close()
		t.Fatal("NewKafka without credentials on a SASL cluster: no error")
	}
	key := checkpoint.Key{Group: "g", Topic: "t", Partition: 0, Fingerprint: "f"}
	blob := randBlob(1, 2<<20)
	tr := &kafka.Transport{SASL: mech}
	defer tr.CloseIdleConnections()
	for _, opt := range []checkpoint.KafkaOption{
		checkpoint.WithKafkaDialer(&kafka.Dialer{Timeout: 5 * time.Second, SASLMechanism: mech}),
		checkpoint.WithKafkaTransport(tr),
	} {
		s, err := checkpoint.NewKafka(ctx, c.ListenAddrs(), opt)
		if err != nil {
			t.Fatalf("NewKafka with SASL: %v", err)
		}
		if _, err := s.Put(ctx, key, 3, bytes.NewReader(blob)); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if cp, found, err := s.Latest(ctx, key); err != nil || !found || !bytes.Equal(cp.Blob, blob) {
			t.Fatalf("Latest: found %v, err %v", found, err)
		}
		s.Close()
	}
	if _, err := checkpoint.NewKafka(ctx, c.ListenAddrs(), checkpoint.WithKafkaTransport(tr),
		checkpoint.WithKafkaDialer(&kafka.Dialer{})); err == nil {
		t.Fatal("NewKafka with a transport and a dialer: no error")
	}
}

// TestKafkaCompactionFreesAll: with tombstones expiring at once
// (delete.retention.ms=0), compaction leaves exactly one manifest and its
// chunks of a key that was checkpointed many times.
func TestKafkaCompactionFreesAll(t *testing.T) {
	ctx := context.Background()
	c := startKafka(t, 1)
	if err := c.CreateTopic(checkpoint.DefaultKafkaTopic, 1, map[string]string{"cleanup.policy": "compact", "delete.retention.ms": "0"}); err != nil {
		t.Fatal(err)
	}
	s := newKafka(t, c, checkpoint.WithKafkaChunkSize(16<<10))
	key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 0, Fingerprint: "f"}
	var last []byte
	for i := range 6 {
		last = randBlob(uint64(i), (2+i%3)*16<<10) // 2, 3 or 4 chunks
		if _, err := s.Put(ctx, key, int64(i), bytes.NewReader(last)); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.RawRecords(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	before := len(recs)
	writeRaw(t, c, kafka.Message{Key: []byte("filler"), Value: []byte("x")})
	c.Compact()
	if recs, err = s.RawRecords(ctx, key); err != nil {
		t.Fatal(err)
	}
	if chunks := len(last) / (16 << 10); len(recs) != 1+chunks {
		t.Fatalf("after compaction %d of %d records left: %+v; want the manifest and %d chunks", len(recs), before, recs, chunks)
	}
	for _, r := range recs {
		if r.Tombstone {
			t.Fatalf("tombstone left after compaction with delete.retention.ms=0: %+v", r)
		}
	}
	cp, found, err := newKafka(t, c).Latest(ctx, key)
	if err != nil || !found || cp.Offset != 5 || !bytes.Equal(cp.Blob, last) {
		t.Fatalf("Latest after compaction: offset %d, found %v, err %v", cp.Offset, found, err)
	}
	t.Logf("%d records before compaction, %d after", before, len(recs))
}
