package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// bruteStream returns n events over a few cards, terminals, MCCs (some
// absent) and countries, ~15% out of order by up to 3h.
func bruteStream(rng *rand.Rand, n int) []Event {
	evs := peekStream(rng, n, 5, 4, false)
	for i := range evs {
		e := &evs[i]
		if rng.Float64() < 0.15 {
			e.TS = e.TS.Add(-time.Duration(rng.Int64N(int64(3 * time.Hour))))
		}
		if r := rng.IntN(4); r > 0 {
			e.MCC = fmt.Sprint("mcc", r)
		}
		e.Channel = []string{"pos", "web", "app"}[rng.IntN(3)]
	}
	return evs
}

// randomSpec returns a valid spec of windowed features over random
// entities, windows and offsets.
func randomSpec(rng *rand.Rand) *Spec {
	ents := []string{"card_id", "terminal_id", "mcc", "country"}
	ofs := map[string]string{"card_id": "terminal_id", "terminal_id": "channel", "mcc": "card_id", "country": "mcc"}
	lens := []time.Duration{time.Minute, 30 * time.Minute, 2 * time.Hour, 24 * time.Hour, 3 * 24 * time.Hour, 10 * 24 * time.Hour}
	aggsList := []string{AggCount, AggSum, AggMean, AggMin, AggMax, AggStd, AggDistinct, AggLast, AggRatio, AggZScore, AggFraudCount, AggFraudRate}
	var s Spec
	for i := range 10 + rng.IntN(20) {
		ent := ents[rng.IntN(len(ents))]
		agg := aggsList[rng.IntN(len(aggsList))]
		if (agg == AggFraudCount || agg == AggFraudRate) && ent != "card_id" && ent != "terminal_id" {
			ent = "terminal_id"
		}
		f := FeatureSpec{Name: fmt.Sprintf("f%d_%s_%s", i, ent, agg), Agg: agg, Entity: ent,
			Window: Duration(lens[rng.IntN(len(lens))] + time.Duration(rng.Int64N(int64(time.Minute))))}
		if rng.IntN(2) == 0 {
			f.Offset = Duration(rng.Int64N(int64(5 * 24 * time.Hour)))
		}
		switch agg {
		case AggFraudCount, AggFraudRate:
			f.LabelTime = []string{"", LabelTimeTransaction, LabelTimeLabel}[rng.IntN(3)]
		case AggCount:
		case AggDistinct:
			f.Of = ofs[ent]
		default:
			f.Field = "amount"
		}
		s.Features = append(s.Features, f)
	}
	if err := s.Validate(); err != nil {
		panic(err)
	}
	return &s
}

// bruteEnt is the brute-force view of one entity: every point inserted
// (the series' insertion rule) and the fraud labels applied.
type bruteEnt struct {
	pts    []bpoint
	maxTS  int64
	init   bool
	seen   int64 // series/labels "seen" clock (eviction horizon = seen - retain)
	labels map[string]blabel
	txs    map[string]int64 // tx id -> time of the events applied (the terminal, when a spec places labels by tx time)
}

// blabel is the brute-force view of one fraud label: its own time and its
// transaction's (noTxTime when unplaced).
type blabel struct{ ts, txTs int64 }

type bpoint struct {
	ts  int64
	amt float64
	of  string
	ev  int
}

// TestSpecMatchesBruteForce checks random specs (random entities, windows,
// offsets, aggregations) on random out-of-order streams with labels against
// a recomputation from the raw events: counts, min, max, last, distinct
// (under the cap) and fraud counts exactly; sums, means, std, ratio and
// z-score within 1e-5 relative (float64 running sums against a fresh
// summation, then float32).
func TestSpecMatchesBruteForce(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1000
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			spec := randomSpec(rng)
			lateness := []time.Duration{0, time.Hour, 3 * time.Hour}[rng.IntN(3)]
			bruteCheck(t, rng, spec, lateness, n, false)
		})
	}
}

// TestDefaultSpecMatchesBruteForce is TestSpecMatchesBruteForce for the
// default spec's windowed and fraud features, on the hand-written Builder
// and on the spec engine: among them the lagged terminal transaction counts
// and fraud counts and rates over (t-7d-w, t-7d].
func TestDefaultSpecMatchesBruteForce(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1000
	}
	for _, generic := range []bool{false, true} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("generic=%v/seed%d", generic, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 98))
				lateness := []time.Duration{0, time.Hour, 3 * time.Hour}[seed]
				lagged, fraud := bruteCheck(t, rng, DefaultSpec(), lateness, n, generic)
				if lagged == 0 || fraud == 0 {
					t.Fatalf("lagged windows with events: %d values, fraud labels: %d values", lagged, fraud)
				}
			})
		}
	}
}

// bruteCheck runs a Builder computing spec (forced onto the spec engine
// when generic is set; DefaultSpec otherwise runs on the hand-written
// Builder) over a random stream with labels, and checks every windowed and
// fraud feature of every row against a recomputation from the raw events.
// It returns how many values of offset windows holding events, and of fraud
// features with labels in their window, it checked.
func bruteCheck(t *testing.T, rng *rand.Rand, spec *Spec, lateness time.Duration, n int, generic bool) (lagged, fraudSeen int) {
	t.Helper()
	b := MustBuilder(nil, withSpec(spec, generic), WithMaxLateness(lateness), WithTTL(10000*24*time.Hour))
	cs := defaultCompiled()
	if b.sp != nil {
		cs = b.sp.cs
	}
	row := make([]float32, b.Width())
	evs := bruteStream(rng, n)
	ref := map[string]*bruteEnt{}
	get := func(field, id string) *bruteEnt {
		k := field + "\x00" + id
		if ref[k] == nil {
			ref[k] = &bruteEnt{labels: map[string]blabel{}, txs: map[string]int64{}}
		}
		return ref[k]
	}
	retainOf := func(field string) int64 {
		return cs.ents[slices.IndexFunc(cs.ents, func(c cent) bool { return stringFields[c.field] == field })].span + int64(lateness)
	}
	checked, unplaced := 0, uint64(0)
	for i := range evs {
		e := &evs[i]
		te := nanos(e.TS)
		if rng.Float64() < 0.3 { // a fraud label (or a correction) about an earlier tx, known around now
			j := rng.IntN(i + 1)
			l := Label{TxID: evs[j].TxID, CardID: evs[j].CardID, TerminalID: evs[j].TerminalID,
				TS: e.TS.Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour), Fraud: rng.Float64() < 0.85}
			if rng.IntN(3) > 0 { // with tx_ts (after ts when the label is about a tx of the last 2h: unplaced)
				l.TxTS = evs[j].TS
			}
			// The label's transaction time, as ApplyLabel places it: tx_ts,
			// else the tx found in its terminal's retained history.
			lt := nanos(l.TS)
			txT := int64(noTxTime)
			switch {
			case !l.TxTS.IsZero():
				if x := nanos(l.TxTS); x <= lt {
					txT = x
				}
			case cs.txMap >= 0:
				r := get("terminal_id", l.TerminalID)
				if x, ok := r.txs[l.TxID]; ok && x > r.seen-(cs.txSpan+int64(lateness)) && x <= lt {
					txT = x
				}
			}
			if l.Fraud && cs.needTx && txT == noTxTime {
				unplaced++
			}
			if placed := b.shared.ApplyLabel(&l); placed != (!l.Fraud || !cs.needTx || txT != noTxTime) {
				t.Fatalf("label %d: placed %v, want the opposite", i, placed)
			}
			for _, en := range cs.ents {
				if !en.labels {
					continue
				}
				field := stringFields[en.field]
				id := l.TerminalID
				if field == "card_id" {
					id = l.CardID
				}
				r := get(field, id)
				_, had := r.labels[l.TxID]
				switch {
				case !l.Fraud:
					delete(r.labels, l.TxID)
				case !had:
					r.labels[l.TxID] = blabel{lt, txT}
					r.seen = max(r.seen, lt)
					if !en.local && len(r.pts) == 0 && !r.init {
						r.seen = lt
					}
					for tx, bl := range r.labels { // eviction
						if bl.ts <= r.seen-retainOf(field) {
							delete(r.labels, tx)
						}
					}
				}
			}
		}
		b.Update(e, row)
		for _, en := range cs.ents {
			field := stringFields[en.field]
			id := en.field.of(e)
			retain := retainOf(field)
			r := &bruteEnt{}
			stored := id != "" || en.field.required()
			if stored {
				r = get(field, id)
			}
			inserted := false
			if stored && (!r.init || te >= r.maxTS-int64(lateness)) {
				inserted = true
				r.pts = append(r.pts, bpoint{te, amount(e), en.field.of(e), i})
				if en.hasOf {
					r.pts[len(r.pts)-1].of = en.of.of(e)
				}
				if !r.init || te > r.maxTS {
					r.maxTS, r.init = te, true
				}
				r.txs[e.TxID] = te
			}
			if stored && !en.local {
				r.seen = max(r.seen, te)
				for tx, bl := range r.labels {
					if bl.ts <= r.seen-retain {
						delete(r.labels, tx)
					}
				}
			}
			for _, fi := range en.feats {
				f := &cs.feats[fi]
				lo, hi := te-f.w.offset-f.w.length, te-f.w.offset
				var win []bpoint
				for _, p := range r.pts {
					if p.ts > lo && p.ts <= hi && p.ts > r.maxTS-retain {
						win = append(win, p)
					}
				}
				cur := !inserted && f.w.offset == 0
				if f.w.offset > 0 && len(win) > 0 {
					lagged++
				}
				all := slices.Clone(win)
				if cur {
					all = append(all, bpoint{te, amount(e), "", i})
					if en.hasOf {
						all[len(all)-1].of = en.of.of(e)
					}
				}
				var a agg
				for _, p := range all {
					a.add(p.amt)
				}
				name := cs.names[fi]
				got := row[fi]
				exact := func(want float64) {
					if got != f32(want) {
						t.Fatalf("event %d (%s %q, %d points in window): %s = %v, want %v", i, field, id, len(all), name, got, want)
					}
				}
				approx := func(want float64) {
					if !near(got, want) && math.Abs(float64(got)-want) > 1e-3 {
						t.Fatalf("event %d: %s = %v, want %v", i, name, got, want)
					}
				}
				switch f.kind {
				case kCount:
					exact(float64(a.n))
				case kSum:
					approx(a.sum)
				case kMean:
					approx(a.mean())
				case kStd:
					var v float64
					for _, p := range all {
						v += (p.amt - a.mean()) * (p.amt - a.mean())
					}
					if a.n > 0 {
						v = math.Sqrt(v / float64(a.n))
					}
					approx(v)
				case kMin, kMax:
					var m float64
					for k, p := range all {
						if k == 0 || (f.kind == kMin && p.amt < m) || (f.kind == kMax && p.amt > m) {
							m = p.amt
						}
					}
					exact(m)
				case kLast:
					var last *bpoint
					for k := range win {
						if p := &win[k]; p.ev != i && (last == nil || p.ts >= last.ts) {
							last = p
						}
					}
					want := 0.0
					if last != nil {
						want = last.amt
					}
					exact(want)
				case kDistinct:
					d := map[string]bool{}
					for _, p := range all {
						d[p.of] = true
					}
					exact(float64(len(d)))
				case kRatio, kZScore:
					var o agg // the other events
					for _, p := range all {
						if !(p.ev == i) {
							o.add(p.amt)
						}
					}
					amt := amount(e)
					ratio, z := 1.0, 0.0
					if o.n >= 1 {
						ratio = amt / max(o.mean(), minStd)
					}
					if o.n >= 2 {
						var v float64
						for _, p := range all {
							if p.ev != i {
								v += (p.amt - o.mean()) * (p.amt - o.mean())
							}
						}
						z = (amt - o.mean()) / max(math.Sqrt(v/float64(o.n)), minStd)
					}
					if f.kind == kRatio {
						approx(ratio)
					} else if o.n < 2 || math.Sqrt(o.sq/float64(o.n)-o.mean()*o.mean()) > 1 {
						approx(z) // (skip near-constant histories: the floor amplifies rounding)
					}
				case kFraudCount, kFraudRate:
					// By label time: the labels with their own time in the
					// window. By transaction time: the frauds known at te
					// among the transactions of the window.
					fraud := 0
					for _, bl := range r.labels {
						if (!f.txTime && bl.ts > lo && bl.ts <= hi) || (f.txTime && bl.ts <= te && bl.txTs > lo && bl.txTs <= hi) {
							fraud++
						}
					}
					if fraud > 0 {
						fraudSeen++
					}
					if f.kind == kFraudCount {
						exact(float64(fraud))
					} else {
						rate := 0.0
						if a.n > 0 {
							rate = min(float64(fraud)/float64(a.n), 1)
						}
						approx(rate)
					}
				}
				checked++
			}
		}
	}
	if got := b.shared.UnplacedLabels(); got != unplaced {
		t.Fatalf("%d unplaced labels counted, want %d", got, unplaced)
	}
	t.Logf("%d features, lateness %v: %d values checked, %d labels unplaced", len(spec.Features), lateness, checked, unplaced)
	return lagged, fraudSeen
}
