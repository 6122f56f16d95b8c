package eval

import (
	"math"
	"slices"
	"strconv"

	"github.com/streamscore/streamscore/models/internal/ranking"
)

// Float is a metric value. NaN means undefined (precision without alerts,
// AUC with one class) and is written to JSON as null, and read back from
// null; other values use the shortest representation that round-trips.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Float) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = Float(math.NaN())
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

// Point is one point of a curve: (false positive rate, true positive rate)
// on a ROC curve, (recall, precision) on a precision-recall curve.
type Point struct {
	X, Y float64
}

// step is the cumulative count of fraud (tp) and genuine (fp) transactions
// with score >= t, one per distinct score t from the highest.
type step struct {
	t      float64
	tp, fp int
}

// steps sorts the scores in decreasing order and returns one step per
// distinct score, and the totals of fraud and genuine transactions.
func steps(scores []float64, fraud []bool) (st []step, pos, neg int) {
	checkLen(scores, fraud)
	idx := make([]int32, len(scores))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		switch sa, sb := scores[a], scores[b]; {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	tp, fp := 0, 0
	for i := 0; i < len(idx); {
		t := scores[idx[i]]
		for ; i < len(idx) && scores[idx[i]] == t; i++ {
			if fraud[idx[i]] {
				tp++
			} else {
				fp++
			}
		}
		st = append(st, step{t, tp, fp})
	}
	return st, tp, fp
}

// float32s returns scores rounded to float32, the precision models produce.
func float32s(scores []float64) []float32 {
	out := make([]float32, len(scores))
	for i, v := range scores {
		out[i] = float32(v)
	}
	return out
}

// checkLen panics on mismatched inputs: a programmer error.
func checkLen(scores []float64, fraud []bool) {
	if len(scores) != len(fraud) {
		panic("eval: len(scores) != len(fraud)")
	}
}

// ROC returns the ROC curve: (0, 0), then (false positive rate, true
// positive rate) of alerting at score >= t for each distinct score t from the
// highest, ending at (1, 1). Tied scores make one diagonal step. It returns
// nil without both classes.
func ROC(scores []float64, fraud []bool) []Point {
	return rocOf(steps(scores, fraud))
}

func rocOf(st []step, pos, neg int) []Point {
	if pos == 0 || neg == 0 {
		return nil
	}
	out := make([]Point, 0, len(st)+1)
	out = append(out, Point{0, 0})
	for _, s := range st {
		out = append(out, Point{float64(s.fp) / float64(neg), float64(s.tp) / float64(pos)})
	}
	return out
}

// PR returns the precision-recall curve: (recall, precision) of alerting at
// score >= t for each distinct score t from the highest. It returns nil
// without fraud.
func PR(scores []float64, fraud []bool) []Point {
	return prOf(steps(scores, fraud))
}

func prOf(st []step, pos, _ int) []Point {
	if pos == 0 {
		return nil
	}
	out := make([]Point, len(st))
	for i, s := range st {
		out[i] = Point{float64(s.tp) / float64(pos), float64(s.tp) / float64(s.tp+s.fp)}
	}
	return out
}

// AUC returns the area under the ROC curve, ties counted one half: the
// Mann-Whitney statistic, equal to the trapezoid area under ROC. Training
// reports the same measure of its held-out rows (one implementation);
// scores are compared as float32, the precision models produce. NaN
// without both classes.
func AUC(scores []float64, fraud []bool) float64 {
	checkLen(scores, fraud)
	return ranking.AUC(float32s(scores), fraud)
}

// AveragePrecision returns Σ (R_i − R_{i−1}) · P_i over the distinct scores
// from the highest (R_0 = 0), with R_i and P_i the recall and precision of
// alerting at score >= the i-th: scikit-learn's average_precision_score.
// Training reports the same measure (one implementation; scores compared
// as float32, as for AUC). NaN without fraud.
func AveragePrecision(scores []float64, fraud []bool) float64 {
	checkLen(scores, fraud)
	return ranking.AveragePrecision(float32s(scores), fraud)
}

// Cut is the outcome of alerting at score >= Threshold.
type Cut struct {
	Name           string  `json:"name"` // "review" or "alert"
	Threshold      float64 `json:"threshold"`
	Alerted        int     `json:"alerted"`
	TruePositives  int     `json:"true_positives"`
	FalsePositives int     `json:"false_positives"`
	FalseNegatives int     `json:"false_negatives"`
	AlertRate      Float   `json:"alert_rate"` // alerted / transactions
	Precision      Float   `json:"precision"`  // true positives / alerted; null without alerts
	Recall         Float   `json:"recall"`     // true positives / fraud; null without fraud
	// Operations and money (set by Evaluate; null from AtThreshold alone):
	// alerts per UTC day of the evaluated period, the fraud amount alerted,
	// its share of all fraud amount (dollar-weighted recall), and savings =
	// fraud amount alerted − alert cost × alerted (null without amounts).
	AlertsPerDay Float `json:"alerts_per_day"`
	FraudAmount  Float `json:"fraud_amount"`
	AmountRecall Float `json:"amount_recall"`
	Savings      Float `json:"savings"`
}

// AtThreshold returns the outcome of alerting the transactions with score >=
// t (the rule of models.Scorer.Decide).
func AtThreshold(name string, scores []float64, fraud []bool, t float64) Cut {
	checkLen(scores, fraud)
	c := Cut{Name: name, Threshold: t, AlertsPerDay: nan(), FraudAmount: nan(), AmountRecall: nan(), Savings: nan()}
	pos := 0
	for i, s := range scores {
		if fraud[i] {
			pos++
		}
		if s >= t {
			c.Alerted++
			if fraud[i] {
				c.TruePositives++
			}
		}
	}
	c.FalsePositives = c.Alerted - c.TruePositives
	c.FalseNegatives = pos - c.TruePositives
	c.AlertRate = Float(ratio(c.Alerted, len(scores)))
	c.Precision = Float(ratio(c.TruePositives, c.Alerted))
	c.Recall = Float(ratio(c.TruePositives, pos))
	return c
}

// TopShareThreshold returns the score that alerts the given share of the
// transactions: the score of rank ⌈share·n⌉ from the top (at least rank 1).
// Ties with it are alerted too, so the actual share can be larger. NaN for
// no scores.
func TopShareThreshold(scores []float64, share float64) float64 {
	if len(scores) == 0 {
		return math.NaN()
	}
	s := slices.Clone(scores)
	slices.Sort(s)
	r := int(math.Ceil(share * float64(len(s)))) // rank from the top
	r = min(max(r, 1), len(s))
	return s[len(s)-r]
}

// ratio returns a/b, NaN when b is 0.
func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}
