package sinks

import (
	"math"
	"strconv"
)

// pow10f holds 10^d for the decimal places appendFloat32 tries; every
// product of a float32 (24-bit significand) and one of them (5^12 < 2^28)
// has a significand of at most 52 bits, so it is exact in float64.
var pow10f = [...]float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12}

// appendFloat32 appends f as appendFloat(dst, float64(f), 32) does — the
// shortest decimal that parses back to f, in strconv's 'g' form — with a
// fast path for the common audit-record feature value: a non-integer with
// 1e-4 <= |f| < 1e6 (where 'g' prints plain decimals) and at most 12
// decimal places, as long as f·10^d stays below 2^52. It tries d = 1, 2, … places: n = round(f·10^d) is the
// closest d-place decimal, and it is the shortest round-trip decimal at the
// first d where n/10^d lies in f's rounding interval (ties to even). The
// test is exact: f·10^d and n − f·10^d are exact in float64, and the
// interval's half-width times 10^d is a power of two times 10^d. Everything
// else (integers, other ranges, exact .5 ties of f·10^d, more places) goes
// to appendFloat. TestAppendFloat32 compares both on every float32 when
// STREAMSCORE_EXHAUSTIVE is set, and on millions of values otherwise.
func appendFloat32(dst []byte, f float32) []byte {
	a := f
	if a < 0 {
		a = -a
	}
	if !(a >= 1e-4 && a < 1e6) || a == float32(int32(a)) { // NaN fails the first test
		return appendFloat(dst, float64(f), 32)
	}
	bits := math.Float32bits(a)
	mant := bits & (1<<23 - 1)
	// Half the gap to the next float32 above, and below (half as much at a
	// power of two, where the gap below is half the one above).
	// 2^(e−24) for a's unbiased exponent e, built from its bits.
	halfUp := math.Float64frombits(uint64(int(bits>>23)-127-24+1023) << 52)
	halfDown := halfUp
	if mant == 0 {
		halfDown /= 2
	}
	x := float64(a)
	for d := 1; d < len(pow10f); d++ {
		p := x * pow10f[d]
		if p >= 1<<52 {
			break
		}
		// Round half up (p + 0.5 is exact: p < 2^52 here, or an integer).
		n := math.Floor(p + 0.5)
		r := n - p
		if r == 0.5 {
			break // a tie between two d-place decimals: let strconv choose
		}
		lim := halfUp * pow10f[d]
		if r < 0 {
			lim = halfDown * pow10f[d]
			r = -r
		}
		if r < lim || (r == lim && mant&1 == 0) {
			return appendFixed(dst, f < 0, uint64(n), d)
		}
	}
	return appendFloat(dst, float64(f), 32)
}

// appendFixed appends [-]n/10^d with exactly d decimal places (d >= 1).
func appendFixed(dst []byte, neg bool, n uint64, d int) []byte {
	if neg {
		dst = append(dst, '-')
	}
	p := uint64(pow10f[d])
	dst = strconv.AppendUint(dst, n/p, 10)
	dst = append(dst, '.')
	frac := n % p
	var buf [len(pow10f)]byte
	for i := d - 1; i >= 0; i-- {
		buf[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(dst, buf[:d]...)
}
