package output

import (
	"encoding/base64"
	"math"
	"slices"
	"strconv"

	"github.com/streamscore/streamscore/internal/jsonstr"
)

// The helpers below write JSON values with no allocation when dst has room.

// appendString appends s as a JSON string (jsonstr.Append: control
// characters, U+2028/9 and invalid UTF-8 escaped as encoding/json does).
func appendString[S string | []byte](dst []byte, s S) []byte {
	return jsonstr.Append(dst, s)
}

// appendFloat appends f in strconv 'g' format with the shortest
// representation that round-trips at the given bit size (32 for float32
// values, so 0.1f prints as 0.1). A float64 that holds a float32 value
// exactly (the model scores and features, widened) is printed as that
// float32: 0.93, not 0.9300000071525574; parsed back as float32 it is the
// same number. Such values take appendFloat32's fast paths; a float64
// with at most three decimals (an amount in cents, a latency in whole
// microseconds) takes appendFloat's own; the others appendFloatStrconv;
// all with the same output.
// JSON has no NaN or infinity: non-finite values are written as null.
func appendFloat(dst []byte, f float64, bitSize int) []byte {
	if f32 := float32(f); float64(f32) == f { // NaN fails
		return appendFloat32(dst, f32)
	}
	// At most three decimals, 1e-3 <= |f| < 1e6 (plain decimals in 'g'):
	// n = round(|f|·1000), then n/1000 (one correctly rounded division,
	// as ParseFloat rounds) must give |f| back. Decimals of three places
	// or fewer are 10^-3 apart, far more than f's rounding interval, so at
	// most one lies in it: that one is the shortest, n without its
	// trailing zeros (putDecimal drops them). TestAppendFloat64 compares
	// with strconv.
	if a := math.Abs(f); bitSize == 64 && a >= 1e-3 && a < 1e6 {
		n := float64(int64(a*1000 + 0.5))
		if n/1000 == a {
			u := uint64(n)
			ip := u / 1000
			if frac := u - ip*1000; frac != 0 {
				if cap(dst)-len(dst) < floatRoom {
					dst = slices.Grow(dst, floatRoom)
				}
				l := len(dst)
				return dst[:l+putDecimal(dst[l:cap(dst)], f < 0, ip, frac, 3)]
			}
		}
	}
	return appendFloatStrconv(dst, f, bitSize)
}

// appendFloatStrconv is appendFloat through strconv, with a fast path for
// integers below 1e6 (same output).
func appendFloatStrconv(dst []byte, f float64, bitSize int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if f > -1e6 && f < 1e6 && f == math.Trunc(f) && (f != 0 || !math.Signbit(f)) {
		return strconv.AppendInt(dst, int64(f), 10)
	}
	if bitSize == 64 && float64(float32(f)) == f {
		bitSize = 32
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bitSize)
}

// appendBase64 appends b as a JSON string in standard base64 (with padding).
func appendBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendKey appends `"name":` for a name known to need no escaping,
// preceded by a comma unless it is the first member.
func appendKey(dst []byte, name string, first bool) []byte {
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	return append(dst, '"', ':')
}
