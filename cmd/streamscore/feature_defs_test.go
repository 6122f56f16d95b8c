package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// altSpec writes the default spec with card_amount_sum_1h's window
// redefined as 24h (the name kept) and returns its path.
func altSpec(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "features", "spec_default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	old := "{name: card_amount_sum_1h, agg: sum, entity: card_id, field: amount, window: 1h}"
	if !bytes.Contains(b, []byte(old)) {
		t.Fatal("default spec changed: fix the test")
	}
	path := filepath.Join(dir, "alt.yaml")
	if err := os.WriteFile(path, bytes.Replace(b, []byte(old), []byte("{name: card_amount_sum_1h, agg: sum, entity: card_id, field: amount, window: 24h}"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScoreRefusesRedefinedFeature is the regression test of the silent
// misconfiguration (a model trained on the default spec, scored with a spec
// that redefines one window under the same name): score, models predict
// and models inspect name the feature and both definitions; the default
// spec still scores.
func TestScoreRefusesRedefinedFeature(t *testing.T) {
	dir := t.TempDir()
	spec := altSpec(t, dir)
	ev := filepath.Join(dir, "ev.jsonl")
	var evb []byte
	t0 := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	for i, card := range []string{"c1", "c2", "c1"} {
		e := features.Event{TxID: "t" + string(rune('0'+i)), CardID: card, TerminalID: "p1", Amount: 20, Currency: "EUR",
			MCC: "5411", Channel: "pos", Country: "FR", TS: t0.Add(time.Duration(i) * time.Minute)}
		evb = append(e.AppendJSON(evb), '\n')
	}
	if err := os.WriteFile(ev, evb, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out := filepath.Join(dir, "scores.jsonl")
	want := "card_amount_sum_1h: model trained on sum of amount per card_id over 1h (sha256:"
	err := cmdScore(ctx, []string{"--events", ev, "--features", spec, "--out", out})
	if !errors.Is(err, models.ErrFeatureMismatch) || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), "pipeline computes sum of amount per card_id over 1d") {
		t.Fatalf("score --features alt: err = %v", err)
	}
	if err := cmdScore(ctx, []string{"--events", ev, "--out", out}); err != nil {
		t.Fatalf("score, default spec: %v", err)
	}

	rows := filepath.Join(dir, "rows.csv")
	if err := cmdFeatures(ctx, []string{"--events", ev, "--features", spec, "--out", rows}); err != nil {
		t.Fatal(err)
	}
	err = modelsPredict(ctx, []string{"--model", shippedPath("fraud.json"), "--input", rows, "--features", spec, "--out", filepath.Join(dir, "p.csv")})
	if !errors.Is(err, models.ErrFeatureMismatch) || !strings.Contains(err.Error(), want) {
		t.Fatalf("predict --features alt: err = %v", err)
	}

	var ins bytes.Buffer
	if err := modelsInspect(&ins, []string{"--features", spec, shippedPath("fraud.json")}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"sum of amount per card_id over 1h (sha256:", "NOT USABLE with " + spec, want} {
		if !strings.Contains(ins.String(), s) {
			t.Fatalf("inspect output lacks %q:\n%s", s, ins.String())
		}
	}
	ins.Reset()
	if err := modelsInspect(&ins, []string{shippedPath("fraud.json")}); err != nil || !strings.Contains(ins.String(), "definitions recorded, all as the default spec defines them") {
		t.Fatalf("inspect, default spec: %v\n%s", err, ins.String())
	}
}

// TestAlertRateOutside: score's guard over a whole range.
func TestAlertRateOutside(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	var fraud *models.Model
	for _, m := range ms {
		if m.Name() == "fraud" {
			fraud = m
		}
	}
	v, _ := fraud.ValidationAlertRate()
	for _, tc := range []struct {
		rate    float64
		outside bool
	}{{v, false}, {v * 4.9, false}, {v * 5.1, true}, {0.21, true}, {v / 4.9, false}, {v / 5.1, true}} {
		outside, ok, _ := alertRateOutside(ms, []string{"fraud"}, 100000, tc.rate, 5)
		if !ok || outside != tc.outside {
			t.Errorf("rate %v (validation %v): outside %v ok %v, want %v", tc.rate, v, outside, ok, tc.outside)
		}
	}
	if _, ok, _ := alertRateOutside(ms, []string{"fraud"}, 100, 0, 5); ok {
		t.Error("100 events (0.6 alerts expected) judged")
	}
}
