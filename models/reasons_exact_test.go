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

// TestShippedMLPReasonsMidpointError measures, on the shipped fraud model,
// what the exact attributions change against the 32-point midpoint rule
// they replaced, on random standardised rows (z ~ N(0, 1.5²) per input)
// that the model scores review or alert: the midpoint rule's completeness
// error, the largest change of a contribution, and how often the top three
// reasons differ. It fails if the exact ones are not complete (Σ =
// logit(z) − logit(0) to 1e-5).
func TestShippedMLPReasonsMidpointError(t *testing.T) {
	ms, err := Shipped()
	if err != nil {
		t.Fatal(err)
	}
	var m *Model
	for _, c := range ms {
		if c.Name() == ShippedDecisionModel {
			m = c
		}
	}
	if m == nil || !m.exactIG() {
		t.Fatal("the shipped fraud model is not a ReLU MLP")
	}
	names := m.Inputs()
	exact, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	mid, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	mid.pwl = nil // the midpoint rule
	r := rand.New(rand.NewPCG(7, 7))
	n := len(names)
	x := make([]float32, n)
	score := make([]float32, 1)
	var rows, top3Differ, top1Differ int
	var worstMidCompl, worstChange float64
	for trial := 0; trial < 200_000 && rows < 2000; trial++ {
		for i := range x {
			x[i] = m.mean[i] + float32(1.5*r.NormFloat64())/m.invStd[i]
		}
		exact.Score(x, 1, score)
		if exact.Decide(score[0]) == DecisionAllow {
			continue
		}
		rows++
		re := exact.Reasons(x, 0, n, nil)
		rm := mid.Reasons(x, 0, n, nil)
		// logit(z) − logit(0) from the reference forward pass in float64.
		z := make([]float64, n)
		for i := range z {
			z[i] = float64((x[i] - m.mean[i]) * m.invStd[i])
		}
		dl := exact.logit64(z) - exact.logit64(make([]float64, n))
		var se, sm, maxAbs float64
		ce := map[string]float64{}
		for _, v := range re {
			se += float64(v.Contribution)
			ce[v.Feature] = float64(v.Contribution)
			maxAbs = math.Max(maxAbs, math.Abs(float64(v.Contribution)))
		}
		for _, v := range rm {
			sm += float64(v.Contribution)
			worstChange = math.Max(worstChange, math.Abs(float64(v.Contribution)-ce[v.Feature])/maxAbs)
		}
		if d := math.Abs(se - dl); d > 1e-5*math.Max(1, math.Abs(dl)) {
			t.Errorf("exact reasons sum to %v, logit(z) − logit(0) = %v", se, dl)
		}
		worstMidCompl = math.Max(worstMidCompl, math.Abs(sm-dl)/math.Max(1e-9, math.Abs(dl)))
		for k := range 3 {
			if re[k].Feature != rm[k].Feature {
				top3Differ++
				break
			}
		}
		if re[0].Feature != rm[0].Feature {
			top1Differ++
		}
	}
	if rows < 100 {
		t.Fatalf("only %d review/alert rows", rows)
	}
	t.Logf("%d review/alert rows: midpoint rule's completeness error up to %.2g of logit(z) − logit(0); largest contribution change %.2g of the row's largest |contribution|; top 3 differ (order included) on %.2f%% of rows, top 1 on %.2f%%",
		rows, worstMidCompl, worstChange, 100*float64(top3Differ)/float64(rows), 100*float64(top1Differ)/float64(rows))
}

// logit64 is the model's output pre-activation at standardised input z, by
// the float64 layers (the reasons' arithmetic).
func (s *Scorer) logit64(z []float64) float64 {
	copy(s.acts[0], z)
	s.headGrad() // runs the layers forward
	return s.pres[len(s.m.layers)-1][0]
}
