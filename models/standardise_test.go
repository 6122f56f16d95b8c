package models

import (
	"fmt"
	"testing"
)

// standardiseLayouts returns, for the shipped-size model (39 inputs, an MLP
// 32×16), a Scorer bound to the stream's features in the model's order
// (the engine's case: cols = 0..38) and one bound to a shuffled layout with
// extra columns (streamLayout: the gathering case), with rows of each.
func standardiseLayouts(tb testing.TB, rows int) map[string]struct {
	s *Scorer
	x []float32
} {
	tb.Helper()
	f := testFile(FamilyMLP, 39, []int{32, 16}, 12)
	m := mustParse(tb, f)
	out := map[string]struct {
		s *Scorer
		x []float32
	}{}
	names, x, _ := streamLayout(f, rows, 13)
	s, err := m.Bind(names)
	if err != nil {
		tb.Fatal(err)
	}
	out["gather"] = struct {
		s *Scorer
		x []float32
	}{s, x}
	inOrder := make([]string, len(f.Inputs))
	for i, in := range f.Inputs {
		inOrder[i] = in.Name
	}
	s2, err := m.Bind(inOrder)
	if err != nil {
		tb.Fatal(err)
	}
	// The same values, in the model's order.
	x2 := make([]float32, 0, rows*len(inOrder))
	for r := 0; r < rows; r++ {
		row := x[r*len(names) : (r+1)*len(names)]
		for _, c := range s.cols {
			x2 = append(x2, row[c])
		}
	}
	out["contiguous"] = struct {
		s *Scorer
		x []float32
	}{s2, x2}
	return out
}

// TestStandardiseLayouts: the contiguous fast path gives the gathering
// path's values, bit for bit.
func TestStandardiseLayouts(t *testing.T) {
	const rows = 37
	l := standardiseLayouts(t, rows)
	g, c := l["gather"], l["contiguous"]
	if c.s.first < 0 {
		t.Fatal("the in-order layout was not taken as contiguous")
	}
	if g.s.first >= 0 {
		t.Fatal("the shuffled layout was taken as contiguous")
	}
	g.s.standardise(g.x, rows)
	c.s.standardise(c.x, rows)
	in := len(g.s.cols)
	for i := range rows * in {
		if g.s.xs[i] != c.s.xs[i] {
			t.Fatalf("row %d input %d: contiguous %v, gathered %v", i/in, i%in, c.s.xs[i], g.s.xs[i])
		}
		// And the plain formula, evaluated here.
		row := g.x[(i/in)*g.s.width : (i/in+1)*g.s.width]
		want := (row[g.s.cols[i%in]] - g.s.m.mean[i%in]) * g.s.m.invStd[i%in]
		if g.s.xs[i] != want {
			t.Fatalf("row %d input %d: %v, want %v", i/in, i%in, g.s.xs[i], want)
		}
	}
}

func BenchmarkStandardise(b *testing.B) {
	const rows = 256
	for _, layout := range []string{"contiguous", "gather"} {
		b.Run(fmt.Sprintf("layout=%s", layout), func(b *testing.B) {
			l := standardiseLayouts(b, rows)[layout]
			for b.Loop() {
				l.s.standardise(l.x, rows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
		})
	}
}
