package models

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMLPReasonsExact checks the exact integrated gradients of ReLU (and
// identity) MLPs against integrated gradients computed independently, with
// central finite differences of the float64 reference on a fine midpoint
// grid, and their completeness: they sum to logit(z) − logit(0) up to the
// float32 rounding of the reported contributions.
func TestMLPReasonsExact(t *testing.T) {
	tests := []struct {
		name   string
		hidden []int
		acts   []string // hidden activations, relu when empty
	}{
		{name: "one hidden layer", hidden: []int{10}},
		{name: "two hidden layers", hidden: []int{12, 6}},
		{name: "three hidden layers", hidden: []int{9, 7, 5}},
		{name: "identity then relu", hidden: []int{8, 6}, acts: []string{"identity", "relu"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := testFile(FamilyMLP, 8, tc.hidden, 11)
			for i, a := range tc.acts {
				f.Layers[i].Activation = a
			}
			m := mustParse(t, f)
			if !m.exactIG() {
				t.Fatal("exactIG() = false for a ReLU/identity MLP")
			}
			names, x, z := streamLayout(f, 12, 3)
			s, err := m.Bind(names)
			if err != nil {
				t.Fatal(err)
			}
			ref := mustRef(t, f)
			logit := func(z []float64) float64 {
				_, l, _ := ref.Step(nil, z)
				return l
			}
			const h, steps = 1e-6, 4000
			base := logit(make([]float64, len(f.Inputs)))
			zp, zm := make([]float64, len(f.Inputs)), make([]float64, len(f.Inputs))
			for r := range z {
				rs := s.Reasons(x, r, len(f.Inputs), nil)
				got := make(map[string]float64)
				var sum float64
				for _, rr := range rs {
					got[rr.Feature] = float64(rr.Contribution)
					sum += float64(rr.Contribution)
				}
				for i, in := range f.Inputs {
					var avg float64
					for st := range steps {
						a := (float64(st) + 0.5) / steps
						for j := range z[r] {
							zp[j], zm[j] = a*z[r][j], a*z[r][j]
						}
						zp[i] += h
						zm[i] -= h
						avg += (logit(zp) - logit(zm)) / (2 * h)
					}
					want := z[r][i] * avg / steps
					if d := math.Abs(got[in.Name] - want); d > 2e-3*math.Max(1, math.Abs(want)) {
						t.Errorf("row %d %s: exact integrated gradients %v, fine midpoint rule by finite differences %v", r, in.Name, got[in.Name], want)
					}
				}
				lz := logit(z[r])
				if d := math.Abs(sum - (lz - base)); d > 1e-5*math.Max(1, math.Abs(lz-base)) {
					t.Errorf("row %d: Σ contributions %v, logit(z) − logit(0) = %v (off by %.3g)", r, sum, lz-base, d)
				}
			}
			if a := testing.AllocsPerRun(50, func() { s.Reasons(x, 1, 3, make([]Reason, 0, 3)) }); a > 1 {
				t.Errorf("Reasons: %v allocations per call, want at most the caller's slice", a)
			}
		})
	}
}

// TestMLPReasonsExactNotForSmoothHidden keeps the midpoint rule for hidden
// activations that are not piecewise linear.
func TestMLPReasonsExactNotForSmoothHidden(t *testing.T) {
	f := testFile(FamilyMLP, 4, []int{5, 3}, 2)
	f.Layers[1].Activation = "tanh"
	if mustParse(t, f).exactIG() {
		t.Error("exactIG() = true with a tanh hidden layer")
	}
}

// TestTopAbs checks the top-k selection of the reasons against a stable sort
// by decreasing |contribution|, ties included.
func TestTopAbs(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for trial := range 500 {
		n := 1 + r.IntN(45)
		c := make([]float64, n)
		for i := range c {
			c[i] = float64(r.IntN(7) - 3) // many ties, zeros and signs
			if trial%2 == 0 {
				c[i] = r.NormFloat64()
			}
		}
		for _, k := range []int{1, 2, 3, 5, n - 1, n, n + 3} {
			if k < 1 {
				continue
			}
			want := make([]int, n)
			for i := range want {
				want[i] = i
			}
			slices.SortStableFunc(want, func(a, b int) int { return cmp.Compare(math.Abs(c[b]), math.Abs(c[a])) })
			want = want[:min(k, n)]
			order := make([]int, n)
			for i := range order {
				order[i] = i
			}
			if got := topAbs(order, c, k); !slices.Equal(got, want) {
				t.Fatalf("c=%v k=%d: got %v, want %v", c, k, got, want)
			}
		}
	}
}
