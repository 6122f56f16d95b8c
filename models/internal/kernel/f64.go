package kernel

// Float64 primitives of the models' exact integrated gradients
// (models/reasons_exact.go). Each has one meaning, written out in its pure-Go
// form below (the reference, and the path under -tags noasm and off amd64);
// the AVX2 forms compute the same values bit for bit: every product and sum
// is rounded on its own as the Go statements round them (VMULPD then VADDPD,
// never a fused multiply-add, which would round once), and lanes are
// independent outputs, so vectorising changes no order of additions
// (TestF64MatchesGeneric).

// Axpy64 adds a·x[i] to y[i] for every i < len(x): y[i] += a * x[i].
// y must be at least as long as x.
func Axpy64(y, x []float64, a float64) {
	y = y[:len(x)]
	n := 0
	if useF64AVX2 && len(x) >= 4 {
		n = len(x) &^ 3
		raceRead64(x[:n])
		raceWrite64(y[:n])
		axpy64AVX2(&y[0], &x[0], n, a)
		if n == len(x) {
			return
		}
	}
	axpy64Generic(y[n:], x[n:], a)
}

func axpy64Generic(y, x []float64, a float64) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// MulAddRows64 adds z·W to u: for each row i of W (len(z) × len(u),
// row-major) in increasing order, skipping the rows whose z[i] is 0,
// u[j] += z[i] * W[i,j] — the plain loops' sums, bit for bit, with u held in
// registers across the rows.
func MulAddRows64(u, w, z []float64) {
	n, rows := len(u), len(z)
	w = w[:rows*n]
	if useF64AVX2 && n > 0 && rows > 0 {
		raceRead64(w)
		raceRead64(z)
		raceWrite64(u)
		mulAddRowsAVX2(&u[0], n, &w[0], n, &z[0], rows)
		return
	}
	mulAddRowsGeneric(u, w, n, z)
}

// mulAddRowsGeneric is MulAddRows64 for the columns u of a W whose rows
// start ld apart at w.
func mulAddRowsGeneric(u, w []float64, ld int, z []float64) {
	for i, v := range z {
		if v == 0 {
			continue
		}
		wi := w[i*ld:][:len(u)]
		for j, x := range wi {
			u[j] += v * x
		}
	}
}

// SignBits returns, for unit j < min(len(d), 64), bit j set in pa when
// x[j] + a·d[j] > 0, in pc when x[j] + c·d[j] > 0, in na when
// x[j] + a·d[j] < 0 and in nc when x[j] + c·d[j] < 0 (each value computed
// as the Go expression rounds it: the product, then the sum). x must be at
// least as long as d; units from 64 on are ignored.
func SignBits(x, d []float64, a, c float64) (pa, pc, na, nc uint64) {
	if len(d) > 64 {
		d = d[:64]
	}
	x = x[:len(d)]
	n := 0
	if useF64AVX2 && len(d) >= 4 {
		n = len(d) &^ 3
		raceRead64(x[:n])
		raceRead64(d[:n])
		pa, pc, na, nc = signBitsAVX2(&x[0], &d[0], n, a, c)
		if n == len(d) {
			return pa, pc, na, nc
		}
	}
	qa, qc, ma, mc := signBitsGeneric(x[n:], d[n:], a, c)
	return pa | qa<<n, pc | qc<<n, na | ma<<n, nc | mc<<n
}

func signBitsGeneric(x, d []float64, a, c float64) (pa, pc, na, nc uint64) {
	x = x[:len(d)]
	for j := len(d) - 1; j >= 0; j-- {
		fa, fc := x[j]+a*d[j], x[j]+c*d[j]
		pa = pa<<1 | b2u(fa > 0)
		pc = pc<<1 | b2u(fc > 0)
		na = na<<1 | b2u(fa < 0)
		nc = nc<<1 | b2u(fc < 0)
	}
	return pa, pc, na, nc
}

// PosBits returns, for unit j < min(len(d), 64), bit j set when
// x[j] + m·d[j] > 0 (the product, then the sum, each rounded): SignBits's pa
// at one point. x must be at least as long as d.
func PosBits(x, d []float64, m float64) (p uint64) {
	if len(d) > 64 {
		d = d[:64]
	}
	x = x[:len(d)]
	n := 0
	if useF64AVX2 && len(d) >= 4 {
		n = len(d) &^ 3
		raceRead64(x[:n])
		raceRead64(d[:n])
		p = posBitsAVX2(&x[0], &d[0], n, m)
		if n == len(d) {
			return p
		}
	}
	return p | posBitsGeneric(x[n:], d[n:], m)<<n
}

func posBitsGeneric(x, d []float64, m float64) (p uint64) {
	x = x[:len(d)]
	for j := len(d) - 1; j >= 0; j-- {
		p = p<<1 | b2u(x[j]+m*d[j] > 0)
	}
	return p
}

// b2u is 1 for true and 0 for false (a SETcc, not a branch).
func b2u(b bool) uint64 {
	var u uint64
	if b {
		u = 1
	}
	return u
}
