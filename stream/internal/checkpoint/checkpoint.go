package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Sentinel errors callers branch on.
var (
	// ErrFingerprintMismatch: the store holds a checkpoint for the key, but
	// written under another state-format fingerprint (another spec or model
	// set). It is never returned as data; Latest returns a *MismatchError
	// that wraps it.
	ErrFingerprintMismatch = errors.New("checkpoint: state fingerprint mismatch")
	// ErrCorrupt: the newest checkpoint of a key failed verification (a chunk
	// missing, a length or CRC that does not match) and no older complete
	// one is left to fall back to.
	ErrCorrupt = errors.New("checkpoint: corrupt checkpoint")
	// ErrCleanup: Put stored the checkpoint (it is durable and Latest returns
	// it) but could not tombstone the chunks it superseded; they are retried
	// by the next Put of the key. Callers may treat it as a warning.
	ErrCleanup = errors.New("checkpoint: superseded chunks not yet removed")
	// ErrNotCompacted: the Kafka checkpoint topic exists with a cleanup
	// policy that deletes records by age or size, which would delete
	// checkpoints that are still the newest of their partition.
	ErrNotCompacted = errors.New("checkpoint: topic is not compacted")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("checkpoint: store closed")
)

// Key names the checkpoint of one input partition of one consumer group.
// Group, Topic and Partition identify it; Fingerprint names the state format
// (the feature spec and model set whose state the blob holds) and is stored
// with the checkpoint, not part of its identity: there is one newest
// checkpoint per (Group, Topic, Partition), whatever its fingerprint, and a
// reader with another fingerprint gets a *MismatchError instead of state it
// cannot use.
type Key struct {
	Group       string
	Topic       string
	Partition   int
	Fingerprint string
}

// Validate reports a key that cannot name a checkpoint.
func (k Key) Validate() error {
	switch {
	case k.Group == "":
		return errors.New("checkpoint: key has no group")
	case k.Topic == "":
		return errors.New("checkpoint: key has no topic")
	case k.Partition < 0:
		return fmt.Errorf("checkpoint: key partition %d is negative", k.Partition)
	case k.Fingerprint == "":
		return errors.New("checkpoint: key has no fingerprint")
	case len(k.Fingerprint) > 1024:
		return fmt.Errorf("checkpoint: key fingerprint of %d bytes, at most 1024", len(k.Fingerprint))
	}
	return nil
}

// String is the key without its fingerprint, for logs.
func (k Key) String() string {
	return k.Group + "/" + k.Topic + "/" + strconv.Itoa(k.Partition)
}

// id is the stable, unambiguous name of the key in a store: group and topic
// path-escaped (no '/' left in them), then the partition. It must never
// change: stores find existing checkpoints by it.
func (k Key) id() string {
	return url.PathEscape(k.Group) + "/" + url.PathEscape(k.Topic) + "/" + strconv.Itoa(k.Partition)
}

// Info describes one stored checkpoint, and what storing or reading it cost.
type Info struct {
	Key Key // with the fingerprint it was written under
	// Offset is the input offset of the next event to apply: every event of
	// the partition below Offset is in the state, none at or above it. It is
	// the Kafka committed-offset convention, so the events to re-apply on
	// restore are [Offset, committed offset).
	Offset    int64
	Size      int64     // bytes of the blob
	Chunks    int       // chunks (records, messages) the blob was stored in
	CreatedAt time.Time // when Put began (writer's clock)
	// Duration is the time Put or Latest took, end to end.
	Duration time.Duration
	// Transferred counts the bytes moved to or from the store: for Put, the
	// blob, the manifest and the tombstone keys written; for Latest, every
	// value byte read to find and assemble the checkpoint (the blob, the
	// manifest, and records of other keys sharing a Kafka partition).
	Transferred int64
	// Skipped counts newer checkpoints of the key that Latest found
	// incomplete or corrupt and passed over for this one.
	Skipped int
}

// Checkpoint is a stored checkpoint with its blob.
type Checkpoint struct {
	Info
	Blob []byte
}

// MismatchError is returned by Latest when the newest checkpoint of a
// (Group, Topic, Partition) was written under another fingerprint. It
// wraps ErrFingerprintMismatch.
type MismatchError struct {
	Key    Key    // the key asked for, with the reader's fingerprint
	Stored string // the fingerprint the checkpoint was written under
	Offset int64  // the stored checkpoint's offset
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("checkpoint: %s: stored under fingerprint %q (offset %d), want %q",
		e.Key, e.Stored, e.Offset, e.Key.Fingerprint)
}

// Unwrap makes errors.Is(err, ErrFingerprintMismatch) true.
func (e *MismatchError) Unwrap() error { return ErrFingerprintMismatch }

// Store keeps the newest checkpoint of each partition where every member of
// a consumer group can read it.
//
// Contract (checked by the conformance tests for every implementation):
//   - Put is atomic: Latest returns either the previous checkpoint or the new
//     one, whole, never a torn or mixed one, whatever happens during Put
//     (a crash between chunks, a reader that fails, a cancelled context).
//   - The last Put that returned (nil or ErrCleanup) wins; offsets are not
//     compared, so a Put with a lower offset than the stored one replaces it.
//   - Puts of different keys may run concurrently. Puts of one key are
//     serialised within a Store; across processes there must be one writer
//     per key at a time (the group member that owns the partition, fenced by
//     its generation), or the last writer wins.
//   - Latest(key) with another fingerprint than the stored one returns a
//     *MismatchError (errors.Is ErrFingerprintMismatch), found false.
type Store interface {
	// Put stores the state of key's partition after every event below
	// offset, read from blob until EOF. It returns what it stored.
	Put(ctx context.Context, key Key, offset int64, blob io.Reader) (Info, error)
	// Latest returns the newest complete checkpoint of key; found is false
	// when there is none (never written, or deleted).
	Latest(ctx context.Context, key Key) (cp Checkpoint, found bool, err error)
	// Delete removes every checkpoint of key's partition (the fingerprint
	// is ignored). Deleting a missing key is not an error.
	Delete(ctx context.Context, key Key) error
	// Close releases the store's connections; it does not close clients the
	// caller passed in. Close is idempotent.
	Close() error
}

// castagnoli is the CRC-32C table used for chunk and blob checksums.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checkPut(key Key, offset int64, blob io.Reader) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if offset < 0 {
		return fmt.Errorf("checkpoint: %s: offset %d is negative", key, offset)
	}
	if blob == nil {
		return fmt.Errorf("checkpoint: %s: nil blob reader", key)
	}
	return nil
}
