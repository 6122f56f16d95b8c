package eval

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/streamscore/streamscore/models/train"
)

// ErrInvalidOption is returned (wrapped) by Evaluate for an option it cannot
// use.
var ErrInvalidOption = errors.New("eval: invalid option")

// Default alert shares of the quantile rule, used when no thresholds are
// given: review alerts 1% of transactions, alert 0.5%.
const (
	DefaultReviewShare = 0.01
	DefaultAlertShare  = 0.005
)

// DefaultK is the default k of card precision top-k: a team reviewing 100
// cards a day, as in the handbook.
const DefaultK = 100

// Option tunes Evaluate.
type Option func(*config) error

type config struct {
	review, alert float64
	source        string
	haveThreshold bool
	k             int
	from, to      time.Time
	alertCost     float64
	budget        train.Budget
	budgetSource  string
	scenarios     map[string]string
}

func defaultConfig() config {
	return config{k: DefaultK}
}

// WithThresholds sets the review and alert thresholds at which precision and
// recall are reported; source says where they come from ("model
// fraud-mlp@3 …", "--thresholds") and is recorded in the metrics. Default:
// none, and the quantile rule picks the scores that alert 1% (review) and
// 0.5% (alert) of the transactions — the trap: those are not the model's
// operating point, so give the model's own thresholds when it has them.
// review must not exceed alert; both must be finite.
func WithThresholds(review, alert float64, source string) Option {
	return func(c *config) error {
		if math.IsNaN(review) || math.IsInf(review, 0) || math.IsNaN(alert) || math.IsInf(alert, 0) {
			return fmt.Errorf("%w: thresholds %v, %v must be finite", ErrInvalidOption, review, alert)
		}
		if review > alert {
			return fmt.Errorf("%w: review threshold %v above alert threshold %v", ErrInvalidOption, review, alert)
		}
		c.review, c.alert, c.source, c.haveThreshold = review, alert, source, true
		return nil
	}
}

// WithK sets k of card precision top-k, the number of cards a day the
// investigators can check. Default 100 (DefaultK). The precision divides by
// k even on a day with fewer cards, so a k above the daily fraud-card count
// caps the score below 1 (see CardDay.BestPossible).
func WithK(k int) Option {
	return func(c *config) error {
		if k < 1 {
			return fmt.Errorf("%w: k %d < 1", ErrInvalidOption, k)
		}
		c.k = k
		return nil
	}
}

// WithRange keeps only the transactions with event time in [from, to); a
// zero time leaves that side open. Default: all. Duplicate detection and the
// count of fraud labels without a score look at the whole file, so a label
// of a transaction outside the range is not reported as unscored.
func WithRange(from, to time.Time) Option {
	return func(c *config) error {
		if !from.IsZero() && !to.IsZero() && !to.After(from) {
			return fmt.Errorf("%w: empty range [%s, %s)", ErrInvalidOption, from.Format(time.RFC3339), to.Format(time.RFC3339))
		}
		c.from, c.to = from, to
		return nil
	}
}

// WithAlertCost sets the cost of handling one alert, in the currency of the
// amounts, that savings subtract: savings = fraud amount alerted − cost ×
// alerts. Default 0, so savings are the fraud amount alerted; the trap: a
// cost of 0 makes alerting everything look best, so give the team's cost
// per case when comparing operating points. Must be finite and >= 0.
func WithAlertCost(cost float64) Option {
	return func(c *config) error {
		if !(cost >= 0) || math.IsInf(cost, 0) {
			return fmt.Errorf("%w: alert cost %v must be finite and >= 0", ErrInvalidOption, cost)
		}
		c.alertCost = cost
		return nil
	}
}

// WithAlertBudget sets the alert budget the alerts of each day are
// compared with (Metrics.AlertBudget); source says where it comes from
// ("--alert-budget", "model file"). Default: none, and no comparison. A
// rate budget is applied to each day's own transactions.
func WithAlertBudget(b train.Budget, source string) Option {
	return func(c *config) error {
		if b.PerDay < 0 || b.Rate < 0 || b.Rate > 1 || math.IsNaN(b.PerDay) || math.IsNaN(b.Rate) || math.IsInf(b.PerDay, 0) {
			return fmt.Errorf("%w: alert budget %+v", ErrInvalidOption, b)
		}
		c.budget, c.budgetSource = b, source
		return nil
	}
}

// WithScenarios gives the fraud scenario of each fraudulent transaction
// (by tx_id, see Feedback.Scenarios) for the recall per scenario. Default: none,
// and Metrics.Scenarios is empty.
func WithScenarios(s map[string]string) Option {
	return func(c *config) error { c.scenarios = s; return nil }
}
