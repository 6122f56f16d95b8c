package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
)

// TestModelsPredictMatchesScore: feature rows written by `features` and
// scored by `models predict` with no other flag give exactly the scores
// `score` gives for the same events (both are the stream's code): the MLP
// over a range, and the shipped GRU, which keeps a state per card, over the
// whole history, its sequences taken from the card_id column of the CSV.
// `models inspect` verifies and describes a shipped model.
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
	ctx := context.Background()
	for _, tc := range []struct {
		name, model string
		rangeArgs   []string // --from for both features and score
	}{
		{name: "mlp range", model: "fraud.json", rangeArgs: []string{"--from", "2026-04-03"}},
		// A sequence model's state at --from depends on everything before
		// it: predict sees only the CSV, so the rows start at the beginning.
		{name: "gru whole history", model: "fraud_gru.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model := shippedPath(tc.model)
			name := strings.TrimSuffix(tc.model, ".json")
			rows, pred, scores := filepath.Join(dir, name+"-rows.csv"), filepath.Join(dir, name+"-pred.csv"), filepath.Join(dir, name+"-scores.jsonl")
			if err := cmdFeatures(ctx, append([]string{"--events", ev, "--out", rows}, tc.rangeArgs...)); err != nil {
				t.Fatal(err)
			}
			if err := modelsPredict(ctx, []string{"--model", model, "--input", rows, "--out", pred}); err != nil {
				t.Fatal(err)
			}
			if err := cmdScore(ctx, append([]string{"--events", ev, "--model", model, "--out", scores}, tc.rangeArgs...)); err != nil {
				t.Fatal(err)
			}
			want := readScoreRecords(t, scores, name)
			got := readPredictions(t, pred, name)
			if len(got) != len(want) || len(want) < 50 {
				t.Fatalf("%d predictions, %d score records", len(got), len(want))
			}
			for id, v := range got {
				if w, ok := want[id]; !ok || v != w {
					t.Fatalf("tx %s: predict %v, score %v (present %v)", id, v, w, ok)
				}
			}
			if tc.model != "fraud_gru.json" {
				return
			}
			// Not vacuous: with each row its own sequence (every step from a
			// zero state) most scores change.
			if err := modelsPredict(ctx, []string{"--model", model, "--input", rows, "--out", pred, "--seq", "tx_id"}); err != nil {
				t.Fatal(err)
			}
			differ := 0
			for id, v := range readPredictions(t, pred, name) {
				if v != want[id] {
					differ++
				}
			}
			if differ < len(want)/2 {
				t.Fatalf("%d of %d GRU scores change without the card's state", differ, len(want))
			}
		})
	}

	model := shippedPath("fraud.json")
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
	b := shippedFile(t, "fraud.json", nil)
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
	// Unsigned: refused as score refuses it.
	if err := modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred, "--allow-unpinned-models"}); !errors.Is(err, models.ErrUnsigned) {
		t.Fatalf("unsigned model: err = %v, want models.ErrUnsigned", err)
	}
	// The model reads "a" and "b", which no spec defines: unpinned.
	if err := modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred, "--allow-unsigned-models"}); !errors.Is(err, models.ErrUnpinned) {
		t.Fatalf("unpinned model: err = %v, want models.ErrUnpinned", err)
	}
	if err := modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred, "--allow-unpinned-models", "--allow-unsigned-models"}); err != nil {
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
	err = modelsPredict(context.Background(), []string{"--model", model, "--input", rows, "--out", pred, "--seq", "terminal_id", "--allow-unpinned-models", "--allow-unsigned-models"})
	if err == nil || !strings.Contains(err.Error(), `sequence column "terminal_id"`) {
		t.Fatalf("missing sequence column: error %v", err)
	}
}

// readScoreRecords returns model's score by tx_id from a JSONL file of score
// records.
func readScoreRecords(t *testing.T, path, model string) map[string]float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]float32{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			TxID   string             `json:"tx_id"`
			Scores map[string]float64 `json:"scores"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		v, ok := r.Scores[model]
		if !ok {
			t.Fatalf("score record of %s has no score of %s", r.TxID, model)
		}
		out[r.TxID] = float32(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readPredictions returns the scores by id of a `models predict` output,
// checking its header.
func readPredictions(t *testing.T, path, model string) map[string]float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tx_id", model, "decision"}; len(recs) == 0 || !slices.Equal(recs[0], want) {
		t.Fatalf("predict header %v, want %v", recs[:min(1, len(recs))], want)
	}
	out := map[string]float32{}
	for _, r := range recs[1:] {
		v, err := strconv.ParseFloat(r[1], 32)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[r[0]]; dup {
			t.Fatalf("predict wrote tx %s twice", r[0])
		}
		out[r[0]] = float32(v)
	}
	return out
}
