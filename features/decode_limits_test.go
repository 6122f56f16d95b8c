package features

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDecodeFieldTooLong checks the length bound of string fields, for
// events and labels, counted after unescaping.
func TestDecodeFieldTooLong(t *testing.T) {
	long := strings.Repeat("x", DefaultMaxFieldBytes+1)
	event := func(field, raw string) string {
		f := map[string]string{"tx_id": `"t"`, "card_id": `"c"`, "terminal_id": `"m"`, "country": `"FR"`}
		f[field] = raw
		return fmt.Sprintf(`{"tx_id":%s,"ts":"2026-11-28T15:04:05Z","card_id":%s,"terminal_id":%s,"amount":1,"country":%s}`,
			f["tx_id"], f["card_id"], f["terminal_id"], f["country"])
	}
	tests := []struct {
		name   string
		in     string
		max    int // 0: default
		field  string
		reject bool
	}{
		{"card_id at the bound", event("card_id", `"`+long[1:]+`"`), 0, "card_id", false},
		{"card_id over the bound", event("card_id", `"`+long+`"`), 0, "card_id", true},
		{"tx_id over", event("tx_id", `"`+long+`"`), 0, "tx_id", true},
		{"terminal_id over", event("terminal_id", `"`+long+`"`), 0, "terminal_id", true},
		{"country over", event("country", `"`+long+`"`), 0, "country", true},
		{"escapes shorten: 12 raw bytes, 2 decoded", event("card_id", `"`+strings.Repeat(`\u0041`, 2)+`"`), 5, "card_id", false},
		{"escaped over after decoding", event("card_id", `"`+strings.Repeat(`\u0041`, 6)+`"`), 5, "card_id", true},
		{"multibyte counted in bytes", event("terminal_id", `"ééé"`), 5, "terminal_id", true},
		{"custom bound", event("card_id", `"abcdef"`), 5, "card_id", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []DecoderOption{WithClock(func() time.Time { return testNow })}
			if tc.max > 0 {
				opts = append(opts, WithMaxFieldBytes(tc.max))
			}
			d := MustDecoder(opts...)
			var e Event
			err := d.Decode([]byte(tc.in), &e)
			var de *DecodeError
			switch {
			case !tc.reject && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.reject && !errors.As(err, &de):
				t.Fatalf("got %v, want a *DecodeError", err)
			case tc.reject && (de.Reason != ReasonFieldTooLong || de.Field != tc.field):
				t.Fatalf("got reason %q field %q, want %q %q", de.Reason, de.Field, ReasonFieldTooLong, tc.field)
			case tc.reject && strings.Contains(err.Error(), "xxxx"):
				t.Fatalf("the error quotes the value: %v", err)
			}
		})
	}
	var l Label
	in := `{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"` + long + `","terminal_id":"m","fraud":true}`
	var de *DecodeError
	if err := testDecoder().DecodeLabel([]byte(in), &l); !errors.As(err, &de) || de.Reason != ReasonFieldTooLong || de.Field != "card_id" {
		t.Fatalf("label with a long card_id: got %v, want %s on card_id", err, ReasonFieldTooLong)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("WithMaxFieldBytes(0) did not panic")
		}
	}()
	MustDecoder(WithMaxFieldBytes(0))
}
