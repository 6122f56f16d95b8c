package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/eval"
)

func evalWriteLines(t *testing.T, path string, lines ...string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// evalFiles writes a small score file and label file: 6 transactions of
// model "fraud", fraud on t1 (score 0.9) and t4 (0.4); t2's fraud label is
// cleared by a later fraud:false one, and t5's genuine label is overridden
// by a later fraud:true one.
func evalTestFiles(t *testing.T, dir string) (scores, labels string) {
	rec := func(tx, card, ts string, score float64) string {
		return `{"tx_id":"` + tx + `","card_id":"` + card + `","ts":"` + ts + `","scored_at":"` + ts +
			`","scores":{"fraud":` + evalJSONNum(score) + `,"risk":1.5},"decision":"allow","models":{"fraud":"fraud-mlp@1 sha256:abc"},"reasons":[],"latency_ms":0}`
	}
	lab := func(tx, card, ts string, fraud bool) string {
		f := "false"
		if fraud {
			f = "true"
		}
		return `{"tx_id":"` + tx + `","card_id":"` + card + `","terminal_id":"m1","ts":"` + ts + `","fraud":` + f + `}`
	}
	scores = evalWriteLines(t, filepath.Join(dir, "scores.jsonl"),
		rec("t1", "c1", "2026-03-01T10:00:00Z", 0.9),
		rec("t2", "c2", "2026-03-01T11:00:00Z", 0.8),
		rec("t3", "c3", "2026-03-01T12:00:00Z", 0.1),
		rec("t4", "c1", "2026-03-02T10:00:00Z", 0.4),
		rec("t5", "c2", "2026-03-02T11:00:00Z", 0.3),
		rec("t6", "c3", "2026-03-02T12:00:00Z", 0.2),
	)
	labels = evalWriteLines(t, filepath.Join(dir, "labels.jsonl"),
		lab("t1", "c1", "2026-03-05T00:00:00Z", true),
		lab("t2", "c2", "2026-03-05T00:00:00Z", true),
		lab("t2", "c2", "2026-03-06T00:00:00Z", false),
		lab("t4", "c1", "2026-03-06T00:00:00Z", true),
		lab("t5", "c2", "2026-03-07T00:00:00Z", true),
		lab("t5", "c2", "2026-03-04T00:00:00Z", false),
	)
	return scores, labels
}

func evalJSONNum(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func evalReadMetrics(t *testing.T, dir string) eval.Metrics {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m eval.Metrics
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("parse metrics.json: %v", err)
	}
	return m
}

func evalCheckPNGs(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"roc.png", "pr.png", "scores.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEvalCommand(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	scores, labels := evalTestFiles(t, dir)
	out := filepath.Join(dir, "out", "nested")
	var stdout bytes.Buffer
	err := runEval(context.Background(), []string{"--scores", scores, "--labels", labels, "--name", "fraud",
		"--out", out, "--thresholds", "0.3,0.85", "--k", "1"}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	evalCheckPNGs(t, out)
	m := evalReadMetrics(t, out)
	// Truth: t1, t4, t5 fraud (scores 0.9, 0.4, 0.3); t2 cleared; t3, t6 genuine.
	// AUC pairs (fraud beats genuine): 0.9 → 3, 0.4 → 2, 0.3 → 2: 7/9.
	if m.Transactions != 6 || m.Fraud != 3 || m.Labelled != 4 || !evalNear(float64(m.ROCAUC), 7.0/9) {
		t.Errorf("got %d tx, %d fraud, %d labelled, AUC %v; want 6, 3, 4, 7/9", m.Transactions, m.Fraud, m.Labelled, m.ROCAUC)
	}
	// 0.9: P 1 R 1/3; 0.8: -; 0.4: P 2/3 R 2/3; 0.3: P 3/4 R 1 → 1/3 + 2/9 + 1/4.
	if !evalNear(float64(m.AveragePrecision), 1.0/3+2.0/9+1.0/4) {
		t.Errorf("AP = %v", m.AveragePrecision)
	}
	// review 0.3: alerted t1 t2 t4 t5, 3 fraud; alert 0.85: t1.
	if r, a := m.Thresholds[0], m.Thresholds[1]; r.Alerted != 4 || r.TruePositives != 3 || a.Alerted != 1 || a.TruePositives != 1 ||
		m.ThresholdSource != "--thresholds 0.3,0.85" {
		t.Errorf("thresholds: got %+v from %q", m.Thresholds, m.ThresholdSource)
	}
	// k = 1. Day 1: c1 0.9 fraud → 1, c1 detected. Day 2: c1 excluded; c2 0.3
	// fraud (t5) beats c3 0.2 → 1.
	if cp := m.CardPrecision; len(cp.Days) != 2 || cp.Days[0].Precision != 1 || cp.Days[1].Precision != 1 || cp.Days[1].Excluded != 1 {
		t.Errorf("card precision: got %+v", cp)
	}
	got := stdout.String()
	for _, want := range []string{"ROC AUC", "0.7778", "average precision", "card precision@1, mean of 2 days", "review", "alert", "thresholds: --thresholds 0.3,0.85", "metrics.json"} {
		if !strings.Contains(got, want) {
			t.Errorf("stdout lacks %q:\n%s", want, got)
		}
	}
	t.Logf("stdout:\n%s", got)
}

func evalNear(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestEvalCommandModelThresholds(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	scores, labels := evalTestFiles(t, dir)
	modelPath := shippedPath("fraud.json")
	m, err := models.Load(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	review, alert := m.Thresholds()
	out := filepath.Join(dir, "out")
	// No --name: the model file's name ("fraud") is the key.
	if err := runEval(context.Background(), []string{"--scores", scores, "--labels", labels, "--model", modelPath, "--out", out}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got := evalReadMetrics(t, out)
	if got.Thresholds[0].Threshold != float64(review) || got.Thresholds[1].Threshold != float64(alert) ||
		!strings.HasPrefix(got.ThresholdSource, "model "+m.Ident()) || got.CardPrecision.K != eval.DefaultK {
		t.Errorf("got thresholds %+v from %q, k %d; want %v, %v from the model", got.Thresholds, got.ThresholdSource, got.CardPrecision.K, review, alert)
	}

	// Neither: the quantile rule, and the table says so.
	var stdout bytes.Buffer
	if err := runEval(context.Background(), []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if got := evalReadMetrics(t, out); got.Thresholds[1].Threshold != 0.9 || !strings.Contains(stdout.String(), "none given") {
		t.Errorf("quantile rule: got %+v, stdout:\n%s", got.Thresholds, stdout.String())
	}
}

func TestEvalCommandErrors(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	scores, labels := evalTestFiles(t, dir)
	badScores := evalWriteLines(t, filepath.Join(dir, "bad_scores.jsonl"),
		`{"tx_id":"t1","card_id":"c1","ts":"2026-03-01T10:00:00Z","scores":{"fraud":0.9}}`,
		`{"tx_id":"t2","card_id":"c1","ts":"2026-03-01T10:00:00Z","scores":{"risk":0.9}}`)
	badLabels := evalWriteLines(t, filepath.Join(dir, "bad_labels.jsonl"),
		`{"tx_id":"t1","card_id":"c1","terminal_id":"m1","ts":"2026-03-05T00:00:00Z","fraud":true}`,
		`{"tx_id":"t2","card_id":"c1","terminal_id":"m1","ts":"2026-03-05T00:00:00Z","fraud":"yes"}`)
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no scores", []string{"--labels", labels, "--name", "fraud", "--out", out}, "--scores, --labels and --out are required"},
		{"no name", []string{"--scores", scores, "--labels", labels, "--out", out}, "--name is required"},
		{"model and thresholds", []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out, "--model", "m.json", "--thresholds", "0.1,0.2"}, "not both"},
		{"bad thresholds", []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out, "--thresholds", "0.5"}, "want review,alert"},
		{"thresholds reversed", []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out, "--thresholds", "0.9,0.1"}, "review above alert"},
		{"k 0", []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out, "--k", "0"}, "--k 0"},
		{"bad score line", []string{"--scores", badScores, "--labels", labels, "--name", "fraud", "--out", out}, "line 2"},
		{"bad label line", []string{"--scores", scores, "--labels", badLabels, "--name", "fraud", "--out", out}, "line 2"},
		{"wrong name", []string{"--scores", scores, "--labels", labels, "--name", "fraud_lr", "--out", out}, `line 1: eval: invalid score record: no score for model "fraud_lr"`},
		{"missing model file", []string{"--scores", scores, "--labels", labels, "--model", filepath.Join(dir, "nope.json"), "--out", out}, "load model"},
		{"empty range", []string{"--scores", scores, "--labels", labels, "--name", "fraud", "--out", out, "--from", "2027-01-01"}, "no scored transactions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runEval(context.Background(), tc.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEvalEndToEnd generates history, scores it with the shipped models
// exactly as the stream would (cmdScore), and evaluates the fraud model:
// the numbers must be those of a good model on its own kind of data.
func TestEvalEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and scores two weeks of traffic")
	}
	clearEnv(t)
	dir := t.TempDir()
	evPath, labPath := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "labels.jsonl")
	ef, err := os.Create(evPath)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(labPath)
	if err != nil {
		t.Fatal(err)
	}
	// The density of the shipped models' training data (about 2 events per
	// card and 10 per terminal a day): the terminal count features depend on
	// it, and a model is only judged on traffic like its training traffic.
	g, err := synth.New(synth.Config{Seed: 11, Cards: 4000, Terminals: 800, LabelDelay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ew, lw := bufio.NewWriter(ef), bufio.NewWriter(lf)
	if err := g.Simulate(from, from.AddDate(0, 0, 14), 0.1, func(tx synth.Tx) error {
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
	scores := filepath.Join(dir, "scores.jsonl")
	if err := cmdScore(context.Background(), []string{"--events", evPath, "--labels", labPath,
		"--from", "2026-03-08", "--to", "2026-03-15", "--out", scores}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "eval")
	modelPath := shippedPath("fraud.json")
	var stdout bytes.Buffer
	if err := runEval(context.Background(), []string{"--scores", scores, "--labels", labPath, "--model", modelPath,
		"--out", out, "--k", "10"}, &stdout); err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout:\n%s", stdout.String())
	evalCheckPNGs(t, out)
	m := evalReadMetrics(t, out)
	mdl, err := models.Load(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	if m.Fraud < 20 || m.Transactions < 20000 || len(m.CardPrecision.Days) != 7 || m.ModelIdents[mdl.Ident()] != m.Transactions {
		t.Fatalf("data: %d tx, %d fraud, %d days, idents %v", m.Transactions, m.Fraud, len(m.CardPrecision.Days), m.ModelIdents)
	}
	if auc, ap := float64(m.ROCAUC), float64(m.AveragePrecision); auc < 0.9 || ap < 5*float64(m.BaseRate) {
		t.Errorf("AUC %.4f, AP %.4f (base rate %.4f): want a useful model", auc, ap, m.BaseRate)
	}
	if a := m.Thresholds[1]; float64(a.Precision) < 0.3 || a.Alerted == 0 {
		t.Errorf("alert threshold: %+v", a)
	}
}
