// Package stream runs the scoring pipeline: a Kafka consumer-group source,
// a feature stage that applies events to the state in event-time order,
// scoring workers that score micro-batches, a sink stage that publishes the
// records, and a commit tracker that commits an offset only when
// everything at or below it is published.
//
// # Concepts
//
// A Pipeline is one member of a Kafka consumer group reading the
// transactions topic through a Source (source.go): the only Kafka client of
// the input, KafkaSource, is built on kafka-go's consumer-group API, one
// generation at a time. For each generation the member fetches every
// claimed partition in its own goroutine (with per-partition credits: a
// partition that runs ahead stops fetching, the others go on) and commits
// through the generation, so a commit is fenced: a member never commits a
// partition it no longer owns. When a rebalance ends the generation, what
// was fetched and not applied is dropped, the batches in flight get a
// bounded time to be acknowledged, the acknowledged offsets (and, with
// checkpoints, the drained state) are committed, and only then does the
// member rejoin. Any Source will do (WithSource): the package's tests run
// whole pipelines — batching, commit capping under a refusing sink,
// rebalances with checkpoints, a member's crash, hostile input — on an
// in-memory broker with eager generations and fenced commits, without
// Kafka.
//
// The feature stage (stage.go) is one goroutine. It takes every message
// decoded by its partition's fetching goroutine (decoding runs in
// parallel, one goroutine per partition), handed over in slices of what
// the partition's fetch has read ahead (up to 64 messages per channel
// operation; a Claim that is a BatchFetcher hands them out), and, through an event-time aligner (internal/align), applies the events of
// all the partitions it reads in event-time order, ties by tx_id — the
// order `streamscore score` uses — so that state shared across partitions
// (terminals) is exactly what a replay builds, on a backlog as live; a
// quiet partition holds the others back at most WithAlignIdleWait. Card
// state belongs to the partition (partState: one features.Builder per
// partition, all sharing the process's features.Shared terminal state), so
// any worker count, and with WithCheckpoints any member, restores it. The
// stage writes each event's feature row into the open batch of the worker
// of its partition (partition p is scored by worker p mod W) and hands
// batches over when they close.
//
// Each message is decoded strictly, with the JSON decoder or the
// one given to WithEventDecoder (WithLabelDecoder for labels; Avro and
// Protobuf from features/wire); a decoder that is a Preparer (a schema to
// fetch) prepares each message in its partition's fetcher, which a schema
// registry outage holds there. The JSON decoder checks a fetched slice's
// timestamps against one reading of its clock (features.Decoder.DecodeAt:
// the future-skew check is stricter by the time the slice takes to decode
// — microseconds, or in the repartition mode as long as routing it waits
// for the repartition topic — never looser). A message that is not a valid
// event becomes a dead-letter record carrying a machine-readable reason and
// what may safely be kept of the message — its size, a digest, and its
// contract fields redacted (features.Decoder.AppendRedactedEvent), never the
// bytes themselves; a valid one updates the feature state and appends
// its row to the worker's micro-batch, one contiguous float32 matrix reused
// from a pool. A batch closes at the max batch size or the max delay after
// its first message, whichever comes first. Every model scores the whole
// batch; the final decision of an event is the most severe of its models'
// decisions, and its reason codes come from the model that drove it.
//
// Closed batches go to the worker's senders (WithInFlight of them, so sink
// round trips overlap), each of which writes all the records of a batch
// (scores, alerts, audit, dead letters) to the sink and waits for its acks.
// Only then are the batch's offsets acked to the commit tracker, and
// the committer commits the contiguous acked prefix of each partition every
// commit interval. Delivery is at-least-once: every input offset ends as
// score records or a dead-letter record before it is committed; after a crash
// the uncommitted suffix is re-delivered and re-scored, with the same record
// ids (kind:topic/partition/offset), which JetStream deduplicates and other
// consumers can use to.
//
// A consumer-group rebalance restarts every assigned partition at its
// committed offset, so the stage may see events it already applied to a
// partition's state. It remembers per partition how far it applied (and the
// offsets applied ahead of an earlier one) and scores such events with
// features.Builder.Peek, against the state as it is, instead of applying
// them twice.
//
// With WithRepartition (repart.go, repart_card.go, terminal.go), the
// shared entities' state leaves the members' feature stages: each member
// routes its partitions' events, keyed by their shared entity, to a
// repartition topic, whose partitions the members' terminal stages (a
// second consumer group) apply in event-time order across the sources
// and answer with each event's shared columns on an enriched topic
// co-partitioned with the input; the feature stage applies an event's card
// half once its columns are back, in its partition's order, without the
// cross-partition alignment (a card lives in one partition).
//
// With WithCheckpoints (checkpoint.go), each partition's state is stored
// every state interval where every member reads it (a compacted Kafka
// topic, the JetStream object store), commits move only to stored
// checkpoints' offsets, and a member assigned a partition whose state it
// does not hold restores the newest checkpoint before fetching it.
//
// Shutdown has two phases. Cancelling the context given to Run stops intake;
// open batches are flushed, published and committed within the drain timeout
// (soft). If that expires, or Abort is called, sink writes are cancelled and
// nothing more is committed (hard).
//
// The models can be replaced while the pipeline runs (hot reload).
// SetModels (or Reload, which also counts a failed load) validates the new
// set off the hot path — every model must bind to the feature layout, names
// must be distinct, the WithDecisionModels names must still resolve — binds
// one set of Scorers per worker and publishes the immutable set atomically.
// The stage picks up the newest set when it opens a batch, so the
// swap happens between batches: every record of a batch (scores, decision,
// reasons, model idents, audit thresholds) comes from one set, and no event
// is lost or scored twice by the swap. A set that fails validation leaves the
// active one serving; the failure is logged and counted. Watching files and
// signals is the caller's business (cmd/streamscore).
//
// Shadow (challenger) models (WithShadowModels) score the same batches, but
// their scores go only to the audit records ("shadow", "shadow_models"),
// never into decisions, score or alert records. Each one's decision at its own
// thresholds is compared with the scoring model of the same name (or, if
// none, the final decision) and counted as agree or disagree. ReloadSets
// replaces the shadow set together with the scoring set.
//
// Sequential models (families cnn, gru, lstm) keep state per card, with the
// card's partition (scored by the partition's worker), expiring with the
// card's feature state (same TTL), and every applied event advances it one
// step (models.Scorer.ScoreSeq); re-delivered and late events are scored
// against it without advancing it. A reload keeps a card's state for a model
// whose new version has the same state shape and resets it (counted, logged)
// otherwise. Replay warms the states with the history before its range, so
// offline scores equal the stream's.
//
// With WithLabelsTopic, delayed fraud labels are read from every partition of
// the labels topic, from the start of its retention and without a consumer
// group (the feature state is per process, so every process needs every
// label, again after a restart), and applied to the shared feature state;
// bad labels are dead-lettered like bad events.
//
// The state is in memory. With WithStateDir it survives restarts: Run
// restores the directory's current snapshot before the first fetch and
// writes one when it stops, and WithStateInterval writes one periodically,
// with every worker paused between batches and the label consumer waiting
// (snapshot.go describes the files, internal/statedir the crash-safe
// directory protocol; every binary state file and checkpoint blob is an
// internal/frame container, CRC-32C included). A snapshot holds
// the Shared terminal state, each partition's card windows and
// sequential-model states, per partition the highest offset applied, and
// per labels partition the next label offset (the label consumer resumes
// there instead of applying every label again): events Kafka delivers
// again at or below the applied offset are scored with Peek, as after a
// rebalance, and offsets between it and a partition's first message after
// the restore (committed after the snapshot) are counted as skipped. A
// snapshot that is corrupt or does not fit the pipeline is set aside and
// the pipeline starts empty.
//
// # Concurrency
//
// Run may be called once; Abort, Stats, Restoring, Models, ShadowModels,
// SetModels and Reload are safe for concurrent use (reloads are
// serialised). A pipeline starts the feature stage, per worker one scoring
// goroutine and WithInFlight sender goroutines, per claimed partition a
// fetch goroutine (for the life of a generation), plus a committer, an
// optional label consumer (one goroutine per labels partition) and, with
// WithStateInterval, a snapshot goroutine; Run joins all of them before it
// returns.
//
// # Metrics
//
// Registered with the Registerer of WithRegisterer:
//
//	streamscore_stream_events_consumed_total{topic}        messages fetched and handed to a worker
//	streamscore_stream_events_deadlettered_total{reason}   dead letters by reason code
//	streamscore_stream_batch_size_events                   histogram of messages per batch
//	streamscore_stream_batch_score_seconds{model}          histogram of batch scoring time per model
//	streamscore_stream_end_to_end_latency_seconds          histogram, Kafka append time to last sink ack
//	streamscore_stream_commit_lag_events{partition}        fetched messages not yet acked by the sinks
//	streamscore_stream_commit_held_offsets{partition}      offsets acked but held until the next state snapshot (WithStateInterval)
//	streamscore_stream_commits_total{outcome}              offset commits (ok, error, fenced)
//	streamscore_stream_records_rejected_total{kind,sink}   records a sink refused for what they are (too large); the event is dead-lettered
//	streamscore_stream_alerts_total{model}                 events in a model's alert band
//	streamscore_stream_decisions_total{outcome}            final decisions (allow, review, alert)
//	streamscore_stream_labels_total{outcome}               labels applied or dead-lettered
//	streamscore_stream_labels_late_total                   live labels applied on arrival, after later events
//	streamscore_stream_partition_resets_total              re-deliveries from an earlier offset
//	streamscore_stream_events_redelivered_total            re-delivered events scored without re-applying them
//	streamscore_stream_events_late_total                   events beyond the max lateness (scored, not applied)
//	streamscore_stream_cards_rekeyed_total                 cards whose state moved to their new pseudonym after a PAN-key rotation
//	streamscore_stream_model_reloads_total{outcome}        model set replacements (ok, failed: the active set kept serving)
//	streamscore_stream_model_active_info{model,model_version,digest,role}  1 per model of the active set (role scoring or shadow)
//	streamscore_stream_shadow_score_seconds{model}         histogram of batch scoring time per shadow model
//	streamscore_stream_shadow_agreement_total{model,outcome}  shadow decisions that agree or disagree with the scoring model
//	streamscore_stream_model_state_resets_total{model}     cards whose sequential-model state restarted (a reload changed its shape)
//	streamscore_stream_state_snapshots_total{outcome}      state snapshots written (ok, error)
//	streamscore_stream_state_restores_total{outcome}       restores at start (ok, none, failed: set aside, error: unreadable)
//	streamscore_stream_state_snapshot_seconds              time the last snapshot took (workers paused)
//	streamscore_stream_state_snapshot_bytes                size of the last snapshot
//	streamscore_stream_state_snapshot_pause_seconds        how long workers were paused for the last interval snapshot
//	streamscore_stream_state_offsets_skipped_total         offsets between a restored state and a partition's first event
//	streamscore_stream_state_entities{entity}              states held: card (all workers), terminal (the shared state)
//	streamscore_stream_state_evictions_total{entity,reason}  states dropped: reason ttl (idle) or cap (features.WithMaxCards, WithMaxTerminals)
//	streamscore_stream_aligned_events_total{outcome}       events applied in event-time order (ordered), while a partition was ignored (idle_bound, lag_bound), or out of order
//	streamscore_stream_align_buffered_events               events waiting for the other partitions
//	streamscore_stream_checkpoints_total{op,outcome}       partition checkpoints stored (put) and restored (restore): ok, error, none, refused
//	streamscore_stream_checkpoint_seconds{op}              time of the last checkpoint round (put) or partition restore
//	streamscore_stream_checkpoint_bytes                    bytes of the last checkpoint round
//	streamscore_stream_replica_events_total                events of partitions other members claim, applied to the shared entities only
//	streamscore_stream_repartition_records_total           records written to the repartition topic (events, watermarks; WithRepartition)
//	streamscore_stream_repartition_write_errors_total      failed writes to the repartition topic (retried)
//	streamscore_stream_enriched_records_refused_total      enriched-topic records the card stage could not use (skipped)
//	streamscore_stream_shared_columns_missing_total        events scored after a rebalance without their kept shared columns (may differ from a replay)
//	streamscore_stream_shared_columns_held_events          events whose shared columns are kept above the group's committed offsets
//	streamscore_stream_shared_checkpoints_total{op,outcome}  shared-state checkpoints stored (put) and restored (restore)
//	streamscore_stream_alert_rate_anomalies_total{model,direction}  windows in which a model alerted far above (high) or below (low) its validation rate
//	streamscore_stream_terminal_events_applied_total        repartition mode: events the terminal stage applied to the shared entities (an E record each)
//	streamscore_stream_terminal_duplicates_total            repartition events skipped as already applied (re-sent by a card stage, re-read after a restore)
//	streamscore_stream_terminal_marks_total                 repartition watermark records read
//	streamscore_stream_terminal_bad_records_total{reason}   records the terminal stage skipped: record, payload, source, label
//	streamscore_stream_terminal_labels_applied_total        labels applied by the terminal stage
//	streamscore_stream_terminal_enriched_written_total      enriched (E) records stored
//	streamscore_stream_terminal_enriched_write_errors_total  failed E writes (retried)
//	streamscore_stream_terminal_checkpoints_total{op,outcome}  terminal checkpoints: put, restore (ok, error, none, refused), commit (ok, error, fenced)
//	streamscore_stream_terminal_partitions_claimed          repartition partitions this member's terminal stage holds
//	streamscore_stream_terminal_aligned_events_total{outcome}  as aligned_events_total, for the terminal stage
//	streamscore_stream_terminal_sources_suspected_total    caught-up sources unheard for the idle wait (owner gone?), held as lagging
//	streamscore_stream_terminal_sources_revived_total      suspected sources heard again
//	streamscore_stream_terminal_align_buffered_events       events and labels the terminal stage holds for the other sources
//	streamscore_stream_source_generations_total            consumer-group generations joined (WithSourceRegisterer)
//	streamscore_stream_source_partitions_claimed           partitions this member holds
//	streamscore_stream_source_commits_fenced_total         commits refused because the partition moved to another member
//	streamscore_stream_source_fetch_errors_total{partition}  fetch errors per partition
//	streamscore_stream_source_records_skipped_total{partition}  records deleted by retention before this member read them
//	streamscore_stream_source_records_written_total{topic}  records WriteRecords stored (repartition and enriched topics)
//	streamscore_stream_source_write_errors_total{topic}    produce requests of WriteRecords that failed (retried ones included)
package stream
