package train

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// TestLinearLogLink fits the log link on a loss-like target (mostly 0,
// sometimes a large amount) whose mean is exp(b0 + x·β) and checks the
// coefficients, that every score is >= 0, even far outside the training
// data, and that the mean of the scores matches the mean loss.
func TestLinearLogLink(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(4, 4))
	beta := []float64{0.8, -0.5, 0}
	const b0 = -1.0
	d := &Dataset{Names: []string{"x0", "x1", "x2"}}
	for i := 0; i < 40000; i++ {
		row := []float32{float32(r.NormFloat64()), float32(r.NormFloat64()*2 + 1), float32(r.NormFloat64())}
		eta := b0
		for j, b := range beta {
			eta += b * float64(row[j])
		}
		// A loss: fraud with probability p = 0.05, then an amount with mean
		// exp(eta)/p, so that E[y|x] = exp(eta).
		var y float64
		if r.Float64() < 0.05 {
			y = r.ExpFloat64() * math.Exp(eta) / 0.05
		}
		d.Append(row, float32(y))
	}
	f, err := Linear(ctx, "risk", 1, d, WithLink(LinkLog), WithL2(0))
	if err != nil {
		t.Fatal(err)
	}
	l := f.Layers[0]
	if l.Activation != models.ActivationExp || f.Training["link"] != LinkLog {
		t.Fatalf("activation %q, link %v", l.Activation, f.Training["link"])
	}
	got0 := float64(l.Bias[0])
	for j, in := range f.Inputs {
		b := float64(l.Weights[j]) / in.Std
		got0 -= b * in.Mean
		if math.Abs(b-beta[j]) > 0.1 {
			t.Errorf("beta[%d] = %.4f, want %v", j, b, beta[j])
		}
	}
	if math.Abs(got0-b0) > 0.15 {
		t.Errorf("intercept = %.4f, want %v", got0, b0)
	}
	m, _ := encodeParse(t, f)
	scores, err := Predict(m, d)
	if err != nil {
		t.Fatal(err)
	}
	// On the fitted rows (the head: WithHoldout's default 20% is held
	// out) the score equations of the intercept make the means equal.
	nt := d.Rows() - int(math.Round(float64(d.Rows())*0.2))
	var sum, ysum float64
	for i, s := range scores {
		if !(s >= 0) {
			t.Fatalf("row %d: score %v < 0", i, s)
		}
		if i < nt {
			sum += float64(s)
			ysum += float64(d.Y[i])
		}
	}
	if math.Abs(sum-ysum)/ysum > 1e-3 {
		t.Errorf("mean score %v, mean loss %v", sum/float64(len(scores)), ysum/float64(len(scores)))
	}
	far := &Dataset{Names: d.Names}
	far.Append([]float32{-50, 60, 3}, 0)
	far.Append([]float32{50, -60, 3}, 0)
	s, err := Predict(m, far)
	if err != nil {
		t.Fatal(err)
	}
	if !(s[0] >= 0) || !(s[1] >= 0) {
		t.Errorf("far rows: scores %v", s)
	}
	// The identity link on the same data predicts negative losses there.
	fi, err := Linear(ctx, "risk", 1, d)
	if err != nil {
		t.Fatal(err)
	}
	mi, _ := encodeParse(t, fi)
	si, _ := Predict(mi, far)
	if !(si[0] < 0 || si[1] < 0) {
		t.Errorf("identity link on far rows: %v, expected a negative loss (the reason for the log link)", si)
	}
}

func TestLinearLogLinkErrors(t *testing.T) {
	ctx := context.Background()
	mk := func(y func(i int) float32) *Dataset {
		d := &Dataset{Names: []string{"a"}}
		for i := range 200 {
			d.Append([]float32{float32(i)}, y(i))
		}
		return d
	}
	tests := []struct {
		name string
		d    *Dataset
	}{
		{"negative target", mk(func(i int) float32 { return float32(i%3) - 1 })},
		{"all zero", mk(func(int) float32 { return 0 })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Linear(ctx, "x", 1, tc.d, WithLink(LinkLog)); !errors.Is(err, ErrData) {
				t.Errorf("got %v, want ErrData", err)
			}
		})
	}
	if _, err := Linear(ctx, "x", 1, mk(func(i int) float32 { return 1 }), WithLink("logit")); err == nil {
		t.Error("link logit accepted")
	}
}
