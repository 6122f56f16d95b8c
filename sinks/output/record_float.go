package output

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
)

// pow10f holds 10^d for the decimal places appendFloat32 tries; every
// product of a float32 (24-bit significand) and one of them (5^12 < 2^28)
// has a significand of at most 52 bits, so it is exact in float64.
var pow10f = [...]float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12}

// placesFor[b] is, for the float32s of biased exponent b, the fewest
// decimal places D at which every one of them has a D-place decimal in its
// rounding interval: the interval's width 2^(b−150) times 10^D exceeds 1
// (exact: 5^D·2^(b−150+D)). 0 where no D <= 17 does (below 2^-33, outside
// the fast paths).
var placesFor = func() (t [256]int8) {
	for b := range t {
		w := math.Ldexp(1, b-150)
		for d := 1; d <= 17; d++ {
			if w*math.Pow10(d) > 1 {
				t[b] = int8(d)
				break
			}
		}
	}
	return t
}()

// pow5 holds 5^d for the places appendFloat32Exp tries: a 24-bit
// significand times 5^17 (< 2^40) stays below 2^64.
var pow5 = [...]uint64{1, 5, 25, 125, 625, 3125, 15625, 78125, 390625, 1953125, 9765625, 48828125,
	244140625, 1220703125, 6103515625, 30517578125, 152587890625, 762939453125}

// appendFloat32 appends f as appendFloatStrconv(dst, float64(f), 32)
// does: the shortest decimal that parses back to f, in strconv's 'g'
// form. It is putFloat32 into dst's spare capacity, grown first when it
// has less than floatRoom bytes, but for the small values of
// appendFloat32Exp (scores, mostly), which go there at once.
func appendFloat32(dst []byte, f float32) []byte {
	if a := math.Abs(float64(f)); a < 1e-4 && a >= 0x1p-33 { // a small score: 1.1004223e-05
		return appendFloat32Exp(dst, f)
	}
	if cap(dst)-len(dst) < floatRoom {
		dst = slices.Grow(dst, floatRoom)
	}
	l := len(dst)
	return dst[:l+putFloat32(dst[l:cap(dst)], f)]
}

// floatRoom is the room putFloat32 and putDecimal need in b: the longest
// plain decimal they write as whole words (sign, eight integer digits,
// point, sixteen fraction digits). Every other form is shorter (strconv's
// longest float32 is 15 bytes, "-1.1754942e-38").
const floatRoom = 26

// putFloat32 writes f as appendFloat32 does to b, which must have room
// for floatRoom bytes (it may write all of them as scratch), and returns
// the number of bytes of the number: putFloats of the one value.
func putFloat32(b []byte, f float32) int {
	fs := [1]float32{f}
	return putFloats(b, fs[:], nil)
}

// putFloats writes each value of fs as appendFloat32 does, preceded by
// its key blocks[i] when blocks is not nil (then len(blocks) >= len(fs)),
// to b and returns the number of bytes written. b must have room for
// len(fs)·(keyWords+floatRoom) bytes. Keys are copied as their whole
// blocks whatever their length (no branch on it; the value overwrites
// what the block copied past the key), and numbers are written as whole
// words: both write past what they keep, up to keyWords bytes beyond the
// result.
//
// The loop holds the whole fast path, so that no call (and none of the
// spills a call costs) is on it: values with 1e-4 <= |f| < 1e6, where
// 'g' prints plain decimals, but powers of two below 1, and +0. The
// others go to putFloat32Other.
//
// For d places, n = round(f·10^d) is the closest d-place decimal; the
// shortest round-trip decimal is n/10^d at the fewest places d where it
// lies in f's rounding interval (ties to even). The test fits(d) is exact:
// f·10^d and n − f·10^d are exact in float64 (24 + 28 bits), and the
// interval's half-width times 10^d is a power of two times 10^d. The
// answer takes two such tests, whatever the value: D =
// placesFor[exponent] places always fit (the interval is wider than
// 10^−D), and at D−1 places the
// interval is narrower than 10^−(D−1) (its width, a power of two times a
// power of ten, is never exactly 1), so at most one (D−1)-place decimal
// lies in it. Hence: if round(f·10^(D−1)) fits, it is the only candidate
// of D−1 places or fewer, and the shortest is it with its trailing zeros
// dropped (a value with cents: 57.2 at D−1 = 3 is 57200, two zeros); if it
// does not, the answer is round(f·10^D) (a log or a ratio). The interval
// holds no integer (f is none, and its neighbours are at least a whole
// gap away), so the decimal's integer part is f's, int32(f), and its
// fraction n − int32(f)·10^d. Both are written whole words at a time
// (an integer part below 100 from the digit-pair table, the rest by
// digits8), the fraction's trailing zeros dropped by counting its zero
// bytes: no loop, no division by a variable.
// TestAppendFloat32 compares putFloat32 (this function on one value),
// appendFloat32 and appendFloat with strconv alone on every float32 of
// the range when STREAMSCORE_EXHAUSTIVE is set, and on millions of values
// otherwise; TestAuditRecordsRealistic compares the features written
// with their keys.
func putFloats(b []byte, fs []float32, blocks []keyBlock) int {
	p := 0
	for i, f := range fs {
		if blocks != nil {
			// Three 16-byte moves (a [48]byte assignment is a call to
			// memmove), one bounds check.
			blk, dst := &blocks[i], b[p:][:keyWords]
			*(*[16]byte)(dst) = *(*[16]byte)(blk.b[:16])
			*(*[16]byte)(dst[16:]) = *(*[16]byte)(blk.b[16:32])
			*(*[16]byte)(dst[32:]) = *(*[16]byte)(blk.b[32:])
			p += blk.n
		}
		v := b[p:][:floatRoom]
		a := f
		if a < 0 {
			a = -a
		}
		fb := math.Float32bits(a)
		mant := fb & (1<<23 - 1)
		if !(a >= 1e-4 && a < 1e6) || mant == 0 { // NaN fails
			if math.Float32bits(f) == 0 { // 0, not -0
				v[0] = '0'
				p++
				continue
			}
			if mant != 0 || !(a >= 1 && a < 1e6) {
				p += putFloat32Other(v, f)
				continue
			}
			// An integral power of two (1, 2, 4, …): an integer below.
		}
		// The sign and the integer part, int32(a), first, for integers
		// and decimals alike.
		ip := uint64(int32(a))
		v[0] = '-'
		j := 0
		if f < 0 {
			j = 1
		}
		var iw uint64 // the integer's digits, first in the lowest byte
		k := 2
		if ip < 100 {
			// Counts, flags, ratios (0.x): a pair from the table.
			iw = uint64(digitPairs[2*ip]) | uint64(digitPairs[2*ip+1])<<8
			if ip < 10 {
				iw, k = iw>>8, 1
			}
		} else {
			w := digits8(ip)
			k = 8 - bits.TrailingZeros64(w)/8 // ip >= 100: not 0
			iw = (w + asciiZeros) >> (64 - 8*k)
		}
		binary.LittleEndian.PutUint64(v[j:], iw)
		j += k
		if float32(int32(a)) == a {
			p += j
			continue
		}
		// Half the gap between a and its neighbours, 2^(e−24) for a's
		// unbiased exponent e, built from its bits.
		exp := fb >> 23
		half := math.Float64frombits(uint64(int(exp)-127-24+1023) << 52)
		x, even := float64(a), mant&1 == 0
		// D−1 and D places, both at once: the two tests are independent,
		// so the processor runs them in parallel, and the choice between
		// them (a coin toss for the logs and ratios) is a conditional
		// move, not a mispredicted branch.
		d := int(placesFor[exp]) // 2..12 in the fast path's range
		p1, p0 := x*pow10f[d-1], x*pow10f[d]
		// Round half up: p + 0.5 is exact (p < 2^52) and positive, so the
		// conversion's truncation is its floor (one instruction, where
		// math.Floor is a call on GOAMD64=v1).
		n1, n0 := float64(int64(p1+0.5)), float64(int64(p0+0.5))
		r1, r0 := n1-p1, n0-p0
		if r1 == 0.5 || r0 == 0.5 { // f·10^d halfway between two decimals
			p += putFloat32Other(v, f)
			continue
		}
		r1 = math.Abs(r1)
		lim1 := half * pow10f[d-1]
		u := uint64(n0)
		if r1 < lim1 || (r1 == lim1 && even) { // D−1 places fit
			u = uint64(n1)
			d--
		}
		// The point and the fraction's d places, its trailing zeros (the
		// high zero bytes of its last word) dropped.
		frac := u - ip*pow10u[d&15]
		v[j] = '.'
		if d <= 8 {
			w := digits8(frac * pow10u[(8-d)&15])
			binary.LittleEndian.PutUint64(v[j+1:], w+asciiZeros)
			p += j + 9 - bits.LeadingZeros64(w)/8
			continue
		}
		sc := frac * pow10u[(16-d)&15]
		hi := sc / 1e8
		wh, wl := digits8(hi), digits8(sc-hi*1e8)
		binary.LittleEndian.PutUint64(v[j+1:], wh+asciiZeros)
		binary.LittleEndian.PutUint64(v[j+9:], wl+asciiZeros)
		z := bits.LeadingZeros64(wl) / 8
		if wl == 0 {
			z += bits.LeadingZeros64(wh) / 8
		}
		p += j + 17 - z
	}
	return p
}

// putFloat32Other is putFloats for the values off its fast path: values
// with 2^-33 <= |f| < 1e-4 (printed with an exponent) go to
// appendFloat32Exp, the same two tests in integers; everything else
// (−0, other ranges, powers of two below 1, exact .5 ties of f·10^d) goes to
// appendFloatStrconv.
func putFloat32Other(b []byte, f float32) int {
	if a := math.Abs(float64(f)); a < 1e-4 && a >= 0x1p-33 { // a small score: 1.1004223e-05
		return len(appendFloat32Exp(b[:0], f))
	}
	return len(appendFloatStrconv(b[:0], float64(f), 32))
}

// pow10u holds 10^d for d < 16 (the masks in the indices, d&15, prove
// them in range to the compiler; d is 0..15 there).
var pow10u = [16]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// asciiZeros is '0' in each byte of a word.
const asciiZeros = 0x3030303030303030

// digits8 returns the eight decimal digits of n < 10^8, with leading
// zeros, one a byte, as the values 0 to 9: the most significant in the
// lowest byte, so that the word stored little-endian (plus asciiZeros) is
// the digits in reading order. No loop and no division: n/10^4 by the
// compiler's multiplication, then both halves split into pairs and the
// pairs into digits at once, one lane each (x/100 = x·10486 >> 20 for x <
// 10^4, x/10 = x·103 >> 10 for x < 100; the products stay inside their
// lanes). TestDigits8 checks every n < 10^8.
func digits8(n uint64) uint64 {
	hi := n / 10000
	v := hi | (n-hi*10000)<<32
	q := (v * 10486 >> 20) & 0x0000007f_0000007f
	v = q | (v-q*100)<<16
	q = (v * 103 >> 10) & 0x000f000f_000f000f
	return q | (v-q*10)<<8
}

// putInt writes [-]n (n < 10^8) to b (at least 9 bytes, all of which
// it may write) and returns its length.
func putInt(b []byte, neg bool, n uint64) int {
	b[0] = '-'
	i := 0
	if neg {
		i = 1
	}
	w := digits8(n)
	// The leading zeros are the low zero bytes; at least one digit stays.
	k := 8 - bits.TrailingZeros64(w|1<<56)/8
	binary.LittleEndian.PutUint64(b[i:], (w+asciiZeros)>>(64-8*k))
	return i + k
}

// putDecimal writes [-]ip.frac to b, where frac < 10^d (d from 1 to 16)
// is the fraction's d places and ip < 10^8, without the fraction's
// trailing zeros, and returns its length; frac is not 0. It writes whole
// words: b must have floatRoom bytes, all of which it may write.
// TestPutDecimal checks it against strconv.
func putDecimal(b []byte, neg bool, ip, frac uint64, d int) int {
	b = b[:floatRoom]
	i := putInt(b, neg, ip)
	b[i] = '.'
	if d <= 8 {
		// One word: the fraction scaled to eight places.
		w := digits8(frac * pow10u[(8-d)&15])
		binary.LittleEndian.PutUint64(b[i+1:], w+asciiZeros)
		// The trailing zeros are its high zero bytes (not all: frac > 0).
		return i + 9 - bits.LeadingZeros64(w)/8
	}
	s := frac * pow10u[(16-d)&15]
	hi := s / 1e8
	wh, wl := digits8(hi), digits8(s-hi*1e8)
	binary.LittleEndian.PutUint64(b[i+1:], wh+asciiZeros)
	binary.LittleEndian.PutUint64(b[i+9:], wl+asciiZeros)
	// The trailing zeros are the high zero bytes of wl, then of wh.
	z := bits.LeadingZeros64(wl) / 8
	if wl == 0 {
		z += bits.LeadingZeros64(wh) / 8
	}
	return i + 17 - z
}

// appendFloat32Exp is appendFloat32 for 2^-33 <= |f| < 1e-4, which 'g'
// prints in exponent form (1.1004223e-05): the same two tests at D−1 and D
// places, D from 12 to 17, in integers since f·10^d is no longer exact in
// float64. With f = m·2^k (m the 24-bit significand), f·10^d = M·2^−s for
// M = m·5^d (below 2^64) and s = −(k+d) > 0; n = round(f·10^d) is
// (M + 2^(s−1)) >> s, and n fits when |n·2^s − M|, in units of 2^−s, is
// below the interval's half-width there, 5^d/2 (or equal, ties to even).
// Powers of two and exact ties go to appendFloatStrconv.
func appendFloat32Exp(dst []byte, f float32) []byte {
	fb := math.Float32bits(f) &^ (1 << 31)
	mant := fb & (1<<23 - 1)
	exp := fb >> 23
	d := int(placesFor[exp])
	if mant == 0 || d < 2 {
		return appendFloatStrconv(dst, float64(f), 32)
	}
	m := uint64(mant | 1<<23)
	k := int(exp) - 150
	s1, s0 := uint(-(k + d - 1)), uint(-(k + d))
	M1, M0 := m*pow5[d-1], m*pow5[d]
	n1, n0 := (M1+1<<(s1-1))>>s1, (M0+1<<(s0-1))>>s0
	// n·2^s − M: in [−2^(s−1)+1, 2^(s−1)] (round half up), 2^(s−1) a tie.
	e1, e0 := n1<<s1-M1, n0<<s0-M0
	if e1 == 1<<(s1-1) || e0 == 1<<(s0-1) {
		return appendFloatStrconv(dst, float64(f), 32)
	}
	if int64(e1) < 0 {
		e1 = -e1
	}
	u := n0
	if lim := pow5[d-1]; 2*e1 < lim || (2*e1 == lim && m&1 == 0) { // D−1 places fit
		u = n1
		d--
	}
	// u (below 2·10^8, so at most nine digits) as its first digit and
	// the rest, most significant first, one a byte, trailing zeros in the
	// high bytes: no loop. The value is u·10^−d, its exponent nd−1−d for
	// nd digits.
	hi := u / 1e8
	w := digits8(u - hi*1e8)
	first, rest, nd := hi, w, 9
	if hi == 0 {
		lead := bits.TrailingZeros64(w|1<<56) / 8 // u > 0: a digit is left
		w >>= 8 * lead
		first, rest, nd = w&0xff, w>>8, 8-lead
	}
	x := d - (nd - 1) // −exponent
	if x <= 4 || x >= 100 {
		return appendFloatStrconv(dst, float64(f), 32)
	}
	// sign, first digit, point, up to eight digits, "e-xx": 14 bytes.
	if cap(dst)-len(dst) < 16 {
		dst = slices.Grow(dst, 16)
	}
	l := len(dst)
	b := dst[l:cap(dst)][:16]
	b[0] = '-'
	j := 0
	if f < 0 {
		j = 1
	}
	b[j] = byte('0' + first)
	j++
	if rest != 0 {
		b[j] = '.'
		binary.LittleEndian.PutUint64(b[j+1:], rest+asciiZeros)
		j += 9 - bits.LeadingZeros64(rest)/8
	}
	b[j], b[j+1], b[j+2], b[j+3] = 'e', '-', digitPairs[x*2], digitPairs[x*2+1]
	return dst[:l+j+4]
}

// digitPairs holds "00" to "99", two digits per entry.
const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"
