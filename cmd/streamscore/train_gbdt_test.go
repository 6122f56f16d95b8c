package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// TestTrainGBDT trains a gbdt model through the command on generated
// history with the gbdt flags, and checks the file: family, pinned
// features, the settings recorded, limits obeyed, metrics on both ranges.
func TestTrainGBDT(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	events, labels := seqTrainHistory(t, dir)
	out := filepath.Join(dir, "g.json")
	err := cmdTrain(context.Background(), []string{"--events", events, "--labels", labels, "--kind", "gbdt", "--out", out, "--quiet",
		"--from", "2026-03-03", "--to", "2026-03-08", "--eval-to", "2026-03-10",
		"--trees", "40", "--max-depth", "4", "--max-leaves", "12", "--learning-rate", "0.2", "--lambda", "2",
		"--min-child-weight", "0.5", "--subsample", "0.9", "--colsample", "0.7", "--early-stop", "10"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Family() != models.FamilyGBDT || m.Name() != "fraud_gbdt" || !m.Pinned() || m.TreeCount() < 1 || m.TreeCount() > 40 {
		t.Fatalf("model %s, pinned %v, %d trees", m.Ident(), m.Pinned(), m.TreeCount())
	}
	tr := m.Training()
	for k, want := range map[string]float64{"max_depth": 4, "max_leaves": 12, "learning_rate": 0.2, "lambda": 2,
		"min_child_weight": 0.5, "subsample": 0.9, "colsample": 0.7, "patience": 10, "max_trees": 40} {
		if got, _ := tr[k].(float64); got != want {
			t.Errorf("training %s = %v, want %v", k, tr[k], want)
		}
	}
	for _, k := range []string{"validation", "evaluation"} {
		mt, ok := tr[k].(map[string]any)
		if !ok {
			t.Fatalf("no %s metrics in %v", k, tr)
		}
		if auc := mt["auc"].(float64); auc < 0.6 {
			t.Errorf("%s AUC %v", k, auc)
		}
		t.Logf("gbdt %s: %v", k, mt)
	}
	if err := cmdTrain(context.Background(), []string{"--events", events, "--labels", labels, "--kind", "gbdt",
		"--out", filepath.Join(dir, "x.json"), "--quiet", "--subsample", "0"}); err == nil {
		t.Errorf("--subsample 0: got nil error")
	}
}
