package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/gbdt"
)

// TestModelsImportXGBoost: `models import --xgboost` turns XGBoost's JSON
// model (the parity fixture of models/gbdt) into a gbdt model file that
// inspect describes, and once signed `models predict` and `score` give
// the same scores for the same events, with TreeSHAP reasons on the
// records that are not allowed. A booster other than gbtree is refused.
func TestModelsImportXGBoost(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	src := filepath.Join("..", "..", "models", "gbdt", "testdata", "binary.model.json")
	model := filepath.Join(dir, "fraud_gbdt.json")
	inputs := strings.Join(features.Names()[:6], ",")
	err := cmdModels(ctx, []string{"import", "--xgboost", src, "--inputs", inputs, "--features", "default",
		"--name", "fraud_gbdt", "--version", "3", "--out", model, "--review", "0.2", "--alert", "0.6"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := modelsInspect(&buf, []string{model}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fraud_gbdt-gbdt@3", "(verified)", "25 trees", "binary:logistic", "review >= 0.2, alert >= 0.6"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, buf.String())
		}
	}
	signWith(t, model, testKey())

	ev := filepath.Join(dir, "ev.jsonl")
	f, _ := os.Create(ev)
	w := bufio.NewWriter(f)
	g, err := synth.New(synth.Config{Seed: 5, Cards: 200, Terminals: 30, FraudRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	if err := g.Simulate(from, from.Add(2*24*time.Hour), 0.03, func(tx synth.Tx) error {
		_, err := w.Write(append(tx.Event.AppendJSON(nil), '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	f.Close()
	rows, pred, scores := filepath.Join(dir, "rows.csv"), filepath.Join(dir, "pred.csv"), filepath.Join(dir, "scores.jsonl")
	if err := cmdFeatures(ctx, []string{"--events", ev, "--out", rows}); err != nil {
		t.Fatal(err)
	}
	// Signed by the test key: refused until that key is trusted, as score refuses it.
	if err := modelsPredict(ctx, []string{"--model", model, "--input", rows, "--out", pred}); !errors.Is(err, models.ErrUntrustedKey) {
		t.Fatalf("predict with a model signed by an untrusted key: %v, want ErrUntrustedKey", err)
	}
	if err := modelsPredict(ctx, []string{"--model", model, "--input", rows, "--out", pred, "--model-trust", testPub(t)}); err != nil {
		t.Fatal(err)
	}
	if err := cmdScore(ctx, []string{"--events", ev, "--model", model, "--model-trust", testPub(t), "--out", scores}); err != nil {
		t.Fatal(err)
	}
	want := readScoreRecords(t, scores, "fraud_gbdt")
	got := readPredictions(t, pred, "fraud_gbdt")
	if len(got) != len(want) || len(want) < 50 {
		t.Fatalf("%d predictions, %d score records", len(got), len(want))
	}
	distinct := map[float32]bool{}
	for id, v := range got {
		if w, ok := want[id]; !ok || v != w {
			t.Fatalf("tx %s: predict %v, score %v (present %v)", id, v, w, ok)
		}
		distinct[v] = true
	}
	if len(distinct) < 5 {
		t.Fatalf("only %d distinct scores", len(distinct))
	}
	b, err := os.ReadFile(scores)
	if err != nil {
		t.Fatal(err)
	}
	reasoned := 0
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r struct {
			Decision string `json:"decision"`
			Reasons  []struct {
				Feature string `json:"feature"`
			} `json:"reasons"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if r.Decision != "allow" {
			if len(r.Reasons) == 0 || !strings.Contains(inputs, r.Reasons[0].Feature) {
				t.Fatalf("a %s record without reasons from the model's inputs: %s", r.Decision, line)
			}
			reasoned++
		}
	}
	t.Logf("%d records, %d with reasons", len(want), reasoned)

	// The models directory of hot reload takes it as a scoring and as a
	// shadow model (the files and their signatures copied).
	md := filepath.Join(dir, "models")
	if err := os.MkdirAll(filepath.Join(md, "shadow"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "shadow"} {
		for _, ext := range []string{"", ".sig"} {
			b, err := os.ReadFile(model + ext)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(md, sub, "fraud_gbdt.json"+ext), b)
		}
	}
	ms, shadows, _, err := models.LoadDir(md, nil, testVerifier(t).check)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || len(shadows) != 1 || ms[0].Family() != models.FamilyGBDT || shadows[0].Ident() != ms[0].Ident() {
		t.Fatalf("loadModelDir: %d models, %d shadows", len(ms), len(shadows))
	}

	// A dart booster is refused by name, and nothing is written.
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dart := filepath.Join(dir, "dart.json")
	os.WriteFile(dart, bytes.Replace(raw, []byte(`"name":"gbtree"`), []byte(`"name":"dart"`), 1), 0o644)
	bad := filepath.Join(dir, "bad.json")
	err = cmdModels(ctx, []string{"import", "--xgboost", dart, "--inputs", inputs, "--name", "x", "--out", bad})
	if !errors.Is(err, gbdt.ErrUnsupported) || !strings.Contains(err.Error(), "dart") {
		t.Fatalf("dart import: %v, want ErrUnsupported naming dart", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a refused import left %s behind", bad)
	}
}
