package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
)

// budgetFlags are --alert-budget and --review-budget: thresholds picked by
// operations capacity (train, models retune).
type budgetFlags struct {
	alert, review string
}

func (b *budgetFlags) register(fs *flag.FlagSet, period string) {
	fs.StringVar(&b.alert, "alert-budget", "", "pick the alert threshold so that at most this many transactions alert on "+period+
		": N/day (e.g. 200/day) or a share (e.g. 0.5%) (default: none, the statistical rule)")
	fs.StringVar(&b.review, "review-budget", "", "pick the review threshold so that at most this many transactions reach review or alert (alerts included) on "+period+
		": N/day or a share (default: none)")
}

// given reports whether a budget was given.
func (b *budgetFlags) given() bool { return b.alert != "" || b.review != "" }

// parse returns the review and alert budgets.
func (b *budgetFlags) parse() (review, alert train.Budget, err error) {
	if alert, err = train.ParseBudget(b.alert); err != nil {
		return review, alert, fmt.Errorf("parse --alert-budget: %w", err)
	}
	if review, err = train.ParseBudget(b.review); err != nil {
		return review, alert, fmt.Errorf("parse --review-budget: %w", err)
	}
	if !review.IsZero() && !alert.IsZero() && (review.PerDay > 0) == (alert.PerDay > 0) {
		if review.PerDay < alert.PerDay || review.Rate < alert.Rate {
			return review, alert, fmt.Errorf("--review-budget %s is below --alert-budget %s: the review budget counts every transaction at review or above, alerts included", review, alert)
		}
	}
	return review, alert, nil
}

// budgetPeriod is a scored period a budget is applied on: the scores and
// targets (y > 0 is fraud) of its transactions and its length in days.
type budgetPeriod struct {
	scores, y []float32
	days      float64
	what      string // "validation rows of train" or "[from, to)"
}

// periodDays is the length of [first, last] in days, or of [from, to) when
// both are finite (an explicit period counts whole).
func periodDays(first, last, from, to time.Time) float64 {
	if !from.IsZero() && !to.IsZero() && to.Year() < 9999 && from.Unix() > 0 {
		return to.Sub(from).Hours() / 24
	}
	return last.Sub(first).Hours() / 24
}

// applyBudgets re-picks f's thresholds on p for the budgets and records the
// budget and its expected precision, recall and alerts a day in
// f.Training["threshold_budget"] (the previous rule's thresholds under
// "previous_thresholds"). It does not encode f.
func applyBudgets(f *models.File, p budgetPeriod, reviewB, alertB train.Budget) (reviewCut, alertCut *train.BudgetCut, err error) {
	old := f.Thresholds
	r, a, rc, ac, err := train.BudgetThresholds(p.scores, p.y, p.days, reviewB, alertB, old.Review, old.Alert)
	if err != nil {
		return nil, nil, err
	}
	f.Thresholds = models.Thresholds{Review: r, Alert: a}
	if f.Training == nil {
		f.Training = map[string]any{}
	}
	md := map[string]any{
		"period":              p.what,
		"days":                math.Round(p.days*1e4) / 1e4,
		"rows":                len(p.scores),
		"previous_thresholds": map[string]any{"review": old.Review, "alert": old.Alert},
	}
	rule := ""
	if ac != nil {
		md["alert"] = ac.Map()
		rule = fmt.Sprintf("alert = at most %s on %s", ac.Budget, p.what)
	}
	if rc != nil {
		md["review"] = rc.Map()
		rule += fmt.Sprintf("; review = at most %s (review or alert) on %s", rc.Budget, p.what)
	}
	if prev, ok := f.Training["threshold_rule"].(string); ok {
		if ac == nil {
			rule += "; alert kept: " + prev
		} else if rc == nil {
			rule += "; review kept (lowered to alert if above): " + prev
		}
	}
	f.Training["threshold_budget"] = md
	f.Training["threshold_rule"] = trimRule(rule)
	return rc, ac, nil
}

func trimRule(s string) string {
	for len(s) > 2 && s[:2] == "; " {
		s = s[2:]
	}
	return s
}

// trainBudgets applies budgets to a freshly fitted row-by-row model on
// the validation rows the trainer held out (valid, event times ts), then
// re-measures the validation metrics at the new thresholds.
func trainBudgets(f *models.File, valid *train.Dataset, ts []time.Time, reviewB, alertB train.Budget) error {
	n := valid.Rows()
	if n < 1 || len(ts) != n {
		return errors.New("train: budgets: no validation rows")
	}
	m, err := parseFile(f)
	if err != nil {
		return err
	}
	scores, err := train.Predict(m, valid)
	if err != nil {
		return fmt.Errorf("train: budgets: %w", err)
	}
	first, last := ts[0], ts[n-1]
	p := budgetPeriod{scores: scores, y: valid.Y, days: periodDays(first, last, time.Time{}, time.Time{}),
		what: fmt.Sprintf("the validation rows [%s, %s]", first.Format(time.RFC3339), last.Format(time.RFC3339))}
	if _, _, err := applyBudgets(f, p, reviewB, alertB); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if m, err = parseFile(f); err != nil {
		return err
	}
	mt, err := train.Evaluate(m, valid)
	if err != nil {
		return fmt.Errorf("train: budgets: %w", err)
	}
	f.Training["validation"] = mt.Map()
	return nil
}

// parseFile encodes f and parses it as a model is loaded.
func parseFile(f *models.File) (*models.Model, error) {
	b, err := f.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	m, err := models.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("parse model: %w", err)
	}
	return m, nil
}
