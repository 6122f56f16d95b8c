// Package checkpoint stores the state of each input partition where every
// member of a consumer group can read it, so that the state follows its
// partition when the group rebalances or a member dies.
//
// # Concepts
//
// A checkpoint is an opaque blob (the pipeline's encoding of one partition's
// card windows and sequence-model states) plus the input offset it reflects:
// Info.Offset is the offset of the next event to apply, the Kafka
// committed-offset convention, so a member that is assigned a partition
// restores the newest checkpoint and re-applies [Offset, committed) without
// emitting records.
//
// A Key is (group, topic, partition) and a fingerprint of the state format
// (spec and model set). The store keeps one newest checkpoint per
// (group, topic, partition); a reader whose fingerprint differs gets a
// *MismatchError (errors.Is ErrFingerprintMismatch) rather than state it
// cannot decode, so it can say so loudly and start that partition empty.
//
// Three stores share one contract (Store, checked by one conformance suite):
//   - Kafka (the default): a compacted topic, blobs chunked into records
//     under unique chunk keys, a manifest record per partition written last,
//     superseded chunks tombstoned so compaction frees them; restore reads
//     the key's partition backwards to its newest manifest, then exactly the
//     chunks it lists. See Kafka.
//   - JetStream: the NATS JetStream object store, one object per partition.
//   - Memory: in process, for tests.
//
// Checkpoints are atomic: Latest returns a previous or a new checkpoint
// whole, never a torn one, whatever happens to a Put midway.
//
// Incremental checkpoints are not implemented: the pipeline's state format
// is a full snapshot per partition. A delta would need (1) a state encoding
// that can name what changed since a base (per-card records keyed by card,
// with deletions for evicted cards), (2) a manifest that names its base
// checkpoint and a chain bound (rebase after N deltas or when the deltas
// outgrow a fraction of the base), and (3) in the Kafka store, chunk keys of
// a base kept (not tombstoned) while any live delta names it. Per-card
// records under their own compacted keys (a changelog, as Kafka Streams
// does) are the other road; both change the state format first.
//
// # Concurrency
//
// Stores are safe for concurrent use. Puts of different keys run in
// parallel; Puts, Latest and Delete of one key are serialised within a
// store. Across processes there must be one writer per key at a time (the
// member owning the partition, fenced by its generation): two writers of one
// key make the last manifest win and may tombstone each other's chunks.
//
// # Metrics
//
// The package registers none. Put and Latest return an Info with bytes
// (Size, Transferred), chunks, seconds (Duration) and skipped checkpoints, for
// the caller to export (streamscore_stream_checkpoint_* in package stream).
package checkpoint
