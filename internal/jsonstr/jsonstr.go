// Package jsonstr writes JSON string literals without allocating: the one
// escaper behind every hand-written JSON encoder of the module (the event
// and label re-encoding of features, the records of sinks).
//
// # Concepts
//
// Append produces what encoding/json produces with HTML escaping off:
// control characters as \n, \r, \t, \b, \f or \u00XX, U+2028 and U+2029
// escaped (so the output is also valid JavaScript), and each byte of an
// invalid UTF-8 sequence as \ufffd. Everything else is copied as is.
//
// # Concurrency
//
// Append is a pure function, safe for concurrent use.
package jsonstr

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// safeASCII[b] is true when ASCII byte b needs no escaping in a JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// Append appends s to dst as a JSON string literal, quotes included, and
// returns the extended slice. It allocates only when dst must grow.
func Append[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safeASCII[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		var buf [utf8.UTFMax]byte
		n := copy(buf[:], s[i:])
		r, size := utf8.DecodeRune(buf[:n])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
