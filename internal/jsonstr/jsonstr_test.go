package jsonstr

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", `"abc"`},
		{"empty", "", `""`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"short escapes", "\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"control", "\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"del passes", "\x7f", "\"\x7f\""},
		{"html passes", "<a&b>", `"<a&b>"`},
		{"utf8", "café ✓ 😀", `"café ✓ 😀"`},
		{"line separators", "a\u2028b\u2029", `"a\u2028b\u2029"`},
		{"invalid byte", "a\xffb", `"a\ufffdb"`},
		{"truncated rune", "\xe2\x9c", `"\ufffd\ufffd"`},
		{"surrogate half", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(Append(nil, tc.in)); got != tc.want {
				t.Errorf("string: got %s, want %s", got, tc.want)
			}
			if got := string(Append(nil, []byte(tc.in))); got != tc.want {
				t.Errorf("bytes: got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzAppend checks the escaper against encoding/json: the output is
// valid JSON and decodes to what encoding/json's own encoding decodes to.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "abc", "\x00\n\"\\", "a\xffb", "\u2028", "😀\xf0\x9f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := Append(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q: got %q, want %q", s, got, want)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("valid %q changed to %q", s, got)
		}
	})
}

// appendBefore is the escaper features used before this package: it wrote
// \b and \f as \u0008 and \u000c and left U+2028 and U+2029 unescaped.
// Kept as the reference that proves records without those characters are
// byte-identical.
func appendBefore(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// stricter reports whether s holds a character the two escapers write
// differently: \b, \f, U+2028 or U+2029.
func stricter(s string) bool {
	return strings.ContainsAny(s, "\b\f\u2028\u2029")
}

// TestAppendSameAsBefore checks that a string without \b, \f, U+2028 and
// U+2029 is written exactly as features wrote it before the merge, and that
// the four are now written as sinks wrote them.
func TestAppendSameAsBefore(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ids", "t-000001", `"t-000001"`},
		{"escapes", "a\"b\\c\n\r\t\x00\x1f", `"a\"b\\c\n\r\t\u0000\u001f"`},
		{"utf8 and invalid", "café\xff😀\xe2\x9c", `"café\ufffd😀\ufffd\ufffd"`},
		{"backspace", "a\bb", `"a\bb"`},
		{"form feed", "a\fb", `"a\fb"`},
		{"line separator", "a\u2028b", `"a\u2028b"`},
		{"paragraph separator", "a\u2029b", `"a\u2029b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Append(nil, tc.in))
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			before := string(appendBefore(nil, tc.in))
			if same := got == before; same == stricter(tc.in) {
				t.Errorf("got %s, before %s: want them equal exactly when the input has none of \\b \\f U+2028 U+2029", got, before)
			}
		})
	}
}

// FuzzAppendSameAsBefore is the property of TestAppendSameAsBefore over
// any input.
func FuzzAppendSameAsBefore(f *testing.F) {
	for _, s := range []string{"", "c-42", "\x00\n\"\\", "a\xffb", "\u2028", "\b\f", "😀\xf0\x9f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, before := string(Append(nil, s)), string(appendBefore(nil, s))
		if !stricter(s) && got != before {
			t.Fatalf("%q: got %s, before %s", s, got, before)
		}
	})
}

func TestAppendNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	s := "t-000001 café \n \u2028 \xff"
	if n := testing.AllocsPerRun(100, func() { buf = Append(buf[:0], s) }); n != 0 {
		t.Errorf("Append allocated %v times per run with room in dst, want 0", n)
	}
}
