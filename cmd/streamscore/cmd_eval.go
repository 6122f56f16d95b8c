package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/eval"
	"github.com/streamscore/streamscore/models/train"
)

// modelAlertBudget returns the alert budget a model file records
// (training.threshold_budget.alert.budget, written by train and models
// retune).
func modelAlertBudget(m *models.Model) (train.Budget, bool) {
	tb, _ := m.Training()["threshold_budget"].(map[string]any)
	a, _ := tb["alert"].(map[string]any)
	s, _ := a["budget"].(string)
	b, err := train.ParseBudget(s)
	if err != nil || b.IsZero() {
		return train.Budget{}, false
	}
	return b, true
}

// evalConfig is the process config of the eval command.
type evalConfig struct {
	scores, labels, name, out string
	model, thresholds         string
	k                         int
	from, to                  string
	alertBudget               string
	alertCost                 float64
}

func (c *evalConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.scores, "scores", "", "score records JSONL file, as the stream publishes them (required)")
	fs.StringVar(&c.labels, "labels", "", "labels JSONL file (required); the label with the latest ts of a tx wins, unlabelled = genuine")
	fs.StringVar(&c.name, "name", "", "model to measure: its key in the records' \"scores\" (required without --model; default: the --model file's name)")
	fs.StringVar(&c.out, "out", "", "output directory for metrics.json, roc.png, pr.png, scores.png (required; created if missing)")
	fs.StringVar(&c.model, "model", "", "model file whose review and alert thresholds to measure at (default: --thresholds)")
	fs.StringVar(&c.thresholds, "thresholds", "", "review,alert thresholds when there is no --model (default: the scores that alert 1% and 0.5%)")
	fs.IntVar(&c.k, "k", eval.DefaultK, "k of card precision top-k: cards the investigators check a day")
	fs.StringVar(&c.from, "from", "", "evaluate transactions with event time at or after this, RFC 3339 or YYYY-MM-DD (default: all)")
	fs.StringVar(&c.to, "to", "", "and before this (exclusive) (default: all)")
	fs.StringVar(&c.alertBudget, "alert-budget", "", "alerts a day the team can take (N/day or a share, e.g. 0.5%): each day's alerts are compared with it (default: the --model file's budget, if it was trained or retuned with one)")
	fs.Float64Var(&c.alertCost, "alert-cost", 0, "cost of handling one alert, in the amounts' currency: savings = fraud amount alerted - cost x alerts (default 0: savings = fraud amount alerted)")
}

// Validate checks the flags that do not need a file.
func (c *evalConfig) Validate() error {
	var errs []error
	if c.scores == "" || c.labels == "" || c.out == "" {
		errs = append(errs, errors.New("--scores, --labels and --out are required"))
	}
	if c.name == "" && c.model == "" {
		errs = append(errs, errors.New("--name is required without --model"))
	}
	if c.model != "" && c.thresholds != "" {
		errs = append(errs, errors.New("give --model or --thresholds, not both"))
	}
	if c.k < 1 {
		errs = append(errs, fmt.Errorf("--k %d: want at least 1", c.k))
	}
	if c.thresholds != "" {
		if _, _, err := parseThresholds(c.thresholds); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := train.ParseBudget(c.alertBudget); err != nil {
		errs = append(errs, fmt.Errorf("--alert-budget: %w", err))
	}
	if !(c.alertCost >= 0) || math.IsInf(c.alertCost, 0) {
		errs = append(errs, fmt.Errorf("--alert-cost %v: want a finite cost >= 0", c.alertCost))
	}
	return errors.Join(errs...)
}

// parseThresholds parses "review,alert".
func parseThresholds(s string) (review, alert float64, err error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("--thresholds %q: want review,alert", s)
	}
	var v [2]float64
	for i, p := range parts {
		if v[i], err = strconv.ParseFloat(strings.TrimSpace(p), 64); err != nil || math.IsNaN(v[i]) || math.IsInf(v[i], 0) {
			return 0, 0, fmt.Errorf("--thresholds %q: %q is not a finite number", s, strings.TrimSpace(p))
		}
	}
	if v[0] > v[1] {
		return 0, 0, fmt.Errorf("--thresholds %q: review above alert", s)
	}
	return v[0], v[1], nil
}

// cmdEval measures one model's published scores against labels and writes
// metrics.json and plots to --out (see package models/eval for the
// definitions).
func cmdEval(ctx context.Context, args []string) error {
	return runEval(ctx, args, os.Stdout)
}

func runEval(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	var c evalConfig
	c.flags(fs)
	var pan panConfig // labels may hold card numbers
	pan.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: streamscore eval --scores F --labels F --name NAME --out DIR [--model MODEL | --thresholds R,A] [--k 100]\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	from, err := parseTime(c.from, time.Time{})
	if err != nil {
		return fmt.Errorf("parse --from: %w", err)
	}
	to, err := parseTime(c.to, time.Time{})
	if err != nil {
		return fmt.Errorf("parse --to: %w", err)
	}
	opts := []eval.Option{eval.WithK(c.k), eval.WithRange(from, to), eval.WithAlertCost(c.alertCost)}
	if b, _ := train.ParseBudget(c.alertBudget); !b.IsZero() {
		opts = append(opts, eval.WithAlertBudget(b, "--alert-budget"))
	}

	var model *models.Model
	switch {
	case c.model != "":
		if model, err = models.Load(c.model); err != nil {
			return err
		}
		if c.name == "" {
			c.name = model.Name()
		} else if c.name != model.Name() {
			slog.Warn("eval: --name differs from the model file's name", "name", c.name, "model", model.Name())
		}
		review, alert := model.Thresholds()
		opts = append(opts, eval.WithThresholds(float64(review), float64(alert),
			fmt.Sprintf("model %s (%s)", model.Ident(), filepath.Base(c.model))))
		if b, ok := modelAlertBudget(model); ok && c.alertBudget == "" {
			opts = append(opts, eval.WithAlertBudget(b, "the model file's threshold_budget"))
		}
	case c.thresholds != "":
		review, alert, _ := parseThresholds(c.thresholds)
		opts = append(opts, eval.WithThresholds(review, alert, "--thresholds "+c.thresholds))
	}

	// Generated files run on a simulated clock: no future check.
	panOpts, err := pan.decoderOptions(slog.Default())
	if err != nil {
		return err
	}
	dec, err := features.NewDecoder(append([]features.DecoderOption{features.WithMaxFutureSkew(-1)}, panOpts...)...)
	if err != nil {
		return err
	}
	labels, err := readJSONL(c.labels, func(f *os.File) ([]features.Label, error) { return features.ReadLabels(f, dec) })
	if err != nil {
		return err
	}
	fb := feedback(labels)
	truth := fb.Truth()
	if sc := fb.Scenarios(); len(sc) > 0 {
		opts = append(opts, eval.WithScenarios(sc))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	scores, err := readScores(c.scores, c.name)
	if err != nil {
		return err
	}
	slog.Info("eval: read", "score_records", len(scores.Records), "labels", len(labels), "fraud_labelled", truth.Frauds())
	if err := ctx.Err(); err != nil {
		return err
	}
	res, err := eval.Evaluate(scores, truth, opts...)
	if err != nil {
		return fmt.Errorf("evaluate %s: %w", c.scores, err)
	}
	m := &res.Metrics
	if model != nil {
		if _, ok := m.ModelIdents[model.Ident()]; !ok {
			slog.Warn("eval: no record was scored by the --model file; its thresholds may not be the ones the stream used",
				"model", model.Ident(), "records_by", m.ModelIdents)
		}
	}

	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"metrics.json", func(w io.Writer) error { _, err := w.Write(append(b, '\n')); return err }},
		{"roc.png", res.WriteROC},
		{"pr.png", res.WritePR},
		{"scores.png", res.WriteScores},
		{"money.png", res.WriteMoney},
		{"alerts_per_day.png", res.WriteAlertsPerDay},
	}
	for _, f := range files {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.out, f.name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return printEvalTable(stdout, m, c.out)
}

func readScores(path, model string) (*eval.Scores, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open scores: %w", err)
	}
	defer f.Close()
	s, err := eval.ReadScores(f, model)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return s, nil
}

// printEvalTable prints the summary table of m.
func printEvalTable(w io.Writer, m *eval.Metrics, dir string) error {
	f := func(v eval.Float, prec int) string {
		if math.IsNaN(float64(v)) {
			return "n/a"
		}
		return strconv.FormatFloat(float64(v), 'f', prec, 64)
	}
	idents := make([]string, 0, len(m.ModelIdents))
	for id := range m.ModelIdents {
		if id == "" {
			id = "unknown"
		}
		idents = append(idents, id)
	}
	sort.Strings(idents)
	fmt.Fprintf(w, "eval: model %s (%s), event time %s .. %s\n", m.Model, strings.Join(idents, "; "),
		m.From.Format(time.RFC3339), m.To.Format(time.RFC3339))
	cp := m.CardPrecision
	for _, r := range [][2]string{
		{"transactions", strconv.Itoa(m.Transactions)},
		{"fraud", strconv.Itoa(m.Fraud)},
		{"base rate", f(m.BaseRate, 5)},
		{"ROC AUC", f(m.ROCAUC, 4)},
		{"average precision", f(m.AveragePrecision, 4)},
		{fmt.Sprintf("card precision@%d, mean of %d days", cp.K, len(cp.Days)), f(cp.Mean, 4)},
		{fmt.Sprintf("  best possible with k = %d", cp.K), f(cp.MeanBestPossible, 4)},
	} {
		fmt.Fprintf(w, "  %-36s %10s\n", r[0], r[1])
	}
	if mo := m.Money; !math.IsNaN(float64(mo.FraudAmount)) {
		fmt.Fprintf(w, "  %-36s %10s\n", "amount scored", f(mo.TotalAmount, 0))
		fmt.Fprintf(w, "  %-36s %10s\n", "fraud amount (loss if none stopped)", f(mo.FraudAmount, 0))
	} else {
		fmt.Fprintf(w, "  money view: n/a (%d of %d records carry an amount; re-score to get them)\n", mo.WithAmount, m.Transactions)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  threshold\tscore\talerted\talerts/day\talert rate\tprecision\trecall\t$ recall\tsavings\t\n")
	cut := func(c eval.Cut) {
		fmt.Fprintf(tw, "  %s\t%.4g\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.Name, c.Threshold, c.Alerted, f(c.AlertsPerDay, 1),
			f(c.AlertRate, 5), f(c.Precision, 4), f(c.Recall, 4), f(c.AmountRecall, 4), f(c.Savings, 0))
	}
	for _, c := range m.Thresholds {
		cut(c)
	}
	fmt.Fprintf(tw, "  \t\t\t\t\t\t\t\t\t\n")
	for _, c := range m.Operating {
		cut(c)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	fmt.Fprintf(w, "thresholds: %s; savings = fraud amount alerted - %g x alerts\n", m.ThresholdSource, m.Money.AlertCost)
	if b := m.AlertBudget; b != nil {
		fmt.Fprintf(w, "alert budget %s (%s): %.1f alerts a day on average, at most %d; %d of %d days over budget\n",
			b.Budget, b.Source, b.MeanAlerts, b.MaxAlerts, b.DaysOver, b.Days)
	}
	if len(m.Scenarios) > 0 {
		tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "  scenario\tfraud\trecall@review\trecall@alert\tfraud amount\t$ recall@alert\t\n")
		for _, sc := range m.Scenarios {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t\n", sc.Scenario, sc.Fraud, f(sc.RecallReview, 4), f(sc.RecallAlert, 4), f(sc.Amount, 0), f(sc.AmountRecall, 4))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("print table: %w", err)
		}
	}
	if err := printDays(w, m, f); err != nil {
		return err
	}
	var notes []string
	if m.DuplicateRecords > 0 {
		notes = append(notes, fmt.Sprintf("%d duplicate records dropped", m.DuplicateRecords))
	}
	if m.NullScores > 0 {
		notes = append(notes, fmt.Sprintf("%d null scores dropped", m.NullScores))
	}
	if m.OutOfRange > 0 {
		notes = append(notes, fmt.Sprintf("%d records outside %s", m.OutOfRange, m.Range))
	}
	if m.FraudWithoutScore > 0 {
		notes = append(notes, fmt.Sprintf("%d fraud-labelled transactions have no score record (outside the file's range, or never scored)", m.FraudWithoutScore))
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "notes: %s\n", strings.Join(notes, "; "))
	}
	_, err := fmt.Fprintf(w, "wrote %s\n", strings.Join([]string{
		filepath.Join(dir, "metrics.json"), filepath.Join(dir, "roc.png"),
		filepath.Join(dir, "pr.png"), filepath.Join(dir, "scores.png"), filepath.Join(dir, "money.png"),
		filepath.Join(dir, "alerts_per_day.png")}, ", "))
	return err
}

// printDays prints the per-day table: alerts and reviews against the
// budget, the alerts' precision and recall, and card precision top-k.
func printDays(w io.Writer, m *eval.Metrics, f func(eval.Float, int) string) error {
	cards := map[string]eval.CardDay{}
	for _, d := range m.CardPrecision.Days {
		cards[d.Day] = d
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  day\ttx\tfraud\treviews\talerts\tover budget\tprecision@alert\trecall@alert\tcard precision@%d\t\n", m.CardPrecision.K)
	for _, d := range m.Days {
		over := ""
		if d.OverBudget {
			over = "yes"
		}
		cp := "n/a"
		if c, ok := cards[d.Day]; ok {
			cp = f(c.Precision, 3)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", d.Day, d.Transactions, d.Fraud, d.Reviews, d.Alerts, over,
			f(d.Precision, 3), f(d.Recall, 3), cp)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	return nil
}
