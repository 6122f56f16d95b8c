package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestSpecDefaultMatchesBuilder is the contract that lets DefaultSpec drive
// the pipeline: on random streams with out-of-order events (some beyond the
// lateness), labels (some duplicated, corrected or from the future),
// countries and geo, a spec-driven Builder running DefaultSpec writes rows
// bit-identical to the hand-written Builder's, for Update and for Peek.
func TestSpecDefaultMatchesBuilder(t *testing.T) {
	n := 8000
	if raceEnabled {
		n = 2500
	}
	spec := DefaultSpec()
	if !slices.Equal(spec.Names(), Names()) {
		t.Fatalf("DefaultSpec names\n%v\nwant\n%v", spec.Names(), Names())
	}
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"defaults", nil},
		{"short ttl", []Option{WithTTL(36 * time.Hour), WithStripes(2)}},
		{"zero lateness", []Option{WithMaxLateness(0)}},
		{"long lateness", []Option{WithMaxLateness(3 * time.Hour), WithStripes(1)}},
	} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed%d", tc.name, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 11))
				evs := peekStream(rng, n, 6, 4, true)
				sa := MustShared(tc.opts...)
				sopts := append(slices.Clone(tc.opts), withSpec(spec, true)) // forced onto the spec engine
				sb := MustShared(sopts...)
				sb.seed = sa.seed
				ba, bb := MustBuilder(sa, tc.opts...), MustBuilder(sb, sopts...)
				if ba.sp != nil || bb.sp == nil {
					t.Fatal("not comparing the hand-written Builder with the spec engine")
				}
				ra, rb := make([]float32, ba.Width()), make([]float32, bb.Width())
				pa, pb := make([]float32, ba.Width()), make([]float32, bb.Width())
				fraud, changed, kmh, lagged, late, peekLate := 0, 0, 0, 0, 0, 0
				for i := range evs {
					e := &evs[i]
					if rng.Float64() < 0.3 { // a label about an earlier tx
						j := rng.IntN(i + 1)
						l := Label{TxID: evs[j].TxID, CardID: evs[j].CardID, TerminalID: evs[j].TerminalID,
							TS: e.TS.Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour), Fraud: rng.Float64() < 0.8}
						sa.ApplyLabel(&l)
						sb.ApplyLabel(&l)
						if rng.Float64() < 0.1 { // duplicate delivery
							sa.ApplyLabel(&l)
							sb.ApplyLabel(&l)
						}
					}
					lateBefore := ba.Late()
					ba.Update(e, ra)
					bb.Update(e, rb)
					if ba.LastLate() != bb.LastLate() || ba.LastLate() != (ba.Late() > lateBefore) {
						t.Fatalf("event %d: LastLate %v, spec %v, Late %d -> %d", i, ba.LastLate(), bb.LastLate(), lateBefore, ba.Late())
					}
					if ba.LastLate() {
						late++
					}
					fraud += int(ra[col("terminal_fraud_count_30d_lag7d")]) + int(ra[col("terminal_fraud_count_1d_lag7d")])
					lagged += int(ra[col("terminal_tx_count_1d_lag7d")])
					changed += int(ra[col("card_country_changed")])
					if ra[col("card_geo_velocity_kmh")] > 0 {
						kmh++
					}
					if d := bitDiff(ra, rb); d != "" {
						t.Fatalf("event %d (%+v): Update differs: %s", i, *e, d)
					}
					k := &evs[rng.IntN(i+1)] // Peek of an event, applied or (for a twin) not
					ba.Peek(k, pa)
					bb.Peek(k, pb)
					if d := bitDiff(pa, pb); d != "" {
						t.Fatalf("event %d: Peek of %+v differs: %s", i, *k, d)
					}
					if ba.LastLate() != bb.LastLate() {
						t.Fatalf("event %d: Peek of %+v: LastLate %v, spec %v", i, *k, ba.LastLate(), bb.LastLate())
					}
					if ba.LastLate() {
						peekLate++
					}
				}
				if fraud == 0 || changed == 0 || kmh == 0 || lagged == 0 || (late == 0 || peekLate == 0) && tc.name != "long lateness" {
					t.Fatalf("stream did not exercise labels, country, geo, lagged windows or lateness: %d %d %d %d %d %d", fraud, changed, kmh, lagged, late, peekLate)
				}
				if ba.Cards() != bb.Cards() {
					t.Errorf("Cards %d, spec %d", ba.Cards(), bb.Cards())
				}
			})
		}
	}
}

func bitDiff(a, b []float32) string {
	if len(a) != len(b) {
		return fmt.Sprintf("width %d vs %d", len(a), len(b))
	}
	s := ""
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			s += fmt.Sprintf("\n  %s: hand-written %v, spec %v", defaultNames[i], a[i], b[i])
		}
	}
	return s
}

// BenchmarkBuilderUpdateSpec is BenchmarkBuilderUpdate on the spec-driven
// engine running DefaultSpec (forced: WithSpec(DefaultSpec()) runs the
// hand-written Builder), to compare with BenchmarkBuilderUpdate.
func BenchmarkBuilderUpdateSpec(b *testing.B) {
	for _, size := range []struct{ cards, terminals int }{{1000, 100}, {100000, 10000}} {
		b.Run(fmt.Sprintf("cards=%d", size.cards), func(b *testing.B) {
			benchUpdateOpts(b, size.cards, size.terminals, withSpec(DefaultSpec(), true))
		})
	}
}

// TestReplayWithDefaultSpec runs Replay on the hand-written Builder and on
// the spec engine running DefaultSpec
// over the same events and labels: the rows must be bit-identical. (One
// stripe, so that both Shareds group terminals the same way whatever their
// hash seeds.)
func TestReplayWithDefaultSpec(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	evs := peekStream(rng, 3000, 20, 6, true)
	var labels []Label
	for i := 0; i < len(evs); i += 7 {
		labels = append(labels, Label{TxID: evs[i].TxID, CardID: evs[i].CardID, TerminalID: evs[i].TerminalID,
			TS: evs[i].TS.Add(time.Duration(rng.Int64N(int64(20 * 24 * time.Hour)))), Fraud: true})
	}
	var want [][]float32
	base := []Option{WithStripes(1)}
	if err := Replay(evs, labels, base, func(_ *Event, row []float32) error {
		want = append(want, slices.Clone(row))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	i, fraud := 0, float32(0)
	if err := Replay(evs, labels, append(base, withSpec(DefaultSpec(), true)), func(_ *Event, row []float32) error {
		if d := bitDiff(want[i], row); d != "" {
			return fmt.Errorf("row %d differs: %s", i, d)
		}
		fraud += row[col("terminal_fraud_count_30d_lag7d")]
		i++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fraud == 0 {
		t.Error("no fraud feature exercised")
	}
}

// TestDefaultSpecWindows: the spec engine keeps the default spec's windows
// in the hand-written Builder's order, with running sums for the same ones
// (else their running sums, recomputed at different times, would differ in
// the last bits).
func TestDefaultSpecWindows(t *testing.T) {
	cs := defaultCompiled()
	for _, en := range cs.ents {
		want, wantSum := cardWindows, len(cardWindows)
		if en.field == sfTerminal {
			want, wantSum = terminalWindows, terminalSummed
		}
		if !slices.Equal(en.wins, want) || en.nSum != wantSum {
			t.Errorf("%s: windows %v (%d summed), want %v (%d summed)", stringFields[en.field], en.wins, en.nSum, want, wantSum)
		}
	}
}
