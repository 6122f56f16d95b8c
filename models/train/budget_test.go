package train

import (
	"errors"
	"math"
	"testing"
)

func TestParseBudget(t *testing.T) {
	tests := []struct {
		name, in string
		want     Budget
		err      bool
	}{
		{name: "empty", in: "", want: Budget{}},
		{name: "per day", in: "200/day", want: Budget{PerDay: 200}},
		{name: "per d", in: " 12.5/d ", want: Budget{PerDay: 12.5}},
		{name: "bare number", in: "40", want: Budget{PerDay: 40}},
		{name: "rate", in: "0.5%", want: Budget{Rate: 0.005}},
		{name: "all", in: "100%", want: Budget{Rate: 1}},
		{name: "zero per day", in: "0/day", err: true},
		{name: "negative", in: "-3/day", err: true},
		{name: "zero rate", in: "0%", err: true},
		{name: "rate above 100", in: "101%", err: true},
		{name: "words", in: "lots/day", err: true},
		{name: "per week", in: "10/week", err: true},
		{name: "nan", in: "NaN/day", err: true},
		{name: "inf", in: "Inf%", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBudget(tc.in)
			if tc.err {
				if !errors.Is(err, ErrBudget) {
					t.Fatalf("ParseBudget(%q): got %+v, %v, want an ErrBudget", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseBudget(%q): got %+v, %v, want %+v", tc.in, got, err, tc.want)
			}
			if back, err := ParseBudget(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q via %q: got %+v, %v", tc.in, got.String(), back, err)
			}
		})
	}
}

func TestPickBudget(t *testing.T) {
	// 10 rows over 2 days; scores 0.9..0.0, fraud at 0.9, 0.8 and 0.5.
	scores := []float32{0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0}
	y := []float32{1, 1, 0, 0, 1, 0, 0, 0, 0, 0}
	tied := []float32{0.9, 0.9, 0.9, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0}
	tests := []struct {
		name      string
		scores    []float32
		days      float64
		budget    Budget
		threshold float64
		taken     int
		precision float64
		recall    float64
		err       bool
	}{
		{name: "1 a day", scores: scores, days: 2, budget: Budget{PerDay: 1}, threshold: 0.8, taken: 2, precision: 1, recall: 2.0 / 3},
		{name: "2.5 a day", scores: scores, days: 2, budget: Budget{PerDay: 2.5}, threshold: 0.5, taken: 5, precision: 3.0 / 5, recall: 1},
		{name: "30%", scores: scores, days: 2, budget: Budget{Rate: 0.3}, threshold: 0.7, taken: 3, precision: 2.0 / 3, recall: 2.0 / 3},
		{name: "all", scores: scores, days: 2, budget: Budget{PerDay: 1000}, threshold: 0, taken: 10, precision: 0.3, recall: 1},
		{name: "ties stay together", scores: tied, days: 2, budget: Budget{PerDay: 1.5}, threshold: 0.9, taken: 3, precision: 2.0 / 3, recall: 2.0 / 3},
		{name: "ties over the budget", scores: tied, days: 2, budget: Budget{PerDay: 1}, err: true},
		{name: "under a day", scores: scores, days: 0.5, budget: Budget{PerDay: 10}, err: true},
		{name: "rate under a day", scores: scores, days: 0.5, budget: Budget{Rate: 0.2}, threshold: 0.8, taken: 2, precision: 1, recall: 2.0 / 3},
		{name: "empty", scores: []float32{}, days: 2, budget: Budget{PerDay: 1}, err: true},
		{name: "none given", scores: scores, days: 2, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yy := y[:len(tc.scores)]
			got, err := PickBudget(tc.scores, yy, tc.days, tc.budget)
			if tc.err {
				if !errors.Is(err, ErrBudget) {
					t.Fatalf("got %+v, %v, want an ErrBudget", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got.Threshold-tc.threshold) > 1e-7 || got.Taken != tc.taken ||
				math.Abs(got.Precision-tc.precision) > 1e-12 || math.Abs(got.Recall-tc.recall) > 1e-12 {
				t.Errorf("got threshold %v taken %d precision %v recall %v, want %v %d %v %v",
					got.Threshold, got.Taken, got.Precision, got.Recall, tc.threshold, tc.taken, tc.precision, tc.recall)
			}
			if got.Taken > got.Allowed {
				t.Errorf("taken %d > allowed %d", got.Taken, got.Allowed)
			}
			n := 0
			for _, s := range tc.scores {
				if float64(s) >= got.Threshold {
					n++
				}
			}
			if n != got.Taken {
				t.Errorf("threshold %v takes %d rows, cut says %d", got.Threshold, n, got.Taken)
			}
		})
	}
}

func TestBudgetThresholds(t *testing.T) {
	scores := []float32{0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0}
	y := []float32{1, 1, 0, 0, 1, 0, 0, 0, 0, 0}
	tests := []struct {
		name                string
		review, alert       Budget
		wantReview, wantAlt float64
		err                 bool
	}{
		{name: "none: kept", wantReview: 0.3, wantAlt: 0.6},
		{name: "alert only: review kept", alert: Budget{PerDay: 2}, wantReview: 0.3, wantAlt: 0.6},
		{name: "alert only: review lowered to alert", alert: Budget{PerDay: 4}, wantReview: 0.2, wantAlt: 0.2},
		{name: "both", review: Budget{PerDay: 3}, alert: Budget{PerDay: 1}, wantReview: 0.4, wantAlt: 0.8},
		{name: "review below alert", review: Budget{PerDay: 1}, alert: Budget{PerDay: 2}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, a, rc, ac, err := BudgetThresholds(scores, y, 2, tc.review, tc.alert, 0.3, 0.6)
			if tc.err {
				if !errors.Is(err, ErrBudget) {
					t.Fatalf("got %v %v, %v, want an ErrBudget", r, a, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(r-tc.wantReview) > 1e-7 || math.Abs(a-tc.wantAlt) > 1e-7 {
				t.Errorf("got review %v alert %v, want %v %v", r, a, tc.wantReview, tc.wantAlt)
			}
			if (rc != nil) != !tc.review.IsZero() || (ac != nil) != !tc.alert.IsZero() {
				t.Errorf("cuts %v %v for budgets %v %v", rc, ac, tc.review, tc.alert)
			}
		})
	}
}
