package train

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ErrBudget is wrapped by the errors about a capacity budget that cannot be
// parsed or met (see ParseBudget and PickBudget).
var ErrBudget = errors.New("train: unusable budget")

// Budget is an operations capacity: how many transactions a team can take
// at a threshold, as a number a day (PerDay, "200/day") or as a share of
// the transactions (Rate, "0.5%"). Exactly one is set in a usable Budget;
// the zero Budget is "no budget".
type Budget struct {
	PerDay float64 // transactions a day; 0 when Rate is used
	Rate   float64 // share of transactions in (0, 1]; 0 when PerDay is used
}

// IsZero reports whether b is the zero Budget (none given).
func (b Budget) IsZero() bool { return b.PerDay == 0 && b.Rate == 0 }

// String returns b in the form ParseBudget reads: "200/day" or "0.5%".
func (b Budget) String() string {
	switch {
	case b.PerDay > 0:
		return strconv.FormatFloat(b.PerDay, 'g', -1, 64) + "/day"
	case b.Rate > 0:
		return strconv.FormatFloat(b.Rate*100, 'g', -1, 64) + "%"
	}
	return ""
}

// ParseBudget parses a budget: "N/day" (or "N/d", or a bare "N": N
// transactions a day, N > 0) or "P%" (P percent of the transactions, 0 <
// P <= 100). "" is the zero Budget. Anything else is an error wrapping
// ErrBudget.
func ParseBudget(s string) (Budget, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Budget{}, nil
	}
	num := func(v string) (float64, error) {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("budget %q: %q is not a finite number (want N/day or P%%): %w", s, v, ErrBudget)
		}
		return f, nil
	}
	if p, ok := strings.CutSuffix(t, "%"); ok {
		f, err := num(p)
		if err != nil {
			return Budget{}, err
		}
		if !(f > 0 && f <= 100) {
			return Budget{}, fmt.Errorf("budget %q: a rate must be in (0%%, 100%%]: %w", s, ErrBudget)
		}
		return Budget{Rate: f / 100}, nil
	}
	n := t
	for _, suf := range []string{"/day", "/d"} {
		if v, ok := strings.CutSuffix(t, suf); ok {
			n = v
			break
		}
	}
	f, err := num(n)
	if err != nil {
		return Budget{}, err
	}
	if !(f > 0) {
		return Budget{}, fmt.Errorf("budget %q: want more than 0 a day: %w", s, ErrBudget)
	}
	return Budget{PerDay: f}, nil
}

// Allowed returns how many of n transactions spanning days the budget
// allows: ⌊PerDay·days⌋ or ⌊Rate·n⌋ (never more than n).
func (b Budget) Allowed(n int, days float64) int {
	var a float64
	switch {
	case b.PerDay > 0:
		a = b.PerDay * days
	case b.Rate > 0:
		a = b.Rate * float64(n)
	}
	// A hair of slack so that 0.5% of 1,000 rows allows 5, not 4.
	return min(int(math.Floor(a+1e-9)), n)
}

// BudgetCut is the threshold a budget picked on a period of scored
// transactions and what it gave there: the expected operating point.
type BudgetCut struct {
	Budget       string  `json:"budget"`         // as given: "200/day" or "0.5%"
	Threshold    float64 `json:"threshold"`      // score >= Threshold is taken
	Allowed      int     `json:"allowed"`        // transactions the budget allows over the period
	Taken        int     `json:"taken"`          // transactions at or above Threshold (<= Allowed)
	PerDay       float64 `json:"per_day"`        // Taken / Days
	Rate         float64 `json:"rate"`           // Taken / Rows
	Precision    float64 `json:"precision"`      // fraud among the taken
	Recall       float64 `json:"recall"`         // fraud taken / fraud in the period
	Days         float64 `json:"days"`           // length of the period
	Rows         int     `json:"rows"`           // transactions in the period
	Positives    int     `json:"positives"`      // fraud in the period
	TruePositive int     `json:"true_positives"` // fraud among the taken
}

// Map returns c as a JSON-ready map for model metadata (values rounded to
// 6 decimals, as Metrics.Map).
func (c BudgetCut) Map() map[string]any {
	return map[string]any{
		"budget": c.Budget, "threshold": c.Threshold, "allowed": c.Allowed, "taken": c.Taken,
		"expected_per_day": round(c.PerDay), "expected_rate": round(c.Rate),
		"expected_precision": round(c.Precision), "expected_recall": round(c.Recall),
		"days": round(c.Days), "rows": c.Rows, "positives": c.Positives, "true_positives": c.TruePositive,
	}
}

// PickBudget returns the lowest threshold t among the scores such that the
// transactions with score >= t (the rule of models.Scorer.Decide) fit in
// budget b over the period: rows len(scores), spanning days (for a per-day
// budget; at least one day). Positives are the rows with y > 0 (fraud, or a
// loss). Tied scores are taken or left together, so the cut may take fewer
// than the budget allows; a budget that allows none of the top-scored rows
// is an error (ErrBudget), as are an empty period and a per-day budget on
// less than a day.
func PickBudget(scores, y []float32, days float64, b Budget) (BudgetCut, error) {
	if len(scores) != len(y) {
		panic("train: PickBudget: len(scores) != len(y)")
	}
	c := BudgetCut{Budget: b.String(), Days: days, Rows: len(scores)}
	switch {
	case b.IsZero():
		return c, fmt.Errorf("pick threshold: no budget: %w", ErrBudget)
	case len(scores) == 0:
		return c, fmt.Errorf("pick threshold for budget %s: no scored transactions in the period: %w", b, ErrBudget)
	case b.PerDay > 0 && !(days >= 1):
		return c, fmt.Errorf("pick threshold for budget %s: the period spans %.3g days; a per-day budget needs at least one (or give a rate, e.g. 0.5%%): %w", b, days, ErrBudget)
	}
	for _, v := range scores {
		if math.IsNaN(float64(v)) {
			return c, fmt.Errorf("pick threshold for budget %s: a score is NaN: %w", b, ErrBudget)
		}
	}
	idx := make([]int32, len(scores))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int {
		switch sa, sb := scores[a], scores[b]; {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	for _, v := range y {
		if v > 0 {
			c.Positives++
		}
	}
	c.Allowed = b.Allowed(len(scores), days)
	taken, tp := 0, 0
	found := false
	for i := 0; i < len(idx); {
		t := scores[idx[i]]
		j, jtp := i, 0
		for ; j < len(idx) && scores[idx[j]] == t; j++ {
			if y[idx[j]] > 0 {
				jtp++
			}
		}
		if j > c.Allowed {
			break
		}
		taken, tp, found = j, tp+jtp, true
		c.Threshold = float64(t)
		i = j
	}
	if !found {
		return c, fmt.Errorf("pick threshold for budget %s: it allows %d of %d transactions, fewer than the %d tied at the top score %g: %w",
			b, c.Allowed, len(scores), countEqual(scores, scores[idx[0]]), scores[idx[0]], ErrBudget)
	}
	c.Taken, c.TruePositive = taken, tp
	if days > 0 {
		c.PerDay = float64(taken) / days
	}
	c.Rate = float64(taken) / float64(len(scores))
	c.Precision = ratio(tp, taken)
	c.Recall = ratio(tp, c.Positives)
	return c, nil
}

func countEqual(v []float32, x float32) int {
	n := 0
	for _, s := range v {
		if s == x {
			n++
		}
	}
	return n
}

// BudgetThresholds picks the review and alert thresholds for the budgets
// on a period (see PickBudget): a zero budget keeps the given threshold
// (the trainer's rule). The review budget counts every transaction at or
// above the review threshold, alerts included, so it must allow at least
// as many as the alert budget; a kept review threshold above the new alert
// threshold is lowered to it. The cuts of the budgets given are returned
// (nil for a zero budget).
func BudgetThresholds(scores, y []float32, days float64, reviewB, alertB Budget, review, alert float64) (newReview, newAlert float64, reviewCut, alertCut *BudgetCut, err error) {
	newReview, newAlert = review, alert
	if !alertB.IsZero() {
		c, err := PickBudget(scores, y, days, alertB)
		if err != nil {
			return 0, 0, nil, nil, fmt.Errorf("alert budget: %w", err)
		}
		alertCut, newAlert = &c, c.Threshold
	}
	if !reviewB.IsZero() {
		c, err := PickBudget(scores, y, days, reviewB)
		if err != nil {
			return 0, 0, nil, nil, fmt.Errorf("review budget: %w", err)
		}
		reviewCut, newReview = &c, c.Threshold
		if newReview > newAlert {
			return 0, 0, nil, nil, fmt.Errorf("review budget %s takes %d transactions, fewer than the alerts (threshold %g) alone: the review budget counts every transaction at review or above, alerts included: %w",
				reviewB, c.Taken, newAlert, ErrBudget)
		}
	} else if newReview > newAlert {
		newReview = newAlert
	}
	return newReview, newAlert, reviewCut, alertCut, nil
}
