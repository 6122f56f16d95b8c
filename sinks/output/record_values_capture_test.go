package output_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
)

// TestCaptureValues writes testdata/values.txt, the numbers of the records
// of realistic traffic that the encoding benchmarks and tests run on: the
// synthetic generator's events through a features.Builder (forty days of
// warm-up, then the values of captureEvents events) and the shipped models
// (the sequential one with a state per card). It runs only with
// STREAMSCORE_CAPTURE_VALUES=1, since the file is committed: a change of the
// generator, the features or the models changes the values, not the
// encoding's correctness, and the benchmarks stay comparable across commits.
func TestCaptureValues(t *testing.T) {
	if os.Getenv("STREAMSCORE_CAPTURE_VALUES") == "" {
		t.Skip("set STREAMSCORE_CAPTURE_VALUES=1 to rewrite testdata/values.txt")
	}
	const captureEvents = 512
	shared, err := features.NewShared()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := features.NewBuilder(shared)
	if err != nil {
		t.Fatal(err)
	}
	names := fb.Names()
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	scorers := make([]*models.Scorer, len(ms))
	for i, m := range ms {
		if scorers[i], err = m.Bind(names); err != nil {
			t.Fatal(err)
		}
	}
	g, err := synth.New(synth.Config{Seed: 13, Cards: 2000, Terminals: 300})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC)
	var evs []features.Event
	if err := g.Simulate(end.Add(-40*24*time.Hour), end, 0.05, func(tx synth.Tx) error {
		evs = append(evs, tx.Event)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(evs) < 4*captureEvents {
		t.Fatalf("only %d generated events", len(evs))
	}
	width := fb.Width()
	row := make([]float32, width)
	states := map[string][]float32{}
	out := make([]float32, 1)
	// Latency as the engine writes it: whole microseconds over 1000.
	lat := rand.New(rand.NewPCG(13, 1))
	var buf bytes.Buffer
	buf.WriteString("# Written by TestCaptureValues (STREAMSCORE_CAPTURE_VALUES=1): per event, the amount, latency_ms,\n")
	buf.WriteString("# the scores of the models, then after | the feature row; float32 values as strconv 'g' at 32 bits.\n")
	buf.WriteString("names " + strings.Join(names, " ") + "\n")
	buf.WriteString("models")
	for _, m := range ms {
		buf.WriteString(" " + m.Name())
	}
	buf.WriteString("\n")
	for i := range evs {
		e := &evs[i]
		fb.Update(e, row)
		capture := i >= len(evs)-captureEvents
		var scores []float32
		for _, s := range scorers {
			x := append([]float32(nil), row...) // Score standardises a copy, but keep row intact regardless
			if s.Model().Sequential() {
				st := states[e.CardID]
				if st == nil {
					st = make([]float32, s.Model().StateSize())
					states[e.CardID] = st
				}
				s.ScoreSeq(x, 1, [][]float32{st}, nil, out)
			} else if capture {
				s.Score(x, 1, out)
			}
			scores = append(scores, out[0])
		}
		if !capture {
			continue
		}
		buf.WriteString("e " + strconv.FormatFloat(e.Amount, 'g', -1, 64))
		buf.WriteString(" " + strconv.FormatFloat(float64(lat.IntN(30_000)+300)/1000, 'g', -1, 64))
		for _, v := range scores {
			buf.WriteString(" " + strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
		buf.WriteString(" |")
		for _, v := range row {
			buf.WriteString(" " + strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
		buf.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join("testdata", "values.txt"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
