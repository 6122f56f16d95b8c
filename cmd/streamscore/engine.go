package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// engineConfig is the process configuration of the scoring engine, shared
// by `run` (from flags, environment and YAML) and `demo` (filled in from the
// embedded servers). It is translated into package options by build; it is
// never passed down into packages.
type engineConfig struct {
	Brokers          string
	Group            string
	Topic            string
	LabelsTopic      string
	NATS             string
	NATSMode         string
	ScoresSubject    string
	AlertsSubject    string
	ScoresTopic      string
	AlertsTopic      string
	AuditTopic       string
	DeadLetterTopic  string
	Models           listFlag
	ModelsDir        string
	ModelsPoll       time.Duration
	ShadowModels     listFlag
	DecisionModels   string
	MaxBatch         int
	MaxDelay         time.Duration
	HoldBatches      bool
	Workers          int
	InFlight         int
	DrainTimeout     time.Duration
	MaxFutureSkew    time.Duration
	MaxLateness      time.Duration
	TTL              time.Duration
	FeatureSpec      string
	MetricsAddr      string
	StartAtEnd       bool
	SessionTimeout   time.Duration
	AlignIdleWait    time.Duration
	AlignLagWait     time.Duration
	LabelsIdleWait   time.Duration
	SharedReplicas   bool
	StateDir         string
	StateInterval    time.Duration
	CheckpointStore  string
	CheckpointTopic  string
	CheckpointBucket string
	// HTTP is the HTTP surface of --metrics-addr: token, TLS, pprof.
	HTTP httpSurface

	// Model signatures: --model-trust, --allow-unsigned-models.
	modelTrustConfig

	// kafkaSecurity is TLS and SASL for every Kafka connection
	// (kafka_security.go).
	kafkaSecurity

	// natsSecurity is TLS and authentication for NATS: --nats-tls-*,
	// --nats-user, ... (nats_security.go).
	natsSecurity

	// Card-number pseudonyms (pan.go).
	panConfig

	// Avro and Protobuf input with a schema registry: --input-format,
	// --schema-registry, ... (wire_input.go).
	wireInput

	// Feature definitions and the alert-rate guard: --allow-unpinned-models,
	// --alert-guard-* (feature_defs.go).
	featureCheckConfig
	// State caps and field lengths: --max-cards, --max-terminals,
	// --max-field-bytes (memcap.go).
	memConfig

	// JetStream batches, the Kafka producer, audit compression:
	// --nats-batch, --kafka-producer, --audit-compression (sink_io.go).
	sinkIO

	// Where terminal state is kept with several members: --terminal-stage,
	// --repartition-topic, ... (terminal_stage.go).
	terminalStage

	// noSinks builds the pipeline without sinks (no connection is made):
	// for `streamscore state`, which never runs it. Not a flag.
	noSinks bool
}

// register defines the engine flags on fs.
func (c *engineConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&c.Group, "group", "streamscore", "Kafka consumer group of the engine (labels are read by every process, outside the group)")
	fs.StringVar(&c.Topic, "topic", "transactions", "Kafka topic of transaction events (key = card_id)")
	fs.StringVar(&c.LabelsTopic, "labels-topic", "labels", "Kafka topic of delayed fraud labels; empty disables label feedback")
	fs.StringVar(&c.NATS, "nats", "nats://127.0.0.1:4222", "NATS server URL(s); empty disables the NATS sink")
	fs.StringVar(&c.NATSMode, "nats-mode", "jetstream", "how records go to NATS: jetstream (every subject must be captured by a JetStream stream, else the start fails; each record is acked once stored, and offsets are committed on those acks), core (core publish and a flush: the server received them, nothing is stored; offsets are committed on that weaker ack), or auto (jetstream where a stream captures the subject, else core)")
	fs.StringVar(&c.ScoresSubject, "scores-subject", "streamscore.scores", "NATS subject for every score record; empty disables")
	fs.StringVar(&c.AlertsSubject, "alerts-subject", "streamscore.alerts", "NATS subject for alert records; empty disables")
	fs.StringVar(&c.ScoresTopic, "scores-topic", "scores", "Kafka topic for every score record; empty disables")
	fs.StringVar(&c.AlertsTopic, "alerts-topic", "alerts", "Kafka topic for alert records; empty disables")
	fs.StringVar(&c.AuditTopic, "audit-topic", "audit", "Kafka topic for audit records (features and thresholds); empty disables")
	fs.StringVar(&c.DeadLetterTopic, "deadletter-topic", "deadletter", "Kafka topic for dead letters; empty disables (bad events are then only counted in metrics)")
	fs.Var(&c.Models, "model", "model file to score with (repeatable; default: the models shipped in the binary); re-read on SIGHUP and POST /-/reload")
	fs.StringVar(&c.ModelsDir, "models-dir", "", "directory whose *.json files are the model set, watched for changes (instead of --model); new versions are verified and swapped in between batches, a bad one leaves the old set serving; its shadow/ subdirectory, if present, holds the shadow models, reloaded with them")
	fs.DurationVar(&c.ModelsPoll, "models-poll", 2*time.Second, "how often --models-dir is checked for changed files (name, size, mtime, then sha256)")
	fs.Var(&c.ShadowModels, "shadow-model", "shadow (challenger) model file (repeatable): scored beside the models, its scores go only to audit records and to the agreement metric, never into decisions")
	fs.StringVar(&c.DecisionModels, "decision-models", "", "comma-separated names of the models whose thresholds decide allow/review/alert; the others are scored and published but only inform (default: every model given with --model; with the shipped models, \"fraud\")")
	fs.IntVar(&c.MaxBatch, "max-batch", 256, "close a micro-batch at this many events")
	fs.DurationVar(&c.MaxDelay, "max-delay", 2*time.Millisecond, "close a micro-batch this long after its first event (at the latest: by default it closes as soon as there is nothing more to read)")
	fs.BoolVar(&c.HoldBatches, "hold-batches", false, "keep a micro-batch open until it is full or --max-delay has passed even when there is nothing more to read (fewer, larger sink writes at moderate rates; more latency)")
	fs.IntVar(&c.Workers, "workers", 2, "scoring workers (partition p is scored by worker p mod workers; any count restores a --state-dir snapshot)")
	fs.DurationVar(&c.AlignIdleWait, "align-idle-wait", 100*time.Millisecond, "events of all partitions update shared (terminal) state in event-time order, as `score` does; a partition with nothing to read holds the others back at most this long (the latency it adds). 0: never wait for a quiet partition; negative: no alignment (arrival order; refused with --terminal-stage repartition)")
	fs.DurationVar(&c.AlignLagWait, "align-lag-wait", 10*time.Second, "a partition Kafka still has events for but that delivers none holds the others back at most this long")
	fs.DurationVar(&c.LabelsIdleWait, "labels-align-idle-wait", 0, "--align-idle-wait for the partitions of --labels-topic: a labels partition with nothing to read holds the events back at most this long. 0: never (a live label is applied when it arrives; a labels backlog — a restart, labels written during an outage — is still applied in event-time order); give it a wait when live labels must be placed as a replay places them (event time faster than the clock)")
	fs.BoolVar(&c.SharedReplicas, "shared-replicas", true, "with several members in the group, each also reads the partitions it does not claim to keep terminal (shared-entity) features exact; false: each member's terminals see only its own partitions")
	fs.IntVar(&c.InFlight, "in-flight", 4, "closed batches per worker waiting for sink acks before intake pauses")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, time allowed to publish and commit in-flight batches")
	fs.DurationVar(&c.MaxFutureSkew, "max-future-skew", 5*time.Minute, "events timestamped further than this in the future are dead-lettered")
	fs.StringVar(&c.FeatureSpec, "features", "", "feature spec YAML (default: the embedded default spec, docs/features.md); the models must be trained on the same spec")
	fs.DurationVar(&c.TTL, "ttl", 35*24*time.Hour, "a card or terminal idle this long (in event time) loses its state: windows and sequence-model state")
	fs.DurationVar(&c.MaxLateness, "max-lateness", time.Hour, "an event this far behind its card's or terminal's newest event still updates the windows at its own time; later ones are scored but leave the state alone")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9464", "address of the /metrics HTTP endpoint; empty disables")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 30*time.Second, "consumer group session timeout: a member silent this long is declared dead and its partitions move; also how long a member restarted after a crash waits for its partitions (the broker allows 6s..5m by default)")
	fs.BoolVar(&c.StartAtEnd, "start-at-end", false, "a new consumer group starts at the end of the topic instead of its beginning")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory for snapshots of the feature and model state: restored at start, written at shutdown (and every --state-interval); empty keeps state in memory only, so a restart begins with empty windows")
	c.HTTP.register(fs)
	c.natsSecurity.register(fs)
	c.panConfig.register(fs)
	fs.DurationVar(&c.StateInterval, "state-interval", 0, "with --state-dir, also snapshot the state this often while running (workers pause meanwhile) and commit offsets only as far as the last snapshot, so that after a crash Kafka re-delivers what the restored state lacks; with --checkpoint-store, the checkpoint cadence; 0 = only at shutdown")
	fs.StringVar(&c.CheckpointStore, "checkpoint-store", "none", "where each partition's state is checkpointed for every member of the group, so that it follows the partition on a failover or rebalance: kafka (a compacted topic, --checkpoint-topic), jetstream (the object store, --checkpoint-bucket, through --nats) or none; needs --state-interval")
	fs.StringVar(&c.CheckpointTopic, "checkpoint-topic", "streamscore-checkpoints", "compacted topic of --checkpoint-store kafka (created compacted when missing; one that deletes records is refused)")
	fs.StringVar(&c.CheckpointBucket, "checkpoint-bucket", "streamscore-checkpoints", "JetStream object store bucket of --checkpoint-store jetstream (created when missing)")
	c.registerTrust(fs)
	c.kafkaSecurity.register(fs)
	c.kafkaSecurity.registerCheck(fs)
	c.registerFeatureCheck(fs, true)
	c.memConfig.register(fs)
	c.sinkIO.register(fs)
	c.terminalStage.register(fs)
	c.wireInput.register(fs)
}

// Validate checks the configuration as a whole.
func (c *engineConfig) Validate() error {
	var errs []error
	if len(splitList(c.Brokers)) == 0 {
		errs = append(errs, errors.New("--brokers is empty"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("--group is empty"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("--topic is empty"))
	}
	if !c.noSinks && c.NATS == "" && c.ScoresTopic == "" && c.AlertsTopic == "" && c.AuditTopic == "" {
		errs = append(errs, errors.New("every sink is disabled: set --nats or a Kafka output topic"))
	}
	if _, err := sinks.ParseNATSMode(c.NATSMode); err != nil {
		errs = append(errs, fmt.Errorf("--nats-mode: %w", err))
	}
	if c.NATS != "" && c.ScoresSubject == "" && c.AlertsSubject == "" {
		errs = append(errs, errors.New("--nats is set but both --scores-subject and --alerts-subject are empty"))
	}
	errs = append(errs, c.natsSecurity.Validate(c.NATS))
	// The ranges are stream's and features': each flag's option is checked
	// by the package that applies it, and the error names the flag.
	for _, f := range []struct {
		flag  string
		value any
		opt   stream.Option
	}{
		{"--max-batch", c.MaxBatch, stream.WithMaxBatch(c.MaxBatch)},
		{"--max-delay", c.MaxDelay, stream.WithMaxDelay(c.MaxDelay)},
		{"--workers", c.Workers, stream.WithWorkers(c.Workers)},
		{"--in-flight", c.InFlight, stream.WithInFlight(c.InFlight)},
		{"--drain-timeout", c.DrainTimeout, stream.WithDrainTimeout(c.DrainTimeout)},
		{"--state-interval", c.StateInterval, stream.WithStateInterval(c.StateInterval)},
		{"--ttl", c.TTL, stream.WithFeatureOptions(features.WithTTL(c.TTL))},
		{"--max-lateness", c.MaxLateness, stream.WithFeatureOptions(features.WithMaxLateness(c.MaxLateness))},
		{"--align-idle-wait", c.AlignIdleWait, stream.WithAlignIdleWait(c.AlignIdleWait)},
		{"--align-lag-wait", c.AlignLagWait, stream.WithAlignLagWait(c.AlignLagWait)},
		{"--labels-align-idle-wait", c.LabelsIdleWait, stream.WithLabelsAlignIdleWait(c.LabelsIdleWait)},
	} {
		if err := stream.CheckOptions(f.opt); err != nil {
			errs = append(errs, fmt.Errorf("%s %v: %w", f.flag, f.value, err))
		}
	}
	if c.AlignIdleWait > c.AlignLagWait && c.TerminalStage != "repartition" {
		// The repartition mode's terminal stage waits longer for a lagging
		// source (the lag wait plus three session timeouts).
		errs = append(errs, fmt.Errorf("--align-idle-wait %v is above --align-lag-wait %v: a quiet partition would hold the others back longer than a lagging one; raise --align-lag-wait or lower --align-idle-wait", c.AlignIdleWait, c.AlignLagWait))
	}
	if c.LabelsIdleWait > c.AlignLagWait {
		errs = append(errs, fmt.Errorf("--labels-align-idle-wait %v is above --align-lag-wait %v: raise --align-lag-wait or lower --labels-align-idle-wait", c.LabelsIdleWait, c.AlignLagWait))
	}
	if c.AlignIdleWait < 0 && c.TerminalStage == "repartition" {
		errs = append(errs, fmt.Errorf("--align-idle-wait %v (no alignment) with --terminal-stage repartition: the terminal stage always applies events in event-time order; --align-idle-wait 0 gives the lowest latency", c.AlignIdleWait))
	}
	if c.ModelsDir != "" && len(c.Models) > 0 {
		errs = append(errs, errors.New("--models-dir and --model are exclusive: the directory is the whole model set"))
	}
	if c.ModelsDir != "" && c.ModelsPoll <= 0 {
		errs = append(errs, fmt.Errorf("--models-poll %v must be positive", c.ModelsPoll))
	}
	if c.CheckpointStore == "" {
		c.CheckpointStore = "none"
	}
	switch c.CheckpointStore {
	case "none", "kafka":
	case "jetstream":
		if c.NATS == "" {
			errs = append(errs, errors.New("--checkpoint-store jetstream needs --nats"))
		}
	default:
		errs = append(errs, fmt.Errorf("--checkpoint-store %q: want kafka, jetstream or none", c.CheckpointStore))
	}
	if c.CheckpointStore != "none" && c.StateInterval < time.Second {
		errs = append(errs, fmt.Errorf("--checkpoint-store %s needs --state-interval (>= 1s): the checkpoint cadence", c.CheckpointStore))
	}
	if c.StateInterval != 0 && c.StateDir == "" && c.CheckpointStore == "none" {
		errs = append(errs, fmt.Errorf("--state-interval %v needs --state-dir or --checkpoint-store", c.StateInterval))
	}
	if c.MaxFutureSkew < 0 {
		errs = append(errs, fmt.Errorf("--max-future-skew %v must not be negative", c.MaxFutureSkew))
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateTrust(); err != nil {
		errs = append(errs, err)
	}
	if err := checkBrokerList("--brokers", splitList(c.Brokers)); err != nil {
		errs = append(errs, err)
	}
	if err := c.kafkaSecurity.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.memConfig.Validate())
	errs = append(errs, c.sinkIO.Validate())
	errs = append(errs, c.terminalStage.Validate(c.Group, c.Topic))
	if c.repartition() && c.CheckpointStore == "none" {
		errs = append(errs, errors.New("--terminal-stage repartition needs --checkpoint-store (the terminal state lives in the checkpoints of the repartition topic's partitions)"))
	}
	errs = append(errs, c.wireInput.Validate())
	return errors.Join(errs...)
}

// modelSource returns where the scoring models come from: --models-dir,
// --model files, or the shipped models.
func (c *engineConfig) modelSource() modelSource {
	return modelSource{dir: c.ModelsDir, files: c.Models, verify: c.trustVerifier()}
}

// loadModels returns the models of --models-dir or --model, or the shipped
// ones.
func (c *engineConfig) loadModels() ([]*models.Model, error) {
	ms, _, _, err := c.modelSource().load(nil)
	return ms, err
}

// loadShadowModels returns the models of --shadow-model.
func (c *engineConfig) loadShadowModels() ([]*models.Model, error) {
	ms, err := loadFiles(c.ShadowModels, c.trustVerifier())
	if err != nil {
		return nil, fmt.Errorf("shadow model: %w", err)
	}
	return ms, nil
}

// engine is a built pipeline with the resources it owns.
type engine struct {
	pipeline *stream.Pipeline
	ckpt     stream.CheckpointStore // --checkpoint-store, or nil
	sink     *output.Fanout
	nc       *nats.Conn
	models   []*models.Model
	// health is the connections' health, for /readyz.
	health *connHealth
	// modelState is the state of --models-dir the models were loaded from
	// (nil without it): the reloader's starting point.
	modelState models.DirState
}

func (e *engine) Close() {
	if e.sink != nil {
		e.sink.Close()
	}
	if e.ckpt != nil {
		e.ckpt.Close()
	}
	if e.nc != nil {
		e.nc.Close()
	}
}

// buildEngine connects the sinks and builds the pipeline.
func buildEngine(c *engineConfig, reg prometheus.Registerer, log *slog.Logger, extra ...stream.Option) (*engine, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := c.trustVerifier().observe(reg, log); err != nil {
		return nil, err
	}
	if c.AuditFormat != string(stream.AuditJSON) && c.AuditTopic == "" {
		log.Warn("--audit-format has no effect: --audit-topic is empty, so no audit records are written", "audit_format", c.AuditFormat)
	}
	ms, dirShadows, state, err := c.modelSource().load(nil)
	if err != nil {
		return nil, fmt.Errorf("load models: %w", err)
	}
	for _, m := range ms {
		log.Info("model loaded", "name", m.Name(), "ident", m.Ident(), "inputs", len(m.Inputs()))
	}
	shadows, err := c.loadShadowModels()
	if err != nil {
		return nil, fmt.Errorf("load models: %w", err)
	}
	if dirShadows != nil {
		if len(shadows) > 0 {
			return nil, fmt.Errorf("shadow models: both --shadow-model and %s/%s/ are set: use one", c.ModelsDir, models.ShadowDir)
		}
		shadows = dirShadows
	}
	for _, m := range shadows {
		log.Info("shadow model loaded", "name", m.Name(), "ident", m.Ident(), "inputs", len(m.Inputs()))
	}
	if !c.noSinks {
		// Read the CA, the client key pair, the password and the token
		// now: a missing or bad file fails the start before any connection.
		if err := c.kafkaSecurity.load(); err != nil {
			return nil, err
		}
	}
	e := &engine{models: ms, modelState: state, health: newConnHealth(reg, log)}
	var ss []output.Sink
	if c.NATS != "" && !c.noSinks {
		nc, err := connectNATS(c, e.health, log)
		if err != nil {
			return nil, err
		}
		e.nc = nc
		opts := []sinks.NATSOption{sinks.WithNATSRegisterer(reg)}
		if c.ScoresSubject != "" {
			opts = append(opts, sinks.WithNATSSubject(output.KindScore, c.ScoresSubject))
		}
		if c.AlertsSubject != "" {
			opts = append(opts, sinks.WithNATSSubject(output.KindAlert, c.AlertsSubject))
		}
		mode, err := sinks.ParseNATSMode(c.NATSMode)
		if err != nil {
			e.Close()
			return nil, err
		}
		nio, err := c.sinkIO.natsOptions()
		if err != nil {
			e.Close()
			return nil, err
		}
		ns, err := sinks.NewNATS(nc, append(append(opts, nio...), sinks.WithNATSMode(mode))...)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("nats sink (--nats-mode %s): %w", mode, err)
		}
		for _, k := range []output.Kind{output.KindScore, output.KindAlert} {
			subj := map[output.Kind]string{output.KindScore: c.ScoresSubject, output.KindAlert: c.AlertsSubject}[k]
			if subj == "" {
				continue
			}
			if st := ns.Stream(k); st != "" {
				log.Info("nats output", "kind", k.String(), "subject", subj, "jetstream_stream", st, "batch", ns.Batch(k).String())
			} else {
				log.Warn("nats output by core publish: records are not stored, and offsets are committed once the server has received them", "kind", k.String(), "subject", subj, "mode", mode.String())
			}
		}
		ss = append(ss, ns)
	}
	kopts := []sinks.KafkaOption{sinks.WithKafkaRegisterer(reg)}
	for kind, topic := range map[output.Kind]string{output.KindScore: c.ScoresTopic, output.KindAlert: c.AlertsTopic,
		output.KindAudit: c.AuditTopic, output.KindDeadLetter: c.DeadLetterTopic} {
		if topic != "" {
			kopts = append(kopts, sinks.WithKafkaTopic(kind, topic))
		}
	}
	var dialer *kafka.Dialer
	if !c.noSinks {
		if dialer, err = c.dialer(); err != nil {
			e.Close()
			return nil, err
		}
	}
	if len(kopts) > 1 && !c.noSinks {
		t, err := c.transport()
		if err != nil {
			e.Close()
			return nil, err
		}
		if t != nil {
			kopts = append(kopts, sinks.WithKafkaTransport(t))
		}
		// With --kafka-producer writer, kafka-go allocates a batch of
		// BatchSize messages per partition and write; size it to our
		// micro-batches, not its default of 100 (or 1000), so a write does
		// not zero megabytes it never fills.
		kopts = append(kopts, sinks.WithKafkaBatch(c.MaxBatch, time.Millisecond))
		kio, err := c.sinkIO.kafkaOptions()
		if err != nil {
			e.Close()
			return nil, err
		}
		ks, err := sinks.NewKafka(splitList(c.Brokers), append(kopts, kio...)...)
		if err != nil {
			e.Close()
			return nil, err
		}
		ss = append(ss, ks)
	}
	// A sink that keeps failing (down, or a misnamed topic retried without
	// end) is logged with its cause (rate-limited) and makes /readyz 503
	// until it takes writes again.
	fan, err := output.NewFanout(ss, output.WithFanoutRegisterer(reg), output.WithFanoutLogger(log),
		output.WithFanoutClassifier(sinks.Classify), // for any sink that does not classify its own errors
		output.WithFanoutObserver(func(sink string, err error) {
			if err == nil {
				e.health.Up("sink " + sink)
				return
			}
			e.health.Down("sink "+sink, sinkCause(err), err)
		}))
	if err != nil {
		for _, s := range ss {
			s.Close()
		}
		e.Close()
		return nil, fmt.Errorf("build sinks: %w", err)
	}
	e.sink = fan
	opts := []stream.Option{
		stream.WithReaderObserver(func(reader string, err error) {
			if err == nil {
				e.health.Up(reader)
				return
			}
			e.health.Down(reader, "fetch", err)
		}),
		stream.WithRegisterer(reg),
		stream.WithLogger(log),
		stream.WithWorkers(c.Workers),
		stream.WithMaxBatch(c.MaxBatch),
		stream.WithMaxDelay(c.MaxDelay),
		stream.WithHoldBatches(c.HoldBatches),
		stream.WithInFlight(c.InFlight),
		stream.WithDrainTimeout(c.DrainTimeout),
		stream.WithSessionTimeout(c.SessionTimeout),
		stream.WithAlignIdleWait(c.AlignIdleWait),
		stream.WithAlignLagWait(c.AlignLagWait),
		stream.WithLabelsAlignIdleWait(c.LabelsIdleWait),
		stream.WithSharedReplicas(c.SharedReplicas),
		stream.WithLabelsTopic(c.LabelsTopic),
		stream.WithAudit(c.AuditTopic != ""),
		stream.WithAuditFormat(stream.AuditFormat(c.AuditFormat)),
		stream.WithDecoderOptions(features.WithMaxFutureSkew(c.MaxFutureSkew)),
		stream.WithFeatureOptions(features.WithMaxLateness(c.MaxLateness), features.WithTTL(c.TTL)),
		stream.WithFeatureOptions(c.memConfig.featureOptions()...),
		stream.WithDecoderOptions(c.memConfig.decoderOptions()...),
	}
	if dialer != nil {
		opts = append(opts, stream.WithDialer(dialer))
	}
	panOpts, err := c.panConfig.decoderOptions(log)
	if err != nil {
		e.Close()
		return nil, err
	}
	opts = append(opts, stream.WithDecoderOptions(panOpts...))
	wireOpts, err := c.wireInput.streamOptions(reg, log, e.health,
		append(append([]features.DecoderOption{features.WithMaxFutureSkew(c.MaxFutureSkew)}, c.memConfig.decoderOptions()...), panOpts...))
	if err != nil {
		e.Close()
		return nil, err
	}
	opts = append(opts, wireOpts...)
	if c.FeatureSpec != "" {
		spec, err := loadSpec(c.FeatureSpec)
		if err != nil {
			e.Close()
			return nil, err
		}
		opts = append(opts, stream.WithFeatureOptions(features.WithSpec(spec)))
	}
	opts = append(opts, c.featureCheckConfig.streamOptions(true)...)
	if c.StartAtEnd {
		opts = append(opts, stream.WithStartOffset(kafka.LastOffset))
	}
	if c.StateDir != "" {
		opts = append(opts, stream.WithStateDir(c.StateDir))
	}
	if c.StateInterval > 0 {
		opts = append(opts, stream.WithStateInterval(c.StateInterval))
	}
	if c.CheckpointStore != "none" && !c.noSinks {
		store, err := c.checkpoints(e, dialer)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.ckpt = store
		opts = append(opts, stream.WithCheckpoints(store))
		if c.repartition() {
			rt, err := c.transport()
			if err != nil {
				e.Close()
				return nil, err
			}
			var trt kafka.RoundTripper
			if rt != nil {
				trt = rt
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = c.terminalStage.ensureTopics(ctx, splitList(c.Brokers), trt, c.Topic)
			cancel()
			if err != nil {
				e.Close()
				return nil, fmt.Errorf("--terminal-stage repartition: %w", err)
			}
			opts = append(opts, c.terminalStage.streamOption())
		}
	}
	// With the shipped set, the MLP decides; the logistic baseline and the
	// expected-loss model are scored and audited.
	deciders := decisionModels(c.DecisionModels, len(c.Models) == 0 && c.ModelsDir == "")
	opts = append(opts, stream.WithDecisionModels(deciders...))
	if len(shadows) > 0 {
		opts = append(opts, stream.WithShadowModels(shadows...))
	}
	p, err := stream.New(splitList(c.Brokers), c.Group, c.Topic, ms, e.sink, append(opts, extra...)...)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.pipeline = p
	return e, nil
}

// checkpoints opens the --checkpoint-store: the compacted topic through the
// brokers' TLS and SASL settings, or the object store through the NATS
// connection.
func (c *engineConfig) checkpoints(e *engine, dialer *kafka.Dialer) (stream.CheckpointStore, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch c.CheckpointStore {
	case "kafka":
		st, err := stream.NewKafkaCheckpoints(ctx, splitList(c.Brokers), c.CheckpointTopic, dialer)
		if err != nil {
			return nil, fmt.Errorf("checkpoint store (--checkpoint-store kafka, --checkpoint-topic %s): %w", c.CheckpointTopic, err)
		}
		return st, nil
	case "jetstream":
		if e.nc == nil {
			return nil, errors.New("--checkpoint-store jetstream needs --nats")
		}
		js, err := jetstream.New(e.nc)
		if err != nil {
			return nil, fmt.Errorf("checkpoint store: %w", err)
		}
		st, err := stream.NewJetStreamCheckpoints(ctx, js, c.CheckpointBucket)
		if err != nil {
			return nil, fmt.Errorf("checkpoint store (--checkpoint-store jetstream, --checkpoint-bucket %s): %w", c.CheckpointBucket, err)
		}
		return st, nil
	}
	return nil, nil
}

// sinkCause is the bounded cause of a sink failure, for /readyz and
// streamscore_transport_failures_total: "rejected" (a record refused for
// what it is), "config" (a permanent refusal: authorization, an unknown
// topic or subject), "unavailable" (retryable: down, timeouts, leadership
// changes) or "error".
func sinkCause(err error) string {
	switch {
	case sinks.IsRejection(err):
		return "rejected"
	case sinks.IsPermanent(err):
		return "config"
	case sinks.IsRetryable(err):
		return "unavailable"
	}
	return "error"
}

// newRegistry returns the process registry with Go runtime and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerKernelPath(reg, slog.Default())
	return reg
}
