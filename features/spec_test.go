package features

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error
	}{
		{"empty", "", "empty document"},
		{"no features", "features: []", "no features"},
		{"unknown top-level key", "featurez: []", "field featurez not found"},
		{"unknown feature key", "features: [{name: a, agg: count, entity: card_id, window: 1h, colour: red}]", "field colour not found"},
		{"two documents", "features: [{name: a, agg: hour_sin}]\n---\nfeatures: []", "more than one"},
		{"missing name", "features: [{agg: count, entity: card_id, window: 1h}]", `feature "#1": missing name`},
		{"bad name", "features: [{name: Card-Count, agg: count, entity: card_id, window: 1h}]", `feature "Card-Count": name must be`},
		{"unknown aggregation", "features: [{name: a, agg: median, entity: card_id, window: 1h}]", `feature "a": unknown aggregation "median"`},
		{"missing agg", "features: [{name: a}]", `feature "a": missing agg`},
		{"unknown entity", "features: [{name: a, agg: count, entity: user_id, window: 1h}]", `feature "a": unknown or unsupported entity field "user_id"`},
		{"missing entity", "features: [{name: a, agg: count, window: 1h}]", `feature "a": agg count needs an entity`},
		{"entity on calendar", "features: [{name: a, agg: weekend, entity: card_id}]", `feature "a": agg weekend takes no entity`},
		{"unknown input field", "features: [{name: a, agg: sum, entity: card_id, field: price, window: 1h}]", `feature "a": unknown or unsupported input field "price"`},
		{"string input to sum", "features: [{name: a, agg: sum, entity: card_id, field: mcc, window: 1h}]", `unsupported input field "mcc"`},
		{"missing field", "features: [{name: a, agg: mean, entity: card_id, window: 1h}]", `feature "a": agg mean needs a field`},
		{"field on count", "features: [{name: a, agg: count, entity: card_id, field: amount, window: 1h}]", "agg count takes no field"},
		{"zero window", "features: [{name: a, agg: count, entity: card_id, window: 0s}]", `feature "a": agg count needs a window`},
		{"negative window", "features: [{name: a, agg: count, entity: card_id, window: -1h}]", `feature "a": window -1h0m0s must be > 0`},
		{"bad duration", "features: [{name: a, agg: count, entity: card_id, window: 1week}]", `bad duration "1week"`},
		{"negative offset", "features: [{name: a, agg: count, entity: card_id, window: 1h, offset: -1d}]", `feature "a": offset -24h0m0s must be >= 0`},
		{"window on since_prev", "features: [{name: a, agg: since_prev, entity: card_id, window: 1h}]", "takes no window or offset"},
		{"ratio without window", "features: [{name: a, agg: ratio, entity: card_id, field: amount}]", `feature "a": agg ratio needs a window`},
		{"zscore without window", "features: [{name: a, agg: zscore, entity: card_id, field: amount}]", `feature "a": agg zscore needs a window`},
		{"duplicate names", "features: [{name: a, agg: hour_sin}, {name: a, agg: hour_cos}]", `feature "a": duplicate name (also feature #1)`},
		{"distinct without of", "features: [{name: a, agg: distinct, entity: card_id, window: 1d}]", `feature "a": agg distinct needs ` + "`of`"},
		{"distinct of unknown", "features: [{name: a, agg: distinct, entity: card_id, of: ip, window: 1d}]", "unsupported `of` field \"ip\""},
		{"two distinct fields", "features: [{name: a, agg: distinct, entity: card_id, of: mcc, window: 1d}, {name: b, agg: distinct, entity: card_id, of: country, window: 1d}]", `feature "b": entity card_id already counts distinct mcc`},
		{"zero cap", "features: [{name: a, agg: distinct, entity: card_id, of: mcc, window: 1d, cap: 0}]", `feature "a": cap 0 must be >= 2`},
		{"negative cap", "features: [{name: a, agg: distinct, entity: card_id, of: mcc, window: 1d, cap: -5}]", "cap -5 must be >= 2"},
		{"cap on count", "features: [{name: a, agg: count, entity: card_id, window: 1d, cap: 5}]", "agg count takes no cap"},
		{"fraud on mcc", "features: [{name: a, agg: fraud_rate, entity: mcc, window: 1d}]", `feature "a": agg fraud_rate needs entity card_id or terminal_id`},
		{"unknown transform", "features: [{name: a, agg: value, field: amount, transform: sqrt}]", `unknown transform "sqrt"`},
		{"transform on count", "features: [{name: a, agg: count, entity: card_id, window: 1d, transform: log1p}]", "agg count takes no transform"},
		{"night hour out of range", "features: [{name: a, agg: night, night_hour: 24}]", "night_hour 24 must be in [0, 23]"},
		{"night hour on weekend", "features: [{name: a, agg: weekend, night_hour: 5}]", "agg weekend takes no night_hour"},
		{"changed without field", "features: [{name: a, agg: changed, entity: card_id}]", "agg changed needs a field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an ErrInvalidSpec containing %q", err, tc.want)
			}
		})
	}
}

func TestParseSpecValid(t *testing.T) {
	s, err := ParseSpec([]byte(`
features:
  - {name: amt, agg: value, field: amount}
  - {name: n_7d_lag, agg: count, entity: mcc, window: 7d, offset: 90m}
  - {name: terms_1d, agg: distinct, entity: card_id, of: terminal_id, window: 1d, cap: 64}
  - {name: night5, agg: night, night_hour: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	f := s.Features[1]
	if got, want := time.Duration(f.Window), 7*24*time.Hour; got != want {
		t.Errorf("window = %v, want %v", got, want)
	}
	if got, want := time.Duration(f.Offset), 90*time.Minute; got != want {
		t.Errorf("offset = %v, want %v", got, want)
	}
	if *s.Features[2].Cap != 64 || *s.Features[3].NightHour != 5 {
		t.Errorf("cap/night_hour not decoded: %+v", s.Features)
	}
}

// TestDefaultSpecRoundTrip checks the default spec survives YAML encoding.
func TestDefaultSpecRoundTrip(t *testing.T) {
	d := DefaultSpec()
	out, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSpec(out)
	if err != nil {
		t.Fatalf("parse marshalled default: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(d, back) {
		t.Errorf("round trip differs:\n%s", out)
	}
	if got, want := len(d.Features), width; got != want {
		t.Errorf("default spec has %d features, want %d", got, want)
	}
}

func TestWithSpecMismatchPanics(t *testing.T) {
	other, err := ParseSpec([]byte("features: [{name: a, agg: hour_sin}]"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fn   func()
	}{
		{"spec builder, plain shared", func() { MustBuilder(MustShared(), WithSpec(other)) }},
		{"plain builder, spec shared", func() { MustBuilder(MustShared(WithSpec(other))) }},
		{"different specs", func() { MustBuilder(MustShared(WithSpec(other)), WithSpec(DefaultSpec())) }},
		{"invalid spec", func() { MustBuilder(nil, WithSpec(&Spec{})) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, ErrInvalidOption) {
					t.Errorf("got panic %v, want one wrapping ErrInvalidOption", err)
				}
			}()
			tc.fn()
		})
	}
	// Equal specs from separate parses are the same spec.
	MustBuilder(MustShared(WithSpec(DefaultSpec())), WithSpec(DefaultSpec()))
}

// TestSpecFeatures checks the aggregations the brute-force test does not:
// value, since_prev, changed, geo velocity and calendar on custom entities,
// and an empty optional entity field.
func TestSpecFeatures(t *testing.T) {
	s, err := ParseSpec([]byte(`
features:
  - {name: amt, agg: value, field: amount}
  - {name: mcc_since, agg: since_prev, entity: mcc}
  - {name: mcc_n_1h, agg: count, entity: mcc, window: 1h}
  - {name: mcc_country_changed, agg: changed, entity: mcc, field: country}
  - {name: term_kmh, agg: geo_velocity, entity: terminal_id}
  - {name: term_last_1d, agg: last, entity: terminal_id, field: amount, window: 1d}
  - {name: night3, agg: night, night_hour: 3}
  - {name: wknd, agg: weekend}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := MustBuilder(nil, WithSpec(s))
	row := make([]float32, b.Width())
	up := func(d time.Duration, mcc, country string, amt float64, geo ...float64) {
		e := Event{TxID: "t", CardID: "c", TerminalID: "m", MCC: mcc, Country: country, TS: t0.Add(d), Amount: amt}
		if len(geo) == 2 {
			e.Lat, e.Lon, e.HasGeo = geo[0], geo[1], true
		}
		b.Update(&e, row)
	}
	want := func(what string, w ...float32) {
		t.Helper()
		if !reflect.DeepEqual(row, w) {
			t.Errorf("%s: row %v, want %v", what, row, w)
		}
	}
	up(0, "5411", "FR", 10, 48.8566, 2.3522) // Thursday 00:00 UTC
	want("first", 10, SinceFirstSeen, 1, 0, 0, 0, 1, 0)
	up(4*time.Hour, "5411", "GB", 30, 51.5074, -0.1278)
	kmh := row[4]
	if kmh < 80 || kmh > 90 { // Paris-London ≈ 344 km in 4h
		t.Errorf("velocity = %v km/h, want ≈ 86", kmh)
	}
	want("second", 30, 4*3600, 1, 1, kmh, 10, 0, 0)
	up(4*time.Hour+time.Minute, "", "DE", 5) // no mcc: an entity of its own, not stored
	want("no mcc", 5, SinceFirstSeen, 1, 0, 0, 30, 0, 0)
	up(5*time.Hour, "5411", "GB", 7)
	want("third", 7, 3600, 1, 0, 0, 5, 0, 0)
	up(2*24*time.Hour+2*time.Hour, "5411", "GB", 7) // Saturday 02:00
	if row[6] != 1 || row[7] != 1 {
		t.Errorf("Saturday 02:00: night3 %v weekend %v, want 1 1", row[6], row[7])
	}
}

// TestSpecPeekAfterUpdate checks, for a custom spec with every entity
// aggregation, that Peek right after Update writes Update's row.
func TestSpecPeekAfterUpdate(t *testing.T) {
	s, err := ParseSpec([]byte(`
features:
  - {name: c_n, agg: count, entity: card_id, window: 1d}
  - {name: c_sum, agg: sum, entity: card_id, field: amount, window: 2h, offset: 30m}
  - {name: c_min, agg: min, entity: card_id, field: amount, window: 7d}
  - {name: c_max, agg: max, entity: card_id, field: amount, window: 7d}
  - {name: c_std, agg: std, entity: card_id, field: amount, window: 7d}
  - {name: c_terms, agg: distinct, entity: card_id, of: terminal_id, window: 7d}
  - {name: c_last, agg: last, entity: card_id, field: amount, window: 7d}
  - {name: c_since, agg: since_prev, entity: card_id, transform: log1p}
  - {name: c_ratio, agg: ratio, entity: card_id, field: amount, window: 7d}
  - {name: c_z, agg: zscore, entity: card_id, field: amount, window: 7d}
  - {name: c_cc, agg: changed, entity: card_id, field: country}
  - {name: c_kmh, agg: geo_velocity, entity: card_id}
  - {name: c_fraud, agg: fraud_rate, entity: card_id, window: 30d}
  - {name: k_n, agg: count, entity: country, window: 1h}
  - {name: k_cards, agg: distinct, entity: country, of: card_id, window: 1d, cap: 4}
  - {name: m_fraud, agg: fraud_count, entity: terminal_id, window: 7d, offset: 1d}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := MustBuilder(nil, WithSpec(s))
	got, want := make([]float32, b.Width()), make([]float32, b.Width())
	rng := rand.New(rand.NewPCG(5, 5))
	evs := peekStream(rng, 3000, 8, 5, true)
	for i := range evs {
		e := &evs[i]
		if i%3 == 0 {
			b.shared.ApplyLabel(&Label{TxID: e.TxID, CardID: e.CardID, TerminalID: e.TerminalID, TS: e.TS, Fraud: true})
		}
		b.Update(e, want)
		b.Peek(e, got)
		if !reflect.DeepEqual(got, want) && !rowsNear(got, want) {
			t.Fatalf("event %d: Peek %v, Update %v", i, got, want)
		}
	}
}

// TestKMV checks the distinct counter: exact up to the cap, then within a
// few standard errors (1/sqrt(k-2)) of the truth.
func TestKMV(t *testing.T) {
	for _, k := range []int{2, 16, 1024} {
		for _, n := range []int{0, 1, k - 1, k, k + 1, 3 * k, 50 * k} {
			d := newKMV(nil, k)
			for i := range n {
				d.add(hashString(fmt.Sprint("v", i)))
				d.add(hashString(fmt.Sprint("v", i/2))) // duplicates
			}
			got := d.count()
			if n <= k {
				if got != float64(n) {
					t.Errorf("k=%d n=%d: count %v, want exact", k, n, got)
				}
				continue
			}
			rse := 1 / math.Sqrt(float64(max(k-2, 1)))
			if rel := math.Abs(got-float64(n)) / float64(n); rel > 4*rse {
				t.Errorf("k=%d n=%d: estimate %v off by %.1f%% (rse %.1f%%)", k, n, got, 100*rel, 100*rse)
			}
		}
	}
}

// TestSpecLabelBeforeEvent covers an entity whose state a label creates
// before any event (it must be usable by every feature of the entity).
func TestSpecLabelBeforeEvent(t *testing.T) {
	s, err := ParseSpec([]byte(`
features:
  - {name: m_cc, agg: changed, entity: terminal_id, field: country}
  - {name: m_since, agg: since_prev, entity: terminal_id}
  - {name: m_cards, agg: distinct, entity: terminal_id, of: card_id, window: 1d}
  - {name: m_fraud, agg: fraud_count, entity: terminal_id, window: 1d}
  - {name: c_fraud, agg: fraud_rate, entity: card_id, window: 1d}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := MustBuilder(nil, WithSpec(s))
	b.shared.ApplyLabel(&Label{TxID: "old", CardID: "c", TerminalID: "m", TS: t0, TxTS: t0.Add(-time.Hour), Fraud: true})
	row := make([]float32, b.Width())
	b.Update(&Event{TxID: "t", CardID: "c", TerminalID: "m", Country: "FR", TS: t0.Add(time.Hour), Amount: 1}, row)
	if want := []float32{0, SinceFirstSeen, 1, 1, 1}; !reflect.DeepEqual(row, want) {
		t.Errorf("row %v, want %v", row, want)
	}
}

// TestWithSpecDispatch checks that the default spec runs on the hand-written
// Builder and any other spec on the spec engine.
func TestWithSpecDispatch(t *testing.T) {
	reordered := DefaultSpec()
	reordered.Features[0], reordered.Features[1] = reordered.Features[1], reordered.Features[0]
	isNight := slices.IndexFunc(DefaultSpec().Features, func(f FeatureSpec) bool { return f.Name == "is_night" })
	night5 := DefaultSpec()
	h := 5
	night5.Features[isNight].NightHour = &h
	implicit := DefaultSpec()
	implicit.Features[isNight].NightHour = nil
	tests := []struct {
		name        string
		opts        []Option
		handWritten bool
	}{
		{"no spec", nil, true},
		{"default spec", []Option{WithSpec(DefaultSpec())}, true},
		{"default spec forced", []Option{withSpec(DefaultSpec(), true)}, false},
		{"reordered default", []Option{WithSpec(reordered)}, false},
		{"night hour 5", []Option{WithSpec(night5)}, false},
		{"default, night hour implicit", []Option{WithSpec(implicit)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := MustBuilder(nil, tc.opts...)
			if got := b.sp == nil; got != tc.handWritten {
				t.Errorf("hand-written = %v, want %v", got, tc.handWritten)
			}
			if b.Width() != width {
				t.Errorf("width %d, want %d", b.Width(), width)
			}
		})
	}
}
