package models

import "github.com/streamscore/streamscore/models/internal/kernel"

// Activation is the element-wise function fused into [Dense.Gemm].
type Activation = kernel.Activation

// Activations for [Dense.Gemm].
const (
	ActIdentity = kernel.Identity // f(x) = x
	ActReLU     = kernel.ReLU     // f(x) = max(x, 0); NaN stays NaN
	ActSigmoid  = kernel.Sigmoid  // f(x) = 1/(1+e^-x), |error| <= 1e-6
	ActTanh     = kernel.Tanh     // f(x) = tanh(x), |error| <= 1e-6
)

// Dense is a K×N weight matrix packed once into the column panels the GEMM
// kernels read. It is immutable and safe for concurrent use. Layers of a
// [Model] are packed the same way at load; Dense exposes the kernel to code
// outside this module's internals, such as the benchmarks.
type Dense struct{ p *kernel.Packed }

// PackDense packs the row-major k×n matrix w (len(w) >= k·n). It panics on
// negative sizes or a short w. Packing is O(k·n) and allocates: do it at
// load, never per batch.
func PackDense(k, n int, w []float32) *Dense { return &Dense{p: kernel.Pack(k, n, w)} }

// K returns the number of rows (inputs) of d.
func (d *Dense) K() int { return d.p.K() }

// N returns the number of columns (outputs) of d.
func (d *Dense) N() int { return d.p.N() }

// Gemm computes C = act(C0 + A·W + bias) for the row-major m×K matrix a
// (leading dimension lda) into the m×N block of c (leading dimension ldc),
// where C0 is the previous content of c if accumulate is true and zero
// otherwise, and bias (len >= N) may be nil. It does not allocate and starts
// no goroutine; it panics on shape or length misuse. See the kernel's doc for
// the reference loop and the numerical contract.
func (d *Dense) Gemm(m int, a []float32, lda int, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	kernel.Gemm(m, d.p.K(), d.p.N(), a, lda, d.p, bias, act, c, ldc, accumulate)
}

// KernelPath names the GEMM implementation chosen at start-up for this CPU
// and build: "avx512", "avx2" or "generic" (other CPUs and -tags noasm). It
// is fixed after init; log it once and export it as a metric.
func KernelPath() string { return kernel.Path() }

// KernelFMAPeak runs iters iterations of the active kernel path's loop of
// register-only fused multiply-adds and returns the floating-point
// operations done (0 on the "generic" path, which has no such loop). Timed
// beside a GEMM, it is the ceiling the GEMM is measured against (bench's
// BenchmarkGEMM/FMA-peak); scoring never calls it.
func KernelFMAPeak(iters int) (flops int) { return kernel.FMAPeak(iters) }
