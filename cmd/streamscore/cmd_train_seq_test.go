package main

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
)

// seqTrainHistory writes ten days of generated events and labels.
func seqTrainHistory(t *testing.T, dir string) (events, labels string) {
	t.Helper()
	events, labels = filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "labels.jsonl")
	ef, err := os.Create(events)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(labels)
	if err != nil {
		t.Fatal(err)
	}
	g, err := synth.New(synth.Config{Seed: 5, Cards: 1500, Terminals: 150, FraudRate: 0.02, LabelDelay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ew, lw := bufio.NewWriter(ef), bufio.NewWriter(lf)
	if err := g.Simulate(from, from.AddDate(0, 0, 10), 0.05, func(tx synth.Tx) error {
		if l, ok := g.LabelFor(tx); ok {
			if _, err := lw.Write(append(l.AppendJSON(nil), '\n')); err != nil {
				return err
			}
		}
		_, err := ew.Write(append(tx.Event.AppendJSON(nil), '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []func() error{ew.Flush, lw.Flush, ef.Close, lf.Close} {
		if err := c(); err != nil {
			t.Fatal(err)
		}
	}
	return events, labels
}

// TestTrainSequenceKinds trains small gru, lstm and cnn models through the
// command on generated history (card history before --from warms the
// state; evaluation on the later range) and checks the files.
func TestTrainSequenceKinds(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	events, labels := seqTrainHistory(t, dir)
	tests := []struct {
		kind string
		args []string
	}{
		{models.FamilyGRU, []string{"--hidden", "8", "--epochs", "3"}},
		{models.FamilyLSTM, []string{"--hidden", "6", "--epochs", "2"}},
		{models.FamilyCNN, []string{"--window", "6", "--channels", "8", "--epochs", "3"}},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			start := time.Now()
			out := filepath.Join(dir, tc.kind+".json")
			args := append([]string{"--events", events, "--labels", labels, "--kind", tc.kind, "--out", out, "--quiet",
				"--from", "2026-03-03", "--to", "2026-03-08", "--eval-to", "2026-03-10"}, tc.args...)
			if err := cmdTrain(context.Background(), args); err != nil {
				t.Fatal(err)
			}
			m, err := models.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if m.Family() != tc.kind || m.Name() != "fraud_"+tc.kind {
				t.Errorf("model %s", m.Ident())
			}
			tr := m.Training()
			if tr["rows_history_only"].(float64) <= 0 {
				t.Errorf("no history rows before --from: %v", tr["rows_history_only"])
			}
			for _, k := range []string{"validation", "evaluation"} {
				mt, ok := tr[k].(map[string]any)
				if !ok {
					t.Fatalf("no %s metrics in %v", k, tr)
				}
				if auc := mt["auc"].(float64); auc < 0.6 {
					t.Errorf("%s AUC %v", k, auc)
				}
				t.Logf("%s %s: %v", tc.kind, k, mt)
			}
			if review, alert := m.Thresholds(); !(review <= alert && alert > 0) {
				t.Errorf("thresholds review %v alert %v", review, alert)
			}
			t.Logf("%s: %v", tc.kind, time.Since(start))
		})
	}
	if err := cmdTrain(context.Background(), []string{"--events", events, "--labels", labels, "--kind", "cnn",
		"--out", filepath.Join(dir, "x.json"), "--quiet", "--window", "2", "--kernel", "3"}); err == nil {
		t.Errorf("kernel > window: got nil error")
	}
}
