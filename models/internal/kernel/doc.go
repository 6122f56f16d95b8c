// Package kernel holds the fp32 inner loops used by models: a GEMM with a
// fused bias-and-activation epilogue over weights packed once at load.
//
// # Concepts
//
// A layer's weights W (K×N, row-major) are packed once by [Pack] into column
// panels of [PanelWidth] columns; inside a panel the K rows are contiguous
// (K-major), so a micro-kernel streams one panel row of PanelWidth values per
// step of k. The last panel is zero-padded to the full width. [Gemm] computes
// C = act(A·W + b) for a row-major A (M×K) with leading dimension lda into a
// row-major C with leading dimension ldc.
//
// Every exported function has a pure-Go implementation (gemmGeneric, in
// gemm_generic.go) compiled on all platforms and used as the reference by the
// tests. Assembly variants (AVX-512, AVX2+FMA) arrive in a later issue,
// following the layout: gemm.go (API, reference loop, size thresholds),
// gemm_generic.go, gemm_amd64.go (dispatch, build tag amd64 && gc && !noasm),
// gemm_amd64.s (generated from _asm/gen.go), gemm_other.go.
//
// # Concurrency
//
// The functions hold no state and never start goroutines: concurrent calls
// are safe as long as they write disjoint outputs. A [Packed] is immutable
// after [Pack] and may be shared by any number of goroutines.
//
// # Errors
//
// Shape or length misuse is a programmer error and panics, as in gonum's
// BLAS; no function returns an error.
//
// # Metrics
//
// None.
package kernel
