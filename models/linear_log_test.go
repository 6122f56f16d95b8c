package models

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestLogLinkLinear: a linear model with the exp activation scores
// exp(z·w + b) (never negative), its reasons sum to log(value) − b, an
// identity linear model (files before the log link) still loads and can go
// negative, and exp is refused anywhere but on a linear model's layer.
func TestLogLinkLinear(t *testing.T) {
	f := testFile(FamilyLinear, 4, nil, 3)
	ident := f.Layers[0]
	f.Layers[0].Activation = ActivationExp
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"f00", "f01", "f02", "f03"}
	s, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{0.1, -2, 3, 0.5, 40, -40, 40, -40, -40, 40, -40, 40}
	out := make([]float32, 3)
	s.Score(x, 3, out)
	for r := range 3 {
		var eta float64 = float64(ident.Bias[0])
		for i := range 4 {
			z := (float64(x[r*4+i]) - float64(float32(f.Inputs[i].Mean))) / float64(float32(f.Inputs[i].Std))
			eta += z * float64(ident.Weights[i])
		}
		want := math.Exp(eta)
		if !(out[r] >= 0) || math.Abs(float64(out[r])-want) > 1e-4*want+1e-30 {
			t.Errorf("row %d: score %v, want exp(%v) = %v", r, out[r], eta, want)
		}
		var sum float64
		for _, rs := range s.Reasons(x, r, 4, nil) {
			sum += float64(rs.Contribution)
		}
		if got := math.Log(float64(out[r])) - float64(ident.Bias[0]); math.Abs(sum-got) > 1e-3*math.Max(1, math.Abs(got)) {
			t.Errorf("row %d: reasons sum to %v, want log(value) − b = %v", r, sum, got)
		}
	}

	// Identity (the earlier formulation) still loads and can go negative.
	fi := testFile(FamilyLinear, 4, nil, 3)
	bi, err := fi.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mi, err := Parse(bi)
	if err != nil {
		t.Fatalf("an identity linear model must still load: %v", err)
	}
	si, _ := mi.Bind(names)
	si.Score(x, 3, out)
	if !(out[1] < 0 || out[2] < 0) {
		t.Logf("identity scores %v (no negative on these rows)", out)
	}

	tests := []struct {
		name string
		edit func(*File)
	}{
		{"exp on mlp output", func(f *File) { *f = *testFile(FamilyMLP, 4, []int{3}, 1); f.Layers[1].Activation = ActivationExp }},
		{"exp on mlp hidden", func(f *File) { *f = *testFile(FamilyMLP, 4, []int{3}, 1); f.Layers[0].Activation = ActivationExp }},
		{"exp on logistic", func(f *File) { *f = *testFile(FamilyLogistic, 4, nil, 1); f.Layers[0].Activation = ActivationExp }},
		{"sigmoid on linear", func(f *File) { *f = *testFile(FamilyLinear, 4, nil, 1); f.Layers[0].Activation = "sigmoid" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g File
			tc.edit(&g)
			_, err := g.Encode()
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "activation") {
				t.Errorf("got %v, want ErrInvalidModel naming the activation", err)
			}
		})
	}
}
