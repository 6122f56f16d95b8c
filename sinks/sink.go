package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
)

// Kind says what a Message carries; each sink routes kinds to destinations.
type Kind uint8

// The kinds of output records.
const (
	KindScore      Kind = iota // a score record (every scored event)
	KindAlert                  // a score record whose decision is alert
	KindAudit                  // an audit record (score + features + thresholds)
	KindDeadLetter             // a dead-letter record (undecodable input)

	numKinds = iota
)

var kindNames = [numKinds]string{"score", "alert", "audit", "dead_letter"}

// String returns "score", "alert", "audit", "dead_letter", or "kind(N)" for
// an unknown value. The names are also the values of the kind metric label.
func (k Kind) String() string {
	if int(k) < numKinds {
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

func (e *BatchError) add(i int, err error) {
	e.Indices = append(e.Indices, i)
	e.Errs = append(e.Errs, err)
}

// IsRetryable reports whether err (from WriteBatch or NewNATS/NewKafka) is
// worth retrying unchanged: disconnections, timeouts, missing acks, broker
// leadership changes. It is false for nil, context cancellation, ErrClosed,
// and permanent errors (message too large, bad subject or topic, auth).
// For a BatchError it is true when every failed message is retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var be *BatchError
	if errors.As(err, &be) && len(be.Errs) > 0 {
		for _, e := range be.Errs {
			if !IsRetryable(e) {
				return false
			}
		}
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		found := false
		for _, e := range we {
			if e == nil {
				continue
			}
			if !IsRetryable(e) {
				return false
			}
			found = true
		}
		return found
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrClosed),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrAuthorization):
		return false
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, nats.ErrSlowConsumer), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrInvalidJSAck):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ne.Timeout()
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// IsPermanent reports whether err is a rejection that retrying cannot fix:
// the server refused the message itself (too large, bad subject, not
// authorized, or any Kafka error code that is not temporary). A Fanout stops
// retrying such errors and returns them, so a poison record stops the
// pipeline with a clear error instead of blocking it forever. Unknown errors
// are not permanent: they are retried (a down sink applies backpressure).
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var be *BatchError
	if errors.As(err, &be) && len(be.Errs) > 0 {
		for _, e := range be.Errs {
			if IsPermanent(e) {
				return true
			}
		}
		return false
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && IsPermanent(e) {
				return true
			}
		}
		return false
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrAuthorization):
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return !ke.Temporary() && ke != kafka.UnknownTopicOrPartition && ke != kafka.LeaderNotAvailable &&
			ke != kafka.NotLeaderForPartition && ke != kafka.RequestTimedOut && ke != kafka.NotEnoughReplicas &&
			ke != kafka.NotEnoughReplicasAfterAppend
	}
	return false
}

// IsRejection reports whether err is a sink refusing one message for what it
// is (too large, an invalid record) rather than for where it goes or who
// sends it: retrying it cannot succeed, but the sink takes other messages.
// A Fanout isolates such messages and reports them in a *RejectedError;
// any other permanent error (authorization, an unknown topic or a bad
// subject: a configuration error) stops the write.
func IsRejection(err error) bool {
	if err == nil {
		return false
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) || errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord, kafka.InvalidTimestamp:
			return true
		}
	}
	return false
}

// route maps kinds to destinations ("" = not routed).
type route [numKinds]string

func (r *route) set(k Kind, dest string) error {
	if int(k) >= numKinds {
		return fmt.Errorf("sinks: set route: unknown kind %d", k)
	}
	if dest == "" {
		return fmt.Errorf("sinks: set route for %s: empty destination", k)
	}
	r[k] = dest
	return nil
}

func (r *route) get(k Kind) string {
	if int(k) < numKinds {
		return r[k]
	}
	return ""
}

// routes reports whether the kind has a destination.
func (r *route) routes(k Kind) bool { return r.get(k) != "" }

// sort orders the failures by index (Indices and Errs together).
func (e *BatchError) sort() {
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
