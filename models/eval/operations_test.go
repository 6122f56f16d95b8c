package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/models/train"
)

// testScoresWithAmounts is testScores with amount 10·(i+1) on record i:
// the fraud ta, tc, tf have 10, 30 and 60.
func testScoresWithAmounts() *Scores {
	s := testScores()
	for i := range s.Records {
		s.Records[i].Amount, s.Records[i].HasAmount = float64(10*(i+1)), true
	}
	return s
}

func nanOr(f Float, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(float64(f))
	}
	return near(float64(f), want)
}

func TestEvaluateOperations(t *testing.T) {
	scen := map[string]string{"ta": "card_testing", "tc": "account_takeover"}
	res, err := Evaluate(testScoresWithAmounts(), testTruth(), WithThresholds(0.5, 0.8, "test"), WithK(1),
		WithAlertCost(2), WithAlertBudget(train.Budget{PerDay: 2}, "test budget"), WithScenarios(scen))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	if !near(float64(m.Money.TotalAmount), 780) || !near(float64(m.Money.FraudAmount), 100) || m.Money.WithAmount != 12 || m.Money.AlertCost != 2 {
		t.Errorf("money: %+v", m.Money)
	}
	cuts := []struct {
		name                                  string
		perDay, amount, amountRecall, savings float64
	}{
		{"review", 2, 100, 1, 100 - 2*6},
		{"alert", 1, 40, 0.4, 40 - 2*3},
	}
	for i, want := range cuts {
		c := m.Thresholds[i]
		if c.Name != want.name || !nanOr(c.AlertsPerDay, want.perDay) || !nanOr(c.FraudAmount, want.amount) ||
			!nanOr(c.AmountRecall, want.amountRecall) || !nanOr(c.Savings, want.savings) {
			t.Errorf("cut %s: got %+v, want %+v", c.Name, c, want)
		}
	}
	days := []struct {
		day                                    string
		tx, fraud, alerts, reviews, alertFraud int
		precision, recall                      float64
		over                                   bool
	}{
		{"2026-03-01", 4, 2, 3, 4, 2, 2.0 / 3, 1, true},
		{"2026-03-02", 4, 1, 0, 2, 0, math.NaN(), 0, false},
		{"2026-03-03", 4, 0, 0, 0, 0, math.NaN(), math.NaN(), false},
	}
	if len(m.Days) != len(days) {
		t.Fatalf("days: got %+v", m.Days)
	}
	for i, want := range days {
		d := m.Days[i]
		if d.Day != want.day || d.Transactions != want.tx || d.Fraud != want.fraud || d.Alerts != want.alerts || d.Reviews != want.reviews ||
			d.AlertFraud != want.alertFraud || !nanOr(d.Precision, want.precision) || !nanOr(d.Recall, want.recall) || d.OverBudget != want.over {
			t.Errorf("day %d: got %+v, want %+v", i, d, want)
		}
	}
	b := m.AlertBudget
	if b == nil || b.Budget != "2/day" || b.Source != "test budget" || b.DaysOver != 1 || b.MaxAlerts != 3 || !near(b.MeanAlerts, 1) || b.Days != 3 {
		t.Errorf("budget: %+v", b)
	}
	sc := []struct {
		name            string
		fraud, alert    int
		amount, aRecall float64
	}{
		{"account_takeover", 1, 1, 30, 1},
		{"card_testing", 1, 1, 10, 1},
		{unnamedScenario, 1, 0, 60, 0},
	}
	if len(m.Scenarios) != len(sc) {
		t.Fatalf("scenarios: got %+v", m.Scenarios)
	}
	for i, want := range sc {
		g := m.Scenarios[i]
		if g.Scenario != want.name || g.Fraud != want.fraud || g.AlertCaught != want.alert || g.ReviewCaught != want.fraud ||
			!near(float64(g.RecallAlert), float64(want.alert)/float64(want.fraud)) || !near(float64(g.Amount), want.amount) || !near(float64(g.AmountRecall), want.aRecall) {
			t.Errorf("scenario %d: got %+v, want %+v", i, g, want)
		}
	}
	if len(m.Operating) != len(OperatingShares) {
		t.Fatalf("operating points: %+v", m.Operating)
	}
	for _, c := range m.Operating {
		if c.Alerted < 1 || math.IsNaN(float64(c.Savings)) || !near(float64(c.AlertsPerDay), float64(c.Alerted)/3) {
			t.Errorf("operating point %+v", c)
		}
	}
	// metrics.json carries the views; the plots render.
	js, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"money"`, `"operating_points"`, `"days"`, `"alert_budget"`, `"scenarios"`, `"amount_recall"`, `"savings"`, `"alerts_per_day"`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("metrics.json has no %s", key)
		}
	}
	for name, write := range map[string]func(*bytes.Buffer) error{
		"money":  func(b *bytes.Buffer) error { return res.WriteMoney(b) },
		"alerts": func(b *bytes.Buffer) error { return res.WriteAlertsPerDay(b) },
		"roc":    func(b *bytes.Buffer) error { return res.WriteROC(b) },
	} {
		var buf bytes.Buffer
		if err := write(&buf); err != nil {
			t.Fatalf("%s plot: %v", name, err)
		}
		if _, err := png.Decode(&buf); err != nil {
			t.Errorf("%s plot is not a PNG: %v", name, err)
		}
	}
}

func TestEvaluateWithoutAmounts(t *testing.T) {
	s := testScoresWithAmounts()
	s.Records[4].HasAmount, s.Records[4].Amount = false, 0
	res, err := Evaluate(s, testTruth(), WithThresholds(0.5, 0.8, "test"), WithAlertBudget(train.Budget{Rate: 0.5}, "rate"))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	if m.Money.WithAmount != 11 || !math.IsNaN(float64(m.Money.FraudAmount)) || !math.IsNaN(float64(m.Thresholds[1].Savings)) ||
		!math.IsNaN(float64(m.Thresholds[1].AmountRecall)) || !near(float64(m.Thresholds[1].AlertsPerDay), 1) {
		t.Errorf("a record without an amount must void the money view: %+v %+v", m.Money, m.Thresholds[1])
	}
	// A rate budget applies to each day's own transactions: 50% of 4 = 2.
	if b := m.AlertBudget; b == nil || b.DaysOver != 1 || !math.IsNaN(float64(b.PerDay)) || !near(float64(b.Rate), 0.5) {
		t.Errorf("rate budget: %+v", b)
	}
	if m.Scenarios != nil {
		t.Errorf("scenarios without scenario labels: %+v", m.Scenarios)
	}
	var buf bytes.Buffer
	if err := res.WriteMoney(&buf); err != nil {
		t.Fatalf("money plot without amounts: %v", err)
	}
}

func TestOperationOptionErrors(t *testing.T) {
	for _, o := range []Option{WithAlertCost(-1), WithAlertCost(math.Inf(1)), WithAlertCost(math.NaN()), WithAlertBudget(train.Budget{Rate: 2}, "")} {
		if _, err := Evaluate(testScores(), testTruth(), o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("got %v, want ErrInvalidOption", err)
		}
	}
}

func TestFeedbackScenarios(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	got := feed([]label{
		{TxID: "a", TS: t0, Fraud: true, Scenario: "card_testing"},
		{TxID: "b", TS: t0, Fraud: true, Scenario: "account_takeover"},
		{TxID: "b", TS: t0.Add(time.Hour), Fraud: false}, // corrected: not fraud
		{TxID: "c", TS: t0.Add(time.Hour), Fraud: true},  // fraud, no scenario
		{TxID: "d", TS: t0.Add(time.Hour), Fraud: true, Scenario: "merchant_collusion"},
		{TxID: "d", TS: t0, Fraud: true, Scenario: "stale"}, // older: loses
	}...).Scenarios()
	want := map[string]string{"a": "card_testing", "d": "merchant_collusion"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
}

func TestReadScoresAmount(t *testing.T) {
	tests := []struct {
		name, line string
		amount     float64
		has        bool
		err        bool
	}{
		{"amount", `{"tx_id":"a","card_id":"c","ts":"2026-03-01T00:00:00Z","amount":12.5,"scores":{"fraud":0.1}}`, 12.5, true, false},
		{"none", `{"tx_id":"a","card_id":"c","ts":"2026-03-01T00:00:00Z","scores":{"fraud":0.1}}`, 0, false, false},
		{"negative", `{"tx_id":"a","card_id":"c","ts":"2026-03-01T00:00:00Z","amount":-1,"scores":{"fraud":0.1}}`, 0, false, true},
		{"string", `{"tx_id":"a","card_id":"c","ts":"2026-03-01T00:00:00Z","amount":"1","scores":{"fraud":0.1}}`, 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ReadScores(strings.NewReader(tc.line+"\n"), "fraud")
			if tc.err {
				if !errors.Is(err, ErrInvalidRecord) {
					t.Fatalf("got %v, want ErrInvalidRecord", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r := s.Records[0]; r.Amount != tc.amount || r.HasAmount != tc.has {
				t.Errorf("got %v/%v, want %v/%v", r.Amount, r.HasAmount, tc.amount, tc.has)
			}
		})
	}
}
