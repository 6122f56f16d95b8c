package synth

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
)

var simFrom = time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC) // a Monday

// run simulates days of traffic at eventsPerDay and returns the transactions.
func run(t testing.TB, cfg Config, days int, eventsPerDay float64) (*Generator, []Tx) {
	t.Helper()
	var txs []Tx
	g := each(t, cfg, days, eventsPerDay, func(tx Tx) { txs = append(txs, tx) })
	return g, txs
}

// each simulates days of traffic at eventsPerDay, calling fn for each.
func each(t testing.TB, cfg Config, days int, eventsPerDay float64, fn func(Tx)) *Generator {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	to := simFrom.Add(time.Duration(days) * 24 * time.Hour)
	if err := g.Simulate(simFrom, to, eventsPerDay/86400, func(tx Tx) error {
		fn(tx)
		return nil
	}); err != nil {
		t.Fatalf("Simulate: %v", err)
	}
	return g
}

func TestDeterminism(t *testing.T) {
	cfg := Config{Seed: 42, Cards: 2000, Terminals: 300, FraudRate: 0.02}
	_, a := run(t, cfg, 3, 20000)
	_, b := run(t, cfg, 3, 20000)
	if len(a) != len(b) {
		t.Fatalf("same seed: got %d and %d transactions", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed: tx %d differs:\n%+v\n%+v", i, a[i], b[i])
		}
	}
	cfg.Seed = 43
	_, c := run(t, cfg, 3, 20000)
	same := 0
	for i := range min(len(a), len(c)) {
		if a[i].Event.CardID == c[i].Event.CardID && a[i].Event.Amount == c[i].Event.Amount {
			same++
		}
	}
	if same > len(a)/100 {
		t.Errorf("different seeds: %d of %d transactions agree", same, len(a))
	}
}

// LabelFor must not perturb the generator's stream.
func TestLabelForDoesNotPerturb(t *testing.T) {
	cfg := Config{Seed: 7, Cards: 500, Terminals: 100}
	g1, _ := New(cfg)
	g2, _ := New(cfg)
	ts := simFrom
	for i := range 5000 {
		ts = ts.Add(3 * time.Second)
		a, b := g1.Next(ts), g2.Next(ts)
		if i%2 == 0 {
			g1.LabelFor(a)
		}
		if a != b {
			t.Fatalf("tx %d: got %+v, want %+v", i, a, b)
		}
		la, oka := g1.LabelFor(a)
		lb, okb := g2.LabelFor(b)
		if la != lb || oka != okb {
			t.Fatalf("tx %d: labels differ: %+v/%v vs %+v/%v", i, la, oka, lb, okb)
		}
		if oka && la.Scenario != a.Scenario {
			t.Fatalf("tx %d: label scenario %q, transaction's %q", i, la.Scenario, a.Scenario)
		}
		if oka && la.Fraud != (la.Scenario != "") {
			t.Fatalf("tx %d: fraud %v with scenario %q: a fraud label names its scenario, a genuine one none", i, la.Fraud, la.Scenario)
		}
	}
}

func TestFraudRates(t *testing.T) {
	const days, perDay = 30, 20000
	tests := []struct {
		name string
		mix  Mix
		rate float64
	}{
		{"default mix", Mix{}, 0.0075},
		{"high rate", Mix{}, 0.02},
		{"compromised terminal only", Mix{CompromisedTerminal: 1}, 0.01},
		{"account takeover only", Mix{AccountTakeover: 1}, 0.01},
		{"card testing only", Mix{CardTesting: 1}, 0.01},
		{"merchant collusion only", Mix{MerchantCollusion: 1}, 0.01},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var n, fraud int
			byScen := map[string]int{}
			each(t, Config{Seed: 3, Cards: 5000, Terminals: 800, FraudRate: tc.rate, Mix: tc.mix}, days, perDay, func(tx Tx) {
				n++
				if tx.Fraud != (tx.Scenario != "") {
					t.Fatalf("tx %s: fraud %v with scenario %q", tx.Event.TxID, tx.Fraud, tx.Scenario)
				}
				if tx.Fraud {
					fraud++
					byScen[tx.Scenario]++
				}
			})
			got := float64(fraud) / float64(n)
			// Episodes planned past the end are lost, so allow an undershoot.
			if got < 0.8*tc.rate || got > 1.1*tc.rate {
				t.Errorf("fraud rate: got %.4f, want %.4f (-20%%/+10%%)", got, tc.rate)
			}
			mix := tc.mix
			if mix == (Mix{}) {
				mix = DefaultMix()
			}
			shares := map[string]float64{
				ScenarioCompromisedTerminal: mix.CompromisedTerminal,
				ScenarioAccountTakeover:     mix.AccountTakeover,
				ScenarioCardTesting:         mix.CardTesting,
				ScenarioMerchantCollusion:   mix.MerchantCollusion,
			}
			for s, share := range shares {
				got := float64(byScen[s]) / float64(fraud)
				if math.Abs(got-share) > 0.06 {
					t.Errorf("scenario %s: share got %.3f, want %.3f ± 0.06", s, got, share)
				}
			}
			t.Logf("%d tx, fraud rate %.4f, by scenario %v", n, got, byScen)
		})
	}
}

func TestNoFraud(t *testing.T) {
	_, txs := run(t, Config{Seed: 1, Cards: 1000, Terminals: 200, FraudRate: -1}, 2, 20000)
	for _, tx := range txs {
		if tx.Fraud {
			t.Fatalf("FraudRate -1: got fraud tx %+v", tx)
		}
	}
}

func TestLabels(t *testing.T) {
	cfg := Config{Seed: 5, Cards: 3000, Terminals: 500, FraudRate: 0.01, LabelDelay: 48 * time.Hour, GenuineLabelRate: 0.05}
	g, txs := run(t, cfg, 10, 20000)
	var fraud, genuine, genuineLabels int
	var delays []float64
	for _, tx := range txs {
		l, ok := g.LabelFor(tx)
		if tx.Fraud {
			fraud++
			if !ok {
				t.Fatalf("fraud tx %s has no label", tx.Event.TxID)
			}
		} else {
			genuine++
			if ok {
				genuineLabels++
			}
		}
		if !ok {
			continue
		}
		if !l.TS.After(tx.Event.TS) {
			t.Fatalf("label %s at %v not after tx at %v", l.TxID, l.TS, tx.Event.TS)
		}
		if l.TxID != tx.Event.TxID || l.CardID != tx.Event.CardID || l.TerminalID != tx.Event.TerminalID || l.Fraud != tx.Fraud {
			t.Fatalf("label %+v does not match tx %+v", l, tx)
		}
		delays = append(delays, l.TS.Sub(tx.Event.TS).Hours())
	}
	if got := float64(genuineLabels) / float64(genuine); math.Abs(got-0.05) > 0.005 {
		t.Errorf("genuine label rate: got %.4f, want 0.05", got)
	}
	var sum float64
	for _, d := range delays {
		sum += d
	}
	if got := sum / float64(len(delays)); math.Abs(got-48) > 2 {
		t.Errorf("mean label delay: got %.1fh, want 48h", got)
	}
	slices.Sort(delays)
	if p10, p90 := delays[len(delays)/10], delays[len(delays)*9/10]; p10 > 30 || p90 < 70 {
		t.Errorf("label delay has no jitter: p10 %.1fh, p90 %.1fh", p10, p90)
	}
}

func TestEventsValid(t *testing.T) {
	_, txs := run(t, Config{Seed: 9, Cards: 2000, Terminals: 400, FraudRate: 0.05}, 3, 30000)
	if len(txs) == 0 {
		t.Fatal("no transactions")
	}
	last := time.Now().Add(24 * time.Hour)
	dec, err := features.NewDecoder(features.WithClock(func() time.Time { return last }))
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool, len(txs))
	var buf []byte
	prev := time.Time{}
	for _, tx := range txs {
		e := tx.Event
		if seen[e.TxID] {
			t.Fatalf("duplicate tx id %s", e.TxID)
		}
		seen[e.TxID] = true
		if e.TxID == "" || e.CardID == "" || e.TerminalID == "" || e.MCC == "" || e.Country == "" || e.Channel == "" || e.Currency == "" {
			t.Fatalf("missing field: %+v", e)
		}
		if !(e.Amount > 0) || math.IsInf(e.Amount, 0) || e.Amount != math.Round(e.Amount*100)/100 {
			t.Fatalf("bad amount: %+v", e)
		}
		if e.TS.Location() != time.UTC || e.TS.Before(prev) || e.TS.Nanosecond()%int(time.Millisecond) != 0 {
			t.Fatalf("bad ts %v after %v", e.TS, prev)
		}
		prev = e.TS
		if e.HasGeo != (e.Channel != "ecom") || math.Abs(e.Lat) > 90 || math.Abs(e.Lon) > 180 {
			t.Fatalf("bad geo: %+v", e)
		}

		buf = e.AppendJSON(buf[:0])
		var got features.Event
		if err := dec.Decode(buf, &got); err != nil {
			t.Fatalf("decode %s: %v", buf, err)
		}
		if !got.TS.Equal(e.TS) {
			t.Fatalf("round trip ts: got %v, want %v", got.TS, e.TS)
		}
		got.TS = e.TS
		if got != e {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
	}
}

func TestHourOfDay(t *testing.T) {
	var hours [24]float64
	var weekday, weekend [24]float64
	var n float64
	each(t, Config{Seed: 11, Cards: 3000, Terminals: 500, FraudRate: -1}, 14, 30000, func(tx Tx) {
		c := clockOf(tx.Event.TS.UnixMilli())
		hours[c.hour]++
		if c.weekend() {
			weekend[c.hour]++
		} else {
			weekday[c.hour]++
		}
		n++
	})
	night := (hours[1] + hours[2] + hours[3] + hours[4]) / n
	if night > 0.05 {
		t.Errorf("01-05 local: got %.3f of traffic, want < 0.05", night)
	}
	peak := slices.Max(hours[:])
	trough := slices.Min(hours[:])
	if peak < 8*trough {
		t.Errorf("peak/trough: got %.1f, want > 8", peak/trough)
	}
	if evening := (hours[17] + hours[18] + hours[19]) / n; evening < 0.15 {
		t.Errorf("17-20 local: got %.3f of traffic, want > 0.15", evening)
	}
	// Weekends start later: 08:00 carries less of the day than on weekdays.
	sum := func(a [24]float64) float64 {
		var s float64
		for _, v := range a {
			s += v
		}
		return s
	}
	if wd, we := weekday[8]/sum(weekday), weekend[8]/sum(weekend); we >= wd {
		t.Errorf("08:00 share: weekend %.3f, weekday %.3f; want weekend lower", we, wd)
	}
}

func TestIntensityMean(t *testing.T) {
	var sum float64
	n := 0
	for m := simFrom; m.Before(simFrom.Add(7 * 24 * time.Hour)); m = m.Add(time.Minute) {
		sum += Intensity(m)
		n++
	}
	if got := sum / float64(n); math.Abs(got-1) > 0.01 {
		t.Errorf("weekly mean intensity: got %.3f, want 1", got)
	}
}

// The scenarios leave traces that windowed features can see.
func TestScenarioSignals(t *testing.T) {
	_, txs := run(t, Config{Seed: 13, Cards: 5000, Terminals: 800, FraudRate: 0.02}, 20, 20000)
	type agg struct{ n, night, small, big, foreign float64 }
	stats := map[string]*agg{}
	g0, _ := New(Config{Seed: 13, Cards: 5000, Terminals: 800})
	home := map[string]string{}
	for i := range g0.cards {
		home[g0.cards[i].id] = countries[g0.cards[i].home].code
	}
	cardAmt := map[string][]float64{}
	for _, tx := range txs {
		a := stats[tx.Scenario]
		if a == nil {
			a = &agg{}
			stats[tx.Scenario] = a
		}
		a.n++
		if clockOf(tx.Event.TS.UnixMilli()).hour < 5 {
			a.night++
		}
		if tx.Event.Amount < 3 {
			a.small++
		}
		if tx.Event.Amount > 250 {
			a.big++
		}
		if tx.Event.Country != home[tx.Event.CardID] {
			a.foreign++
		}
		if !tx.Fraud {
			cardAmt[tx.Event.CardID] = append(cardAmt[tx.Event.CardID], tx.Event.Amount)
		}
	}
	frac := func(s string, f func(*agg) float64) float64 { return f(stats[s]) / stats[s].n }
	night := func(a *agg) float64 { return a.night }
	if g, f := frac("", night), frac(ScenarioAccountTakeover, night); f < 3*g {
		t.Errorf("takeover at night: got %.3f, genuine %.3f; want ≥ 3×", f, g)
	}
	big := func(a *agg) float64 { return a.big }
	if g, f := frac("", big), frac(ScenarioAccountTakeover, big); f < 0.5 || g > 0.05 {
		t.Errorf("takeover amounts > 250: got %.3f, genuine %.3f", f, g)
	}
	foreign := func(a *agg) float64 { return a.foreign }
	if g, f := frac("", foreign), frac(ScenarioAccountTakeover, foreign); f < 2*g {
		t.Errorf("takeover abroad: got %.3f, genuine %.3f; want ≥ 2×", f, g)
	}
	small := func(a *agg) float64 { return a.small }
	if f := frac(ScenarioCardTesting, small); f < 0.7 {
		t.Errorf("card testing amounts < 3: got %.3f, want > 0.7", f)
	}
	if g, f := frac("", big), frac(ScenarioMerchantCollusion, big); f < 0.8 {
		t.Errorf("collusion amounts > 250: got %.3f, genuine %.3f", f, g)
	}
	// Not trivially separable: genuine traffic also has night, big and foreign tx.
	if g := stats[""]; g.night == 0 || g.big == 0 || g.foreign == 0 || g.small == 0 {
		t.Errorf("genuine traffic lacks hard negatives: %+v", *g)
	}
	// Compromised terminals: a terminal's past fraud predicts its future fraud.
	prior := map[string]bool{}
	var n, fraud [2]float64 // by "terminal had fraud before"
	for _, tx := range txs {
		k := 0
		if prior[tx.Event.TerminalID] {
			k = 1
		}
		n[k]++
		if tx.Scenario == ScenarioCompromisedTerminal {
			fraud[k]++
		}
		if tx.Fraud {
			prior[tx.Event.TerminalID] = true
		}
	}
	with, without := fraud[1]/n[1], fraud[0]/n[0]
	if with < 3*without {
		t.Errorf("compromised-terminal fraud rate: %.4f at terminals with past fraud, %.4f elsewhere; want ≥ 3×", with, without)
	}
	t.Logf("compromised-terminal fraud rate: %.4f at terminals with past fraud, %.4f elsewhere", with, without)
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative cards", Config{Cards: -1}},
		{"few terminals", Config{Terminals: 5}},
		{"fraud rate too high", Config{FraudRate: 0.5}},
		{"fraud rate NaN", Config{FraudRate: math.NaN()}},
		{"genuine label rate > 1", Config{GenuineLabelRate: 2}},
		{"negative delay", Config{LabelDelay: -time.Second}},
		{"negative mix", Config{Mix: Mix{AccountTakeover: -1, CardTesting: 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
	g, err := New(Config{})
	if err != nil {
		t.Fatalf("zero config: %v", err)
	}
	got := g.Config()
	if got.Cards != DefaultCards || got.Terminals != DefaultTerminals || got.FraudRate != DefaultFraudRate ||
		got.LabelDelay != DefaultLabelDelay || got.GenuineLabelRate != DefaultGenuineLabelRate || got.Mix != DefaultMix() {
		t.Errorf("zero config: got %+v", got)
	}
}

func TestSimulateErrors(t *testing.T) {
	g, _ := New(Config{Cards: 10, Terminals: 20})
	noop := func(Tx) error { return nil }
	if err := g.Simulate(simFrom, simFrom.Add(time.Hour), 0, noop); err == nil {
		t.Error("rate 0: got nil error")
	}
	if err := g.Simulate(simFrom, simFrom, 1, noop); err == nil {
		t.Error("empty range: got nil error")
	}
	stop := errors.New("stop")
	n := 0
	err := g.Simulate(simFrom, simFrom.Add(time.Hour), 100, func(Tx) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("got %v after %d, want stop after 10", err, n)
	}
}

// Tiny populations must not panic (empty countries, no web shops).
func TestTinyPopulation(t *testing.T) {
	for seed := range int64(20) {
		_, txs := run(t, Config{Seed: seed, Cards: 1, Terminals: 20, FraudRate: 0.2}, 2, 2000)
		if len(txs) == 0 {
			t.Fatal("no transactions")
		}
	}
}

func BenchmarkNext(b *testing.B) {
	g, err := New(Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	ts := simFrom
	b.ReportAllocs()
	for b.Loop() {
		ts = ts.Add(50 * time.Millisecond)
		g.Next(ts)
	}
}

func BenchmarkNextJSON(b *testing.B) {
	g, err := New(Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	ts := simFrom
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		ts = ts.Add(50 * time.Millisecond)
		tx := g.Next(ts)
		buf = tx.Event.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}
