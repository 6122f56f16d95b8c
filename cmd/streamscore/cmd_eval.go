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
)

// evalConfig is the process config of the eval command.
type evalConfig struct {
	scores, labels, name, out string
	model, thresholds         string
	k                         int
	from, to                  string
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
	opts := []eval.Option{eval.WithK(c.k), eval.WithRange(from, to)}

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
	case c.thresholds != "":
		review, alert, _ := parseThresholds(c.thresholds)
		opts = append(opts, eval.WithThresholds(review, alert, "--thresholds "+c.thresholds))
	}

	// Generated files run on a simulated clock: no future check.
	panOpts, err := pan.decoderOptions(slog.Default())
	if err != nil {
		return err
	}
	dec := features.NewDecoder(append([]features.DecoderOption{features.WithMaxFutureSkew(-1)}, panOpts...)...)
	labels, err := readJSONL(c.labels, func(f *os.File) ([]features.Label, error) { return features.ReadLabels(f, dec) })
	if err != nil {
		return err
	}
	truth := knownFraud(labels)
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
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  threshold\tscore\talerted\talert rate\tprecision\trecall\t\n")
	for _, c := range m.Thresholds {
		fmt.Fprintf(tw, "  %s\t%.4g\t%d\t%s\t%s\t%s\t\n", c.Name, c.Threshold, c.Alerted, f(c.AlertRate, 5), f(c.Precision, 4), f(c.Recall, 4))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	fmt.Fprintf(w, "thresholds: %s\n", m.ThresholdSource)
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
		filepath.Join(dir, "pr.png"), filepath.Join(dir, "scores.png")}, ", "))
	return err
}
