package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// budgetOf reads training.threshold_budget.<which> of a model file.
func budgetOf(t *testing.T, path, which string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f models.File
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	tb, ok := f.Training["threshold_budget"].(map[string]any)
	if !ok {
		t.Fatalf("%s: no training.threshold_budget: %v", path, f.Training)
	}
	c, ok := tb[which].(map[string]any)
	if !ok {
		t.Fatalf("%s: no threshold_budget.%s: %v", path, which, tb)
	}
	return c
}

// replayAlerts scores [from, to) with m as the stream would and counts the
// transactions at or above the alert and review thresholds, and the fraud
// among the alerts.
func replayAlerts(t *testing.T, evPath, labPath string, m *models.Model, from, to time.Time) (alerts, reviews, alertFraud, fraud int) {
	t.Helper()
	events, labels, err := readHistory(evPath, labPath)
	if err != nil {
		t.Fatal(err)
	}
	truth := knownFraud(labels)
	review, alert := m.Thresholds()
	err = stream.Replay(events, labels, []*models.Model{m}, from, to, func(rec *output.ScoreRecord) error {
		s := float32(rec.Scores[0].Value)
		if truth[rec.TxID] {
			fraud++
		}
		if s >= review {
			reviews++
		}
		if s >= alert {
			alerts++
			if truth[rec.TxID] {
				alertFraud++
			}
		}
		return nil
	}, stream.WithReasons(0))
	if err != nil {
		t.Fatal(err)
	}
	return alerts, reviews, alertFraud, fraud
}

// TestTrainBudgetAndRetune trains a logistic model with alert and review
// budgets, checks the thresholds against the validation period and what
// the file records, then retunes it on a later period and checks the new
// thresholds by scoring that period again with the new file.
func TestTrainBudgetAndRetune(t *testing.T) {
	dir := t.TempDir()
	ev, lab, _, _ := backtestHistory(t, dir)
	out := filepath.Join(dir, "lr.json")
	args := []string{"--events", ev, "--labels", lab, "--kind", "logistic", "--from", "2026-03-01", "--to", "2026-03-08",
		"--holdout", "0.3", "--alert-budget", "15/day", "--review-budget", "40/day", "--out", out, "--quiet"}
	if err := cmdTrain(context.Background(), args); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	review, alert := m.Thresholds()
	ac, rc := budgetOf(t, out, "alert"), budgetOf(t, out, "review")
	if ac["budget"] != "15/day" || rc["budget"] != "40/day" {
		t.Errorf("budgets recorded %v, %v", ac["budget"], rc["budget"])
	}
	if float32(ac["threshold"].(float64)) != alert || float32(rc["threshold"].(float64)) != review {
		t.Errorf("thresholds %v/%v, recorded %v/%v", review, alert, rc["threshold"], ac["threshold"])
	}
	for _, c := range []map[string]any{ac, rc} {
		taken, allowed := c["taken"].(float64), c["allowed"].(float64)
		if taken > allowed || taken < 1 || c["expected_per_day"].(float64) > 40 {
			t.Errorf("budget cut %v: taken %v of %v allowed", c, taken, allowed)
		}
		if p := c["expected_precision"].(float64); !(p > 0 && p <= 1) {
			t.Errorf("expected precision %v", p)
		}
	}
	if ac["expected_per_day"].(float64) > 15 {
		t.Errorf("alerts a day %v over the 15/day budget", ac["expected_per_day"])
	}
	if !(review < alert) {
		t.Errorf("review %v not below alert %v", review, alert)
	}
	v := m.Training()["validation"].(map[string]any)
	if got, want := v["precision_at_alert"].(float64), ac["expected_precision"].(float64); math.Abs(got-want) > 1e-6 {
		t.Errorf("validation precision at alert %v, budget's expected precision %v", got, want)
	}

	// Retune on the last three days: the new file's alerts on them fit.
	orig, _ := os.ReadFile(out)
	out2 := filepath.Join(dir, "lr-retuned.json")
	var stdout bytes.Buffer
	from, to := time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)
	rargs := []string{"--model", out, "--events", ev, "--labels", lab, "--from", "2026-03-08", "--to", "2026-03-11",
		"--alert-budget", "10/day", "--version", "2", "--out", out2}
	if err := modelsRetune(context.Background(), &stdout, rargs); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(out); !bytes.Equal(now, orig) {
		t.Error("retune changed the input file")
	}
	m2, err := models.Load(out2)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Version() != 2 || m2.Ident() == m.Ident() {
		t.Errorf("retuned model %s (from %s): want version 2 and a new digest", m2.Ident(), m.Ident())
	}
	var f1, f2 models.File
	_ = json.Unmarshal(orig, &f1)
	b2, _ := os.ReadFile(out2)
	_ = json.Unmarshal(b2, &f2)
	if !slices.Equal(f1.Layers[0].Weights, f2.Layers[0].Weights) || !slices.Equal(f1.Layers[0].Bias, f2.Layers[0].Bias) {
		t.Error("retune changed the weights")
	}
	alerts, reviews, tp, fraud := replayAlerts(t, ev, lab, m2, from, to)
	c := budgetOf(t, out2, "alert")
	if alerts > 30 || float64(alerts) != c["taken"].(float64) || float64(tp) != c["true_positives"].(float64) || float64(fraud) != c["positives"].(float64) {
		t.Errorf("retuned: %d alerts (%d fraud of %d) on the period, budget 10/day × 3 days; the file says %v", alerts, tp, fraud, c)
	}
	r2, a2 := m2.Thresholds()
	if r2 > a2 || reviews < alerts {
		t.Errorf("retuned thresholds %v/%v, %d reviews, %d alerts", r2, a2, reviews, alerts)
	}
	if !strings.Contains(stdout.String(), "sign it") || !strings.Contains(stdout.String(), "10/day") {
		t.Errorf("retune output:\n%s", stdout.String())
	}
	t.Logf("retune output:\n%s", stdout.String())
}

func TestBudgetErrors(t *testing.T) {
	dir := t.TempDir()
	ev, lab, _, _ := backtestHistory(t, dir)
	out := filepath.Join(dir, "m.json")
	base := []string{"--events", ev, "--labels", lab, "--from", "2026-03-01", "--to", "2026-03-08", "--out", out, "--quiet"}
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"bad budget", func() error {
			return cmdTrain(context.Background(), append(base, "--kind", "logistic", "--alert-budget", "lots"))
		}, "not a finite number"},
		{"review below alert", func() error {
			return cmdTrain(context.Background(), append(base, "--kind", "logistic", "--alert-budget", "20/day", "--review-budget", "10/day"))
		}, "below --alert-budget"},
		{"sequence family", func() error {
			return cmdTrain(context.Background(), append(base, "--kind", "gru", "--alert-budget", "20/day"))
		}, "models retune"},
		{"retune in place", func() error {
			return modelsRetune(context.Background(), &bytes.Buffer{}, []string{"--model", out, "--out", out, "--events", ev, "--labels", lab, "--alert-budget", "1/day"})
		}, "write a new file"},
		{"retune without a budget", func() error {
			return modelsRetune(context.Background(), &bytes.Buffer{}, []string{"--model", out, "--out", out + "2", "--events", ev, "--labels", lab})
		}, "--alert-budget"},
		{"retune without labels", func() error {
			return modelsRetune(context.Background(), &bytes.Buffer{}, []string{"--model", out, "--out", out + "2", "--events", ev, "--alert-budget", "1/day"})
		}, "--labels is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEvalOperationsEndToEnd trains a model with an alert budget on
// generated history, scores a later range as the stream would (records
// with amounts), and checks that eval shows the money and operations
// views: the model's budget per day, recall per generator scenario, the
// per-day table, metrics.json and the plots.
func TestEvalOperationsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ev, lab, events, labels := backtestHistory(t, dir)
	model := filepath.Join(dir, "lr.json")
	if err := cmdTrain(context.Background(), []string{"--events", ev, "--labels", lab, "--kind", "logistic", "--from", "2026-03-01",
		"--to", "2026-03-08", "--holdout", "0.3", "--alert-budget", "15/day", "--out", model, "--quiet"}); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(model)
	if err != nil {
		t.Fatal(err)
	}
	scores := filepath.Join(dir, "scores.jsonl")
	var buf []byte
	from, to := time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)
	if err := stream.Replay(events, labels, []*models.Model{m}, from, to, func(rec *output.ScoreRecord) error {
		buf = append(rec.AppendJSON(buf), '\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(scores, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "eval")
	var stdout bytes.Buffer
	if err := runEval(context.Background(), []string{"--scores", scores, "--labels", lab, "--model", model, "--out", out, "--alert-cost", "3"}, &stdout); err != nil {
		t.Fatal(err)
	}
	got := stdout.String()
	for _, want := range []string{"fraud amount (loss if none stopped)", "$ recall", "savings", "top 0.5%",
		"alert budget 15/day (the model file's threshold_budget)", "account_takeover", "card_testing", "compromised_terminal",
		"2026-03-08", "2026-03-10", "card precision@100", "money.png", "alerts_per_day.png"} {
		if !strings.Contains(got, want) {
			t.Errorf("eval output has no %q:\n%s", want, got)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var mt struct {
		Money struct {
			FraudAmount *float64 `json:"fraud_amount"`
			AlertCost   float64  `json:"alert_cost"`
		} `json:"money"`
		Days        []map[string]any `json:"days"`
		AlertBudget *struct {
			Budget string `json:"budget"`
		} `json:"alert_budget"`
		Scenarios []struct {
			Scenario string `json:"scenario"`
			Fraud    int    `json:"fraud"`
		} `json:"scenarios"`
		Fraud int `json:"fraud"`
	}
	if err := json.Unmarshal(b, &mt); err != nil {
		t.Fatal(err)
	}
	if mt.Money.FraudAmount == nil || *mt.Money.FraudAmount <= 0 || mt.Money.AlertCost != 3 || len(mt.Days) != 3 ||
		mt.AlertBudget == nil || mt.AlertBudget.Budget != "15/day" {
		t.Errorf("metrics.json: %s", b)
	}
	n := 0
	for _, s := range mt.Scenarios {
		if s.Scenario == "(unnamed)" {
			t.Errorf("generated fraud without a scenario: %+v", s)
		}
		n += s.Fraud
	}
	if n != mt.Fraud || len(mt.Scenarios) < 3 {
		t.Errorf("scenarios %+v cover %d of %d fraud", mt.Scenarios, n, mt.Fraud)
	}
	for _, name := range []string{"roc.png", "money.png", "alerts_per_day.png"} {
		if st, err := os.Stat(filepath.Join(out, name)); err != nil || st.Size() < 1000 {
			t.Errorf("%s: %v", name, err)
		}
	}
}
