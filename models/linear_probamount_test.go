package models

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestSigmoidAmountLinear: a linear model with the sigmoid_amount
// activation scores sigmoid(z·w + b) × expm1(amount_log1p) from the row's
// raw amount_log1p (not its standardised input): in [0, amount] whatever
// the inputs; its reasons sum to logit(value/amount) − b; a file without
// the amount input, or the activation on another family, is refused.
func TestSigmoidAmountLinear(t *testing.T) {
	f := testFile(FamilyLinear, 4, nil, 3)
	f.Inputs[2].Name = AmountInput
	lin := f.Layers[0]
	f.Layers[0].Activation = ActivationSigmoidAmount
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// The stream's row has the model's inputs in another order, and an
	// extra column.
	names := []string{"x", AmountInput, "f00", "f01", "f03"}
	s, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	rows := [][]float32{
		{9, float32(math.Log1p(120)), 0.1, -2, 0.5},
		{9, float32(math.Log1p(3000)), 40, -40, -40},
		{9, float32(math.Log1p(0.5)), -40, 40, 40},
		{9, 0, 1, 1, 1}, // amount 0
	}
	var x []float32
	for _, r := range rows {
		x = append(x, r...)
	}
	out := make([]float32, len(rows))
	s.Score(x, len(rows), out)
	for r, row := range rows {
		in := []float32{row[2], row[3], row[1], row[4]} // f00 f01 amount f03
		eta := float64(lin.Bias[0])
		for i := range 4 {
			z := (float64(in[i]) - float64(float32(f.Inputs[i].Mean))) / float64(float32(f.Inputs[i].Std))
			eta += z * float64(lin.Weights[i])
		}
		amt := math.Expm1(float64(row[1]))
		want := amt / (1 + math.Exp(-eta))
		if !(out[r] >= 0) || float64(out[r]) > amt*(1+1e-6) || math.Abs(float64(out[r])-want) > 1e-4*want+1e-6 {
			t.Errorf("row %d: score %v, want sigmoid(%v) × %v = %v, within [0, amount]", r, out[r], eta, amt, want)
		}
		if amt == 0 {
			continue
		}
		var sum float64
		for _, rs := range s.Reasons(x[r*len(names):], 0, 4, nil) {
			sum += float64(rs.Contribution)
		}
		p := float64(out[r]) / amt
		if got := math.Log(p/(1-p)) - float64(lin.Bias[0]); p > 1e-6 && p < 1-1e-6 && math.Abs(sum-got) > 1e-2*math.Max(1, math.Abs(got)) {
			t.Errorf("row %d: reasons sum to %v, want logit(value/amount) − b = %v", r, sum, got)
		}
	}

	tests := []struct {
		name string
		edit func(*File)
	}{
		{"no amount input", func(f *File) {
			*f = *testFile(FamilyLinear, 4, nil, 1)
			f.Layers[0].Activation = ActivationSigmoidAmount
		}},
		{"on logistic", func(f *File) {
			*f = *testFile(FamilyLogistic, 4, nil, 1)
			f.Inputs[0].Name = AmountInput
			f.Layers[0].Activation = ActivationSigmoidAmount
		}},
		{"on mlp hidden", func(f *File) {
			*f = *testFile(FamilyMLP, 4, []int{3}, 1)
			f.Inputs[0].Name = AmountInput
			f.Layers[0].Activation = ActivationSigmoidAmount
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g File
			tc.edit(&g)
			_, err := g.Encode()
			if !errors.Is(err, ErrInvalidModel) || !(strings.Contains(err.Error(), "activation") || strings.Contains(err.Error(), AmountInput)) {
				t.Errorf("got %v, want ErrInvalidModel naming the activation or the amount input", err)
			}
		})
	}
}
