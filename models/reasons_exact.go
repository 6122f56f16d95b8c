package models

import (
	"slices"

	"github.com/streamscore/streamscore/models/internal/kernel"
)

// Exact integrated gradients for MLPs whose hidden layers are ReLU (or
// identity).
//
// Along the straight path α·z, α ∈ [0, 1], the first layer's pre-activation
// is p(α) = b + α·(zW), affine in α. A ReLU unit switches where its affine
// pre-activation crosses zero; between two such kinks every mask is fixed,
// the next layer's pre-activation is again affine in α, and so on: the
// network is piecewise linear along the path and its gradient piecewise
// constant. The integral of the gradient is then a finite sum over the
// pieces, each piece's length times its gradient — no quadrature, no error
// beyond float64 rounding, and the contributions sum to logit(z) − logit(0)
// exactly (completeness). It costs one pass over the kinks the path crosses
// (at most the hidden units of each layer per enclosing piece) instead of
// igSteps forward and backward passes.

// pwlScratch is the per-level scratch of exact integrated gradients: for
// hidden layer li, the kinks of its pre-activation in the current interval,
// its ReLU mask, and the next layer's affine pre-activation and gradient
// integral.
type pwlScratch struct {
	kinks  []float64
	mask   []bool
	q0, q1 []float64 // next layer's pre-activation q0 + α·q1
	t      []float64 // ∫ ∂logit/∂(next layer's pre-activation) from the interval's start
}

// exactIG reports whether the model's reasons are exact integrated
// gradients: a multi-layer MLP whose hidden layers are ReLU or identity,
// with one output.
func (m *Model) exactIG() bool {
	if m.rec != nil || m.trees != nil || len(m.layers) < 2 || m.layers[len(m.layers)-1].out != 1 {
		return false
	}
	for _, l := range m.layers[:len(m.layers)-1] {
		if l.act != kernel.ReLU && l.act != kernel.Identity {
			return false
		}
	}
	return true
}

// newPWLScratch sizes the scratch of exact integrated gradients for m.
func newPWLScratch(m *Model) []pwlScratch {
	hidden := m.layers[:len(m.layers)-1]
	ps := make([]pwlScratch, len(hidden))
	for li, l := range hidden {
		next := m.layers[li+1].out
		ps[li] = pwlScratch{kinks: make([]float64, 0, l.out+2), mask: make([]bool, l.out),
			q0: make([]float64, next), q1: make([]float64, next), t: make([]float64, next)}
	}
	return ps
}

// pwlGrad adds to g (len layers[li].out) the integral over α ∈ [a, c] of
// ∂(output pre-activation)/∂(pre-activation of hidden layer li), where that
// pre-activation is p0 + α·p1 on the interval.
func (s *Scorer) pwlGrad(li int, a, c float64, p0, p1, g []float64) {
	m := s.m
	l, next := &m.layers[li], &m.layers[li+1]
	last := li+1 == len(m.layers)-1
	sc := &s.pwl[li]
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
			continue // equal kinks
		}
		mid := 0.5 * (lo + hi)
		if last {
			// The output's pre-activation is linear in this layer's output:
			// its gradient is the weight column, masked.
			w := next.w64 // in×1
			for j := range g {
				if l.act != kernel.ReLU || p0[j]+mid*p1[j] > 0 {
					g[j] += (hi - lo) * w[j]
				}
			}
			continue
		}
		// The next layer's pre-activation b + Σ_j mask_j·(p0_j + α·p1_j)·W[j,:],
		// updated by the units whose mask changed since the previous piece.
		// Unit j's gradient integral is W[j,:]·(the next layer's integral
		// over the pieces where j is on): t runs over all pieces, and a unit
		// subtracts W[j,:]·t when it turns on and adds it when it turns off.
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
		s.pwlGrad(li+1, lo, hi, sc.q0, sc.q1, sc.t)
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
