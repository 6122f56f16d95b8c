//go:build amd64 && gc && !noasm

package kernel

// useF64AVX2 selects the AVX2 forms of the float64 primitives (f64.go); the
// tests flip it to compare them with the pure-Go forms.
var useF64AVX2 = useAVX2

// axpy64AVX2 is axpy64Generic over y[:n], x[:n], n a multiple of 4.
//
//go:noescape
func axpy64AVX2(y, x *float64, n int, a float64)

// signBitsAVX2 is signBitsGeneric over x[:n], d[:n], n a multiple of 4
// from 4 to 64.
//
//go:noescape
func signBitsAVX2(x, d *float64, n int, a, c float64) (pa, pc, na, nc uint64)

// mulAddRowsAVX2 is mulAddRowsGeneric over u[:n], rows of W ld apart; the
// last n%4 columns are read and written under a lane mask (VMASKMOVPD), never
// past their end.
//
//go:noescape
func mulAddRowsAVX2(u *float64, n int, w *float64, ld int, z *float64, rows int)

// posBitsAVX2 is posBitsGeneric over x[:n], d[:n], n a multiple of 4 from 4
// to 64.
//
//go:noescape
func posBitsAVX2(x, d *float64, n int, m float64) (p uint64)
