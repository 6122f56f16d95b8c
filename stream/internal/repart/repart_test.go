package repart

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, h := range []Head{
		{Kind: KindEvent, Src: 3, Offset: 12345, TS: 1_700_000_000_123_456_789, CaughtUp: true},
		{Kind: KindEvent, Src: 0, Offset: 0, TS: -5},
		{Kind: KindMark, Src: 1 << 20, Offset: 1 << 40, TS: math.MaxInt64, CaughtUp: false},
	} {
		payload := []byte(`{"tx_id":"x"}`)
		b := AppendRecord(nil, h, payload)
		got, p, err := ParseRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != h {
			t.Fatalf("head %+v, want %+v", got, h)
		}
		want := payload
		if h.Kind == KindMark {
			want = nil
		}
		if string(p) != string(want) {
			t.Fatalf("payload %q, want %q", p, want)
		}
	}
}

func TestEnrichedRoundTrip(t *testing.T) {
	for _, e := range []Enriched{
		{Src: 7, Offset: 99, Late: true, Cols: []float32{0, 1.5, float32(math.Inf(-1)), -0, 3e-38}},
		{Src: 3, Offset: 5, Refused: true},
	} {
		b := AppendEnriched(nil, &e)
		var got Enriched
		if err := ParseEnriched(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Src != e.Src || got.Offset != e.Offset || got.Late != e.Late || got.Refused != e.Refused ||
			!slices.EqualFunc(got.Cols, e.Cols, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			t.Fatalf("got %+v, want %+v", got, e)
		}
	}
}

// TestParseRefuses: every truncation and every flipped magic/version/kind
// byte is refused with ErrFormat, never a panic.
func TestParseRefuses(t *testing.T) {
	r := AppendRecord(nil, Head{Kind: KindMark, Src: 2, Offset: 300, TS: 7}, nil)
	e := AppendEnriched(nil, &Enriched{Src: 2, Offset: 300, Cols: []float32{1, 2}})
	for n := range len(r) {
		if _, _, err := ParseRecord(r[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("R truncated to %d: %v", n, err)
		}
	}
	for n := range len(e) {
		var x Enriched
		if err := ParseEnriched(e[:n], &x); !errors.Is(err, ErrFormat) {
			t.Fatalf("E truncated to %d: %v", n, err)
		}
	}
	for i := range 3 {
		b := slices.Clone(r)
		b[i] ^= 0x40
		if _, _, err := ParseRecord(b); !errors.Is(err, ErrFormat) {
			t.Fatalf("R byte %d flipped: %v", i, err)
		}
	}
	if _, _, err := ParseRecord(append(slices.Clone(r), 'x')); !errors.Is(err, ErrFormat) {
		t.Fatalf("watermark with payload: %v", err)
	}
	var x Enriched
	if err := ParseEnriched(append(slices.Clone(e), 0), &x); !errors.Is(err, ErrFormat) {
		t.Fatalf("E with a trailing byte: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(AppendRecord(nil, Head{Kind: KindEvent, Src: 1, Offset: 2, TS: 3}, []byte("{}")))
	f.Add(AppendEnriched(nil, &Enriched{Src: 1, Offset: 2, Cols: []float32{1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, p, err := ParseRecord(b); err == nil {
			if got := AppendRecord(nil, h, p); string(got) != string(b) && h.Kind == KindEvent {
				// Varints have one canonical form per value only when
				// minimal; a non-minimal input parses but re-encodes shorter.
				_, _, err2 := ParseRecord(got)
				if err2 != nil {
					t.Fatalf("re-encoded record refused: %v", err2)
				}
			}
		}
		var e Enriched
		if err := ParseEnriched(b, &e); err == nil {
			var back Enriched
			if err := ParseEnriched(AppendEnriched(nil, &e), &back); err != nil {
				t.Fatalf("re-encoded enriched refused: %v", err)
			}
		}
	})
}

func TestRouteStable(t *testing.T) {
	// Pinned: changing the function moves every terminal to another stage
	// (and its checkpoint with it).
	for _, c := range []struct {
		id      string
		n, want int
	}{{"", 16, 5}, {"T000123", 16, 15}, {"T42", 7, 2}} {
		if got := Route(c.id, c.n); got != c.want {
			t.Fatalf("Route(%q, %d) = %d, want %d", c.id, c.n, got, c.want)
		}
	}
	if got := Route("T1", 1); got != 0 {
		t.Fatalf("Route with one partition = %d", got)
	}
}

// TestAppendInPlace: a payload appended after the head of a KindEvent
// record is the record's payload, byte for byte as AppendRecord copies it.
func TestAppendInPlace(t *testing.T) {
	h := Head{Kind: KindEvent, Src: 2, Offset: 77, TS: 5, CaughtUp: true}
	payload := []byte(`{"tx_id":"t1"}`)
	inPlace := append(AppendRecord([]byte("key"), h, nil), payload...)[3:]
	if want := AppendRecord(nil, h, payload); string(inPlace) != string(want) {
		t.Fatalf("in place %q, copied %q", inPlace, want)
	}
}
