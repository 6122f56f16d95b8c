package features

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// panKeyC has a secret of its own (panKeyA and panKeyB share theirs), so
// that a pseudonym under the wrong secret cannot pass for the right one.
const panKeyC = "kc 202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n"

func TestDecodeCardAlias(t *testing.T) {
	ka, kc, kca := testPANKey(t, panKeyA), testPANKey(t, panKeyC), testPANKey(t, panKeyC+panKeyA)
	card := func(v string) []byte {
		return []byte(strings.Replace(validEvent, `"card_id":"c-42"`, `"card_id":"`+v+`"`, 1))
	}
	label := func(v string) []byte {
		return []byte(`{"tx_id":"t-1","card_id":"` + v + `","terminal_id":"m-7","ts":"2026-11-28T15:04:05Z","fraud":true}`)
	}
	tests := []struct {
		name            string
		key             *PANKey
		in              string
		wantID, wantAls string
	}{
		{"one key: no alias", ka, testPAN, ka.Pseudonym(testPAN), ""},
		{"rotation: PAN", kca, testPAN, kc.Pseudonym(testPAN), ka.Pseudonym(testPAN)},
		{"rotation: escaped PAN", kca, `\u0034111111111111111`, kc.Pseudonym(testPAN), ka.Pseudonym(testPAN)},
		{"rotation: plain card id", kca, "c-42", kc.Pseudonym("c-42"), ka.Pseudonym("c-42")},
		{"rotation: old pseudonym kept, no alias", kca, ka.Pseudonym(testPAN), ka.Pseudonym(testPAN), ""},
		{"rotation: new pseudonym kept, no alias", kca, kc.Pseudonym(testPAN), kc.Pseudonym(testPAN), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(tc.key))
			var e Event
			if err := d.Decode(card(tc.in), &e); err != nil {
				t.Fatal(err)
			}
			if e.CardID != tc.wantID || e.CardAlias != tc.wantAls {
				t.Errorf("card_id %q alias %q, want %q %q", e.CardID, e.CardAlias, tc.wantID, tc.wantAls)
			}
			if e.TxID != "t-1" || e.TerminalID != "m-7" || e.Currency != "EUR" {
				t.Errorf("other fields changed: %+v", e)
			}
			if tc.wantAls != "" && bytes.Contains(e.AppendJSON(nil), []byte(tc.wantAls)) {
				t.Errorf("AppendJSON writes the alias: %s", e.AppendJSON(nil))
			}
			var l Label
			if err := d.DecodeLabel(label(tc.in), &l); err != nil {
				t.Fatal(err)
			}
			if l.CardID != tc.wantID || l.CardAlias != tc.wantAls {
				t.Errorf("label card_id %q alias %q, want %q %q", l.CardID, l.CardAlias, tc.wantID, tc.wantAls)
			}
			if tc.wantAls != "" && bytes.Contains(l.AppendJSON(nil), []byte(tc.wantAls)) {
				t.Errorf("label AppendJSON writes the alias")
			}
		})
	}
}

func TestDecodeCardAliasAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race, sync.Pool drops pooled HMACs at random")
	}
	msg := []byte(strings.Replace(validEvent, `"card_id":"c-42"`, `"card_id":"`+testPAN+`"`, 1))
	d := MustDecoder(WithClock(func() time.Time { return testNow }), WithPANKey(testPANKey(t, panKeyC+panKeyA)))
	var e Event
	if err := d.Decode(msg, &e); err != nil || e.CardAlias == "" {
		t.Fatalf("%v, alias %q", err, e.CardAlias)
	}
	if n := testing.AllocsPerRun(200, func() { d.Decode(msg, &e) }); n > 1 {
		t.Errorf("Decode during a rotation: %v allocations per event, want 1 (the strings)", n)
	}
}

// rotationStream returns n events of 60 cards over 20 days as JSON
// messages in time order (some out of order within the lateness), and fraud
// labels for some of them, each with the index of the first event at or
// after its time. Labels of the second half carry, one in two, the card's
// pseudonym under oldKey instead of the card id (pseudonymised upstream,
// e.g. from an alert made before the rotation).
func rotationStream(rng *rand.Rand, n int, start time.Time, oldKey *PANKey) (events [][]byte, labels [][]byte, labelAt []int) {
	span := 20 * 24 * time.Hour
	countries := []string{"FR", "DE", "ES"}
	type lb struct {
		at  time.Time
		msg []byte
	}
	var pending []lb
	for i := range n {
		ts := start.Add(span * time.Duration(i) / time.Duration(n))
		if i%7 == 3 {
			ts = ts.Add(-time.Duration(rng.IntN(30)) * time.Minute)
		}
		card := fmt.Sprintf("card-%d", rng.IntN(60))
		term := fmt.Sprintf("m-%d", rng.IntN(12))
		ev := Event{TxID: fmt.Sprintf("t-%d", i), CardID: card, TerminalID: term, TS: ts,
			Amount: math.Round(rng.ExpFloat64()*4000) / 100, Country: countries[rng.IntN(3)]}
		if rng.IntN(2) == 0 {
			ev.Lat, ev.Lon, ev.HasGeo = 40+rng.Float64()*10, rng.Float64()*10, true
		}
		events = append(events, ev.AppendJSON(nil))
		if rng.IntN(8) == 0 {
			l := Label{TxID: ev.TxID, CardID: card, TerminalID: term, TS: ts.Add(time.Duration(1+rng.IntN(72)) * time.Hour), Fraud: true}
			if i > n/2 && rng.IntN(2) == 0 {
				l.CardID = oldKey.Pseudonym(card)
			}
			pending = append(pending, lb{l.TS, l.AppendJSON(nil)})
			if rng.IntN(10) == 0 { // a duplicate
				pending = append(pending, lb{l.TS.Add(time.Minute), l.AppendJSON(nil)})
			}
		}
		for k := 0; k < len(pending); {
			if pending[k].at.After(ts) {
				k++
				continue
			}
			labels = append(labels, pending[k].msg)
			labelAt = append(labelAt, i)
			pending = append(pending[:k], pending[k+1:]...)
		}
	}
	return events, labels, labelAt
}

// TestRotationKeepsCardState runs one history through two processes: A
// decodes everything with the key file [k1] (it never rotates); B decodes
// the first half with [k1] and the second with [k2, k1] (a rotation half
// way). Every row of B — Peek before Update, Update, Peek after it (a
// re-delivery) — must equal A's bit for bit: the cards seen before the
// rotation keep their windows, heads, labels (spec with card fraud
// features; labels sent under the old pseudonym after the rotation
// included), through a snapshot written and read back after the rotation.
// The state is moved, not copied: B ends with as many cards as A, and
// counts one rekey per card seen on both sides of the rotation. A process
// that drops the alias (what the decoder gave before) must differ.
func TestRotationKeepsCardState(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1200
	}
	cardSpec := DefaultSpec()
	cardSpec.Features = append(cardSpec.Features,
		FeatureSpec{Name: "card_fraud_count_30d", Agg: AggFraudCount, Entity: "card_id", Window: Duration(30 * 24 * time.Hour)},
		FeatureSpec{Name: "card_fraud_rate_7d", Agg: AggFraudRate, Entity: "card_id", Window: Duration(7 * 24 * time.Hour)},
	)
	if err := cardSpec.Validate(); err != nil {
		t.Fatal(err)
	}
	k1, k21 := testPANKey(t, panKeyA), testPANKey(t, panKeyC+panKeyA)
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default", nil},
		{"spec engine", []Option{withSpec(DefaultSpec(), true)}},
		{"spec with card labels", []Option{WithSpec(cardSpec), WithStripes(4)}},
		{"short ttl", []Option{WithTTL(3 * 24 * time.Hour)}},
		{"spec short ttl", []Option{WithSpec(cardSpec), WithTTL(3 * 24 * time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, labels, labelAt := rotationStream(rand.New(rand.NewPCG(7, 7)), n, start, k1)
			decOpts := []DecoderOption{WithMaxFutureSkew(-1)}
			decA := MustDecoder(append(decOpts, WithPANKey(k1))...)
			decB := decA
			rot := n / 2
			cut := rot + n/4 // B's snapshot, after the rotation
			newProc := func() *Builder { return MustBuilder(MustShared(tc.opts...), tc.opts...) }
			a, b, cold := newProc(), newProc(), newProc()
			w := a.Width()
			rowA, rowB, rowC := make([]float32, w), make([]float32, w), make([]float32, w)
			before, after := map[string]bool{}, map[string]bool{}
			li, differ := 0, 0
			var moved uint64
			for i, msg := range events {
				if i == rot {
					decB = MustDecoder(append(decOpts, WithPANKey(k21))...)
				}
				if i == cut {
					moved = b.Rekeyed() // a snapshot does not carry the counter
					b = restore(t, b, tc.opts)
				}
				for ; li < len(labels) && labelAt[li] == i; li++ {
					var la, lb Label
					if err := decA.DecodeLabel(labels[li], &la); err != nil {
						t.Fatal(err)
					}
					if err := decB.DecodeLabel(labels[li], &lb); err != nil {
						t.Fatal(err)
					}
					a.shared.ApplyLabel(&la)
					b.shared.ApplyLabel(&lb)
					cold.shared.ApplyLabel(&lb)
				}
				var ea, eb Event
				if err := decA.Decode(msg, &ea); err != nil {
					t.Fatal(err)
				}
				if err := decB.Decode(msg, &eb); err != nil {
					t.Fatal(err)
				}
				if i >= rot {
					after[ea.CardID] = true
					if eb.CardAlias != ea.CardID || !strings.HasPrefix(eb.CardID, "p1:kc:") {
						t.Fatalf("event %d: card_id %q alias %q, want a kc pseudonym and alias %q", i, eb.CardID, eb.CardAlias, ea.CardID)
					}
				} else {
					before[ea.CardID] = true
				}
				for step, f := range []func(*Builder, *Event, []float32){(*Builder).Peek, (*Builder).Update, (*Builder).Peek} {
					f(a, &ea, rowA)
					f(b, &eb, rowB)
					if la, lb := a.LastLate(), b.LastLate(); la != lb {
						t.Fatalf("event %d step %d: LastLate %v, without rotation %v", i, step, lb, la)
					}
					for k := range rowA {
						if math.Float32bits(rowA[k]) != math.Float32bits(rowB[k]) {
							t.Fatalf("event %d step %d (rotation at %d): %s = %v, without rotation %v", i, step, rot, b.Names()[k], rowB[k], rowA[k])
						}
					}
				}
				ec := eb
				ec.CardAlias = ""
				cold.Update(&ec, rowC)
				if !slicesEqualBits(rowA, rowC) {
					differ++
				}
			}
			if li != len(labels) {
				t.Fatalf("applied %d of %d labels", li, len(labels))
			}
			if a.Cards() != b.Cards() {
				t.Errorf("cards held: %d after the rotation, %d without: state copied, not moved", b.Cards(), a.Cards())
			}
			if ttl := MustShared(tc.opts...).TTL(); ttl > 20*24*time.Hour {
				both := 0
				for c := range after {
					if before[c] {
						both++
					}
				}
				if got := moved + b.Rekeyed(); got != uint64(both) || both == 0 {
					t.Errorf("Rekeyed = %d, want %d (cards seen before and after the rotation)", got, both)
				}
			} else if moved+b.Rekeyed() == 0 {
				t.Error("Rekeyed = 0")
			}
			if a.Rekeyed() != 0 {
				t.Errorf("no rotation, Rekeyed = %d", a.Rekeyed())
			}
			if differ < (n-rot)/4 {
				t.Fatalf("without the alias only %d rows of %d differ: the test does not see the rotation", differ, n-rot)
			}
			t.Logf("%d cards moved; without the alias %d of %d rows after the rotation would differ", moved+b.Rekeyed(), differ, n-rot)
		})
	}
}

func slicesEqualBits(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// restore writes b's state (Builder and Shared) and reads it into a new
// process.
func restore(t *testing.T, b *Builder, opts []Option) *Builder {
	t.Helper()
	var sb, bb bytes.Buffer
	if err := b.shared.WriteState(&sb); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteState(&bb); err != nil {
		t.Fatal(err)
	}
	to := MustBuilder(MustShared(opts...), opts...)
	if err := to.shared.ReadState(&sb); err != nil {
		t.Fatal(err)
	}
	if err := to.ReadState(&bb); err != nil {
		t.Fatal(err)
	}
	return to
}
