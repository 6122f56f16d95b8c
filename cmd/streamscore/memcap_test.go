package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
)

// TestFeaturesMaxCards checks that `features` applies --max-cards as the
// stream does: three cards alternating under a cap of 2 are evicted and
// start again from empty windows (card_tx_count_1d restarts at 1), while
// the default cap keeps them; and that --max-field-bytes refuses a long
// card_id.
func TestFeaturesMaxCards(t *testing.T) {
	dir := t.TempDir()
	evPath := filepath.Join(dir, "ev.jsonl")
	var lines []string
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range 9 {
		e := features.Event{TxID: fmt.Sprint("t", i), CardID: fmt.Sprint("card-", i%3), TerminalID: "m",
			TS: t0.Add(time.Duration(i) * time.Minute), Amount: 10}
		lines = append(lines, string(e.AppendJSON(nil)))
	}
	if err := os.WriteFile(evPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	counts := func(args ...string) []string {
		out := filepath.Join(dir, "rows.csv")
		if err := cmdFeatures(context.Background(), append([]string{"--events", evPath, "--out", out}, args...)); err != nil {
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
		c := slices.Index(recs[0], "card_tx_count_1d")
		var got []string
		for _, r := range recs[1:] {
			got = append(got, r[c])
		}
		return got
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"default cap", nil, []string{"1", "1", "1", "2", "2", "2", "3", "3", "3"}},
		{"cap 2", []string{"--max-cards", "2"}, []string{"1", "1", "1", "1", "1", "1", "1", "1", "1"}},
		{"cap 3", []string{"--max-cards", "3"}, []string{"1", "1", "1", "2", "2", "2", "3", "3", "3"}},
		{"points 2", []string{"--max-points", "2"}, []string{"1", "1", "1", "2", "2", "2", "2", "2", "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := counts(tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("card_tx_count_1d %v, want %v", got, tc.want)
			}
		})
	}

	long := features.Event{TxID: "t", CardID: strings.Repeat("c", 300), TerminalID: "m", TS: t0, Amount: 1}
	if err := os.WriteFile(evPath, append(long.AppendJSON(nil), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	err := cmdFeatures(context.Background(), []string{"--events", evPath, "--out", filepath.Join(dir, "x.csv")})
	var de *features.DecodeError
	if !errors.As(err, &de) || de.Reason != features.ReasonFieldTooLong || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a 300-byte card_id: %v, want %s", err, features.ReasonFieldTooLong)
	}
	if err := cmdFeatures(context.Background(), []string{"--events", evPath, "--out", filepath.Join(dir, "x.csv"), "--max-field-bytes", "300"}); err != nil {
		t.Errorf("a 300-byte card_id under --max-field-bytes 300: %v", err)
	}
	if err := cmdFeatures(context.Background(), []string{"--events", evPath, "--out", filepath.Join(dir, "x.csv"), "--max-cards", "-1"}); err == nil || !strings.Contains(err.Error(), "--max-cards") {
		t.Errorf("--max-cards -1: %v, want an error naming the flag", err)
	}
}
