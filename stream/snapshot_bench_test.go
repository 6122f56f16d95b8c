package stream

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/stream/internal/statedir"

	"github.com/streamscore/streamscore/sinks/output"
)

type discardSink struct{}

func (discardSink) Name() string                                       { return "discard" }
func (discardSink) WriteBatch(context.Context, []output.Message) error { return nil }
func (discardSink) Close() error                                       { return nil }

// snapshotFixture returns a pipeline with the shipped models and a stage
// of two workers holding, in two partitions, the state of cards cards (two
// events each, a day apart, 20,000 terminals) and a sequential-model state
// per card, as after a run.
func snapshotFixture(b *testing.B, cards int) (*Pipeline, *stage) {
	b.Helper()
	p, st := stateFixture(b, "bench", b.TempDir(), stateFill{cards: cards, terminals: 20000, seed: 1,
		t0: time.Now().Add(-48 * time.Hour).Truncate(time.Second), step: time.Millisecond})
	if st.workers[0].layout.size == 0 {
		b.Fatal("the shipped models keep no per-card state")
	}
	return p, st
}

// shippedPipeline returns a pipeline of the shipped models on a broker
// address nothing listens on (the tests drive its stage and workers by
// hand), with a registry and a discarded log of its own, opts last.
func shippedPipeline(tb testing.TB, group string, opts ...Option) *Pipeline {
	tb.Helper()
	ms, err := models.Shipped()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New([]string{"127.0.0.1:1"}, group, "transactions", ms, discardSink{},
		append([]Option{WithRegisterer(prometheus.NewRegistry()), WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// stateFill is what stateFixture puts in the state: cards cards of two
// events a day apart (step apart within a day) at terminals terminals, the
// random draws seeded by seed.
type stateFill struct {
	cards, terminals int
	seed             uint64
	t0               time.Time
	step             time.Duration
}

// stateFixture returns a pipeline on stateDir with the shipped models and
// a stage of two workers holding, in two partitions, the cards of fill and
// a random sequential-model state per card, as after a run.
func stateFixture(tb testing.TB, group, stateDir string, fill stateFill) (*Pipeline, *stage) {
	tb.Helper()
	p := shippedPipeline(tb, group, WithWorkers(2), WithStateDir(stateDir))
	st := newStage(p, []*worker{newWorker(p, 0), newWorker(p, 1)})
	rng := rand.New(rand.NewPCG(fill.seed, fill.seed+1))
	row := make([]float32, st.width)
	for round := range 2 {
		for i := range fill.cards {
			ps := st.part(i % 2)
			ps.seq.layout = stageLayout(st, ps.part)
			ev := features.Event{
				TxID: "t-" + strconv.Itoa(round*fill.cards+i), CardID: "c-" + strconv.Itoa(i),
				TerminalID: "m-" + strconv.Itoa(rng.IntN(fill.terminals)),
				TS:         fill.t0.Add(time.Duration(round)*24*time.Hour + time.Duration(i)*fill.step),
				Amount:     float64(rng.IntN(20000)) / 100, Currency: "EUR", MCC: "5411", Channel: "pos", Country: "FR",
			}
			ps.build.Update(&ev, row)
			c := ps.seq.card(ev.CardID, ev.TS.UnixNano())
			for j := range c.data {
				c.data[j] = rng.Float32()
			}
			ps.applied++
		}
	}
	return p, st
}

// BenchmarkSnapshot times a whole pipeline state snapshot (Shared, both
// partitions' card windows and GRU states, manifest, fsyncs, CURRENT) and its
// restore, for 10,000 and 100,000 cards (STREAMSCORE_SNAPSHOT_CARDS adds
// another count, e.g. 1000000). The write reports x-raw-write: its time over
// the time to write and fsync the same bytes as plain files, measured in
// the same iterations.
//
//	go test -run '^$' -bench BenchmarkSnapshot -benchtime 5x ./stream/
func BenchmarkSnapshot(b *testing.B) {
	counts := []int{10_000, 100_000}
	if s := os.Getenv("STREAMSCORE_SNAPSHOT_CARDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("STREAMSCORE_SNAPSHOT_CARDS=%q: want a positive count", s)
		}
		counts = append(counts, n)
	}
	for _, cards := range counts {
		b.Run(fmt.Sprintf("cards=%d", cards), func(b *testing.B) {
			p, st := snapshotFixture(b, cards)
			b.Run("write", func(b *testing.B) {
				var snap, raw time.Duration
				var bytes int64
				rawDir := b.TempDir()
				for b.Loop() {
					t := time.Now()
					if err := p.writeSnapshot(st, "bench"); err != nil {
						b.Fatal(err)
					}
					snap += time.Since(t)
					bytes, raw = rawWrite(b, p.cfg.stateDir, rawDir, raw)
				}
				b.ReportMetric(float64(bytes)/(1<<20), "MB")
				b.ReportMetric(float64(snap.Nanoseconds())/float64(b.N)/float64(cards), "ns/card")
				b.ReportMetric(float64(snap.Nanoseconds())/float64(b.N)/1e6, "ms/snapshot")
				b.ReportMetric(snap.Seconds()/raw.Seconds(), "x-raw-write")
			})
			b.Run("restore", func(b *testing.B) {
				if err := p.writeSnapshot(st, "bench"); err != nil {
					b.Fatal(err)
				}
				fresh := newStage(p, st.workers)
				for b.Loop() {
					r, err := p.restoreSnapshot(fresh, nil)
					if err != nil {
						b.Fatal(err)
					}
					if got := sumMap(r.man.Cards); got != cards {
						b.Fatalf("restored %d cards, want %d", got, cards)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(cards), "ns/card")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/restore")
			})
		})
	}
}

// rawWrite copies the files of stateDir's current snapshot into dst as
// plain files (written, fsynced), adds the time that took to acc and
// returns the bytes written and the new acc. The files are read before the
// clock starts.
func rawWrite(b *testing.B, stateDir, dst string, acc time.Duration) (int64, time.Duration) {
	b.Helper()
	name, _, err := statedir.Current(stateDir)
	if err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(stateDir, name)
	ents, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	data := make([][]byte, len(ents))
	for i, e := range ents {
		if data[i], err = os.ReadFile(filepath.Join(src, e.Name())); err != nil {
			b.Fatal(err)
		}
	}
	var n int64
	t := time.Now()
	for i, e := range ents {
		if err := durable.WriteFile(filepath.Join(dst, e.Name()), data[i], 0o600); err != nil {
			b.Fatal(err)
		}
		n += int64(len(data[i]))
	}
	return n, acc + time.Since(t)
}
