package history_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models/train/history"
)

func TestFolds(t *testing.T) {
	d := func(s string) time.Time { v, _ := time.Parse(time.DateOnly, s); return v }
	got, err := history.Folds(d("2026-03-31"), 3, 7, 7, 7)
	if err != nil {
		t.Fatal(err)
	}
	want := [][4]string{
		{"2026-03-10", "2026-03-17", "2026-03-24", "2026-03-31"},
		{"2026-03-03", "2026-03-10", "2026-03-17", "2026-03-24"},
		{"2026-02-24", "2026-03-03", "2026-03-10", "2026-03-17"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d folds, want %d", len(got), len(want))
	}
	for i, f := range got {
		g := [4]string{f.TrainFrom.Format(time.DateOnly), f.TrainTo.Format(time.DateOnly), f.TestFrom.Format(time.DateOnly), f.TestTo.Format(time.DateOnly)}
		if g != want[i] || f.Index != i {
			t.Errorf("fold %d: %v, want %v", i, g, want[i])
		}
	}
	for _, tc := range []struct {
		name                  string
		k, train, delay, test int
	}{
		{"no folds", 0, 7, 7, 7},
		{"no training days", 3, 0, 7, 7},
		{"negative delay", 3, 7, -1, 7},
		{"no test days", 3, 7, 7, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := history.Folds(d("2026-03-31"), tc.k, tc.train, tc.delay, tc.test); !errors.Is(err, history.ErrPlan) {
				t.Errorf("got %v, want ErrPlan", err)
			}
		})
	}
}

// TestRowsSets: Set keeps the rows of its range; SeqSet keeps the prefix
// before its end, sharing X, with the loss on its range and the card
// indices by first appearance; rows out of time order are refused.
func TestRowsSets(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	rows := history.NewRows([]string{"a", "b"})
	cards := []string{"c1", "c2", "c1", "c3", "c2"}
	for i, c := range cards {
		e := features.Event{TxID: fmt.Sprint("t", i), CardID: c, TS: t0.Add(time.Duration(i) * time.Hour)}
		rows.Append(&e, []float32{float32(i), float32(10 * i), 99}) // the third value is beyond the names
	}
	if rows.Len() != 5 || rows.Cards() != 3 {
		t.Fatalf("%d rows, %d cards, want 5 and 3", rows.Len(), rows.Cards())
	}
	y := func(i int) float32 { return float32(i) }
	set := rows.Set(t0.Add(time.Hour), t0.Add(3*time.Hour), y)
	if got, want := fmt.Sprint(set.X, set.Y), "[1 10 2 20] [1 2]"; got != want {
		t.Errorf("Set: %s, want %s", got, want)
	}
	seq, err := rows.SeqSet(t0.Add(time.Hour), t0.Add(3*time.Hour), y)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(seq.X, seq.Y, seq.Seq, seq.Loss), "[0 0 1 10 2 20] [0 1 2] [0 1 0] [false true true]"; got != want {
		t.Errorf("SeqSet: %s, want %s", got, want)
	}
	if &seq.X[0] != &rows.X[0] {
		t.Errorf("SeqSet copied X, want the rows' prefix")
	}
	late := history.NewRows([]string{"a"})
	for _, h := range []int{0, 5, 1} {
		e := features.Event{TxID: fmt.Sprint("t", h), CardID: "c", TS: t0.Add(time.Duration(h) * time.Hour)}
		late.Append(&e, []float32{1})
	}
	if _, err := late.SeqSet(t0, t0.Add(2*time.Hour), y); err == nil {
		t.Errorf("SeqSet over rows out of time order: no error")
	}
}
