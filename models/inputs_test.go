package models

import (
	"math"
	"strings"
	"testing"
)

// TestScoreFrom checks that scoring with the standardised inputs of
// another scorer gives the scores of Score and ScoreSeq bit for bit (the
// shipped models, which share their inputs), and that misuse panics.
func TestScoreFrom(t *testing.T) {
	ms, err := Shipped()
	if err != nil {
		t.Fatal(err)
	}
	names := ms[0].Inputs()
	const rows = 37
	n := len(names)
	x := make([]float32, rows*n)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.37)) * 3
	}
	var bound []*Scorer
	for _, m := range ms {
		s, err := m.Bind(names)
		if err != nil {
			t.Fatal(err)
		}
		bound = append(bound, s)
	}
	score := func(s, src *Scorer) []float32 {
		out := make([]float32, rows)
		states := make([][]float32, rows)
		for r := range states {
			states[r] = make([]float32, s.m.StateSize())
		}
		s.ScoreSeqFrom(src, x, rows, states, nil, out)
		return out
	}
	for _, src := range bound {
		for _, s := range bound {
			if s == src {
				continue
			}
			if !s.SameInputs(src) {
				t.Fatalf("%s and %s: SameInputs false for the shipped models", s.m.ident, src.m.ident)
			}
			want := score(s, nil)
			score(src, nil)
			got := score(s, src)
			for r := range want {
				if math.Float32bits(got[r]) != math.Float32bits(want[r]) {
					t.Fatalf("%s from %s row %d: %v, alone %v", s.m.ident, src.m.ident, r, got[r], want[r])
				}
			}
		}
	}

	other := testFile(FamilyLogistic, n, nil, 3)
	for i := range other.Inputs {
		other.Inputs[i].Name = names[i]
	}
	diff, err := mustParse(t, other).Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	var a, b *Scorer // two stateless scorers
	for _, s := range bound {
		switch {
		case s.m.Sequential():
		case a == nil:
			a = s
		case b == nil:
			b = s
		}
	}
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"other inputs", func() { diff.ScoreFrom(a, x, rows, make([]float32, rows)) }, "does not have the inputs"},
		{"other rows", func() {
			a.ScoreFrom(nil, x, rows, make([]float32, rows))
			b.ScoreFrom(a, x, rows-1, make([]float32, rows))
		}, "did not standardise"},
		{"other x", func() {
			a.ScoreFrom(nil, x, rows, make([]float32, rows))
			b.ScoreFrom(a, append([]float32(nil), x...), rows, make([]float32, rows))
		}, "did not standardise"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tc.want) {
					t.Fatalf("panic %v, want one containing %q", r, tc.want)
				}
			}()
			tc.call()
		})
	}
	if diff.SameInputs(a) || a.SameInputs(a) {
		t.Error("SameInputs true for other means, or for the scorer itself")
	}
}
