package kernel

import (
	"fmt"
	"unsafe"
)

//go:generate go run -C _asm . -out ../gemm_amd64.s -stubs ../gemm_stub_amd64.go -pkg kernel -tiles ../gemm_tiles_amd64.go

// PanelWidth is the number of columns of W in one packed panel: one 512-bit
// vector of float32 (or two 256-bit ones) per step of k. The AVX-512 tiles
// read several panels at once (two for the 12×32 tile, eight for 1×128)
// rather than using wider panels, so one layout serves every path and every
// tile width.
const PanelWidth = 16

// rowBlock is the number of rows of A the generic micro-kernel processes
// together (a rowBlock×PanelWidth block of C per panel).
const rowBlock = 4

// Activation is the element-wise function fused into the GEMM epilogue.
type Activation uint8

// Activations supported by [Gemm].
const (
	Identity Activation = iota // f(x) = x
	ReLU                       // f(x) = max(x, 0)
	Sigmoid                    // f(x) = 1 / (1 + e^-x); |error| <= 1e-6 on the SIMD paths
	Tanh                       // f(x) = tanh(x); |error| <= 1e-6 on the SIMD paths
)

// String returns the lower-case name used in model files: "identity",
// "relu", "sigmoid", "tanh".
func (a Activation) String() string {
	switch a {
	case Identity:
		return "identity"
	case ReLU:
		return "relu"
	case Sigmoid:
		return "sigmoid"
	case Tanh:
		return "tanh"
	}
	return fmt.Sprintf("Activation(%d)", uint8(a))
}

// Packed is a K×N weight matrix stored as ceil(N/PanelWidth) column panels.
// Panel p holds columns [p*PanelWidth, (p+1)*PanelWidth) as K consecutive
// groups of PanelWidth values: element (k, n) is at
//
//	data[(n/PanelWidth)*K*PanelWidth + k*PanelWidth + n%PanelWidth]
//
// Columns past N in the last panel are zero. A Packed is immutable.
type Packed struct {
	k, n int
	data []float32
}

// K returns the number of rows (inputs) of the packed matrix.
func (p *Packed) K() int { return p.k }

// N returns the number of columns (outputs) of the packed matrix.
func (p *Packed) N() int { return p.n }

// Pack packs the row-major K×N matrix w (len(w) >= k*n) into panels. It is
// called once per layer at model load, never on the scoring path.
// It panics if k or n is negative or w is too short.
func Pack(k, n int, w []float32) *Packed {
	if k < 0 || n < 0 {
		panic("kernel: negative dimension")
	}
	if len(w) < k*n {
		panic("kernel: len(w) < k*n")
	}
	panels := (n + PanelWidth - 1) / PanelWidth
	p := &Packed{k: k, n: n, data: alignedFloats(panels * k * PanelWidth)}
	for pi := 0; pi < panels; pi++ {
		j0 := pi * PanelWidth
		nw := min(PanelWidth, n-j0)
		dst := p.data[pi*k*PanelWidth:]
		for kk := 0; kk < k; kk++ {
			copy(dst[kk*PanelWidth:kk*PanelWidth+nw], w[kk*n+j0:kk*n+j0+nw])
		}
	}
	return p
}

// alignedFloats returns n zeroed float32s starting on a 64-byte boundary, so
// that every panel row is one aligned 512-bit load (a load that splits two
// cache lines costs twice).
func alignedFloats(n int) []float32 {
	if n == 0 {
		return nil
	}
	buf := make([]float32, n+15)
	off := int((-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & 63) / 4)
	return buf[off : off+n : off+n]
}

// Path returns the GEMM implementation chosen at start-up for this CPU and
// build: "avx512" (AVX-512F+DQ), "avx2" (AVX2+FMA) or "generic" (pure Go: other
// CPUs, other architectures and the noasm build tag). It never changes after
// init, so callers may log it once and export it as a metric.
func Path() string { return path() }

// FMAPeak runs iters iterations of the active path's loop of independent,
// register-only fused multiply-adds (24 Z registers for "avx512", 12 Y for
// "avx2": the main tile's accumulators, without its loads, epilogue or
// loop over K) and returns the floating-point operations it did. Timed, it
// gives the fp32 ceiling of this core in the same run as a GEMM benchmark.
// The "generic" path has no such loop: it returns 0 at once.
func FMAPeak(iters int) (flops int) { return fmaPeak(iters) }

// Gemm computes, for i < m and j < n,
//
//	C[i*ldc+j] = act(C0 + Σ_k A[i*lda+k]·W[k][j] + bias[j])
//
// where C0 is the previous value of C[i*ldc+j] if accumulate is true and 0
// otherwise (accumulation happens before the activation), and bias may be
// nil (no bias). w must have been packed with the same k and n. Elements of
// C outside the m×n block (j >= n within a row stride) are not touched.
//
// The reference loop, which the kernels must match up to rounding (FMA and
// summation order may change the last bits):
//
//	for i := 0; i < m; i++ {
//		for j := 0; j < n; j++ {
//			var s float32
//			if accumulate {
//				s = c[i*ldc+j]
//			}
//			for l := 0; l < k; l++ {
//				s += a[i*lda+l] * W[l*n+j]
//			}
//			if bias != nil {
//				s += bias[j]
//			}
//			c[i*ldc+j] = act(s)
//		}
//	}
//
// On the SIMD paths sigmoid and tanh are within 1e-6 (absolute) of the
// exact function; see the package doc.
//
// Gemm does not allocate and starts no goroutine. It panics on negative
// sizes, a leading dimension smaller than the row, slices too short for the
// shapes, or a Packed of another shape.
func Gemm(m, k, n int, a []float32, lda int, w *Packed, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	if m < 0 || k < 0 || n < 0 {
		panic("kernel: negative dimension")
	}
	if w == nil || w.k != k || w.n != n {
		panic("kernel: packed weights do not match k×n")
	}
	if act > Tanh {
		panic("kernel: unknown activation")
	}
	if bias != nil && len(bias) < n {
		panic("kernel: len(bias) < n")
	}
	if m == 0 || n == 0 {
		return
	}
	if lda < max(k, 1) {
		panic("kernel: lda < k")
	}
	if ldc < n {
		panic("kernel: ldc < n")
	}
	if len(a) < (m-1)*lda+k {
		panic("kernel: a too short")
	}
	if len(c) < (m-1)*ldc+n {
		panic("kernel: c too short")
	}
	gemm(m, k, n, a, lda, w, bias, act, c, ldc, accumulate)
}

// Activate applies act in place to the m×n block of c (leading dimension
// ldc), with the same vectorised sigmoid and tanh as Gemm's epilogue (for
// element-wise steps between GEMMs, e.g. a recurrent cell's candidate
// state). It does not allocate; it panics on negative sizes, an unknown
// activation, ldc < n or a short c.
func Activate(act Activation, m, n int, c []float32, ldc int) {
	if m < 0 || n < 0 {
		panic("kernel: negative dimension")
	}
	if act > Tanh {
		panic("kernel: unknown activation")
	}
	if m == 0 || n == 0 || act == Identity {
		return
	}
	if ldc < n {
		panic("kernel: ldc < n")
	}
	if len(c) < (m-1)*ldc+n {
		panic("kernel: c too short")
	}
	activate(act, m, n, c, ldc)
}
