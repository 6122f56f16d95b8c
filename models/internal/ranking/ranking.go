// Package ranking holds the ranking measures of a score against a binary
// truth that training (models/train, on its held-out rows) and evaluation
// (models/eval, on a scores file) both report, so the two report the same
// number for the same scores.
//
// # Concepts
//
// Scores are float32, the precision models produce; equal scores are one
// threshold. A row is positive when positive[i] is true: the caller decides
// what a positive is (fraud, y > 0.5, a loss y > 0).
//
// # Concurrency
//
// The functions are pure and safe for concurrent use.
package ranking

import (
	"math"
	"sort"
)

// AUC returns the area under the ROC curve, ties counted as one half (the
// Mann-Whitney statistic, equal to the trapezoid area under ROC). It
// returns NaN without both classes and panics if the lengths differ.
func AUC(scores []float32, positive []bool) float64 {
	checkLen(scores, positive)
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var rankSum float64
	var npos int
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avg := float64(i+j+1) / 2 // ranks i+1..j
		for _, k := range idx[i:j] {
			if positive[k] {
				rankSum += avg
				npos++
			}
		}
		i = j
	}
	nneg := len(idx) - npos
	if npos == 0 || nneg == 0 {
		return math.NaN()
	}
	return (rankSum - float64(npos)*float64(npos+1)/2) / (float64(npos) * float64(nneg))
}

// AveragePrecision returns Σ (R_n − R_{n−1}) · P_n over the distinct scores
// from the highest down (R_0 = 0), where R_n and P_n are the recall and
// precision of alerting at score >= the n-th: the area under the
// precision-recall curve as scikit-learn's average_precision_score, with
// equal scores taken as one threshold. It returns NaN without positives and
// panics if the lengths differ.
func AveragePrecision(scores []float32, positive []bool) float64 {
	checkLen(scores, positive)
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	npos := 0
	for _, p := range positive {
		if p {
			npos++
		}
	}
	if npos == 0 {
		return math.NaN()
	}
	var ap float64
	tp, fp, prevTP := 0, 0, 0
	for i := 0; i < len(idx); {
		j := i
		for ; j < len(idx) && scores[idx[j]] == scores[idx[i]]; j++ {
			if positive[idx[j]] {
				tp++
			} else {
				fp++
			}
		}
		if tp > prevTP {
			ap += float64(tp-prevTP) / float64(npos) * float64(tp) / float64(tp+fp)
			prevTP = tp
		}
		i = j
	}
	return ap
}

func checkLen(scores []float32, positive []bool) {
	if len(scores) != len(positive) {
		panic("ranking: len(scores) != len(positive)")
	}
}
