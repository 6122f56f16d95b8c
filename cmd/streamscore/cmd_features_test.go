package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// TestFeaturesCSV checks the CSV against features.Replay over the same
// history: header, one row per event of the range, labels as known at the
// end of the file, and every value equal to the replayed row.
func TestFeaturesCSV(t *testing.T) {
	dir := t.TempDir()
	evPath, labPath := filepath.Join(dir, "ev.jsonl"), filepath.Join(dir, "lab.jsonl")
	ef, _ := os.Create(evPath)
	lf, _ := os.Create(labPath)
	ew, lw := bufio.NewWriter(ef), bufio.NewWriter(lf)
	g, err := synth.New(synth.Config{Seed: 5, Cards: 300, Terminals: 30, FraudRate: 0.05, LabelDelay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var events []features.Event
	var labels []features.Label
	if err := g.Simulate(from, from.Add(4*24*time.Hour), 0.04, func(tx synth.Tx) error {
		events = append(events, tx.Event)
		ew.Write(append(tx.Event.AppendJSON(nil), '\n'))
		if l, ok := g.LabelFor(tx); ok {
			labels = append(labels, l)
			lw.Write(append(l.AppendJSON(nil), '\n'))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ew.Flush()
	lw.Flush()
	ef.Close()
	lf.Close()
	out := filepath.Join(dir, "rows.csv")
	if err := cmdFeatures(context.Background(), []string{"--events", evPath, "--labels", labPath,
		"--from", "2026-05-03", "--to", "2026-05-04", "--out", out}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	names := features.Names()
	wantHead := append([]string{"tx_id", "ts", "label", "card_id", "terminal_id"}, names...)
	if !slices.Equal(recs[0], wantHead) {
		t.Fatalf("header %v, want %v", recs[0], wantHead)
	}
	const first = 5 // the first feature column
	fraud := map[string]bool{}
	for _, l := range labels {
		fraud[l.TxID] = l.Fraud
	}
	lo, hi := from.Add(48*time.Hour), from.Add(72*time.Hour)
	var hist []features.Event
	for _, e := range events {
		if e.TS.Before(hi) {
			hist = append(hist, e)
		}
	}
	i := 1
	err = features.Replay(hist, labels, nil, func(e *features.Event, row []float32) error {
		if e.TS.Before(lo) {
			return nil
		}
		if i >= len(recs) {
			t.Fatalf("CSV has %d rows, replay more", len(recs)-1)
		}
		r := recs[i]
		i++
		if r[0] != e.TxID || r[1] != e.TS.Format(time.RFC3339Nano) || (r[2] == "1") != fraud[e.TxID] ||
			r[3] != e.CardID || r[4] != e.TerminalID {
			t.Fatalf("row %d: %v, want tx %s at %v, fraud %v, card %s, terminal %s",
				i, r[:first], e.TxID, e.TS, fraud[e.TxID], e.CardID, e.TerminalID)
		}
		for j, v := range row {
			got, err := strconv.ParseFloat(r[first+j], 32)
			if err != nil || float32(got) != v {
				t.Fatalf("tx %s %s: CSV %q, replay %v", e.TxID, names[j], r[first+j], v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(recs) || i < 10 {
		t.Fatalf("compared %d rows of %d", i-1, len(recs)-1)
	}
}

// TestFeaturesNoFutureLeak: the feature columns of the rows in [T1, T2) are
// the same whether the files stop at T2 or go on for days after it (events
// and labels alike); only the label column, the truth as known at the end
// of the file, may differ.
func TestFeaturesNoFutureLeak(t *testing.T) {
	dir := t.TempDir()
	g, err := synth.New(synth.Config{Seed: 9, Cards: 300, Terminals: 25, FraudRate: 0.05, LabelDelay: 36 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	t2 := start.Add(10 * 24 * time.Hour)
	paths := func(name string) (string, string) {
		return filepath.Join(dir, name+"-ev.jsonl"), filepath.Join(dir, name+"-lab.jsonl")
	}
	fullEv, fullLab := paths("full")
	pastEv, pastLab := paths("past") // only what was known before t2
	files := map[string]*bufio.Writer{}
	var closers []*os.File
	for _, p := range []string{fullEv, fullLab, pastEv, pastLab} {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, f)
		files[p] = bufio.NewWriter(f)
	}
	if err := g.Simulate(start, t2.Add(5*24*time.Hour), 0.03, func(tx synth.Tx) error {
		line := append(tx.Event.AppendJSON(nil), '\n')
		files[fullEv].Write(line)
		if tx.Event.TS.Before(t2) {
			files[pastEv].Write(line)
		}
		if l, ok := g.LabelFor(tx); ok {
			line := append(l.AppendJSON(nil), '\n')
			files[fullLab].Write(line)
			if l.TS.Before(t2) {
				files[pastLab].Write(line)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, w := range files {
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range closers {
		f.Close()
	}
	rows := func(ev, lab string) [][]string {
		out := filepath.Join(dir, filepath.Base(ev)+".csv")
		if err := cmdFeatures(context.Background(), []string{"--events", ev, "--labels", lab,
			"--from", "2026-06-08", "--to", t2.Format(time.RFC3339), "--out", out}); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	full, past := rows(fullEv, fullLab), rows(pastEv, pastLab)
	if len(full) != len(past) || len(full) < 100 {
		t.Fatalf("%d rows with the future, %d without", len(full)-1, len(past)-1)
	}
	labelsDiffer := 0
	for i := range full {
		if full[i][2] != past[i][2] {
			labelsDiffer++
		}
		full[i][2], past[i][2] = "", ""
		for j := range full[i] {
			if full[i][j] != past[i][j] {
				t.Fatalf("row %d column %s: %q with the future in the files, %q without", i, full[0][j], full[i][j], past[i][j])
			}
		}
	}
	t.Logf("%d rows identical without the future; %d labels only known later", len(full)-1, labelsDiffer)
}

func TestFeaturesCustomSpec(t *testing.T) {
	dir := t.TempDir()
	ev := filepath.Join(dir, "ev.jsonl")
	if err := os.WriteFile(ev, []byte(`{"tx_id":"a","ts":"2026-05-01T10:00:00Z","card_id":"c","terminal_id":"m1","amount":10}
{"tx_id":"b","ts":"2026-05-01T11:00:00Z","card_id":"c","terminal_id":"m,2","amount":30}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(dir, "spec.yaml")
	os.WriteFile(spec, []byte("features:\n  - {name: n_1d, agg: count, entity: card_id, window: 1d}\n  - {name: terms_1d, agg: distinct, entity: card_id, of: terminal_id, window: 1d}\n"), 0o644)
	out := filepath.Join(dir, "rows.csv")
	if err := cmdFeatures(context.Background(), []string{"--events", ev, "--features", spec, "--out", out}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	want := "tx_id,ts,label,card_id,terminal_id,n_1d,terms_1d\n" +
		"a,2026-05-01T10:00:00Z,0,c,m1,1,1\n" +
		"b,2026-05-01T11:00:00Z,0,c,\"m,2\",2,2\n"
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("features:\n  - {name: x, agg: median, entity: card_id, window: 1d}\n"), 0o644)
	err := cmdFeatures(context.Background(), []string{"--events", ev, "--features", bad, "--out", out})
	if err == nil || !strings.Contains(err.Error(), `feature "x"`) || !strings.Contains(err.Error(), "median") {
		t.Fatalf("bad spec: %v, want an error naming the feature and the aggregation", err)
	}
	clash := filepath.Join(dir, "clash.yaml")
	os.WriteFile(clash, []byte("features:\n  - {name: card_id, agg: count, entity: card_id, window: 1d}\n"), 0o644)
	err = cmdFeatures(context.Background(), []string{"--events", ev, "--features", clash, "--out", out})
	if err == nil || !strings.Contains(err.Error(), `feature "card_id" has the name of an identifying column`) {
		t.Fatalf("feature named card_id: %v, want an error naming the clash", err)
	}
}
