package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/eval"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

func TestParseGrid(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		keys    int
	}{
		{"", "", 0},
		{"learning-rate=0.05,0.1", "", 1},
		{"learning-rate=0.05,0.1; max-depth=3,6", "", 2},
		{"learning-rate", "want key=", 0},
		{"learning-rate=", "want key=", 0},
		{"hidden=8", `key "hidden"`, 0},
		{"trees=5;trees=6", "twice", 0},
	} {
		keys, _, err := parseGrid(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && len(keys) != tc.keys:
			t.Errorf("%q: keys %v", tc.in, keys)
		}
	}
}

// backtestHistory writes ten days of generated history from 2026-03-01
// (labels a day late) into dir and returns the files and their contents.
func backtestHistory(t *testing.T, dir string) (evPath, labPath string, events []features.Event, labels []features.Label) {
	t.Helper()
	evPath, labPath = filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "labels.jsonl")
	ef, err := os.Create(evPath)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(labPath)
	if err != nil {
		t.Fatal(err)
	}
	g, err := synth.New(synth.Config{Seed: 3, Cards: 1500, Terminals: 300, FraudRate: 0.03, LabelDelay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ew, lw := bufio.NewWriter(ef), bufio.NewWriter(lf)
	if err := g.Simulate(from, from.AddDate(0, 0, 10), 0.04, func(tx synth.Tx) error {
		if l, ok := g.LabelFor(tx); ok {
			labels = append(labels, l)
			if _, err := lw.Write(append(l.AppendJSON(nil), '\n')); err != nil {
				return err
			}
		}
		events = append(events, tx.Event)
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
	return evPath, labPath, events, labels
}

// TestBacktest runs 2 folds of logistic and a 2-point gbdt grid on
// generated history and checks the folds, the metrics and the removal of
// the cards known compromised.
func TestBacktest(t *testing.T) {
	dir := t.TempDir()
	evPath, labPath, events, labels := backtestHistory(t, dir)
	out := filepath.Join(dir, "bt")
	var stdout bytes.Buffer
	start := time.Now()
	if err := runBacktest(context.Background(), []string{"--events", evPath, "--labels", labPath, "--out", out,
		"--kinds", "logistic,gbdt", "--folds", "2", "--train-days", "3", "--delay-days", "1", "--test-days", "2",
		"--end", "2026-03-11", "--k", "10", "--trees", "15", "--grid", "max-depth=2,4", "--quiet"}, &stdout); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s in %v", stdout.String(), time.Since(start))
	for _, s := range []string{"logistic", "gbdt max-depth=2", "gbdt max-depth=4", "±"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "backtest.png")); err != nil || fi.Size() < 1000 {
		t.Fatalf("plot: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Folds []backtestFold `json:"folds"`
		Runs  []struct {
			Config    string     `json:"config"`
			RawAUC    []*float64 `json:"roc_auc"`
			RawAP     []*float64 `json:"average_precision"`
			RawCP     []*float64 `json:"card_precision"`
			Mean, Std map[string]*float64
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	wantFolds := [][4]string{{"2026-03-03", "2026-03-06", "2026-03-07", "2026-03-09"}, {"2026-03-05", "2026-03-08", "2026-03-09", "2026-03-11"}}
	if len(doc.Folds) != 2 {
		t.Fatalf("%d folds", len(doc.Folds))
	}
	for i, f := range doc.Folds {
		g := [4]string{f.TrainFrom.Format(time.DateOnly), f.TrainTo.Format(time.DateOnly), f.TestFrom.Format(time.DateOnly), f.TestTo.Format(time.DateOnly)}
		if g != wantFolds[i] {
			t.Errorf("fold %d: %v, want %v", i, g, wantFolds[i])
		}
		// The compromised-card filter, recomputed from the files.
		bad := map[string]bool{}
		for _, l := range labels {
			if l.Fraud && l.TS.Before(f.TestFrom) {
				bad[l.CardID] = true
			}
		}
		removed, rows, rowsIn := map[string]bool{}, 0, 0
		for _, e := range events {
			if e.TS.Before(f.TestFrom) || !e.TS.Before(f.TestTo) {
				continue
			}
			rowsIn++
			if bad[e.CardID] {
				removed[e.CardID] = true
				rows++
			}
		}
		if len(removed) == 0 || f.RemovedCards != len(removed) || f.RemovedRows != rows || f.TestRows != rowsIn-rows {
			t.Errorf("fold %d: removed %d cards / %d rows, test %d rows; want %d / %d, %d",
				i, f.RemovedCards, f.RemovedRows, f.TestRows, len(removed), rows, rowsIn-rows)
		}
		if f.TrainFraud < 10 || f.TestFraud < 5 {
			t.Errorf("fold %d: %d train fraud, %d test fraud: too few to measure", i, f.TrainFraud, f.TestFraud)
		}
	}
	if len(doc.Runs) != 3 {
		t.Fatalf("%d runs, want 3", len(doc.Runs))
	}
	for _, r := range doc.Runs {
		for _, vs := range [][]*float64{r.RawAUC, r.RawAP, r.RawCP} {
			if len(vs) != 2 {
				t.Fatalf("%s: %d folds of values", r.Config, len(vs))
			}
			for _, v := range vs {
				if v == nil || math.IsNaN(*v) || *v < 0 || *v > 1 {
					t.Errorf("%s: value %v", r.Config, v)
				}
			}
		}
		for _, m := range []string{"roc_auc", "average_precision", "card_precision"} {
			if r.Mean[m] == nil || r.Std[m] == nil {
				t.Errorf("%s: mean/std of %s missing", r.Config, m)
			}
		}
		if *r.Mean["roc_auc"] < 0.6 {
			t.Errorf("%s: mean AUC %.3f: the models learn nothing", r.Config, *r.Mean["roc_auc"])
		}
	}
}

// TestBacktestSequence backtests gru and cnn (a grid of 1 and 2 epochs) on
// generated history and
// checks that each fold's test rows are scored as the stream scores them:
// bit for bit as stream.Replay over the fold's test days, and, computed
// here with the model's own kernel one row at a time, from each card's
// state warmed by its whole history before the fold. Scores from a state
// restarted at the fold's test start (zero for GRU, an empty window for
// CNN) must differ: the test fails if the backtest did not warm the state.
func TestBacktestSequence(t *testing.T) {
	dir := t.TempDir()
	evPath, labPath, events, labels := backtestHistory(t, dir)
	type scored struct {
		run  string
		fold int
		m    *models.Model
		recs []eval.Scored
	}
	var got []scored
	var stdout bytes.Buffer
	start := time.Now()
	err := backtestWith(context.Background(), []string{"--events", evPath, "--labels", labPath, "--out", filepath.Join(dir, "bt"),
		"--kinds", "gru,cnn", "--folds", "2", "--train-days", "3", "--delay-days", "1", "--test-days", "2",
		"--end", "2026-03-11", "--k", "10", "--grid", "seq-epochs=1,2", "--seq-hidden", "8,4", "--quiet"}, &stdout,
		func(run string, fold int, m *models.Model, recs []eval.Scored) {
			got = append(got, scored{run, fold, m, slices.Clone(recs)})
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s in %v", stdout.String(), time.Since(start))
	for _, s := range []string{"gru seq-epochs=1", "gru seq-epochs=2", "cnn seq-epochs=1", "cnn seq-epochs=2", "±"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
	if len(got) != 8 {
		t.Fatalf("%d scored folds, want 4 runs x 2 folds", len(got))
	}
	// Every row's feature vector, in event-time order, as the stream
	// computes it.
	type row struct {
		e features.Event
		x []float32
	}
	var rows []row
	if err := features.Replay(events, labels, nil, func(e *features.Event, x []float32) error {
		rows = append(rows, row{*e, slices.Clone(x)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// metrics.json: per run, the values per fold, oldest fold first.
	b, err := os.ReadFile(filepath.Join(dir, "bt", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Runs []struct {
			Config string     `json:"config"`
			Recall []*float64 `json:"recall_at_alert"`
			Prec   []*float64 `json:"precision_at_alert"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	truth := knownFraud(labels)
	end := time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)
	for _, g := range got {
		// Recall and precision at the fold model's alert threshold,
		// recomputed from its scored test rows.
		_, alert := g.m.Thresholds()
		var tp, alerted, pos int
		for _, rec := range g.recs {
			if truth[rec.TxID] {
				pos++
			}
			if rec.Score >= float64(alert) {
				alerted++
				if truth[rec.TxID] {
					tp++
				}
			}
		}
		found := false
		for _, r := range doc.Runs {
			if r.Config != g.run {
				continue
			}
			found = true
			i := 1 - g.fold // oldest first
			if len(r.Recall) != 2 || r.Recall[i] == nil || *r.Recall[i] != float64(tp)/float64(pos) ||
				(alerted > 0 && (r.Prec[i] == nil || *r.Prec[i] != float64(tp)/float64(alerted))) {
				t.Errorf("%s fold %d: recall/precision at alert in metrics.json %s / %s, want %d/%d, %d/%d",
					g.run, g.fold, string(must(json.Marshal(r.Recall))), string(must(json.Marshal(r.Prec))), tp, pos, tp, alerted)
			}
		}
		if !found {
			t.Errorf("metrics.json has no run %q", g.run)
		}

		testFrom := end.AddDate(0, 0, -2*(g.fold+1))
		testTo := testFrom.AddDate(0, 0, 2)
		if len(g.recs) < 1000 {
			t.Fatalf("%s fold %d: %d test rows", g.run, g.fold, len(g.recs))
		}
		// The stream's replay over the fold's test days alone.
		want := map[string]float64{}
		if err := stream.Replay(events, labels, []*models.Model{g.m}, testFrom, testTo, func(r *output.ScoreRecord) error {
			want[r.TxID] = r.Scores[0].Value
			return nil
		}, stream.WithReasons(0)); err != nil {
			t.Fatal(err)
		}
		// The model's kernel, row by row, from each card's first event
		// (warm) and from the fold's test start (cold).
		sc, err := g.m.Bind(features.Names())
		if err != nil {
			t.Fatal(err)
		}
		warmState, coldState := map[string][]float32{}, map[string][]float32{}
		state := func(m map[string][]float32, card string) []float32 {
			if m[card] == nil {
				m[card] = make([]float32, g.m.StateSize())
			}
			return m[card]
		}
		warm, cold := map[string]float32{}, map[string]float32{}
		out := make([]float32, 1)
		for _, r := range rows {
			if !r.e.TS.Before(testTo) {
				break
			}
			sc.ScoreSeq(slices.Clone(r.x), 1, [][]float32{state(warmState, r.e.CardID)}, nil, out)
			if r.e.TS.Before(testFrom) {
				continue
			}
			warm[r.e.TxID] = out[0]
			sc.ScoreSeq(slices.Clone(r.x), 1, [][]float32{state(coldState, r.e.CardID)}, nil, out)
			cold[r.e.TxID] = out[0]
		}
		differ := 0
		for _, rec := range g.recs {
			w, ok := want[rec.TxID]
			if !ok || rec.Score != w {
				t.Fatalf("%s fold %d tx %s: backtest %v, stream replay %v (found %v)", g.run, g.fold, rec.TxID, rec.Score, w, ok)
			}
			if d := math.Abs(rec.Score - float64(warm[rec.TxID])); d > 1e-6 {
				t.Fatalf("%s fold %d tx %s: backtest %v, warmed state %v", g.run, g.fold, rec.TxID, rec.Score, warm[rec.TxID])
			}
			if math.Abs(rec.Score-float64(cold[rec.TxID])) > 1e-5 {
				differ++
			}
		}
		// A cold state changes the scores of the cards with history.
		if differ < len(g.recs)/2 {
			t.Errorf("%s fold %d: only %d of %d scores differ from a cold state: the check would not see an unwarmed state",
				g.run, g.fold, differ, len(g.recs))
		}
		t.Logf("%s fold %d: %d test rows, %d differ from a cold state by > 1e-5", g.run, g.fold, len(g.recs), differ)
	}
}

func TestBacktestInputErrors(t *testing.T) {
	dir := t.TempDir()
	ev, lab := filepath.Join(dir, "ev.jsonl"), filepath.Join(dir, "lab.jsonl")
	e := features.Event{TxID: "t1", CardID: "c1", TerminalID: "m1", TS: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Amount: 10}
	if err := os.WriteFile(ev, append(e.AppendJSON(nil), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lab, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--events", ev, "--labels", lab, "--out", filepath.Join(dir, "out"), "--quiet"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kinds", "rnn"}, `"rnn": want logistic, mlp, gbdt, cnn, gru or lstm`},
		{[]string{"--kinds", "cnn", "--kernel", "9"}, "--kernel 9 must not exceed --window 8"},
		{[]string{"--seq-hidden", "8x"}, "--seq-hidden"},
		{[]string{"--kinds", "cnn", "--grid", "window=x"}, "--grid window=x"},
		{[]string{"--folds", "0"}, "want >= 1"},
		{[]string{"--delay-days", "-1"}, "want >= 0"},
		{[]string{"--k", "0"}, "--k 0"},
		{[]string{"--grid", "depth=3"}, `--grid key "depth"`},
		{[]string{"--grid", "max-depth=x"}, "--grid max-depth=x"},
		{[]string{"--end", "yesterday"}, "parse --end"},
		{[]string{"--hidden", "32x"}, "parse --hidden"},
		{[]string{"--folds", "1", "--train-days", "1", "--delay-days", "0", "--test-days", "1"}, "before the first event"},
		{[]string{"--folds", "1", "--train-days", "1", "--delay-days", "0", "--test-days", "1", "--end", "2026-03-03"}, "training and 0 test rows"},
	} {
		err := runBacktest(context.Background(), append(append([]string{}, base...), tc.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := runBacktest(context.Background(), []string{"--events", ev, "--quiet"}, io.Discard); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("missing flags: %v", err)
	}
}
