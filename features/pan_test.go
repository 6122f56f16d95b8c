package features

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Test keys: 32 bytes each, in hex and in base64.
const (
	panKeyA = "ka 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
	panKeyB = "kb AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
)

func testPANKey(t testing.TB, text string) *PANKey {
	t.Helper()
	k, err := ParsePANKey([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Luhn-valid card numbers of the tests.
const (
	testPAN     = "4111111111111111" // Visa test number
	testPANAmex = "378282246310005"
)

func TestPANIn(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"visa", testPAN, true},
		{"amex", testPANAmex, true},
		{"13 digits", "4222222222222", true},
		{"19 digits", "6011000990139424000", luhn([]byte("6011000990139424000"))},
		{"luhn fails", "4111111111111112", false},
		{"12 digits", "411111111111", false},
		{"20 digits", "41111111111111110000", false},
		{"spaces 4-4-4-4", "4111 1111 1111 1111", true},
		{"hyphens 4-4-4-4", "4111-1111-1111-1111", true},
		{"amex 4-6-5", "3782-822463-10005", true},
		{"mixed separators", "4111-1111 1111-1111", false},
		{"double space", "4111  1111 1111 1111", false},
		{"other grouping", "41111111-11111111", false},
		{"date-like id", "20261128-000123", false},
		{"letters around", "card4111111111111111x", true},
		{"escaped digits", `\u0034111111111111111`, true},
		{"in a sentence", "pan is 4111 1111 1111 1111.", true},
		{"card id", "c-42", false},
		{"decimal fraction", "6.2499999999999995e-06", false},
		{"after a dot", "v.4111111111111111", true},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := panIn([]byte(tc.in)); got != tc.want {
				t.Errorf("panIn(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParsePANKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		ids     []string
		wantErr string
	}{
		{"hex", panKeyA, []string{"ka"}, ""},
		{"base64 with comment", "# rotated 2026-12\n\n" + panKeyB, []string{"kb"}, ""},
		{"rotation", panKeyB + panKeyA, []string{"kb", "ka"}, ""},
		{"three keys", panKeyB + panKeyA + strings.Replace(panKeyA, "ka", "kc", 1), nil, "more than two keys"},
		{"same id twice", panKeyA + panKeyA, nil, "used twice"},
		{"short key", "k1 0001020304050607\n", nil, "want at least 32"},
		{"bad id", "k:1 " + panKeyA[3:], nil, "key id"},
		{"one field", "k1\n", nil, "want"},
		{"not base64", "k1 !!!!\n", nil, "neither hex nor base64"},
		{"empty", "# nothing\n", nil, "no key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePANKey([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrPANKey) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an ErrPANKey error with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "0001020304") || strings.Contains(err.Error(), "AAECAwQF") {
					t.Errorf("error shows the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(k.KeyIDs(), ","); got != strings.Join(tc.ids, ",") {
				t.Errorf("ids %s, want %v", got, tc.ids)
			}
		})
	}
	// Hex and base64 of the same bytes are the same key.
	a, b := testPANKey(t, panKeyA), testPANKey(t, strings.Replace(panKeyB, "kb", "ka", 1))
	if a.Pseudonym(testPAN) != b.Pseudonym(testPAN) {
		t.Errorf("hex and base64 spellings of one key give different pseudonyms")
	}
}

func TestLoadPANKeyMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o400, true}, {0o600, true}, {0o640, true}, {0o644, false}, {0o602, false}} {
		path := filepath.Join(dir, tc.mode.String())
		if err := os.WriteFile(path, []byte(panKeyA), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPANKey(path)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrPANKey)) {
			t.Errorf("mode %v: got %v, want ok=%v", tc.mode, err, tc.ok)
		}
	}
	if _, err := LoadPANKey(filepath.Join(dir, "missing")); !errors.Is(err, ErrPANKey) {
		t.Errorf("missing file: %v", err)
	}
}

func TestDecodePAN(t *testing.T) {
	ka, kab := testPANKey(t, panKeyA), testPANKey(t, panKeyB+panKeyA)
	pa := ka.Pseudonym(testPAN)
	if !strings.HasPrefix(pa, "p1:ka:") || len(pa) != len("p1:ka:")+24 || strings.Contains(pa, testPAN) {
		t.Fatalf("pseudonym %q", pa)
	}
	if id, ok := PseudonymKeyID(pa); !ok || id != "ka" {
		t.Fatalf("PseudonymKeyID(%q) = %q, %v", pa, id, ok)
	}
	pb := kab.Pseudonym(testPAN)
	if pb == pa || !strings.HasPrefix(pb, "p1:kb:") {
		t.Fatalf("pseudonym under the rotated key file %q (under ka %q)", pb, pa)
	}
	pother := testPANKey(t, strings.Replace(panKeyA, "ka", "kz", 1)).Pseudonym(testPAN)
	ev := func(field, value string) string {
		return strings.Replace(strings.Replace(validEvent, `"card_id":"c-42"`, `"card_id":"c-9"`, 1), `"`+field+`":"`, `"`+field+`":"`+value, 1)
	}
	card := func(v string) string { return strings.Replace(validEvent, `"card_id":"c-42"`, `"card_id":"`+v+`"`, 1) }
	tests := []struct {
		name     string
		key      *PANKey
		in       string
		wantCard string
		reason   string
		field    string
	}{
		{"no key, plain card id", nil, validEvent, "c-42", "", ""},
		{"no key, PAN card id", nil, card(testPAN), "", ReasonClearPAN, "card_id"},
		{"no key, grouped PAN", nil, card("4111 1111 1111 1111"), "", ReasonClearPAN, "card_id"},
		{"no key, escaped PAN", nil, card(`\u0034111111111111111`), "", ReasonClearPAN, "card_id"},
		{"no key, pseudonym passes", nil, card(pa), pa, "", ""},
		{"key, PAN card id", ka, card(testPAN), pa, "", ""},
		{"key, escaped PAN is the same card", ka, card(`\u0034111111111111111`), pa, "", ""},
		{"key, plain card id", ka, validEvent, ka.Pseudonym("c-42"), "", ""},
		{"key, own pseudonym passes", ka, card(pa), pa, "", ""},
		{"rotation, new key", kab, card(testPAN), pb, "", ""},
		{"rotation, previous key's pseudonym passes", kab, card(pa), pa, "", ""},
		{"key, foreign pseudonym", ka, card(pother), "", ReasonPseudonymKey, "card_id"},
		{"key, PAN in terminal_id", ka, ev("terminal_id", testPANAmex), "", ReasonClearPAN, "terminal_id"},
		{"no key, PAN in tx_id", nil, ev("tx_id", testPAN), "", ReasonClearPAN, "tx_id"},
		{"no key, PAN in mcc", nil, ev("mcc", "4111-1111-1111-1111/"), "", ReasonClearPAN, "mcc"},
		{"no key, PAN in unknown field ignored", nil, strings.Replace(validEvent, `{`, `{"pan":"`+testPAN+`","cvv":"123",`, 1), "c-42", "", ""},
		{"no key, Luhn-invalid 16 digits", nil, card("4111111111111112"), "4111111111111112", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []DecoderOption{WithClock(func() time.Time { return testNow })}
			if tc.key != nil {
				opts = append(opts, WithPANKey(tc.key))
			}
			d := MustDecoder(opts...)
			var e Event
			err := d.Decode([]byte(tc.in), &e)
			if tc.reason != "" {
				var de *DecodeError
				if !errors.As(err, &de) || de.Reason != tc.reason || de.Field != tc.field {
					t.Fatalf("got %v, want reason %s field %s", err, tc.reason, tc.field)
				}
				if strings.Contains(err.Error(), "4111") || strings.Contains(err.Error(), "3782") {
					t.Errorf("error shows the card number: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.CardID != tc.wantCard {
				t.Errorf("card_id %q, want %q", e.CardID, tc.wantCard)
			}
			// A label of the same card gets the same pseudonym.
			lb := `{"tx_id":"t-1","card_id":` + strconvQuote(t, tc.in) + `,"terminal_id":"m-7","ts":"2026-11-28T15:04:05Z","fraud":true}`
			var l Label
			if err := d.DecodeLabel([]byte(lb), &l); err != nil {
				t.Fatal(err)
			}
			if l.CardID != e.CardID {
				t.Errorf("label card_id %q, event %q", l.CardID, e.CardID)
			}
		})
	}
}

// strconvQuote returns the raw JSON string literal of card_id in event.
func strconvQuote(t *testing.T, event string) string {
	t.Helper()
	_, rest, ok := strings.Cut(event, `"card_id":`)
	if !ok {
		t.Fatal("no card_id")
	}
	end := strings.Index(rest[1:], `"`)
	return rest[:end+2]
}

func TestDecodePANAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race, sync.Pool drops pooled HMACs at random")
	}
	msg := []byte(strings.Replace(validEvent, `"card_id":"c-42"`, `"card_id":"`+testPAN+`"`, 1))
	d := MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(testPANKey(t, panKeyA)))
	var e Event
	if err := d.Decode(msg, &e); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() { d.Decode(msg, &e) }); n > 1 {
		t.Errorf("Decode with a PAN key: %v allocations per event, want 1 (the strings)", n)
	}
}

func TestRedact(t *testing.T) {
	ka := testPANKey(t, panKeyA)
	plain := MustDecoder()
	keyed := MustDecoder(WithPANKey(ka))
	tests := []struct {
		name  string
		d     *Decoder
		label bool
		in    string
		want  string // "" for not redactable
	}{
		{"unknown fields dropped", plain, false,
			`{"tx_id":"t-1","cvv":"123","card_id":"c-1","track2":{"a":1},"amount":-3}`,
			`{"tx_id":"t-1","card_id":"c-1","amount":-3}`},
		{"card number masked", plain, false,
			`{"tx_id":"t-1","card_id":"` + testPAN + `","terminal_id":"4111 1111 1111 1111"}`,
			`{"tx_id":"t-1","card_id":"[redacted: clear_pan]","terminal_id":"[redacted: clear_pan]"}`},
		{"number card id masked", plain, false,
			`{"card_id":` + testPAN + `}`, `{"card_id":"[redacted: clear_pan]"}`},
		{"card id pseudonymised", keyed, false,
			`{"card_id":"` + testPAN + `","amount":"12"}`, `{"card_id":"` + ka.Pseudonym(testPAN) + `","amount":"12"}`},
		{"compound and long values", plain, false,
			`{"tx_id":["` + testPAN + `"],"mcc":"` + strings.Repeat("x", 300) + `"}`,
			`{"tx_id":"[redacted: not a scalar]","mcc":"[redacted: 302 bytes]"}`},
		{"escaped key", plain, false, `{"card\u005fid":"c"}`, `{"card_id":"c"}`},
		{"label fields", plain, true, `{"tx_id":"t","fraud":"yes","amount":1}`, `{"tx_id":"t","fraud":"yes"}`},
		{"empty object", plain, false, ` {} `, `{}`},
		{"malformed", plain, false, `{"tx_id":"t","card_id":"` + testPAN, ""},
		{"not an object", plain, false, `["` + testPAN + `"]`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.d.AppendRedactedEvent
			if tc.label {
				f = tc.d.AppendRedactedLabel
			}
			got, ok := f([]byte("prefix"), []byte(tc.in))
			if tc.want == "" {
				if ok || string(got) != "prefix" {
					t.Errorf("got %s, %v; want nothing", got, ok)
				}
				return
			}
			if !ok || string(got) != "prefix"+tc.want {
				t.Errorf("got %s, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

func TestDigestAndSafeKey(t *testing.T) {
	ka := testPANKey(t, panKeyA)
	plain, keyed := MustDecoder(), MustDecoder(WithPANKey(ka))
	msg := []byte(`{"card_id":"c-1"}`)
	if d, id, ok := plain.AppendDigest(nil, msg); !ok || id != "" || len(d) != 32 {
		t.Errorf("plain digest: %x %q %v", d, id, ok)
	}
	if d, id, ok := plain.AppendDigest(nil, []byte(`{"card_id":"`+testPAN+`"}`)); ok || len(d) != 0 {
		t.Errorf("plain digest of a message with a card number: %x %q %v, want none", d, id, ok)
	}
	d1, id, ok := keyed.AppendDigest(nil, []byte(`{"card_id":"`+testPAN+`"}`))
	if !ok || id != "ka" || len(d1) != 32 {
		t.Errorf("keyed digest: %x %q %v", d1, id, ok)
	}
	for _, tc := range []struct {
		name string
		d    *Decoder
		key  string
		want string
	}{
		{"plain key kept", plain, "c-1", "c-1"},
		{"card number dropped", plain, testPAN, ""},
		{"keyed: pseudonym", keyed, testPAN, ka.Pseudonym(testPAN)},
		{"keyed: own pseudonym kept", keyed, ka.Pseudonym(testPAN), ka.Pseudonym(testPAN)},
		{"empty", keyed, "", ""},
	} {
		if got := string(tc.d.AppendSafeKey(nil, []byte(tc.key))); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestPseudonymKeyIDNoAlloc: the score record of every event asks for its
// card's key id: no allocation, whatever the key id's length.
func TestPseudonymKeyIDNoAlloc(t *testing.T) {
	card := PseudonymPrefix + "rotation-2026-12:" + strings.Repeat("A", pseudonymMACChars)
	if id, ok := PseudonymKeyID(card); !ok || id != "rotation-2026-12" {
		t.Fatalf("PseudonymKeyID(%q) = %q, %v", card, id, ok)
	}
	if n := testing.AllocsPerRun(100, func() { PseudonymKeyID(card) }); n != 0 {
		t.Errorf("PseudonymKeyID: %v allocations per call, want 0", n)
	}
	for _, bad := range []string{"p1::" + strings.Repeat("A", pseudonymMACChars), "p1:k1:short", "c-42", "p1:k1:" + strings.Repeat("*", pseudonymMACChars)} {
		if id, ok := PseudonymKeyID(bad); ok {
			t.Errorf("PseudonymKeyID(%q) = %q, want none", bad, id)
		}
	}
}

// TestPANInFakePseudonym: a card number hidden in the form of a pseudonym
// ("p1:<id>:" and 24 characters) is not taken for one.
func TestPANInFakePseudonym(t *testing.T) {
	fake := PseudonymPrefix + "k1:" + testPAN + strings.Repeat("A", pseudonymMACChars-len(testPAN))
	if id, ok := PseudonymKeyID(fake); ok {
		t.Fatalf("PseudonymKeyID(%q) = %q: a card number passed as a pseudonym", fake, id)
	}
}
