package models

import (
	"math"
	"testing"
)

func TestShipped(t *testing.T) {
	ms, err := Shipped()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"fraud": FamilyMLP, "fraud_lr": FamilyLogistic, "risk": FamilyLinear, "fraud_gru": FamilyGRU}
	got := map[string]string{}
	for _, m := range ms {
		got[m.Name()] = m.Family()
		s, err := m.Bind(m.Inputs())
		if err != nil {
			t.Fatal(err)
		}
		// A row at the input means scores the model's base value.
		f := m.Inputs()
		x := make([]float32, len(f))
		for i := range x {
			x[i] = m.mean[i]
		}
		out := make([]float32, 1)
		s.ScoreSeq(x, 1, [][]float32{make([]float32, m.StateSize())}, nil, out)
		if v := float64(out[0]); math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("%s: score at the means = %v", m.Ident(), v)
		}
		if _, ok := m.Training()["evaluation"]; !ok {
			t.Errorf("%s: training metadata has no evaluation", m.Ident())
		}
	}
	for name, fam := range want {
		if got[name] != fam {
			t.Errorf("shipped model %q: family %q, want %q", name, got[name], fam)
		}
	}
}
