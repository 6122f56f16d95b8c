package output

import "math"

// The encoder of feature values before the two-step search (kept as the
// reference of BenchmarkAppendFloat32 and BenchmarkFloatsRealistic): the
// linear scan over the places d = 1, 2, ...

func appendFloat32Scan(dst []byte, f float32) []byte {
	a := f
	if a < 0 {
		a = -a
	}
	if !(a >= 1e-4 && a < 1e6) || a == float32(int32(a)) { // NaN fails the first test
		return appendFloatStrconv(dst, float64(f), 32)
	}
	bits := math.Float32bits(a)
	mant := bits & (1<<23 - 1)
	if mant == 0 {
		// A power of two: the gap below is half the gap above, and the
		// closest d-place decimal may lie outside on the narrow side while
		// another lies inside: rare, left to strconv.
		return appendFloatStrconv(dst, float64(f), 32)
	}
	// Half the gap between a and its neighbours, 2^(e−24) for a's unbiased
	// exponent e, built from its bits.
	half := math.Float64frombits(uint64(int(bits>>23)-127-24+1023) << 52)
	x, even := float64(a), mant&1 == 0
	// fits(d): the closest d-place decimal to a parses back to a. It is
	// monotone in d (10·n fits at d+1 when n fits at d); d goes up to the
	// most places for which x·10^d stays below 2^52.
	hi := len(pow10f) - 1
	for x*pow10f[hi] >= 1<<52 {
		hi--
	}
	// The fewest places by a linear scan from 1, not a bisection: the
	// steps are independent of each other, so the processor runs them
	// ahead in parallel, and the loop's branch mispredicts once (at the
	// exit), where a bisection's data-dependent branches mispredict
	// often (cachegrind --branch-sim on BenchmarkAppendFloat32's mix:
	// 390 instructions and 4.6 simulated mispredictions per value
	// against 431 and 5.6 for the bisection).
	for d := 1; d <= hi; d++ {
		n, st := fitsAtScan(x, half, even, d)
		switch st {
		case fitOKScan:
			return appendFixedScan(dst, f < 0, uint64(n), d)
		case fitTieScan:
			return appendFloatStrconv(dst, float64(f), 32)
		}
	}
	return appendFloatStrconv(dst, float64(f), 32)
}

const (
	fitNoScan  = iota // round(x·10^d)/10^d does not parse back to x
	fitOKScan         // it does
	fitTieScan        // x·10^d is halfway between two integers
)

// fitsAt reports whether n = round(x·10^d) makes a d-place decimal in x's
// rounding interval (half-width half, ties to even): exact arithmetic,
// since x·10^d and n − x·10^d are exact in float64 and half·10^d is a power
// of two times 10^d.
func fitsAtScan(x, half float64, even bool, d int) (float64, int) {
	p := x * pow10f[d]
	// Round half up: p + 0.5 is exact (p < 2^52) and positive, so the
	// conversion's truncation is its floor (one instruction, where
	// math.Floor is a call on GOAMD64=v1).
	n := float64(int64(p + 0.5))
	r := n - p
	if r == 0.5 {
		return n, fitTieScan
	}
	if r < 0 {
		r = -r
	}
	lim := half * pow10f[d]
	if r < lim || (r == lim && even) {
		return n, fitOKScan
	}
	return n, fitNoScan
}

// appendFixed appends [-]n/10^d with exactly d decimal places (d >= 1).
func appendFixedScan(dst []byte, neg bool, n uint64, d int) []byte {
	var buf [24]byte
	i := len(buf)
	for k := 0; k < d; k++ {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	buf[i] = '.'
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return append(dst, buf[i:]...)
}
