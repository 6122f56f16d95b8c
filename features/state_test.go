package features

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func col(name string) int {
	for i, n := range defaultNames {
		if n == name {
			return i
		}
	}
	panic("no feature " + name)
}

func TestNames(t *testing.T) {
	names := Names()
	if len(names) != MustBuilder(nil).Width() {
		t.Fatalf("len(Names()) = %d, want Width %d", len(names), width)
	}
	seen := map[string]bool{}
	re := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	for _, n := range names {
		if !re.MatchString(n) || seen[n] {
			t.Errorf("bad or duplicate name %q", n)
		}
		seen[n] = true
	}
	names[0] = "mutated"
	if Names()[0] == "mutated" {
		t.Error("Names returns shared slice")
	}
}

// refPoint is a point the brute-force reference knows was inserted.
type refEntity struct {
	pts   []point
	maxTS int64
	init  bool
}

// ref computes a window aggregate by brute force over the points the state
// should retain: inserted, and newer than maxTS-retain.
func (r *refEntity) agg(w window, t, retain int64) agg {
	var a agg
	for _, p := range r.pts {
		if p.ts > t-w.offset-w.length && p.ts <= t-w.offset && p.ts > r.maxTS-retain {
			a.add(p.amt)
		}
	}
	return a
}

// observe mirrors series.add's insertion rule; it reports whether the
// point is inserted.
func (r *refEntity) observe(ts int64, amt float64, lateness int64) bool {
	if r.init && ts < r.maxTS-lateness {
		return false
	}
	if !r.init || ts > r.maxTS {
		r.maxTS = ts
		r.init = true
	}
	r.pts = append(r.pts, point{ts, amt})
	return true
}

func near(got float32, want float64) bool {
	w := float32(want)
	return math.Abs(float64(got-w)) <= 1e-5*math.Max(1, math.Abs(float64(w)))
}

// randomStream returns events for a few cards and terminals over ~100 days,
// roughly in time order with some out of order (a few beyond the lateness).
func randomStream(rng *rand.Rand, n, cards, terminals int) []Event {
	evs := make([]Event, n)
	now := t0
	for i := range evs {
		// Bursty gaps: mostly minutes, sometimes hours or days.
		var gap time.Duration
		switch r := rng.Float64(); {
		case r < 0.6:
			gap = time.Duration(rng.Int64N(int64(10 * time.Minute)))
		case r < 0.95:
			gap = time.Duration(rng.Int64N(int64(6 * time.Hour)))
		default:
			gap = time.Duration(rng.Int64N(int64(5 * 24 * time.Hour)))
		}
		now = now.Add(gap)
		ts := now
		if rng.Float64() < 0.15 { // out of order, sometimes beyond the 1h lateness
			ts = ts.Add(-time.Duration(rng.Int64N(int64(90 * time.Minute))))
		}
		amt := math.Round(rng.ExpFloat64()*5000) / 100
		if rng.Float64() < 0.05 {
			amt = 0
		}
		evs[i] = Event{
			TxID:       fmt.Sprintf("t-%d", i),
			CardID:     fmt.Sprintf("c-%d", rng.IntN(cards)),
			TerminalID: fmt.Sprintf("m-%d", rng.IntN(terminals)),
			TS:         ts,
			Amount:     amt,
		}
	}
	return evs
}

func TestWindowsMatchBruteForce(t *testing.T) {
	n := 6000
	if raceEnabled {
		n = 2000
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			evs := randomStream(rng, n, 4, 3)
			b := MustBuilder(MustShared())
			lateness := int64(time.Hour)
			cardRetain := maxSpan(cardWindows) + lateness
			termRetain := maxSpan(terminalWindows) + lateness
			cards := map[string]*refEntity{}
			terms := map[string]*refEntity{}
			row := make([]float32, b.Width())
			late, tooLate, lagged := 0, 0, 0
			for i := range evs {
				e := &evs[i]
				tn := e.TS.UnixNano()
				c := cards[e.CardID]
				if c == nil {
					c = &refEntity{}
					cards[e.CardID] = c
				}
				m := terms[e.TerminalID]
				if m == nil {
					m = &refEntity{}
					terms[e.TerminalID] = m
				}
				if c.init && tn < c.maxTS {
					late++
				}
				cIns := c.observe(tn, e.Amount, lateness)
				mIns := m.observe(tn, e.Amount, lateness)
				if !cIns {
					tooLate++
				}
				b.Update(e, row)
				for k, w := range cardWindows {
					a := c.agg(w, tn, cardRetain)
					if !cIns {
						a.add(e.Amount)
					}
					sfx := windowSuffixes[k]
					check(t, i, row, "card_tx_count_"+sfx, float64(a.n))
					check(t, i, row, "card_amount_sum_"+sfx, a.sum)
					check(t, i, row, "card_amount_mean_"+sfx, a.mean())
				}
				for k := range nWindows {
					a := m.agg(terminalWindows[k], tn, termRetain)
					if !mIns {
						a.add(e.Amount)
					}
					sfx := windowSuffixes[k]
					check(t, i, row, "terminal_tx_count_"+sfx, float64(a.n))
					check(t, i, row, "terminal_amount_mean_"+sfx, a.mean())
				}
				for j, k := range lagWindows { // lagged tx counts: the event is never in them
					a := m.agg(terminalWindows[k], tn, termRetain)
					if a.n > 0 {
						lagged++
					}
					check(t, i, row, "terminal_tx_count_"+lagSuffixes[j], float64(a.n))
					if got := b.shared.lagTxCount(e.TerminalID, k, tn); got != a.n {
						t.Fatalf("event %d: lagged window %d tx count %d, want %d", i, k, got, a.n)
					}
				}
				if t.Failed() {
					t.FailNow()
				}
			}
			if late == 0 || tooLate == 0 || lagged == 0 {
				t.Fatalf("stream exercised late=%d tooLate=%d lagged=%d", late, tooLate, lagged)
			}
			t.Logf("%d events, %d out of order, %d beyond lateness", n, late, tooLate)
		})
	}
}

func check(t *testing.T, i int, row []float32, name string, want float64) {
	t.Helper()
	if got := row[col(name)]; !near(got, want) {
		t.Errorf("event %d: %s = %v, want %v", i, name, got, want)
	}
}

// lagTxCount returns the number of transactions of terminal id in terminal
// window k at time t (test hook).
func (s *Shared) lagTxCount(id string, k int, t int64) int64 {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	ts, ok := st.m.cur[id]
	if !ok {
		ts = st.m.old[id]
	}
	return ts.s.at(k, s.wins[k], t).n
}

func TestCardFeatures(t *testing.T) {
	b := MustBuilder(nil)
	row := make([]float32, b.Width())
	ev := func(d time.Duration, amt float64, country string, geo ...float64) {
		e := Event{TxID: "t", CardID: "c", TerminalID: "m", TS: t0.Add(d), Amount: amt, Country: country}
		if len(geo) == 2 {
			e.Lat, e.Lon, e.HasGeo = geo[0], geo[1], true
		}
		b.Update(&e, row)
	}
	ev(0, 10, "FR", 48.8566, 2.3522) // Paris, Thursday 00:00 UTC
	if got := row[col("card_secs_since_prev_log1p")]; got != SinceFirstSeen {
		t.Errorf("first seen: since = %v, want %v", got, SinceFirstSeen)
	}
	if got := row[col("card_amount_ratio_30d")]; got != 1 {
		t.Errorf("first seen: ratio = %v, want 1", got)
	}
	if row[col("is_night")] != 1 || row[col("is_weekend")] != 0 || row[col("hour_sin")] != 0 || row[col("hour_cos")] != 1 {
		t.Errorf("calendar at Thursday midnight: %v", row[col("hour_sin"):])
	}
	ev(time.Hour, 30, "GB", 51.5074, -0.1278) // London, 1h later
	if got, want := row[col("card_secs_since_prev_log1p")], float32(math.Log1p(3600)); got != want {
		t.Errorf("since = %v, want %v", got, want)
	}
	if row[col("card_country_changed")] != 1 {
		t.Error("country change not flagged")
	}
	if v := row[col("card_geo_velocity_kmh")]; v < 330 || v > 350 { // Paris-London ≈ 344 km
		t.Errorf("velocity = %v km/h, want ≈ 344", v)
	}
	if got := row[col("card_amount_ratio_30d")]; got != 3 {
		t.Errorf("ratio = %v, want 3", got)
	}
	ev(2*time.Hour, 20, "GB")
	// prior amounts 10, 30: mean 20, std 10
	if got := row[col("card_amount_zscore_30d")]; got != 0 {
		t.Errorf("zscore = %v, want 0", got)
	}
	if row[col("card_country_changed")] != 0 || row[col("card_geo_velocity_kmh")] != 0 {
		t.Error("no change expected")
	}
	ev(3*time.Hour, 40, "GB")
	// prior 10, 30, 20: mean 20, population std sqrt(200/3)
	if got, want := row[col("card_amount_zscore_30d")], float32(20/math.Sqrt(200.0/3)); !near(got, float64(want)) {
		t.Errorf("zscore = %v, want %v", got, want)
	}
	ev(2*24*time.Hour+7*time.Hour, 1e308, "") // Saturday 07:00
	for i, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Errorf("%s = %v not finite", defaultNames[i], v)
		}
	}
	if row[col("is_weekend")] != 1 || row[col("is_night")] != 0 {
		t.Errorf("calendar at Saturday 07:00: weekend %v night %v", row[col("is_weekend")], row[col("is_night")])
	}
}

// TestLabelsPointInTime checks the hand-written Builder's lagged terminal
// fraud features: the frauds among the terminal's transactions whose
// transaction time is in (t-7d-w, t-7d], counting a label only once known
// (label TS <= t); tx times from tx_ts or found by tx_id; duplicates,
// corrections and unplaceable labels.
func TestLabelsPointInTime(t *testing.T) {
	s := MustShared()
	b := MustBuilder(s)
	row := make([]float32, b.Width())
	day := 24 * time.Hour
	at := func(d int) time.Time { return t0.Add(time.Duration(d) * day) }
	// One transaction a day at the terminal for 20 days: t<d> at day d.
	for d := range 20 {
		b.Update(&Event{TxID: fmt.Sprint("t", d), CardID: fmt.Sprint("c", d), TerminalID: "m", TS: at(d), Amount: 1}, row)
	}
	label := func(tx string, ts time.Time, fraud bool, txTS time.Time, wantPlaced bool) {
		t.Helper()
		if placed := s.ApplyLabel(&Label{TxID: tx, CardID: "c", TerminalID: "m", TS: ts, TxTS: txTS, Fraud: fraud}); placed != wantPlaced {
			t.Errorf("label %s: placed %v, want %v", tx, placed, wantPlaced)
		}
	}
	score := func(ts time.Time) (c7, r7, c30, r30 float32) {
		b.Update(&Event{TxID: "probe", CardID: "probe", TerminalID: "m", TS: ts, Amount: 1}, row)
		i := col("terminal_fraud_count_7d_lag7d")
		return row[i], row[i+1], row[i+2], row[i+3]
	}
	evt := at(20) // the probe; its windows: 1d (day 12, day 13], 7d (day 6, day 13], 30d (day -17, day 13]
	var none time.Time
	label("t13", evt, true, none, true)                        // at the windows' end, known exactly at the probe: visible
	label("t12", evt.Add(time.Second), true, none, true)       // known after the probe: not yet visible
	label("t10", at(17), true, none, true)                     // 7d and 30d
	label("t10", at(17), true, none, true)                     // duplicate delivery
	label("t3", at(10), true, at(3), true)                     // 30d only (tx_ts given)
	label("t9", at(15), false, none, true)                     // genuine: ignored
	label("x", at(15), true, at(6).Add(time.Nanosecond), true) // a tx the terminal never saw, with tx_ts: 7d and 30d
	label("nope", at(15), true, none, false)                   // no tx_ts, tx not in the history: unplaced
	label("t18", at(17), true, none, false)                    // before its own transaction: unplaced
	if n := s.UnplacedLabels(); n != 2 {
		t.Errorf("UnplacedLabels = %d, want 2", n)
	}
	// lag1d checks the 1-day lagged window and the lagged transaction counts
	// of the last score.
	lag1d := func(when string, tx1, tx7, tx30, fraud1 float32) {
		t.Helper()
		rate1 := float32(0)
		if tx1 > 0 {
			rate1 = min(fraud1/tx1, 1)
		}
		got := []float32{row[col("terminal_tx_count_1d_lag7d")], row[col("terminal_tx_count_7d_lag7d")], row[col("terminal_tx_count_30d_lag7d")],
			row[col("terminal_fraud_count_1d_lag7d")], row[col("terminal_fraud_rate_1d_lag7d")]}
		if want := []float32{tx1, tx7, tx30, fraud1, rate1}; !slices.Equal(got, want) {
			t.Errorf("%s: lagged tx counts 1d, 7d, 30d, 1d fraud count and rate %v, want %v", when, got, want)
		}
	}
	c7, r7, c30, r30 := score(evt)
	if c7 != 3 || c30 != 4 { // t13, t10, x; and t3
		t.Errorf("fraud counts 7d=%v 30d=%v, want 3 and 4", c7, c30)
	}
	// tx in (day 6, day 13]: days 7..13 -> 7 txs; (day -17, day 13]: days 0..13 -> 14.
	if !near(r7, 3.0/7) || !near(r30, 4.0/14) {
		t.Errorf("fraud rates 7d=%v 30d=%v, want %v and %v", r7, r30, 3.0/7, 4.0/14)
	}
	lag1d("probe", 1, 7, 14, 1)             // (day 12, day 13]: t13
	label("t10", at(21), false, none, true) // correction withdraws t10
	if c7, _, c30, _ := score(evt); c7 != 2 || c30 != 3 {
		t.Errorf("after correction: fraud counts 7d=%v 30d=%v, want 2 and 3", c7, c30)
	}
	lag1d("after correction", 1, 7, 14, 1)
	// A week later: 7d (day 13, day 20] holds no labelled tx; 30d
	// (day -10, day 20] holds t13, x, t3 and t12, now known.
	if c7, _, c30, _ := score(at(27)); c7 != 0 || c30 != 4 {
		t.Errorf("a week later: fraud counts 7d=%v 30d=%v, want 0 and 4", c7, c30)
	}
	// (day 19, day 20]: the two probes at day 20; (day 13, day 20]: days
	// 14..19 and the probes; (day -10, day 20]: days 0..19 and the probes.
	lag1d("a week later", 2, 8, 22, 0)
	label("t19", at(22), true, at(19), true)
	// Eight days later: 7d (day 14, day 21] holds t19; 30d (day -9, day 21]
	// t13, x, t3, t12 and t19.
	if c7, _, c30, _ := score(at(28)); c7 != 1 || c30 != 5 {
		t.Errorf("eight days later: fraud counts 7d=%v 30d=%v, want 1 and 5", c7, c30)
	}
	// (day 20, day 21]: no transaction (rate 0); (day 14, day 21]: days
	// 15..19 and the probes; (day -9, day 21]: days 0..19 and the probes.
	lag1d("eight days later", 0, 7, 22, 0)
}

func TestTTLExpiry(t *testing.T) {
	day := 24 * time.Hour
	b := MustBuilder(nil, WithTTL(35*day), WithStripes(4))
	row := make([]float32, b.Width())
	up := func(card string, at time.Duration) {
		b.Update(&Event{TxID: "t", CardID: card, TerminalID: "m-" + card, TS: t0.Add(at), Amount: 5}, row)
	}
	for i := range 1000 {
		up(fmt.Sprint("idle-", i), 0)
	}
	up("a", 0)
	up("b", 0)
	up("a", 34*day) // idle 34d < TTL: remembered
	if got := row[col("card_secs_since_prev_log1p")]; !near(got, math.Log1p(34*86400)) {
		t.Errorf("card idle 34d: since = %v, want log1p(34d)", got)
	}
	up("b", 36*day) // idle 36d > TTL: forgotten
	if got := row[col("card_secs_since_prev_log1p")]; got != SinceFirstSeen {
		t.Errorf("card idle 36d: since = %v, want first seen", got)
	}
	if got := b.Cards(); got != 1002 {
		t.Errorf("after first rotation: %d cards held, want 1002 (idle ones awaiting release)", got)
	}
	for i := range 300 {
		up("b", 72*day+time.Duration(i)*time.Second)
	}
	if got := b.Cards(); got != 1 {
		t.Errorf("after second rotation: %d cards held, want 1 (idle ones released)", got)
	}
	if got := b.shared.terminals(); got > 2 {
		t.Errorf("after second rotation: %d terminals held, want <= 2", got)
	}
}

func TestSharedConcurrent(t *testing.T) {
	s := MustShared(WithStripes(4))
	const workers = 4
	n := 5000
	if raceEnabled {
		n = 1500
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := MustBuilder(s)
			row := make([]float32, b.Width())
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for _, e := range randomStream(rng, n, 50, 20) {
				e.CardID = fmt.Sprint(w, e.CardID) // cards are partitioned by worker
				b.Update(&e, row)
				for i, v := range row {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Errorf("%s not finite", defaultNames[i])
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			s.ApplyLabel(&Label{TxID: fmt.Sprint("t-", i), TerminalID: fmt.Sprint("m-", i%20), TS: t0.Add(time.Duration(i) * time.Hour), Fraud: i%3 != 0})
		}
	}()
	wg.Wait()
	if got := s.terminals(); got != 20 {
		t.Errorf("terminals = %d, want 20", got)
	}
}

// memPerCard applies events events to each of cards cards (spread over one
// terminal per 50 cards) and returns the heap bytes held per card: in total,
// and the part held by the terminal state (every event is also a point of its
// terminal's series), measured by a second run of the terminal side alone.
func memPerCard(cards, events int) (total, terminal float64) {
	ids := make([]string, cards)
	terms := make([]string, cards)
	for i := range ids {
		ids[i] = fmt.Sprintf("card-%08d", i)
		terms[i] = fmt.Sprintf("term-%06d", i/50)
	}
	row := make([]float32, width)
	measure := func(apply func(e *Event)) float64 {
		return float64(heapGrowth(func() {
			e := Event{TxID: "t", Amount: 12.5}
			for j := range events {
				for i, id := range ids {
					e.CardID, e.TerminalID = id, terms[i]
					e.TS = t0.Add(time.Duration(j)*time.Hour + time.Duration(i)*time.Microsecond)
					apply(&e)
				}
			}
		})) / float64(cards)
	}
	b := MustBuilder(nil)
	total = measure(func(e *Event) { b.Update(e, row) })
	runtime.KeepAlive(b)
	b = nil
	s := MustShared()
	terminal = measure(func(e *Event) { s.observe(e.TerminalID, e.TxID, nanos(e.TS), e.Amount, row) })
	runtime.KeepAlive(s)
	return total, terminal
}

func TestMemoryPerCard(t *testing.T) {
	cards := 20000
	if raceEnabled {
		t.Skip("memory figures are meaningless under the race detector")
	}
	total, term := memPerCard(cards, 20)
	t.Logf("%.0f bytes per card (%d cards, 20 events each), of which %.0f terminal state", total, cards, term)
	if total-term > 1000 {
		t.Errorf("card state: %.0f bytes per card, want <= 1000", total-term)
	}
}

func BenchmarkMemoryPerCard(b *testing.B) {
	for b.Loop() {
		total, term := memPerCard(100000, 20)
		b.ReportMetric(total, "bytes/card")
		b.ReportMetric(total-term, "card-state-bytes/card")
	}
}

// BenchmarkBuilderUpdate measures Update on one core, for a cache-resident
// population and a large one (random card and terminal per event, about one
// event per second of event time, with country and geo).
func BenchmarkBuilderUpdate(b *testing.B) {
	for _, size := range []struct{ cards, terminals int }{{1000, 100}, {100000, 10000}} {
		b.Run(fmt.Sprintf("cards=%d", size.cards), func(b *testing.B) {
			benchUpdate(b, size.cards, size.terminals)
		})
	}
}

func benchUpdate(b *testing.B, cards, terminals int) { benchUpdateOpts(b, cards, terminals) }

func benchUpdateOpts(b *testing.B, cards, terminals int, opts ...Option) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 1 << 16
	evs := make([]Event, n)
	now := t0
	for i := range evs {
		now = now.Add(time.Duration(rng.Int64N(int64(2 * time.Second))))
		evs[i] = Event{TxID: "t", CardID: fmt.Sprint("c-", rng.IntN(cards)), TerminalID: fmt.Sprint("m-", rng.IntN(terminals)),
			TS: now, Amount: rng.ExpFloat64() * 50, Country: "FR", Lat: 48.8, Lon: 2.3, HasGeo: true}
	}
	span := now.Sub(t0) + time.Second
	bld := MustBuilder(MustShared(opts...), opts...)
	row := make([]float32, bld.Width())
	b.ReportAllocs()
	runtime.LockOSThread() // for threadCPU
	defer runtime.UnlockOSThread()
	i := 0
	start := time.Now()
	cpu0, cpuOK := threadCPU()
	for b.Loop() {
		if i > 0 && i%n == 0 { // next lap: shift time forward
			for j := range evs {
				evs[j].TS = evs[j].TS.Add(span)
			}
		}
		bld.Update(&evs[i%n], row)
		i++
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "events/s")
	if cpu1, ok := threadCPU(); ok && cpuOK && cpu1 > cpu0 {
		// per second of this thread's CPU time: steadier than events/s on a
		// shared machine (GC work on other threads is not counted)
		b.ReportMetric(float64(i)/(cpu1-cpu0).Seconds(), "events/cpu-s")
	}
}

func TestInvalidOptionsPanic(t *testing.T) {
	tests := []struct {
		name string
		fn   func()
	}{
		{"zero ttl", func() { MustShared(WithTTL(0)) }},
		{"negative lateness", func() { MustBuilder(nil, WithMaxLateness(-time.Second)) }},
		{"stripes not a power of two", func() { MustShared(WithStripes(3)) }},
		{"nil clock", func() { MustDecoder(WithClock(nil)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, ErrInvalidOption) {
					t.Errorf("got panic %v, want one wrapping ErrInvalidOption", err)
				}
			}()
			tc.fn()
		})
	}
}

// TestInlineWindows checks that the window states kept inline in the card
// and terminal states (inlineWins) are as long as the windows they serve.
func TestInlineWindows(t *testing.T) {
	if got, want := len(cardState{}.ws), len(cardWindows); got != want {
		t.Errorf("cardState.ws holds %d windows, want %d", got, want)
	}
	if got, want := len(terminalState{}.ws), len(terminalWindows); got != want {
		t.Errorf("terminalState.ws holds %d windows, want %d", got, want)
	}
}

// TestCalendarCache checks that the calendar features a Builder reuses
// within one second (calCache) are those computed afresh, whatever the
// order of the times (re-deliveries, late events, time zones).
func TestCalendarCache(t *testing.T) {
	sat := time.Date(2026, 3, 7, 6, 59, 59, 0, time.UTC) // Saturday, night
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		ts   time.Time
	}{
		{"first", sat},
		{"same second, later", sat.Add(999 * time.Millisecond)},
		{"next second: 07:00, day", sat.Add(time.Second)},
		{"back a second", sat.Add(500 * time.Millisecond)},
		{"same instant in another zone", sat.Add(500 * time.Millisecond).In(paris)},
		{"next day: Sunday midnight", sat.Add(17*time.Hour + time.Second)},
		{"Monday", sat.Add(41 * time.Hour)},
		{"before 1970", time.Date(1969, 12, 31, 23, 59, 59, 500, time.UTC)},
		{"the second after", time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	var c calCache
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			row := make([]float32, width)
			c.write(tc.ts, row)
			var want [4]float32
			calendarTo(&want, tc.ts)
			if got := [4]float32(row[offCalendar : offCalendar+4]); got != want {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestF32(t *testing.T) {
	tests := []struct {
		name string
		v    float64
		want float32
	}{
		{"zero", 0, 0},
		{"negative zero", math.Copysign(0, -1), float32(math.Copysign(0, -1))},
		{"ordinary", 1.1, float32(1.1)},
		{"largest float32", math.MaxFloat32, math.MaxFloat32},
		{"just above, rounds to it", math.Nextafter(math.MaxFloat32, math.Inf(1)), math.MaxFloat32},
		{"beyond", 1e300, math.MaxFloat32},
		{"+Inf", math.Inf(1), math.MaxFloat32},
		{"-largest", -math.MaxFloat32, -math.MaxFloat32},
		{"-beyond", -1e300, -math.MaxFloat32},
		{"-Inf", math.Inf(-1), -math.MaxFloat32},
		{"NaN", math.NaN(), 0},
		{"tiny, to zero", 1e-300, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := f32(tc.v); math.Float32bits(got) != math.Float32bits(tc.want) {
				t.Errorf("f32(%v) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

// TestSeriesOverflowResum checks that running sums that overflowed (an
// amount whose square is +Inf) are recomputed exactly once the huge
// amounts have left the window, rather than staying Inf or NaN.
func TestSeriesOverflowResum(t *testing.T) {
	wins := []window{{0, hourNs}, {0, dayNs}}
	tests := []struct {
		name string
		huge float64
	}{
		{"square overflows", 1e200},
		{"sum and square overflow", math.MaxFloat64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s series
			retain := maxSpan(wins)
			ts := int64(0)
			for i := range 3 {
				s.add(ts, tc.huge, wins, len(wins), 0, retain, 0)
				ts += int64(i+1) * int64(time.Minute)
			}
			for i := range 200 { // the huge ones leave the hour window
				s.add(ts, float64(i%7)+0.25, wins, len(wins), 0, retain, 0)
				ts += int64(time.Minute)
			}
			st := s.ws[0]
			var want agg
			s.sumRange(&want, st.start, st.end)
			if st.sum != want.sum || st.sq != want.sq {
				t.Errorf("hour window: running sum %v, sq %v; want %v, %v", st.sum, st.sq, want.sum, want.sq)
			}
		})
	}
}

// calendarRef is calendarTo as written first, from time.Time's own
// calendar (Clock, Weekday) and math.Sin and math.Cos: the reference
// calendarTo must match bit for bit.
func calendarRef(out *[4]float32, ts time.Time) {
	u := ts.UTC()
	h, m, s := u.Clock()
	hour := float64(h) + float64(m)/60 + float64(s)/3600
	out[0] = float32(math.Sin(2 * math.Pi * hour / 24))
	out[1] = float32(math.Cos(2 * math.Pi * hour / 24))
	out[2] = flag(u.Weekday() == time.Saturday || u.Weekday() == time.Sunday)
	out[3] = flag(h <= 6)
}

// TestCalendarToAllSeconds: calendarTo's integer clock and math.Sincos
// give calendarRef's features bit for bit, for every second of a day (the
// features depend only on the second of the day and the weekday), on days
// of every weekday before and after 1970, at second boundaries and inside
// a second, in other zones too.
func TestCalendarToAllSeconds(t *testing.T) {
	tests := []struct {
		name string
		day  time.Time
	}{
		{"2026, Sunday to Saturday", time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)},
		{"1970", time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"1969, before the epoch", time.Date(1969, 12, 25, 0, 0, 0, 0, time.UTC)},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"2261, the end of the event range", time.Date(2261, 12, 24, 0, 0, 0, 0, time.UTC)},
		{"9999, past it", time.Date(9999, 12, 20, 0, 0, 0, 0, time.UTC)},
	}
	zone := time.FixedZone("X", -(5*3600 + 30*60))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for d := range 8 { // every weekday, and one again
				base := tc.day.AddDate(0, 0, d)
				step := 1
				if d > 0 {
					step = 61 // every second on the first day, a sample on the others
				}
				for sec := 0; sec < 24*3600; sec += step {
					for _, ts := range []time.Time{
						base.Add(time.Duration(sec) * time.Second),
						base.Add(time.Duration(sec)*time.Second + 999_999_999).In(zone),
					} {
						var got, want [4]float32
						calendarTo(&got, ts)
						calendarRef(&want, ts)
						for k := range got {
							if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
								t.Fatalf("%v: got %v, want %v", ts, got, want)
							}
						}
					}
				}
			}
		})
	}
}

// BenchmarkCalendarTo: calendarTo against calendarRef (time.Time's
// calendar, math.Sin and math.Cos), over consecutive seconds (calCache
// misses on every one).
func BenchmarkCalendarTo(b *testing.B) {
	for _, fn := range []struct {
		name string
		f    func(*[4]float32, time.Time)
	}{{"ref", calendarRef}, {"calendarTo", calendarTo}} {
		b.Run(fn.name, func(b *testing.B) {
			var out [4]float32
			ts := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
			for b.Loop() {
				fn.f(&out, ts)
				ts = ts.Add(time.Second)
			}
		})
	}
}

// TestNanosRange: nanos clamps to [minEventTime, maxEventTime) exactly at
// the bounds, whatever the time's zone or monotonic reading, as the
// comparisons with time.Time's Before did.
func TestNanosRange(t *testing.T) {
	maxNs := maxEventTime.UnixNano() - 1
	if maxEventTime.Unix() != maxEventSec || minEventTime.Unix() != minEventSec {
		t.Fatalf("bounds %d, %d s; want %d, %d", minEventTime.Unix(), maxEventTime.Unix(), minEventSec, maxEventSec)
	}
	zone := time.FixedZone("X", 5*3600)
	now := time.Now() // with a monotonic reading
	tests := []struct {
		name string
		ts   time.Time
		want int64
	}{
		{"epoch", minEventTime, 0},
		{"a nanosecond before", minEventTime.Add(-1), 0},
		{"a second before", minEventTime.Add(-time.Second), 0},
		{"a nanosecond after", minEventTime.Add(1), 1},
		{"year 1", time.Time{}, 0},
		{"in range", time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC), time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC).UnixNano()},
		{"in range, other zone", time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC).In(zone), time.Date(2026, 12, 6, 1, 2, 3, 4, time.UTC).UnixNano()},
		{"with a monotonic reading", now, now.Round(0).UnixNano()},
		{"a nanosecond before the end", maxEventTime.Add(-1), maxNs},
		{"the end", maxEventTime, maxNs},
		{"after the end", maxEventTime.Add(time.Hour), maxNs},
		{"year 9999", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), maxNs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nanos(tc.ts); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}
