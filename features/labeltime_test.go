package features_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// TestTxTimeFraudOnSynth checks the transaction-time fraud features on
// generated data with a 7-day label delay against a recomputation of their
// definition from everything applied so far: for an event at t, the frauds
// among the entity's transactions whose transaction time lies in
// (t-d-w, t-d] whose label is known (label TS <= t), and, for the rate,
// divided by the number of those transactions. Labels arrive at their TS
// among the events, ~10% twice, ~5% of fraud labels withdrawn later, ~30%
// without tx_ts (placed by their tx_id in the terminal's history); offsets
// 0 and 7d, terminal and card entities, the same features by label time
// alongside.
func TestTxTimeFraudOnSynth(t *testing.T) {
	spec, err := features.ParseSpec([]byte(`features:
  - {name: t_fc_1d_lag7d, agg: fraud_count, entity: terminal_id, window: 1d, offset: 7d}
  - {name: t_fr_7d_lag7d, agg: fraud_rate, entity: terminal_id, window: 7d, offset: 7d}
  - {name: t_fc_7d, agg: fraud_count, entity: terminal_id, window: 7d}
  - {name: t_fr_7d, agg: fraud_rate, entity: terminal_id, window: 7d, label_time: transaction}
  - {name: t_fc_7d_lag7d_by_label, agg: fraud_count, entity: terminal_id, window: 7d, offset: 7d, label_time: label}
  - {name: c_fc_30d, agg: fraud_count, entity: card_id, window: 30d}
  - {name: c_fr_3d_lag1d, agg: fraud_rate, entity: card_id, window: 3d, offset: 1d}
`))
	if err != nil {
		t.Fatal(err)
	}
	days := 30
	if testing.Short() {
		days = 16
	}
	g, err := synth.New(synth.Config{Seed: 11, Cards: 400, Terminals: 40, FraudRate: 0.03, LabelDelay: 7 * 24 * time.Hour, GenuineLabelRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	type arrival struct {
		at    time.Time
		ev    *features.Event
		label *features.Label
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var arr []arrival
	from := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	err = g.Simulate(from, from.Add(time.Duration(days)*24*time.Hour), 0.02, func(tx synth.Tx) error {
		e := tx.Event
		arr = append(arr, arrival{at: e.TS, ev: &e})
		l, ok := g.LabelFor(tx)
		if !ok {
			return nil
		}
		if l.TxTS.IsZero() || l.TxTS.After(l.TS) {
			return fmt.Errorf("label %+v: tx_ts missing or after ts", l)
		}
		if rng.Float64() < 0.3 {
			l.TxTS = time.Time{}
		}
		arr = append(arr, arrival{at: l.TS, label: &l})
		if rng.Float64() < 0.1 {
			again := l
			again.TS = l.TS.Add(time.Duration(rng.Int64N(int64(48 * time.Hour))))
			arr = append(arr, arrival{at: again.TS, label: &again})
		}
		if l.Fraud && rng.Float64() < 0.05 {
			c := l
			c.Fraud, c.TxTS = false, time.Time{}
			c.TS = l.TS.Add(time.Duration(rng.Int64N(int64(72 * time.Hour))))
			arr = append(arr, arrival{at: c.TS, label: &c})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(arr, func(a, b arrival) int { return a.at.Compare(b.at) })

	opts := []features.Option{features.WithSpec(spec), features.WithMaxLateness(time.Hour)}
	sh := features.MustShared(opts...)
	b := features.MustBuilder(sh, opts...)
	row := make([]float32, b.Width())
	type fraud struct{ ts, txTS time.Time }
	labels := map[string]map[string]fraud{} // "card_id\x00c-1" -> tx id -> fraud label
	events := map[string][]time.Time{}      // entity key -> its transactions' times
	txTime := map[string]time.Time{}        // tx id -> time, of the transactions applied
	key := func(field, id string) string { return field + "\x00" + id }
	var unplaced uint64
	checked, nonzero := 0, 0
	for _, a := range arr {
		if l := a.label; l != nil {
			tx := l.TxTS
			if tx.IsZero() {
				tx = txTime[l.TxID] // every tx is within the retained history here (30d, the longest window)
				if tx.After(l.TS) {
					tx = time.Time{}
				}
			}
			if l.Fraud && tx.IsZero() {
				unplaced++
			}
			sh.ApplyLabel(l)
			for _, k := range []string{key("card_id", l.CardID), key("terminal_id", l.TerminalID)} {
				m := labels[k]
				if m == nil {
					m = map[string]fraud{}
					labels[k] = m
				}
				_, had := m[l.TxID]
				switch {
				case !l.Fraud:
					delete(m, l.TxID)
				case !had:
					m[l.TxID] = fraud{l.TS, tx}
				}
			}
			continue
		}
		e := a.ev
		txTime[e.TxID] = e.TS
		b.Update(e, row)
		for fi, f := range spec.Features {
			id := e.TerminalID
			if f.Entity == "card_id" {
				id = e.CardID
			}
			k := key(f.Entity, id)
			lo, hi := e.TS.Add(-time.Duration(f.Offset+f.Window)), e.TS.Add(-time.Duration(f.Offset))
			in := func(x time.Time) bool { return x.After(lo) && !x.After(hi) }
			n := 0
			for _, ts := range events[k] {
				if in(ts) {
					n++
				}
			}
			if f.Offset == 0 {
				n++ // the event itself
			}
			frauds := 0
			for _, fr := range labels[k] {
				if f.LabelTime == features.LabelTimeLabel && in(fr.ts) ||
					f.LabelTime != features.LabelTimeLabel && !fr.ts.After(e.TS) && !fr.txTS.IsZero() && in(fr.txTS) {
					frauds++
				}
			}
			want := float32(frauds)
			if f.Agg == features.AggFraudRate {
				want = 0
				if n > 0 {
					want = float32(min(float64(frauds)/float64(n), 1))
				}
			}
			if row[fi] != want {
				t.Fatalf("event %s at %s (%s %s): %s = %v, want %v (%d frauds / %d transactions)", e.TxID, e.TS, f.Entity, id, f.Name, row[fi], want, frauds, n)
			}
			if want != 0 {
				nonzero++
			}
			checked++
		}
		events[key("card_id", e.CardID)] = append(events[key("card_id", e.CardID)], e.TS)
		events[key("terminal_id", e.TerminalID)] = append(events[key("terminal_id", e.TerminalID)], e.TS)
	}
	if got := sh.UnplacedLabels(); got != unplaced {
		t.Errorf("%d unplaced labels, want %d", got, unplaced)
	}
	if nonzero < checked/50 {
		t.Fatalf("only %d of %d values nonzero", nonzero, checked)
	}
	t.Logf("%d days, %d arrivals: %d values checked, %d nonzero, %d labels unplaced", days, len(arr), checked, nonzero, unplaced)
}
