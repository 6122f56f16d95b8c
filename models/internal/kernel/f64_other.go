//go:build !amd64 || !gc || noasm

package kernel

// useF64AVX2 is always false without the assembly kernels.
var useF64AVX2 = false

func axpy64AVX2(y, x *float64, n int, a float64) {
	panic("kernel: no AVX2 float64 kernels in this build")
}

func signBitsAVX2(x, d *float64, n int, a, c float64) (pa, pc, na, nc uint64) {
	panic("kernel: no AVX2 float64 kernels in this build")
}

func mulAddRowsAVX2(u *float64, n int, w *float64, ld int, z *float64, rows int) {
	panic("kernel: no AVX2 float64 kernels in this build")
}

func posBitsAVX2(x, d *float64, n int, m float64) (p uint64) {
	panic("kernel: no AVX2 float64 kernels in this build")
}
