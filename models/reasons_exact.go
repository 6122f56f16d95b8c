package models

import (
	"math/bits"

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
// igSteps forward and backward passes: for the shipped fraud model about a
// tenth of the midpoint rule's time (BenchmarkShippedReasons,
// BenchmarkShippedReasonsMidpoint), on float64 AVX2 kernels
// (kernel.SignBits, PosBits, MulAddRows64, Axpy64) that leave every sum
// bit for bit as the pure-Go loops compute it.

// pwlScratch is the per-level scratch of exact integrated gradients: for
// hidden layer li, the kinks of its pre-activation in the current interval,
// its ReLU mask, and the next layer's affine pre-activation and gradient
// integral.
type pwlScratch struct {
	kinks  []float64
	mask   []uint64  // bit j%64 of word j/64: unit j is on
	on     []uint64  // … its computed pre-activation is > 0 at both ends of the interval
	vary   []uint64  // … is > 0 at one end only
	q0, q1 []float64 // next layer's pre-activation q0 + α·q1
	t      []float64 // ∫ ∂logit/∂(next layer's pre-activation) from the interval's start
	sum    []float64 // W[j,:]·t for every unit j
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
		ps[li] = pwlScratch{kinks: make([]float64, 0, l.out+2), mask: make([]uint64, (l.out+63)/64),
			on: make([]uint64, (l.out+63)/64), vary: make([]uint64, (l.out+63)/64),
			q0: make([]float64, next), q1: make([]float64, next), t: make([]float64, next),
			sum: make([]float64, l.out)}
	}
	return ps
}

// pwlGrad adds to g (len layers[li].out) the integral over α ∈ [a, c] of
// ∂(output pre-activation)/∂(pre-activation of hidden layer li), where that
// pre-activation is p0 + α·p1 on the interval.
//
// Its arithmetic is fixed: every sum is taken in the same order as the
// plain loops of the first version (kept in reasons_exact_ref_test.go), so
// that the reasons stay bit for bit what they were (TestMLPReasonsBitExact);
// the loops are arranged for the CPU (the signs of 4 units per vector
// instruction, kernel.SignBits; the dot products W·t all at once, wDot) and
// skip work whose result is known:
//
//   - A unit's kink t = -p0/d is kept when a < t < c. Rounding is monotone
//     and a, c are floats, so a kept t has its exact root strictly inside
//     (a, c): the exact pre-activations at a and c have opposite signs, and
//     their computed values weakly so (a computed p0 + α·d keeps its exact
//     value's sign or is 0). A unit computed > 0 at both ends, or < 0 at
//     both, has no kink to keep and is not divided.
//   - The computed p0 + α·p1 is monotone in α, so a unit whose computed
//     sign is the same at a and at c has it at every mid in between: the
//     last layer evaluates only the others piece by piece.
//   - Before the first piece's recursion the next layer's integral t is +0
//     everywhere and the weights are finite, so W[j,:]·t is +0 and
//     g[j] − (+0) is g[j]: the first piece's switches skip that product.
//   - A unit that is off adds nothing (the first version added -0, the
//     identity of addition).
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
	onw, varyw := sc.on, sc.vary
	if relu {
		for base := 0; base < n; base += 64 {
			q0, q1 := p0[base:min(n, base+64)], p1[base:min(n, base+64)]
			pa, pc, na, nc := kernel.SignBits(q0, q1, a, c)
			onw[base/64], varyw[base/64] = pa&pc, pa^pc
			cand := ^(pa&pc | na&nc)
			if len(q1) < 64 {
				cand &= 1<<len(q1) - 1
			}
			for ; cand != 0; cand &= cand - 1 {
				j := bits.TrailingZeros64(cand)
				// d = 0 gives ±Inf or NaN, which fails the test.
				if t := -q0[j] / q1[j]; t > a && t < c {
					kinks[nk] = t
					nk++
				}
			}
		}
		sortKinks(kinks[1:nk])
	}
	kinks[nk] = c
	kinks = kinks[:nk+1]
	if last {
		w := next.w64[:n] // in×1
		for k := 1; k < len(kinks); k++ {
			lo, hi := kinks[k-1], kinks[k]
			if hi <= lo {
				continue // equal kinks
			}
			// The output's pre-activation is linear in this layer's
			// output: its gradient is the weight column, masked.
			span := hi - lo
			if !relu {
				for j := range g {
					g[j] += span * w[j]
				}
				continue
			}
			// The computed p0 + α·p1 is monotone in α (each rounding is)
			// and mid lies in [a, c]: a unit > 0 at both ends is on at
			// mid, one ≤ 0 at both is off; only the others are evaluated.
			mid := 0.5 * (lo + hi)
			for b, on := range onw {
				base := b * 64
				for v := varyw[b]; v != 0; v &= v - 1 {
					j := bits.TrailingZeros64(v)
					if p0[base+j]+mid*p1[base+j] > 0 {
						on |= 1 << j
					}
				}
				for ; on != 0; on &= on - 1 {
					j := base + bits.TrailingZeros64(on)
					g[j] += span * w[j]
				}
			}
		}
		return
	}
	mask := sc.mask
	clear(mask)
	copy(sc.q0, next.b64)
	clear(sc.q1)
	clear(sc.t)
	no := next.out
	t, q0, q1 := sc.t[:no], sc.q0[:no], sc.q1[:no]
	first := true
	for k := 1; k < len(kinks); k++ {
		lo, hi := kinks[k-1], kinks[k]
		if hi <= lo {
			continue // equal kinks
		}
		mid := 0.5 * (lo + hi)
		// The next layer's pre-activation b + Σ_j mask_j·(p0_j + α·p1_j)·W[j,:],
		// updated by the units whose mask changed since the previous piece,
		// in increasing order. Unit j's gradient integral is W[j,:]·(the
		// next layer's integral over the pieces where j is on): t runs over
		// all pieces, and a unit subtracts W[j,:]·t when it turns on and adds
		// it when it turns off.
		for b := range mask {
			base := b * 64
			var on uint64
			if relu {
				on = kernel.PosBits(p0[base:], p1[base:min(n, base+64)], mid)
			} else {
				on = ^uint64(0) >> (64 - (min(n, base+64) - base))
			}
			flips := on ^ mask[b]
			mask[b] = on
			for ; flips != 0; flips &= flips - 1 {
				j := base + bits.TrailingZeros64(flips)
				w := next.w64[j*no:][:no]
				c0, c1 := p0[j], p1[j]
				if !first { // t is +0 before the first piece's recursion
					var wt float64
					for o, v := range t {
						wt += w[o] * v
					}
					if on>>(j-base)&1 != 0 {
						g[j] -= wt
					} else {
						c0, c1 = -c0, -c1
						g[j] += wt
					}
				}
				// Vector stores: the leaf's vector loads of q0, q1 then
				// forward from them (from scalar stores they would stall).
				kernel.Axpy64(q0, w, c0)
				kernel.Axpy64(q1, w, c1)
			}
		}
		first = false
		s.pwlGrad(li+1, lo, hi, sc.q0, sc.q1, sc.t)
	}
	// g[j] += W[j,:]·t for the units on at the end: every dot product
	// summed in order (wDot), all of them at once.
	sum := sc.sum[:n]
	wDot(sum, next.w64T, t)
	for b, on := range mask {
		for ; on != 0; on &= on - 1 {
			j := b*64 + bits.TrailingZeros64(on)
			g[j] += sum[j]
		}
	}
}

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
