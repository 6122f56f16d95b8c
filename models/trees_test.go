package models

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomTree grows a random tree over nIn inputs, at most depth deep, with
// covers that add up (a split's cover is its children's sum) and default
// directions at random. Node ids are given depth-first so that they are
// not in the breadth-first order of the scoring layout.
func randomTree(r *rand.Rand, nIn, depth int) Tree {
	var t Tree
	var grow func(d int) (int32, float32)
	grow = func(d int) (int32, float32) {
		id := int32(len(t.Feature))
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, -1)
		t.Right = append(t.Right, -1)
		t.DefaultLeft = append(t.DefaultLeft, false)
		t.Value = append(t.Value, 0)
		t.Cover = append(t.Cover, 0)
		if d == depth || (d > 0 && r.IntN(4) == 0) {
			t.Value[id] = float32(r.NormFloat64() * 0.3)
			t.Cover[id] = float32(1 + r.IntN(50))
			return id, t.Cover[id]
		}
		t.Feature[id] = int32(r.IntN(nIn))
		t.Threshold[id] = float32(r.NormFloat64())
		t.DefaultLeft[id] = r.IntN(2) == 0
		l, cl := grow(d + 1)
		rt, cr := grow(d + 1)
		t.Left[id], t.Right[id] = l, rt
		t.Cover[id] = cl + cr
		return id, t.Cover[id]
	}
	grow(0)
	return t
}

func gbdtFile(nIn, trees, depth int, objective string, seed uint64) *File {
	r := rand.New(rand.NewPCG(seed, 7))
	f := &File{Format: FormatName, FormatVersion: FormatVersion, Name: "g", Family: FamilyGBDT, Version: 1,
		Output: OutputProbability, Thresholds: Thresholds{Review: 0.3, Alert: 0.8},
		Trees: &Trees{Objective: objective, BaseScore: -1.5}}
	if objective == ObjectiveSquared {
		f.Output = OutputValue
		f.Thresholds = Thresholds{Review: 1, Alert: 5}
	}
	for i := range nIn {
		f.Inputs = append(f.Inputs, Input{Name: fmt.Sprintf("f%02d", i), Mean: 0, Std: 1})
	}
	for range trees {
		f.Trees.Trees = append(f.Trees.Trees, randomTree(r, nIn, depth))
	}
	return f
}

// refLeaf walks tree t of f in the file's numbering.
func refLeaf(t *Tree, x []float32) float64 {
	n := int32(0)
	for t.Feature[n] >= 0 {
		v := x[t.Feature[n]]
		switch {
		case math.IsNaN(float64(v)):
			if t.DefaultLeft[n] {
				n = t.Left[n]
			} else {
				n = t.Right[n]
			}
		case v < t.Threshold[n]:
			n = t.Left[n]
		default:
			n = t.Right[n]
		}
	}
	return float64(t.Value[n])
}

// condExp is E[tree(x) | x_S] under the covers (Lundberg et al.,
// Algorithm 1): known features follow x, the others average the children
// by cover.
func condExp(t *Tree, n int32, x []float32, known uint) float64 {
	if t.Feature[n] < 0 {
		return float64(t.Value[n])
	}
	if known&(1<<uint(t.Feature[n])) != 0 {
		v := x[t.Feature[n]]
		left := v < t.Threshold[n] || (math.IsNaN(float64(v)) && t.DefaultLeft[n])
		if left {
			return condExp(t, t.Left[n], x, known)
		}
		return condExp(t, t.Right[n], x, known)
	}
	l, r := t.Left[n], t.Right[n]
	return (condExp(t, l, x, known)*float64(t.Cover[l]) + condExp(t, r, x, known)*float64(t.Cover[r])) / float64(t.Cover[n])
}

// bruteShapley is the Shapley value of every input by enumeration of all
// subsets: the definition TreeSHAP computes in polynomial time.
func bruteShapley(f *File, x []float32) []float64 {
	m := len(f.Inputs)
	phi := make([]float64, m)
	fact := func(n int) float64 {
		p := 1.0
		for i := 2; i <= n; i++ {
			p *= float64(i)
		}
		return p
	}
	for ti := range f.Trees.Trees {
		t := &f.Trees.Trees[ti]
		for i := range m {
			for s := uint(0); s < 1<<uint(m); s++ {
				if s&(1<<uint(i)) != 0 {
					continue
				}
				k := 0
				for b := s; b != 0; b &= b - 1 {
					k++
				}
				w := fact(k) * fact(m-k-1) / fact(m)
				phi[i] += w * (condExp(t, 0, x, s|1<<uint(i)) - condExp(t, 0, x, s))
			}
		}
	}
	return phi
}

func TestTreesScoreMatchesWalk(t *testing.T) {
	for _, obj := range []string{ObjectiveLogistic, ObjectiveSquared} {
		f := gbdtFile(6, 40, 5, obj, 3)
		m := mustParse(t, f)
		// The stream's layout: the model's inputs shuffled among others.
		names := []string{"other", "f03", "f00", "f05", "x", "f01", "f04", "f02"}
		s, err := m.Bind(names)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(5, 5))
		const rows = 300
		x := make([]float32, rows*len(names))
		for i := range x {
			x[i] = float32(r.NormFloat64())
			if r.IntN(8) == 0 {
				x[i] = float32(math.NaN())
			}
		}
		out := make([]float32, rows)
		s.Score(x, rows, out)
		for row := range rows {
			in := make([]float32, 6)
			for j, n := range names {
				var k int
				if _, err := fmt.Sscanf(n, "f%02d", &k); err == nil {
					in[k] = x[row*len(names)+j]
				}
			}
			margin := float32(f.Trees.BaseScore)
			for ti := range f.Trees.Trees {
				margin += float32(refLeaf(&f.Trees.Trees[ti], in))
			}
			want := float64(margin)
			if obj == ObjectiveLogistic {
				want = 1 / (1 + math.Exp(-want))
			}
			if math.Abs(float64(out[row])-want) > 1e-6 {
				t.Fatalf("%s row %d: score %v, walk %v", obj, row, out[row], want)
			}
		}
	}
}

func TestTreeSHAPMatchesBruteForce(t *testing.T) {
	const nIn = 5
	f := gbdtFile(nIn, 12, 6, ObjectiveLogistic, 11)
	m := mustParse(t, f)
	s, err := m.Bind(m.Inputs())
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for row := range 40 {
		x := make([]float32, nIn)
		for i := range x {
			x[i] = float32(r.NormFloat64())
			if r.IntN(6) == 0 {
				x[i] = float32(math.NaN())
			}
		}
		want := bruteShapley(f, x)
		got := make([]float64, nIn)
		s.shap.contributions(m.trees, x, got)
		var sum float64
		for i := range got {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Fatalf("row %d input %d: TreeSHAP %v, enumeration %v", row, i, got[i], want[i])
			}
			sum += got[i]
		}
		// Local accuracy: the values sum to margin − expected margin.
		var margin float64 = f.Trees.BaseScore
		for ti := range f.Trees.Trees {
			margin += refLeaf(&f.Trees.Trees[ti], x)
		}
		if exp, _ := m.ExpectedMargin(); math.Abs(sum-(margin-exp)) > 1e-9 {
			t.Fatalf("row %d: Σφ = %v, margin − expected = %v", row, sum, margin-exp)
		}
		// Reasons: the same values, largest first.
		rs := s.Reasons(x, 0, nIn, nil)
		if len(rs) != nIn {
			t.Fatalf("row %d: %d reasons, want %d", row, len(rs), nIn)
		}
		for k, rr := range rs {
			var i int
			fmt.Sscanf(rr.Feature, "f%02d", &i)
			if math.Abs(float64(rr.Contribution)-want[i]) > 1e-6 {
				t.Fatalf("row %d reason %d %s: %v, want %v", row, k, rr.Feature, rr.Contribution, want[i])
			}
			if k > 0 && math.Abs(float64(rr.Contribution)) > math.Abs(float64(rs[k-1].Contribution)) {
				t.Fatalf("row %d: reasons not sorted by |contribution|: %v", row, rs)
			}
		}
	}
}

func TestTreesParseErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(f *File)
		want string
	}{
		{"no trees", func(f *File) { f.Trees = nil }, "trees: missing"},
		{"trees on mlp", func(f *File) { f.Family = FamilyMLP }, "only family gbdt"},
		{"layers on gbdt", func(f *File) { f.Layers = testFile(FamilyLogistic, 4, nil, 1).Layers }, "trees only"},
		{"objective", func(f *File) { f.Trees.Objective = "multi:softmax" }, "objective"},
		{"objective vs output", func(f *File) { f.Output = OutputValue }, "does not give output"},
		{"base score", func(f *File) { f.Trees.BaseScore = 1e300 }, "base_score"},
		{"feature range", func(f *File) { f.Trees.Trees[0].Feature[0] = 4 }, "out of range"},
		{"negative feature", func(f *File) { f.Trees.Trees[0].Feature[0] = -2 }, "out of range"},
		{"threshold NaN", func(f *File) { f.Trees.Trees[0].Threshold[0] = float32(math.NaN()) }, "threshold"},
		{"leaf value inf", func(f *File) {
			tr := &f.Trees.Trees[1]
			for j := range tr.Feature {
				if tr.Feature[j] < 0 {
					tr.Value[j] = float32(math.Inf(-1))
					return
				}
			}
		}, "leaf value"},
		{"cycle", func(f *File) { tr := &f.Trees.Trees[0]; tr.Left[tr.Left[0]] = 0 }, "children"},
		{"shared", func(f *File) { tr := &f.Trees.Trees[0]; tr.Right[0] = tr.Left[0] }, "distinct"},
		{"child out of range", func(f *File) { tr := &f.Trees.Trees[0]; tr.Right[0] = int32(len(tr.Feature)) }, "children"},
		{"lengths", func(f *File) { tr := &f.Trees.Trees[0]; tr.Cover = tr.Cover[1:] }, "different lengths"},
		{"split cover", func(f *File) { f.Trees.Trees[0].Cover[0] = 0 }, "cover"},
		{"orphan", func(f *File) {
			tr := &f.Trees.Trees[0]
			tr.Feature = append(tr.Feature, -1)
			tr.Threshold = append(tr.Threshold, 0)
			tr.Left = append(tr.Left, -1)
			tr.Right = append(tr.Right, -1)
			tr.DefaultLeft = append(tr.DefaultLeft, false)
			tr.Value = append(tr.Value, 1)
			tr.Cover = append(tr.Cover, 1)
		}, "not reachable"},
		{"leaf with child", func(f *File) {
			tr := &f.Trees.Trees[0]
			for j := range tr.Feature {
				if tr.Feature[j] < 0 {
					tr.Left[j] = 0
					return
				}
			}
		}, "a leaf has"},
		{"too many trees", func(f *File) {
			for len(f.Trees.Trees) <= MaxTrees {
				f.Trees.Trees = append(f.Trees.Trees, f.Trees.Trees[0])
			}
		}, "trees, want"},
		{"no tree", func(f *File) { f.Trees.Trees = nil }, "0 trees"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := gbdtFile(4, 3, 4, ObjectiveLogistic, 1)
			c.edit(f)
			// Non-finite values cannot be written in JSON: Encode refuses them.
			var err error
			if _, err = f.Encode(); err == nil {
				_, err = Parse(encodeUnchecked(t, f))
			}
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want ErrInvalidModel containing %q", err, c.want)
			}
		})
	}
}

func TestTreesDeepChainRefused(t *testing.T) {
	// A chain deeper than MaxTreeDepth: refused before any recursion.
	var tr Tree
	const depth = MaxTreeDepth + 1
	for d := range depth {
		id := int32(2 * d)
		tr.Feature = append(tr.Feature, 0, -1)
		tr.Threshold = append(tr.Threshold, 0, 0)
		tr.Left = append(tr.Left, id+1, -1)
		tr.Right = append(tr.Right, id+2, -1)
		tr.DefaultLeft = append(tr.DefaultLeft, false, false)
		tr.Value = append(tr.Value, 0, 1)
		tr.Cover = append(tr.Cover, float32(depth-d+1), 1) // a split covers its two children
	}
	tr.Feature = append(tr.Feature, -1)
	tr.Threshold = append(tr.Threshold, 0)
	tr.Left = append(tr.Left, -1)
	tr.Right = append(tr.Right, -1)
	tr.DefaultLeft = append(tr.DefaultLeft, false)
	tr.Value = append(tr.Value, 1)
	tr.Cover = append(tr.Cover, 1)
	f := gbdtFile(2, 1, 2, ObjectiveLogistic, 1)
	f.Trees.Trees[0] = tr
	_, err := Parse(encodeUnchecked(t, f))
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "deeper than") {
		t.Fatalf("Parse = %v, want deeper than %d", err, MaxTreeDepth)
	}
}

func TestTreesNoAlloc(t *testing.T) {
	f := gbdtFile(8, 50, 6, ObjectiveLogistic, 2)
	m := mustParse(t, f)
	s, err := m.Bind(m.Inputs())
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 64*8)
	for i := range x {
		x[i] = float32(i%13) * 0.1
	}
	out := make([]float32, 64)
	var rs []Reason
	s.Score(x, 64, out)
	rs = s.Reasons(x, 3, 4, rs[:0])
	if n := testing.AllocsPerRun(20, func() {
		s.Score(x, 64, out)
		rs = s.Reasons(x, 3, 4, rs[:0])
	}); n != 0 {
		t.Fatalf("Score+Reasons allocate %v times per run, want 0", n)
	}
}

// BenchmarkTreesScore scores 500 trees of depth 6 over 39 inputs, per
// batch size; rows/s per core is b.N·batch over the time.
func BenchmarkTreesScore(b *testing.B) {
	const nIn = 39
	f := gbdtFile(nIn, 500, 6, ObjectiveLogistic, 4)
	m := mustParse(b, f)
	s, err := m.Bind(m.Inputs())
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			// 256 rows; batch 1 goes through them in turn so that the
			// branch predictor does not learn one row's paths.
			x := make([]float32, 256*nIn)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			out := make([]float32, batch)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				s.Score(x[i*nIn:(i+batch)*nIn], batch, out)
				i = (i + batch) % 256
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	b.Run("reasons", func(b *testing.B) {
		x := make([]float32, nIn)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		var rs []Reason
		b.ReportAllocs()
		for b.Loop() {
			rs = s.Reasons(x, 0, 3, rs[:0])
		}
	})
}

// TestTreesCoverChecked: a child covering more than its parent is refused
// (TreeSHAP reads covers as probabilities), and a leaf of zero cover gives
// finite reasons (the 0/0 of TreeSHAP's unwound sum is guarded).
func TestTreesCoverChecked(t *testing.T) {
	tr := Tree{Feature: []int32{0, -1, -1}, Threshold: []float32{0.5, 0, 0}, Left: []int32{1, -1, -1}, Right: []int32{2, -1, -1},
		DefaultLeft: []bool{false, false, false}, Value: []float32{0, 1, -1}, Cover: []float32{1, 3, 1}}
	f := gbdtFile(2, 1, 2, ObjectiveLogistic, 1)
	f.Trees.Trees[0] = tr
	if _, err := Parse(encodeUnchecked(t, f)); !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "exceeds the node's") {
		t.Fatalf("Parse with a child covering more than its parent = %v", err)
	}
	tr.Cover = []float32{1, 0, 1} // all the training rows went right
	f.Trees.Trees[0] = tr
	m, err := Parse(encodeUnchecked(t, f))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := m.Bind(m.Inputs())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range [][]float32{{0, 0}, {1, 0}, {float32(math.NaN()), 0}} {
		for _, r := range sc.Reasons(x, 0, 2, nil) {
			if c := float64(r.Contribution); math.IsNaN(c) || math.IsInf(c, 0) {
				t.Fatalf("reason %+v for %v: not finite", r, x)
			}
		}
	}
}
