package stream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	consumed     *prometheus.CounterVec   // topic
	deadLettered *prometheus.CounterVec   // reason
	rejected     *prometheus.CounterVec   // kind, sink
	batchSize    prometheus.Histogram     //
	scoreSeconds *prometheus.HistogramVec // model
	latency      prometheus.Histogram
	commitLag    *prometheus.GaugeVec   // partition
	commitHeld   *prometheus.GaugeVec   // partition
	committed    *prometheus.CounterVec // outcome
	alerts       *prometheus.CounterVec // model
	decisions    *prometheus.CounterVec // outcome
	labels       *prometheus.CounterVec // outcome
	labelsLate   prometheus.Counter
	resets       prometheus.Counter
	redelivered  prometheus.Counter
	late         prometheus.Counter
	rekeyed      prometheus.Counter

	reloads         *prometheus.CounterVec   // outcome
	activeInfo      *prometheus.GaugeVec     // model, model_version, digest, role
	shadowSeconds   *prometheus.HistogramVec // model
	shadowAgreement *prometheus.CounterVec   // model, outcome
	stateResets     *prometheus.CounterVec   // model

	snapshots         *prometheus.CounterVec // outcome
	restores          *prometheus.CounterVec // outcome
	snapshotSeconds   prometheus.Gauge
	snapshotBytes     prometheus.Gauge
	snapshotPause     prometheus.Gauge
	stateGap          prometheus.Counter
	aligned           *prometheus.CounterVec
	checkpoints       *prometheus.CounterVec
	checkpointSeconds *prometheus.GaugeVec
	checkpointBytes   prometheus.Gauge
	alignBuffered     prometheus.Gauge
	replicaEvents     prometheus.Counter
	// The repartition mode's card side (repart_card.go).
	routed            prometheus.Counter
	routeErrors       prometheus.Counter
	joinBad           prometheus.Counter
	sharedColsMissing prometheus.Counter
	sharedColsHeld    prometheus.Gauge
	sharedCkpt        *prometheus.CounterVec

	rateAnomalies *prometheus.CounterVec // model, direction
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_events_consumed_total",
			Help: "Kafka messages fetched from the input topics and handed to a worker.",
		}, []string{"topic"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_events_deadlettered_total",
			Help: "Input messages sent to the dead-letter destination, by reason code.",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_records_rejected_total",
			Help: "Output records a sink refused for good (too large, invalid), by record kind and sink; each is replaced by a dead letter with reason record_rejected and no payload, and its offset is committed past.",
		}, []string{"kind", "sink"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamscore_stream_batch_size_events",
			Help:    "Input messages per closed micro-batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		scoreSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "streamscore_stream_batch_score_seconds",
			Help:    "Time to score one micro-batch, per model.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2.5, 14),
		}, []string{"model"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "streamscore_stream_end_to_end_latency_seconds",
			Help:    "From the Kafka append time of an event to the ack of its last output by every sink.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.6, 22),
		}),
		commitLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamscore_stream_commit_lag_events",
			Help: "Fetched messages per partition not yet covered by a committed offset.",
		}, []string{"partition"}),
		commitHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamscore_stream_commit_held_offsets",
			Help: "With a state interval: offsets per partition handled and acked but not committed because the current state snapshot does not contain them yet (committed at the next snapshot).",
		}, []string{"partition"}),
		committed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_commits_total",
			Help: "Offset commits, by outcome (ok, error).",
		}, []string{"outcome"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_alerts_total",
			Help: "Events a model's thresholds put in the alert band, per model.",
		}, []string{"model"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_decisions_total",
			Help: "Final decisions of score records (allow, review, alert).",
		}, []string{"outcome"}),
		labels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_labels_total",
			Help: "Fraud feedback labels consumed, by outcome (applied, deadlettered).",
		}, []string{"outcome"}),
		labelsLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_labels_late_total",
			Help: "Live labels applied on arrival, after events of a later event time had been applied (--labels-align-idle-wait): those events' label-derived features differ from a replay's; the state after is the same. Not in streamscore_stream_aligned_events_total{outcome=\"out_of_order\"}.",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_events_late_total",
			Help: "Events beyond the max lateness behind their card's or terminal's newest event: scored against the state, not applied to it.",
		}),
		rekeyed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_cards_rekeyed_total",
			Help: "Cards whose state moved from their pseudonym under the previous PAN key to the active key's, on their first event after a key rotation.",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_events_redelivered_total",
			Help: "Events delivered again after they were applied to the feature state (scored without applying them twice).",
		}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_partition_resets_total",
			Help: "Times a partition was re-delivered from an earlier offset (rebalance or retry).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_model_reloads_total",
			Help: "Attempts to replace the scoring models while running, by outcome (ok, failed: the active models kept serving).",
		}, []string{"outcome"}),
		activeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamscore_stream_model_active_info",
			Help: "1 for every model of the active set, by name, version, file digest and role (scoring, shadow).",
		}, []string{"model", "model_version", "digest", "role"}),
		shadowSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "streamscore_stream_shadow_score_seconds",
			Help:    "Time to score one micro-batch, per shadow model.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 2.5, 14),
		}, []string{"model"}),
		shadowAgreement: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_shadow_agreement_total",
			Help: "Events whose shadow-model decision (at its own thresholds) agrees or disagrees with the scoring model of the same name, or with the final decision.",
		}, []string{"model", "outcome"}),
		stateResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_model_state_resets_total",
			Help: "Cards whose state of a sequential model (cnn, gru, lstm) restarted from zero because a reload changed the model's state shape.",
		}, []string{"model"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_state_snapshots_total",
			Help: "State snapshots written to the state directory, by outcome (ok, error).",
		}, []string{"outcome"}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_state_restores_total",
			Help: "State restores at start-up, by outcome (ok; none: no snapshot yet; failed: corrupt or not fitting, set aside, started empty; error: unreadable, Run failed).",
		}, []string{"outcome"}),
		snapshotSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_state_snapshot_seconds",
			Help: "Time the last state snapshot took to write (workers are paused meanwhile).",
		}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_state_snapshot_bytes",
			Help: "Size of the last state snapshot.",
		}),
		snapshotPause: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_state_snapshot_pause_seconds",
			Help: "How long the workers were paused for the last interval snapshot (closing their open batches, then writing).",
		}),
		stateGap: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_state_offsets_skipped_total",
			Help: "Offsets between a partition's restored state and its first event after the restore: events (or transaction markers) the restored state does not contain.",
		}),
	}
	m.aligned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_stream_aligned_events_total",
		Help: "Events applied in event-time order across the partitions (outcome ordered: exact), released while a quiet partition was ignored (idle_bound) or a slow one (lag_bound) — exposure, not errors —, or applied out of order (out_of_order: older than events already applied; shared features may differ from a replay). Labels are not counted here: streamscore_stream_labels_total, and streamscore_stream_labels_late_total for live labels applied on arrival. Events still waiting at a stop are not applied: the next start fetches them again.",
	}, []string{"outcome"})
	m.alignBuffered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "streamscore_stream_align_buffered_events",
		Help: "Events fetched and waiting for the other partitions to reach their event time.",
	})
	m.checkpoints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_stream_checkpoints_total",
		Help: "Partition checkpoints (WithCheckpoints) by op (put, restore) and outcome (ok, error; restore also none: no checkpoint, refused: written for other features or unusable).",
	}, []string{"op", "outcome"})
	m.checkpointSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "streamscore_stream_checkpoint_seconds",
		Help: "Time the last checkpoint round took to store (op put, all partitions of the round) or the last partition took to restore (op restore).",
	}, []string{"op"})
	m.checkpointBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "streamscore_stream_checkpoint_bytes",
		Help: "Bytes stored by the last checkpoint round.",
	})
	m.replicaEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamscore_stream_replica_events_total",
		Help: "Events of partitions this member does not claim (shared-state replicas, WithSharedReplicas) applied to its shared entities only, never scored.",
	})
	m.routed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamscore_stream_repartition_records_total",
		Help: "Records the card stage wrote to the repartition topic (events and watermark records; WithRepartition).",
	})
	m.routeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamscore_stream_repartition_write_errors_total",
		Help: "Failed writes to the repartition topic (retried until they succeed).",
	})
	m.joinBad = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamscore_stream_enriched_records_refused_total",
		Help: "Records of the enriched topic the card stage could not use (another build's format, a corrupt topic): skipped.",
	})
	m.sharedColsMissing = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "streamscore_stream_shared_columns_missing_total",
		Help: "Events scored after a rebalance whose shared half was applied already but whose shared columns were not kept: scored with the shared state as it is (may differ from a replay).",
	})
	m.sharedColsHeld = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "streamscore_stream_shared_columns_held_events",
		Help: "Events whose shared columns are kept above the group's committed offsets (for the next owner of their partition).",
	})
	m.sharedCkpt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_stream_shared_checkpoints_total",
		Help: "Shared-state checkpoints by op (put, restore) and outcome (ok, error, none, refused).",
	}, []string{"op", "outcome"})
	m.rateAnomalies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_stream_alert_rate_anomalies_total",
		Help: "Windows of events (WithAlertRateGuard) in which a model's alert rate was above (direction high) or below (low) its validation alert rate by more than the guard's factor.",
	}, []string{"model", "direction"})
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.consumed, m.deadLettered, m.rejected, m.batchSize, m.scoreSeconds,
		m.latency, m.commitLag, m.commitHeld, m.committed, m.alerts, m.decisions, m.labels, m.labelsLate, m.resets, m.redelivered, m.late, m.rekeyed,
		m.reloads, m.activeInfo, m.shadowSeconds, m.shadowAgreement, m.stateResets,
		m.snapshots, m.restores, m.snapshotSeconds, m.snapshotBytes, m.snapshotPause, m.stateGap, m.rateAnomalies,
		m.aligned, m.alignBuffered, m.checkpoints, m.checkpointSeconds, m.checkpointBytes,
		m.replicaEvents, m.routed, m.routeErrors, m.joinBad, m.sharedColsMissing, m.sharedColsHeld, m.sharedCkpt} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register stream metrics: %w", err)
		}
	}
	return m, nil
}

// terminalMetrics are the terminal stage's (terminal.go): the repartition
// mode's shared half, registered with the Registerer the stage is given.
type terminalMetrics struct {
	applied     prometheus.Counter     // events applied to the shared entities
	duplicates  prometheus.Counter     // R events already applied (re-sent)
	marks       prometheus.Counter     // watermark records read
	bad         *prometheus.CounterVec // reason: record, payload, source, label
	labels      prometheus.Counter     // labels applied
	written     prometheus.Counter     // E records stored
	writeErrors prometheus.Counter     // failed E writes (retried)
	checkpoints *prometheus.CounterVec // op, outcome
	claimed     prometheus.Gauge
	aligned     *prometheus.CounterVec // outcome
	buffered    prometheus.Gauge
	suspected   prometheus.Counter // caught-up sources unheard past deadAfter
	revived     prometheus.Counter // suspected sources heard again
}

func newTerminalMetrics(reg prometheus.Registerer) (*terminalMetrics, error) {
	m := &terminalMetrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_events_applied_total",
			Help: "Events of the repartition topic applied to the shared entities by the terminal stage (each one's shared columns written to the enriched topic).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_duplicates_total",
			Help: "Events of the repartition topic skipped because their source offset was applied (or waits) already: re-sent after a card-stage failover, or re-read after a restore.",
		}),
		marks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_marks_total",
			Help: "Watermark records of the repartition topic read (a source's progress without an event for this partition).",
		}),
		bad: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_bad_records_total",
			Help: "Records skipped by the terminal stage, by reason: record (not a repartition record), payload (an event that does not decode), source (a source partition beyond the input topic's), label (a label that does not decode).",
		}, []string{"reason"}),
		labels: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_labels_applied_total",
			Help: "Fraud labels applied to the shared entities of the terminal stage's partitions.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_enriched_written_total",
			Help: "Enriched records (an event's shared columns) stored in the enriched topic.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_enriched_write_errors_total",
			Help: "Failed writes of a batch of enriched records (retried with a backoff until stored or stopped hard).",
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_checkpoints_total",
			Help: "Terminal-stage checkpoints of repartition partitions by op (put, restore, commit) and outcome (ok, error; restore also none, refused: written for other features or unusable; commit also fenced).",
		}, []string{"op", "outcome"}),
		claimed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_terminal_partitions_claimed",
			Help: "Repartition-topic partitions this member's terminal stage holds.",
		}),
		aligned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_aligned_events_total",
			Help: "Events the terminal stage applied in event-time order across the sources (ordered), while a source was ignored (idle_bound, lag_bound), or out of order; as streamscore_stream_aligned_events_total (labels are not counted here: live labels applied on arrival are in streamscore_stream_labels_late_total).",
		}, []string{"outcome"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_terminal_align_buffered_events",
			Help: "Events and labels the terminal stage holds for the other sources to reach their event time.",
		}),
		suspected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_sources_suspected_total",
			Help: "Caught-up sources (input partitions) unheard for the align idle wait (no event, watermark or heartbeat: their owner may be gone), held as lagging until heard again.",
		}),
		revived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_terminal_sources_revived_total",
			Help: "Suspected sources heard again (a new owner, or a late heartbeat).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.applied, m.duplicates, m.marks, m.bad, m.labels, m.written, m.writeErrors,
		m.checkpoints, m.claimed, m.aligned, m.buffered, m.suspected, m.revived} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register terminal stage metrics: %w", err)
		}
	}
	return m, nil
}
