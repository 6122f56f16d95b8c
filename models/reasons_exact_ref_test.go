package models

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/streamscore/streamscore/models/internal/kernel"
)

// refContribMLP is the exact integrated-gradient contributions of an MLP
// (z·W, pwlGrad, the product back through W, times z) as first written, in
// plain loops, kept here as the reference that the
// optimised code must match bit for bit (the stream's reasons are part of
// its records, and a replay must reproduce them).
func refContribMLP(s *Scorer, z []float64) []float64 {
	m := s.m
	l0 := &m.layers[0]
	u, sum := make([]float64, l0.out), make([]float64, l0.out)
	for i, v := range z {
		if v == 0 {
			continue
		}
		w := l0.w64[i*l0.out : (i+1)*l0.out]
		for j := range u {
			u[j] += v * w[j]
		}
	}
	ps := newRefPWLScratch(m)
	refPWLGrad(m, ps, 0, 0, 1, l0.b64, u, sum)
	contrib := make([]float64, len(z))
	for i := range contrib {
		w := l0.w64[i*l0.out : (i+1)*l0.out]
		var c float64
		for j, d := range sum {
			c += w[j] * d
		}
		contrib[i] = c
	}
	for i := range contrib {
		contrib[i] *= z[i]
	}
	return contrib
}

// refPWLScratch is the scratch of refPWLGrad (pwlScratch as first written).
type refPWLScratch struct {
	kinks  []float64
	mask   []bool
	q0, q1 []float64
	t      []float64
}

func newRefPWLScratch(m *Model) []refPWLScratch {
	hidden := m.layers[:len(m.layers)-1]
	ps := make([]refPWLScratch, len(hidden))
	for li, l := range hidden {
		next := m.layers[li+1].out
		ps[li] = refPWLScratch{kinks: make([]float64, 0, l.out+2), mask: make([]bool, l.out),
			q0: make([]float64, next), q1: make([]float64, next), t: make([]float64, next)}
	}
	return ps
}

// refPWLGrad is pwlGrad as first written (see refContribMLP).
func refPWLGrad(m *Model, ps []refPWLScratch, li int, a, c float64, p0, p1, g []float64) {
	l, next := &m.layers[li], &m.layers[li+1]
	last := li+1 == len(m.layers)-1
	sc := &ps[li]
	sc.kinks = append(sc.kinks[:0], a)
	if l.act == kernel.ReLU {
		for j, d := range p1 {
			if d == 0 {
				continue
			}
			if t := -p0[j] / d; t > a && t < c {
				sc.kinks = append(sc.kinks, t)
			}
		}
		slices.Sort(sc.kinks[1:])
	}
	sc.kinks = append(sc.kinks, c)
	mask := sc.mask
	if !last {
		clear(mask)
		copy(sc.q0, next.b64)
		clear(sc.q1)
		clear(sc.t)
	}
	for k := 1; k < len(sc.kinks); k++ {
		lo, hi := sc.kinks[k-1], sc.kinks[k]
		if hi <= lo {
			continue
		}
		mid := 0.5 * (lo + hi)
		if last {
			w := next.w64
			for j := range g {
				if l.act != kernel.ReLU || p0[j]+mid*p1[j] > 0 {
					g[j] += (hi - lo) * w[j]
				}
			}
			continue
		}
		for j := range mask {
			on := l.act != kernel.ReLU || p0[j]+mid*p1[j] > 0
			if on == mask[j] {
				continue
			}
			mask[j] = on
			w := next.w64[j*next.out : (j+1)*next.out]
			c0, c1, wt := p0[j], p1[j], 0.0
			for o, v := range sc.t {
				wt += w[o] * v
			}
			if on {
				g[j] -= wt
			} else {
				c0, c1 = -c0, -c1
				g[j] += wt
			}
			for o := range sc.q0 {
				sc.q0[o] += c0 * w[o]
				sc.q1[o] += c1 * w[o]
			}
		}
		refPWLGrad(m, ps, li+1, lo, hi, sc.q0, sc.q1, sc.t)
	}
	if last {
		return
	}
	for j, on := range mask {
		if !on {
			continue
		}
		w := next.w64[j*next.out : (j+1)*next.out]
		var wt float64
		for o, v := range sc.t {
			wt += w[o] * v
		}
		g[j] += wt
	}
}

// TestMLPReasonsBitExact checks the exact integrated gradients bit for bit
// against refContribMLP, on the shipped fraud model (random rows around
// its means, the review/alert ones and as many others) and on random ReLU
// and identity MLPs of one to three hidden layers whose widths are not
// multiples of 4 (the vector loops' remainders) or wider than 64 units (the
// masks' several words), with zero inputs (the skipped rows of z·W).
func TestMLPReasonsBitExact(t *testing.T) {
	ms, err := Shipped()
	if err != nil {
		t.Fatal(err)
	}
	type tcase struct {
		name string
		m    *Model
	}
	var tests []tcase
	for _, m := range ms {
		if m.Name() == ShippedDecisionModel {
			tests = append(tests, tcase{"shipped fraud", m})
		}
	}
	for i, tc := range []struct {
		in     int
		hidden []int
		acts   []string
	}{
		{in: 7, hidden: []int{10}},
		{in: 13, hidden: []int{33, 17}},
		{in: 5, hidden: []int{9, 7, 5}},
		{in: 6, hidden: []int{8, 6}, acts: []string{"identity", "relu"}},
		{in: 39, hidden: []int{32, 16}},
		{in: 11, hidden: []int{130, 67}}, // masks of several 64-bit words
	} {
		f := testFile(FamilyMLP, tc.in, tc.hidden, uint64(20+i))
		for i, a := range tc.acts {
			f.Layers[i].Activation = a
		}
		tests = append(tests, tcase{f.Name + string(rune('a'+i)), mustParse(t, f)})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m
			if !m.exactIG() {
				t.Fatal("not an exact-IG MLP")
			}
			names := m.Inputs()
			s, err := m.Bind(names)
			if err != nil {
				t.Fatal(err)
			}
			n := len(names)
			r := rand.New(rand.NewPCG(11, 3))
			x := make([]float32, n)
			z := make([]float64, n)
			var rs []Reason
			for trial := range 3000 {
				for i := range x {
					x[i] = m.mean[i] + float32(1.5*r.NormFloat64())/m.invStd[i]
					if trial%5 == 0 && r.IntN(3) == 0 {
						x[i] = m.mean[i] // z_i = 0
					}
				}
				for i := range z {
					z[i] = float64((x[i] - m.mean[i]) * m.invStd[i])
				}
				rs = s.Reasons(x, 0, n, rs[:0])
				want := refContribMLP(s, z)
				for i, v := range want {
					if math.Float64bits(s.contrib[i]) != math.Float64bits(v) {
						t.Fatalf("trial %d input %d: contribution %v (%#x), reference %v (%#x)", trial, i, s.contrib[i], math.Float64bits(s.contrib[i]), v, math.Float64bits(v))
					}
				}
				for _, rr := range rs {
					i := slices.Index(m.inputs, rr.Feature)
					if rr.Contribution != float32(want[i]) {
						t.Fatalf("trial %d %s: reported %v, reference %v", trial, rr.Feature, rr.Contribution, float32(want[i]))
					}
				}
			}
		})
	}
}

// BenchmarkShippedReasons measures the reasons (top 3) of the shipped fraud
// model on rows it scores review or alert, the rows the stream asks
// reasons for.
func BenchmarkShippedReasons(b *testing.B) { benchShippedReasons(b, false) }

// BenchmarkShippedReasonsMidpoint is BenchmarkShippedReasons with the
// 32-point midpoint rule the exact path replaced (what other hidden
// activations still use): the reference of the cost ratio in Reasons' doc.
func BenchmarkShippedReasonsMidpoint(b *testing.B) { benchShippedReasons(b, true) }

func benchShippedReasons(b *testing.B, midpoint bool) {
	ms, err := Shipped()
	if err != nil {
		b.Fatal(err)
	}
	var m *Model
	for _, c := range ms {
		if c.Name() == ShippedDecisionModel {
			m = c
		}
	}
	s, err := m.Bind(m.Inputs())
	if err != nil {
		b.Fatal(err)
	}
	if !m.exactIG() {
		b.Fatal("the shipped fraud model is not a ReLU MLP")
	}
	if midpoint {
		s.pwl = nil
	}
	n := len(m.inputs)
	r := rand.New(rand.NewPCG(7, 7))
	var rows []float32
	score := make([]float32, 1)
	x := make([]float32, n)
	for len(rows) < 256*n {
		for i := range x {
			x[i] = m.mean[i] + float32(1.5*r.NormFloat64())/m.invStd[i]
		}
		s.Score(x, 1, score)
		if s.Decide(score[0]) != DecisionAllow {
			rows = append(rows, x...)
		}
	}
	var rs []Reason
	i := 0
	for b.Loop() {
		rs = s.Reasons(rows, i, 3, rs[:0])
		i = (i + 1) % 256
	}
}
