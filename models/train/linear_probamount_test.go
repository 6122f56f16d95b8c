package train

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// TestLinearProbAmount fits probability × amount on a loss (the amount if
// fraud, else 0) whose fraud probability is sigmoid(b0 + x·β) and checks
// the coefficients, that every score is in [0, amount] — also far outside
// the training data —, that the mean score matches the true expected loss, and that
// a dataset without amount_log1p, or without any fraud, is refused.
func TestLinearProbAmount(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 5))
	beta := []float64{1.2, -0.7, 0}
	const b0 = -3.0
	d := &Dataset{Names: []string{"x0", models.AmountInput, "x2"}}
	var trueLoss float64 // the expected loss under the true model
	for i := 0; i < 40000; i++ {
		amt := r.ExpFloat64() * 80
		row := []float32{float32(r.NormFloat64()), float32(math.Log1p(amt)), float32(r.NormFloat64())}
		eta := b0 + beta[0]*float64(row[0]) + beta[1]*float64(row[1]) + beta[2]*float64(row[2])
		var y float64
		p := 1 / (1 + math.Exp(-eta))
		trueLoss += p * amt
		if r.Float64() < p {
			y = amt
		}
		d.Append(row, float32(y))
	}
	f, err := Linear(ctx, "risk", 1, d, WithLink(LinkProbAmount), WithL2(0))
	if err != nil {
		t.Fatal(err)
	}
	l := f.Layers[0]
	if l.Activation != models.ActivationSigmoidAmount || f.Training["link"] != LinkProbAmount {
		t.Fatalf("activation %q, link %v", l.Activation, f.Training["link"])
	}
	got0 := float64(l.Bias[0])
	for j, in := range f.Inputs {
		b := float64(l.Weights[j]) / in.Std
		got0 -= b * in.Mean
		if math.Abs(b-beta[j]) > 0.15 {
			t.Errorf("beta[%d] = %.4f, want %v", j, b, beta[j])
		}
	}
	if math.Abs(got0-b0) > 0.3 {
		t.Errorf("intercept = %.4f, want %v", got0, b0)
	}
	m, _ := encodeParse(t, f)
	// Far outside the data too: huge x0, a large amount.
	far := &Dataset{Names: d.Names}
	far.Append([]float32{50, float32(math.Log1p(1e6)), -50}, 0)
	far.Append([]float32{-50, float32(math.Log1p(3)), 50}, 0)
	for _, dd := range []*Dataset{d, far} {
		scores, err := Predict(m, dd)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range scores {
			amt := math.Expm1(float64(dd.X[i*3+1]))
			if !(s >= 0) || float64(s) > amt*(1+1e-5) {
				t.Fatalf("row %d: score %v outside [0, amount %v]", i, s, amt)
			}
		}
		if dd != d {
			continue
		}
		var sum float64
		for _, s := range scores {
			sum += float64(s)
		}
		if math.Abs(sum-trueLoss) > 0.1*trueLoss {
			t.Errorf("mean score %.3f, expected loss under the true model %.3f", sum/float64(len(scores)), trueLoss/float64(len(scores)))
		}
	}

	noAmt := &Dataset{Names: []string{"x0", "x1"}}
	noAmt.Append([]float32{1, 2}, 3)
	noAmt.Append([]float32{1, 2}, 0)
	if _, err := Linear(ctx, "risk", 1, noAmt, WithLink(LinkProbAmount)); !errors.Is(err, ErrData) {
		t.Errorf("without amount_log1p: %v, want ErrData", err)
	}
	noFraud := &Dataset{Names: d.Names}
	for range 10 {
		noFraud.Append([]float32{1, 2, 3}, 0)
	}
	if _, err := Linear(ctx, "risk", 1, noFraud, WithLink(LinkProbAmount)); !errors.Is(err, ErrData) {
		t.Errorf("no fraud: %v, want ErrData", err)
	}
}
