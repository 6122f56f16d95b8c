package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
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

// TestModelsPredictSequence scores a GRU over a CSV of interleaved
// sequences and requires, for every row, the score of stepping its own
// sequence alone from a zero state; a missing sequence column is an error.
func TestModelsPredictSequence(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(4, 4))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.5)
		}
		return v
	}
	const h = 5
	f := &models.File{Name: "g", Family: models.FamilyGRU, Version: 1, Output: models.OutputProbability,
		Thresholds: models.Thresholds{Review: 0.5, Alert: 0.9},
		Inputs:     []models.Input{{Name: "a", Mean: 0, Std: 1}, {Name: "b", Mean: 1, Std: 2}},
		Recurrent:  &models.Recurrent{Cell: models.FamilyGRU, Hidden: h, Wx: rnd(2 * 3 * h), Wh: rnd(h * 3 * h), Bx: rnd(3 * h), Bh: rnd(3 * h)},
		Layers:     []models.Layer{{In: h, Out: 1, Activation: "sigmoid", Weights: rnd(h), Bias: rnd(1)}}}
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "g.json")
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// 600 rows over 7 cards, in the column order b, card_id, tx_id, a.
	var csvb strings.Builder
	csvb.WriteString("b,card_id,tx_id,a\n")
	want := map[string]float32{}
	refs := map[string][]float32{}
	for i := range 600 {
		card := fmt.Sprintf("c%d", rng.IntN(7))
		a, bv := float32(rng.NormFloat64()), float32(rng.NormFloat64()*2+1)
		fmt.Fprintf(&csvb, "%v,%s,t%d,%v\n", bv, card, i, a)
		st, ok := refs[card]
		if !ok {
			st = make([]float32, m.StateSize())
			refs[card] = st
		}
		s, _ := m.Bind([]string{"a", "b"})
		out := make([]float32, 1)
		s.ScoreSeq([]float32{a, bv}, 1, [][]float32{st}, nil, out)
		want[fmt.Sprintf("t%d", i)] = out[0]
	}
	rows := filepath.Join(dir, "rows.csv")
	if err := os.WriteFile(rows, []byte(csvb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pred := filepath.Join(dir, "pred.csv")
	if err := modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(pred)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 601 {
		t.Fatalf("%d output lines, want 601", len(lines))
	}
	for _, l := range lines[1:] {
		parts := strings.Split(l, ",")
		v, err := strconv.ParseFloat(parts[1], 32)
		if err != nil {
			t.Fatal(err)
		}
		if float32(v) != want[parts[0]] {
			t.Fatalf("%s: predict %v, stepping the sequence alone %v", parts[0], v, want[parts[0]])
		}
	}
	err = modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred, "--seq", "terminal_id"})
	if err == nil || !strings.Contains(err.Error(), `sequence column "terminal_id"`) {
		t.Fatalf("missing sequence column: error %v", err)
	}
}
