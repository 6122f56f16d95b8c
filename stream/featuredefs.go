package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// WithUnpinnedModels accepts (allow true) models whose files record no
// feature definitions (written before models recorded them, or ONNX
// imports without a spec) instead of refusing them. Default false: every
// model must record the definition of each input it reads, and a model
// whose inputs the pipeline defines otherwise (another window, offset,
// aggregation, transform, ...) is refused by New, SetModels, Reload and
// Replay with an error naming the feature and both definitions
// (models.ErrFeatureMismatch). The trap: an accepted unpinned model is
// scored with whatever the pipeline's spec computes under its input names;
// nothing checks it was trained on that (a warning is logged per model
// set). A mismatch is refused whatever this says.
func WithUnpinnedModels(allow bool) Option {
	return func(c *config) error {
		c.allowUnpinned = allow
		return nil
	}
}

// WithAlertRateGuard sets the alert-rate guard: per scoring model whose
// file records a validation alert rate (training.validation.alert_rate,
// written by streamscore train), the share of events at or above its alert
// threshold is measured over consecutive windows of events events; a
// window whose rate is above factor × the validation rate, or below it ÷
// factor, counts one streamscore_stream_alert_rate_anomalies_total{model,
// direction="high"|"low"} and is logged (at most once a minute per model,
// with the number of windows not logged). It is a guard, not a block:
// scoring goes on. Default 10000 events and factor 5; events 0 disables it.
// events must be 0 or in [100, 10^9], factor > 1. The trap: traffic
// unlike the validation data (another bank, a fraud wave, a quiet night)
// moves the rate too; with small windows a low validation rate gives
// noisy windows (10000 events at 0.6% expect 60 alerts).
func WithAlertRateGuard(events int, factor float64) Option {
	return func(c *config) error {
		if events != 0 && (events < 100 || events > 1e9) {
			return fmt.Errorf("stream: alert rate guard window %d events: want 0 (off) or [100, 1e9]", events)
		}
		if !(factor > 1) || factor > 1e6 {
			return fmt.Errorf("stream: alert rate guard factor %v: want > 1", factor)
		}
		c.guardEvents, c.guardFactor = events, factor
		return nil
	}
}

// ModelFeatureDefs converts feature definitions (features) to the form model
// files record and check them in (models), which do not import each other.
func ModelFeatureDefs(defs []features.Definition) []models.FeatureDef {
	out := make([]models.FeatureDef, len(defs))
	for i, d := range defs {
		out[i] = models.FeatureDef{Name: d.Name, Text: d.Text, Hash: d.Hash}
	}
	return out
}

// CheckModelFeatures checks every model of ms and shadows against the
// feature definitions defs (ModelFeatureDefs of the pipeline's spec): a
// mismatch is an error naming the feature (models.ErrFeatureMismatch); a
// model that records no definitions is an error (models.ErrUnpinned) unless
// allowUnpinned, then a warning on log. The pipeline, Replay and the
// command line's score, predict and inspect all check through it.
func CheckModelFeatures(ms, shadows []*models.Model, defs []models.FeatureDef, allowUnpinned bool, log *slog.Logger) error {
	for i, m := range append(append([]*models.Model(nil), ms...), shadows...) {
		err := m.CheckFeatures(defs)
		if errors.Is(err, models.ErrUnpinned) && allowUnpinned {
			log.Warn("model records no feature definitions; scoring it anyway (unpinned models allowed): nothing checks that its inputs are the features it was trained on",
				"model", m.Ident(), "shadow", i >= len(ms))
			continue
		}
		if err != nil {
			if i >= len(ms) {
				return fmt.Errorf("shadow: %w", err)
			}
			return err
		}
	}
	return nil
}

// alertGuard measures one scoring model's alert rate over windows of
// events and compares it with the model's validation alert rate. Shared by
// the workers of one model set.
type alertGuard struct {
	model  string
	valid  float64
	window int64
	factor float64
	high   prometheus.Counter
	low    prometheus.Counter
	log    *slog.Logger
	now    func() time.Time
	// restored reports whether the pipeline started from a stored state
	// (a snapshot or a checkpoint); scored counts the events it scored
	// since it started. Both only for the warning's context (nil: none).
	restored func() bool
	scored   func() int64
	mu       sync.Mutex
	events   int64
	alerts   int64
	lastLog  time.Time
	unlogged int
}

// newAlertGuards returns one guard per model of ms (nil for a model
// without a validation alert rate), or nil when the guard is off.
func (p *Pipeline) newAlertGuards(ms []*models.Model) []*alertGuard {
	if p.cfg.guardEvents == 0 {
		return nil
	}
	gs := make([]*alertGuard, len(ms))
	for i, m := range ms {
		r, ok := m.ValidationAlertRate()
		if !ok {
			continue
		}
		gs[i] = &alertGuard{
			model: m.Ident(), valid: r, window: int64(p.cfg.guardEvents), factor: p.cfg.guardFactor,
			high: p.met.rateAnomalies.WithLabelValues(m.Name(), "high"),
			low:  p.met.rateAnomalies.WithLabelValues(m.Name(), "low"),
			log:  p.log, now: time.Now,
			restored: p.stateRestored.Load, scored: p.stats.Scored.Load,
		}
	}
	return gs
}

// add counts events scored and alerts among them; a full window is judged
// and restarted.
func (g *alertGuard) add(events, alerts int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events += int64(events)
	g.alerts += int64(alerts)
	if g.events < g.window {
		return
	}
	rate := float64(g.alerts) / float64(g.events)
	n, a := g.events, g.alerts
	g.events, g.alerts = 0, 0
	var dir string
	switch {
	case rate > g.valid*g.factor:
		dir = "high"
		g.high.Inc()
	case rate < g.valid/g.factor:
		dir = "low"
		g.low.Inc()
	default:
		return
	}
	now := g.now()
	if !g.lastLog.IsZero() && now.Sub(g.lastLog) < time.Minute {
		g.unlogged++
		return
	}
	msg := "alert rate far outside the model's validation rate: check the feature spec, the model and the traffic"
	attrs := []any{"model", g.model, "direction", dir, "alert_rate", rate, "alerts", a, "events", n,
		"validation_alert_rate", g.valid, "factor", g.factor, "anomalous_windows_not_logged", g.unlogged}
	if g.restored != nil && g.scored != nil {
		restored := g.restored()
		if !restored && dir == "high" {
			// The usual cause on a first start: not a broken model.
			msg = "alert rate far outside the model's validation rate: the state started empty (no snapshot or checkpoint restored), so every card and terminal looks new until its windows fill, which raises scores for a while; if it persists, check the feature spec, the model and the traffic"
		}
		attrs = append(attrs, "state_restored", restored, "scored_since_start", g.scored())
	}
	g.log.Warn(msg, attrs...)
	g.lastLog, g.unlogged = now, 0
}
