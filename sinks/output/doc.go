// Package output defines what the engine emits and the contract through
// which it leaves: the records (scores, alerts, audit records, dead
// letters) with their JSON encoders, the Message a sink carries, the Sink
// interface, and Fanout, the retrying, metered fan-out to several sinks.
// It imports no transport: the NATS and Kafka sinks are in package sinks,
// so a package that only builds records or accepts a Sink (stream, an
// embedder's own sink) does not pull in nats.go or kafka-go through it.
// Its errors and metrics keep the "sinks" prefix: it is the contract half
// of the sinks subsystem.
//
// # Concepts
//
// A Message is one encoded record with a Kind, a partitioning Key and a
// deduplication ID. A Sink writes batches of messages, returning nil only
// once the downstream side acknowledged every message it routes; it skips
// the kinds it has no destination for, counting them as acknowledged, and
// reports the messages that failed in a *BatchError (by index).
//
// Two optional interfaces let a Sink tell Fanout what only it knows.
// Classifier sorts its errors into a Class: ClassRetryable, ClassPermanent
// (configuration: stops the write) and ClassRejection (this message is
// refused for what it is: set aside, retried alone, then reported in a
// *RejectedError). Router says which kinds it routes, for the metrics.
// A Sink without them has every error retried and every kind counted.
//
// Fanout writes each batch to several sinks concurrently, retries a
// failing sink with capped exponential backoff until it acknowledges or
// the context ends (backpressure, never loss), and records the metrics.
// Delivery is at least once: a retry after a failure (or a crash before
// the input offset is committed) sends messages again. Every message
// carries its ID in the "streamscore-id" header (HeaderID) on every
// transport, and the record its tx_id, which is what consumers deduplicate
// on.
//
// The records — ScoreRecord, AuditRecord, DeadLetterRecord — have
// hand-written AppendJSON methods: no allocation when the buffer has room,
// correct string escaping (control characters, U+2028/U+2029; invalid UTF-8
// becomes U+FFFD), shortest round-trip numbers, and null for NaN or
// infinity, which JSON cannot express. A DeadLetterRecord has no member
// for the original message: only its size, a digest and a redacted form the
// caller made (card data must never reach a sink in clear); a ScoreRecord's
// CardKeyID names the key of a pseudonymised card_id.
//
// Constructors that can fail are named New* and return an error (here
// NewFanout, with ErrInvalidFanoutOption for an option out of range); no
// constructor of the module panics on its input.
//
// # Concurrency
//
// Fanout is safe for concurrent use when its sinks are: partition workers
// may call WriteBatch at the same time. The messages passed to WriteBatch
// are not copied and must not be modified until it returns. Close may be
// called concurrently with WriteBatch, which then fails with ErrClosed.
// The record types are plain values, not safe for concurrent use: AppendJSON
// keeps encoding caches in the record (feature keys, models, thresholds), so
// concurrent calls need a record each (the worker fills one per worker).
//
// # Metrics
//
// With WithFanoutRegisterer (the one metrics wrapper around all sinks):
//
//	streamscore_sinks_publish_seconds{sink}        histogram, one WriteBatch attempt
//	streamscore_sinks_publish_errors_total{sink}   failed attempts (each retried)
//	streamscore_sinks_messages_total{sink,kind}    messages acknowledged
package output
