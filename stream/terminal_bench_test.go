package stream

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
)

// BenchmarkTerminalStage measures the terminal stage over a backlog in R
// (three R partitions, four sources, on MemBroker: parse, decode, align,
// apply, E record, E write, checkpoints every 30 ms) against the reference
// in the same run: decoding the same payloads and applying them to one
// Shared in Replay's order, in one goroutine (the work a single process
// does for the shared half). Writing R is not timed; the E records are
// written to MemBroker one Append each.
func BenchmarkTerminalStage(b *testing.B) {
	t := &testing.T{}
	h := termHistory(t, 53, 20000, 7, false)
	src := NewMemBroker(map[string]int{termR: termRParts})
	rt := &termRouter{t: t, b: src, h: h}
	rt.sendUntil(rand.New(rand.NewPCG(1, 1)), time.Time{})
	rt.finish()
	recs := src.logs[termR]
	b.Run("reference", func(b *testing.B) {
		dec, _ := features.NewDecoder(features.WithMaxFutureSkew(-1))
		payloads := make([][]byte, len(h.events))
		for i := range h.events {
			payloads[i] = h.events[i].AppendJSON(nil)
		}
		idx := make([]int, len(h.events))
		for i := range idx {
			idx[i] = i
		}
		for b.Loop() {
			sh, _ := features.NewShared()
			row := make([]float32, sh.Width())
			evs := make([]features.Event, len(h.events))
			for i := range evs {
				if err := dec.Decode(payloads[i], &evs[i]); err != nil {
					b.Fatal(err)
				}
			}
			order := make([]int, len(idx))
			copy(order, idx)
			sortByEvents(order, evs)
			for _, i := range order {
				sh.Apply(&evs[i], row)
			}
		}
		b.ReportMetric(float64(len(h.events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("stage", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer() // R is written before: the stage reads a backlog
			bk := newTermBroker()
			for r, log := range recs {
				for _, rec := range log {
					bk.Append(termR, r, nil, rec.Value)
				}
			}
			s, _ := bk.NewSource(termGroup, termR, kafka.FirstOffset)
			st, err := newTerminalStage(terminalConfig{src: s, out: &termTestWriter{b: bk}, group: termGroup, rTopic: termR, eTopic: termE,
				inputParts: termSrcs, newShared: func() (*features.Shared, error) { return features.NewShared() },
				ckpt: NewMemoryCheckpoints(), fingerprint: "fp", interval: 30 * time.Millisecond, alignLag: 30 * time.Second,
				alignIdle: time.Millisecond, // the backlog's tail waits for no idle source
				reg:       prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- st.run(ctx) }()
			for termEvents(bk) < len(h.events) {
				time.Sleep(time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
		b.ReportMetric(float64(len(h.events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

func sortByEvents(order []int, evs []features.Event) {
	slices.SortStableFunc(order, func(a, b int) int { return features.CompareEvents(&evs[a], &evs[b]) })
}
