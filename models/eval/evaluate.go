package eval

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrNoRecords is returned by Evaluate when no scored transaction is left
// to measure (an empty file, or a range that holds none).
var ErrNoRecords = errors.New("eval: no scored transactions")

// Metrics is the measure of one model's scores, written as metrics.json.
type Metrics struct {
	Model string `json:"model"` // the key in the records' "scores"
	// ModelIdents counts the evaluated records by the identity of the model
	// that scored them ("fraud-mlp@3 sha256:…"); more than one means the
	// model changed (hot reload) within the file.
	ModelIdents map[string]int `json:"model_idents"`
	From        time.Time      `json:"from"` // event time of the first evaluated transaction
	To          time.Time      `json:"to"`   // and of the last
	// Range is the event-time filter, "[from, to)" with "-" for an open
	// side; "" without one.
	Range string `json:"range,omitempty"`

	Transactions int   `json:"transactions"` // evaluated: one per tx_id, finite score, in range
	Fraud        int   `json:"fraud"`
	Genuine      int   `json:"genuine"`
	BaseRate     Float `json:"base_rate"` // fraud / transactions
	// Labelled counts the evaluated transactions with a label (fraud or
	// not); the others are genuine by default.
	Labelled int `json:"labelled"`
	// FraudWithoutScore counts the transactions labelled fraud that have no
	// record in the scores file: fraud the evaluation cannot see.
	FraudWithoutScore int `json:"fraud_without_score"`
	DuplicateRecords  int `json:"duplicate_records"` // dropped: tx_id seen before in the file
	NullScores        int `json:"null_scores"`       // dropped: score null (non-finite)
	OutOfRange        int `json:"out_of_range"`      // dropped: event time outside Range

	ROCAUC           Float `json:"roc_auc"`
	AveragePrecision Float `json:"average_precision"`

	// ThresholdSource says where Thresholds come from.
	ThresholdSource string `json:"threshold_source"`
	Thresholds      []Cut  `json:"thresholds"` // review, then alert

	CardPrecision CardPrecision `json:"card_precision_top_k"`

	// The money and operations views (see the package documentation).
	Money Money `json:"money"`
	// Operating is the outcome of alerting the top 0.05%, 0.1%, ... 5% of
	// the transactions (OperatingShares): precision, recall, alerts a day,
	// dollar recall and savings at each.
	Operating []Cut `json:"operating_points"`
	// Days is each UTC day at the review and alert thresholds.
	Days []DayOps `json:"days"`
	// AlertBudget compares the alerts a day with the alert budget, when one
	// is known (WithAlertBudget); null otherwise.
	AlertBudget *Budget `json:"alert_budget"`
	// Scenarios is the recall per fraud scenario, when labels name them.
	Scenarios []ScenarioRecall `json:"scenarios,omitempty"`
}

// Result is the outcome of Evaluate: the metrics, the curves behind them and
// the data of the score plot.
type Result struct {
	Metrics Metrics
	ROC     []Point // see ROC; nil without both classes
	PR      []Point // see PR; nil without fraud

	scores []float64
	fraud  []bool
	ops    *evalData
}

// Evaluate measures s against truth as defined in the package documentation.
// It returns ErrNoRecords when no transaction is left to measure and wraps
// ErrInvalidOption for a bad option.
func Evaluate(s *Scores, truth Truth, opts ...Option) (*Result, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, fmt.Errorf("evaluate: %w", err)
		}
	}
	m := Metrics{Model: s.Model, ModelIdents: map[string]int{}, DuplicateRecords: s.Duplicates, NullScores: s.Nulls}
	if !c.from.IsZero() || !c.to.IsZero() {
		m.Range = fmt.Sprintf("[%s, %s)", rangeEnd(c.from), rangeEnd(c.to))
	}

	scored := make(map[string]struct{}, len(s.Records))
	recs := make([]Scored, 0, len(s.Records))
	for _, r := range s.Records {
		scored[r.TxID] = struct{}{}
		if math.IsNaN(r.Score) || math.IsInf(r.Score, 0) {
			m.NullScores++
			continue
		}
		if (!c.from.IsZero() && r.TS.Before(c.from)) || (!c.to.IsZero() && !r.TS.Before(c.to)) {
			m.OutOfRange++
			continue
		}
		recs = append(recs, r)
	}
	for tx, f := range truth {
		if _, ok := scored[tx]; f && !ok {
			m.FraudWithoutScore++
		}
	}
	if len(recs) == 0 {
		return nil, ErrNoRecords
	}

	res := &Result{scores: make([]float64, len(recs)), fraud: make([]bool, len(recs))}
	m.From, m.To = recs[0].TS, recs[0].TS
	for i, r := range recs {
		res.scores[i] = r.Score
		m.ModelIdents[r.Ident]++
		f, labelled := truth[r.TxID]
		res.fraud[i] = f
		if labelled {
			m.Labelled++
		}
		if f {
			m.Fraud++
		}
		if r.TS.Before(m.From) {
			m.From = r.TS
		}
		if r.TS.After(m.To) {
			m.To = r.TS
		}
	}
	m.Transactions = len(recs)
	m.Genuine = m.Transactions - m.Fraud
	m.BaseRate = Float(ratio(m.Fraud, m.Transactions))
	m.ROCAUC = Float(AUC(res.scores, res.fraud))
	st, pos, neg := steps(res.scores, res.fraud)
	m.AveragePrecision = Float(AveragePrecision(res.scores, res.fraud))
	res.ROC = rocOf(st, pos, neg)
	res.PR = prOf(st, pos, neg)

	review, alert := c.review, c.alert
	m.ThresholdSource = c.source
	if !c.haveThreshold {
		review = TopShareThreshold(res.scores, DefaultReviewShare)
		alert = TopShareThreshold(res.scores, DefaultAlertShare)
		m.ThresholdSource = fmt.Sprintf("none given: the scores that alert %g%% (review) and %g%% (alert) of transactions",
			DefaultReviewShare*100, DefaultAlertShare*100)
	}
	m.Thresholds = []Cut{
		AtThreshold("review", res.scores, res.fraud, review),
		AtThreshold("alert", res.scores, res.fraud, alert),
	}
	m.CardPrecision = CardPrecisionTopK(recs, truth, c.k)

	ops := newEvalData(recs, res.scores, res.fraud, c.alertCost)
	res.ops = ops
	for i := range m.Thresholds {
		ops.moneyCut(&m.Thresholds[i])
	}
	m.Money = ops.money()
	m.Operating = ops.operating()
	m.Days = ops.perDay(review, alert)
	if !c.budget.IsZero() {
		m.AlertBudget = checkBudget(m.Days, c.budget, c.budgetSource)
	}
	m.Scenarios = ops.scenarioRecall(recs, c.scenarios, review, alert)
	res.Metrics = m
	return res, nil
}

func rangeEnd(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
