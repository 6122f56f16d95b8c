package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultJetStreamBucket is the object store bucket NewJetStream uses
// without WithJetStreamBucket.
const DefaultJetStreamBucket = "streamscore-checkpoints"

// Object metadata keys of a checkpoint object.
const (
	metaFingerprint = "streamscore-fingerprint"
	metaOffset      = "streamscore-offset"
	metaVersion     = "streamscore-checkpoint-version"
)

// JetStream is a Store on a NATS JetStream object store bucket: one object
// per key, named by the key's escaped group/topic/partition, with the
// fingerprint and offset in the object's metadata.
//
// The object store makes Put atomic by itself: the chunks go to a fresh
// subject, the object's meta message is written last and names that
// subject, and only then are the previous chunks purged. A reader verifies
// the object's SHA-256 digest (the client does, at EOF) and its size.
//
// Traps: chunks of a Put that crashed before its meta message stay in the
// bucket's stream (the object store has no sweeper); they are never read,
// and are counted in the stream's bytes. nats.go v1.55.0's ObjectStore.Put
// can leave one goroutine blocked for good (resetPendingAcksOnReconnect on
// a nil channel) when Put returns before that goroutine first runs: rare,
// a few KiB each, an upstream bug (see main_test.go).
type JetStream struct {
	obs       jetstream.ObjectStore
	chunkSize uint32
}

// JetStreamOption configures NewJetStream.
type JetStreamOption func(*jetStreamConfig) error

type jetStreamConfig struct {
	bucket    string
	replicas  int
	storage   jetstream.StorageType
	chunkSize uint32
	create    bool
}

// WithJetStreamBucket sets the bucket (default DefaultJetStreamBucket).
// Every member of a group must use the same bucket.
func WithJetStreamBucket(name string) JetStreamOption {
	return func(c *jetStreamConfig) error {
		if name == "" {
			return errors.New("checkpoint: jetstream bucket is empty")
		}
		c.bucket = name
		return nil
	}
}

// WithJetStreamReplicas sets the replicas of a bucket NewJetStream creates
// (default 1; use 3 on a clustered JetStream: the checkpoint is the only
// copy of the state). An existing bucket keeps its own.
func WithJetStreamReplicas(n int) JetStreamOption {
	return func(c *jetStreamConfig) error {
		if n < 1 || n > 5 {
			return fmt.Errorf("checkpoint: jetstream replicas %d: want 1 to 5", n)
		}
		c.replicas = n
		return nil
	}
}

// WithJetStreamMemory keeps a bucket NewJetStream creates in memory instead
// of files (default files). Trap: a server restart loses every checkpoint.
func WithJetStreamMemory() JetStreamOption {
	return func(c *jetStreamConfig) error {
		c.storage = jetstream.MemoryStorage
		return nil
	}
}

// WithJetStreamChunkSize sets the bytes per chunk message (default 512 KiB,
// four times the object store's own 128 KiB: on the embedded server it put
// and restored 10 and 50 MB several times faster). Trap: it must stay under
// the server's max_payload (1 MiB by default).
func WithJetStreamChunkSize(n int) JetStreamOption {
	return func(c *jetStreamConfig) error {
		if n < minChunkSize || n > 8<<20 {
			return fmt.Errorf("checkpoint: jetstream chunk size %d: want %d to %d bytes", n, minChunkSize, 8<<20)
		}
		c.chunkSize = uint32(n)
		return nil
	}
}

// WithJetStreamCreateBucket sets whether a missing bucket is created
// (default true). When false, a missing bucket is an error.
func WithJetStreamCreateBucket(create bool) JetStreamOption {
	return func(c *jetStreamConfig) error {
		c.create = create
		return nil
	}
}

// NewJetStream opens (or creates) the checkpoint bucket through js. The
// store does not own js or its connection.
func NewJetStream(ctx context.Context, js jetstream.JetStream, opts ...JetStreamOption) (*JetStream, error) {
	cfg := jetStreamConfig{bucket: DefaultJetStreamBucket, replicas: 1, storage: jetstream.FileStorage, chunkSize: 512 << 10, create: true}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if js == nil {
		return nil, errors.New("checkpoint: nil jetstream")
	}
	obs, err := js.ObjectStore(ctx, cfg.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && cfg.create {
		obs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: cfg.bucket, Description: "streamscore partition checkpoints", Storage: cfg.storage, Replicas: cfg.replicas,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint bucket %s: %w", cfg.bucket, err)
	}
	return &JetStream{obs: obs, chunkSize: cfg.chunkSize}, nil
}

// Put implements Store.
func (s *JetStream) Put(ctx context.Context, key Key, offset int64, blob io.Reader) (Info, error) {
	start := time.Now()
	if err := checkPut(key, offset, blob); err != nil {
		return Info{}, err
	}
	meta := jetstream.ObjectMeta{
		Name: key.id(),
		Metadata: map[string]string{
			metaFingerprint: key.Fingerprint,
			metaOffset:      strconv.FormatInt(offset, 10),
			metaVersion:     strconv.Itoa(manifestVersion),
		},
	}
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: s.chunkSize}
	oi, err := s.obs.Put(ctx, meta, blob)
	if err != nil {
		return Info{}, fmt.Errorf("put checkpoint of %s: %w", key, err)
	}
	return Info{
		Key: key, Offset: offset, Size: int64(oi.Size), Chunks: int(oi.Chunks), CreatedAt: start,
		Duration: time.Since(start), Transferred: int64(oi.Size),
	}, nil
}

// Latest implements Store.
func (s *JetStream) Latest(ctx context.Context, key Key) (Checkpoint, bool, error) {
	start := time.Now()
	if err := key.Validate(); err != nil {
		return Checkpoint{}, false, err
	}
	var lastErr error
	for range 3 { // a Put replacing the object while it is read makes the read fail: read again
		cp, found, err := s.latest(ctx, key, start)
		if err == nil || !errors.Is(err, jetstream.ErrDigestMismatch) && !errors.Is(err, ErrCorrupt) {
			return cp, found, err
		}
		lastErr = err
	}
	if !errors.Is(lastErr, ErrCorrupt) {
		// The object's digest fails every read: corrupt, not in flux.
		lastErr = fmt.Errorf("%w: %w", ErrCorrupt, lastErr)
	}
	return Checkpoint{}, false, lastErr
}

func (s *JetStream) latest(ctx context.Context, key Key, start time.Time) (Checkpoint, bool, error) {
	res, err := s.obs.Get(ctx, key.id())
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %w", key, err)
	}
	defer res.Close()
	oi, err := res.Info()
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %w", key, err)
	}
	md := oi.Metadata
	off, perr := strconv.ParseInt(md[metaOffset], 10, 64)
	if perr != nil || off < 0 || md[metaFingerprint] == "" || md[metaVersion] != strconv.Itoa(manifestVersion) {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: object metadata %v: %w", key, md, ErrCorrupt)
	}
	if fp := md[metaFingerprint]; fp != key.Fingerprint {
		return Checkpoint{}, false, &MismatchError{Key: key, Stored: fp, Offset: off}
	}
	blob := make([]byte, 0, oi.Size)
	buf := make([]byte, 256<<10)
	for {
		n, err := res.Read(buf)
		blob = append(blob, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %w", key, err)
		}
	}
	if uint64(len(blob)) != oi.Size {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of %s: %d bytes, object says %d: %w", key, len(blob), oi.Size, ErrCorrupt)
	}
	return Checkpoint{
		Info: Info{
			Key: key, Offset: off, Size: int64(oi.Size), Chunks: int(oi.Chunks), CreatedAt: oi.ModTime,
			Duration: time.Since(start), Transferred: int64(len(blob)),
		},
		Blob: blob,
	}, true, nil
}

// Delete implements Store.
func (s *JetStream) Delete(ctx context.Context, key Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if err := s.obs.Delete(ctx, key.id()); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete checkpoint of %s: %w", key, err)
	}
	return nil
}

// Close implements Store. It has nothing of its own to release: the caller
// owns the JetStream context and its connection.
func (s *JetStream) Close() error { return nil }
