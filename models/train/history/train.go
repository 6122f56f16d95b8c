package history

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
)

// Plan is what Train fits: a model family and name, the ranges, the
// targets and the trainer's options.
type Plan struct {
	// Kind is the model family: models.FamilyLogistic, FamilyMLP,
	// FamilyGBDT, FamilyLinear (row by row) or FamilyCNN, FamilyGRU,
	// FamilyLSTM (sequences). Required.
	Kind string
	// Name and Version of the model (the key in score records). Required.
	Name    string
	Version int
	// From and To bound the training range [From, To): the rows of events
	// with TS in it are fitted (their latest Holdout share held out for
	// early stopping and thresholds). Zero From: from the first event; To
	// must be after From (use a far time for "after the last event").
	From, To time.Time
	// EvalTo, if not zero, ends an evaluation range [To, EvalTo): the
	// model, as it will be loaded, is measured on its rows and the metrics
	// recorded under the file's training "evaluation". Zero: no
	// evaluation. Trap: it must be after To.
	EvalTo time.Time
	// EvalRange is the evaluation range as recorded in the metadata
	// ("range"); empty: To and EvalTo in RFC 3339.
	EvalRange string
	// Names are the feature names of the spec the Source's feature options
	// run, in row order (features.Names() for the default spec). Required.
	Names []string
	// Fraud is the target: whether a transaction is fraud (for `streamscore
	// train`, its label as known at the end of the labels file; unlabelled
	// is genuine). For FamilyLinear the target is the transaction's amount
	// if fraud, else 0 (an expected loss). Required.
	Fraud func(txID string) bool
	// Holdout is the share of the training rows, the latest, held out for
	// early stopping and thresholds (train.WithHoldout). Default 0: 0.2.
	Holdout float64
	// Options are the trainer's options (seed, widths, epochs, progress);
	// Train adds WithHoldout and WithMetadata after them.
	Options []train.Option
	// Metadata is added to the file's training metadata (command, files);
	// Train adds train_from and train_to (the first and last training
	// event's time).
	Metadata map[string]any
	// Pins are the definitions of the features the model reads
	// (stream.ModelFeatureDefs of the spec's definitions), recorded in the
	// file (models.File.PinFeatures) so that no pipeline scores it with
	// features defined otherwise. Nil: nothing pinned (the engine then
	// cannot check the model against its spec).
	Pins []models.FeatureDef
	// Thresholds, if not nil, re-picks a row-by-row model's thresholds
	// after the fit (before the evaluation) on the validation rows the
	// trainer held out, given with their event times (an alert budget).
	// Nil: the trainer's statistical rule. Trap: it is refused for a
	// sequence family, which holds its validation out per card.
	Thresholds func(f *models.File, valid *train.Dataset, validTS []time.Time) error
	// ReplayProgress, if not nil, receives the replay's progress (events
	// done, total).
	ReplayProgress func(done, total int)
}

// Result is a fitted model and what its data was.
type Result struct {
	// File is the fitted, pinned and evaluated model, ready to encode.
	File *models.File
	// TrainRows are the rows in [From, To) (row families), or every row
	// before To (sequence families, whose earlier rows warm up the
	// cards' states); EvalRows are the rows in [To, EvalTo).
	TrainRows, EvalRows int
	// Cards are the cards of a sequence family's rows (0 otherwise).
	Cards int
	// First and Last are the times of the first and last training event.
	First, Last time.Time
	// Fit is the wall time of the fit alone.
	Fit time.Duration
	// Evaluation is the metrics on [To, EvalTo) (nil without EvalTo or
	// rows there), also in File.Training["evaluation"].
	Evaluation map[string]any
}

func (p *Plan) validate() error {
	switch {
	case p.Kind == "":
		return fmt.Errorf("%w: no kind", ErrPlan)
	case p.Name == "":
		return fmt.Errorf("%w: no model name", ErrPlan)
	case len(p.Names) == 0:
		return fmt.Errorf("%w: no feature names", ErrPlan)
	case p.Fraud == nil:
		return fmt.Errorf("%w: no fraud function (target)", ErrPlan)
	case !p.To.After(p.From):
		return fmt.Errorf("%w: to %s must be after from %s", ErrPlan, p.To.Format(time.RFC3339), p.From.Format(time.RFC3339))
	case !p.EvalTo.IsZero() && !p.EvalTo.After(p.To):
		return fmt.Errorf("%w: eval-to %s must be after to %s", ErrPlan, p.EvalTo.Format(time.RFC3339), p.To.Format(time.RFC3339))
	case p.Holdout < 0:
		return fmt.Errorf("%w: holdout %v below 0", ErrPlan, p.Holdout)
	case p.Thresholds != nil && train.IsSeqKind(p.Kind):
		return fmt.Errorf("%w: family %s holds its validation out per card, not as a time period: its thresholds cannot be re-picked on the validation rows", ErrPlan, p.Kind)
	}
	if !train.IsSeqKind(p.Kind) {
		switch p.Kind {
		case models.FamilyLogistic, models.FamilyMLP, models.FamilyGBDT, models.FamilyLinear:
		default:
			return fmt.Errorf("%w: kind %q: want logistic, mlp, linear, cnn, gru, lstm or gbdt: %w", ErrPlan, p.Kind, train.ErrKind)
		}
	}
	return nil
}

// Train replays src up to the end of the plan's last range, builds its
// training (and evaluation) rows, fits the plan's model family, pins the
// features, re-picks thresholds if the plan says so, and evaluates the
// model on [To, EvalTo): a row model exactly as it will be loaded
// (models.Parse of its encoding, train.Evaluate), a sequence model with
// the trainer's float64 forward pass over each card's whole history
// (train.EvaluateSeq). It does not write the file.
func Train(ctx context.Context, src Source, p Plan) (*Result, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	holdout := p.Holdout
	if holdout == 0 {
		holdout = 0.2
	}
	end := p.To
	if !p.EvalTo.IsZero() {
		end = p.EvalTo
	}
	seq := train.IsSeqKind(p.Kind)
	names := p.Names
	trainSet := &train.Dataset{Names: names}
	var trainTS []time.Time // event time of each trainSet row (thresholds)
	evalSet := &train.Dataset{Names: names}
	// Sequence families: every row before the end with its card, in time
	// order; the training set is the prefix before To (loss on [From,
	// To)), the evaluation set all of them (loss on [To, EvalTo)).
	rows := NewRows(names)
	nEval := 0
	var first, last time.Time
	err := Replay(ctx, src, end, p.ReplayProgress, func(e *features.Event, row []float32) error {
		var y float32
		isFraud := p.Fraud(e.TxID)
		switch {
		case p.Kind == models.FamilyLinear && isFraud:
			y = float32(e.Amount)
		case p.Kind != models.FamilyLinear && isFraud:
			y = 1
		}
		inTrain := !e.TS.Before(p.From) && e.TS.Before(p.To)
		inEval := !e.TS.Before(p.To) && e.TS.Before(p.EvalTo)
		if inTrain {
			if first.IsZero() {
				first = e.TS
			}
			last = e.TS
		}
		if seq {
			rows.Append(e, row)
			if inEval {
				nEval++
			}
			return nil
		}
		switch {
		case inTrain:
			trainSet.Append(row, y)
			if p.Thresholds != nil {
				trainTS = append(trainTS, e.TS)
			}
		case inEval:
			evalSet.Append(row, y)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if first.IsZero() {
		return nil, fmt.Errorf("%w [%s, %s)", ErrNoRows, p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))
	}
	res := &Result{First: first, Last: last}
	// The sequence target: fraud or not (FamilyLinear is row by row).
	seqY := func(i int) float32 {
		if p.Fraud(rows.TxID[i]) {
			return 1
		}
		return 0
	}
	var seqTrain *train.SeqDataset
	if seq {
		// Nothing after the training range reaches the trainer.
		if seqTrain, err = rows.SeqSet(p.From, p.To, seqY); err != nil {
			return nil, err
		}
		res.TrainRows, res.EvalRows, res.Cards = seqTrain.Rows(), nEval, rows.Cards()
	} else {
		res.TrainRows, res.EvalRows = trainSet.Rows(), evalSet.Rows()
	}

	md := make(map[string]any, len(p.Metadata)+2)
	for k, v := range p.Metadata {
		md[k] = v
	}
	md["train_from"] = first.Format(time.RFC3339Nano)
	md["train_to"] = last.Format(time.RFC3339Nano)
	opts := append(append([]train.Option(nil), p.Options...), train.WithHoldout(holdout), train.WithMetadata(md))
	start := time.Now()
	var f *models.File
	if seq {
		f, err = train.FitSeq(ctx, p.Kind, p.Name, p.Version, seqTrain, opts...)
	} else {
		f, err = train.Fit(ctx, p.Kind, p.Name, p.Version, trainSet, opts...)
	}
	res.Fit = time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("fit model: %w", err)
	}
	if p.Pins != nil {
		if err := f.PinFeatures(p.Pins); err != nil {
			return nil, fmt.Errorf("pin features: %w", err)
		}
	}
	if p.Thresholds != nil {
		n := trainSet.Rows()
		nv := int(math.Round(float64(n) * holdout))
		if nv < 1 {
			return nil, fmt.Errorf("%w: no validation rows to pick thresholds on", train.ErrData)
		}
		w := len(names)
		valid := &train.Dataset{Names: names, X: trainSet.X[(n-nv)*w:], Y: trainSet.Y[n-nv:]}
		if err := p.Thresholds(f, valid, trainTS[n-nv:]); err != nil {
			return nil, err
		}
	}

	evalRange := p.EvalRange
	if evalRange == "" {
		evalRange = fmt.Sprintf("[%s, %s)", p.To.Format(time.RFC3339), p.EvalTo.Format(time.RFC3339))
	}
	switch {
	case seq && nEval > 0:
		// The trainer's float64 forward pass over each card's whole history
		// (the file's float32 weights); the stateless runtime Score does
		// not apply to sequence models.
		ev, err := rows.SeqSet(p.To, p.EvalTo, seqY)
		if err != nil {
			return nil, err
		}
		mt, err := train.EvaluateSeq(f, ev)
		if err != nil {
			return nil, fmt.Errorf("evaluate model: %w", err)
		}
		res.Evaluation = mt.Map()
		res.Evaluation["range"] = evalRange
		res.Evaluation["scored_by"] = "train.EvaluateSeq: float64 forward over each card's history, float32 weights"
	case !seq && evalSet.Rows() > 0:
		// The model exactly as it will be loaded.
		b, err := f.Encode()
		if err != nil {
			return nil, fmt.Errorf("encode model: %w", err)
		}
		m, err := models.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("parse model: %w", err)
		}
		mt, err := train.Evaluate(m, evalSet)
		if err != nil {
			return nil, fmt.Errorf("evaluate model: %w", err)
		}
		res.Evaluation = mt.Map()
		res.Evaluation["range"] = evalRange
	}
	if res.Evaluation != nil {
		f.Training["evaluation"] = res.Evaluation
	}
	res.File = f
	return res, nil
}
