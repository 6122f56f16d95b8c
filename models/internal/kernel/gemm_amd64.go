//go:build amd64 && gc && !noasm

package kernel

// gemm is the amd64 dispatch point. The AVX-512 and AVX2+FMA micro-kernels
// (gemmAVX512, gemmAVX2, generated from _asm/gen.go) land in a later issue;
// they will be chosen here from package vars set once from
// golang.org/x/sys/cpu, with a test hook to force the generic path. Until
// then every call runs the pure-Go kernel.
func gemm(m, k, n int, a []float32, lda int, w *Packed, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	gemmGeneric(m, k, n, a, lda, w, bias, act, c, ldc, accumulate)
}
