package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
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
	if len(recs[0]) != 3+len(names) || recs[0][0] != "tx_id" || recs[0][3] != names[0] {
		t.Fatalf("header %v", recs[0])
	}
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
		if r[0] != e.TxID || (r[2] == "1") != fraud[e.TxID] {
			t.Fatalf("row %d: %v, want tx %s fraud %v", i, r[:3], e.TxID, fraud[e.TxID])
		}
		for j, v := range row {
			got, err := strconv.ParseFloat(r[3+j], 32)
			if err != nil || float32(got) != v {
				t.Fatalf("tx %s %s: CSV %q, replay %v", e.TxID, names[j], r[3+j], v)
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
