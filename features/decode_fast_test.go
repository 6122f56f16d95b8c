package features

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The decoder's fast paths against the library code they replace: the
// same float64 bits and error as strconv.ParseFloat, the same stop as the
// byte-by-byte strSpecial loop, the same Time (==) as time.Date.

func checkParseNumber(t *testing.T, s string) {
	t.Helper()
	sc := scanner{b: []byte(s)}
	if start, end, _, ok := sc.num(); !ok || start != 0 || end != len(s) {
		t.Fatalf("num(%q) = %d, %d, %v", s, start, end, ok)
	}
	got, gerr := sc.parseNumber(sc.b)
	want, werr := strconv.ParseFloat(s, 64)
	if math.Float64bits(got) != math.Float64bits(want) || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
		t.Fatalf("parseNumber(%q) = %v (%#x), %v; ParseFloat: %v (%#x), %v", s, got, math.Float64bits(got), gerr, want, math.Float64bits(want), werr)
	}
}

func TestParseNumberMatchesParseFloat(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "0.0", "-0.000", "0e5", "-0E-5", "1", "-1", "57.20", "48.85", "2.35", "0.1", "0.3",
		"123456789012345", "1234567890123456", "12345678901234567890", "999999999999999.9",
		"0.000000000000000000001", "0.0000000000000000000001", "0.00000000000000000000001",
		"1e22", "1e23", "1e-22", "1e-23", "9007199254740993", "1.7976931348623157e308", "1e309", "-1e400",
		"4.9e-324", "1e-400", "0.10000000000000000000000000001", "1.000000000000000000000000",
		"100000000000000000000000", "1e+10", "1E-0", "7e0022", "5e99999999999999",
	} {
		checkParseNumber(t, s)
	}
	// An exponent beyond the count of num (and of strconv, which stops
	// counting at 10,000 too, and so returns 1 for the first), offset by as
	// many fraction digits.
	checkParseNumber(t, "0."+strings.Repeat("0", 9999)+"1e100000")
	checkParseNumber(t, "0."+strings.Repeat("0", 9999)+"1e10000")
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var b []byte
		if r.IntN(4) == 0 {
			b = append(b, '-')
		}
		if n := r.IntN(18); n == 0 || r.IntN(5) == 0 {
			b = append(b, '0')
		} else {
			b = append(b, byte('1'+r.IntN(9)))
			for range n - 1 {
				b = append(b, byte('0'+r.IntN(10)))
			}
		}
		if r.IntN(2) == 0 {
			b = append(b, '.')
			for range 1 + r.IntN(18) {
				b = append(b, byte('0'+r.IntN(10)))
			}
		}
		if r.IntN(3) == 0 {
			b = append(b, "eE"[r.IntN(2)])
			if k := r.IntN(3); k > 0 {
				b = append(b, "+-"[k-1])
			}
			b = strconv.AppendInt(b, int64(r.IntN(40)), 10)
		}
		checkParseNumber(t, string(b))
	}
}

func FuzzParseNumber(f *testing.F) {
	f.Add("57.20")
	f.Add("-0.000123e-7")
	f.Fuzz(func(t *testing.T, s string) {
		sc := scanner{b: []byte(s)}
		if start, end, _, ok := sc.num(); !ok || start != 0 || end != len(s) {
			return // parseNumber only sees what num validated
		}
		checkParseNumber(t, s)
	})
}

func TestSkipPlainMatchesTable(t *testing.T) {
	slow := func(b []byte, i int) int {
		for i < len(b) && strSpecial[b[i]] == 0 {
			i++
		}
		return i
	}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{'a', 'Z', '0', ' ', '!', '#', '[', ']', '~', 0x7f, '"', '\\', 0, 0x1f, 0x20, 0x21, 0x80, 0xc3, 0xff, 0x5b, 0x5d, 0x01}
	for range 100000 {
		b := make([]byte, r.IntN(40))
		for j := range b {
			if r.IntN(6) == 0 {
				b[j] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[j] = byte(0x20 + r.IntN(0x60))
			}
		}
		for i := 0; i <= len(b); i++ {
			if got, want := skipPlain(b, i), slow(b, i); got != want {
				t.Fatalf("skipPlain(%q, %d) = %d, want %d", b, i, got, want)
			}
		}
	}
	for c := range 256 { // every byte value in every lane
		for lane := range 8 {
			b := []byte("abcdefghijkl")
			b[lane] = byte(c)
			if got, want := skipPlain(b, 0), slow(b, 0); got != want {
				t.Fatalf("byte %#x in lane %d: skipPlain = %d, want %d", c, lane, got, want)
			}
		}
	}
}

func TestParseRFC3339MatchesTimeDate(t *testing.T) {
	check := func(y, mo, d, h, mi, s, ns, off int) {
		t.Helper()
		sign := byte('+')
		if off < 0 {
			sign = '-'
		}
		ao := max(off, -off)
		text := []byte(time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC).Format("2006-01-02T15:04:05.000000000"))
		text = append(text, sign, byte('0'+ao/600), byte('0'+ao/60%10), ':', byte('0'+ao%60/10), byte('0'+ao%10))
		want := time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC).Add(-time.Duration(off) * time.Minute)
		got, ok := parseRFC3339(text)
		if !ok || got != want {
			t.Fatalf("parseRFC3339(%s) = %v, %v; want %v", text, got, ok, want)
		}
	}
	// Every day of years 0000-9999, then whole timestamps at random.
	first := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for sec := first; ; sec += 86400 {
		y, mo, d := time.Unix(sec, 0).UTC().Date()
		if y == 10000 {
			break
		}
		if got := daysSinceEpoch(y, int(mo), d) * 86400; got != sec {
			t.Fatalf("daysSinceEpoch(%d, %d, %d) = %d days, want %d", y, mo, d, got/86400, sec/86400)
		}
	}
	n := 100000
	if raceEnabled {
		n = 10000
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range n {
		y, mo := r.IntN(10000), 1+r.IntN(12)
		check(y, mo, 1+r.IntN(daysIn(mo, y)), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e9), r.IntN(24*60*2-1)-(24*60-1))
	}
}
