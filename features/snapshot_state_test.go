package features

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestSnapshotStateEqual checks that a restored Builder and Shared hold the
// state they were written from, field by field: every entity of every map
// and generation, the expiry clocks, the hash key and the Builder's
// counters (normalized: the evicted prefix of a series is not written, and
// capacities are not compared). Random streams (out of order, some beyond
// the lateness; countries, geo, MCCs, channels; labels with duplicates and
// corrections) run through process A; at two cuts the state is written and
// read into a fresh process (B from A, then C from B); all three then
// continue, with bit-identical rows and equal state to the end.
func TestSnapshotStateEqual(t *testing.T) {
	n := 6000
	if raceEnabled {
		n = 2000
	}
	mixed := func(rng *rand.Rand) *Spec {
		var s Spec
		for _, f := range randomSpec(rng).Features {
			f.Name = "r_" + f.Name
			s.Features = append(s.Features, f)
		}
		for _, f := range tiledSpec(rng).Features {
			f.Name = "t_" + f.Name
			s.Features = append(s.Features, f)
		}
		s.Features = append(s.Features,
			FeatureSpec{Name: "chg_country", Agg: AggChanged, Entity: "card_id", Field: "country"},
			FeatureSpec{Name: "chg_mcc", Agg: AggChanged, Entity: "card_id", Field: "mcc"},
			FeatureSpec{Name: "geo", Agg: AggGeoVelocity, Entity: "card_id"},
			FeatureSpec{Name: "since", Agg: AggSincePrev, Entity: "terminal_id"},
			FeatureSpec{Name: "card_fraud", Agg: AggFraudCount, Entity: "card_id", Window: Duration(10 * 24 * time.Hour)},
		)
		if err := s.Validate(); err != nil {
			panic(err)
		}
		return &s
	}
	for _, tc := range []struct {
		name string
		opts func(rng *rand.Rand) []Option
	}{
		{"default", func(*rand.Rand) []Option { return nil }},
		{"default short ttl", func(*rand.Rand) []Option { return []Option{WithTTL(30 * time.Hour), WithStripes(4)} }},
		{"spec default", func(*rand.Rand) []Option {
			return []Option{withSpec(DefaultSpec(), true), WithMaxLateness(2 * time.Hour)}
		}},
		{"spec mixed", func(rng *rand.Rand) []Option { return []Option{WithSpec(mixed(rng))} }},
		{"spec mixed short ttl", func(rng *rand.Rand) []Option {
			return []Option{WithSpec(mixed(rng)), WithTTL(20 * time.Hour), WithStripes(2), WithMaxLateness(0)}
		}},
	} {
		for seed := range uint64(2) {
			t.Run(fmt.Sprintf("%s/seed%d", tc.name, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 21))
				opts := tc.opts(rng)
				evs := bruteStream(rng, n)
				var labels []Label
				ps := []*Builder{MustBuilder(MustShared(opts...), opts...)}
				rows := [][]float32{make([]float32, ps[0].Width())}
				cuts := []int{n / 3, 2 * n / 3}
				for i := range evs {
					if len(cuts) > 0 && i == cuts[0] {
						cuts = cuts[1:]
						from := ps[len(ps)-1]
						to := MustBuilder(MustShared(opts...), opts...)
						var buf bytes.Buffer
						if err := from.shared.WriteState(&buf); err != nil {
							t.Fatal(err)
						}
						if err := from.WriteState(&buf); err != nil {
							t.Fatal(err)
						}
						if err := to.shared.ReadState(&buf); err != nil {
							t.Fatal(err)
						}
						if err := to.ReadState(&buf); err != nil {
							t.Fatal(err)
						}
						if err := diffState(from, to); err != nil {
							t.Fatalf("after restore at event %d: %v", i, err)
						}
						if got, was := heldBytes(to), heldBytes(from); got > was {
							t.Fatalf("after restore at event %d: slices hold %d bytes, %d before", i, got, was)
						}
						ps = append(ps, to)
						rows = append(rows, make([]float32, to.Width()))
					}
					if rng.Float64() < 0.3 { // a label about an earlier tx
						j := rng.IntN(i + 1)
						l := Label{TxID: evs[j].TxID, CardID: evs[j].CardID, TerminalID: evs[j].TerminalID,
							TS: evs[i].TS.Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour), Fraud: rng.Float64() < 0.8}
						labels = append(labels, l)
					}
					if len(labels) > 0 && rng.Float64() < 0.3 { // a label again: duplicate or correction
						l := labels[rng.IntN(len(labels))]
						l.Fraud = rng.Float64() < 0.5
						labels = append(labels, l)
					}
					for len(labels) > 0 {
						for _, b := range ps {
							b.shared.ApplyLabel(&labels[0])
						}
						labels = labels[1:]
					}
					k := &evs[rng.IntN(i+1)]
					for _, pass := range []func(b *Builder, row []float32){
						func(b *Builder, row []float32) { b.Update(&evs[i], row) },
						func(b *Builder, row []float32) { b.Peek(k, row) },
					} {
						for j, b := range ps {
							pass(b, rows[j])
						}
						for j := 1; j < len(ps); j++ {
							if d := bitDiff(rows[0], rows[j]); d != "" {
								t.Fatalf("event %d: process %d differs from the original: %s", i, j, d)
							}
							if ps[j].LastLate() != ps[0].LastLate() {
								t.Fatalf("event %d: process %d: LastLate %v, want %v", i, j, ps[j].LastLate(), ps[0].LastLate())
							}
						}
					}
				}
				for j := 1; j < len(ps); j++ {
					if err := diffState(ps[0], ps[j]); err != nil {
						t.Fatalf("at the end, process %d: %v", j, err)
					}
				}
				if len(ps) != 3 {
					t.Fatalf("%d processes, want 3", len(ps))
				}
			})
		}
	}
}

// diffState returns an error describing the first difference between the
// states of two Builders and their Shareds (with the same stripe count).
func diffState(a, b *Builder) error {
	if a.n != b.n || a.late != b.late || a.lastLate != b.lastLate {
		return fmt.Errorf("counters %d/%d/%v, restored %d/%d/%v", a.n, a.late, a.lastLate, b.n, b.late, b.lastLate)
	}
	if a.sp == nil {
		if err := diffExpiry("card", &a.cards, &b.cards, normCard); err != nil {
			return err
		}
	} else if err := diffExpiry("card", &a.sp.loc, &b.sp.loc, normEnt); err != nil {
		return err
	}
	sa, sb := a.shared, b.shared
	if sa.seed != sb.seed || len(sa.stripes) != len(sb.stripes) {
		return fmt.Errorf("shared seed %x, %d stripes; restored %x, %d", sa.seed, len(sa.stripes), sb.seed, len(sb.stripes))
	}
	for i := range sa.stripes {
		x, y := &sa.stripes[i], &sb.stripes[i]
		if err := diffExpiry(fmt.Sprint("stripe ", i, " terminal"), &x.m, &y.m, normTerm); err != nil {
			return err
		}
		if len(x.spec) != len(y.spec) {
			return fmt.Errorf("stripe %d: %d spec maps, restored %d", i, len(x.spec), len(y.spec))
		}
		for k := range x.spec {
			if err := diffExpiry(fmt.Sprint("stripe ", i, " map ", k), &x.spec[k], &y.spec[k], normEnt); err != nil {
				return err
			}
		}
	}
	return nil
}

func diffExpiry[V expiring](what string, a, b *expiryMap[V], norm func(V) any) error {
	if a.started != b.started || a.clock != b.clock || a.rotateAt != b.rotateAt || a.ttl != b.ttl {
		return fmt.Errorf("%s map clock %v/%d/%d/%d, restored %v/%d/%d/%d", what,
			a.started, a.clock, a.rotateAt, a.ttl, b.started, b.clock, b.rotateAt, b.ttl)
	}
	for g, pair := range [2][2]map[string]V{{a.cur, b.cur}, {a.old, b.old}} {
		x, y := pair[0], pair[1]
		if len(x) != len(y) {
			return fmt.Errorf("%s generation %d: %d entries, restored %d", what, g, len(x), len(y))
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok {
				return fmt.Errorf("%s %q (generation %d) not restored", what, k, g)
			}
			if nv, nw := norm(v), norm(w); !reflect.DeepEqual(nv, nw) {
				return fmt.Errorf("%s %q (generation %d):\n  %+v\nrestored\n  %+v", what, k, g, nv, nw)
			}
		}
	}
	return nil
}

// normSeries is s as a snapshot keeps it: live points only, window
// indexes relative to the first, tags when tagged.
type normSeries struct {
	Has   bool
	Pts   []point
	Tags  []uint64
	Subs  int32
	MaxTS int64
	Ws    []winState
}

func newNormSeries(s *series, tags []uint64, tagged bool) normSeries {
	if !s.has() {
		return normSeries{}
	}
	n := normSeries{Has: true, Pts: slices.Clone(s.pts[s.off:]), Subs: s.subs, MaxTS: s.maxTS}
	if tagged {
		n.Tags = slices.Clone(tags[s.off:])
		if len(n.Tags) != len(n.Pts) {
			panic("tags not parallel to points")
		}
	}
	for _, w := range s.ws {
		w.start -= s.off
		w.end -= s.off
		n.Ws = append(n.Ws, w)
	}
	return n
}

func orNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func normCard(c *cardState) any {
	type nc struct {
		S                   normSeries
		Country             string
		Lat, Lon            float64
		HasGeo, HeadChanged bool
		HeadSince, HeadKmh  float32
	}
	return nc{newNormSeries(&c.s, nil, false), c.country, c.lat, c.lon, c.hasGeo, c.headChanged, c.headSince, c.headKmh}
}

func normTerm(t *terminalState) any {
	type nt struct {
		S      normSeries
		Labels []labelPoint
		Seen   int64
	}
	return nt{newNormSeries(&t.s, nil, false), orNil(t.labels), t.seen}
}

func normEnt(st *entState) any {
	type ne struct {
		S        normSeries
		Tagged   bool
		Tl       [][]tile
		Labels   []labelPoint
		Seen     int64
		Strs     []string
		HeadVals []float32
		Lat, Lon float64
		HasGeo   bool
	}
	n := ne{S: newNormSeries(&st.s.series, st.s.tags, st.s.tagged), Tagged: st.s.tagged, Labels: orNil(st.labels),
		Seen: st.seen, Strs: orNil(st.strs), HeadVals: orNil(st.headVals), Lat: st.lat, Lon: st.lon, HasGeo: st.hasGeo}
	for _, tl := range st.tl {
		n.Tl = append(n.Tl, orNil(tl.ts))
	}
	return n
}

// heldBytes returns the bytes of the slices (by capacity) of the entity
// states of b and its Shared: points, tags, windows, labels, tiles.
func heldBytes(b *Builder) int {
	n := 0
	ser := func(s *series) { n += cap(s.pts)*16 + cap(s.ws)*24 }
	ent := func(st *entState) {
		ser(&st.s.series)
		n += cap(st.s.tags)*8 + cap(st.labels)*16
		for _, tl := range st.tl {
			n += cap(tl.ts) * 48
		}
	}
	for _, gen := range [2]map[string]*cardState{b.cards.cur, b.cards.old} {
		for _, c := range gen {
			ser(&c.s)
		}
	}
	if b.sp != nil {
		for _, gen := range [2]map[string]*entState{b.sp.loc.cur, b.sp.loc.old} {
			for _, st := range gen {
				ent(st)
			}
		}
	}
	for i := range b.shared.stripes {
		x := &b.shared.stripes[i]
		for _, gen := range [2]map[string]*terminalState{x.m.cur, x.m.old} {
			for _, t := range gen {
				ser(&t.s)
				n += cap(t.labels) * 16
			}
		}
		for k := range x.spec {
			for _, gen := range [2]map[string]*entState{x.spec[k].cur, x.spec[k].old} {
				for _, st := range gen {
					ent(st)
				}
			}
		}
	}
	return n
}
