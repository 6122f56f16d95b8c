// Package sinks publishes the engine's output records to NATS (core or
// JetStream) and Kafka, and returns only once the downstream side has
// acknowledged them, so that the stream package can commit input offsets
// behind the acks. The records, the Sink contract and the Fanout that
// drives several sinks are in package output, which imports no transport;
// this package holds the transports and what they know of their errors.
//
// # Concepts
//
// Each sink maps kinds to destinations (WithNATSSubject, WithKafkaTopic)
// and skips the kinds it has no destination for, counting them as
// acknowledged. Both implement output.Sink, output.Classifier (Classify)
// and output.Router (Routes), so an output.Fanout isolates the records they
// refuse and counts only the kinds they route.
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
//
// Errors: WriteBatch returns an *output.BatchError naming the messages that
// were not acknowledged; IsRetryable tells transient failures (disconnects,
// timeouts, leader changes) from permanent ones (closed sink, oversized
// message, bad subject), IsPermanent and IsRejection the refusals, and
// Classify sums the three up as an output.Class. The trap: Kafka reports a
// missing topic as retryable (UNKNOWN_TOPIC_OR_PARTITION), so a
// misconfigured topic stalls a Fanout instead of failing it; the
// publish_errors metric and the log show it.
//
// # Concurrency
//
// NATS and Kafka are safe for concurrent use: partition workers may call
// WriteBatch at the same time (JetStream's in-flight window is shared by
// the callers; each call sends its own batches and produce requests). The
// messages passed to WriteBatch are not copied and must not be modified
// until it returns. Close may be called concurrently with WriteBatch, which
// then fails with output.ErrClosed.
//
// # Metrics
//
// The publish latency, errors and acknowledged messages of every sink are
// recorded by output.Fanout (output.WithFanoutRegisterer).
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
