package output

import (
	"encoding/base64"
	"math"
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
// same number. Such values take appendFloat32's fast paths, the others
// appendFloatStrconv, with the same output.
// JSON has no NaN or infinity: non-finite values are written as null.
func appendFloat(dst []byte, f float64, bitSize int) []byte {
	if f32 := float32(f); float64(f32) == f { // NaN fails
		return appendFloat32(dst, f32)
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
