package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
)

// TestScoreRange writes generated history to a file, scores one day of it
// and checks the output has one valid score record per event of that day and
// none outside it.
func TestScoreRange(t *testing.T) {
	dir := t.TempDir()
	evPath := filepath.Join(dir, "events.jsonl")
	f, err := os.Create(evPath)
	if err != nil {
		t.Fatal(err)
	}
	g, err := synth.New(synth.Config{Seed: 3, Cards: 500, Terminals: 50})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	to := from.Add(3 * 24 * time.Hour)
	dayFrom, dayTo := from.Add(48*time.Hour), from.Add(72*time.Hour)
	want := 0
	w := bufio.NewWriter(f)
	if err := g.Simulate(from, to, 0.05, func(tx synth.Tx) error {
		if !tx.Event.TS.Before(dayFrom) && tx.Event.TS.Before(dayTo) {
			want++
		}
		_, err := w.Write(append(tx.Event.AppendJSON(nil), '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(dir, "scores.jsonl")
	err = cmdScore(context.Background(), []string{"--events", evPath, "--from", "2026-03-03", "--to", "2026-03-04", "--out", out})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sc := bufio.NewScanner(b)
	got := 0
	for sc.Scan() {
		var r struct {
			TxID     string             `json:"tx_id"`
			TS       time.Time          `json:"ts"`
			Scores   map[string]float64 `json:"scores"`
			Decision string             `json:"decision"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v", got+1, err)
		}
		if r.TS.Before(dayFrom) || !r.TS.Before(dayTo) {
			t.Fatalf("record %s at %v outside [%v, %v)", r.TxID, r.TS, dayFrom, dayTo)
		}
		if len(r.Scores) != 4 || r.Decision == "" { // the four shipped models
			t.Fatalf("incomplete record %s", sc.Bytes())
		}
		got++
	}
	if got != want || want == 0 {
		t.Fatalf("%d score records, want %d", got, want)
	}
}
