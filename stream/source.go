package stream

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
)

// The source seam: the pipeline consumes its input topic through Source, an
// interface it owns, so batching, commit capping, restore and fencing logic
// can be tested without a broker. KafkaSource (source_kafka.go) is the only
// implementation that talks to Kafka; kafka-go is confined to it.
//
// The life of a member:
//
//	for {
//		gen, err := src.Next(ctx)       // join, or rejoin after a rebalance
//		if err != nil { if IsFatalSourceError(err) { return err }; backoff; continue }
//		for _, c := range gen.Claims() { restore c.Partition() up to c.Start(); go fetch(c) }
//		<-gen.Done()                    // a rebalance, leaving, or the session lost
//		drain in-flight work; gen.Commit(ctx, acked)  // still accepted: see Generation
//		if stopping { break }           // gen still open: Close ends it
//		gen.End()                       // only now may the member rejoin
//	}
//	src.Close()                         // leave the group, then end the open generation
//
// A stopping member leaves its last generation open for Close: ended
// first, a KafkaSource rejoins the group before it leaves (a rebalance
// the others wait in, and, if kafka-go's rejoin is refused while it
// closes, no leave at all: see KafkaSource.Close).
//
// Implementations: KafkaSource (a Kafka consumer group); MemBroker, in a
// test file of this package, gives in-memory members for broker-less tests.
//
// Offsets in Commit and Start follow Kafka: the offset of the next record to
// read, not of the last one processed.

var (
	// ErrFenced is returned by Generation.Commit when the commit was refused
	// because this member may no longer commit the partition: the generation
	// ended (End was called, or the broker formed a newer generation without
	// this member), or the partition is not claimed in it. Nothing of that
	// commit was stored; retrying with the same generation cannot succeed.
	// It wraps the cause: ErrGenerationEnded, or the broker's error
	// (kafka.IllegalGeneration, kafka.UnknownMemberId,
	// kafka.RebalanceInProgress, kafka.FencedInstanceID).
	ErrFenced = errors.New("stream: commit fenced")

	// ErrGenerationEnded is returned by Claim.Fetch once the claim's
	// generation is over (Done is closed or End was called), and wrapped in
	// ErrFenced by a Commit after End.
	ErrGenerationEnded = errors.New("stream: generation ended")

	// ErrFetchResumed is returned once by Claim.Fetch (and
	// PartitionReader.Fetch) after errors, when the partition's fetch works
	// again but has no record to hand out (an idle partition): the caller
	// can report the connection up. The next Fetch goes on.
	ErrFetchResumed = errors.New("stream: fetch resumed")

	// ErrSourceClosed is returned by the methods of a Source (and of the
	// readers it made) once Close has been called.
	ErrSourceClosed = errors.New("stream: source closed")
)

// Record is one record of a partition as a Source hands it out. Key and
// Value belong to the caller (the source does not reuse them).
type Record struct {
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	// Time is the record's timestamp: the broker append time (or the
	// producer's create time, per the topic's message.timestamp.type).
	Time time.Time
	// HighWater is the partition's high-water mark (the offset the next
	// appended record will get) when the record was fetched: Offset ==
	// HighWater-1 means the reader was caught up at that moment. The trap: on
	// a topic written by transactional producers the last offset is a
	// commit marker, never handed out, so a caught-up reader can stop at
	// HighWater-2; treat "caught up" as a hint, with a bounded wait.
	HighWater int64
}

// Source is a member of a consumer group on one input topic, plus a way to
// read any partition outside the group (labels, restores). Next and Close
// may be called from different goroutines; Partitions and Read are safe for
// concurrent use.
type Source interface {
	// Next joins (the first time) or rejoins the group and returns the next
	// generation, blocking until the group has formed it or ctx is done (then
	// it returns ctx.Err()). The previous generation must have been ended
	// (Generation.End) first; otherwise Next returns an error at once. Join
	// errors are returned as they come (the source retries by itself on the
	// next call); IsFatalSourceError tells which ones retrying cannot fix.
	// After Close it returns ErrSourceClosed.
	Next(ctx context.Context) (Generation, error)

	// Partitions returns the partition ids of topic, in increasing order.
	Partitions(ctx context.Context, topic string) ([]int, error)

	// Read opens a reader of one partition of any topic, outside the group
	// (nothing is committed, no generation applies), starting at offset: an
	// absolute offset, kafka.FirstOffset or kafka.LastOffset. An offset below
	// the partition's first retained offset starts at the first one, so the
	// first record's Offset shows the gap. The reader must be closed; Close
	// of the source closes those still open.
	Read(topic string, partition int, offset int64) (PartitionReader, error)

	// Positions returns where the group stands on every partition of the
	// input topic: its committed offset and the partition's retained range.
	// A member reads the partitions it does not claim from there (the
	// shared-state replicas: WithSharedReplicas), and forgets what it keeps
	// for the offsets the group has committed.
	Positions(ctx context.Context) (map[int]Position, error)

	// Close leaves the group, ends a generation that is still open (its
	// in-flight work is abandoned: nothing more can be committed through it),
	// closes the readers still open and joins every goroutine of the source.
	// It is idempotent and safe to call concurrently with the other methods,
	// which then return ErrSourceClosed (or ErrGenerationEnded). The trap:
	// a join in progress at the broker cannot be cancelled, so Close during
	// a rebalance can take up to the rebalance timeout (KafkaSource).
	Close() error
}

// Position is where a consumer group stands on one partition.
type Position struct {
	// Committed is the group's committed offset (the next offset to read),
	// -1 when it has none.
	Committed int64
	// First is the partition's first retained offset, HighWater its
	// high-water mark (the offset of the next record appended).
	First, HighWater int64
}

// Generation is one generation of the group as seen by this member: the
// partitions it claims and the right to commit them. All methods are safe
// for concurrent use.
type Generation interface {
	// ID is the group's generation id.
	ID() int32

	// Claims returns this member's partitions of the input topic in this
	// generation, by increasing partition; it may be empty (more members
	// than partitions). The slice is shared: do not modify it.
	Claims() []Claim

	// Done is closed when the generation ends: a rebalance began (a member
	// joined or left), the session was lost (heartbeats failed), End was
	// called, or the source closed. After Done, Fetch of every claim returns
	// ErrGenerationEnded; Commit stays possible until End (see Commit).
	Done() <-chan struct{}

	// Commit commits next (partition -> offset of the next record to read)
	// for the input topic, as this generation. It is fenced: if End was
	// called, or a partition in next is not claimed in this generation, it
	// returns an error wrapping ErrFenced without contacting the broker; if
	// the broker refuses the generation (it formed a newer one without this
	// member: the member ended it too late, after the rebalance timeout), it
	// returns ErrFenced wrapping the broker's error. Never a silent commit.
	// Between Done and End a commit is accepted by the broker (Kafka's eager
	// rebalance: the partitions are this member's until it rejoins), which
	// is what lets the member commit its drained work before End. Other
	// errors (network) are returned wrapped, not as ErrFenced: the commit
	// may be retried. A negative offset is an error. An empty next is a
	// no-op. The call is bounded by the source's network timeout; ctx is
	// checked before it is sent.
	Commit(ctx context.Context, next map[int]int64) error

	// End tells the source the member is finished with the generation:
	// in-flight work is drained (or abandoned). It ends the generation if it
	// was still running (the group then rebalances), stops every claim's
	// fetching and joins its goroutines, waits for commits in flight, and
	// only then lets the source rejoin: the group waits for End before it
	// forms the next generation, for at most the rebalance timeout, after
	// which the broker drops this member and fences its commits.
	//
	// The trap: after End the member rejoins by itself (kafka-go's group
	// does, in the background) and is part of the next generation, with
	// partitions, whether or not Next is called; Next only hands that
	// generation out. A member that stops consuming must Close the source,
	// or the group assigns it partitions nobody reads. Idempotent.
	End()
}

// Claim is one partition of the input topic claimed in a generation. Fetch
// is for one goroutine at a time; the other methods are safe for concurrent
// use. A Claim that is also a BatchFetcher hands out what it has read ahead
// several records per call (KafkaSource's claims and readers are).
type Claim interface {
	// Partition is the partition id.
	Partition() int

	// Start is the offset this member starts the partition at: the group's
	// committed offset, or, when there is none, the start policy's offset
	// (first or last) resolved to an absolute offset when the generation
	// began.
	Start() int64

	// HighWater is the partition's high-water mark (last stable offset,
	// read-committed) when the generation began: Start == HighWater means
	// there was nothing to read yet.
	HighWater() int64

	// Fetch returns the next record of the partition in offset order, from
	// Start on, blocking until there is one, ctx is done (ctx.Err()), or the
	// generation ends (ErrGenerationEnded, also returned for every later
	// call). A record already read ahead is returned without looking at
	// ctx, and a Fetch cancelled by ctx loses nothing. Records are read
	// ahead into a bounded buffer only once Fetch has been called: a claim
	// nobody fetches from does not fetch. Other errors are wrapped broker or
	// network errors, returned once each (the source reconnects and the next
	// Fetch goes on at the same offset); IsFatalSourceError tells whether
	// retrying can help.
	Fetch(ctx context.Context) (Record, error)
}

// BatchFetcher is implemented by a Claim or a PartitionReader that can hand
// out several records per call; the pipeline then hands them to its feature
// stage in slices (one channel operation per slice instead of one per
// record). Optional: without it the pipeline calls Fetch once per record.
type BatchFetcher interface {
	// FetchBatch appends to dst the next records in offset order, at least
	// one and at most max(1, cap(dst)-len(dst)): every record already read
	// ahead (up to that bound), blocking only when there is none, as Fetch
	// does. Errors are Fetch's, with dst returned unchanged; a record is
	// never both returned and lost. For the Fetch caller's goroutine.
	FetchBatch(ctx context.Context, dst []Record) ([]Record, error)
}

// PartitionReader reads one partition outside the group (Source.Read).
type PartitionReader interface {
	// Fetch returns the next record in offset order, blocking until there
	// is one or ctx is done (ctx.Err()). After Close it returns
	// ErrSourceClosed. For one goroutine at a time.
	Fetch(ctx context.Context) (Record, error)

	// Close stops the reader and joins its goroutines. Idempotent.
	Close() error
}

// IsFatalSourceError reports whether err, from a Source, Generation or
// Claim, is a refusal retrying cannot fix: authentication or authorization
// failed, or the source is closed. Everything else (network errors,
// coordinator moves, rebalances) is worth a retry after a backoff. ErrFenced
// is not fatal for the member, only for that commit: see Generation.Commit.
func IsFatalSourceError(err error) bool {
	return errors.Is(err, ErrSourceClosed) || isFatalFetch(err)
}

// fenceCode reports whether a broker error refuses a commit because this
// member's generation is no longer the group's.
func fenceCode(err error) bool {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kafka.IllegalGeneration, kafka.UnknownMemberId, kafka.RebalanceInProgress, kafka.FencedInstanceID:
		return true
	}
	return false
}
