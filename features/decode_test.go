package features

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 28, 15, 10, 0, 0, time.UTC)

func testDecoder() *Decoder {
	return MustDecoder(WithClock(func() time.Time { return testNow }))
}

const validEvent = `{"tx_id":"t-1","ts":"2026-11-28T15:04:05.123Z","card_id":"c-42","terminal_id":"m-7","amount":57.20,"currency":"EUR","mcc":"5411","channel":"pos","country":"FR","lat":48.85,"lon":2.35}`

func TestDecodeValid(t *testing.T) {
	want := Event{
		TxID: "t-1", CardID: "c-42", TerminalID: "m-7",
		TS:     time.Date(2026, 11, 28, 15, 4, 5, 123e6, time.UTC),
		Amount: 57.20, Currency: "EUR", MCC: "5411", Channel: "pos", Country: "FR",
		Lat: 48.85, Lon: 2.35, HasGeo: true,
	}
	tests := []struct {
		name string
		in   string
		want Event
	}{
		{"contract example", validEvent, want},
		{"minimal", `{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"c","terminal_id":"m","amount":0}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC)}},
		{"epoch millis", `{"tx_id":"t","ts":1795878245123,"card_id":"c","terminal_id":"m","amount":1}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245123).UTC(), Amount: 1}},
		{"offset zone and whitespace", " \n{ \"amount\" : 1e2 , \"terminal_id\":\"m\",\"card_id\":\"c\",\"ts\":\"2026-11-28T16:04:05.5+01:00\",\"tx_id\":\"t\"}\r\n",
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 5e8, time.UTC), Amount: 100}},
		{"escapes and surrogate pair", `{"tx_id":"t\u002d\"1\"\\\/\n","ts":"2026-11-28T15:04:05Z","card_id":"c\ud83d\ude00é","terminal_id":"m","amount":1,"country":"\u00e9"}`,
			Event{TxID: "t-\"1\"\\/\n", CardID: "c😀é", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Amount: 1, Country: "é"}},
		{"escaped key", `{"tx\u005fid":"t","ts":"2026-11-28T15:04:05Z","card_id":"c","terminal_id":"m","amount":1}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Amount: 1}},
		{"unknown nested fields skipped", `{"x":{"a":[1,2,{"b":null}],"c":"}"},"tx_id":"t","y":[],"z":{},"ts":"2026-11-28T15:04:05Z","card_id":"c","terminal_id":"m","amount":1,"w":true,"v":-1.5e-3}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Amount: 1}},
		{"null optional fields are absent", `{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"c","terminal_id":"m","amount":1,"currency":null,"lat":null,"lon":null}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Amount: 1}},
		{"negative zero amount", `{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"c","terminal_id":"m","amount":-0.0}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC)}},
		{"within future skew", `{"tx_id":"t","ts":"2026-11-28T15:14:59Z","card_id":"c","terminal_id":"m","amount":1}`,
			Event{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 14, 59, 0, time.UTC), Amount: 1}},
	}
	d := testDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Event
			if err := d.Decode([]byte(tc.in), &got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !eventsEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			// The same event against a clock reading taken before.
			var at Event
			if err := d.DecodeAt([]byte(tc.in), &at, d.Now()); err != nil {
				t.Fatalf("DecodeAt: %v", err)
			}
			if !eventsEqual(at, tc.want) {
				t.Errorf("DecodeAt: got %+v, want %+v", at, tc.want)
			}
		})
	}
}

func eventsEqual(a, b Event) bool {
	at, bt := a.TS, b.TS
	a.TS, b.TS = time.Time{}, time.Time{}
	return a == b && at.Equal(bt) && at.Location() == time.UTC
}

func TestDecodeReasons(t *testing.T) {
	ev := func(repl ...string) string { return strings.NewReplacer(repl...).Replace(validEvent) }
	tests := []struct {
		name   string
		in     string
		reason string
		field  string
	}{
		{"empty", ``, ReasonEmpty, ""},
		{"whitespace only", " \n\t", ReasonEmpty, ""},
		{"invalid utf8 in value", ev(`"c-42"`, "\"c-\xff\""), ReasonInvalidUTF8, ""},
		{"invalid utf8 in unknown key", "{\"\xc3\x28\":1," + validEvent[1:], ReasonInvalidUTF8, ""},
		{"invalid utf8 after syntax error", "{\"tx_id\" 1 \xff", ReasonInvalidUTF8, ""},
		{"invalid utf8 in trailing data", validEvent + "\xff", ReasonInvalidUTF8, ""},
		{"lone low surrogate", ev(`"c-42"`, `"\udc00"`), ReasonInvalidUTF8, ""},
		{"unpaired high surrogate", ev(`"c-42"`, `"\ud83dx"`), ReasonInvalidUTF8, ""},
		{"not an object", `["tx_id"]`, ReasonMalformedJSON, ""},
		{"bare string", `"x"`, ReasonMalformedJSON, ""},
		{"truncated", validEvent[:40], ReasonMalformedJSON, ""},
		{"truncated after brace", `{`, ReasonMalformedJSON, ""},
		{"missing colon", `{"tx_id" "t"}`, ReasonMalformedJSON, ""},
		{"trailing comma", ev(`,"lon":2.35}`, `,"lon":2.35,}`), ReasonMalformedJSON, ""},
		{"single quotes", `{'tx_id':'t'}`, ReasonMalformedJSON, ""},
		{"bad escape", ev(`"c-42"`, `"c\x"`), ReasonMalformedJSON, ""},
		{"raw control char", ev(`"c-42"`, "\"c\t\""), ReasonMalformedJSON, ""},
		{"bad number", ev(`57.20`, `57.`), ReasonMalformedJSON, ""},
		{"leading zero", ev(`57.20`, `057.2`), ReasonMalformedJSON, ""},
		{"NaN literal", ev(`57.20`, `NaN`), ReasonMalformedJSON, ""},
		{"bad nested", `{"x":[1,}` + validEvent[1:], ReasonMalformedJSON, ""},
		{"too deep", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + validEvent[1:], ReasonMalformedJSON, ""},
		{"trailing object", validEvent + `{}`, ReasonTrailingData, ""},
		{"trailing garbage", validEvent + ` x`, ReasonTrailingData, ""},
		{"amount as string", ev(`57.20`, `"57.20"`), ReasonWrongType, "amount"},
		{"tx_id as number", ev(`"t-1"`, `1`), ReasonWrongType, "tx_id"},
		{"null required", ev(`"m-7"`, `null`), ReasonWrongType, "terminal_id"},
		{"ts as bool", ev(`"2026-11-28T15:04:05.123Z"`, `true`), ReasonWrongType, "ts"},
		{"lat as string", ev(`48.85`, `"48.85"`), ReasonWrongType, "lat"},
		{"country as object", ev(`"FR"`, `{}`), ReasonWrongType, "country"},
		{"missing tx_id", ev(`"tx_id":"t-1",`, ``), ReasonMissingField, "tx_id"},
		{"missing ts", ev(`"ts":"2026-11-28T15:04:05.123Z",`, ``), ReasonMissingField, "ts"},
		{"missing amount", ev(`"amount":57.20,`, ``), ReasonMissingField, "amount"},
		{"empty object", `{}`, ReasonMissingField, "tx_id"},
		{"empty card_id", ev(`"c-42"`, `""`), ReasonEmptyField, "card_id"},
		{"duplicate known key", ev(`"mcc":"5411"`, `"mcc":"5411","mcc":"5412"`), ReasonDuplicateField, "mcc"},
		{"duplicate tx_id escaped", ev(`"mcc":"5411"`, `"tx\u005fid":"t-2"`), ReasonDuplicateField, "tx_id"},
		{"duplicate unknown key", `{"x":1,"x":2,` + validEvent[1:], ReasonDuplicateField, "x"},
		{"negative amount", ev(`57.20`, `-0.01`), ReasonInvalidAmount, "amount"},
		{"overflowing amount", ev(`57.20`, `1e400`), ReasonInvalidAmount, "amount"},
		{"bad timestamp", ev(`2026-11-28T15:04:05.123Z`, `2026-11-28 15:04`), ReasonInvalidTime, "ts"},
		{"bad day", ev(`2026-11-28T15:04:05.123Z`, `2026-02-29T15:04:05Z`), ReasonInvalidTime, "ts"},
		{"leap second", ev(`2026-11-28T15:04:05.123Z`, `2026-11-28T15:04:60Z`), ReasonInvalidTime, "ts"},
		{"no zone", ev(`2026-11-28T15:04:05.123Z`, `2026-11-28T15:04:05`), ReasonInvalidTime, "ts"},
		{"fractional epoch", ev(`"2026-11-28T15:04:05.123Z"`, `1795878245123.5`), ReasonInvalidTime, "ts"},
		{"negative epoch", ev(`"2026-11-28T15:04:05.123Z"`, `-1`), ReasonInvalidTime, "ts"},
		{"before 1970", ev(`2026-11-28T15:04:05.123Z`, `1969-12-31T23:59:59Z`), ReasonInvalidTime, "ts"},
		{"future", ev(`2026-11-28T15:04:05.123Z`, `2026-11-28T15:15:01Z`), ReasonFutureTime, "ts"},
		{"future epoch", ev(`"2026-11-28T15:04:05.123Z"`, `1895878245123`), ReasonFutureTime, "ts"},
		{"lat out of range", ev(`48.85`, `90.5`), ReasonInvalidGeo, "lat"},
		{"lon out of range", ev(`2.35`, `-180.01`), ReasonInvalidGeo, "lon"},
		{"lat overflow", ev(`48.85`, `1e999`), ReasonInvalidGeo, "lat"},
		{"lat only", ev(`,"lon":2.35`, ``), ReasonInvalidGeo, "lon"},
		{"lon only", ev(`"lat":48.85,`, ``), ReasonInvalidGeo, "lat"},
		{"syntax beats semantics", `{"amount":-1,"tx_id":`, ReasonMalformedJSON, ""},
	}
	d := testDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := Event{TxID: "keep"}
			err := d.Decode([]byte(tc.in), &e)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode(%q) = %v, want *DecodeError", tc.in, err)
			}
			if de.Reason != tc.reason || de.Field != tc.field {
				t.Errorf("got reason %q field %q (%v), want %q %q", de.Reason, de.Field, err, tc.reason, tc.field)
			}
			if !strings.HasPrefix(err.Error(), "features: decode event: ") {
				t.Errorf("error text %q lacks prefix", err)
			}
			if errors.Unwrap(err) == nil {
				t.Errorf("DecodeError %v does not wrap a cause", err)
			}
			if e.TxID != "keep" {
				t.Errorf("event modified on error: %+v", e)
			}
		})
	}
}

func TestDecodeFutureSkewDisabled(t *testing.T) {
	d := MustDecoder(WithMaxFutureSkew(-1), WithClock(func() time.Time { return testNow }))
	in := strings.Replace(validEvent, "2026-11-28", "2030-01-01", 1)
	var e Event
	if err := d.Decode([]byte(in), &e); err != nil {
		t.Fatalf("Decode: %v", err)
	}
}

// TestDecodeAtClock checks the clock readings of the future-skew check:
// Decode reads the decoder's clock once per event, DecodeAt compares
// against the reading given (the zero Time: one read of its own), and Now
// reads nothing when the check is disabled.
func TestDecodeAtClock(t *testing.T) {
	ahead := []byte(strings.Replace(validEvent, "2026-11-28T15:04:05.123Z", "2026-11-28T15:15:01Z", 1)) // testNow + 5m1s
	tests := []struct {
		name      string
		skew      time.Duration
		decode    func(d *Decoder, e *Event) error
		now       time.Time // given to the decode
		reads     int       // clock reads by the decode
		wantAhead string    // the reason for ahead, "" if accepted
	}{
		{"Decode", 5 * time.Minute, func(d *Decoder, e *Event) error { return d.Decode(ahead, e) }, time.Time{}, 1, ReasonFutureTime},
		{"DecodeAt now", 5 * time.Minute, func(d *Decoder, e *Event) error { return d.DecodeAt(ahead, e, testNow) }, testNow, 0, ReasonFutureTime},
		{"DecodeAt later", 5 * time.Minute, func(d *Decoder, e *Event) error { return d.DecodeAt(ahead, e, testNow.Add(time.Second)) }, testNow.Add(time.Second), 0, ""},
		{"DecodeAt zero reads", 5 * time.Minute, func(d *Decoder, e *Event) error { return d.DecodeAt(ahead, e, time.Time{}) }, time.Time{}, 1, ReasonFutureTime},
		{"disabled", -1, func(d *Decoder, e *Event) error { return d.DecodeAt(ahead, e, d.Now()) }, time.Time{}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			d := MustDecoder(WithMaxFutureSkew(tc.skew), WithClock(func() time.Time { reads++; return testNow }))
			if tc.name == "disabled" {
				if now := d.Now(); !now.IsZero() || reads != 0 {
					t.Fatalf("Now with the check disabled: %v after %d clock reads, want the zero Time and none", now, reads)
				}
			}
			var e Event
			err := tc.decode(d, &e)
			if reads != tc.reads {
				t.Errorf("%d clock reads, want %d", reads, tc.reads)
			}
			var de *DecodeError
			switch {
			case tc.wantAhead == "" && err != nil:
				t.Errorf("decode: %v, want success", err)
			case tc.wantAhead != "" && (!errors.As(err, &de) || de.Reason != tc.wantAhead || de.Field != "ts"):
				t.Errorf("decode: %v, want %s on ts", err, tc.wantAhead)
			}
		})
	}
}

// TestDecodeAtAllocs checks that DecodeAt allocates as Decode: once (the
// backing string of all the string fields), escapes and pseudonyms
// included.
func TestDecodeAtAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	plain := []byte(validEvent)
	escaped := []byte(strings.Replace(validEvent, `"m-7"`, `"m\u002d7"`, 1))
	tests := []struct {
		name string
		dec  *Decoder
		msg  []byte
	}{
		{"plain", testDecoder(), plain},
		{"escaped", testDecoder(), escaped},
		{"pan key", MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(testPANKey(t, panKeyA))), plain},
		{"pan key rotating", MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(testPANKey(t, panKeyC+panKeyA))), plain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			for name, decode := range map[string]func(){
				"DecodeAt": func() {
					if err := tc.dec.DecodeAt(tc.msg, &e, testNow); err != nil {
						t.Fatal(err)
					}
				},
				"Decode": func() {
					if err := tc.dec.Decode(tc.msg, &e); err != nil {
						t.Fatal(err)
					}
				},
			} {
				if got := testing.AllocsPerRun(100, decode); got != 1 {
					t.Errorf("%s: %v allocations, want 1", name, got)
				}
			}
		})
	}
}

func TestDecodeLabel(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   Label
		reason string
		field  string
	}{
		{name: "valid", in: `{"tx_id":"t-1","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":true,"extra":[1]}`,
			want: Label{TxID: "t-1", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Fraud: true}},
		{name: "genuine", in: `{"tx_id":"t-1","card_id":"c","terminal_id":"m","ts":1795878245000,"fraud":false}`,
			want: Label{TxID: "t-1", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC()}},
		{name: "amount ignored", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":true,"amount":"x"}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), Fraud: true}},
		{name: "fraud as string", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":"true"}`, reason: ReasonWrongType, field: "fraud"},
		{name: "fraud as number", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":1}`, reason: ReasonWrongType, field: "fraud"},
		{name: "fraud null", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":null}`, reason: ReasonWrongType, field: "fraud"},
		{name: "missing fraud", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z"}`, reason: ReasonMissingField, field: "fraud"},
		{name: "missing terminal", in: `{"tx_id":"t","card_id":"c","ts":"2026-11-28T15:04:05Z","fraud":true}`, reason: ReasonMissingField, field: "terminal_id"},
		{name: "duplicate fraud", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":true,"fraud":false}`, reason: ReasonDuplicateField, field: "fraud"},
		{name: "bad literal", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":tru}`, reason: ReasonMalformedJSON},
		{name: "future", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2027-11-28T15:04:05Z","fraud":true}`, reason: ReasonFutureTime, field: "ts"},
		{name: "trailing", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":true}]`, reason: ReasonTrailingData},
		{name: "tx_ts", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","tx_ts":"2026-11-21T10:00:00.5+01:00","fraud":true}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC), TxTS: time.Date(2026, 11, 21, 9, 0, 0, 5e8, time.UTC), Fraud: true}},
		{name: "tx_ts epoch ms", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":1795878244999,"fraud":true}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC(), TxTS: time.UnixMilli(1795878244999).UTC(), Fraud: true}},
		{name: "tx_ts equal to ts", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":1795878245000,"fraud":true}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC(), TxTS: time.UnixMilli(1795878245000).UTC(), Fraud: true}},
		{name: "tx_ts null", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":null,"fraud":true}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC(), Fraud: true}},
		{name: "scenario", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"fraud":true,"scenario":"card\u005ftesting"}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC(), Fraud: true, Scenario: "card_testing"}},
		{name: "scenario null", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"fraud":true,"scenario":null}`,
			want: Label{TxID: "t", CardID: "c", TerminalID: "m", TS: time.UnixMilli(1795878245000).UTC(), Fraud: true}},
		{name: "scenario not a string", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"fraud":true,"scenario":3}`, reason: ReasonWrongType, field: "scenario"},
		{name: "scenario duplicate", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"fraud":true,"scenario":"a","scenario":"b"}`, reason: ReasonDuplicateField, field: "scenario"},
		{name: "tx_ts after ts", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":1795878245001,"fraud":true}`, reason: ReasonInvalidTime, field: "tx_ts"},
		{name: "tx_ts not RFC 3339", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":"2026-11-21 10:00","fraud":true}`, reason: ReasonInvalidTime, field: "tx_ts"},
		{name: "tx_ts negative", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":-1,"fraud":true}`, reason: ReasonInvalidTime, field: "tx_ts"},
		{name: "tx_ts fraction", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":1.5,"fraud":true}`, reason: ReasonInvalidTime, field: "tx_ts"},
		{name: "tx_ts bool", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":true,"fraud":true}`, reason: ReasonWrongType, field: "tx_ts"},
		{name: "tx_ts duplicate", in: `{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"tx_ts":1,"tx_ts":2,"fraud":true}`, reason: ReasonDuplicateField, field: "tx_ts"},
	}
	d := testDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Label
			err := d.DecodeLabel([]byte(tc.in), &got)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("DecodeLabel: %v", err)
				}
				if got.TxID != tc.want.TxID || got.CardID != tc.want.CardID || got.TerminalID != tc.want.TerminalID ||
					!got.TS.Equal(tc.want.TS) || !got.TxTS.Equal(tc.want.TxTS) || got.TxTS.IsZero() != tc.want.TxTS.IsZero() || got.Fraud != tc.want.Fraud {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Reason != tc.reason || de.Field != tc.field {
				t.Fatalf("got %v, want reason %q field %q", err, tc.reason, tc.field)
			}
			if !de.Label || !strings.HasPrefix(err.Error(), "features: decode label: ") {
				t.Errorf("error text %q (Label %v), want the prefix \"features: decode label: \"", err, de.Label)
			}
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	cause := errors.New("negative amount")
	shared := &DecodeError{Reason: ReasonInvalidAmount, Field: "amount", Err: cause}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"event", shared, "features: decode event: amount: negative amount"},
		{"event without field", &DecodeError{Reason: ReasonEmpty}, "features: decode event: empty_message"},
		{"label", AsLabelError(shared), "features: decode label: amount: negative amount"},
		{"label twice", AsLabelError(AsLabelError(shared)), "features: decode label: amount: negative amount"},
		{"label without field", AsLabelError(&DecodeError{Reason: ReasonEmpty}), "features: decode label: empty_message"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if shared.Label {
		t.Error("AsLabelError changed the error it was given (a shared value)")
	}
	if err := errors.New("other"); AsLabelError(err) != err {
		t.Error("AsLabelError changed an error that is not a *DecodeError")
	}
	if AsLabelError(nil) != nil {
		t.Error("AsLabelError(nil) != nil")
	}
}

func TestAppendJSONRoundTrip(t *testing.T) {
	d := MustDecoder(WithMaxFutureSkew(-1))
	events := []Event{
		{TxID: "t-1", CardID: "c\"\\\n\x01😀", TerminalID: "m", TS: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), Amount: 1e-7},
		{TxID: "t-2", CardID: "c", TerminalID: "m", TS: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Amount: 123456.78,
			Currency: "EUR", MCC: "5411", Channel: "pos", Country: "FR", Lat: -33.9, Lon: 151.2, HasGeo: true},
		{TxID: "t-3", CardID: "c", TerminalID: "m", TS: time.Unix(0, 0), Amount: 1.7976931348623157e308, Lat: 0, Lon: 0, HasGeo: true},
	}
	for _, e := range events {
		b := e.AppendJSON(nil)
		var got Event
		if err := d.Decode(b, &got); err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		want := e
		want.TS = e.TS.UTC()
		if !eventsEqual(got, want) {
			t.Errorf("round trip of %s: got %+v, want %+v", b, got, want)
		}
	}
	l := Label{TxID: "t\u2028", CardID: "c", TerminalID: "m", TS: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Fraud: true}
	b := l.AppendJSON(nil)
	var got Label
	if err := d.DecodeLabel(b, &got); err != nil {
		t.Fatalf("DecodeLabel(%s): %v", b, err)
	}
	if got.TxID != l.TxID || !got.TS.Equal(l.TS) || !got.Fraud || got.CardID != l.CardID || got.TerminalID != l.TerminalID || !got.TxTS.IsZero() {
		t.Errorf("label round trip: got %+v, want %+v", got, l)
	}
	l.TxTS = time.Date(2025, 12, 30, 1, 2, 3, 4, time.FixedZone("y", -7200))
	b = l.AppendJSON(nil)
	if err := d.DecodeLabel(b, &got); err != nil || !got.TxTS.Equal(l.TxTS) || got.TxTS.Location() != time.UTC {
		t.Errorf("label round trip of %s: got %+v, %v", b, got, err)
	}
	l.Scenario = "account_takeover"
	b = l.AppendJSON(nil)
	if err := d.DecodeLabel(b, &got); err != nil || got.Scenario != l.Scenario {
		t.Errorf("label round trip of %s: got scenario %q, want %q (%v)", b, got.Scenario, l.Scenario, err)
	}
	var ev Event
	if err := d.Decode([]byte(`{"tx_id":"t","card_id":"c","terminal_id":"m","ts":1795878245000,"amount":1,"scenario":7}`), &ev); err != nil {
		t.Errorf("an event's scenario is an unknown field, ignored: %v", err)
	}
	if s := string((&Event{TxID: "\xff"}).AppendJSON(nil)); !strings.Contains(s, `"tx_id":"\ufffd"`) {
		t.Errorf("invalid UTF-8 not replaced: %s", s)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(validEvent))
	f.Add([]byte(`{"tx_id":"t","ts":1795878245123,"card_id":"c\ud83d\ude00","terminal_id":"m","amount":0,"x":[{"y":null}]}`))
	f.Add([]byte(`{"tx_id":"t","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05+01:00","fraud":true}`))
	f.Add([]byte(`{"amount":1e400}`))
	f.Add([]byte("{\"tx_id\":\"\xff\"}"))
	f.Add([]byte(`{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"4111 1111 1111 1111","terminal_id":"m","amount":1,"cvv":"123"}`))
	f.Add([]byte(`{"tx_id":"t","ts":"2026-11-28T15:04:05Z","card_id":"p1:ka:AAAAAAAAAAAAAAAAAAAAAAAA","terminal_id":"\u00341111111111111111","amount":1}`))
	d := MustDecoder(WithClock(func() time.Time { return testNow }))
	key := testPANKey(f, panKeyA)
	kd := MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(key))
	f.Fuzz(func(t *testing.T, b []byte) {
		// With a PAN key: the same verdict but for the card-number policy,
		// card_id always a pseudonym, and a dead letter's redacted form is
		// valid JSON without a card number in clear.
		var ke Event
		if err := kd.Decode(b, &ke); err == nil {
			if _, ok := PseudonymKeyID(ke.CardID); !ok {
				t.Fatalf("card_id %q is not a pseudonym", ke.CardID)
			}
			for _, s := range []string{ke.TxID, ke.TerminalID, ke.Currency, ke.MCC, ke.Channel, ke.Country} {
				if PANIn(s) {
					t.Fatalf("decoded %+v holds a card number", ke)
				}
			}
		}
		for _, dec := range []*Decoder{d, kd} {
			if red, ok := dec.AppendRedactedEvent(nil, b); ok {
				if !json.Valid(red) {
					t.Fatalf("redacted %q to invalid JSON %s", b, red)
				}
				if panIn(red) {
					t.Fatalf("redacted %q to %s, which holds a card number", b, red)
				}
			}
		}
		// DecodeAt against the clock's reading gives Decode's verdict
		// and event, with and without a PAN key.
		for _, dec := range []*Decoder{d, kd} {
			var want, at Event
			werr := dec.Decode(b, &want)
			aerr := dec.DecodeAt(b, &at, dec.Now())
			if fmt.Sprint(werr) != fmt.Sprint(aerr) {
				t.Fatalf("Decode %v, DecodeAt %v", werr, aerr)
			}
			if werr == nil && !eventsEqual(want, at) {
				t.Fatalf("Decode %+v, DecodeAt %+v", want, at)
			}
		}
		var pe Event
		if err := d.Decode(b, &pe); err == nil && PANIn(pe.CardID) {
			t.Fatalf("decoded a card number in clear: %+v", pe)
		}
		var e Event
		if err := d.Decode(b, &e); err == nil {
			out := e.AppendJSON(nil)
			var again Event
			if err := d.Decode(out, &again); err != nil {
				t.Fatalf("re-decode of %s (from %q): %v", out, b, err)
			}
			if !eventsEqual(e, again) {
				t.Fatalf("round trip: %+v != %+v", e, again)
			}
		} else {
			var de *DecodeError
			if !errors.As(err, &de) || de.Reason == "" {
				t.Fatalf("error %v is not a *DecodeError with a reason", err)
			}
		}
		var l Label
		if err := d.DecodeLabel(b, &l); err == nil {
			var again Label
			if err := d.DecodeLabel(l.AppendJSON(nil), &again); err != nil || again != l && !(again.TS.Equal(l.TS) && again.TxID == l.TxID && again.Fraud == l.Fraud) {
				t.Fatalf("label round trip: %+v -> %+v (%v)", l, again, err)
			}
		}
	})
}

// BenchmarkDecode measures Decode against encoding/json (the reference,
// measured in the same run) on the contract's example event.
func BenchmarkDecode(b *testing.B) {
	msg := []byte(strings.Replace(validEvent, "2026-11-28T15:04:05.123Z", "2026-11-28T10:04:05.123Z", 1))
	b.Run("strict", func(b *testing.B) {
		d := MustDecoder()
		var e Event
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Decode(msg, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict_pan_key", func(b *testing.B) {
		d := MustDecoder(WithPANKey(testPANKey(b, panKeyA)))
		var e Event
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Decode(msg, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict_pan_key_rotating", func(b *testing.B) { // two keys: a second HMAC (the alias)
		d := MustDecoder(WithPANKey(testPANKey(b, panKeyC+panKeyA)))
		var e Event
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Decode(msg, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		var v struct {
			TxID       string    `json:"tx_id"`
			TS         time.Time `json:"ts"`
			CardID     string    `json:"card_id"`
			TerminalID string    `json:"terminal_id"`
			Amount     float64   `json:"amount"`
			Currency   string    `json:"currency"`
			MCC        string    `json:"mcc"`
			Channel    string    `json:"channel"`
			Country    string    `json:"country"`
			Lat        *float64  `json:"lat"`
			Lon        *float64  `json:"lon"`
		}
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := json.Unmarshal(msg, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
