package eval

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) < 1e-12
}

// Hand-computed cases; the first is scikit-learn's documentation example
// (roc_auc_score 0.75, average_precision_score 0.8333).
func TestAUCAndAveragePrecision(t *testing.T) {
	T, F := true, false
	for _, tc := range []struct {
		name    string
		scores  []float64
		fraud   []bool
		auc, ap float64
	}{
		{"sklearn example", []float64{0.1, 0.4, 0.35, 0.8}, []bool{F, F, T, T}, 0.75, 5.0 / 6},
		// 0.9: P 1 R 1/2; 0.5 (one fraud, two genuine tied): P 1/2 R 1.
		// AUC: 0.9 beats both genuine (2), the tied 0.5 fraud half of each (1): 3/4.
		{"ties across classes", []float64{0.5, 0.5, 0.5, 0.9}, []bool{F, T, F, T}, 0.75, 0.5*1 + 0.5*0.5},
		// 0.9: P 1 R 1/3; 0.8: P 2/3 R 2/3; 0.7: no new fraud; 0.5: P 1/2 R 1.
		// AP = 1/3 + 2/9 + 1/6 = 13/18. AUC: 3 + 2.5 + 0.5 of 9 pairs.
		{"ties mixed", []float64{0.9, 0.8, 0.8, 0.7, 0.5, 0.5}, []bool{T, F, T, F, F, T}, 6.0 / 9, 13.0 / 18},
		{"all tied", []float64{0.3, 0.3, 0.3, 0.3}, []bool{T, F, F, F}, 0.5, 0.25},
		{"perfect", []float64{0.1, 0.2, 0.8, 0.9}, []bool{F, F, T, T}, 1, 1},
		{"inverted", []float64{0.9, 0.1}, []bool{F, T}, 0, 0.5},
		{"no fraud", []float64{0.1, 0.2}, []bool{F, F}, math.NaN(), math.NaN()},
		{"only fraud", []float64{0.1, 0.2}, []bool{T, T}, math.NaN(), 1},
		{"empty", nil, nil, math.NaN(), math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AUC(tc.scores, tc.fraud); !near(got, tc.auc) {
				t.Errorf("AUC = %v, want %v", got, tc.auc)
			}
			if got := AveragePrecision(tc.scores, tc.fraud); !near(got, tc.ap) {
				t.Errorf("AveragePrecision = %v, want %v", got, tc.ap)
			}
			roc := ROC(tc.scores, tc.fraud)
			if math.IsNaN(tc.auc) {
				if roc != nil {
					t.Errorf("ROC = %v, want nil", roc)
				}
				return
			}
			if got := trapezoid(roc); !near(got, tc.auc) {
				t.Errorf("trapezoid area of ROC = %v, want %v", got, tc.auc)
			}
		})
	}
}

func trapezoid(pts []Point) float64 {
	var a float64
	for i := 1; i < len(pts); i++ {
		a += (pts[i].X - pts[i-1].X) * (pts[i].Y + pts[i-1].Y) / 2
	}
	return a
}

// TestMetricsAgainstDefinitions checks AUC against the pairwise definition
// and AP against a plain re-statement of scikit-learn's, on random data with
// many ties.
func TestMetricsAgainstDefinitions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		n := 1 + rng.IntN(300)
		scores := make([]float64, n)
		fraud := make([]bool, n)
		for i := range scores {
			scores[i] = float64(rng.IntN(1+trial%20)) / 20 // ties
			fraud[i] = rng.Float64() < 0.2+scores[i]/2
		}
		var pairs, wins float64
		for i := range scores {
			for j := range scores {
				if fraud[i] && !fraud[j] {
					pairs++
					switch {
					case scores[i] > scores[j]:
						wins++
					case scores[i] == scores[j]:
						wins += 0.5
					}
				}
			}
		}
		wantAUC := math.NaN()
		if pairs > 0 {
			wantAUC = wins / pairs
		}
		if got := AUC(scores, fraud); !near(got, wantAUC) {
			t.Fatalf("trial %d: AUC = %v, want %v", trial, got, wantAUC)
		}
		if roc := ROC(scores, fraud); pairs > 0 && !near(trapezoid(roc), wantAUC) {
			t.Fatalf("trial %d: ROC area = %v, want %v", trial, trapezoid(roc), wantAUC)
		}
		// AP: for each distinct threshold in decreasing order,
		// (recall - previous recall) * precision.
		pos := 0
		for _, f := range fraud {
			if f {
				pos++
			}
		}
		wantAP := math.NaN()
		if pos > 0 {
			wantAP = 0
			prevRecall := 0.0
			for k := 20; k >= 0; k-- {
				th := float64(k) / 20
				tp, alerted := 0, 0
				for i, s := range scores {
					if s >= th {
						alerted++
						if fraud[i] {
							tp++
						}
					}
				}
				if alerted == 0 {
					continue
				}
				r := float64(tp) / float64(pos)
				wantAP += (r - prevRecall) * float64(tp) / float64(alerted)
				prevRecall = r
			}
		}
		if got := AveragePrecision(scores, fraud); math.Abs(got-wantAP) > 1e-9 && !(math.IsNaN(got) && math.IsNaN(wantAP)) {
			t.Fatalf("trial %d: AP = %v, want %v", trial, got, wantAP)
		}
	}
}

func TestAtThreshold(t *testing.T) {
	T, F := true, false
	nan := math.NaN()
	scores := []float64{0.1, 0.5, 0.5, 0.9, 0.3}
	fraud := []bool{F, T, F, T, T}
	for _, tc := range []struct {
		name                string
		scores              []float64
		fraud               []bool
		t                   float64
		alerted, tp, fp, fn int
		rate, prec, recall  float64
	}{
		// score >= t alerts, so both tied 0.5 scores are alerted.
		{"at a tied score", scores, fraud, 0.5, 3, 2, 1, 1, 3.0 / 5, 2.0 / 3, 2.0 / 3},
		{"just above", scores, fraud, 0.5000001, 1, 1, 0, 2, 1.0 / 5, 1, 1.0 / 3},
		{"everything", scores, fraud, 0, 5, 3, 2, 0, 1, 3.0 / 5, 1},
		{"nothing alerted", scores, fraud, 1, 0, 0, 0, 3, 0, nan, 0},
		{"no fraud", []float64{0.2, 0.8}, []bool{F, F}, 0.5, 1, 0, 1, 0, 0.5, 0, nan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := AtThreshold("alert", tc.scores, tc.fraud, tc.t)
			if c.Alerted != tc.alerted || c.TruePositives != tc.tp || c.FalsePositives != tc.fp || c.FalseNegatives != tc.fn {
				t.Errorf("got alerted %d tp %d fp %d fn %d, want %d %d %d %d",
					c.Alerted, c.TruePositives, c.FalsePositives, c.FalseNegatives, tc.alerted, tc.tp, tc.fp, tc.fn)
			}
			if !near(float64(c.AlertRate), tc.rate) || !near(float64(c.Precision), tc.prec) || !near(float64(c.Recall), tc.recall) {
				t.Errorf("got rate %v precision %v recall %v, want %v %v %v", c.AlertRate, c.Precision, c.Recall, tc.rate, tc.prec, tc.recall)
			}
		})
	}
}

func TestTopShareThreshold(t *testing.T) {
	hundred := make([]float64, 200)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		name   string
		scores []float64
		share  float64
		want   float64
	}{
		{"0.5% of 200 is the top 1", hundred, 0.005, 200},
		{"1% of 200 is the top 2", hundred, 0.01, 199},
		{"rounds the rank up", hundred, 0.0051, 199},
		{"at least one", hundred, 0, 200},
		{"ties alert more", []float64{5, 5, 5, 1}, 0.25, 5},
		{"empty", nil, 0.01, math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TopShareThreshold(tc.scores, tc.share); !near(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFloatJSON(t *testing.T) {
	b, err := json.Marshal([]Float{Float(math.NaN()), 0.25, Float(math.Inf(1)), 1e-7})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[null,0.25,null,1e-07]`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	var back []Float
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(float64(back[0])) || back[1] != 0.25 || back[3] != 1e-7 {
		t.Fatalf("round trip: got %v", back)
	}
}
