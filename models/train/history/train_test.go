package history

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
)

var day0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func day(n int) time.Time { return day0.AddDate(0, 0, n) }

// testHistory is 21 days of generated traffic (about 4,000 events a day,
// 2% fraud, labels a day late), its final truth and its amounts; built once.
var testHistory = sync.OnceValues(func() (Source, map[string]bool) {
	g, err := synth.New(synth.Config{Seed: 7, Cards: 1500, Terminals: 100, FraudRate: 0.02, LabelDelay: 24 * time.Hour})
	if err != nil {
		panic(err)
	}
	var src Source
	fraud := map[string]bool{}
	err = g.Simulate(day(0), day(21), 4000.0/86400, func(tx synth.Tx) error {
		src.Events = append(src.Events, tx.Event)
		if l, ok := g.LabelFor(tx); ok {
			src.Labels = append(src.Labels, l)
			if l.Fraud {
				fraud[l.TxID] = true
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	slices.SortStableFunc(src.Labels, func(a, b features.Label) int { return a.TS.Compare(b.TS) })
	return src, fraud
})

func basePlan(kind string, fraud map[string]bool) Plan {
	return Plan{Kind: kind, Name: "m_" + kind, Version: 1, From: day(7), To: day(15), EvalTo: day(21),
		Names: features.Names(), Fraud: func(id string) bool { return fraud[id] },
		Options: []train.Option{train.WithSeed(1), train.WithEpochs(3), train.WithTrees(20)}}
}

// count returns the events in [from, to) and the fraud among them.
func count(src Source, fraud map[string]bool, from, to time.Time) (n, nf int) {
	for i := range src.Events {
		if e := &src.Events[i]; !e.TS.Before(from) && e.TS.Before(to) {
			n++
			if fraud[e.TxID] {
				nf++
			}
		}
	}
	return n, nf
}

func TestTrainKinds(t *testing.T) {
	src, fraud := testHistory()
	nTrain, nFraud := count(src, fraud, day(7), day(15))
	nBefore, _ := count(src, fraud, time.Time{}, day(15))
	nEval, _ := count(src, fraud, day(15), day(21))
	if nFraud < 50 {
		t.Fatalf("generated history has %d frauds in the training range, want >= 50", nFraud)
	}
	for _, tc := range []struct {
		kind    string
		minAUC  float64
		seqRows bool
	}{
		{models.FamilyLogistic, 0.8, false},
		{models.FamilyLinear, 0.6, false},
		{models.FamilyGBDT, 0.8, false},
		{models.FamilyGRU, 0.6, true},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			res, err := Train(context.Background(), src, basePlan(tc.kind, fraud))
			if err != nil {
				t.Fatal(err)
			}
			wantTrain := nTrain
			if tc.seqRows {
				wantTrain = nBefore
				if res.Cards == 0 {
					t.Error("sequence result counts no cards")
				}
			}
			if res.TrainRows != wantTrain || res.EvalRows != nEval {
				t.Errorf("rows: train %d eval %d, want %d and %d", res.TrainRows, res.EvalRows, wantTrain, nEval)
			}
			if res.First.Before(day(7)) || !res.Last.Before(day(15)) || !res.Last.After(res.First) {
				t.Errorf("first %v last %v outside [day 7, day 15)", res.First, res.Last)
			}
			f := res.File
			if f.Family != tc.kind || f.Name != "m_"+tc.kind {
				t.Errorf("file family %q name %q", f.Family, f.Name)
			}
			if f.Training["train_from"] != res.First.Format(time.RFC3339Nano) {
				t.Errorf("train_from %v, want %v", f.Training["train_from"], res.First)
			}
			ev, ok := f.Training["evaluation"].(map[string]any)
			if !ok || res.Evaluation == nil {
				t.Fatalf("no evaluation recorded: %v", f.Training["evaluation"])
			}
			if ev["range"] != "[2026-01-16T00:00:00Z, 2026-01-22T00:00:00Z)" {
				t.Errorf("evaluation range %v", ev["range"])
			}
			auc, _ := ev["auc"].(float64)
			if auc < tc.minAUC || auc > 1 {
				t.Errorf("evaluation AUC %v, want >= %v", auc, tc.minAUC)
			}
			if _, err := f.Encode(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTrainDeterministic(t *testing.T) {
	src, fraud := testHistory()
	var files [2][]byte
	for i := range files {
		res, err := Train(context.Background(), src, basePlan(models.FamilyGBDT, fraud))
		if err != nil {
			t.Fatal(err)
		}
		if files[i], err = res.File.Encode(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("two trainings of the same plan differ")
	}
}

func TestTrainThresholdsHook(t *testing.T) {
	src, fraud := testHistory()
	nTrain, _ := count(src, fraud, day(7), day(15))
	p := basePlan(models.FamilyLogistic, fraud)
	p.Holdout = 0.25
	var gotRows, gotTS int
	var firstTS time.Time
	p.Thresholds = func(f *models.File, valid *train.Dataset, ts []time.Time) error {
		gotRows, gotTS, firstTS = valid.Rows(), len(ts), ts[0]
		f.Thresholds = models.Thresholds{Review: 0.01, Alert: 0.02}
		return nil
	}
	res, err := Train(context.Background(), src, p)
	if err != nil {
		t.Fatal(err)
	}
	want := int(float64(nTrain)*0.25 + 0.5)
	if gotRows != want || gotTS != want {
		t.Errorf("hook saw %d rows and %d times, want %d (the held-out quarter)", gotRows, gotTS, want)
	}
	if firstTS.Before(day(7)) || !firstTS.Before(day(15)) {
		t.Errorf("validation starts at %v, outside the training range", firstTS)
	}
	if res.File.Thresholds.Alert != 0.02 {
		t.Errorf("alert threshold %v: the hook's choice was not kept", res.File.Thresholds.Alert)
	}
	// The evaluation is measured after the hook, at its thresholds.
	m, err := models.Parse(mustEncode(t, res.File))
	if err != nil {
		t.Fatal(err)
	}
	if review, alert := m.Thresholds(); review != 0.01 || alert != 0.02 {
		t.Errorf("loaded thresholds %v / %v", review, alert)
	}
	hookErr := errors.New("budget refused")
	p.Thresholds = func(*models.File, *train.Dataset, []time.Time) error { return hookErr }
	if _, err := Train(context.Background(), src, p); !errors.Is(err, hookErr) {
		t.Errorf("hook error: got %v", err)
	}
}

func TestTrainErrors(t *testing.T) {
	src, fraud := testHistory()
	for _, tc := range []struct {
		name string
		edit func(*Plan)
		want error
	}{
		{"unknown kind", func(p *Plan) { p.Kind = "forest" }, ErrPlan},
		{"no name", func(p *Plan) { p.Name = "" }, ErrPlan},
		{"no names", func(p *Plan) { p.Names = nil }, ErrPlan},
		{"no fraud", func(p *Plan) { p.Fraud = nil }, ErrPlan},
		{"to before from", func(p *Plan) { p.To = day(6) }, ErrPlan},
		{"eval-to at to", func(p *Plan) { p.EvalTo = p.To }, ErrPlan},
		{"thresholds on a sequence family", func(p *Plan) {
			p.Kind = models.FamilyGRU
			p.Thresholds = func(*models.File, *train.Dataset, []time.Time) error { return nil }
		}, ErrPlan},
		{"empty range", func(p *Plan) { p.From, p.To, p.EvalTo = day(30), day(31), time.Time{} }, ErrNoRows},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := basePlan(models.FamilyLogistic, fraud)
			tc.edit(&p)
			if _, err := Train(context.Background(), src, p); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	src, fraud := testHistory()
	n, _ := count(src, fraud, time.Time{}, day(3))
	got := 0
	var lastDone, total int
	err := Replay(context.Background(), src, day(3), func(d, tt int) { lastDone, total = d, tt }, func(e *features.Event, row []float32) error {
		if !e.TS.Before(day(3)) {
			t.Fatalf("row of %v at or after the end", e.TS)
		}
		if len(row) < len(features.Names()) {
			t.Fatalf("row of %d values", len(row))
		}
		got++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != n || total != len(src.Events) || lastDone < n {
		t.Errorf("replayed %d rows (want %d), progress %d of %d", got, n, lastDone, total)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Replay(ctx, src, day(21), nil, func(*features.Event, []float32) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled replay: got %v", err)
	}
	stop := errors.New("stop")
	if err := Replay(context.Background(), src, day(21), nil, func(*features.Event, []float32) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn error: got %v", err)
	}
}

func mustEncode(t *testing.T, f *models.File) []byte {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
