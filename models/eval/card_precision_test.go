package eval

import (
	"math"
	"testing"
	"time"
)

// label is one fed label, for tests.
type label struct {
	TxID     string
	TS       time.Time
	Fraud    bool
	Scenario string
}

// feed returns the Feedback of labels, added in order.
func feed(labels ...label) *Feedback {
	var f Feedback
	for _, l := range labels {
		f.Add(l.TxID, l.TS, l.Fraud, l.Scenario)
	}
	return &f
}

func TestFeedbackLatestWins(t *testing.T) {
	d := func(day int) time.Time { return time.Date(2026, 3, day, 12, 0, 0, 0, time.UTC) }
	truth := feed([]label{
		{TxID: "t1", TS: d(5), Fraud: true},  // later, comes first in the feed: still wins
		{TxID: "t1", TS: d(2), Fraud: false}, //
		{TxID: "t2", TS: d(1), Fraud: true},  // cleared by a later correction
		{TxID: "t2", TS: d(3), Fraud: false}, //
		{TxID: "t3", TS: d(4), Fraud: true},  // equal TS: the later in the feed wins
		{TxID: "t3", TS: d(4), Fraud: false}, //
		{TxID: "t4", TS: d(1), Fraud: true},
		{TxID: "t5", TS: d(1), Fraud: false},
	}...).Truth()
	for _, tc := range []struct {
		tx          string
		fraud, have bool
	}{
		{"t1", true, true}, {"t2", false, true}, {"t3", false, true},
		{"t4", true, true}, {"t5", false, true}, {"t6", false, false},
	} {
		f, ok := truth[tc.tx]
		if f != tc.fraud || ok != tc.have {
			t.Errorf("truth[%s] = %v, %v; want %v, %v", tc.tx, f, ok, tc.fraud, tc.have)
		}
	}
	if got := truth.Frauds(); got != 2 {
		t.Errorf("Frauds() = %d, want 2", got)
	}
	var empty Feedback
	if empty.Truth() == nil || empty.Scenarios() == nil || len(empty.Truth()) != 0 {
		t.Error("the zero Feedback must give an empty, non-nil truth and scenarios")
	}
}

// TestCardPrecisionTopK is a hand-worked case with k = 2 over three days.
//
//	day 1: A 0.9 (its other tx, 0.2, is fraud) · B 0.8 · C 0.7 fraud · D 0.1 fraud
//	       top 2 = A (fraud), B → 1/2; A is detected. C is fraud but not in
//	       the top 2, so it is not detected.
//	day 2: A excluded · B 0.7 · C 0.6 fraud · E 0.6 (tie with C: C first by id)
//	       top 2 = B, C (fraud) → 1/2; C is detected. B was in day 1's top 2
//	       but genuine, so it is ranked again.
//	day 3: A, C excluded · F 0.5 · H 0.45 · G 0.4 fraud
//	       top 2 = F, H → 0.
//
// Mean = (0.5 + 0.5 + 0) / 3.
func TestCardPrecisionTopK(t *testing.T) {
	at := func(s string) time.Time {
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	recs := []Scored{
		{TxID: "1", CardID: "A", TS: at("2026-03-01T08:00:00Z"), Score: 0.9},
		{TxID: "2", CardID: "A", TS: at("2026-03-01T09:00:00Z"), Score: 0.2},
		{TxID: "3", CardID: "B", TS: at("2026-03-01T10:00:00Z"), Score: 0.8},
		{TxID: "4", CardID: "C", TS: at("2026-03-02T01:00:00+02:00"), Score: 0.7}, // 23:00 UTC on day 1
		{TxID: "5", CardID: "D", TS: at("2026-03-01T23:59:59Z"), Score: 0.1},
		{TxID: "6", CardID: "A", TS: at("2026-03-02T00:00:00Z"), Score: 0.95},
		{TxID: "7", CardID: "B", TS: at("2026-03-02T10:00:00Z"), Score: 0.7},
		{TxID: "8", CardID: "E", TS: at("2026-03-02T11:00:00Z"), Score: 0.6},
		{TxID: "9", CardID: "C", TS: at("2026-03-02T12:00:00Z"), Score: 0.6},
		{TxID: "10", CardID: "A", TS: at("2026-03-03T10:00:00Z"), Score: 0.99},
		{TxID: "11", CardID: "C", TS: at("2026-03-03T10:00:00Z"), Score: 0.99},
		{TxID: "12", CardID: "F", TS: at("2026-03-03T10:00:00Z"), Score: 0.5},
		{TxID: "13", CardID: "G", TS: at("2026-03-03T10:00:00Z"), Score: 0.4},
		{TxID: "14", CardID: "H", TS: at("2026-03-03T10:00:00Z"), Score: 0.45},
	}
	truth := Truth{"2": true, "4": true, "5": true, "6": true, "9": true, "10": true, "11": true, "13": true, "3": false}
	got := CardPrecisionTopK(recs, truth, 2)
	want := []CardDay{
		{Day: "2026-03-01", Transactions: 5, Cards: 4, Excluded: 0, FraudCards: 3, Detected: 1, Precision: 0.5, BestPossible: 1},
		{Day: "2026-03-02", Transactions: 4, Cards: 3, Excluded: 1, FraudCards: 1, Detected: 1, Precision: 0.5, BestPossible: 0.5},
		{Day: "2026-03-03", Transactions: 5, Cards: 3, Excluded: 2, FraudCards: 1, Detected: 0, Precision: 0, BestPossible: 0.5},
	}
	if got.K != 2 || len(got.Days) != len(want) {
		t.Fatalf("got k %d, %d days; want 2, %d", got.K, len(got.Days), len(want))
	}
	for i := range want {
		if got.Days[i] != want[i] {
			t.Errorf("day %d: got %+v, want %+v", i, got.Days[i], want[i])
		}
	}
	if !near(float64(got.Mean), 1.0/3) || !near(float64(got.MeanBestPossible), 2.0/3) {
		t.Errorf("mean = %v, best possible %v; want 1/3, 2/3", got.Mean, got.MeanBestPossible)
	}
}

func TestCardPrecisionDividesByK(t *testing.T) {
	ts := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	recs := []Scored{{TxID: "1", CardID: "A", TS: ts, Score: 1}, {TxID: "2", CardID: "B", TS: ts, Score: 0}}
	got := CardPrecisionTopK(recs, Truth{"1": true, "2": true}, 100)
	if d := got.Days[0]; d.Detected != 2 || d.Precision != 0.02 || d.BestPossible != 0.02 {
		t.Errorf("got %+v, want 2 detected, precision 0.02 = 2/k", d)
	}
	if empty := CardPrecisionTopK(nil, nil, 5); !math.IsNaN(float64(empty.Mean)) || len(empty.Days) != 0 {
		t.Errorf("no records: got %+v, want no days and a NaN mean", empty)
	}
}
