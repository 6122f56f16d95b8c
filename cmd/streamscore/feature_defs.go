package main

import (
	"flag"
	"log/slog"
	"slices"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/stream"
)

// featureCheckConfig is what the engine and score check of the models'
// feature definitions and alert rates: --allow-unpinned-models and, for the
// engine, --alert-guard-events and --alert-guard-factor.
type featureCheckConfig struct {
	AllowUnpinnedModels bool
	AlertGuardEvents    int
	AlertGuardFactor    float64
}

// registerFeatureCheck defines --allow-unpinned-models on fs and, with
// guard, the alert-rate guard flags.
func (c *featureCheckConfig) registerFeatureCheck(fs *flag.FlagSet, guard bool) {
	fs.BoolVar(&c.AllowUnpinnedModels, "allow-unpinned-models", false, "accept model files that record no feature definitions (trained before models recorded them, or imported without --features), logged as a warning per model; by default they are refused, as is always a model whose inputs the --features spec defines otherwise than when it was trained")
	if guard {
		fs.IntVar(&c.AlertGuardEvents, "alert-guard-events", 10000, "window of the alert-rate guard: per model with a validation alert rate, every this many events the alert rate is compared with it and a rate more than --alert-guard-factor times above or below is counted (streamscore_stream_alert_rate_anomalies_total) and logged; scoring goes on. 0 disables")
		fs.Float64Var(&c.AlertGuardFactor, "alert-guard-factor", 5, "how far (a factor > 1) a window's alert rate may be above or below the model's validation alert rate before the guard counts it")
	}
}

// streamOptions returns the stream options of c.
func (c *featureCheckConfig) streamOptions(guard bool) []stream.Option {
	opts := []stream.Option{stream.WithUnpinnedModels(c.AllowUnpinnedModels)}
	// A config whose flags were never registered (demo) has factor 0: the
	// stream's defaults then apply.
	if guard && c.AlertGuardFactor != 0 {
		opts = append(opts, stream.WithAlertRateGuard(c.AlertGuardEvents, c.AlertGuardFactor))
	}
	return opts
}

// checkModelFeatures checks m against the features of spec (nil: the
// default spec), as the stream does: a mismatch is an error, an unpinned
// model an error unless allowUnpinned (then a warning).
func checkModelFeatures(m *models.Model, spec *features.Spec, allowUnpinned bool) error {
	if spec == nil {
		spec = features.DefaultSpec()
	}
	return stream.CheckModelFeatures([]*models.Model{m}, nil, stream.ModelFeatureDefs(spec.Definitions()), allowUnpinned, slog.Default())
}

// alertRateOutside reports whether an observed alert rate over n events
// is more than factor times above or below the validation alert rates of
// the deciding models ms (above their sum, below their largest: the
// decision alerts when any decider does). ok is false when a decider
// records none, or when n is too small to judge (fewer than 20 alerts
// expected at the validation rate).
func alertRateOutside(ms []*models.Model, deciders []string, n int64, rate, factor float64) (outside, ok bool, sum float64) {
	var largest float64
	for _, m := range ms {
		if len(deciders) > 0 && !slices.Contains(deciders, m.Name()) {
			continue
		}
		r, has := m.ValidationAlertRate()
		if !has {
			return false, false, 0
		}
		sum += r
		largest = max(largest, r)
	}
	if sum == 0 || float64(n)*sum < 20 {
		return false, false, 0
	}
	return rate > sum*factor || rate < largest/factor, true, sum
}
