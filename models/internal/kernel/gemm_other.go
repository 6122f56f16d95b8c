//go:build !amd64 || !gc || noasm

package kernel

func path() string { return "generic" }

// fmaPeak has no meaning for the pure-Go path: it does nothing.
func fmaPeak(int) int { return 0 }

// gemm runs the pure-Go kernel on platforms without assembly kernels and
// under the noasm build tag.
func gemm(m, k, n int, a []float32, lda int, w *Packed, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	gemmGeneric(m, k, n, a, lda, w, bias, act, c, ldc, accumulate)
}

func activate(act Activation, m, n int, c []float32, ldc int) { epilogue(m, n, nil, act, c, ldc) }
