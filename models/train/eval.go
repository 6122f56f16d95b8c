package train

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/internal/ranking"
)

// Metrics are a model's quality on a dataset. For probability models the
// positives are rows with Y = 1; for value models they are rows with Y > 0
// (a loss), so AUC and AP measure how well the value ranks lossy
// transactions.
type Metrics struct {
	Rows      int     `json:"rows"`
	Positives int     `json:"positives"`
	AUC       float64 `json:"auc"`
	// AP is the average precision (see eval.AveragePrecision).
	AP float64 `json:"ap"`
	// At the model's alert threshold: precision and recall of the alerts,
	// and the share of rows alerted. The same at the review threshold
	// (review or alert).
	PrecisionAtAlert  float64 `json:"precision_at_alert"`
	RecallAtAlert     float64 `json:"recall_at_alert"`
	AlertRate         float64 `json:"alert_rate"`
	PrecisionAtReview float64 `json:"precision_at_review"`
	RecallAtReview    float64 `json:"recall_at_review"`
	ReviewRate        float64 `json:"review_rate"`
	// LogLoss is the mean log loss (probability models only).
	LogLoss float64 `json:"log_loss,omitempty"`
	// RMSE, MAE and R2 of the value (value models only), in the target's
	// units (currency for a loss), and the mean value and mean target: for
	// an expected-loss model, the loss it predicts per transaction against
	// the loss that happened; Negative counts values below 0 (a loss model
	// with the identity link has them, the log link never).
	RMSE       float64 `json:"rmse,omitempty"`
	MAE        float64 `json:"mae,omitempty"`
	R2         float64 `json:"r2,omitempty"`
	MeanValue  float64 `json:"mean_value,omitempty"`
	MeanTarget float64 `json:"mean_target,omitempty"`
	Negative   int     `json:"negative_values,omitempty"`
}

// Map returns the metrics as a JSON-ready map for model metadata.
func (m Metrics) Map() map[string]any {
	out := map[string]any{
		"rows": m.Rows, "positives": m.Positives, "auc": round(m.AUC), "ap": round(m.AP),
		"precision_at_alert": round(m.PrecisionAtAlert), "recall_at_alert": round(m.RecallAtAlert), "alert_rate": round(m.AlertRate),
		"precision_at_review": round(m.PrecisionAtReview), "recall_at_review": round(m.RecallAtReview), "review_rate": round(m.ReviewRate),
	}
	if m.LogLoss != 0 {
		out["log_loss"] = round(m.LogLoss)
	}
	if m.RMSE != 0 || m.MAE != 0 {
		out["rmse"], out["mae"], out["r2"] = round(m.RMSE), round(m.MAE), round(m.R2)
		out["mean_value"], out["mean_target"], out["negative_values"] = round(m.MeanValue), round(m.MeanTarget), m.Negative
	}
	return out
}

func round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1e6) / 1e6
}

// Predict scores every row of d with m exactly as the stream does (Bind to
// d.Names, Score in batches of 256).
func Predict(m *models.Model, d *Dataset) ([]float32, error) {
	s, err := m.Bind(d.Names)
	if err != nil {
		return nil, fmt.Errorf("predict: %w", err)
	}
	w := len(d.Names)
	out := make([]float32, d.Rows())
	for r := 0; r < d.Rows(); r += 256 {
		e := min(r+256, d.Rows())
		s.Score(d.X[r*w:e*w], e-r, out[r:e])
	}
	return out, nil
}

// Evaluate scores d with m and measures it against d.Y.
func Evaluate(m *models.Model, d *Dataset) (Metrics, error) {
	if err := d.check(false); err != nil {
		return Metrics{}, fmt.Errorf("evaluate: %w", err)
	}
	scores, err := Predict(m, d)
	if err != nil {
		return Metrics{}, fmt.Errorf("evaluate: %w", err)
	}
	review, alert := m.Thresholds()
	return metrics(scores, d.Y, float64(review), float64(alert), m.Output() == models.OutputProbability), nil
}

func metrics(scores, y []float32, review, alert float64, prob bool) Metrics {
	mt := Metrics{Rows: len(y)}
	var tpA, fpA, tpR, fpR int
	var ll, se, ae, sy, syy float64
	for i, s := range scores {
		pos := y[i] > 0.5
		if !prob {
			pos = y[i] > 0
		}
		if pos {
			mt.Positives++
		}
		if float64(s) >= alert {
			if pos {
				tpA++
			} else {
				fpA++
			}
		}
		if float64(s) >= review {
			if pos {
				tpR++
			} else {
				fpR++
			}
		}
		if prob {
			p := math.Min(math.Max(float64(s), 1e-15), 1-1e-15)
			if pos {
				ll -= math.Log(p)
			} else {
				ll -= math.Log(1 - p)
			}
		} else {
			dv := float64(s) - float64(y[i])
			mt.MeanValue += float64(s)
			if s < 0 {
				mt.Negative++
			}
			se += dv * dv
			ae += math.Abs(dv)
			sy += float64(y[i])
			syy += float64(y[i]) * float64(y[i])
		}
	}
	n := float64(len(y))
	if n == 0 {
		return mt
	}
	positive := make([]bool, len(y))
	for i, v := range y {
		positive[i] = v > 0.5 || !prob && v > 0
	}
	mt.AUC = ranking.AUC(scores, positive)
	mt.AP = ranking.AveragePrecision(scores, positive)
	mt.PrecisionAtAlert = ratio(tpA, tpA+fpA)
	mt.RecallAtAlert = ratio(tpA, mt.Positives)
	mt.AlertRate = float64(tpA+fpA) / n
	mt.PrecisionAtReview = ratio(tpR, tpR+fpR)
	mt.RecallAtReview = ratio(tpR, mt.Positives)
	mt.ReviewRate = float64(tpR+fpR) / n
	if prob {
		mt.LogLoss = ll / n
	} else {
		mt.RMSE = math.Sqrt(se / n)
		mt.MAE = ae / n
		mt.MeanValue /= n
		mt.MeanTarget = sy / n
		if v := syy/n - (sy/n)*(sy/n); v > 0 {
			mt.R2 = 1 - se/n/v
		}
	}
	return mt
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// probabilityThresholds picks the cut-offs from validation scores:
// alert = the score threshold maximising F1 (precision and recall weighted
// equally); review = the threshold at or below alert maximising F2 (recall
// weighted 4× precision), i.e. a lower bar that catches more fraud for a
// human to look at. Without positives it falls back to the 99.9% and 99%
// quantiles.
func probabilityThresholds(scores, y []float32) (review, alert float64, rule string) {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	pos := countPositives(y)
	if pos == 0 {
		return quantile(scores, 0.99), quantile(scores, 0.999), "no positives in validation: review = q99, alert = q99.9 of scores"
	}
	type cut struct {
		t      float64
		f1, f2 float64
	}
	var cuts []cut
	tp, fp := 0, 0
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if y[idx[j]] > 0.5 {
				tp++
			} else {
				fp++
			}
			j++
		}
		p := float64(tp) / float64(tp+fp)
		r := float64(tp) / float64(pos)
		var f1, f2 float64
		if p+r > 0 {
			f1 = 2 * p * r / (p + r)
			f2 = 5 * p * r / (4*p + r)
		}
		cuts = append(cuts, cut{float64(scores[idx[i]]), f1, f2})
		i = j
	}
	bestA := 0
	for i, c := range cuts {
		if c.f1 > cuts[bestA].f1 {
			bestA = i
		}
	}
	bestR := bestA
	for i := bestA; i < len(cuts); i++ {
		if cuts[i].f2 > cuts[bestR].f2 {
			bestR = i
		}
	}
	return cuts[bestR].t, cuts[bestA].t, "alert = max F1 on validation; review = max F2 at or below alert"
}

// quantile returns the q-quantile (nearest rank) of v.
func quantile(v []float32, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[min(max(i, 0), len(s)-1)])
}

// finishDense finishes a model fitted on the first nt rows of d, with the
// rest of d held out (see finish).
func finishDense(f *models.File, d *Dataset, nt int, c *config, md map[string]any) (*models.File, error) {
	w := len(d.Names)
	valid := &Dataset{Names: d.Names, X: d.X[nt*w:], Y: d.Y[nt:]}
	split := heldOut{
		rows: d.Rows(), train: nt, valid: d.Rows() - nt, positives: countPositives(d.Y[:nt]),
		rule: fmt.Sprintf("last %.4g%% of rows (time order)", c.holdout*100),
	}
	return finish(f, c, md, split, func(m *models.Model) ([]float32, []float32, error) {
		scores, err := Predict(m, valid)
		return scores, valid.Y, err
	})
}

// heldOut is how a fit split its rows, as finish records it.
type heldOut struct {
	rows, train, valid int    // all rows, training rows, held-out rows
	positives          int    // positives among the training rows
	rule               string // which rows were held out
}

// finish checks that f encodes and parses, sets its thresholds from the
// held-out rows' scores and targets (score gets the parsed model), and
// records c's metadata, md, the split and the validation metrics in
// f.Training.
func finish(f *models.File, c *config, md map[string]any, split heldOut, score func(*models.Model) (scores, y []float32, err error)) (*models.File, error) {
	prob := f.Output == models.OutputProbability
	f.Format, f.FormatVersion = models.FormatName, models.FormatVersion
	if prob {
		f.Thresholds = models.Thresholds{Review: 0, Alert: 1}
	} else {
		f.Thresholds = models.Thresholds{Review: 0, Alert: 0}
	}
	b, err := f.Encode()
	if err != nil {
		return nil, fmt.Errorf("finish model: %w", err)
	}
	m, err := models.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("finish model: %w", err)
	}
	scores, y, err := score(m)
	if err != nil {
		return nil, fmt.Errorf("finish model: %w", err)
	}
	var rule string
	if prob {
		f.Thresholds.Review, f.Thresholds.Alert, rule = probabilityThresholds(scores, y)
	} else {
		f.Thresholds.Review = quantile(scores, c.reviewQ)
		f.Thresholds.Alert = quantile(scores, c.alertQ)
		rule = fmt.Sprintf("review = q%g, alert = q%g of validation predictions", c.reviewQ*100, c.alertQ*100)
	}
	vm := metrics(scores, y, f.Thresholds.Review, f.Thresholds.Alert, prob)
	training := make(map[string]any, len(c.metadata)+len(md)+8)
	for k, v := range c.metadata {
		training[k] = v
	}
	for k, v := range md {
		training[k] = v
	}
	training["seed"] = c.seed
	training["rows"] = split.rows
	training["rows_train"] = split.train
	training["rows_validation"] = split.valid
	training["holdout"] = split.rule
	training["positives_train"] = split.positives
	training["threshold_rule"] = rule
	training["validation"] = vm.Map()
	f.Training = training
	f.Digest = ""
	return f, nil
}
