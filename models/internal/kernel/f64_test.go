package kernel

import (
	"math"
	"math/rand/v2"
	"testing"
)

// f64Value draws a value for the float64 primitives' tests: ordinary
// values, and often the ones where a rounding or a sign could differ
// (±0, subnormals, ±Inf, NaN, values that cancel).
func f64Value(r *rand.Rand) float64 {
	switch r.IntN(12) {
	case 0:
		return 0
	case 1:
		return math.Copysign(0, -1)
	case 2:
		return math.SmallestNonzeroFloat64 * float64(r.IntN(5)-2)
	case 3:
		return math.Inf(1 - 2*r.IntN(2))
	case 4:
		return math.NaN()
	case 5:
		return float64(r.IntN(5) - 2) // exact small integers: cancellations
	}
	return r.NormFloat64() * math.Pow(10, float64(r.IntN(7)-3))
}

// TestF64MatchesGeneric checks the AVX2 forms of Axpy64, MulAddRows64, SignBits and PosBits
// against their pure-Go forms bit for bit, over every length up to 70 (the
// vector bodies and the tails). Without AVX2 (or under -tags noasm) both
// sides are the pure-Go form and the test checks the tail stitching only.
func TestF64MatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for trial := range 3000 {
		n := trial % 71
		x, y, d := make([]float64, n), make([]float64, n), make([]float64, n)
		for i := range n {
			x[i], y[i], d[i] = f64Value(r), f64Value(r), f64Value(r)
		}
		a, c := f64Value(r), f64Value(r)
		if trial%3 == 0 {
			a, c = r.Float64(), r.Float64() // the interval ends of the stream's calls
		}
		got := append(make([]float64, 0, n+8), y...)
		guard := got[n : n+8]
		for i := range guard {
			guard[i] = float64(1000 + i)
		}
		Axpy64(got, x, a)
		for i, v := range guard {
			if v != float64(1000+i) {
				t.Fatalf("trial %d n %d: Axpy64 wrote %v past y's end (+%d)", trial, n, v, i)
			}
		}
		want := append([]float64(nil), y...)
		axpy64Generic(want, x, a)
		for i := range want {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
				t.Fatalf("trial %d n %d: Axpy64 y[%d] = %v (%#x), generic %v (%#x)", trial, n, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
			}
		}
		rows := r.IntN(9)
		w := make([]float64, rows*n)
		for i := range w {
			w[i] = f64Value(r)
		}
		z := make([]float64, rows)
		for i := range z {
			z[i] = f64Value(r)
		}
		// u is followed by guard values that no call may write.
		guarded := make([]float64, n+8)
		for i := range guarded {
			guarded[i] = float64(1000 + i)
		}
		got = append(guarded[:0], y...)
		MulAddRows64(got, w, z)
		for i, v := range guarded[n:] {
			if v != float64(1000+n+i) {
				t.Fatalf("trial %d n %d rows %d: MulAddRows64 wrote %v past u's end (+%d)", trial, n, rows, v, i)
			}
		}
		want = append(want[:0], y...)
		for i, v := range z { // the definition
			if v == 0 {
				continue
			}
			for j := range want {
				want[j] += float64(v * w[i*n+j])
			}
		}
		for i := range want {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
				t.Fatalf("trial %d n %d rows %d: MulAddRows64 u[%d] = %v (%#x), plain loops %v (%#x)", trial, n, rows, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
			}
		}
		pa, pc, na, nc := SignBits(x, d, a, c)
		m := min(n, 64)
		qa, qc, ma, mc := signBitsGeneric(x[:m], d[:m], a, c)
		if pa != qa || pc != qc || na != ma || nc != mc {
			t.Fatalf("trial %d n %d: SignBits = %#x %#x %#x %#x, generic %#x %#x %#x %#x", trial, n, pa, pc, na, nc, qa, qc, ma, mc)
		}
		if p := PosBits(x, d, a); p != qa {
			t.Fatalf("trial %d n %d: PosBits = %#x, SignBits's pa %#x", trial, n, p, qa)
		}
		for j := range m { // the generic form against its definition
			fa, fc := x[j]+float64(a*d[j]), x[j]+float64(c*d[j])
			if pa>>j&1 != b2u(fa > 0) || pc>>j&1 != b2u(fc > 0) || na>>j&1 != b2u(fa < 0) || nc>>j&1 != b2u(fc < 0) {
				t.Fatalf("trial %d unit %d: bits %d%d%d%d for %v, %v", trial, j, pa>>j&1, pc>>j&1, na>>j&1, nc>>j&1, fa, fc)
			}
		}
	}
}
