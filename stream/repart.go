package stream

import (
	"context"
	"errors"
	"fmt"
)

// The repartition mode (WithRepartition): the shared entities' state
// (terminals, or the one shared entity a spec names) is kept by a terminal
// stage that consumes a repartition topic keyed by that entity, instead of
// being replicated in every member (WithSharedReplicas).
//
//	input T[p] ──card stage (owner of p)──▶ R[Route(terminal)]   events + watermarks (internal/repart)
//	R[r] ──terminal stage (owner of r, a second consumer group)──▶ E[p]   each event's shared columns
//	T[p] ⋈ E[p] ──card stage──▶ rows: card half applied in partition order, shared columns joined before scoring
//
// The terminal stage applies, per R partition, the events of every source
// partition p in event-time order (ties by tx_id) with the same aligner the
// card stage uses (a source is an aligner partition, its watermark records
// an Advance), so each terminal sees exactly the events, in the order, a
// single process applies: the global sort restricted to its terminals. A
// source's events are applied once, by offset (a failover re-sends from the
// committed offset: duplicates are skipped). Its state is checkpointed per
// R partition and R is committed only at checkpoints. The card stage of p
// commits, with T's offset and in the same fenced request, the offset of
// E[p] from which every shared-column record it still needs can be found.

// OutRecord is a record to write to a chosen partition (RecordWriter).
type OutRecord struct {
	Partition  int
	Key, Value []byte
}

// RecordWriter writes records to chosen partitions of a topic: the
// repartition (R) and enriched (E) topics. WriteRecords returns when every
// record is stored (acks=all), or an error; records of one partition are
// stored in the order given, and before those of a later call. On an error
// some records may be stored: the caller writes them again (the readers
// skip duplicates). Safe for concurrent use. KafkaSource and the test
// MemSource implement it, with the source's connection and security.
type RecordWriter interface {
	WriteRecords(ctx context.Context, topic string, recs []OutRecord) error
}

// SideCommitter is implemented by a Generation that can commit, with its
// input topic's offsets and in the same request, offsets of other topics
// for the same partition ids (a co-partitioned topic, E), fenced the same
// way: a side partition must be claimed as an input partition.
type SideCommitter interface {
	CommitWith(ctx context.Context, next map[int]int64, side map[string]map[int]int64) error
}

// CommittedReader is implemented by a Source that can read its group's
// committed offsets of any topic (-1 or absent: none).
type CommittedReader interface {
	Committed(ctx context.Context, topic string) (map[int]int64, error)
}

// RepartitionConfig configures WithRepartition.
type RepartitionConfig struct {
	// Topic is the repartition topic R (events keyed by terminal); its
	// partition count sets how many terminal stages share the work.
	Topic string
	// Enriched is the enriched topic E; it must have the input topic's
	// partition count (co-partitioned: E[p] is joined by the owner of
	// input partition p).
	Enriched string
	// Source is this member's terminal-stage member: a consumer group on
	// Topic. Nil: a KafkaSource on the pipeline's brokers, group
	// "<group>.terminals", Topic. Run closes it. (E is written through the
	// pipeline's own source, which must implement RecordWriter.)
	Source Source
}

// WithRepartition moves the shared entities' state to a terminal stage
// fed by a repartition topic (see repart.go): every member runs a card
// stage (its claimed input partitions) and a terminal stage (its claimed
// R partitions). It needs WithCheckpoints (the terminal state lives in
// the checkpoints of R's partitions), a source that implements
// RecordWriter, SideCommitter and CommittedReader, and a feature set
// with exactly one shared entity field; it turns WithSharedReplicas off.
func WithRepartition(rc RepartitionConfig) Option {
	return func(c *config) error {
		if rc.Topic == "" || rc.Enriched == "" {
			return errors.New("stream: repartition needs both the repartition and the enriched topic")
		}
		if rc.Topic == rc.Enriched {
			return fmt.Errorf("stream: repartition and enriched topic are both %q", rc.Topic)
		}
		c.repart = &rc
		return nil
	}
}
