package features

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of skipped values (unknown fields).
const maxDepth = 64

// strSpecial marks the bytes a string scan must stop at: the quote, the
// backslash, control characters (not allowed raw in JSON strings) and the
// bytes of multi-byte UTF-8 sequences (validated at the end of the string).
var strSpecial = func() (t [256]uint8) {
	for c := 0; c < 0x20; c++ {
		t[c] = 1
	}
	t['"'], t['\\'] = 1, 1
	for c := 0x80; c < 0x100; c++ {
		t[c] = 1
	}
	return t
}()

// Bytes repeated in each lane of a word, for skipPlain.
const (
	lanes01 = 0x0101010101010101
	lanes20 = 0x2020202020202020
	lanes80 = 0x8080808080808080
	lanesQ  = lanes01 * '"'
	lanesBS = lanes01 * '\\'
)

// skipPlain returns the index of the first byte at or after i that
// strSpecial marks, or len(b). It tests eight bytes at a time: a lane's high
// bit is set in m for a byte >= 0x80, < 0x20, '"' or '\\'. A subtraction's
// borrow can only set bits in lanes above a lane that is itself marked, so
// the lowest set bit is exact.
func skipPlain(b []byte, i int) int {
	for i+8 <= len(b) {
		w := binary.LittleEndian.Uint64(b[i:])
		q, bs := w^lanesQ, w^lanesBS
		m := ((w-lanes20)&^w | (q-lanes01)&^q | (bs-lanes01)&^bs | w) & lanes80
		if m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
		i += 8
	}
	for i < len(b) && strSpecial[b[i]] == 0 {
		i++
	}
	return i
}

// scanner is a single-pass JSON tokenizer over one message. It records the
// first syntax error (reason, text and offset) and never panics.
type scanner struct {
	b      []byte
	i      int
	reason string
	msg    string
	pos    int
	num10  decimal // the last number num scanned
}

// decimal is a number as num reads it, for decimal.float: mant holds its
// significant digits (nd of them; wrapped when nd > 19) and e10 the power
// of ten that scales mant to the value; big is true when the exponent
// written has more than four digits' worth (e10 is then not exact).
type decimal struct {
	mant    uint64
	nd, e10 int
	neg     bool
	big     bool
}

func (s *scanner) fail(reason, msg string) bool {
	if s.reason == "" {
		s.reason, s.msg, s.pos = reason, msg, s.i
	}
	return false
}

func (s *scanner) ws() {
	i := s.i
	if i < len(s.b) && s.b[i] > ' ' { // compact JSON: no whitespace at all
		return
	}
	for i < len(s.b) {
		switch s.b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			s.i = i
			return
		}
	}
	s.i = i
}

// peek returns the next byte, or 0 at the end of input.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str scans a string literal starting at the opening quote and returns the
// span of its raw content and whether it holds escapes. The content is
// checked for valid UTF-8, valid escapes and paired surrogates.
func (s *scanner) str() (start, end int, esc, ok bool) {
	b, i := s.b, s.i
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false, s.fail(ReasonMalformedJSON, "expected string")
	}
	i++
	start = i
	high := false
	for {
		i = skipPlain(b, i)
		if i >= len(b) {
			s.i = i
			return 0, 0, false, s.fail(ReasonMalformedJSON, "unterminated string")
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i
			if high && !utf8.Valid(b[start:i]) {
				return 0, 0, false, s.fail(ReasonInvalidUTF8, "invalid UTF-8 in string")
			}
			s.i = i + 1
			return start, i, esc, true
		case c == '\\':
			esc = true
			s.i = i
			if !s.escape() {
				return 0, 0, false, false
			}
			i = s.i
		case c < 0x20:
			s.i = i
			return 0, 0, false, s.fail(ReasonMalformedJSON, "control character in string")
		default:
			high = true
			i++
		}
	}
}

// escape validates the escape sequence at s.b[s.i] == '\\' and moves past it.
func (s *scanner) escape() bool {
	if s.i+1 >= len(s.b) {
		return s.fail(ReasonMalformedJSON, "unterminated string")
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i += 2
		return true
	case 'u':
		r, ok := hex4(s.b[s.i+2:])
		if !ok {
			return s.fail(ReasonMalformedJSON, `invalid \u escape`)
		}
		s.i += 6
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return s.fail(ReasonInvalidUTF8, `unpaired surrogate in \u escape`)
		case r >= 0xD800 && r <= 0xDBFF:
			if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
				r2, ok := hex4(s.b[s.i+2:])
				if !ok {
					return s.fail(ReasonMalformedJSON, `invalid \u escape`)
				}
				if r2 >= 0xDC00 && r2 <= 0xDFFF {
					s.i += 6
					return true
				}
			}
			return s.fail(ReasonInvalidUTF8, `unpaired surrogate in \u escape`)
		}
		return true
	default:
		return s.fail(ReasonMalformedJSON, "invalid escape")
	}
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// num scans a JSON number and reports whether it is an integer (no fraction,
// no exponent). It leaves the number's digits in s.num10.
func (s *scanner) num() (start, end int, isInt, ok bool) {
	b := s.b
	start = s.i
	i := s.i
	d := decimal{}
	if i < len(b) && b[i] == '-' {
		d.neg = true
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			d.mant = d.mant*10 + uint64(b[i]-'0')
			d.nd++
			i++
		}
	default:
		s.i = i
		return 0, 0, false, s.fail(ReasonMalformedJSON, "invalid number")
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		i++
		f := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if d.mant != 0 || b[i] != '0' { // leading zeros are not significant
				d.mant = d.mant*10 + uint64(b[i]-'0')
				d.nd++
			}
			i++
		}
		if i == f {
			s.i = i
			return 0, 0, false, s.fail(ReasonMalformedJSON, "invalid number")
		}
		d.e10 = f - i
		isInt = false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		f := i
		x := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if x < 10000 {
				x = x*10 + int(b[i]-'0')
			} else {
				d.big = true
			}
			i++
		}
		if i == f {
			s.i = i
			return 0, 0, false, s.fail(ReasonMalformedJSON, "invalid number")
		}
		if eneg {
			x = -x
		}
		d.e10 += x
		isInt = false
	}
	s.i = i
	s.num10 = d
	return start, i, isInt, true
}

func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return s.fail(ReasonMalformedJSON, "invalid literal")
}

// skipValue validates and skips any JSON value.
func (s *scanner) skipValue(depth int) bool {
	s.ws()
	if s.i >= len(s.b) {
		return s.fail(ReasonMalformedJSON, "unexpected end of input")
	}
	switch c := s.b[s.i]; c {
	case '"':
		_, _, _, ok := s.str()
		return ok
	case '{', '[':
		if depth >= maxDepth {
			return s.fail(ReasonMalformedJSON, "nesting too deep")
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		s.i++
		s.ws()
		if s.peek() == closer {
			s.i++
			return true
		}
		for {
			if c == '{' {
				s.ws()
				if _, _, _, ok := s.str(); !ok {
					return false
				}
				s.ws()
				if s.peek() != ':' {
					return s.fail(ReasonMalformedJSON, "expected ':'")
				}
				s.i++
			}
			if !s.skipValue(depth + 1) {
				return false
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case closer:
				s.i++
				return true
			default:
				if s.i >= len(s.b) {
					return s.fail(ReasonMalformedJSON, "unexpected end of input")
				}
				return s.fail(ReasonMalformedJSON, "expected ',' or closing bracket")
			}
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			_, _, _, ok := s.num()
			return ok
		}
		return s.fail(ReasonMalformedJSON, "unexpected character")
	}
}

// appendUnescaped appends the decoded content of a validated JSON string.
func appendUnescaped(dst, raw []byte) []byte {
	start := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			i++
			continue
		}
		dst = append(dst, raw[start:i]...)
		var r rune
		r, i = unescapeAt(raw, i)
		dst = utf8.AppendRune(dst, r)
		start = i
	}
	return append(dst, raw[start:]...)
}

// unescapeAt decodes the validated escape at raw[i] and returns the rune and
// the index after it.
func unescapeAt(raw []byte, i int) (rune, int) {
	switch c := raw[i+1]; c {
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r, _ := hex4(raw[i+2:])
		i += 6
		if utf16.IsSurrogate(r) {
			r2, _ := hex4(raw[i+2:])
			return utf16.DecodeRune(r, r2), i + 6
		}
		return r, i
	default: // '"', '\\', '/'
		return rune(c), i + 2
	}
}

// Supported event-time range: [1970-01-01, 2262-01-01) UTC, so that every
// accepted timestamp has an exact int64 Unix-nanosecond value.
var (
	minEventTime = time.Unix(0, 0).UTC()
	maxEventTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

const maxEpochMillis = 9214646400000 // 2262-01-01T00:00:00Z

// parseRFC3339 parses YYYY-MM-DD(T|t)HH:MM:SS[.fraction](Z|z|±HH:MM)
// strictly (no leap seconds, day checked against the month) without
// allocating, and returns the instant in UTC.
func parseRFC3339(b []byte) (time.Time, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, false
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := 19
	nsec := 0
	if b[i] == '.' {
		i++
		d := i
		scale := 100000000
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if scale > 0 {
				nsec += int(b[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == d {
			return time.Time{}, false
		}
	}
	if i >= len(b) {
		return time.Time{}, false
	}
	var offset int
	switch b[i] {
	case 'Z', 'z':
		if i+1 != len(b) {
			return time.Time{}, false
		}
	case '+', '-':
		if len(b) != i+6 || b[i+3] != ':' {
			return time.Time{}, false
		}
		oh, ok1 := digits(b[i+1 : i+3])
		om, ok2 := digits(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = oh*3600 + om*60
		if b[i] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	unix := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec-offset)
	return time.Unix(unix, int64(nsec)).UTC(), true
}

// daysSinceEpoch returns the number of days from 1970-01-01 to the given
// valid date of the proleptic Gregorian calendar (negative before it): the
// days_from_civil algorithm of H. Hinnant, with March as the year's first
// month so that February's leap day comes last. The result is the Time
// time.Date(year, month, day, …, time.UTC) makes, without its
// normalisation, which a validated date does not need.
func daysSinceEpoch(year, month, day int) int64 {
	// Counted from 1 March of year -400 so that every quantity is
	// unsigned (cheaper divisions): year is 0-9999 (four digits).
	y := uint64(year + 400)
	mp := uint64(month - 3) // March = 0
	if month <= 2 {
		y--
		mp = uint64(month + 9)
	}
	era := y / 400
	yoe := y - era*400                             // [0, 399]
	doy := (153*mp+2)/5 + uint64(day) - 1          // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy         // [0, 146096]
	return int64(era*146097+doe) - 719468 - 146097 // 146097 days: the 400 years added
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// float64pow10 holds the powers of ten a float64 represents exactly.
var float64pow10 = [...]float64{
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
	1e20, 1e21, 1e22,
}

// float returns the number d holds and true when a float64 division or
// multiplication gives it exactly as strconv.ParseFloat would (at most 15
// significant digits, a decimal exponent within ±22: the mantissa and the
// power of ten are both exact float64s, so the one operation rounds
// correctly, as ParseFloat does), and false otherwise (amounts and
// coordinates nearly always fit).
func (d *decimal) float() (float64, bool) {
	if d.nd > 15 || d.big {
		return 0, false
	}
	v := float64(d.mant)
	switch e := d.e10; {
	case d.mant == 0:
	case e >= 0 && e < len(float64pow10):
		v *= float64pow10[e]
	case e < 0 && -e < len(float64pow10):
		v /= float64pow10[-e]
	default:
		return 0, false
	}
	if d.neg {
		v = -v
	}
	return v, true
}

// parseNumber returns the value and error of strconv.ParseFloat(b) for a
// number that num has just scanned into s.num10 from b.
func (s *scanner) parseNumber(b []byte) (float64, error) {
	if v, ok := s.num10.float(); ok {
		return v, nil
	}
	return strconv.ParseFloat(string(b), 64)
}
