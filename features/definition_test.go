package features_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/features"
)

func mustSpec(t *testing.T, y string) *features.Spec {
	t.Helper()
	s, err := features.ParseSpec([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDefinitionEncodingPinned pins the canonical encoding: a change of it
// changes every hash and refuses every model file recorded before, so it
// must be deliberate (a new DefinitionFormat).
func TestDefinitionEncodingPinned(t *testing.T) {
	s := mustSpec(t, "features:\n  - {name: card_amount_sum_1h, agg: sum, entity: card_id, field: amount, window: 1h}\n")
	f := &s.Features[0]
	want := "streamscore-feature-definition-v1\nname=card_amount_sum_1h\nagg=sum\nentity=card_id\nfield=amount\nof=\nwindow=3600000000000\noffset=0\ntransform=\nnight_hour=\n"
	if got := f.Canonical(); got != want {
		t.Fatalf("Canonical:\n%s\nwant:\n%s", got, want)
	}
	d := f.Definition()
	if d.Name != "card_amount_sum_1h" || d.Text != "sum of amount per card_id over 1h" ||
		d.Hash != "sha256:520bd32c260f0b465e15b9bf99e4efaebd28413bcd53f4c18af3e34a8e07f9f5" {
		t.Fatalf("Definition = %+v", d)
	}
}

// TestDefinitionsIgnoreFormatting: the same features written differently
// (block style, key order, comments, defaults spelled out, a window of 24h
// as 1d) hash the same; precision knobs (tiles, cap) do not count.
func TestDefinitionsIgnoreFormatting(t *testing.T) {
	a := mustSpec(t, `features:
  - {name: card_amount_sum_1d, agg: sum, entity: card_id, field: amount, window: 1d}
  - {name: is_night, agg: night}
  - {name: card_countries_30d, agg: distinct, entity: card_id, of: country, window: 30d}
  - {name: t_count_7d_lag7d, agg: count, entity: terminal_id, window: 7d, offset: 7d}
`)
	b := mustSpec(t, `# the same, written otherwise
features:
  - name: card_amount_sum_1d
    window: 24h
    field: amount
    entity: card_id
    agg: sum
    tiles: 24
  - {agg: night, name: is_night, night_hour: 6}
  - {name: card_countries_30d, agg: distinct, entity: card_id, of: country, window: 720h, cap: 64}
  - {name: t_count_7d_lag7d, agg: count, entity: terminal_id, window: 168h, offset: 7d}
`)
	if da, db := a.Definitions(), b.Definitions(); !slices.Equal(da, db) {
		t.Fatalf("definitions differ:\n%v\n%v", da, db)
	}
}

// TestDefinitionsDiffer: every property that changes a value changes the
// hash.
func TestDefinitionsDiffer(t *testing.T) {
	base := "{name: f, agg: sum, entity: card_id, field: amount, window: 1h}"
	for _, tc := range []struct{ name, a, b string }{
		{"window", base, "{name: f, agg: sum, entity: card_id, field: amount, window: 24h}"},
		{"offset", base, "{name: f, agg: sum, entity: card_id, field: amount, window: 1h, offset: 1h}"},
		{"agg", base, "{name: f, agg: mean, entity: card_id, field: amount, window: 1h}"},
		{"entity", base, "{name: f, agg: sum, entity: terminal_id, field: amount, window: 1h}"},
		{"name", base, "{name: g, agg: sum, entity: card_id, field: amount, window: 1h}"},
		{"transform", "{name: f, agg: value, field: amount}", "{name: f, agg: value, field: amount, transform: log1p}"},
		{"night_hour", "{name: f, agg: night}", "{name: f, agg: night, night_hour: 5}"},
		{"of", "{name: f, agg: distinct, entity: card_id, of: country, window: 1h}", "{name: f, agg: distinct, entity: card_id, of: mcc, window: 1h}"},
		{"changed field", "{name: f, agg: changed, entity: card_id, field: country}", "{name: f, agg: changed, entity: card_id, field: mcc}"},
		{"label_time", "{name: f, agg: fraud_rate, entity: terminal_id, window: 7d, offset: 7d, label_time: label}",
			"{name: f, agg: fraud_rate, entity: terminal_id, window: 7d, offset: 7d}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			da := mustSpec(t, "features:\n  - "+tc.a+"\n").Definitions()[0]
			db := mustSpec(t, "features:\n  - "+tc.b+"\n").Definitions()[0]
			if da.Hash == db.Hash {
				t.Fatalf("%s and %s hash the same", tc.a, tc.b)
			}
		})
	}
}

// TestBuilderDefinitions: the hand-written default Builder reports the
// default spec's definitions (it computes them); a Builder of another spec
// reports that spec's.
func TestBuilderDefinitions(t *testing.T) {
	def := features.DefaultSpec().Definitions()
	got := features.MustBuilder(nil).Definitions()
	if !slices.Equal(got, def) {
		t.Fatal("default Builder's definitions differ from DefaultSpec's")
	}
	if names := features.Names(); len(got) != len(names) {
		t.Fatalf("%d definitions, %d names", len(got), len(names))
	}
	for i, n := range features.Names() {
		if got[i].Name != n {
			t.Fatalf("definition %d is %s, name %s", i, got[i].Name, n)
		}
	}
	// The same spec through the generic engine.
	if g := features.MustBuilder(nil, features.WithSpecEngine(features.DefaultSpec())).Definitions(); !slices.Equal(g, def) {
		t.Fatal("spec engine's definitions of the default spec differ")
	}
	// One window redefined: only that feature's hash changes.
	s := features.DefaultSpec()
	i := slices.Index(s.Names(), "card_amount_sum_1h")
	s.Features[i].Window = features.Duration(24 * 3600e9)
	alt := features.MustBuilder(nil, features.WithSpec(s)).Definitions()
	for j := range alt {
		if (alt[j] != def[j]) != (j == i) {
			t.Fatalf("feature %s: changed %v", alt[j].Name, alt[j] != def[j])
		}
	}
	if alt[i].Text != "sum of amount per card_id over 1d" || def[i].Text != "sum of amount per card_id over 1h" {
		t.Fatalf("texts %q, %q", def[i].Text, alt[i].Text)
	}
}

// TestDefinitionLabelTime: a fraud feature counting by transaction time
// (the default) has a label_time line, and so a hash no model recorded
// before it can carry; one counting by label time (label_time: label) has
// the encoding it had before the property existed, so models trained on it
// stay valid.
func TestDefinitionLabelTime(t *testing.T) {
	s := mustSpec(t, `features:
  - {name: f, agg: fraud_count, entity: terminal_id, window: 1d, offset: 7d, label_time: label}
  - {name: g, agg: fraud_count, entity: terminal_id, window: 1d, offset: 7d}
  - {name: h, agg: fraud_count, entity: terminal_id, window: 1d, offset: 7d, label_time: transaction}
`)
	old := "streamscore-feature-definition-v1\nname=f\nagg=fraud_count\nentity=terminal_id\nfield=\nof=\nwindow=86400000000000\noffset=604800000000000\ntransform=\nnight_hour=\n"
	if got := s.Features[0].Canonical(); got != old {
		t.Fatalf("label-time Canonical:\n%s\nwant:\n%s", got, old)
	}
	if got, want := s.Features[1].Canonical(), strings.Replace(old, "name=f", "name=g", 1)+"label_time=transaction\n"; got != want {
		t.Fatalf("transaction-time Canonical:\n%s\nwant:\n%s", got, want)
	}
	d := s.Definitions()
	if d[1].Hash == d[2].Hash || strings.Replace(s.Features[1].Canonical(), "name=g", "name=h", 1) != s.Features[2].Canonical() {
		t.Fatalf("label_time transaction and its default differ: %v", d)
	}
	if d[0].Text != "fraud labels per terminal_id over 1d, 7d before the event" ||
		d[1].Text != "known frauds among the events per terminal_id over 1d, 7d before the event" {
		t.Fatalf("texts %q, %q", d[0].Text, d[1].Text)
	}
	for _, bad := range []string{
		"{name: f, agg: count, entity: terminal_id, window: 1d, label_time: label}",
		"{name: f, agg: fraud_count, entity: terminal_id, window: 1d, label_time: chargeback}",
	} {
		if _, err := features.ParseSpec([]byte("features:\n  - " + bad + "\n")); !errors.Is(err, features.ErrInvalidSpec) || !strings.Contains(err.Error(), "label_time") {
			t.Errorf("ParseSpec(%s) = %v, want an ErrInvalidSpec naming label_time", bad, err)
		}
	}
}
