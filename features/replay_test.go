package features

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadEvents(t *testing.T) {
	d := testDecoder()
	good := validEvent + "\n\n" + strings.Replace(validEvent, `"t-1"`, `"t-2"`, 1) + "\r\n"
	evs, err := ReadEvents(strings.NewReader(good), d)
	if err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	if len(evs) != 2 || evs[0].TxID != "t-1" || evs[1].TxID != "t-2" {
		t.Fatalf("got %+v", evs)
	}
	bad := validEvent + "\n" + validEvent + "\n" + `{"tx_id":1}` + "\n"
	_, err = ReadEvents(strings.NewReader(bad), d)
	var de *DecodeError
	if err == nil || !strings.Contains(err.Error(), "line 3:") || !errors.As(err, &de) || de.Reason != ReasonWrongType {
		t.Errorf("bad line: got %v, want an error naming line 3 wrapping wrong_type", err)
	}
	_, err = ReadEvents(strings.NewReader(strings.Repeat("x", maxLine+1)), d)
	if err == nil || !strings.Contains(err.Error(), "line 1:") {
		t.Errorf("overlong line: got %v", err)
	}

	labels := `{"tx_id":"t-1","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":true}` + "\n" +
		`{"tx_id":"t-2","card_id":"c","terminal_id":"m","ts":"2026-11-28T15:04:05Z","fraud":"yes"}`
	_, err = ReadLabels(strings.NewReader(labels), d)
	if err == nil || !strings.Contains(err.Error(), "read labels: line 2:") {
		t.Errorf("bad label line: got %v", err)
	}
	ls, err := ReadLabels(strings.NewReader(labels[:strings.IndexByte(labels, '\n')]), d)
	if err != nil || len(ls) != 1 || !ls[0].Fraud {
		t.Errorf("ReadLabels = %+v, %v", ls, err)
	}
}

// TestReplayMatchesStream checks that Replay equals feeding the same events
// in time order to a Builder while applying labels as they become due, and
// that it sorts its input without reordering the caller's slices.
func TestReplayMatchesStream(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	evs := randomStream(rng, 2000, 30, 5)
	var labels []Label
	for i, e := range evs {
		if rng.Float64() < 0.2 {
			labels = append(labels, Label{TxID: e.TxID, CardID: e.CardID, TerminalID: e.TerminalID,
				TS: e.TS.Add(time.Duration(rng.Int64N(int64(20 * 24 * time.Hour)))), Fraud: i%2 == 0})
		}
	}
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	rng.Shuffle(len(labels), func(i, j int) { labels[i], labels[j] = labels[j], labels[i] })
	orig := slices.Clone(evs)

	var got [][]float32
	var ids []string
	err := Replay(evs, labels, []Option{WithMaxLateness(2 * time.Hour)}, func(e *Event, row []float32) error {
		got = append(got, slices.Clone(row))
		ids = append(ids, e.TxID)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if !slices.EqualFunc(evs, orig, func(a, b Event) bool { return a.TxID == b.TxID }) {
		t.Fatal("Replay reordered the caller's events")
	}

	sorted := slices.Clone(evs)
	slices.SortStableFunc(sorted, func(a, b Event) int { return CompareEvents(&a, &b) })
	ls := slices.Clone(labels)
	slices.SortStableFunc(ls, func(a, b Label) int { return CompareLabels(&a, &b) })
	s := MustShared(WithMaxLateness(2 * time.Hour))
	b := MustBuilder(s, WithMaxLateness(2*time.Hour))
	row := make([]float32, b.Width())
	li := 0
	fraudSeen := false
	for i := range sorted {
		for li < len(ls) && !ls[li].TS.After(sorted[i].TS) {
			s.ApplyLabel(&ls[li])
			li++
		}
		b.Update(&sorted[i], row)
		if ids[i] != sorted[i].TxID {
			t.Fatalf("event %d: replay order %s, want %s", i, ids[i], sorted[i].TxID)
		}
		if !slices.Equal(row, got[i]) {
			t.Fatalf("event %d: replay row differs:\n got %v\nwant %v", i, got[i], row)
		}
		fraudSeen = fraudSeen || row[col("terminal_fraud_count_30d_lag7d")] > 0
	}
	if !fraudSeen {
		t.Error("no lagged fraud label ever visible: test does not exercise labels")
	}

	stop := errors.New("stop")
	n := 0
	err = Replay(evs, nil, nil, func(*Event, []float32) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("Replay stop: err %v after %d rows", err, n)
	}
}

// TestReplayTotalOrder checks that Replay applies events in the total
// order (TS, tx_id) whatever their input order: on a stream where many
// events share a timestamp (and a card and terminal, so that the order
// changes the rows), every permutation of the input gives the same rows in
// the same order, labels sharing a timestamp included; and events equal
// under CompareEvents (a duplicate delivery) keep their input order.
func TestReplayTotalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ids := rng.Perm(600) // unique tx ids, in no relation to the time order
	var evs []Event
	var labels []Label
	labelled := map[int]bool{} // one label per tx: two of one tx at one TS apply in input order
	for i := range 600 {
		ts := t0.Add(time.Duration(i/6) * 6 * time.Hour) // six events per timestamp
		evs = append(evs, Event{TxID: fmt.Sprint("t-", ids[i]), CardID: fmt.Sprint("c-", rng.IntN(3)),
			TerminalID: fmt.Sprint("m-", rng.IntN(2)), TS: ts, Amount: float64(1 + rng.IntN(100))})
		if j := rng.IntN(len(evs)); i%3 == 0 && !labelled[j] {
			labelled[j] = true
			labels = append(labels, Label{TxID: evs[j].TxID, CardID: evs[j].CardID, TerminalID: evs[j].TerminalID,
				TxTS: evs[j].TS, TS: evs[j].TS.Add(time.Duration(1+rng.IntN(3)) * 24 * time.Hour), Fraud: rng.IntN(4) > 0})
		}
	}
	type out struct {
		tx  string
		row []float32
	}
	run := func(evs []Event, labels []Label) []out {
		var got []out
		if err := Replay(evs, labels, nil, func(e *Event, row []float32) error {
			got = append(got, out{e.TxID, slices.Clone(row)})
			return nil
		}); err != nil {
			t.Fatalf("Replay: %v", err)
		}
		return got
	}
	want := run(evs, labels)
	sorted := slices.Clone(evs)
	slices.SortFunc(sorted, func(a, b Event) int { return CompareEvents(&a, &b) })
	differs := false // the tie order changes rows: the test can fail
	for i := range sorted {
		if sorted[i].TxID != want[i].tx {
			t.Fatalf("event %d: replayed %s, want %s", i, want[i].tx, sorted[i].TxID)
		}
		if i > 0 && sorted[i].TS.Equal(sorted[i-1].TS) && sorted[i].CardID == sorted[i-1].CardID {
			c := slices.Index(Names(), "card_tx_count_1h")
			differs = differs || want[i].row[c] != want[i-1].row[c]
		}
	}
	if !differs {
		t.Fatal("no tie changes a row: the stream does not exercise the order")
	}
	fraud := slices.Index(Names(), "terminal_fraud_count_30d_lag7d")
	seen := false
	for _, o := range want {
		seen = seen || o.row[fraud] > 0
	}
	if !seen {
		t.Fatal("no fraud label visible: the stream does not exercise labels")
	}
	for k := range 5 {
		pe, pl := slices.Clone(evs), slices.Clone(labels)
		rng.Shuffle(len(pe), func(i, j int) { pe[i], pe[j] = pe[j], pe[i] })
		rng.Shuffle(len(pl), func(i, j int) { pl[i], pl[j] = pl[j], pl[i] })
		got := run(pe, pl)
		for i := range want {
			if got[i].tx != want[i].tx || !slicesEqualBits(got[i].row, want[i].row) {
				t.Fatalf("permutation %d, event %d (%s): row differs from the input order's", k, i, want[i].tx)
			}
		}
	}

	// A duplicate (same TS and tx_id) keeps its input order.
	dup := []Event{
		{TxID: "b", CardID: "c", TerminalID: "m", TS: t0, Amount: 2},
		{TxID: "a", CardID: "c", TerminalID: "m", TS: t0, Amount: 1},
		{TxID: "b", CardID: "c", TerminalID: "m", TS: t0, Amount: 3},
	}
	var amts []float64
	_ = Replay(dup, nil, nil, func(e *Event, _ []float32) error { amts = append(amts, e.Amount); return nil })
	if !slices.Equal(amts, []float64{1, 2, 3}) {
		t.Errorf("tie order: amounts %v, want [1 2 3]", amts)
	}
}

func ExampleReplay() {
	d := MustDecoder(WithMaxFutureSkew(-1))
	events, _ := ReadEvents(strings.NewReader(
		`{"tx_id":"t-1","ts":"2026-11-28T15:04:05Z","card_id":"c-42","terminal_id":"m-7","amount":57.20}`+"\n"+
			`{"tx_id":"t-2","ts":"2026-11-28T15:34:05Z","card_id":"c-42","terminal_id":"m-7","amount":42.80}`+"\n"), d)
	sum := slices.Index(Names(), "card_amount_sum_1h")
	_ = Replay(events, nil, nil, func(e *Event, row []float32) error {
		fmt.Printf("%s card_amount_sum_1h=%.2f\n", e.TxID, row[sum])
		return nil
	})
	// Output:
	// t-1 card_amount_sum_1h=57.20
	// t-2 card_amount_sum_1h=100.00
}
