package sinks

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/sinks/output"
)

// Classify returns what IsRetryable, IsPermanent and IsRejection say of
// err, as an output.Class.
func Classify(err error) output.Class {
	var c output.Class
	if IsRetryable(err) {
		c |= output.ClassRetryable
	}
	if IsPermanent(err) {
		c |= output.ClassPermanent
	}
	if IsRejection(err) {
		c |= output.ClassRejection
	}
	return c
}

// Classify tells NATS errors apart for output.Fanout (output.Classifier):
// it is the package's Classify.
func (n *NATS) Classify(err error) output.Class { return Classify(err) }

// Classify tells Kafka errors apart for output.Fanout (output.Classifier):
// it is the package's Classify.
func (k *Kafka) Classify(err error) output.Class { return Classify(err) }

// IsRetryable reports whether err (from WriteBatch or NewNATS/NewKafka) is
// worth retrying unchanged: disconnections, timeouts, missing acks, broker
// leadership changes. It is false for nil, context cancellation, ErrClosed,
// and permanent errors (message too large, bad subject or topic, auth).
// For a BatchError it is true when every failed message is retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var be *output.BatchError
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
		errors.Is(err, output.ErrClosed),
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
	var be *output.BatchError
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
