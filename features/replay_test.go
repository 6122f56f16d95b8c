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
	slices.SortStableFunc(sorted, func(a, b Event) int { return a.TS.Compare(b.TS) })
	ls := slices.Clone(labels)
	slices.SortStableFunc(ls, func(a, b Label) int { return a.TS.Compare(b.TS) })
	s := NewShared(WithMaxLateness(2 * time.Hour))
	b := NewBuilder(s, WithMaxLateness(2*time.Hour))
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

func ExampleReplay() {
	d := NewDecoder(WithMaxFutureSkew(-1))
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
