package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// thirdEntitySpec is DefaultSpec plus features of entities other than
// card_id and terminal_id (mcc, channel: shared entities), some tiled, a
// distinct count, head features (since_prev, changed, geo_velocity) on a
// shared entity and on the card, and card fraud features (card labels,
// kept in the Shared but read by the card half) by both label times.
func thirdEntitySpec() *Spec {
	s := DefaultSpec()
	cap4 := 4
	s.Features = append(s.Features,
		FeatureSpec{Name: "mcc_tx_count_1d", Agg: AggCount, Entity: "mcc", Window: Duration(24 * time.Hour)},
		FeatureSpec{Name: "mcc_amount_mean_7d", Agg: AggMean, Entity: "mcc", Field: "amount", Window: Duration(7 * 24 * time.Hour), Tiles: 7},
		FeatureSpec{Name: "mcc_distinct_cards_1d", Agg: AggDistinct, Entity: "mcc", Of: "card_id", Window: Duration(24 * time.Hour), Cap: &cap4},
		FeatureSpec{Name: "mcc_secs_since_prev", Agg: AggSincePrev, Entity: "mcc", Transform: "log1p"},
		FeatureSpec{Name: "mcc_geo_velocity", Agg: AggGeoVelocity, Entity: "mcc"},
		FeatureSpec{Name: "terminal_country_changed", Agg: AggChanged, Entity: "terminal_id", Field: "country"},
		FeatureSpec{Name: "channel_tx_count_1h", Agg: AggCount, Entity: "channel", Window: Duration(time.Hour)},
		FeatureSpec{Name: "card_mcc_changed", Agg: AggChanged, Entity: "card_id", Field: "mcc"},
		FeatureSpec{Name: "card_fraud_count_30d", Agg: AggFraudCount, Entity: "card_id", Window: Duration(30 * 24 * time.Hour)},
		FeatureSpec{Name: "card_fraud_rate_7d_label", Agg: AggFraudRate, Entity: "card_id", Window: Duration(7 * 24 * time.Hour), LabelTime: LabelTimeLabel},
		FeatureSpec{Name: "card_amount_max_1d_tiled", Agg: AggMax, Entity: "card_id", Field: "amount", Window: Duration(24 * time.Hour), Tiles: 4},
	)
	if err := s.Validate(); err != nil {
		panic(err)
	}
	return s
}

// splitStream is bruteStream (out of order events, MCCs some absent,
// channels, countries, geo) over 8 cards and 5 terminals, with a PAN-key
// rotation from the middle on: most events then carry the card under its
// new pseudonym with the old one as CardAlias.
func splitStream(rng *rand.Rand, n int) []Event {
	evs := bruteStream(rng, n)
	for i := range evs {
		e := &evs[i]
		e.CardID = fmt.Sprint("c-", rng.IntN(8))
		e.TerminalID = fmt.Sprint("m-", rng.IntN(5))
		if i > n/2 && rng.IntN(5) > 0 {
			e.CardID, e.CardAlias = "n"+e.CardID, e.CardID
		}
		if rng.IntN(20) == 0 {
			e.Channel = "" // an optional shared entity the event does not carry
		}
	}
	return evs
}

// splitWorld is one way of computing rows: Update on a Builder, or the two
// halves (Shared.Apply on t, then UpdateLocal on b, whose Shared is t or
// another one).
type splitWorld struct {
	name string
	t    *Shared // Apply's Shared (nil: Update)
	b    *Builder
	row  []float32
	peek []float32
}

// TestSplitMatchesUpdate is the invariant of the row split: on random
// out-of-order streams with labels (duplicates, corrections, with and
// without tx_ts), a PAN-key rotation, card and terminal caps, short TTLs
// and max points, Shared.Apply followed by Builder.UpdateLocal writes
// exactly Update's row, bit for bit, each half only its own columns
// (Shared.Columns and the rest), with the same Late, LastLate,
// EvictedCards and Rekeyed; Shared.Peek followed by PeekLocal writes
// exactly Peek's row and LastLate; and the Builders and Shareds keep deeply
// equal state (expiry clocks and generations included, so sweeps happen
// alike). For both engines: the hand-written default Builder, the spec
// engine on DefaultSpec, on a spec with more shared entities (mcc,
// channel) and card fraud features, and on random specs. A third world
// runs the halves on two Shareds (terminal stage, card stage), as the
// scale-out deployment does, labels applied with ApplyLabelShared and,
// forwarded with the transaction time it found, ApplyLabelLocal: its rows
// are Update's too, and each stage's Shared holds exactly its side of
// Update's.
func TestSplitMatchesUpdate(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1000
	}
	type engine struct {
		name string
		opt  func() Option
	}
	engines := []engine{
		{"hand-written", func() Option { return nil }},
		{"spec default", func() Option { return withSpec(DefaultSpec(), true) }},
		{"spec third entity", func() Option { return WithSpec(thirdEntitySpec()) }},
	}
	for i := range 3 {
		rs := randomSpec(rand.New(rand.NewPCG(uint64(i), 99)))
		engines = append(engines, engine{fmt.Sprint("spec random", i), func() Option { return WithSpec(rs) }})
	}
	optSets := []struct {
		name string
		opts []Option
	}{
		{"defaults", nil},
		{"caps", []Option{WithMaxCards(4), WithMaxTerminals(3), WithStripes(2)}},
		{"short ttl", []Option{WithTTL(30 * time.Hour), WithStripes(1), WithMaxLateness(0)}},
		{"max points", []Option{WithMaxPoints(12), WithMaxLateness(2 * time.Hour)}},
	}
	for _, eng := range engines {
		for _, os := range optSets {
			for _, txTS := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/txts=%v", eng.name, os.name, txTS)
				t.Run(name, func(t *testing.T) {
					opts := append(slices.Clone(os.opts), eng.opt())
					splitCheck(t, rand.New(rand.NewPCG(uint64(len(name)), 7)), opts, n, txTS)
				})
			}
		}
	}
}

func splitCheck(t *testing.T, rng *rand.Rand, opts []Option, n int, allTxTS bool) {
	t.Helper()
	su := MustShared(opts...)
	ss := MustShared(opts...)
	ss.seed = su.seed
	worlds := []*splitWorld{
		{name: "update", b: MustBuilder(su, opts...)},
		{name: "split", t: ss, b: MustBuilder(ss, opts...)},
	}
	// Two stages: terminal (td) and card (cd), labels applied to each
	// half, the card's with the transaction time the terminal's found.
	td, cd := MustShared(opts...), MustShared(opts...)
	td.seed, cd.seed = su.seed, su.seed
	worlds = append(worlds, &splitWorld{name: "two stages", t: td, b: MustBuilder(cd, opts...)})
	w0 := worlds[0]
	width := w0.b.Width()
	for _, w := range worlds {
		w.row, w.peek = make([]float32, width), make([]float32, width)
	}
	cols := ss.Columns()
	if ss.Width() != width || len(cols) == 0 || len(cols) >= width || !slices.IsSorted(cols) {
		t.Fatalf("Width %d (Builder %d), Columns %v", ss.Width(), width, cols)
	}
	isShared := make([]bool, width)
	for _, c := range cols {
		isShared[c] = true
	}
	sentinel := math.Float32frombits(0x7fc0dead) // a NaN no feature writes
	fill := func(r []float32) {
		for i := range r {
			r[i] = sentinel
		}
	}
	onlyCols := func(r []float32, shared bool) string { // which columns a half wrote that it must not
		s := ""
		for i, v := range r {
			if isShared[i] != shared && math.Float32bits(v) != math.Float32bits(sentinel) {
				s += fmt.Sprintf(" %d", i)
			}
		}
		return s
	}
	half := make([]float32, width)
	evs := splitStream(rng, n)
	var late, evicted, labelled int
	for i := range evs {
		e := &evs[i]
		if rng.Float64() < 0.3 { // a label (sometimes a duplicate or a correction) about an earlier tx
			j := rng.IntN(i + 1)
			l := Label{TxID: evs[j].TxID, CardID: evs[j].CardID, CardAlias: evs[j].CardAlias, TerminalID: evs[j].TerminalID,
				TS: e.TS.Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour), Fraud: rng.Float64() < 0.85}
			if allTxTS || rng.IntN(2) == 0 {
				l.TxTS = evs[j].TS
			}
			for range 1 + rng.IntN(2) {
				placed := su.ApplyLabel(&l)
				if ss.ApplyLabel(&l) != placed {
					t.Fatalf("label %d: placed differs", i)
				}
				p, txTS := td.ApplyLabelShared(&l)
				if p != placed {
					t.Fatalf("label %d (%+v): ApplyLabelShared placed %v, ApplyLabel %v", i, l, p, placed)
				}
				fwd := l
				if fwd.TxTS.IsZero() {
					fwd.TxTS = txTS
				}
				cd.ApplyLabelLocal(&fwd)
			}
			labelled++
		}
		w0.b.Update(e, w0.row)
		for _, w := range worlds[1:] {
			fill(w.row)
			sl := w.t.Apply(e, w.row)
			if s := onlyCols(w.row, true); s != "" {
				t.Fatalf("event %d: %s: Shared.Apply wrote columns not in Columns:%s", i, w.name, s)
			}
			fill(half)
			w.b.UpdateLocal(e, half, sl)
			if s := onlyCols(half, false); s != "" {
				t.Fatalf("event %d: %s: UpdateLocal wrote Shared columns:%s", i, w.name, s)
			}
			for c := range half {
				if !isShared[c] {
					w.row[c] = half[c]
				}
			}
			if d := splitDiff(w0.b, w.row, w0.row); d != "" {
				t.Fatalf("event %d (%+v): %s row differs from Update's:%s", i, *e, w.name, d)
			}
			if w.b.LastLate() != w0.b.LastLate() || w.b.Late() != w0.b.Late() || w.b.Rekeyed() != w0.b.Rekeyed() ||
				!slices.Equal(w.b.EvictedCards(), w0.b.EvictedCards()) {
				t.Fatalf("event %d: %s: LastLate %v Late %d Rekeyed %d Evicted %v, Update's %v %d %d %v", i, w.name,
					w.b.LastLate(), w.b.Late(), w.b.Rekeyed(), w.b.EvictedCards(), w0.b.LastLate(), w0.b.Late(), w0.b.Rekeyed(), w0.b.EvictedCards())
			}
		}
		if w0.b.LastLate() {
			late++
		}
		evicted += len(w0.b.EvictedCards())

		k := &evs[rng.IntN(min(i+2, len(evs)))] // Peek of an applied event, or of the next one (not applied)
		w0.b.Peek(k, w0.peek)
		for _, w := range worlds[1:] {
			fill(w.peek)
			sl := w.t.Peek(k, w.peek)
			if s := onlyCols(w.peek, true); s != "" {
				t.Fatalf("event %d: %s: Shared.Peek wrote columns not in Columns:%s", i, w.name, s)
			}
			fill(half)
			w.b.PeekLocal(k, half, sl)
			if s := onlyCols(half, false); s != "" {
				t.Fatalf("event %d: %s: PeekLocal wrote Shared columns:%s", i, w.name, s)
			}
			for c := range half {
				if !isShared[c] {
					w.peek[c] = half[c]
				}
			}
			if d := splitDiff(w0.b, w.peek, w0.peek); d != "" {
				t.Fatalf("event %d: %s: Peek of %+v differs from Peek's:%s", i, w.name, *k, d)
			}
			if w.b.LastLate() != w0.b.LastLate() {
				t.Fatalf("event %d: %s: Peek LastLate %v, Peek's %v", i, w.name, w.b.LastLate(), w0.b.LastLate())
			}
		}
		if i%500 == 499 || i == len(evs)-1 {
			if d := splitStateDiff(w0.b, worlds[1].b, true); d != "" {
				t.Fatalf("event %d: split state differs from Update's: %s", i, d)
			}
			if d := splitStateDiff(w0.b, worlds[2].b, false); d != "" {
				t.Fatalf("event %d: two-stage card state differs from Update's: %s", i, d)
			}
			if d := sideDiff(su, td, sideShared); d != "" {
				t.Fatalf("event %d: terminal stage's Shared differs from Update's: %s", i, d)
			}
			if d := sideDiff(su, cd, sideLocal); d != "" {
				t.Fatalf("event %d: card stage's Shared differs from Update's: %s", i, d)
			}
		}
	}
	if late == 0 || labelled == 0 || w0.b.Rekeyed() == 0 {
		t.Fatalf("the stream did not exercise lateness, labels or rekeying: %d %d %d", late, labelled, w0.b.Rekeyed())
	}
	if MustShared(opts...).MaxCards() > 0 && evicted == 0 {
		t.Fatal("the card cap evicted nothing")
	}
}

// sideDiff reports how the maps of one side (sideShared: terminals and
// shared entities; sideLocal: card labels) of Shared b differ from a's.
func sideDiff(a, b *Shared, side labelSide) string {
	for i := range a.stripes {
		x, y := &a.stripes[i], &b.stripes[i]
		if side == sideShared && !reflect.DeepEqual(x.m, y.m) {
			return fmt.Sprintf("stripe %d terminals", i)
		}
		for k := range x.spec {
			if side.has(&a.sp.cs.smaps[k]) && !reflect.DeepEqual(x.spec[k], y.spec[k]) {
				return fmt.Sprintf("stripe %d spec map %d", i, k)
			}
		}
	}
	return ""
}

// splitDiff compares two rows bit for bit, naming the differing features.
func splitDiff(b *Builder, got, want []float32) string {
	names := b.Names()
	s := ""
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			s += fmt.Sprintf("\n  %s: got %v, Update %v", names[i], got[i], want[i])
		}
	}
	return s
}

// splitStateDiff reports how b's state differs from a's: counters, card
// maps (clocks, generations, caps) and, with shared, every stripe map of
// their Shareds.
func splitStateDiff(a, b *Builder, shared bool) string {
	if a.n != b.n || a.late != b.late || a.rekeyed != b.rekeyed {
		return fmt.Sprintf("counters n %d/%d late %d/%d rekeyed %d/%d", a.n, b.n, a.late, b.late, a.rekeyed, b.rekeyed)
	}
	if a.sp == nil && !reflect.DeepEqual(a.cards, b.cards) {
		return "card map"
	}
	if a.sp != nil && !reflect.DeepEqual(a.sp.loc, b.sp.loc) {
		return "spec card map"
	}
	if !shared {
		return ""
	}
	for i := range a.shared.stripes {
		x, y := &a.shared.stripes[i], &b.shared.stripes[i]
		if !reflect.DeepEqual(x.m, y.m) {
			return fmt.Sprintf("stripe %d terminals", i)
		}
		for k := range x.spec {
			if !reflect.DeepEqual(x.spec[k], y.spec[k]) {
				return fmt.Sprintf("stripe %d spec map %d", i, k)
			}
		}
	}
	return ""
}

// TestSplitConcurrentHalves runs the halves as a two-stage pipeline: one
// goroutine applies events and labels to the terminal stage's Shared
// (Apply, ApplyLabelShared) and forwards each event with its shared columns
// and late flag, and each label with the transaction time found, through a
// channel to a second goroutine, which applies them in the same order to
// the card stage (UpdateLocal, ApplyLabelLocal). The rows equal Update's,
// and -race checks the halves share nothing unlocked: once with two
// Shareds, once with one Shared both halves touch (no labels; the spec's
// card label maps swept by UpdateLocal while Apply sweeps the others).
func TestSplitConcurrentHalves(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 1000
	}
	for _, tc := range []struct {
		name   string
		one    bool // one Shared for both halves
		labels bool
	}{{"two shareds", false, true}, {"one shared", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []Option{WithSpec(thirdEntitySpec()), WithMaxCards(5), WithStripes(4)}
			rng := rand.New(rand.NewPCG(3, 3))
			evs := splitStream(rng, n)
			type item struct {
				e    *Event
				l    *Label
				row  []float32
				late bool
			}
			var items []item
			for i := range evs {
				if tc.labels && rng.Float64() < 0.3 {
					j := rng.IntN(i + 1)
					l := &Label{TxID: evs[j].TxID, CardID: evs[j].CardID, CardAlias: evs[j].CardAlias,
						TerminalID: evs[j].TerminalID, TS: evs[i].TS.Add(-time.Hour), Fraud: rng.IntN(5) > 0}
					if rng.IntN(2) == 0 {
						l.TxTS = evs[j].TS
					}
					items = append(items, item{l: l})
				}
				items = append(items, item{e: &evs[i]})
			}
			su := MustShared(opts...)
			bu := MustBuilder(su, opts...)
			want := make([][]float32, 0, n)
			for _, it := range items {
				if it.l != nil {
					su.ApplyLabel(it.l)
					continue
				}
				row := make([]float32, bu.Width())
				bu.Update(it.e, row)
				want = append(want, row)
			}

			td := MustShared(opts...)
			td.seed = su.seed
			cd := td
			if !tc.one {
				cd = MustShared(opts...)
				cd.seed = su.seed
			}
			bd := MustBuilder(cd, opts...)
			ch := make(chan item, 64)
			done := make(chan struct{})
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() { // the terminal stage
				defer close(ch)
				for _, it := range items {
					if it.l != nil {
						if tc.one {
							td.ApplyLabel(it.l)
						} else { // forward it with the transaction time found here
							fwd := *it.l
							if _, txTS := td.ApplyLabelShared(it.l); fwd.TxTS.IsZero() {
								fwd.TxTS = txTS
							}
							it.l = &fwd
						}
					} else {
						it.row = make([]float32, bd.Width())
						it.late = td.Apply(it.e, it.row)
					}
					select {
					case ch <- it:
					case <-done:
						return
					}
				}
			})
			defer close(done) // before wg.Wait: a failed test stops the stage
			k := 0
			for it := range ch { // the card stage
				if it.l != nil {
					if !tc.one {
						cd.ApplyLabelLocal(it.l)
					}
					continue
				}
				bd.UpdateLocal(it.e, it.row, it.late)
				if d := splitDiff(bu, it.row, want[k]); d != "" {
					t.Fatalf("event %d: row differs from Update's:%s", k, d)
				}
				k++
			}
			if k != n || bd.Late() != bu.Late() || bd.Rekeyed() != bu.Rekeyed() {
				t.Fatalf("%d events, Late %d Rekeyed %d; Update's %d %d", k, bd.Late(), bd.Rekeyed(), bu.Late(), bu.Rekeyed())
			}
		})
	}
}

// BenchmarkSplitUpdate is BenchmarkBuilderUpdate (and UpdateSpec) through
// the two halves, Shared.Apply then Builder.UpdateLocal, on one goroutine:
// the cost of the split against Update's. BenchmarkSharedApply is the
// shared half alone: what a shared-state replica's event costs the stage
// in features (stream's WithSharedReplicas), against a claimed event's.
func BenchmarkSplitUpdate(b *testing.B) { benchSplit(b, false) }

// BenchmarkSharedApply: see BenchmarkSplitUpdate.
func BenchmarkSharedApply(b *testing.B) { benchSplit(b, true) }

func benchSplit(b *testing.B, sharedOnly bool) {
	for _, eng := range []struct {
		name string
		opt  Option
	}{{"hand-written", nil}, {"spec", withSpec(DefaultSpec(), true)}} {
		// 10,000 cards and 2,000 terminals: the population of bench's
		// BenchmarkFloor (its world), whose feature stage this mirrors.
		for _, size := range []struct{ cards, terminals int }{{1000, 100}, {10000, 2000}, {100000, 10000}} {
			b.Run(fmt.Sprintf("%s/cards=%d", eng.name, size.cards), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				const n = 1 << 16
				evs := make([]Event, n)
				now := t0
				for i := range evs {
					now = now.Add(time.Duration(rng.Int64N(int64(2 * time.Second))))
					evs[i] = Event{TxID: "t", CardID: fmt.Sprint("c-", rng.IntN(size.cards)), TerminalID: fmt.Sprint("m-", rng.IntN(size.terminals)),
						TS: now, Amount: rng.ExpFloat64() * 50, Country: "FR", Lat: 48.8, Lon: 2.3, HasGeo: true}
				}
				span := now.Sub(t0) + time.Second
				s := MustShared(eng.opt)
				bld := MustBuilder(s, eng.opt)
				row := make([]float32, bld.Width())
				b.ReportAllocs()
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				cpu0, cpuOK := threadCPU()
				i := 0
				for b.Loop() {
					if i > 0 && i%n == 0 {
						for j := range evs {
							evs[j].TS = evs[j].TS.Add(span)
						}
					}
					e := &evs[i%n]
					if sharedOnly {
						s.Apply(e, row)
					} else {
						bld.UpdateLocal(e, row, s.Apply(e, row))
					}
					i++
				}
				if cpu1, ok := threadCPU(); ok && cpuOK && cpu1 > cpu0 {
					// this thread's CPU time per event: steadier than ns/op
					// on a shared machine (see benchUpdateOpts)
					b.ReportMetric(float64(cpu1-cpu0)/float64(i), "cpu-ns/event")
				}
			})
		}
	}
}

// BenchmarkSharedMemory measures the live heap of the shared (terminal)
// state alone, which every member of a group holds whole when it
// replicates the partitions it does not claim: terminals with 10, 100 and
// 1,000 events each inside the 30-day windows. B/terminal is the heap per
// terminal; the slope between two sizes is the cost of an event kept.
func BenchmarkSharedMemory(b *testing.B) {
	const terminals = 2000
	for _, per := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("events-per-terminal=%d", per), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 4))
			n := terminals * per
			step := 30 * 24 * time.Hour / time.Duration(n) // every event inside the 30-day windows
			evs := make([]Event, n)
			ids := make([]string, terminals)
			for k := range ids {
				ids[k] = fmt.Sprint("m-", k)
			}
			for i := range evs {
				evs[i] = Event{TxID: "t", CardID: "c", TerminalID: ids[rng.IntN(terminals)],
					TS: t0.Add(time.Duration(i) * step), Amount: rng.ExpFloat64() * 50, Country: "FR"}
			}
			var perTerminal float64
			for b.Loop() {
				s := MustShared()
				row := make([]float32, MustBuilder(s).Width())
				perTerminal = float64(heapGrowth(func() {
					for i := range evs {
						s.Apply(&evs[i], row)
					}
				})) / terminals
				if st := s.Stats(); st.Entities == 0 {
					b.Fatalf("no terminal in the state: %+v", st)
				}
				runtime.KeepAlive(s)
			}
			b.ReportMetric(perTerminal, "B/terminal")
		})
	}
}

func TestSharedFields(t *testing.T) {
	s := MustShared()
	if got := s.SharedFields(); !slices.Equal(got, []string{"terminal_id"}) {
		t.Fatalf("default SharedFields %v", got)
	}
	e := Event{TerminalID: "T1", CardID: "C1", MCC: "5411", Channel: "ecom"}
	if id := s.SharedID(&e, 0); id != "T1" {
		t.Fatalf("SharedID %q", id)
	}
	sp := MustShared(WithSpec(thirdEntitySpec()))
	fs := sp.SharedFields()
	if len(fs) != 3 || slices.Contains(fs, "card_id") {
		t.Fatalf("spec SharedFields %v, want terminal_id, mcc, channel", fs)
	}
	for i, f := range fs {
		want := map[string]string{"terminal_id": "T1", "mcc": "5411", "channel": "ecom"}[f]
		if id := sp.SharedID(&e, i); id != want {
			t.Fatalf("SharedID(%d) (%s) = %q, want %q", i, f, id, want)
		}
	}
}
