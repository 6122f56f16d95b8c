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

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
	"github.com/streamscore/streamscore/stream"
)

// errReplayDone stops features.Replay once the events pass the last range.
var errReplayDone = errors.New("replay done")

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

// replayUntil replays history through the stream's feature code (as
// features.Replay) up to the first event at or after end, calling fn for
// each row, with a progress bar and ctx checked every 4,096 events. It is
// the replay of train and backtest.
func replayUntil(ctx context.Context, events []features.Event, labels []features.Label, fopts []features.Option, end time.Time,
	quiet bool, fn func(e *features.Event, row []float32) error) error {
	bar := newBar(int64(len(events)), "replay", quiet)
	n := 0
	err := features.Replay(events, labels, fopts, func(e *features.Event, row []float32) error {
		if n++; n%4096 == 0 {
			_ = bar.Set(n)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !e.TS.Before(end) {
			return errReplayDone
		}
		return fn(e, row)
	})
	_ = bar.Finish()
	if err != nil && !errors.Is(err, errReplayDone) {
		return fmt.Errorf("replay history: %w", err)
	}
	return nil
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
	eventsPath := fs.String("events", "", "events JSONL file (required)")
	labelsPath := fs.String("labels", "", "labels JSONL file (required)")
	fromS := fs.String("from", "", "start of the training range, RFC 3339 or YYYY-MM-DD (default: first event)")
	toS := fs.String("to", "", "end (exclusive) of the training range (default: after the last event)")
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
	var pan panConfig
	pan.register(fs)
	link := fs.String("link", train.LinkLog, "linear: the link, log (value = exp(x·w+b): an expected loss that cannot go negative) or identity (ridge regression, as models before the log link; can go negative)")
	specPath := fs.String("features", "", "feature spec YAML (default: the embedded default spec); the stream must run the same spec")
	var budget budgetFlags
	budget.register(fs, "the validation rows (the held-out tail of the training range); logistic, mlp, gbdt and linear")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	reviewBudget, alertBudget, err := budget.parse()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if *eventsPath == "" || *labelsPath == "" || *out == "" {
		return errors.New("train: --events, --labels and --out are required")
	}
	if budget.given() && (*kind == models.FamilyCNN || *kind == models.FamilyGRU || *kind == models.FamilyLSTM) {
		return fmt.Errorf("train: --alert-budget/--review-budget: family %s holds its validation out per card, not as a time period; train it, then pick its thresholds with `streamscore models retune`", *kind)
	}
	from, err := parseTime(*fromS, time.Time{})
	if err != nil {
		return fmt.Errorf("parse --from: %w", err)
	}
	maxTime := time.Unix(1<<62, 0)
	to, err := parseTime(*toS, maxTime)
	if err != nil {
		return fmt.Errorf("parse --to: %w", err)
	}
	end := to
	evalTo := time.Time{}
	if *evalToS != "" {
		if evalTo, err = parseTime(*evalToS, maxTime); err != nil {
			return fmt.Errorf("parse --eval-to: %w", err)
		}
		if !evalTo.After(to) {
			return fmt.Errorf("train: --eval-to %s must be after --to %s", *evalToS, *toS)
		}
		end = evalTo
	}
	if !to.After(from) {
		return fmt.Errorf("train: --to must be after --from")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var opts []train.Option
	seq := false
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
		seq = true
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

	// Read history; the target is the label as known at the end of the file.
	panOpts, err := pan.decoderOptions(slog.Default())
	if err != nil {
		return err
	}
	events, labels, err := readHistory(*eventsPath, *labelsPath, panOpts...)
	if err != nil {
		return err
	}
	fraud := knownFraud(labels)
	slog.Info("train: history read", "events", len(events), "labels", len(labels), "fraud_labels", fraud.Frauds())

	// Replay through the stream's feature code.
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
	trainSet := &train.Dataset{Names: names}
	var trainTS []time.Time // event time of each trainSet row (budgets)
	evalSet := &train.Dataset{Names: names}
	// Sequence families: every row before the end with its card, in time
	// order; seqSet.Loss marks [from, to), evalLoss [to, eval-to), and
	// nBefore counts the rows before --to (the training prefix).
	seqSet := &train.SeqDataset{Names: names}
	var evalLoss []bool
	nBefore, nEval := 0, 0
	cards := map[string]int32{}
	var first, last time.Time
	err = replayUntil(ctx, events, labels, fopts, end, *quiet, func(e *features.Event, row []float32) error {
		var y float32
		isFraud := fraud[e.TxID]
		switch {
		case *kind == models.FamilyLinear && isFraud:
			y = float32(e.Amount)
		case *kind != models.FamilyLinear && isFraud:
			y = 1
		}
		inTrain := !e.TS.Before(from) && e.TS.Before(to)
		inEval := !e.TS.Before(to) && e.TS.Before(evalTo)
		if inTrain {
			if first.IsZero() {
				first = e.TS
			}
			last = e.TS
		}
		if seq {
			id, ok := cards[e.CardID]
			if !ok {
				id = int32(len(cards))
				cards[e.CardID] = id
			}
			seqSet.Append(id, row, y, inTrain)
			evalLoss = append(evalLoss, inEval)
			if e.TS.Before(to) {
				nBefore++
			}
			if inEval {
				nEval++
			}
			return nil
		}
		switch {
		case inTrain:
			trainSet.Append(row, y)
			if budget.given() {
				trainTS = append(trainTS, e.TS)
			}
		case inEval:
			evalSet.Append(row, y)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if first.IsZero() {
		return fmt.Errorf("train: no events in [%s, %s)", *fromS, *toS)
	}
	// The sequence training set is the prefix of rows before --to (rows are
	// in time order): nothing after the training range reaches the trainer.
	seqTrain := &train.SeqDataset{Names: names, X: seqSet.X[:nBefore*len(names)], Y: seqSet.Y[:nBefore],
		Seq: seqSet.Seq[:nBefore], Loss: seqSet.Loss[:nBefore]}
	if seq {
		slog.Info("train: sequence rows built", "rows_before_to", nBefore, "cards", len(cards),
			"eval_rows", nEval, "train_first", first.Format(time.RFC3339), "train_last", last.Format(time.RFC3339))
	} else {
		slog.Info("train: rows built", "train_rows", trainSet.Rows(), "eval_rows", evalSet.Rows(),
			"train_first", first.Format(time.RFC3339), "train_last", last.Format(time.RFC3339))
	}

	// Fit.
	md := map[string]any{
		"command":      "streamscore train " + strings.Join(args, " "),
		"events_file":  filepath.Base(*eventsPath),
		"labels_file":  filepath.Base(*labelsPath),
		"train_from":   first.Format(time.RFC3339Nano),
		"train_to":     last.Format(time.RFC3339Nano),
		"range":        fmt.Sprintf("[%s, %s)", orOpen(*fromS), orOpen(*toS)),
		"features":     len(names),
		"target":       "fraud label known at the end of the labels file (unlabelled = genuine)",
		"feature_code": "features.Replay (labels applied at their chargeback time)",
	}
	if *specPath != "" {
		md["feature_spec"] = filepath.Base(*specPath)
	}
	if *kind == models.FamilyLinear {
		md["target"] = "loss: amount if fraud (label known at end of file) else 0; score = expected loss in currency units"
		md["error_units"] = "rmse, mae, mean_value and mean_target are in the amounts' currency"
	}
	trainBar := newBar(1, "fit "+*kind, *quiet)
	opts = append(opts, train.WithSeed(*seed), train.WithHoldout(*holdout), train.WithMetadata(md),
		train.WithProgress(func(done, total int) {
			trainBar.ChangeMax(total)
			_ = trainBar.Set(done)
		}))
	start := time.Now()
	var f *models.File
	switch *kind {
	case models.FamilyMLP, models.FamilyLogistic, models.FamilyGBDT, models.FamilyLinear:
		f, err = fitTabular(ctx, *kind, *name, *version, trainSet, opts...)
	case models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM:
		f, err = fitSeq(ctx, *kind, *name, *version, seqTrain, opts...)
	}
	_ = trainBar.Finish()
	if err != nil {
		return fmt.Errorf("fit model: %w", err)
	}
	// Record what every input computed, so that no pipeline scores the
	// model with features defined otherwise.
	if err := f.PinFeatures(stream.ModelFeatureDefs(defs)); err != nil {
		return err
	}
	if budget.given() {
		if err := trainBudgets(f, trainSet, trainTS, *holdout, reviewBudget, alertBudget); err != nil {
			return err
		}
		slog.Info("train: thresholds picked by budget", "rule", f.Training["threshold_rule"],
			"review", f.Thresholds.Review, "alert", f.Thresholds.Alert, "budget", f.Training["threshold_budget"])
	}
	slog.Info("train: fitted", "kind", *kind, "seconds", math.Round(time.Since(start).Seconds()*10)/10,
		"validation", f.Training["validation"])

	// Sequence models: evaluate on the later range with the trainer's float64
	// forward pass over each card's whole history (the file's float32
	// weights); the stateless runtime Score does not apply to them.
	if seq && nEval > 0 {
		evalSet := &train.SeqDataset{Names: names, X: seqSet.X, Y: seqSet.Y, Seq: seqSet.Seq, Loss: evalLoss}
		mt, err := train.EvaluateSeq(f, evalSet)
		if err != nil {
			return fmt.Errorf("evaluate model: %w", err)
		}
		ev := mt.Map()
		ev["range"] = fmt.Sprintf("[%s, %s)", orOpen(*toS), *evalToS)
		ev["scored_by"] = "train.EvaluateSeq: float64 forward over each card's history, float32 weights"
		f.Training["evaluation"] = ev
		slog.Info("train: evaluated", "range", ev["range"], "auc", ev["auc"],
			"precision_at_alert", ev["precision_at_alert"], "recall_at_alert", ev["recall_at_alert"])
	}

	// Evaluate on the later range, with the model exactly as it will be loaded.
	if !seq && evalSet.Rows() > 0 {
		b, err := f.Encode()
		if err != nil {
			return fmt.Errorf("encode model: %w", err)
		}
		m, err := models.Parse(b)
		if err != nil {
			return fmt.Errorf("parse model: %w", err)
		}
		mt, err := train.Evaluate(m, evalSet)
		if err != nil {
			return fmt.Errorf("evaluate model: %w", err)
		}
		ev := mt.Map()
		ev["range"] = fmt.Sprintf("[%s, %s)", orOpen(*toS), *evalToS)
		f.Training["evaluation"] = ev
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

// fitTabular fits a model of a row-by-row family (mlp, logistic, gbdt,
// linear) on ds; train and backtest fit through it.
func fitTabular(ctx context.Context, kind, name string, version int, ds *train.Dataset, opts ...train.Option) (*models.File, error) {
	switch kind {
	case models.FamilyMLP:
		return train.MLP(ctx, name, version, ds, opts...)
	case models.FamilyLogistic:
		return train.Logistic(ctx, name, version, ds, opts...)
	case models.FamilyGBDT:
		return train.GBDT(ctx, name, version, ds, opts...)
	case models.FamilyLinear:
		return train.Linear(ctx, name, version, ds, opts...)
	}
	return nil, fmt.Errorf("fit: kind %q is not a row-by-row family (logistic, mlp, gbdt, linear)", kind)
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

func newBar(max int64, desc string, quiet bool) *progressbar.ProgressBar {
	return progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetVisibility(!quiet),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}
