package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// peekStream returns n events over a few cards and terminals with country
// and geo; in order (strictly increasing TS) unless late is set, in which
// case ~15% are up to 90 minutes late (some beyond the default lateness).
func peekStream(rng *rand.Rand, n, cards, terminals int, late bool) []Event {
	countries := []string{"", "FR", "GB", "DE"}
	evs := make([]Event, n)
	now := t0
	for i := range evs {
		var gap time.Duration
		switch r := rng.Float64(); {
		case r < 0.6:
			gap = time.Duration(rng.Int64N(int64(10 * time.Minute)))
		case r < 0.97:
			gap = time.Duration(rng.Int64N(int64(6 * time.Hour)))
		default:
			gap = time.Duration(rng.Int64N(int64(5 * 24 * time.Hour)))
		}
		now = now.Add(gap + 1)
		ts := now
		if late && rng.Float64() < 0.15 {
			ts = ts.Add(-time.Duration(rng.Int64N(int64(90 * time.Minute))))
		}
		amt := math.Round(rng.ExpFloat64()*5000) / 100
		if rng.Float64() < 0.05 {
			amt = 0
		}
		e := Event{
			TxID:       fmt.Sprintf("t-%d", i),
			CardID:     fmt.Sprintf("c-%d", rng.IntN(cards)),
			TerminalID: fmt.Sprintf("m-%d", rng.IntN(terminals)),
			TS:         ts,
			Amount:     amt,
			Country:    countries[rng.IntN(len(countries))],
		}
		if rng.Float64() < 0.7 {
			e.Lat, e.Lon, e.HasGeo = rng.Float64()*120-60, rng.Float64()*360-180, true
		}
		evs[i] = e
	}
	return evs
}

// twinBuilders returns two Builders with separate but identically seeded
// Shareds: fed the same Updates they hold equal state.
func twinBuilders(opts ...Option) (a, b *Builder) {
	sa, sb := MustShared(opts...), MustShared(opts...)
	sb.seed = sa.seed
	return MustBuilder(sa, opts...), MustBuilder(sb, opts...)
}

// sameState reports whether two twin Builders hold equal state: card maps,
// expiry clocks and generations, sweep counter and every stripe of their
// Shareds.
func sameState(a, b *Builder) bool {
	if a.n != b.n || !reflect.DeepEqual(a.cards, b.cards) {
		return false
	}
	for i := range a.shared.stripes {
		if !reflect.DeepEqual(a.shared.stripes[i].m, b.shared.stripes[i].m) {
			return false
		}
	}
	return true
}

func rowsNear(got, want []float32) bool {
	for i := range got {
		if !near(got[i], float64(want[i])) {
			return false
		}
	}
	return true
}

func diffRow(got, want []float32) string {
	s := ""
	for i := range got {
		if got[i] != want[i] && !(got[i] != got[i] && want[i] != want[i]) {
			s += fmt.Sprintf("\n  %s: got %v want %v", defaultNames[i], got[i], want[i])
		}
	}
	return s
}

// TestPeekAfterUpdate feeds random streams to twin Builders, A and B. A
// Peeks every event before and after its Update, and re-Peeks random earlier
// events (some several times) and events it never applies; B only Updates.
// Checked: Peek right after Update equals Update's row exactly (every
// feature, in-order and out-of-order streams, inserted or not); A's Updates
// equal B's exactly and their states stay deeply equal (Peek changes
// nothing); Peek before Update (event not in the state) equals B's Update of
// it up to float rounding, and exactly where nothing was inserted.
func TestPeekAfterUpdate(t *testing.T) {
	n := 4000
	if raceEnabled {
		n = 1500
	}
	for _, late := range []bool{false, true} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("late=%v/seed%d", late, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 11))
				evs := peekStream(rng, n, 6, 3, late)
				a, b := twinBuilders()
				rowA, rowB := make([]float32, width), make([]float32, width)
				pre, peek := make([]float32, width), make([]float32, width)
				var never Event
				notInserted := 0
				fraudSeen := false
				for i := range evs {
					e := &evs[i]
					if rng.Float64() < 0.1 { // fraud feedback for an earlier event, known now
						p := &evs[rng.IntN(i+1)]
						l := Label{TxID: p.TxID, TerminalID: p.TerminalID, TS: e.TS, Fraud: true}
						a.shared.ApplyLabel(&l)
						b.shared.ApplyLabel(&l)
					}
					a.Peek(e, pre)
					a.Update(e, rowA)
					b.Update(e, rowB)
					fraudSeen = fraudSeen || rowA[col("terminal_fraud_count_30d_lag7d")] > 0
					if !slices.Equal(rowA, rowB) {
						t.Fatalf("event %d: Update after Peek differs from Update alone:%s", i, diffRow(rowA, rowB))
					}
					for range 1 + rng.IntN(3) {
						a.Peek(e, peek)
						if !slices.Equal(peek, rowA) {
							t.Fatalf("event %d: Peek after Update differs:%s", i, diffRow(peek, rowA))
						}
					}
					if !rowsNear(pre, rowA) {
						t.Fatalf("event %d: Peek before Update differs from Update:%s", i, diffRow(pre, rowA))
					}
					if c, ok := a.cards.peek(e.CardID, nanos(e.TS)); !ok || c.s.find(nanos(e.TS), e.Amount) < 0 {
						notInserted++ // beyond the card's lateness: Peek is the not-inserted path, exactly
						if !slices.Equal(pre[:offTerminal], rowA[:offTerminal]) {
							t.Fatalf("event %d (not inserted): Peek before Update differs:%s", i, diffRow(pre, rowA))
						}
					}
					// Re-deliveries of earlier events, and events never applied.
					for range rng.IntN(3) {
						a.Peek(&evs[rng.IntN(i+1)], peek)
					}
					never = *e
					never.TS = e.TS.Add(time.Duration(rng.Int64N(int64(3*time.Hour))) - 2*time.Hour)
					never.Amount += 0.005
					a.Peek(&never, peek)
					if i%97 == 0 && !sameState(a, b) {
						t.Fatalf("event %d: state differs after Peeks", i)
					}
				}
				if !sameState(a, b) {
					t.Fatal("state differs after Peeks")
				}
				if late && notInserted == 0 {
					t.Error("stream has no event beyond the lateness")
				}
				if !fraudSeen {
					t.Error("no fraud label ever visible: labels not exercised")
				}
				t.Logf("%d events, %d not inserted in their card", n, notInserted)
			})
		}
	}
}

// TestPeekRedelivery re-delivers, on in-order streams, random events of the
// last hour after later events were applied (what a rebalance does) and
// checks Peek against the row Update wrote for them: counts, since and the
// calendar exactly; sums, means, ratio, z-score and terminal features up to
// float rounding (windows are read at a time behind the newest, by a scan or
// correction instead of the running sums); country change and velocity
// exactly for the card's newest event and 0 for the others.
func TestPeekRedelivery(t *testing.T) {
	n := 4000
	if raceEnabled {
		n = 1500
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 13))
			evs := peekStream(rng, n, 4, 3, false)
			b := MustBuilder(nil)
			rows := make([][]float32, n)
			newest := map[string]int{} // card -> index of its newest event
			peek := make([]float32, width)
			heads, others := 0, 0
			for i := range evs {
				rows[i] = make([]float32, width)
				b.Update(&evs[i], rows[i])
				newest[evs[i].CardID] = i
				for range 3 {
					j := max(0, i-rng.IntN(64))
					if evs[i].TS.Sub(evs[j].TS) > time.Hour { // older points may be evicted
						continue
					}
					e, want := &evs[j], rows[j]
					b.Peek(e, peek)
					for c := range width {
						name := defaultNames[c]
						switch {
						case c == offCardCountry || c == offCardVelocity:
							if newest[e.CardID] != j {
								if peek[c] != 0 {
									t.Fatalf("event %d re-delivered after %d: %s = %v, want 0 (not the newest)", j, i, name, peek[c])
								}
								continue
							}
							if peek[c] != want[c] {
								t.Fatalf("event %d re-delivered after %d: %s = %v, want %v", j, i, name, peek[c], want[c])
							}
						case c == offCardSince || c >= offCalendar ||
							(c >= offCardCount && c < offCardSum) || (c >= offTerminal && c < offTerminal+nWindows):
							if peek[c] != want[c] {
								t.Fatalf("event %d re-delivered after %d: %s = %v, want %v", j, i, name, peek[c], want[c])
							}
						default:
							if !near(peek[c], float64(want[c])) {
								t.Fatalf("event %d re-delivered after %d: %s = %v, want %v", j, i, name, peek[c], want[c])
							}
						}
					}
					if newest[e.CardID] == j {
						heads++
					} else {
						others++
					}
				}
			}
			t.Logf("re-delivered %d newest and %d older events", heads, others)
			if heads == 0 || others == 0 {
				t.Fatalf("re-delivered %d newest and %d older events", heads, others)
			}
		})
	}
}

// TestPeekCases checks the documented cases one by one.
func TestPeekCases(t *testing.T) {
	paris := func(e Event) Event { e.Country, e.Lat, e.Lon, e.HasGeo = "FR", 48.8566, 2.3522, true; return e }
	london := func(e Event) Event { e.Country, e.Lat, e.Lon, e.HasGeo = "GB", 51.5074, -0.1278, true; return e }
	ev := func(card string, d time.Duration, amt float64) Event {
		return Event{TxID: fmt.Sprint(card, d), CardID: card, TerminalID: "m-" + card, TS: t0.Add(d), Amount: amt}
	}
	day := 24 * time.Hour
	tests := []struct {
		name  string
		apply []Event // Updated in order
		peek  Event
		want  map[string]float64 // expected features; others: equal to ref
		ref   int                // index in apply of the row Peek must equal (-1: none)
	}{
		{
			name:  "first event of a card",
			apply: []Event{ev("a", 0, 10)},
			peek:  ev("a", 0, 10), ref: 0,
			want: map[string]float64{"card_tx_count_1h": 1, "card_secs_since_prev_log1p": SinceFirstSeen},
		},
		{
			name:  "unknown card: not-inserted path on empty state",
			apply: []Event{ev("a", 0, 10)},
			peek:  ev("z", time.Minute, 7), ref: -1,
			want: map[string]float64{"card_tx_count_30d": 1, "card_amount_sum_30d": 7, "card_secs_since_prev_log1p": SinceFirstSeen,
				"card_amount_ratio_30d": 1, "terminal_tx_count_1h": 1, "terminal_amount_mean_1h": 7},
		},
		{
			name:  "newest event, predecessor evicted (idle 34 days)",
			apply: []Event{ev("a", 0, 10), ev("a", 34*day, 20)},
			peek:  ev("a", 34*day, 20), ref: 1,
			want: map[string]float64{"card_tx_count_30d": 1, "card_secs_since_prev_log1p": math.Log1p(34 * 86400)},
		},
		{
			name:  "newest event keeps country change and velocity",
			apply: []Event{paris(ev("a", 0, 10)), london(ev("a", time.Hour, 30))},
			peek:  london(ev("a", time.Hour, 30)), ref: 1,
			want: map[string]float64{"card_country_changed": 1, "card_amount_ratio_30d": 3},
		},
		{
			name:  "older re-delivery: since from the points, country and velocity 0",
			apply: []Event{paris(ev("a", 0, 10)), london(ev("a", time.Hour, 30)), london(ev("a", 2*time.Hour, 20))},
			peek:  london(ev("a", time.Hour, 30)), ref: -1,
			want: map[string]float64{"card_tx_count_1h": 1, "card_tx_count_1d": 2, "card_amount_sum_1d": 40,
				"card_secs_since_prev_log1p": math.Log1p(3600), "card_amount_ratio_30d": 3,
				"card_country_changed": 0, "card_geo_velocity_kmh": 0},
		},
		{
			name:  "same time and amount, other country: not the newest, still counted once",
			apply: []Event{ev("a", 0, 10), paris(ev("a", time.Hour, 30))},
			peek:  london(ev("a", time.Hour, 30)), ref: -1,
			want: map[string]float64{"card_tx_count_1d": 2, "card_secs_since_prev_log1p": math.Log1p(3600),
				"card_country_changed": 0, "card_geo_velocity_kmh": 0},
		},
		{
			name:  "beyond the lateness: not inserted, Peek equals Update",
			apply: []Event{ev("a", 0, 10), ev("a", 3*time.Hour, 20), ev("a", time.Hour, 5)},
			peek:  ev("a", time.Hour, 5), ref: 2,
			want: map[string]float64{"card_tx_count_1d": 2, "card_secs_since_prev_log1p": math.Log1p(3600)},
		},
		{
			name:  "late within the lateness: inserted, Peek equals Update",
			apply: []Event{ev("a", 0, 10), ev("a", 2*time.Hour, 20), ev("a", 90*time.Minute, 5)},
			peek:  ev("a", 90*time.Minute, 5), ref: 2,
			want: map[string]float64{"card_tx_count_1h": 1, "card_tx_count_1d": 2, "card_secs_since_prev_log1p": math.Log1p(5400)},
		},
		{
			name:  "card expired by the clock: treated as absent",
			apply: []Event{ev("a", 0, 10), ev("b", 36*day, 1)},
			peek:  ev("a", 0, 10), ref: -1,
			want: map[string]float64{"card_tx_count_1h": 1, "card_secs_since_prev_log1p": SinceFirstSeen, "terminal_tx_count_1h": 1},
		},
		{
			name:  "negative amount counts as 0",
			apply: []Event{ev("a", 0, -5)},
			peek:  ev("a", 0, math.NaN()), ref: 0,
			want: map[string]float64{"card_tx_count_1h": 1, "card_amount_sum_1h": 0, "amount_log1p": 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := twinBuilders()
			rows := make([][]float32, len(tc.apply))
			for i := range tc.apply {
				rows[i] = make([]float32, width)
				a.Update(&tc.apply[i], rows[i])
				b.Update(&tc.apply[i], make([]float32, width))
			}
			got := make([]float32, width)
			a.Peek(&tc.peek, got)
			if tc.ref >= 0 && !slices.Equal(got, rows[tc.ref]) {
				t.Errorf("Peek differs from Update's row:%s", diffRow(got, rows[tc.ref]))
			}
			for name, want := range tc.want {
				if v := got[col(name)]; !near(v, want) {
					t.Errorf("%s = %v, want %v", name, v, want)
				}
			}
			for i, v := range got {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Errorf("%s = %v not finite", defaultNames[i], v)
				}
			}
			if !sameState(a, b) {
				t.Error("Peek changed the state")
			}
		})
	}
}

// TestPeekUnusedBuilder: Peek on a Builder that never applied anything
// neither starts its clocks nor stores state.
func TestPeekUnusedBuilder(t *testing.T) {
	a, b := twinBuilders()
	row := make([]float32, width)
	e := Event{TxID: "t", CardID: "c", TerminalID: "m", TS: t0, Amount: 3}
	a.Peek(&e, row)
	if a.cards.started || a.Cards() != 0 || a.shared.terminals() != 0 || !sameState(a, b) {
		t.Error("Peek changed an unused Builder")
	}
	want := make([]float32, width)
	b.Update(&e, want)
	if !slices.Equal(row, want) {
		t.Errorf("Peek on an empty Builder differs from Update:%s", diffRow(row, want))
	}
}

// TestPeekLabels: terminal fraud features of Peek read the labels applied
// so far, like Update, and Peek does not evict labels.
func TestPeekLabels(t *testing.T) {
	s := MustShared()
	b := MustBuilder(s)
	row, peek := make([]float32, width), make([]float32, width)
	day := 24 * time.Hour
	for d := range 20 {
		b.Update(&Event{TxID: fmt.Sprint("t", d), CardID: fmt.Sprint("c", d), TerminalID: "m", TS: t0.Add(time.Duration(d) * day), Amount: 1}, row)
	}
	s.ApplyLabel(&Label{TxID: "t10", TerminalID: "m", TS: t0.Add(10 * day), Fraud: true})
	e := Event{TxID: "p", CardID: "p", TerminalID: "m", TS: t0.Add(20 * day), Amount: 1}
	b.Update(&e, row)
	b.Peek(&e, peek)
	if !slices.Equal(peek, row) || peek[col("terminal_fraud_count_7d_lag7d")] != 1 {
		t.Errorf("Peek with a label:%s", diffRow(peek, row))
	}
	s.ApplyLabel(&Label{TxID: "t11", TerminalID: "m", TS: t0.Add(11 * day), Fraud: true}) // late feedback
	b.Peek(&e, peek)
	if got := peek[col("terminal_fraud_count_7d_lag7d")]; got != 2 {
		t.Errorf("Peek after a new label: fraud count %v, want 2", got)
	}
}

// TestPeekConcurrent runs Builders on one Shared, each Updating and Peeking
// its own events (and re-Peeking earlier ones) on terminals shared with the
// others while labels arrive; run with -race. Card features of Peek right
// after Update must equal Update's (the card is the worker's own); terminal
// features may differ (other workers), but every value is finite.
func TestPeekConcurrent(t *testing.T) {
	s := MustShared(WithStripes(4))
	const workers = 4
	n := 4000
	if raceEnabled {
		n = 1200
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			b := MustBuilder(s)
			row, peek := make([]float32, b.Width()), make([]float32, b.Width())
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			evs := peekStream(rng, n, 50, 10, true)
			for i := range evs {
				evs[i].CardID = fmt.Sprint(w, evs[i].CardID)
				b.Update(&evs[i], row)
				b.Peek(&evs[i], peek)
				if !slices.Equal(peek[:offTerminal], row[:offTerminal]) || !slices.Equal(peek[offCalendar:offLagged], row[offCalendar:offLagged]) {
					t.Errorf("worker %d event %d: Peek card features differ:%s", w, i, diffRow(peek, row))
					return
				}
				b.Peek(&evs[rng.IntN(i+1)], peek)
				for c, v := range peek {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Errorf("%s not finite", defaultNames[c])
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := range n {
			s.ApplyLabel(&Label{TxID: fmt.Sprint("t-", i), TerminalID: fmt.Sprint("m-", i%10), TS: t0.Add(time.Duration(i) * time.Hour), Fraud: i%3 != 0})
		}
	})
	wg.Wait()
}

func BenchmarkBuilderPeek(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	evs := peekStream(rng, 1<<14, 1000, 100, false)
	bld := MustBuilder(nil)
	row := make([]float32, bld.Width())
	for i := range evs {
		bld.Update(&evs[i], row)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bld.Peek(&evs[len(evs)-1-i%256], row)
		i++
	}
}

// TestLastLate: LastLate reports, per call, whether Update's event was not
// inserted into its card or its terminal (the events Late counts) and
// whether Peek's event is not in its state and beyond the lateness, on the
// hand-written Builder and on the spec engine.
func TestLastLate(t *testing.T) {
	for _, generic := range []bool{false, true} {
		t.Run(fmt.Sprint("generic=", generic), func(t *testing.T) {
			opts := []Option{WithMaxLateness(time.Hour), withSpec(DefaultSpec(), generic)}
			b := MustBuilder(MustShared(opts...), opts...)
			if (b.sp != nil) != generic {
				t.Fatal("wrong engine")
			}
			if b.LastLate() {
				t.Error("LastLate before any call")
			}
			row := make([]float32, b.Width())
			ev := func(card, term string, at time.Duration, amt float64) *Event {
				return &Event{TxID: "t", CardID: card, TerminalID: term, TS: t0.Add(at), Amount: amt}
			}
			steps := []struct {
				name string
				peek bool
				e    *Event
				want bool
				late uint64 // Late() after the step
			}{
				{"first", false, ev("c", "m", 10*time.Hour, 1), false, 0},
				{"within lateness", false, ev("c", "m", 9*time.Hour+30*time.Minute, 2), false, 0},
				{"late for card and terminal", false, ev("c", "m", 8*time.Hour, 3), true, 1},
				{"late for terminal only", false, ev("c2", "m", 8*time.Hour, 4), true, 2},
				{"late for card only", false, ev("c", "m2", 8*time.Hour, 5), true, 3},
				{"new card and terminal", false, ev("c3", "m3", 0, 6), false, 3},
				{"in order after late", false, ev("c", "m", 11*time.Hour, 7), false, 3},
				{"peek applied", true, ev("c", "m", 9*time.Hour+30*time.Minute, 2), false, 3},
				{"peek late event", true, ev("c", "m", 8*time.Hour, 3), true, 3},
				{"peek late for terminal only", true, ev("c3", "m", 0, 6), true, 3},
				{"peek new, within lateness", true, ev("c", "m", 10*time.Hour+30*time.Minute, 8), false, 3},
				{"peek new entities", true, ev("c9", "m9", 0, 9), false, 3},
				{"update after peek", false, ev("c", "m", 12*time.Hour, 10), false, 3},
			}
			for _, st := range steps {
				if st.peek {
					b.Peek(st.e, row)
				} else {
					b.Update(st.e, row)
				}
				if got := b.LastLate(); got != st.want {
					t.Errorf("%s: LastLate = %v, want %v", st.name, got, st.want)
				}
				if got := b.Late(); got != st.late {
					t.Errorf("%s: Late = %d, want %d", st.name, got, st.late)
				}
			}
		})
	}
}
