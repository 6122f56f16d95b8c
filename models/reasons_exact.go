package models

import (
	"math"

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
//
// Its arithmetic is fixed: every sum is taken in the same order as the
// plain loops of the first version (kept in reasons_exact_ref_test.go), so
// that the reasons stay bit for bit what they were; the loops are only
// arranged for the CPU (TestMLPReasonsBitExact).
func (s *Scorer) pwlGrad(li int, a, c float64, p0, p1, g []float64) {
	m := s.m
	l, next := &m.layers[li], &m.layers[li+1]
	last := li+1 == len(m.layers)-1
	sc := &s.pwl[li]
	relu := l.act == kernel.ReLU
	n := len(g)
	p0, p1 = p0[:n], p1[:n]
	kinks := sc.kinks[:n+2] // capacity n+2: a, up to n kinks, c
	kinks[0] = a
	nk := 1
	if relu {
		for j, d := range p1 {
			// Unit j's kink t = -p0/d, kept when a < t < c. With d = 0
			// (the unit never switches on the interval) t is ±Inf or NaN,
			// which fails that test as a skipped unit would: every t is
			// written and the count advanced by conditional moves, without
			// a branch a predictor cannot guess.
			t := -p0[j] / d
			var gt, lt int
			if t > a {
				gt = 1
			}
			if t < c {
				lt = 1
			}
			kinks[nk] = t
			nk += gt & lt
		}
		sortKinks(kinks[1:nk])
	}
	kinks[nk] = c
	kinks = kinks[:nk+1]
	mask := sc.mask[:n]
	if !last {
		clear(mask)
		copy(sc.q0, next.b64)
		clear(sc.q1)
		clear(sc.t)
	}
	for k := 1; k < len(kinks); k++ {
		lo, hi := kinks[k-1], kinks[k]
		if hi <= lo {
			continue // equal kinks
		}
		mid := 0.5 * (lo + hi)
		if last {
			// The output's pre-activation is linear in this layer's output:
			// its gradient is the weight column, masked. Adding -0 is the
			// identity of IEEE addition (x + -0 = x for every x, -0
			// included): a unit that is off adds -0 instead of branching
			// on its mask, which a predictor cannot guess.
			w := next.w64[:n] // in×1
			span := hi - lo
			if !relu {
				for j := range g {
					g[j] += span * w[j]
				}
				continue
			}
			for j := range g {
				// sel is all ones when the unit is on: a conditional move,
				// not a branch.
				var sel uint64
				if p0[j]+mid*p1[j] > 0 {
					sel = ^uint64(0)
				}
				v := math.Float64bits(span * w[j])
				g[j] += math.Float64frombits(v&sel | negZeroBits&^sel)
			}
			continue
		}
		// The next layer's pre-activation b + Σ_j mask_j·(p0_j + α·p1_j)·W[j,:],
		// updated by the units whose mask changed since the previous piece.
		// Unit j's gradient integral is W[j,:]·(the next layer's integral
		// over the pieces where j is on): t runs over all pieces, and a unit
		// subtracts W[j,:]·t when it turns on and adds it when it turns off.
		no := next.out
		t, q0, q1 := sc.t[:no], sc.q0[:no], sc.q1[:no]
		for j := range mask {
			on := true
			if relu {
				on = p0[j]+mid*p1[j] > 0
			}
			if on == mask[j] {
				continue
			}
			mask[j] = on
			w := next.w64[j*no:][:no]
			c0, c1, wt := p0[j], p1[j], 0.0
			for o, v := range t {
				wt += w[o] * v
			}
			if on {
				g[j] -= wt
			} else {
				c0, c1 = -c0, -c1
				g[j] += wt
			}
			for o, v := range w {
				q0[o] += c0 * v
				q1[o] += c1 * v
			}
		}
		s.pwlGrad(li+1, lo, hi, sc.q0, sc.q1, sc.t)
	}
	if last {
		return
	}
	// g[j] += W[j,:]·t for the units on at the end, four dot products at a
	// time: each is summed in order (the same rounding), but the four
	// chains of additions overlap.
	no := next.out
	t := sc.t[:no]
	ws := next.w64[:n*no]
	j := 0
	for ; j+4 <= n; j += 4 {
		if !mask[j] && !mask[j+1] && !mask[j+2] && !mask[j+3] {
			continue
		}
		w0, w1, w2, w3 := ws[j*no:][:no], ws[(j+1)*no:][:no], ws[(j+2)*no:][:no], ws[(j+3)*no:][:no]
		var s0, s1, s2, s3 float64
		for o, v := range t {
			s0 += w0[o] * v
			s1 += w1[o] * v
			s2 += w2[o] * v
			s3 += w3[o] * v
		}
		if mask[j] {
			g[j] += s0
		}
		if mask[j+1] {
			g[j+1] += s1
		}
		if mask[j+2] {
			g[j+2] += s2
		}
		if mask[j+3] {
			g[j+3] += s3
		}
	}
	for ; j < n; j++ {
		if !mask[j] {
			continue
		}
		w := ws[j*no:][:no]
		var wt float64
		for o, v := range t {
			wt += w[o] * v
		}
		g[j] += wt
	}
}

// negZeroBits is -0.0, the identity of floating-point addition.
const negZeroBits = 1 << 63

// sortKinks sorts the few kinks of one interval in increasing order: an
// insertion sort (they are at most a layer's width, a handful in practice;
// any correct sort gives the same slice, since equal kinks are equal
// values and no kink is NaN).
func sortKinks(v []float64) {
	for i := 1; i < len(v); i++ {
		x := v[i]
		k := i
		for k > 0 && v[k-1] > x {
			v[k] = v[k-1]
			k--
		}
		v[k] = x
	}
}
