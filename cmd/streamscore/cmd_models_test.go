package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
)

// TestModelsPredictMatchesScore: feature rows written by `features` and
// scored by `models predict` give exactly the scores `score` gives for the
// same events (both are the stream's code), and `models inspect` verifies
// and describes a shipped model.
func TestModelsPredictMatchesScore(t *testing.T) {
	dir := t.TempDir()
	ev := filepath.Join(dir, "ev.jsonl")
	f, _ := os.Create(ev)
	w := bufio.NewWriter(f)
	g, err := synth.New(synth.Config{Seed: 4, Cards: 300, Terminals: 30, FraudRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	if err := g.Simulate(from, from.Add(3*24*time.Hour), 0.03, func(tx synth.Tx) error {
		_, err := w.Write(append(tx.Event.AppendJSON(nil), '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	f.Close()
	model := filepath.Join("..", "..", "models", "shipped", "fraud.json")
	rows, pred, scores := filepath.Join(dir, "rows.csv"), filepath.Join(dir, "pred.csv"), filepath.Join(dir, "scores.jsonl")
	ctx := context.Background()
	if err := cmdFeatures(ctx, []string{"--events", ev, "--from", "2026-04-03", "--out", rows}); err != nil {
		t.Fatal(err)
	}
	if err := modelsPredict(ctx, []string{"--model", model, "--input", rows, "--out", pred}); err != nil {
		t.Fatal(err)
	}
	if err := cmdScore(ctx, []string{"--events", ev, "--model", model, "--from", "2026-04-03", "--out", scores}); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{}
	sf, _ := os.Open(scores)
	defer sf.Close()
	sc := bufio.NewScanner(sf)
	for sc.Scan() {
		var r struct {
			TxID   string             `json:"tx_id"`
			Scores map[string]float64 `json:"scores"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		want[r.TxID] = r.Scores["fraud"]
	}
	pf, _ := os.Open(pred)
	defer pf.Close()
	recs, err := csv.NewReader(pf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs)-1 != len(want) || len(want) < 50 {
		t.Fatalf("%d predictions, %d score records", len(recs)-1, len(want))
	}
	for _, r := range recs[1:] {
		got, _ := strconv.ParseFloat(r[1], 32)
		if float32(got) != float32(want[r[0]]) {
			t.Fatalf("tx %s: predict %v, score %v", r[0], got, want[r[0]])
		}
	}

	var out bytes.Buffer
	if err := modelsInspect(&out, []string{model}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"fraud-mlp@1", "(verified)", "layer 0", "parameters"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("inspect output lacks %q:\n%s", s, out.String())
		}
	}
	bad := filepath.Join(dir, "bad.json")
	b, _ := os.ReadFile(model)
	os.WriteFile(bad, bytes.Replace(b, []byte(`"version": 1`), []byte(`"version": 2`), 1), 0o644)
	if err := modelsInspect(&out, []string{bad}); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("tampered model: %v, want a digest error", err)
	}
}
