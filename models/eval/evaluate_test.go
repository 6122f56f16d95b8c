package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"
)

func testScores() *Scores {
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	// Four transactions a day over three days, two cards; scores as in the
	// "ties mixed" case of TestAUCAndAveragePrecision plus genuine tail.
	s := &Scores{Model: "fraud", Duplicates: 2, Nulls: 1}
	scores := []float64{0.9, 0.8, 0.8, 0.7, 0.5, 0.5, 0.1, 0.1, 0.05, 0.05, 0.02, 0.01}
	for i, v := range scores {
		s.Records = append(s.Records, Scored{
			TxID:   "t" + string(rune('a'+i)),
			CardID: "c" + string(rune('0'+i%2)),
			TS:     day.Add(time.Duration(i) * 6 * time.Hour),
			Score:  v,
			Ident:  "fraud-mlp@1 sha256:x",
		})
	}
	return s
}

func testTruth() Truth {
	// ta, tc, tf fraud (0.9, 0.8, 0.5); tb false; tz fraud but never scored.
	return Truth{"ta": true, "tb": false, "tc": true, "tf": true, "tz": true}
}

func TestEvaluate(t *testing.T) {
	res, err := Evaluate(testScores(), testTruth(), WithThresholds(0.5, 0.8, "test"), WithK(1))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	if m.Transactions != 12 || m.Fraud != 3 || m.Genuine != 9 || m.Labelled != 4 || m.FraudWithoutScore != 1 ||
		m.DuplicateRecords != 2 || m.NullScores != 1 || m.OutOfRange != 0 {
		t.Errorf("counts: got %+v", m)
	}
	if !near(float64(m.BaseRate), 0.25) {
		t.Errorf("base rate = %v, want 0.25", m.BaseRate)
	}
	// Pairs: 0.9 beats 9; 0.8 beats 8, ties 1; 0.5 beats 6, ties 1 → 24/27.
	if !near(float64(m.ROCAUC), 24.0/27) {
		t.Errorf("AUC = %v, want 24/27", m.ROCAUC)
	}
	// 0.9: P 1 R 1/3; 0.8: P 2/3 R 2/3; 0.5: P 3/6 R 1 → 1/3 + 2/9 + 1/6.
	if !near(float64(m.AveragePrecision), 13.0/18) {
		t.Errorf("AP = %v, want 13/18", m.AveragePrecision)
	}
	if len(m.Thresholds) != 2 || m.Thresholds[0].Name != "review" || m.Thresholds[1].Name != "alert" || m.ThresholdSource != "test" {
		t.Fatalf("thresholds: got %+v from %q", m.Thresholds, m.ThresholdSource)
	}
	if r := m.Thresholds[0]; r.Alerted != 6 || r.TruePositives != 3 || !near(float64(r.Precision), 0.5) || !near(float64(r.Recall), 1) {
		t.Errorf("review: got %+v", r)
	}
	if a := m.Thresholds[1]; a.Alerted != 3 || a.TruePositives != 2 || !near(float64(a.Precision), 2.0/3) {
		t.Errorf("alert: got %+v", a)
	}
	if m.ModelIdents["fraud-mlp@1 sha256:x"] != 12 {
		t.Errorf("idents: got %v", m.ModelIdents)
	}
	if !m.From.Equal(testScores().Records[0].TS) || !m.To.Equal(testScores().Records[11].TS) {
		t.Errorf("range: got %v .. %v", m.From, m.To)
	}
	// Days: 1 = ta..td (c0 0.9 fraud, c1 0.8): top 1 = c0, fraud → 1.
	// 2 = te..th: c0 excluded; c1 0.5 fraud (tf) → 1. 3: both excluded → 0.
	cp := m.CardPrecision
	if cp.K != 1 || len(cp.Days) != 3 || cp.Days[0].Precision != 1 || cp.Days[1].Precision != 1 || cp.Days[2].Precision != 0 ||
		cp.Days[2].Excluded != 2 {
		t.Errorf("card precision: got %+v", cp)
	}
	if len(res.ROC) == 0 || len(res.PR) == 0 {
		t.Error("no curves")
	}

	// metrics.json round trip, NaN as null.
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Metrics
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ROCAUC != m.ROCAUC || back.CardPrecision.Days[2] != m.CardPrecision.Days[2] {
		t.Errorf("JSON round trip: got %+v", back)
	}
}

func TestEvaluateQuantileThresholds(t *testing.T) {
	res, err := Evaluate(testScores(), testTruth())
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	// 1% and 0.5% of 12 transactions are both the top one: 0.9.
	if m.Thresholds[0].Threshold != 0.9 || m.Thresholds[1].Threshold != 0.9 || !strings.Contains(m.ThresholdSource, "none given") {
		t.Errorf("got %+v from %q", m.Thresholds, m.ThresholdSource)
	}
	if m.CardPrecision.K != DefaultK {
		t.Errorf("k = %d, want %d", m.CardPrecision.K, DefaultK)
	}
}

func TestEvaluateRange(t *testing.T) {
	from := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	res, err := Evaluate(testScores(), testTruth(), WithRange(from, from.Add(24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	if m.Transactions != 4 || m.OutOfRange != 8 || m.Fraud != 1 || m.FraudWithoutScore != 1 ||
		m.Range != "[2026-03-02T00:00:00Z, 2026-03-03T00:00:00Z)" {
		t.Errorf("got %d transactions, %d out of range, %d fraud, %d unscored fraud, range %q",
			m.Transactions, m.OutOfRange, m.Fraud, m.FraudWithoutScore, m.Range)
	}
	if _, err := Evaluate(testScores(), testTruth(), WithRange(from.AddDate(1, 0, 0), time.Time{})); !errors.Is(err, ErrNoRecords) {
		t.Errorf("empty range: got %v, want ErrNoRecords", err)
	}
}

func TestEvaluateOptionErrors(t *testing.T) {
	day := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"k 0", WithK(0)},
		{"review above alert", WithThresholds(0.9, 0.5, "")},
		{"NaN threshold", WithThresholds(math.NaN(), 0.5, "")},
		{"empty range", WithRange(day, day)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Evaluate(testScores(), nil, tc.opt); !errors.Is(err, ErrInvalidOption) {
				t.Errorf("got %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestPlots(t *testing.T) {
	oneClass := testScores()
	constant := testScores()
	for i := range constant.Records {
		constant.Records[i].Score = 3
	}
	for _, tc := range []struct {
		name  string
		s     *Scores
		truth Truth
	}{
		{"both classes", testScores(), testTruth()},
		{"no fraud", oneClass, nil},
		{"constant scores", constant, testTruth()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Evaluate(tc.s, tc.truth)
			if err != nil {
				t.Fatal(err)
			}
			for name, write := range map[string]func(w *bytes.Buffer) error{
				"roc":    func(w *bytes.Buffer) error { return res.WriteROC(w) },
				"pr":     func(w *bytes.Buffer) error { return res.WritePR(w) },
				"scores": func(w *bytes.Buffer) error { return res.WriteScores(w) },
			} {
				var buf bytes.Buffer
				if err := write(&buf); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				img, err := png.Decode(&buf)
				if err != nil {
					t.Fatalf("%s: decode png: %v", name, err)
				}
				if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
					t.Errorf("%s: image %v too small", name, b)
				}
			}
		})
	}
}
