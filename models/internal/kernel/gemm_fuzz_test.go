package kernel

import (
	"math"
	"math/rand/v2"
	"testing"
)

// FuzzGemm is the differential fuzzer of the assembly paths against
// gemmGeneric: the input picks the shape (M < 70, K < 80, N < 150), padding
// of the leading dimensions, unaligned offsets of A and C, the activation,
// accumulation, bias and the magnitude of the data, and seeds the values.
// Every path this CPU runs must match the generic result within a bound
// scaled by Σ|a·w| (summation order and FMA differ) and leave every element
// of C outside the m×n block untouched.
func FuzzGemm(f *testing.F) {
	f.Add(uint8(12), uint8(64), uint8(128), uint8(0), uint8(0), uint64(1))
	f.Add(uint8(1), uint8(64), uint8(128), uint8(0x0b), uint8(7), uint64(2))
	f.Add(uint8(13), uint8(17), uint8(33), uint8(0x36), uint8(11), uint64(3))
	f.Add(uint8(69), uint8(79), uint8(149), uint8(0xff), uint8(255), uint64(4))
	f.Add(uint8(0), uint8(5), uint8(5), uint8(0x0e), uint8(1), uint64(5))
	if len(availablePaths()) == 1 {
		f.Skip("only the generic path on this CPU or build: nothing to compare it with")
	}
	f.Fuzz(func(t *testing.T, mb, kb, nb, opts, pad uint8, seed uint64) {
		m, k, n := int(mb%70), int(kb%80), int(nb%150)
		act := Activation(opts % 4)
		accumulate := opts&4 != 0
		withBias := opts&8 != 0
		scale := math.Ldexp(1, int(opts>>4)-8) // 2^-8 .. 2^7
		lda, ldc := max(k, 1)+int(pad%5), max(n, 1)+int(pad/5%7)
		aoff, coff := int(pad%16), int(pad/16)

		r := rand.New(rand.NewPCG(seed, uint64(opts)))
		gen := func(size int) []float32 {
			s := make([]float32, size)
			for i := range s {
				s[i] = float32(r.NormFloat64() * scale)
			}
			return s
		}
		a := gen(aoff + max(m*lda, 1))
		wRaw := gen(k * n)
		var bias []float32
		if withBias {
			bias = gen(n)
		}
		c0 := gen(coff + m*ldc + 8)
		w := Pack(k, n, wRaw)

		want := append([]float32(nil), c0...)
		gemmGeneric(m, k, n, a[aoff:], lda, w, bias, act, want[coff:], ldc, accumulate)

		for _, p := range availablePaths() {
			if p == "generic" {
				continue
			}
			forcePath(t, p)
			got := append([]float32(nil), c0...)
			Gemm(m, k, n, a[aoff:], lda, w, bias, act, got[coff:], ldc, accumulate)
			for idx := range got {
				i, j := (idx-coff)/ldc, (idx-coff)%ldc
				if idx < coff || i >= m || j >= n {
					if math.Float32bits(got[idx]) != math.Float32bits(c0[idx]) {
						t.Fatalf("%s m=%d k=%d n=%d: c[%d] outside the block changed: %v -> %v", p, m, k, n, idx, c0[idx], got[idx])
					}
					continue
				}
				// |error| <= eps·(|C0| + Σ|a·w| + |bias|) + the activation's error.
				bound := 0.0
				if accumulate {
					bound += math.Abs(float64(c0[idx]))
				}
				for l := 0; l < k; l++ {
					bound += math.Abs(float64(a[aoff+i*lda+l]) * float64(wRaw[l*n+j]))
				}
				if bias != nil {
					bound += math.Abs(float64(bias[j]))
				}
				tol := 4e-7*float64(k+2)*bound + 2*actMaxErr
				if d := math.Abs(float64(got[idx]) - float64(want[idx])); !(d <= tol) {
					t.Fatalf("%s m=%d k=%d n=%d act=%v acc=%v bias=%v: C[%d][%d] = %v, generic %v (tol %.3g)",
						p, m, k, n, act, accumulate, withBias, i, j, got[idx], want[idx], tol)
				}
			}
		}
	})
}
