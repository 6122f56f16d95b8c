// Package sinks publishes the engine's output records — scores, alerts,
// audit records and dead letters — to NATS (core or JetStream) and Kafka,
// and returns only once the downstream side has acknowledged them, so that
// the stream package can commit input offsets behind the acks.
//
// # Concepts
//
// A Message is one encoded record with a Kind, a partitioning Key and a
// deduplication ID. A Sink writes batches of messages; each sink maps kinds
// to destinations (WithNATSSubject, WithKafkaTopic) and skips the kinds it
// has no destination for, counting them as acknowledged.
//
//   - NATS publishes with JetStream when a stream captures the subject
//     (decided once, in NewNATS), and with core publish plus a flush
//     otherwise. The messages of one WriteBatch bound for one stream go out
//     as one fast batch with one acknowledgement where the stream allows it
//     (allow_batched; WithNATSBatch), else with one PubAck per message. The
//     ID goes in the "Nats-Msg-Id" header, so the server drops replays
//     within the stream's duplicate window.
//   - Kafka produces acks=all with keyed partitioning, the ID in the
//     "streamscore-id" header: by default one produce request per
//     topic-partition of each WriteBatch, records read in place
//     (WithKafkaProducer; kafka-go's Writer as the alternative), with
//     per-kind compression (WithKafkaKindCompression). kafka-go has no
//     idempotent producer: a retried write can store a record twice.
//   - Fanout writes each batch to several sinks concurrently, retries a
//     failing sink with capped exponential backoff until it acknowledges or
//     the context ends (backpressure, never loss), and records the metrics.
//
// Delivery is at least once: a retry after a failure (or a crash before the
// input offset is committed) sends messages again. Every message carries
// its ID in the "streamscore-id" header on both transports (and the record
// its tx_id), which is what consumers deduplicate on.
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
// Errors: WriteBatch returns a *BatchError naming the messages that were not
// acknowledged; IsRetryable tells transient failures (disconnects, timeouts,
// leader changes) from permanent ones (closed sink, oversized message, bad
// subject). The trap: Kafka reports a missing topic as retryable
// (UNKNOWN_TOPIC_OR_PARTITION), so a misconfigured topic stalls a Fanout
// instead of failing it; the publish_errors metric and the log show it.
//
// # Concurrency
//
// NATS, Kafka and Fanout are safe for concurrent use: partition workers may
// call WriteBatch at the same time (JetStream's in-flight window is shared
// by the callers; each call sends its own batches and produce requests). The messages passed to
// WriteBatch are not copied and must not be modified until it returns.
// Close may be called concurrently with WriteBatch, which then fails with
// ErrClosed. The record types are plain values: AppendJSON reads the record
// and may run concurrently on distinct destination buffers.
//
// # Metrics
//
// With WithFanoutRegisterer (the one metrics wrapper around all sinks):
//
//	streamscore_sinks_publish_seconds{sink}        histogram, one WriteBatch attempt
//	streamscore_sinks_publish_errors_total{sink}   failed attempts (each retried)
//	streamscore_sinks_messages_total{sink,kind}    messages acknowledged
//
// With WithNATSRegisterer:
//
//	streamscore_sinks_nats_ack_errors_total{sink}   async publishes that failed
//	streamscore_sinks_nats_republishes_total{sink}  republished with the same Msg-Id
//	streamscore_sinks_nats_duplicates_total{sink}   PubAcks flagged duplicate
//	streamscore_sinks_nats_batch_fallbacks_total{sink} batches republished one by one
//
// With WithKafkaRegisterer (the producer's statistics):
//
//	streamscore_sinks_kafka_requests_total{sink}
//	streamscore_sinks_kafka_messages_total{sink}
//	streamscore_sinks_kafka_written_bytes_total{sink}
//	streamscore_sinks_kafka_errors_total{sink}
//	streamscore_sinks_kafka_retries_total{sink}
package sinks
