package output

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Kind says what a Message carries; each sink routes kinds to destinations.
type Kind uint8

// The kinds of output records.
const (
	KindScore      Kind = iota // a score record (every scored event)
	KindAlert                  // a score record whose decision is alert
	KindAudit                  // an audit record (score + features + thresholds)
	KindDeadLetter             // a dead-letter record (undecodable input)
)

// NumKinds is the number of kinds: every valid Kind is below it, so an
// array indexed by Kind has NumKinds elements.
const NumKinds = int(KindDeadLetter) + 1

var kindNames = [NumKinds]string{"score", "alert", "audit", "dead_letter"}

// String returns "score", "alert", "audit", "dead_letter", or "kind(N)" for
// an unknown value. The names are also the values of the kind metric label.
func (k Kind) String() string {
	if int(k) < NumKinds {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Message is one output record, already encoded.
//
// Key is the partitioning key (the card ID for scores and alerts): Kafka
// hashes it to a partition, NATS ignores it. ID is the deduplication ID: it
// is sent as the "Nats-Msg-Id" header (JetStream deduplicates on it within
// the stream's duplicate window) and as the "streamscore-id" header on every
// transport, so consumers can drop the duplicates that at-least-once
// delivery produces. The trap: JetStream deduplicates per stream, so the
// score and the alert of one transaction must not share an ID when one
// stream captures both subjects — make IDs unique per record and kind, e.g.
// "t-000001:alert". An empty ID sends no header and disables deduplication.
// Sinks do not copy Key or Value: they must not be modified until
// WriteBatch returns.
type Message struct {
	Kind  Kind
	Key   []byte
	Value []byte
	ID    string
}

// HeaderID is the header carrying Message.ID on every transport.
const HeaderID = "streamscore-id"

// Sink writes batches of messages to a downstream system.
type Sink interface {
	// Name identifies the sink in logs and in the sink metric label, e.g.
	// "nats" or "kafka". It must be a small, fixed string.
	Name() string
	// WriteBatch returns nil only when every routed message is acknowledged
	// by the downstream side. Messages of a kind the sink has no destination
	// for are skipped and count as acknowledged.
	WriteBatch(ctx context.Context, msgs []Message) error
	// Close releases the sink's resources. It is idempotent.
	Close() error
}

// ErrClosed is returned by WriteBatch after Close.
var ErrClosed = errors.New("sinks: sink closed")

// BatchError reports which messages of a batch were not acknowledged.
// Indices are positions in the msgs slice given to WriteBatch; Errs holds
// the error of each, in the same order. Err is the first (representative)
// error, so errors.Is and errors.As look through a BatchError.
type BatchError struct {
	Sink    string
	Indices []int
	Errs    []error
}

func (e *BatchError) Error() string {
	if len(e.Indices) == 0 {
		return "sinks: " + e.Sink + ": batch failed"
	}
	return fmt.Sprintf("sinks: %s: %d message(s) not acknowledged, first at index %d: %v",
		e.Sink, len(e.Indices), e.Indices[0], e.Errs[0])
}

// Unwrap returns the per-message errors.
func (e *BatchError) Unwrap() []error { return e.Errs }

// Failed returns the error for message i, or nil if it was acknowledged.
func (e *BatchError) Failed(i int) error {
	for j, k := range e.Indices {
		if k == i {
			return e.Errs[j]
		}
	}
	return nil
}

// Add records that message i failed with err. A sink calls it once per
// failed message; call Sort before returning if it did not add them in
// index order.
func (e *BatchError) Add(i int, err error) {
	e.Indices = append(e.Indices, i)
	e.Errs = append(e.Errs, err)
}

// Sort orders the failures by index (Indices and Errs together).
func (e *BatchError) Sort() {
	if slices.IsSorted(e.Indices) {
		return
	}
	perm := make([]int, len(e.Indices))
	for i := range perm {
		perm[i] = i
	}
	slices.SortStableFunc(perm, func(a, b int) int { return e.Indices[a] - e.Indices[b] })
	idx, errs := make([]int, len(perm)), make([]error, len(perm))
	for i, p := range perm {
		idx[i], errs[i] = e.Indices[p], e.Errs[p]
	}
	e.Indices, e.Errs = idx, errs
}

// Class is what a sink knows about one of its errors, as a set of flags:
// the zero Class says nothing, and Fanout retries such an error with
// backoff (a sink that is down applies backpressure, it never loses a
// record).
type Class uint8

// The flags of a Class. An error may carry several (a Kafka
// MESSAGE_TOO_LARGE is both ClassPermanent and ClassRejection) or none.
const (
	// ClassRetryable: worth retrying unchanged (a disconnection, a timeout, a
	// leadership change). Fanout retries every error that is not
	// ClassPermanent or ClassRejection; the flag only informs logs and callers.
	ClassRetryable Class = 1 << iota
	// ClassPermanent: retrying cannot fix it (authorization, a bad subject or
	// topic, a record the server refuses). Fanout returns it, unless it is
	// also ClassRejection.
	ClassPermanent
	// ClassRejection: the sink refuses this one message for what it is (too
	// large, an invalid record) but takes the others. Fanout sets the
	// message aside, retries it alone, and reports it in a
	// *RejectedError if it is refused again.
	ClassRejection
)

// Has reports whether c holds every flag of f.
func (c Class) Has(f Class) bool { return c&f == f }

// Classifier is an optional interface of a Sink whose transport errors
// only it can tell apart: Fanout calls Classify with an error WriteBatch
// returned, or with one message's error from a *BatchError. Classify must
// be quick and safe for concurrent use. The trap: Fanout knows nothing of
// the errors of a Sink that does not implement it (it retries them all,
// without end, unless WithFanoutClassifier says otherwise), so a sink that
// refuses a poison record without classifying the error stalls the
// pipeline on it; a wrapper around a sink must forward Classify.
type Classifier interface {
	Classify(err error) Class
}

// Router is an optional interface of a Sink that has no destination for
// some kinds: Fanout counts a kind in streamscore_sinks_messages_total only
// for a sink that routes it. A Sink that does not implement Router is
// taken to route every kind.
type Router interface {
	Routes(k Kind) bool
}
