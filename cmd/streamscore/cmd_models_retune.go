package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// modelsRetune re-picks the thresholds of an existing model file by budget
// on a recent period of history, without retraining: it scores every
// transaction of [--from, --to) as the stream would (stream.Replay, so
// sequence models too), takes the labels known at the end of --labels as
// the truth, picks the thresholds that fit --alert-budget and
// --review-budget, and writes a new file (same weights, new thresholds,
// the budget and its expected precision, recall and alerts a day in
// "training"). The new file has a new digest: signatures of the old one do
// not cover it, so sign it (`models sign`) before a trusting engine loads
// it.
func modelsRetune(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("models retune", flag.ContinueOnError)
	modelPath := fs.String("model", "", "model file whose thresholds to re-pick (required; left unchanged)")
	out := fs.String("out", "", "the new model file (required; not --model: the signed original stays as it is)")
	version := fs.Int("version", 0, "version of the new file (default: the model's own; bump it when the old file stays in use somewhere)")
	var hf historyFlags
	hf.register(fs, "labels JSONL file (required): the truth as known at its end, and the label-derived features at their own time")
	var budget budgetFlags
	budget.register(fs, "[--from, --to)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: streamscore models retune --model M --events F --labels F --from T1 --to T2 --alert-budget 200/day [--review-budget 600/day] --out M2\n\n"+
			"Re-picks the thresholds of M by budget on the transactions of [T1, T2), scored as the stream would,\n"+
			"without retraining. Take a period whose labels have matured (fraud is labelled days to weeks late).\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var errs []error
	if *modelPath == "" || *out == "" {
		errs = append(errs, errors.New("--model and --out are required"))
	}
	if hf.labels == "" {
		errs = append(errs, errors.New("--labels is required: the budget's precision and recall need the truth"))
	}
	if !budget.given() {
		errs = append(errs, errors.New("give --alert-budget and/or --review-budget"))
	}
	if *version < 0 {
		errs = append(errs, fmt.Errorf("--version %d: want >= 1", *version))
	}
	if *modelPath != "" && *out != "" && sameFile(*modelPath, *out) {
		errs = append(errs, fmt.Errorf("--out %s is --model: write a new file (then sign it)", *out))
	}
	reviewB, alertB, err := budget.parse()
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("models retune: %w", err)
	}
	raw, err := os.ReadFile(*modelPath)
	if err != nil {
		return fmt.Errorf("models retune: %w", err)
	}
	m, err := models.Parse(raw)
	if err != nil {
		return fmt.Errorf("models retune: load %s: %w", *modelPath, err)
	}
	var f models.File
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&f); err != nil {
		return fmt.Errorf("models retune: decode %s: %w", *modelPath, err)
	}
	h, err := hf.load("models retune")
	if err != nil {
		return err
	}
	truth := knownFraud(h.labels)
	var scores, y []float32
	var first, last time.Time
	err = stream.Replay(h.events, h.labels, []*models.Model{m}, h.from, h.to, func(rec *output.ScoreRecord) error {
		if len(scores)%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if first.IsZero() {
			first = rec.TS
		}
		last = rec.TS
		scores = append(scores, float32(rec.Scores[0].Value))
		var v float32
		if truth[rec.TxID] {
			v = 1
		}
		y = append(y, v)
		return nil
	}, stream.WithFeatureOptions(h.opts...), stream.WithReasons(0))
	if err != nil {
		return fmt.Errorf("models retune: score %s: %w", *modelPath, err)
	}
	if len(scores) == 0 {
		return fmt.Errorf("models retune: no transactions in [%s, %s)", orOpen(hf.from), orOpen(hf.to))
	}
	fromT, toT := time.Time{}, time.Time{}
	if hf.from != "" && hf.to != "" {
		fromT, toT = h.from, h.to
	}
	p := budgetPeriod{scores: scores, y: y, days: periodDays(first, last, fromT, toT),
		what: fmt.Sprintf("[%s, %s) of %s", orOpen(hf.from), orOpen(hf.to), filepath.Base(hf.events))}
	prevDigest, prev := f.Digest, f.Thresholds
	rc, ac, err := applyBudgets(&f, p, reviewB, alertB)
	if err != nil {
		return fmt.Errorf("models retune: %w", err)
	}
	if *version > 0 {
		f.Version = *version
	}
	f.Training["retune"] = map[string]any{
		"command":         "streamscore models retune " + strings.Join(args, " "),
		"from_digest":     prevDigest,
		"from_thresholds": map[string]any{"review": prev.Review, "alert": prev.Alert},
		"events_file":     filepath.Base(hf.events),
		"labels_file":     filepath.Base(hf.labels),
		"period":          fmt.Sprintf("[%s, %s)", first.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano)),
		"target":          "fraud label known at the end of the labels file (unlabelled = genuine)",
	}
	b, err := f.Encode()
	if err != nil {
		return fmt.Errorf("models retune: %w", err)
	}
	nm, err := models.Parse(b)
	if err != nil {
		return fmt.Errorf("models retune: %w", err)
	}
	if err := durable.ReplaceFile(*out, b, 0o644); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	fmt.Fprintf(w, "retuned %s -> %s (%s)\n  period %s: %d transactions, %d fraud, %.2f days\n",
		m.Ident(), nm.Ident(), *out, p.what, len(scores), countFraud(y), p.days)
	fmt.Fprintf(w, "  %-7s %-10s %12s %12s %10s %10s %10s %8s\n", "", "budget", "old", "new", "taken/day", "precision", "recall", "taken")
	for _, c := range []struct {
		name     string
		cut      *train.BudgetCut
		old, new float64
	}{{"review", rc, prev.Review, f.Thresholds.Review}, {"alert", ac, prev.Alert, f.Thresholds.Alert}} {
		if c.cut == nil {
			fmt.Fprintf(w, "  %-7s %-10s %12.6g %12.6g %10s %10s %10s %8s\n", c.name, "-", c.old, c.new, "", "", "", "")
			continue
		}
		fmt.Fprintf(w, "  %-7s %-10s %12.6g %12.6g %10.1f %10.4f %10.4f %8d\n", c.name, c.cut.Budget, c.old, c.new,
			c.cut.PerDay, c.cut.Precision, c.cut.Recall, c.cut.Taken)
	}
	fmt.Fprintf(w, "the new file has a new digest: sign it (streamscore models sign --key KEY %s) before an engine that trusts signed models loads it\n", *out)
	return nil
}

func countFraud(y []float32) int {
	n := 0
	for _, v := range y {
		if v > 0 {
			n++
		}
	}
	return n
}

// sameFile reports whether a and b name the same existing file (or the same
// path).
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
