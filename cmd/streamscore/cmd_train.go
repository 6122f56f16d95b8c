package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
	trainhistory "github.com/streamscore/streamscore/models/train/history"
	"github.com/streamscore/streamscore/stream"
)

// parseHidden parses --hidden: comma-separated layer widths.
func parseHidden(s string) ([]int, error) {
	var widths []int
	for _, p := range strings.Split(s, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("parse --hidden: %w", err)
		}
		widths = append(widths, w)
	}
	return widths, nil
}

// cmdTrain fits a model on a time range of recorded or generated history.
//
// It replays every event before the end of the last range through the
// stream's own feature code (features.Replay: labels are applied when their
// chargeback time has passed, exactly as in the stream), keeps the rows of
// events with TS in [--from, --to) as training data and, with --eval-to,
// the rows in [--to, --eval-to) as a later, untouched evaluation range whose
// metrics are recorded in the model's training metadata.
//
// Targets: for logistic, mlp and gbdt, the fraud label as known at the end of the
// labels file (an unlabelled transaction is genuine). For linear (the "risk"
// model), the transaction's loss: its amount if fraud, else 0; the model is a
// regression of loss, and its score an expected loss in currency units.
//
// Sequence families (cnn, gru, lstm) keep every row before --to with its
// card, in event-time order, so that each card's state (GRU/LSTM) or window
// (CNN) at --from is warmed up by its earlier history exactly as in the
// stream; only rows in [--from, --to) count in the loss. Their evaluation
// on [--to, --eval-to) runs the trainer's own float64 forward pass over each
// card's whole history (train.EvaluateSeq), not the runtime.
func cmdTrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	var h historyFlags
	h.register(fs, "labels JSONL file (required)")
	evalToS := fs.String("eval-to", "", "end (exclusive) of an evaluation range starting at --to (default: no evaluation)")
	kind := fs.String("kind", "mlp", "model family: logistic, mlp, linear, cnn, gru, lstm or gbdt")
	name := fs.String("name", "", "model name, the key in score records (default: fraud for mlp, fraud_lr for logistic, risk for linear, fraud_<kind> for cnn, gru, lstm and gbdt)")
	version := fs.Int("version", 1, "model version (>= 1)")
	out := fs.String("out", "", "output model file (required)")
	seed := fs.Int64("seed", 1, "random seed (initial weights, batch order)")
	hidden := fs.String("hidden", "32,16", "mlp: hidden layer widths, comma separated; gru/lstm: hidden size then the head's hidden widths (default 16,8); cnn: the head's hidden widths (default none)")
	epochs := fs.Int("epochs", 40, "mlp: maximum epochs (early stopping usually ends sooner); cnn/gru/lstm default 8")
	var sq seqTrainFlags
	sq.register(fs)
	holdout := fs.Float64("holdout", 0.2, "fraction of the training rows, the latest, held out for early stopping and thresholds")
	quiet := fs.Bool("quiet", false, "no progress bars")
	var gb gbdtTrainFlags
	gb.register(fs)
	link := fs.String("link", train.LinkProbAmount, "linear: the link, prob_amount (value = P(fraud) × amount: an expected loss in [0, amount], for a loss that is the amount if fraud), log (value = exp(x·w+b): never negative, unbounded above) or identity (ridge regression, as models before 2026-12; can go negative)")
	var budget budgetFlags
	budget.register(fs, "the validation rows (the held-out tail of the training range); logistic, mlp, gbdt and linear")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	reviewBudget, alertBudget, err := budget.parse()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if h.events == "" || h.labels == "" || *out == "" {
		return errors.New("train: --events, --labels and --out are required")
	}
	if budget.given() && train.IsSeqKind(*kind) {
		return fmt.Errorf("train: --alert-budget/--review-budget: family %s holds its validation out per card, not as a time period; train it, then pick its thresholds with `streamscore models retune`", *kind)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var opts []train.Option
	switch *kind {
	case models.FamilyMLP:
		widths, err := parseHidden(*hidden)
		if err != nil {
			return err
		}
		opts = append(opts, train.WithHidden(widths...), train.WithEpochs(*epochs))
		if *name == "" {
			*name = "fraud"
		}
	case models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM:
		if set["hidden"] {
			widths, err := parseHidden(*hidden)
			if err != nil {
				return err
			}
			opts = append(opts, train.WithHidden(widths...))
		}
		if set["epochs"] {
			opts = append(opts, train.WithEpochs(*epochs))
		}
		so, err := sq.options(*kind)
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		opts = append(opts, so...)
		if *name == "" {
			*name = "fraud_" + *kind
		}
	case models.FamilyLogistic:
		if *name == "" {
			*name = "fraud_lr"
		}
	case models.FamilyLinear:
		if *name == "" {
			*name = "risk"
		}
		opts = append(opts, train.WithLink(*link))
	case models.FamilyGBDT:
		opts = append(opts, gb.options()...)
		if *name == "" {
			*name = "fraud_gbdt"
		}
	default:
		return fmt.Errorf("train: --kind %q: want logistic, mlp, linear, cnn, gru, lstm or gbdt", *kind)
	}
	var evalTo time.Time
	if *evalToS != "" {
		if evalTo, err = parseTime(*evalToS, time.Time{}); err != nil {
			return fmt.Errorf("parse --eval-to: %w", err)
		}
	}

	// Read history; the target is the label as known at the end of the file.
	hist, err := h.load("train")
	if err != nil {
		return err
	}
	if *evalToS != "" && !evalTo.After(hist.to) {
		return fmt.Errorf("train: --eval-to %s must be after --to %s", *evalToS, h.to)
	}
	fraud := knownFraud(hist.labels)
	slog.Info("train: history read", "events", len(hist.events), "labels", len(hist.labels), "fraud_labels", fraud.Frauds())

	md := map[string]any{
		"command":      "streamscore train " + strings.Join(args, " "),
		"events_file":  filepath.Base(h.events),
		"labels_file":  filepath.Base(h.labels),
		"range":        fmt.Sprintf("[%s, %s)", orOpen(h.from), orOpen(h.to)),
		"features":     len(hist.names),
		"target":       "fraud label known at the end of the labels file (unlabelled = genuine)",
		"feature_code": "features.Replay (labels applied at their chargeback time)",
	}
	if h.spec != "" {
		md["feature_spec"] = filepath.Base(h.spec)
	}
	if *kind == models.FamilyLinear {
		md["target"] = "loss: amount if fraud (label known at end of file) else 0; score = expected loss in currency units"
		md["error_units"] = "rmse, mae, mean_value and mean_target are in the amounts' currency"
	}
	replayBar := newBar(int64(len(hist.events)), "replay", *quiet)
	var trainBar *progressbar.ProgressBar
	opts = append(opts, train.WithSeed(*seed), train.WithProgress(func(done, total int) {
		if trainBar == nil {
			_ = replayBar.Finish()
			trainBar = newBar(int64(total), "fit "+*kind, *quiet)
		}
		trainBar.ChangeMax(total)
		_ = trainBar.Set(done)
	}))
	plan := trainhistory.Plan{Kind: *kind, Name: *name, Version: *version, From: hist.from, To: hist.to, EvalTo: evalTo,
		EvalRange: fmt.Sprintf("[%s, %s)", orOpen(h.to), *evalToS), Names: hist.names,
		Fraud: func(txID string) bool { return fraud[txID] }, Holdout: *holdout, Options: opts, Metadata: md,
		Pins:           stream.ModelFeatureDefs(hist.defs),
		ReplayProgress: func(done, _ int) { _ = replayBar.Set(done) }}
	if budget.given() {
		plan.Thresholds = func(f *models.File, valid *train.Dataset, ts []time.Time) error {
			return trainBudgets(f, valid, ts, reviewBudget, alertBudget)
		}
	}
	res, err := trainhistory.Train(ctx, trainhistory.Source{Events: hist.events, Labels: hist.labels, Features: hist.opts}, plan)
	_ = replayBar.Finish()
	if trainBar != nil {
		_ = trainBar.Finish()
	}
	if errors.Is(err, trainhistory.ErrNoRows) {
		return fmt.Errorf("train: no events in [%s, %s)", h.from, h.to)
	}
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	f := res.File
	if train.IsSeqKind(*kind) {
		slog.Info("train: sequence rows built", "rows_before_to", res.TrainRows, "cards", res.Cards,
			"eval_rows", res.EvalRows, "train_first", res.First.Format(time.RFC3339), "train_last", res.Last.Format(time.RFC3339))
	} else {
		slog.Info("train: rows built", "train_rows", res.TrainRows, "eval_rows", res.EvalRows,
			"train_first", res.First.Format(time.RFC3339), "train_last", res.Last.Format(time.RFC3339))
	}
	if budget.given() {
		slog.Info("train: thresholds picked by budget", "rule", f.Training["threshold_rule"],
			"review", f.Thresholds.Review, "alert", f.Thresholds.Alert, "budget", f.Training["threshold_budget"])
	}
	slog.Info("train: fitted", "kind", *kind, "seconds", math.Round(res.Fit.Seconds()*10)/10,
		"validation", f.Training["validation"])
	if ev := res.Evaluation; ev != nil {
		slog.Info("train: evaluated", "range", ev["range"], "auc", ev["auc"],
			"precision_at_alert", ev["precision_at_alert"], "recall_at_alert", ev["recall_at_alert"])
	}

	b, err := f.Encode()
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	if err := durable.ReplaceFile(*out, b, 0o644); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	m, err := models.Parse(b)
	if err != nil {
		return fmt.Errorf("parse written model: %w", err)
	}
	review, alert := m.Thresholds()
	slog.Info("train: model written", "path", *out, "model", m.Ident(), "review", review, "alert", alert)
	return nil
}

// parseTime parses RFC 3339 or YYYY-MM-DD (UTC); "" gives def.
func parseTime(s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 or YYYY-MM-DD", s)
	}
	return t, nil
}

func orOpen(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func readJSONL[T any](path string, read func(*os.File) ([]T, error)) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open history: %w", err)
	}
	defer f.Close()
	v, err := read(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return v, nil
}

// showProgress reports whether a progress bar is drawn: asked for, and
// stderr a terminal. Written to a file or a pipe (a CI log, a service's
// journal), a bar is a trail of partial renderings — the last one short of
// 100%, as the bar clears itself when done — not progress; the command's
// own log lines say what was done.
func showProgress(want bool) bool {
	return want && term.IsTerminal(int(os.Stderr.Fd()))
}

func newBar(max int64, desc string, quiet bool) *progressbar.ProgressBar {
	return progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetVisibility(showProgress(!quiet)),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}
