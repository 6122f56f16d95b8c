package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/eval"
	"github.com/streamscore/streamscore/models/train"
	trainhistory "github.com/streamscore/streamscore/models/train/history"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

var (
	seqKinds = []string{models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM}
	gbdtKind = []string{models.FamilyGBDT}
)

// backtestGridKinds maps each flag a --grid may vary to the model families
// that use it; a grid key multiplies the runs of those families only.
var backtestGridKinds = map[string][]string{
	"epochs":           {models.FamilyMLP},
	"trees":            gbdtKind,
	"max-depth":        gbdtKind,
	"max-leaves":       gbdtKind,
	"min-child-weight": gbdtKind,
	"subsample":        gbdtKind,
	"colsample":        gbdtKind,
	"learning-rate":    gbdtKind,
	"lambda":           gbdtKind,
	"early-stop":       gbdtKind,
	"seq-epochs":       seqKinds,
	"chunk":            seqKinds,
	"window":           {models.FamilyCNN},
	"kernel":           {models.FamilyCNN},
	"channels":         {models.FamilyCNN},
}

// backtestFold is one fold of the prequential protocol
// (trainhistory.Fold) with what its data was.
type backtestFold struct {
	trainhistory.Fold

	TrainRows  int `json:"train_rows"`
	TrainFraud int `json:"train_fraud"` // fraud labels known at TestFrom
	TestRows   int `json:"test_rows"`   // after the removal of compromised cards
	TestFraud  int `json:"test_fraud"`  // fraud as known at the end of the labels file
	// RemovedCards are the test-range cards with a fraud label known
	// before TestFrom, and RemovedRows their test-range transactions.
	RemovedCards int `json:"removed_cards"`
	RemovedRows  int `json:"removed_rows"`
}

// backtestRun is one model configuration: a kind and grid values.
type backtestRun struct {
	Name   string            `json:"config"`
	Kind   string            `json:"kind"`
	Params map[string]string `json:"params,omitempty"`
	opts   []train.Option

	AUC []eval.Float `json:"roc_auc"` // per fold, in fold order
	AP  []eval.Float `json:"average_precision"`
	CP  []eval.Float `json:"card_precision"`
	// Recall and Precision at the alert threshold each fold's model
	// picked on its own held-out tail (its operating point).
	Recall    []eval.Float `json:"recall_at_alert"`
	Precision []eval.Float `json:"precision_at_alert"`
	Mean      backtestStat `json:"mean"`
	Std       backtestStat `json:"std"` // sample standard deviation (n-1), as the handbook's pandas

	// models of a sequence kind, one per fold (index: fold), scored after
	// all folds are fitted, and their scored test sets.
	seqModels []*models.Model
	seqScored [][]eval.Scored
}

// backtestStat is one statistic of the metrics over the folds.
type backtestStat struct {
	AUC       eval.Float `json:"roc_auc"`
	AP        eval.Float `json:"average_precision"`
	CP        eval.Float `json:"card_precision"`
	Recall    eval.Float `json:"recall_at_alert"`
	Precision eval.Float `json:"precision_at_alert"`
}

// add measures the scores of recs (a fold's test set) against truth with
// model m's thresholds and appends the metrics.
func (r *backtestRun) add(m *models.Model, recs []eval.Scored, truth eval.Truth, k int) error {
	review, alert := m.Thresholds()
	res, err := eval.Evaluate(&eval.Scores{Model: r.Name, Records: recs}, truth, eval.WithK(k),
		eval.WithThresholds(float64(review), float64(alert), "the fold model's validation"))
	if err != nil {
		return err
	}
	r.AUC = append(r.AUC, res.Metrics.ROCAUC)
	r.AP = append(r.AP, res.Metrics.AveragePrecision)
	r.CP = append(r.CP, res.Metrics.CardPrecision.Mean)
	cut := eval.Cut{Recall: eval.Float(math.NaN()), Precision: eval.Float(math.NaN())}
	for _, c := range res.Metrics.Thresholds {
		if c.Name == "alert" {
			cut = c
		}
	}
	r.Recall = append(r.Recall, cut.Recall)
	r.Precision = append(r.Precision, cut.Precision)
	return nil
}

// parseGrid parses "key=v1,v2;key2=v3" into keys in order and their values.
func parseGrid(s string) ([]string, map[string][]string, error) {
	vals := map[string][]string{}
	var keys []string
	if strings.TrimSpace(s) == "" {
		return nil, vals, nil
	}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.TrimSpace(v) == "" {
			return nil, nil, fmt.Errorf("--grid %q: want key=v1,v2;key2=v3", s)
		}
		if _, known := backtestGridKinds[k]; !known {
			var ks []string
			for g := range backtestGridKinds {
				ks = append(ks, g)
			}
			slices.Sort(ks)
			return nil, nil, fmt.Errorf("--grid key %q: want one of %s", k, strings.Join(ks, ", "))
		}
		if _, dup := vals[k]; dup {
			return nil, nil, fmt.Errorf("--grid key %q given twice", k)
		}
		keys = append(keys, k)
		for _, x := range strings.Split(v, ",") {
			vals[k] = append(vals[k], strings.TrimSpace(x))
		}
	}
	return keys, vals, nil
}

// cmdBacktest runs the prequential backtest of the Fraud Detection
// Handbook (chapter 5) over recorded or generated history.
func cmdBacktest(ctx context.Context, args []string) error {
	return runBacktest(ctx, args, os.Stdout)
}

func runBacktest(ctx context.Context, args []string, stdout io.Writer) error {
	return backtestWith(ctx, args, stdout, nil)
}

// seqScoredFunc receives the model a sequence run fitted on a fold and the
// fold's test set as it scored it (the tests' window into the scoring).
type seqScoredFunc func(run string, fold int, m *models.Model, recs []eval.Scored)

func backtestWith(ctx context.Context, args []string, stdout io.Writer, onSeqScored seqScoredFunc) error {
	fs := flag.NewFlagSet("backtest", flag.ContinueOnError)
	eventsPath := fs.String("events", "", "events JSONL file (required)")
	labelsPath := fs.String("labels", "", "labels JSONL file (required)")
	kindsS := fs.String("kinds", "logistic,mlp,gbdt", "model families to compare, comma separated: logistic, mlp, gbdt, cnn, gru, lstm")
	folds := fs.Int("folds", 4, "number of folds; each moves the window back by --test-days")
	trainDays := fs.Int("train-days", 7, "days of the training window")
	delayDays := fs.Int("delay-days", 7, "days skipped between training and test: the label delay")
	testDays := fs.Int("test-days", 7, "days of the test window")
	endS := fs.String("end", "", "end (exclusive) of the latest fold's test window, YYYY-MM-DD or RFC 3339 (default: midnight UTC after the last event)")
	k := fs.Int("k", eval.DefaultK, "k of card precision top-k: cards the investigators check a day")
	out := fs.String("out", "", "output directory for metrics.json and backtest.png (required; created if missing)")
	seed := fs.Int64("seed", 1, "random seed of every fit")
	hidden := fs.String("hidden", "32,16", "mlp: hidden layer widths, comma separated")
	epochs := fs.Int("epochs", 40, "mlp: maximum epochs")
	holdout := fs.Float64("holdout", 0.2, "fraction of each fold's training rows, the latest, held out for early stopping")
	seqHidden := fs.String("seq-hidden", "", "cnn/gru/lstm: as train's --hidden for these kinds: gru/lstm hidden size then the head's hidden widths (default 16,8), cnn the head's hidden widths (default none)")
	seqEpochs := fs.Int("seq-epochs", 8, "cnn/gru/lstm: maximum epochs (early stopping usually ends sooner)")
	grid := fs.String("grid", "", "hyper-parameter grid, key=v1,v2;key2=v3 over the flags epochs (mlp), trees, max-depth, max-leaves, min-child-weight, subsample, colsample, learning-rate, lambda, early-stop (gbdt), seq-epochs, chunk (cnn, gru, lstm) and window, kernel, channels (cnn); each family runs every combination of its keys")
	quiet := fs.Bool("quiet", false, "no progress bars")
	specPath := fs.String("features", "", "feature spec YAML (default: the embedded default spec)")
	var gb gbdtTrainFlags
	gb.register(fs)
	var sq seqTrainFlags
	sq.register(fs)
	var pan panConfig
	pan.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var errs []error
	if *eventsPath == "" || *labelsPath == "" || *out == "" {
		errs = append(errs, errors.New("--events, --labels and --out are required"))
	}
	if *folds < 1 || *trainDays < 1 || *delayDays < 0 || *testDays < 1 {
		errs = append(errs, fmt.Errorf("--folds %d, --train-days %d, --test-days %d: want >= 1; --delay-days %d: want >= 0",
			*folds, *trainDays, *testDays, *delayDays))
	}
	if *k < 1 {
		errs = append(errs, fmt.Errorf("--k %d: want at least 1", *k))
	}
	kinds := splitList(*kindsS)
	if len(kinds) == 0 {
		errs = append(errs, errors.New("--kinds is empty"))
	}
	for _, kd := range kinds {
		switch kd {
		case models.FamilyLogistic, models.FamilyMLP, models.FamilyGBDT, models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM:
		default:
			errs = append(errs, fmt.Errorf("--kinds: %q: want logistic, mlp, gbdt, cnn, gru or lstm", kd))
		}
	}
	gridKeys, gridVals, err := parseGrid(*grid)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backtest: %w", err)
	}
	widths, err := parseHidden(*hidden)
	if err != nil {
		return err
	}
	var seqWidths []int
	if *seqHidden != "" {
		if seqWidths, err = parseHidden(*seqHidden); err != nil {
			return fmt.Errorf("backtest: --seq-hidden: %w", err)
		}
	}
	withSeq := slices.ContainsFunc(kinds, isSeqKind)

	// The runs: every kind, times the combinations of its grid keys. Flag
	// values are set on fs, then read into options at once.
	var runs []*backtestRun
	for _, kd := range kinds {
		var keys []string
		for _, g := range gridKeys {
			if slices.Contains(backtestGridKinds[g], kd) {
				keys = append(keys, g)
			}
		}
		combos := []map[string]string{{}}
		for _, g := range keys {
			var next []map[string]string
			for _, c := range combos {
				for _, v := range gridVals[g] {
					m := map[string]string{g: v}
					for a, b := range c {
						m[a] = b
					}
					next = append(next, m)
				}
			}
			combos = next
		}
		for _, c := range combos {
			name := kd
			for _, g := range keys {
				if err := fs.Set(g, c[g]); err != nil {
					return fmt.Errorf("backtest: --grid %s=%s: %w", g, c[g], err)
				}
				name += " " + g + "=" + c[g]
			}
			r := &backtestRun{Name: name, Kind: kd, opts: []train.Option{train.WithSeed(*seed), train.WithHoldout(*holdout)}}
			if len(c) > 0 {
				r.Params = c
			}
			switch kd {
			case models.FamilyMLP:
				r.opts = append(r.opts, train.WithHidden(widths...), train.WithEpochs(*epochs))
			case models.FamilyGBDT:
				r.opts = append(r.opts, gb.options()...)
			case models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM:
				so, err := sq.options(kd)
				if err != nil {
					return fmt.Errorf("backtest: %s: %w", name, err)
				}
				r.opts = append(r.opts, so...)
				r.opts = append(r.opts, train.WithEpochs(*seqEpochs))
				if seqWidths != nil {
					r.opts = append(r.opts, train.WithHidden(seqWidths...))
				}
			}
			runs = append(runs, r)
		}
	}

	panOpts, err := pan.decoderOptions(slog.Default())
	if err != nil {
		return err
	}
	events, labels, err := readHistory(*eventsPath, *labelsPath, panOpts...)
	if err != nil {
		return err
	}
	if len(events) == 0 {
		return fmt.Errorf("backtest: no events in %s", *eventsPath)
	}
	first, last := events[0].TS, events[0].TS
	for i := range events {
		first, last = minTime(first, events[i].TS), maxTime(last, events[i].TS)
	}
	end := last.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if *endS != "" {
		if end, err = parseTime(*endS, time.Time{}); err != nil {
			return fmt.Errorf("parse --end: %w", err)
		}
	}
	hfl, err := trainhistory.Folds(end, *folds, *trainDays, *delayDays, *testDays)
	if err != nil {
		return fmt.Errorf("backtest: %w", err)
	}
	fl := make([]backtestFold, len(hfl))
	for i, f := range hfl {
		fl[i].Fold = f
	}
	earliest := fl[len(fl)-1].TrainFrom
	if earliest.Before(first.UTC().Truncate(24 * time.Hour)) {
		return fmt.Errorf("backtest: the oldest fold trains from %s, before the first event (%s): fewer folds or days, or a later --end",
			earliest.Format(time.DateOnly), first.Format(time.RFC3339))
	}

	names := features.Names()
	defs := features.DefaultSpec().Definitions()
	var fopts []features.Option
	if *specPath != "" {
		spec, err := loadSpec(*specPath)
		if err != nil {
			return err
		}
		names, fopts, defs = spec.Names(), []features.Option{features.WithSpec(spec)}, spec.Definitions()
	}
	// One replay of the history up to end through the stream's feature
	// code; rows from the oldest training day on are kept, and all rows
	// when a sequence kind runs: its training warms each card's state with
	// the card's whole history, as the stream does.
	rows := trainhistory.NewRows(names)
	replayBar := newBar(int64(len(events)), "replay", *quiet)
	err = trainhistory.Replay(ctx, trainhistory.Source{Events: events, Labels: labels, Features: fopts}, end,
		func(done, _ int) { _ = replayBar.Set(done) }, func(e *features.Event, row []float32) error {
			if e.TS.Before(earliest) && !withSeq {
				return nil
			}
			rows.Append(e, row)
			return nil
		})
	_ = replayBar.Finish()
	if err != nil {
		return err
	}
	truth := knownFraud(labels) // test truth: as known at the end of the file

	bar := newBar(int64(len(fl)*len(runs)), "backtest", *quiet)
	done := 0
	// Per fold (index: fold), the test set after the removal of the cards
	// known compromised, and those cards: the sequence models score it
	// after all folds are fitted.
	testRecs := make([][]eval.Scored, len(fl))
	compromisedAt := make([]map[string]bool, len(fl))
	// Oldest fold first.
	for fi := len(fl) - 1; fi >= 0; fi-- {
		f := &fl[fi]
		var known []features.Label
		compromised := map[string]bool{}
		for _, l := range labels {
			if l.TS.Before(f.TestFrom) {
				known = append(known, l)
				if l.Fraud {
					compromised[l.CardID] = true
				}
			}
		}
		compromisedAt[fi] = compromised
		// Training target: the labels known at the test start (those of
		// the delay period's end), not the file's final truth.
		trainTruth := knownFraud(known)
		trainY := func(i int) float32 {
			if rows.In(i, f.TrainFrom, f.TrainTo) && trainTruth[rows.TxID[i]] {
				return 1
			}
			return 0
		}
		trainSet := rows.Set(f.TrainFrom, f.TrainTo, trainY)
		for _, y := range trainSet.Y {
			if y > 0 {
				f.TrainFraud++
			}
		}
		// The sequence kinds' training set: every row before the training
		// end, the loss on the training window's rows.
		var seqSet *train.SeqDataset
		if withSeq {
			if seqSet, err = rows.SeqSet(f.TrainFrom, f.TrainTo, trainY); err != nil {
				return fmt.Errorf("backtest: %w", err)
			}
		}
		testSet := &train.Dataset{Names: names}
		var recs []eval.Scored
		removed := map[string]bool{}
		for i := range rows.Len() {
			if !rows.In(i, f.TestFrom, f.TestTo) {
				continue
			}
			card := rows.CardID[i]
			if compromised[card] {
				removed[card] = true
				f.RemovedRows++
				continue
			}
			var y float32
			if truth[rows.TxID[i]] {
				y = 1
				f.TestFraud++
			}
			testSet.Append(rows.Row(i), y)
			recs = append(recs, eval.Scored{TxID: rows.TxID[i], CardID: card, TS: rows.TS[i]})
		}
		testRecs[fi] = recs
		f.TrainRows, f.TestRows, f.RemovedCards = trainSet.Rows(), testSet.Rows(), len(removed)
		slog.Info("backtest: fold", "fold", f.Index, "train", fmt.Sprintf("[%s, %s)", f.TrainFrom.Format(time.DateOnly), f.TrainTo.Format(time.DateOnly)),
			"test", fmt.Sprintf("[%s, %s)", f.TestFrom.Format(time.DateOnly), f.TestTo.Format(time.DateOnly)),
			"train_rows", f.TrainRows, "train_fraud", f.TrainFraud, "test_rows", f.TestRows, "test_fraud", f.TestFraud,
			"removed_cards", f.RemovedCards)
		if f.TrainRows == 0 || f.TestRows == 0 {
			return fmt.Errorf("backtest: fold %d has %d training and %d test rows: the history does not cover it", f.Index, f.TrainRows, f.TestRows)
		}
		for ri, r := range runs {
			bar.Describe(fmt.Sprintf("fold %d (%d of %d) %s", f.Index, len(fl)-fi, len(fl), r.Name))
			var mf *models.File
			if isSeqKind(r.Kind) {
				mf, err = train.FitSeq(ctx, r.Kind, fmt.Sprintf("backtest_%s_%d_fold%d", r.Kind, ri, f.Index), 1, seqSet, r.opts...)
			} else {
				mf, err = train.Fit(ctx, r.Kind, "backtest_"+r.Kind, 1, trainSet, r.opts...)
			}
			if err != nil {
				return fmt.Errorf("fit %s on fold %d: %w", r.Name, f.Index, err)
			}
			if err := mf.PinFeatures(stream.ModelFeatureDefs(defs)); err != nil {
				return err
			}
			b, err := mf.Encode()
			if err != nil {
				return fmt.Errorf("encode model: %w", err)
			}
			m, err := models.Parse(b)
			if err != nil {
				return fmt.Errorf("parse model: %w", err)
			}
			done++
			if isSeqKind(r.Kind) {
				// Scored below, by the stream's own code, once every
				// fold's model exists.
				if r.seqModels == nil {
					r.seqModels = make([]*models.Model, len(fl))
				}
				r.seqModels[fi] = m
				_ = bar.Set(done)
				continue
			}
			scores, err := train.Predict(m, testSet)
			if err != nil {
				return fmt.Errorf("score fold %d: %w", f.Index, err)
			}
			for i := range recs {
				recs[i].Score = float64(scores[i])
			}
			if err := r.add(m, recs, truth, *k); err != nil {
				return fmt.Errorf("evaluate %s on fold %d: %w", r.Name, f.Index, err)
			}
			_ = bar.Set(done)
		}
	}
	_ = bar.Finish()
	if withSeq {
		if err := scoreSeqFolds(ctx, events, labels, fopts, fl, runs, testRecs, compromisedAt, *quiet, onSeqScored); err != nil {
			return err
		}
		for fi := len(fl) - 1; fi >= 0; fi-- {
			for _, r := range runs {
				if r.seqModels == nil {
					continue
				}
				if err := r.add(r.seqModels[fi], r.seqScored[fi], truth, *k); err != nil {
					return fmt.Errorf("evaluate %s on fold %d: %w", r.Name, fl[fi].Index, err)
				}
			}
		}
	}
	slices.Reverse(fl) // oldest first, as the runs' per-fold values
	for _, r := range runs {
		r.Mean.AUC, r.Std.AUC = meanStd(r.AUC)
		r.Mean.AP, r.Std.AP = meanStd(r.AP)
		r.Mean.CP, r.Std.CP = meanStd(r.CP)
		r.Mean.Recall, r.Std.Recall = meanStd(r.Recall)
		r.Mean.Precision, r.Std.Precision = meanStd(r.Precision)
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	doc := map[string]any{"k": *k, "train_days": *trainDays, "delay_days": *delayDays, "test_days": *testDays,
		"folds": fl, "runs": runs,
		"protocol": "prequential (Fraud Detection Handbook ch. 5): training target = labels known at the test start; test truth = labels at the end of the file; cards with a fraud label known before the test start removed from the test set"}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "metrics.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write metrics: %w", err)
	}
	if err := writeBacktestPlot(filepath.Join(*out, "backtest.png"), runs, *k); err != nil {
		return err
	}
	return printBacktestTable(stdout, runs, fl, *k, *out)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// meanStd returns the mean and the sample standard deviation (n-1) of the
// finite values of v; NaN when there are too few.
func meanStd(v []eval.Float) (mean, std eval.Float) {
	var xs []float64
	for _, x := range v {
		if f := float64(x); !math.IsNaN(f) && !math.IsInf(f, 0) {
			xs = append(xs, f)
		}
	}
	if len(xs) == 0 {
		return eval.Float(math.NaN()), eval.Float(math.NaN())
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	m := s / float64(len(xs))
	if len(xs) < 2 {
		return eval.Float(m), eval.Float(math.NaN())
	}
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return eval.Float(m), eval.Float(math.Sqrt(ss / float64(len(xs)-1)))
}

func printBacktestTable(w io.Writer, runs []*backtestRun, fl []backtestFold, k int, dir string) error {
	pm := func(m, s eval.Float) string {
		if math.IsNaN(float64(m)) {
			return "n/a"
		}
		if math.IsNaN(float64(s)) {
			return fmt.Sprintf("%.3f", float64(m))
		}
		return fmt.Sprintf("%.3f ± %.3f", float64(m), float64(s))
	}
	fmt.Fprintf(w, "backtest: %d folds, tests from %s to %s\n", len(fl), fl[0].TestFrom.Format(time.DateOnly), fl[len(fl)-1].TestTo.Format(time.DateOnly))
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "  model\tROC AUC\taverage precision\tcard precision@%d\trecall@alert\tprecision@alert\t\n", k)
	for _, r := range runs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, pm(r.Mean.AUC, r.Std.AUC), pm(r.Mean.AP, r.Std.AP), pm(r.Mean.CP, r.Std.CP),
			pm(r.Mean.Recall, r.Std.Recall), pm(r.Mean.Precision, r.Std.Precision))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	_, err := fmt.Fprintf(w, "wrote %s, %s\n", filepath.Join(dir, "metrics.json"), filepath.Join(dir, "backtest.png"))
	return err
}

// writeBacktestPlot draws, for each run, a box of its per-fold values of
// each metric.
func writeBacktestPlot(path string, runs []*backtestRun, k int) error {
	p := plot.New()
	p.Title.Text = "backtest: per-fold metrics by model"
	p.Y.Label.Text = "metric"
	p.Y.Min, p.Y.Max = 0, 1.2 // room above 1 for the legend
	p.Add(plotter.NewGrid())
	metrics := []struct {
		name string
		get  func(*backtestRun) []eval.Float
	}{
		{"ROC AUC", func(r *backtestRun) []eval.Float { return r.AUC }},
		{"average precision", func(r *backtestRun) []eval.Float { return r.AP }},
		{fmt.Sprintf("card precision@%d", k), func(r *backtestRun) []eval.Float { return r.CP }},
		{"recall at alert", func(r *backtestRun) []eval.Float { return r.Recall }},
	}
	names := make([]string, len(runs))
	width := vg.Points(10)
	for mi, mt := range metrics {
		legend := false
		for ri, r := range runs {
			names[ri] = r.Name
			var vals plotter.Values
			for _, x := range mt.get(r) {
				if f := float64(x); !math.IsNaN(f) {
					vals = append(vals, f)
				}
			}
			if len(vals) == 0 {
				continue
			}
			b, err := plotter.NewBoxPlot(width, float64(ri)+(float64(mi)-1.5)*0.2, vals)
			if err != nil {
				return fmt.Errorf("plot backtest: %w", err)
			}
			b.FillColor = plotutil.Color(mi)
			p.Add(b)
			legend = true
		}
		if legend {
			p.Legend.Add(mt.name, swatch{plotutil.Color(mi)})
		}
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(runs))-0.4
	p.Legend.Top = true
	if err := p.Save(vg.Length(max(7, 2*len(runs)))*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot backtest: %w", err)
	}
	return nil
}

// swatch is a legend entry: a rectangle of one colour.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	pts := []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Min.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Min.Y}}
	c.FillPolygon(s.c, c.ClipPolygonY(pts))
}

// scoreSeqFolds scores each fold's test set (testRecs, index: fold, the
// latest first; the rows of the cards in compromised[fold] left out) with
// the fold's model of every sequence run, through the stream's own code:
// stream.Replay takes every event before the latest test end through the
// features in event-time order, and each model advances its card's state
// on every event from the first one, with the stream's TTL and card
// eviction, so the state each model starts its fold's test days with is
// the one the stream would have had running it over the same history.
// Test ranges are disjoint, so one replay serves every fold and run: a
// model's state does not depend on the other models.
func scoreSeqFolds(ctx context.Context, events []features.Event, labels []features.Label, fopts []features.Option,
	fl []backtestFold, runs []*backtestRun, testRecs [][]eval.Scored, compromised []map[string]bool, quiet bool,
	onScored seqScoredFunc) error {
	type slot struct {
		run  *backtestRun
		fold int
	}
	var ms []*models.Model
	var slots []slot
	for _, r := range runs {
		if r.seqModels == nil {
			continue
		}
		r.seqScored = make([][]eval.Scored, len(fl))
		for fi, m := range r.seqModels {
			ms = append(ms, m)
			slots = append(slots, slot{r, fi})
			r.seqScored[fi] = slices.Clone(testRecs[fi])
		}
	}
	from, to := fl[len(fl)-1].TestFrom, fl[0].TestTo
	total := 0
	for _, recs := range testRecs {
		total += len(recs)
	}
	bar := newBar(int64(total), "score sequence models", quiet)
	bar.Describe(fmt.Sprintf("score %d sequence models (stream replay)", len(ms)))
	next := make([]int, len(fl)) // per fold, its next test row
	scored := 0
	err := stream.Replay(events, labels, ms, from, to, func(rec *output.ScoreRecord) error {
		fi := -1
		for i := range fl {
			if !rec.TS.Before(fl[i].TestFrom) && rec.TS.Before(fl[i].TestTo) {
				fi = i
			}
		}
		if fi < 0 || compromised[fi][rec.CardID] {
			return nil
		}
		k := next[fi]
		if k >= len(testRecs[fi]) || testRecs[fi][k].TxID != rec.TxID {
			return fmt.Errorf("backtest: the stream's replay scored tx %q at %s where fold %d's test set has another row",
				rec.TxID, rec.TS.Format(time.RFC3339Nano), fl[fi].Index)
		}
		for j, sl := range slots {
			if sl.fold != fi {
				continue
			}
			if rec.Scores[j].Name != ms[j].Name() {
				return fmt.Errorf("backtest: replay score %d is %q, want %q", j, rec.Scores[j].Name, ms[j].Name())
			}
			sl.run.seqScored[fi][k].Score = rec.Scores[j].Value
		}
		next[fi]++
		if scored++; scored%4096 == 0 {
			_ = bar.Set(scored)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	}, stream.WithFeatureOptions(fopts...), stream.WithReasons(0))
	_ = bar.Finish()
	if err != nil {
		return fmt.Errorf("backtest: score sequence models: %w", err)
	}
	for fi := range fl {
		if next[fi] != len(testRecs[fi]) {
			return fmt.Errorf("backtest: the stream's replay scored %d of fold %d's %d test rows", next[fi], fl[fi].Index, len(testRecs[fi]))
		}
	}
	if onScored != nil {
		for _, sl := range slots {
			onScored(sl.run.Name, fl[sl.fold].Index, sl.run.seqModels[sl.fold], sl.run.seqScored[sl.fold])
		}
	}
	return nil
}
