package stream

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
)

// replayBatch is the number of rows Replay scores at once.
const replayBatch = 256

// ErrReplayOption is wrapped by Replay's error for an Option it cannot
// honour offline (the message names them).
var ErrReplayOption = errors.New("stream: replay: option has no effect offline")

// replayIgnored names the options set in c (away from their defaults) that
// Replay does not honour.
func (c *config) replayIgnored() []string {
	d := defaultConfig()
	var out []string
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"WithWorkers", c.workers != d.workers},
		{"WithMaxBatch", c.maxBatch != d.maxBatch},
		{"WithMaxDelay", c.maxDelay != d.maxDelay},
		{"WithHoldBatches", c.holdBatches != d.holdBatches},
		{"WithInFlight", c.inFlight != d.inFlight},
		{"WithQueueDepth", c.queueDepth != d.queueDepth},
		{"WithDrainTimeout", c.drainTimeout != d.drainTimeout},
		{"WithCommitInterval", c.commitInterval != d.commitInterval},
		{"WithLabelsTopic", c.labelsTopic != d.labelsTopic},
		{"WithAudit", c.audit != d.audit},
		{"WithAuditFormat", c.auditProto != d.auditProto},
		{"WithRegisterer", c.reg != nil},
		{"WithDecoderOptions", len(c.decoderOpts) > 0},
		{"WithDialer", c.dialer != nil},
		{"WithLatencyObserver", c.observe != nil},
		{"WithReaderObserver", c.connObserve != nil},
		{"WithStartOffset", c.startOffset != d.startOffset},
		{"WithSessionTimeout", c.sessionTimeout != d.sessionTimeout},
		{"WithShadowModels", len(c.shadows) > 0},
		{"WithStateDir", c.stateDir != d.stateDir},
		{"WithStateInterval", c.stateInterval != d.stateInterval},
		{"WithAlertRateGuard", c.guardEvents != d.guardEvents || c.guardFactor != d.guardFactor},
		{"WithSource", c.source != nil},
		{"WithCheckpoints", c.ckpt != nil},
		{"WithSharedReplicas", c.replicas != d.replicas},
		{"WithAlignIdleWait", c.alignIdle != d.alignIdle},
		{"WithAlignLagWait", c.alignLag != d.alignLag},
		{"WithLabelsAlignIdleWait", c.labelsIdle != d.labelsIdle},
		{"WithEventDecoder", c.eventDec != nil},
		{"WithLabelDecoder", c.labelDec != nil},
		{"WithRepartition", c.repart != nil},
	} {
		if o.set {
			out = append(out, o.name)
		}
	}
	return out
}

// Replay scores recorded history exactly as the stream would have: every
// event before to goes through the same feature code in event-time order
// (features.Replay: labels are applied once their own timestamp has passed),
// and each event with a timestamp in [from, to) is scored by ms and turned
// into the score record the pipeline publishes, with the same decision rule
// and reasons (WithDecisionModels, WithReasons, WithFeatureOptions,
// WithUnpinnedModels and WithLogger apply, and a model whose inputs the
// features define otherwise than when it was trained is refused as by New).
// Any other option is an error naming it (ErrReplayOption): it has no
// meaning offline, and an option that is silently ignored misleads; one
// that leaves its setting at the default is not detected. fn receives the records in event-time order; the
// record is reused after fn returns. A record's scored_at is the event's own
// time and its latency_ms is 0: offline, the moment of scoring is the moment
// of the event.
//
// Scores equal the stream's for the same event and the same feature state:
// the kernels compute each row independently of the batch it is in. They
// differ where the stream's state did: labels the stream received at another
// point of its input than their timestamp, or events a worker applied out of
// event-time order beyond the allowed lateness.
func Replay(events []features.Event, labels []features.Label, ms []*models.Model, from, to time.Time,
	fn func(*output.ScoreRecord) error, opts ...Option) error {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return err
		}
	}
	if ignored := cfg.replayIgnored(); len(ignored) > 0 {
		return fmt.Errorf("%w: %s", ErrReplayOption, strings.Join(ignored, ", "))
	}
	if len(ms) == 0 {
		return errors.New("stream: replay: no models")
	}
	if !to.After(from) {
		return fmt.Errorf("stream: replay: empty range [%v, %v)", from, to)
	}
	shared, err := features.NewShared(cfg.featureOpts...)
	if err != nil {
		return fmt.Errorf("stream: replay: feature options: %w", err)
	}
	b, err := features.NewBuilder(shared, cfg.featureOpts...)
	if err != nil {
		return fmt.Errorf("stream: replay: feature options: %w", err)
	}
	names := b.Names()
	if err := CheckModelFeatures(ms, nil, ModelFeatureDefs(b.Definitions()), cfg.allowUnpinned, cfg.log); err != nil {
		return fmt.Errorf("stream: replay: %w", err)
	}
	width := len(names)
	scorers := make([]*models.Scorer, len(ms))
	for i, m := range ms {
		s, err := m.Bind(names)
		if err != nil {
			return fmt.Errorf("stream: replay: %w", err) // names the model and its missing inputs
		}
		scorers[i] = s
	}
	decides, err := decidingModels(ms, cfg.deciders)
	if err != nil {
		return fmt.Errorf("stream: replay: %w", err)
	}
	rc := newRecorder(scorers, decides, cfg.reasons)
	seq := newSeqStates(shared.TTL(), nil, nil)
	slotOf, _ := seq.setModels(scorers, nil)
	var cards []*cardSeq
	var emit []bool
	var states [][]float32

	// Only history before `to` matters; features.Replay sorts what it gets.
	hist := make([]features.Event, 0, len(events))
	for i := range events {
		if events[i].TS.Before(to) {
			hist = append(hist, events[i])
		}
	}
	x := make([]float32, replayBatch*width)
	scores := make([][]float32, len(ms))
	for j := range scores {
		scores[j] = make([]float32, replayBatch)
	}
	evs := make([]features.Event, 0, replayBatch)
	flush := func() error {
		rows := len(evs)
		if rows == 0 {
			return nil
		}
		for j, s := range scorers {
			if slotOf[j] < 0 {
				s.Score(x[:rows*width], rows, scores[j][:rows])
				continue
			}
			states = states[:0]
			for r := range rows {
				states = append(states, seq.state(cards[r], slotOf[j]))
			}
			s.ScoreSeq(x[:rows*width], rows, states, nil, scores[j][:rows])
		}
		if seq.stateful() {
			seq.sweep(rows)
		}
		for r := range rows {
			if !emit[r] {
				continue
			}
			rc.fill(&evs[r], x[:rows*width], r, scores, evs[r].TS, 0)
			if err := fn(&rc.rec); err != nil {
				return err
			}
		}
		evs, cards, emit = evs[:0], cards[:0], emit[:0]
		return nil
	}
	err = features.ReplayEvicting(hist, labels, cfg.featureOpts, func(e *features.Event, row []float32, evicted []string) error {
		for _, id := range evicted { // as the stream's workers do
			seq.drop(id)
		}
		before := e.TS.Before(from)
		if before && !seq.stateful() {
			return nil
		}
		// With a sequential model, history before from is scored too (and
		// its records dropped): each event advances its card's state, as
		// in the stream.
		if seq.stateful() {
			cards = append(cards, seq.cardOf(e))
		}
		emit = append(emit, !before)
		copy(x[len(evs)*width:(len(evs)+1)*width], row)
		evs = append(evs, *e)
		if len(evs) == replayBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}
