package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// Option configures a Pipeline.
type Option func(*config) error

type config struct {
	workers        int
	maxBatch       int
	maxDelay       time.Duration
	holdBatches    bool // WithHoldBatches
	inFlight       int
	queueDepth     int
	drainTimeout   time.Duration
	commitInterval time.Duration
	labelsTopic    string
	reasons        int
	audit          bool
	auditProto     bool // audit records as output.AuditProtoSchema messages
	reg            prometheus.Registerer
	log            *slog.Logger
	decoderOpts    []features.DecoderOption
	featureOpts    []features.Option
	dialer         *kafka.Dialer
	observe        func(appended time.Time, latency time.Duration)
	connObserve    func(reader string, err error)
	startOffset    int64
	sessionTimeout time.Duration
	deciders       []string
	shadows        []*models.Model
	stateDir       string
	stateInterval  time.Duration
	allowUnpinned  bool               // WithUnpinnedModels
	guardEvents    int                // WithAlertRateGuard; 0: off
	guardFactor    float64            // WithAlertRateGuard
	source         Source             // WithSource; nil: a KafkaSource
	ckpt           CheckpointStore    // WithCheckpoints
	replicas       bool               // WithSharedReplicas
	alignIdle      time.Duration      // WithAlignIdleWait; negative: no alignment
	alignLag       time.Duration      // WithAlignLagWait
	labelsIdle     time.Duration      // WithLabelsAlignIdleWait
	eventDec       EventDecoder       // WithEventDecoder; nil: JSON
	labelDec       LabelDecoder       // WithLabelDecoder; nil: JSON
	repart         *RepartitionConfig // WithRepartition; nil: shared state in-process
}

func defaultConfig() config {
	return config{
		workers:        2,
		maxBatch:       256,
		maxDelay:       2 * time.Millisecond,
		inFlight:       4,
		queueDepth:     4096,
		drainTimeout:   30 * time.Second,
		commitInterval: 200 * time.Millisecond,
		reasons:        3,
		audit:          true,
		log:            slog.Default(),
		startOffset:    kafka.FirstOffset,
		sessionTimeout: 30 * time.Second,
		guardEvents:    10000,
		guardFactor:    5,
		alignIdle:      100 * time.Millisecond,
		replicas:       true,
		alignLag:       10 * time.Second,
	}
}

// WithWorkers sets the number of scoring workers (default 2). Partition p is
// scored by worker p mod n, which keeps the sequential-model state of its
// cards; the feature state belongs to the partition, so any worker count
// restores a snapshot. More workers than assigned partitions leaves the
// extra ones idle.
func WithWorkers(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1024 {
			return fmt.Errorf("stream: workers %d out of range [1, 1024]", n)
		}
		c.workers = n
		return nil
	}
}

// WithMaxBatch sets the number of input messages at which a worker closes its
// micro-batch (default 256). Larger batches score more efficiently; a batch
// also closes after the max delay, so small values only matter under load.
func WithMaxBatch(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1<<16 {
			return fmt.Errorf("stream: max batch %d out of range [1, 65536]", n)
		}
		c.maxBatch = n
		return nil
	}
}

// WithHoldBatches sets whether a micro-batch stays open until it is full
// or --max-delay has passed even when the feature stage has nothing more
// to read (default false: it goes to its worker at once, so a lone event at
// a low rate is scored without waiting; under load the input is never
// empty and batches fill, and while every batch of a worker is in flight
// the next one gathers what queues meanwhile). true trades latency for
// fewer, larger sink writes at moderate rates.
func WithHoldBatches(hold bool) Option {
	return func(c *config) error {
		c.holdBatches = hold
		return nil
	}
}

// WithMaxDelay sets how long a micro-batch stays open after its first message
// (default 2ms). It bounds the latency that batching adds when traffic is low:
// by default a batch also closes as soon as the feature stage has nothing
// more to read (WithHoldBatches).
func WithMaxDelay(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 || d > time.Minute {
			return fmt.Errorf("stream: max delay %v out of range (0, 1m]", d)
		}
		c.maxDelay = d
		return nil
	}
}

// WithInFlight sets how many closed batches per worker may be published at
// once (default 4): each worker runs that many senders, so sink round trips
// overlap. When all are busy the worker stops taking input, so a slow or down
// sink applies backpressure up to the Kafka fetch. Offsets are still
// committed in order (only over the contiguous acked prefix), but the records
// of different batches may reach a sink in a different order than their
// events; with 1, each worker publishes its batches strictly in order.
func WithInFlight(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 64 {
			return fmt.Errorf("stream: in-flight batches %d out of range [1, 64]", n)
		}
		c.inFlight = n
		return nil
	}
}

// WithDrainTimeout bounds the soft shutdown (default 30s): after the context
// passed to Run is done, in-flight batches get this long to be acked and
// committed before the pipeline is stopped hard and Run returns
// ErrDrainTimeout. Uncommitted events are re-delivered on restart.
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("stream: drain timeout must be positive")
		}
		c.drainTimeout = d
		return nil
	}
}

// WithCommitInterval sets how often acked offsets are committed (default
// 200ms). Shorter intervals shrink the re-delivery after a crash and cost one
// OffsetCommit request per interval.
func WithCommitInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("stream: commit interval must be positive")
		}
		c.commitInterval = d
		return nil
	}
}

// WithLabelsTopic makes the pipeline read delayed fraud labels from every
// partition of topic, from the start of its retention, and feed them to the
// feature state (no consumer group: each process needs all labels). Empty
// (the default) disables label feedback.
func WithLabelsTopic(topic string) Option {
	return func(c *config) error {
		c.labelsTopic = topic
		return nil
	}
}

// WithReasons sets how many reason codes a score record with a review or
// alert decision carries (default 3; 0 disables them). Records of allowed
// events carry none: attribution costs as much as scoring for neural models,
// and fraud operations read the reasons of the events they must act on.
func WithReasons(k int) Option {
	return func(c *config) error {
		if k < 0 || k > 64 {
			return fmt.Errorf("stream: reasons %d out of range [0, 64]", k)
		}
		c.reasons = k
		return nil
	}
}

// AuditFormat is the encoding of audit records: AuditJSON (the default,
// the score record's members plus features and thresholds as one JSON
// object) or AuditProtobuf (the same members as one
// output.AuditProtoSchema message: feature values bit for bit as float32,
// no decimal formatting; about a third of the JSON record's encoding
// cost). Score, alert and dead-letter records are JSON either way.
type AuditFormat string

// The audit record encodings.
const (
	AuditJSON     AuditFormat = "json"
	AuditProtobuf AuditFormat = "protobuf"
)

// ErrAuditFormat is wrapped by WithAuditFormat for an unknown format.
var ErrAuditFormat = errors.New("stream: unknown audit format")

// WithAuditFormat sets the encoding of audit records (default AuditJSON).
// The trap: consumers of the audit topic must be told (the records carry
// no content type); the format applies from the engine's start, so switch
// it with a new audit topic or consumers that accept both.
func WithAuditFormat(f AuditFormat) Option {
	return func(c *config) error {
		switch f {
		case AuditJSON, "":
			c.auditProto = false
		case AuditProtobuf:
			c.auditProto = true
		default:
			return fmt.Errorf("%w %q (json or protobuf)", ErrAuditFormat, string(f))
		}
		return nil
	}
}

// WithAudit enables or disables audit records (default on). Audit records
// carry the feature vector and are only published by sinks with an audit
// destination; turning them off saves their encoding cost.
func WithAudit(on bool) Option {
	return func(c *config) error {
		c.audit = on
		return nil
	}
}

// WithRegisterer registers the pipeline's metrics with reg (default: none).
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) error {
		c.reg = reg
		return nil
	}
}

// WithLogger sets the structured logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("stream: nil logger")
		}
		c.log = l
		return nil
	}
}

// WithDecoderOptions passes options to the event decoder (e.g. the allowed
// future clock skew).
func WithDecoderOptions(opts ...features.DecoderOption) Option {
	return func(c *config) error {
		c.decoderOpts = append(c.decoderOpts, opts...)
		return nil
	}
}

// WithFeatureOptions passes options to the feature state. Default: none
// (features' defaults: no caps). The card cap (features.WithMaxCards) is
// divided equally among the workers, each of which has its own Builder;
// the trap: with several workers, a partition-skewed load evicts on the
// busiest worker before the total reaches the cap.
func WithFeatureOptions(opts ...features.Option) Option {
	return func(c *config) error {
		c.featureOpts = append(c.featureOpts, opts...)
		return nil
	}
}

// WithDialer sets the kafka-go dialer of the consumers (TLS, SASL, timeouts).
func WithDialer(d *kafka.Dialer) Option {
	return func(c *config) error {
		c.dialer = d
		return nil
	}
}

// WithLatencyObserver calls fn with the Kafka message timestamp (append
// time) and the end-to-end latency of every scored or dead-lettered event:
// from that timestamp to the moment every sink acked it. fn is called from
// sender goroutines and must be safe for concurrent use and fast.
func WithLatencyObserver(fn func(appended time.Time, latency time.Duration)) Option {
	return func(c *config) error {
		c.observe = fn
		return nil
	}
}

// WithReaderObserver calls fn(reader, err) when a Kafka reader of the
// pipeline fails to fetch (err: the cause; reader: "kafka reader" for the
// transactions topic, "kafka labels reader" for the labels topic, failing
// while any of its partitions fails) and fn(reader, nil) once it fetches
// again: the engine turns it into readiness. kafka-go retries connection
// errors inside the reader without a word, so only what reaches the
// pipeline is seen. fn must be quick and safe for concurrent use.
func WithReaderObserver(fn func(reader string, err error)) Option {
	return func(c *config) error {
		c.connObserve = fn
		return nil
	}
}

// WithCheckpoints keeps each partition's state (its cards' windows and
// sequential-model states) in store, where every member of the group reads
// it, so that the state follows the partition: a member assigned a
// partition (a failover, a rebalance, a new member) restores its newest
// checkpoint before fetching it. Needs WithStateInterval, the checkpoint
// cadence: every interval the claimed partitions that changed are stored,
// and the committed offsets move only to stored checkpoints' offsets, so
// that the next owner restores exactly the state Kafka re-delivers after;
// revoked partitions and the shutdown are checkpointed (and committed)
// after their drain. The price is that up to one interval of events is
// scored again after a crash (same record ids). Terminal state is in the
// shared checkpoint, not in a partition's (see checkpoint.go, replica.go). The pipeline does not close
// store.
func WithCheckpoints(store CheckpointStore) Option {
	return func(c *config) error {
		if store == nil {
			return errors.New("stream: nil checkpoint store")
		}
		c.ckpt = store
		return nil
	}
}

// WithSharedReplicas sets whether a member of a group of several reads the
// partitions it does not claim as shared-state replicas (default true):
// their events update its shared entities (terminals, and with a spec
// every entity but card_id) in event-time order with its own, never its
// cards and never a record, so that every member's terminal features are
// exactly those of one process reading every partition, through failovers
// and rebalances (see replica.go). The price: every member reads and
// decodes every event of the topic (its feature stage then sets the
// group's ceiling: see the README's sizing table), and keeps the shared
// columns of the events above the group's committed offsets (a few bytes
// per feature per event: about a commit interval's worth for the
// partitions it claims, up to 2 s of the others'). false keeps each
// member's shared state to the partitions it claims: terminals then see
// only part of their traffic with several members.
func WithSharedReplicas(on bool) Option {
	return func(c *config) error {
		c.replicas = on
		return nil
	}
}

// WithSource makes the pipeline consume src instead of a KafkaSource on its
// brokers, group and topic (tests use an in-memory one). Run closes it. The
// brokers still serve the topic's committed offsets for a state restore
// and the labels topic.
func WithSource(src Source) Option {
	return func(c *config) error {
		if src == nil {
			return errors.New("stream: nil source")
		}
		c.source = src
		return nil
	}
}

// WithAlignIdleWait sets how long a partition that has nothing more to
// read (caught up) may hold back the events of the others (default 100 ms).
// The feature stage applies the events of all the partitions it reads in
// event-time order (ties by tx_id), as `streamscore score` does, so that
// state shared across partitions (terminals) is exact: an event waits until
// every partition has delivered a later one. A quiet partition therefore
// adds up to this wait to the decision latency of every event; past it, the
// partition is ignored until it delivers again, and an event it then
// delivers older than what was applied is applied out of order (counted:
// streamscore_stream_aligned_events_total{outcome="out_of_order"}). 0 never
// waits for a caught-up partition (lowest latency; live traffic is then
// applied in arrival order, a backlog still in event-time order); negative
// turns alignment off altogether (the order of arrival, as before 0.x),
// except in the repartition mode (WithRepartition), whose terminal stage
// always aligns: New refuses a negative wait there.
// It may not exceed the lag wait (WithAlignLagWait, 10 s by default): New
// refuses the pair.
func WithAlignIdleWait(d time.Duration) Option {
	return func(c *config) error {
		if d > time.Minute {
			return fmt.Errorf("stream: align idle wait %v out of range (at most 1m; negative turns alignment off)", d)
		}
		c.alignIdle = d
		return nil
	}
}

// WithLabelsAlignIdleWait sets how long a partition of the labels topic
// (WithLabelsTopic) that has nothing more to read may hold back the events
// (default 0: never), in place of WithAlignIdleWait for those partitions.
// Labels are sparse — a few a second, each one the last its partition has —
// so under the events' idle wait each label would hold every event behind
// it until the next label or for the whole wait: with labels at a few a
// second, most events would wait for it (the demo's decision latency was 25
// ms at p50 and 100 ms at p99 that way, against 4 and 16 with 0). With 0 a
// live label is applied when it arrives: the events of the milliseconds
// between its time and its arrival were applied without it (a replay
// applies it before them; counted in streamscore_stream_labels_late_total),
// which only their label-derived features show; the state after is the
// same (a label is kept at its own time). A labels backlog (a restart, a
// topic read from its start, labels written during an outage) is still
// applied in event-time order among the events: a labels partition Kafka
// has more for holds them for the lag wait, and a quiet one woken by
// another partition's backlog for WithAlignIdleWait, as any woken
// partition. Give it a wait when live labels must be placed as a replay
// places them, e.g. for event time that runs faster than the clock (a
// replay at high speed).
// It may not exceed the lag wait (WithAlignLagWait): New refuses the pair.
// Without alignment (a negative WithAlignIdleWait) it has no effect.
func WithLabelsAlignIdleWait(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 || d > time.Minute {
			return fmt.Errorf("stream: labels align idle wait %v out of range [0, 1m]", d)
		}
		c.labelsIdle = d
		return nil
	}
}

// WithAlignLagWait sets how long a partition that Kafka still has events
// for, but whose fetch delivers nothing (a slow or unreachable partition
// leader), may hold back the others (default 10 s): a safety bound, past
// which it is treated as idle (see WithAlignIdleWait).
func WithAlignLagWait(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 || d > time.Hour {
			return fmt.Errorf("stream: align lag wait %v out of range (0, 1h]", d)
		}
		c.alignLag = d
		return nil
	}
}

// WithSessionTimeout sets the consumer group session timeout (default 30 s,
// kafka-go's): how long the group coordinator waits for a member's heartbeat
// before it declares the member dead and gives its partitions to the others.
// It is also how long a member restarted after a crash (kill -9, OOM) waits
// for its partitions: the group rebalances only once the dead member's
// session has expired. Shorter means faster failover but more spurious
// rebalances on a stalled process (a long GC pause, a slow disk); the broker
// bounds it (group.min.session.timeout.ms, 6 s by default). Heartbeats are
// sent every tenth of it.
func WithSessionTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second || d > 30*time.Minute {
			return fmt.Errorf("stream: session timeout %v out of range [1s, 30m]", d)
		}
		c.sessionTimeout = d
		return nil
	}
}

// WithStartOffset sets where a consumer group without committed offsets
// starts: kafka.FirstOffset (the default: score the whole retained topic) or
// kafka.LastOffset (only new events).
func WithStartOffset(off int64) Option {
	return func(c *config) error {
		if off != kafka.FirstOffset && off != kafka.LastOffset {
			return errors.New("stream: start offset must be kafka.FirstOffset or kafka.LastOffset")
		}
		c.startOffset = off
		return nil
	}
}

// WithStateDir keeps the pipeline's feature and model state in dir across
// restarts: Run takes dir (it fails if another process holds it), restores
// the snapshot dir's CURRENT file names before the first fetch (or starts
// empty, saying why, if there is none or it is corrupt or does not fit;
// it fails if the snapshot cannot be read), and writes a snapshot when it
// returns, after the drain and before the final commit — unless it was
// aborted, or a hard stop left a batch unscored (see snapshot.go). Writing
// it adds to the stop time. dir is created if needed. Without it (the
// default) state lives in memory only and a restart begins with empty
// windows. See WithStateInterval for snapshots while running.
func WithStateDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("stream: empty state directory")
		}
		c.stateDir = dir
		return nil
	}
}

// WithStateInterval also writes a snapshot every d while the pipeline runs
// (default 0: only at shutdown), and commits only the offsets of a
// snapshot (the newest acked one), keeping the snapshots whose offsets may
// be committed. After a crash, the restore picks the snapshot matching the
// group's committed offsets, Kafka re-delivers every event since it and
// the restored state applies it again, so the state is exactly what it
// would have been without the crash; the cost is up to d
// of events scored twice (with equal records) and a consumer lag, as Kafka
// sees it, of up to d (streamscore_stream_commit_held_offsets). Every
// worker pauses between batches while a snapshot is written. It needs
// WithStateDir; d must be >= 1s, or 0. Without it, a crash restores the
// last shutdown snapshot and the events committed since are not in it
// (logged and counted as skipped).
func WithStateInterval(d time.Duration) Option {
	return func(c *config) error {
		if d != 0 && d < time.Second {
			return fmt.Errorf("stream: state interval %v must be >= 1s, or 0", d)
		}
		c.stateInterval = d
		return nil
	}
}

// WithDecisionModels names the models whose thresholds make an event's
// decision (default: every model). The decision is the most severe among
// them; the other models are still scored, published and audited, but only
// inform. New fails if a name matches no model.
func WithDecisionModels(names ...string) Option {
	return func(c *config) error {
		c.deciders = append(c.deciders, names...)
		return nil
	}
}

// WithQueueDepth sets how many fetched, decoded messages may wait in the
// feature stage's input queue (default 4096): the partitions' fetchers
// hand their messages over in slices of up to min(64, depth), and the
// queue holds max(1, depth/64) slices, so at most depth messages wait in
// it; a fetcher blocks while it is full. What each partition may have in
// flight beyond the queue is bounded by its credits (4096 messages).
func WithQueueDepth(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1<<20 {
			return fmt.Errorf("stream: queue depth %d out of range [1, 1048576]", n)
		}
		c.queueDepth = n
		return nil
	}
}

// WithShadowModels adds shadow (challenger) models (default: none). They
// score the same batches as the scoring models, bound to the same features,
// but their scores go only to audit records ("shadow" and "shadow_models"
// members), never into decisions, score or alert records. Each shadow
// model's decision at its own thresholds is compared with the scoring model
// of the same name (a challenger for it) or, if there is none, with the
// event's final decision, and counted in
// streamscore_stream_shadow_agreement_total{model,outcome}. Shadow models
// cost scoring time on the hot path like any model (see
// streamscore_stream_shadow_score_seconds) and their names must be distinct
// from each other; they are kept across SetModels. With WithAudit(false) they
// are still scored and counted, but their scores are published nowhere.
func WithShadowModels(ms ...*models.Model) Option {
	return func(c *config) error {
		for _, m := range ms {
			if m == nil {
				return errors.New("stream: nil shadow model")
			}
		}
		c.shadows = append(c.shadows, ms...)
		return nil
	}
}

// CheckOptions reports whether opts are valid: each applied over the
// defaults, and the feature and decoder options they carry checked as New
// checks them. It is what New would refuse of opts alone (not the checks
// that relate options to each other or to New's arguments), for callers
// that validate their configuration before building a pipeline, such as a
// command line that names the flag behind each option.
func CheckOptions(opts ...Option) error {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return err
		}
	}
	if _, err := features.NewShared(cfg.featureOpts...); err != nil {
		return fmt.Errorf("stream: feature options: %w", err)
	}
	if _, err := features.NewDecoder(cfg.decoderOpts...); err != nil {
		return fmt.Errorf("stream: decoder options: %w", err)
	}
	return nil
}
