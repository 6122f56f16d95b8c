package features_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// op is one step of a traffic script: an Update or a Peek of an event, or
// an ApplyLabel.
type op struct {
	kind byte // 'u', 'p' or 'l'
	i    int  // index in traffic.evs or traffic.labels
}

// traffic is a script of operations as a stream worker sees them.
type traffic struct {
	evs    []features.Event
	labels []features.Label
	ops    []op
}

// synthTraffic generates days of synth transactions and their labels and
// turns them into a script, in arrival order: ~4% of events arrive up to
// 150 minutes late (some beyond the default 1h lateness), labels arrive at
// their TS (~10% twice, ~5% of fraud labels corrected later), ~3% of
// Updates are followed by a re-delivery (Peek) of a recent event, ~1% by a
// Peek of an event not yet applied.
func synthTraffic(seed uint64, cards, days int, rate float64) *traffic {
	g, err := synth.New(synth.Config{Seed: int64(seed), Cards: cards, Terminals: max(20, cards/10),
		FraudRate: 0.05, LabelDelay: 36 * time.Hour, GenuineLabelRate: 0.05})
	if err != nil {
		panic(err)
	}
	from := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(seed, 77))
	tr := &traffic{}
	type arrival struct {
		at time.Time
		op op
	}
	var arr []arrival
	err = g.Simulate(from, from.Add(time.Duration(days)*24*time.Hour), rate, func(tx synth.Tx) error {
		tr.evs = append(tr.evs, tx.Event)
		at := tx.Event.TS
		if rng.Float64() < 0.04 {
			at = at.Add(time.Duration(rng.Int64N(int64(150 * time.Minute))))
		}
		arr = append(arr, arrival{at, op{'u', len(tr.evs) - 1}})
		l, ok := g.LabelFor(tx)
		if !ok {
			return nil
		}
		tr.labels = append(tr.labels, l)
		arr = append(arr, arrival{l.TS, op{'l', len(tr.labels) - 1}})
		if rng.Float64() < 0.1 {
			arr = append(arr, arrival{l.TS.Add(time.Duration(rng.Int64N(int64(48 * time.Hour)))), op{'l', len(tr.labels) - 1}})
		}
		if l.Fraud && rng.Float64() < 0.05 {
			c := l
			c.Fraud = false
			c.TS = l.TS.Add(time.Duration(rng.Int64N(int64(72 * time.Hour))))
			tr.labels = append(tr.labels, c)
			arr = append(arr, arrival{c.TS, op{'l', len(tr.labels) - 1}})
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	slices.SortStableFunc(arr, func(a, b arrival) int { return a.at.Compare(b.at) })
	var applied []int
	for _, a := range arr {
		tr.ops = append(tr.ops, a.op)
		if a.op.kind != 'u' {
			continue
		}
		applied = append(applied, a.op.i)
		if rng.Float64() < 0.03 {
			tr.ops = append(tr.ops, op{'p', applied[max(0, len(applied)-1-rng.IntN(50))]})
		}
		if rng.Float64() < 0.01 && a.op.i+1 < len(tr.evs) {
			tr.ops = append(tr.ops, op{'p', a.op.i + 1 + rng.IntN(min(20, len(tr.evs)-a.op.i-1))})
		}
	}
	return tr
}

// pipe is one process's feature state: a Shared and one Builder.
type pipe struct {
	s   *features.Shared
	b   *features.Builder
	row []float32
}

func newPipe(opts, sharedOpts []features.Option) *pipe {
	s := features.MustShared(append(slices.Clone(opts), sharedOpts...)...)
	b := features.MustBuilder(s, opts...)
	return &pipe{s: s, b: b, row: make([]float32, b.Width())}
}

// do applies o; for an Update or a Peek, p.row holds the event's row.
func (p *pipe) do(tr *traffic, o op) {
	switch o.kind {
	case 'u':
		p.b.Update(&tr.evs[o.i], p.row)
	case 'p':
		p.b.Peek(&tr.evs[o.i], p.row)
	default:
		p.s.ApplyLabel(&tr.labels[o.i])
	}
}

// snapshot writes p's Shared, then its Builder, to one buffer.
func (p *pipe) snapshot(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := p.s.WriteState(&buf); err != nil {
		tb.Fatalf("Shared.WriteState: %v", err)
	}
	if err := p.b.WriteState(&buf); err != nil {
		tb.Fatalf("Builder.WriteState: %v", err)
	}
	return buf.Bytes()
}

// restore reads a snapshot written by pipe.snapshot into p, checking that
// each ReadState reads exactly its own bytes.
func (p *pipe) restore(tb testing.TB, snap []byte) {
	tb.Helper()
	r := bytes.NewReader(snap)
	if err := p.s.ReadState(r); err != nil {
		tb.Fatalf("Shared.ReadState: %v", err)
	}
	if err := p.b.ReadState(r); err != nil {
		tb.Fatalf("Builder.ReadState: %v", err)
	}
	if r.Len() != 0 {
		tb.Fatalf("%d bytes left after both ReadStates", r.Len())
	}
}

// customSpec exercises every kind of entity state: tiles, distinct (under
// and over its cap), two changed fields, geo, since_prev, last, card and
// terminal labels, and entities other than cards and terminals.
func customSpec() *features.Spec {
	d := func(h int) features.Duration { return features.Duration(time.Duration(h) * time.Hour) }
	cap8 := 8
	night := 5
	s := &features.Spec{Features: []features.FeatureSpec{
		{Name: "amount", Agg: features.AggValue, Field: "amount", Transform: "log1p"},
		{Name: "card_count_1d_t24", Agg: features.AggCount, Entity: "card_id", Window: d(24), Tiles: 24},
		{Name: "card_max_7d_t7", Agg: features.AggMax, Field: "amount", Entity: "card_id", Window: d(7 * 24), Tiles: 7},
		{Name: "card_sum_1h", Agg: features.AggSum, Field: "amount", Entity: "card_id", Window: d(1)},
		{Name: "card_std_7d", Agg: features.AggStd, Field: "amount", Entity: "card_id", Window: d(7 * 24)},
		{Name: "card_min_1d", Agg: features.AggMin, Field: "amount", Entity: "card_id", Window: d(24)},
		{Name: "card_mcc_distinct_7d", Agg: features.AggDistinct, Entity: "card_id", Of: "mcc", Window: d(7 * 24), Cap: &cap8},
		{Name: "card_mcc_changed", Agg: features.AggChanged, Entity: "card_id", Field: "mcc"},
		{Name: "card_country_changed", Agg: features.AggChanged, Entity: "card_id", Field: "country"},
		{Name: "card_since", Agg: features.AggSincePrev, Entity: "card_id", Transform: "log1p"},
		{Name: "card_geo", Agg: features.AggGeoVelocity, Entity: "card_id"},
		{Name: "card_last_1d", Agg: features.AggLast, Field: "amount", Entity: "card_id", Window: d(24)},
		{Name: "card_ratio_7d", Agg: features.AggRatio, Field: "amount", Entity: "card_id", Window: d(7 * 24)},
		{Name: "card_fraud_30d", Agg: features.AggFraudCount, Entity: "card_id", Window: d(30 * 24)},
		{Name: "terminal_cards_1d", Agg: features.AggDistinct, Entity: "terminal_id", Of: "card_id", Window: d(24)},
		{Name: "terminal_mean_7d_t28", Agg: features.AggMean, Field: "amount", Entity: "terminal_id", Window: d(7 * 24), Tiles: 28},
		{Name: "terminal_fraud_rate_7d_lag7d", Agg: features.AggFraudRate, Entity: "terminal_id", Window: d(7 * 24), Offset: d(7 * 24)},
		{Name: "terminal_fraud_count_6d_lag2d_t6", Agg: features.AggFraudCount, Entity: "terminal_id", Window: d(6 * 24), Offset: d(2 * 24), Tiles: 6},
		{Name: "mcc_count_1h", Agg: features.AggCount, Entity: "mcc", Window: d(1)},
		{Name: "mcc_zscore_1d", Agg: features.AggZScore, Field: "amount", Entity: "mcc", Window: d(24)},
		{Name: "country_max_1d", Agg: features.AggMax, Field: "amount", Entity: "country", Window: d(24)},
		{Name: "channel_count_1d_lag1d", Agg: features.AggCount, Entity: "channel", Window: d(24), Offset: d(24)},
		{Name: "hour_sin", Agg: features.AggHourSin},
		{Name: "night", Agg: features.AggNight, NightHour: &night},
	}}
	if err := s.Validate(); err != nil {
		panic(err)
	}
	return s
}

// cachedTraffic is the traffic of TestSnapshotExact, built once.
var cachedTraffic = sync.OnceValue(func() *traffic {
	days, rate := 24, 0.03
	if features.RaceEnabled {
		days, rate = 16, 0.015
	}
	return synthTraffic(5, 300, days, rate)
})

// TestSnapshotExact runs a traffic script through process A; at a cut,
// A's Shared and Builder write their state, and process B (a fresh Shared
// and Builder, with another hash seed) reads it; then both run the rest of
// the script. Every row after the cut (Updates, re-delivered and
// not-yet-applied Peeks, late events) must be bit-identical, with the same
// LastLate, Late, Cards and entity counts. A process C that starts empty at
// the cut shows that the rows depend on the restored state. The short-TTL
// cases cut while both generations of the expiry maps are populated and
// expire entities after it.
func TestSnapshotExact(t *testing.T) {
	tr := cachedTraffic()
	custom := customSpec()
	short := features.WithTTL(36 * time.Hour)
	for _, tc := range []struct {
		name     string
		opts     []features.Option
		sharedB  []features.Option // extra options of B's Shared
		rotating bool              // entities expire: old generations populated at the cut
	}{
		{"default", nil, nil, false},
		{"default short ttl", []features.Option{short, features.WithStripes(8)}, nil, true},
		{"default zero lateness", []features.Option{features.WithMaxLateness(0)}, nil, false},
		{"default restriped", nil, []features.Option{features.WithStripes(4)}, false},
		{"spec default", []features.Option{features.WithSpecEngine(features.DefaultSpec())}, nil, false},
		{"spec default short ttl", []features.Option{features.WithSpecEngine(features.DefaultSpec()), short}, nil, true},
		{"spec custom", []features.Option{features.WithSpec(custom)}, nil, false},
		{"spec custom short ttl", []features.Option{features.WithSpec(custom), short, features.WithStripes(2)}, nil, true},
		{"spec custom restriped", []features.Option{features.WithSpec(custom), features.WithStripes(16)}, []features.Option{features.WithStripes(128)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newPipe(tc.opts, nil)
			cut := len(tr.ops) * 3 / 5
			for _, o := range tr.ops[:cut] {
				a.do(tr, o)
			}
			if tc.rotating {
				_, oldCards := features.CardGenerations(a.b)
				if oldCards == 0 {
					t.Fatalf("old generation at the cut: %d cards, want > 0", oldCards)
				}
				t.Logf("old generations at the cut: %d cards, %d shared entities", oldCards, features.SharedOld(a.s))
			}
			snap := a.snapshot(t)
			b := newPipe(tc.opts, tc.sharedB)
			b.restore(t, snap)
			c := newPipe(tc.opts, nil)
			checkCounts(t, "after restore", a, b)

			names := a.b.Names()
			rowsA, rowsB := 0, 0
			differC, expired := 0, 0
			maxCards := a.b.Cards()
			for k, o := range tr.ops[cut:] {
				a.do(tr, o)
				b.do(tr, o)
				c.do(tr, o)
				if o.kind == 'l' {
					continue
				}
				rowsA++
				for j := range a.row {
					if math.Float32bits(a.row[j]) != math.Float32bits(b.row[j]) {
						e := &tr.evs[o.i]
						t.Fatalf("op %d after the cut (%c %s card %s terminal %s at %v): %s = %v, restored %v",
							k, o.kind, e.TxID, e.CardID, e.TerminalID, e.TS, names[j], a.row[j], b.row[j])
					}
				}
				rowsB++
				if a.b.LastLate() != b.b.LastLate() {
					t.Fatalf("op %d after the cut: LastLate %v, restored %v", k, a.b.LastLate(), b.b.LastLate())
				}
				if !slices.Equal(a.row, c.row) {
					differC++
				}
				if n := a.b.Cards(); n < maxCards {
					expired++
				} else {
					maxCards = n
				}
			}
			checkCounts(t, "at the end", a, b)
			if differC == 0 {
				t.Error("a Builder starting empty at the cut wrote the same rows: the test checks nothing")
			}
			if tc.rotating && expired == 0 {
				t.Error("no card expired after the cut")
			}
			t.Logf("%d ops, cut at %d, %d rows compared; %d differ from an empty restart; snapshot %d bytes",
				len(tr.ops), cut, rowsA, differC, len(snap))
		})
	}
}

func checkCounts(t *testing.T, when string, a, b *pipe) {
	t.Helper()
	if a.b.Cards() != b.b.Cards() || a.b.Late() != b.b.Late() || features.SharedEntities(a.s) != features.SharedEntities(b.s) {
		t.Fatalf("%s: cards %d, late %d, shared entities %d; restored %d, %d, %d", when,
			a.b.Cards(), a.b.Late(), features.SharedEntities(a.s), b.b.Cards(), b.b.Late(), features.SharedEntities(b.s))
	}
	ca, oa := features.CardGenerations(a.b)
	cb, ob := features.CardGenerations(b.b)
	if ca != cb || oa != ob || features.SharedOld(a.s) != features.SharedOld(b.s) {
		t.Fatalf("%s: card generations %d/%d, shared old %d; restored %d/%d, %d", when, ca, oa, features.SharedOld(a.s), cb, ob, features.SharedOld(b.s))
	}
}

// smallTraffic is a short script for the corruption tests and the fuzzer.
var smallTraffic = sync.OnceValue(func() *traffic { return synthTraffic(9, 40, 3, 0.004) })

// smallSnapshots returns real snapshots (Shared, Builder) of the small
// traffic for opts.
func smallSnapshots(tb testing.TB, opts []features.Option) (shared, builder []byte) {
	tr := smallTraffic()
	p := newPipe(opts, nil)
	for _, o := range tr.ops {
		p.do(tr, o)
	}
	var s, b bytes.Buffer
	if err := p.s.WriteState(&s); err != nil {
		tb.Fatal(err)
	}
	if err := p.b.WriteState(&b); err != nil {
		tb.Fatal(err)
	}
	return s.Bytes(), b.Bytes()
}

// TestReadStateMismatch checks that a snapshot is refused, with an error
// wrapping ErrState that names the difference, by a Builder or Shared with
// other options, and that the receiver is left empty.
func TestReadStateMismatch(t *testing.T) {
	custom := customSpec()
	changed := customSpec()
	changed.Features[3].Window = features.Duration(2 * time.Hour)
	spec := []features.Option{features.WithSpec(custom)}
	for _, tc := range []struct {
		name       string
		write, rd  []features.Option
		shared     bool
		wantSubstr string
	}{
		{"ttl", nil, []features.Option{features.WithTTL(36 * time.Hour)}, false, "ttl differs: snapshot 840h0m0s, this Builder 36h0m0s"},
		{"ttl shared", nil, []features.Option{features.WithTTL(36 * time.Hour)}, true, "ttl differs: snapshot 840h0m0s, this Shared 36h0m0s"},
		{"lateness", nil, []features.Option{features.WithMaxLateness(2 * time.Hour)}, false, "max lateness differs: snapshot 1h0m0s, this Builder 2h0m0s"},
		{"lateness shared", spec, append(slices.Clone(spec), features.WithMaxLateness(0)), true, "max lateness differs"},
		{"spec vs default", nil, spec, false, "spec differs at feature 0 of 24 (39 in the snapshot): snapshot {name=amount_log1p"},
		{"default vs spec", spec, nil, true, "spec differs at feature 0 of 39 (24 in the snapshot)"},
		{"spec window", spec, []features.Option{features.WithSpec(changed)}, false, "spec differs at feature 3 of 24 (24 in the snapshot): snapshot {name=card_sum_1h agg=sum entity=card_id field=amount of= window=1h0m0s"},
		{"engine", nil, []features.Option{features.WithSpecEngine(features.DefaultSpec())}, false, "engine differs: snapshot of the hand-written engine, this Builder runs the spec engine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sharedSnap, builderSnap := smallSnapshots(t, tc.write)
			p := newPipe(tc.rd, nil)
			for _, o := range smallTraffic().ops[:200] { // some state, to be dropped
				p.do(smallTraffic(), o)
			}
			var err error
			if tc.shared {
				err = p.s.ReadState(bytes.NewReader(sharedSnap))
			} else {
				err = p.b.ReadState(bytes.NewReader(builderSnap))
			}
			if !errors.Is(err, features.ErrState) || !strings.Contains(err.Error(), tc.wantSubstr) {
				t.Fatalf("got %v, want an ErrState containing %q", err, tc.wantSubstr)
			}
			checkEmpty(t, p, tc.shared)
		})
	}

	sharedSnap, builderSnap := smallSnapshots(t, nil)
	p := newPipe(nil, nil)
	version := slices.Clone(builderSnap)
	version[8]++
	v1 := slices.Clone(sharedSnap) // the format before labels carried their transaction's time
	v1[8], v1[9] = 1, 0
	for _, tc := range []struct {
		name string
		read func() error
		want string
	}{
		{"builder snapshot into a Shared", func() error { return p.s.ReadState(bytes.NewReader(builderSnap)) }, "snapshot of a Builder, want a Shared"},
		{"shared snapshot into a Builder", func() error { return p.b.ReadState(bytes.NewReader(sharedSnap)) }, "snapshot of a Shared, want a Builder"},
		{"not a snapshot", func() error { return p.b.ReadState(strings.NewReader(`{"tx_id":"t-1"}`)) }, "not a features state snapshot"},
		{"empty", func() error { return p.b.ReadState(strings.NewReader("")) }, "truncated (at byte 0)"},
		{"version", func() error { return p.b.ReadState(bytes.NewReader(version)) }, "format version 3, this build reads version 2"},
		{"version 1", func() error { return p.s.ReadState(bytes.NewReader(v1)) }, "format version 1, this build reads version 2: its fraud labels lack their transaction's time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.read(); !errors.Is(err, features.ErrState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrState containing %q", err, tc.want)
			}
		})
	}
}

func checkEmpty(t *testing.T, p *pipe, shared bool) {
	t.Helper()
	if shared {
		if n := features.SharedEntities(p.s); n != 0 {
			t.Fatalf("Shared holds %d entities after a failed ReadState", n)
		}
		return
	}
	if p.b.Cards() != 0 || p.b.Late() != 0 {
		t.Fatalf("Builder holds %d cards (late %d) after a failed ReadState", p.b.Cards(), p.b.Late())
	}
}

// TestReadStateCorrupt truncates real snapshots at many offsets and flips
// bits at many offsets: every case must fail with an error wrapping
// ErrState (no panic), leaving the receiver empty. With the checksum
// recomputed after the flip, ReadState may succeed (a flipped amount is
// still a state), but then the state must score events without panicking.
func TestReadStateCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []features.Option
	}{
		{"default", nil},
		{"spec custom", []features.Option{features.WithSpec(customSpec())}},
	} {
		sharedSnap, builderSnap := smallSnapshots(t, tc.opts)
		for _, shared := range []bool{false, true} {
			snap := builderSnap
			name := tc.name + "/builder"
			if shared {
				snap, name = sharedSnap, tc.name+"/shared"
			}
			t.Run(name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(len(snap)), 5))
				p := newPipe(tc.opts, nil)
				read := func(data []byte) error {
					if shared {
						return p.s.ReadState(bytes.NewReader(data))
					}
					return p.b.ReadState(bytes.NewReader(data))
				}
				if err := read(snap); err != nil {
					t.Fatalf("intact snapshot: %v", err)
				}
				offsets := map[int]bool{}
				for i := range min(len(snap), 96) {
					offsets[i] = true
					offsets[len(snap)-1-i] = true
				}
				for range 400 {
					offsets[rng.IntN(len(snap))] = true
				}
				t.Logf("%d bytes, %d offsets", len(snap), len(offsets))
				accepted := 0
				for off := range offsets {
					if off%7 == 0 { // refill, to check that a failed read empties
						if err := read(snap); err != nil {
							t.Fatal(err)
						}
					}
					if err := read(snap[:off]); !errors.Is(err, features.ErrState) {
						t.Fatalf("truncated at %d of %d: got %v, want ErrState", off, len(snap), err)
					}
					checkEmpty(t, p, shared)
					bad := slices.Clone(snap)
					bad[off] ^= 1 << rng.IntN(8)
					if err := read(bad); !errors.Is(err, features.ErrState) {
						t.Fatalf("bit flipped at %d of %d: got %v, want ErrState", off, len(snap), err)
					}
					checkEmpty(t, p, shared)
					if len(bad) >= 4 {
						fixCRC(bad)
						if err := read(bad); err == nil {
							accepted++
							score(p, smallTraffic())
						} else if !errors.Is(err, features.ErrState) {
							t.Fatalf("bit flipped at %d, checksum fixed: got %v, want nil or ErrState", off, err)
						}
					}
				}
				t.Logf("%d of %d flips with a fixed checksum accepted", accepted, len(offsets))
			})
		}
	}
}

// fixCRC recomputes a snapshot's trailing checksum.
func fixCRC(b []byte) {
	n := len(b) - 4
	binary.LittleEndian.PutUint32(b[n:], crc32.Checksum(b[:n], crc32.MakeTable(crc32.Castagnoli)))
}

// score runs some Updates and Peeks of tr on p and checks rows are finite.
func score(p *pipe, tr *traffic) {
	for i := range min(len(tr.evs), 60) {
		e := &tr.evs[(i*37)%len(tr.evs)]
		p.b.Peek(e, p.row)
		p.b.Update(e, p.row)
		for _, v := range p.row {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				panic(fmt.Sprintf("non-finite feature %v", v))
			}
		}
	}
}

// FuzzReadState feeds arbitrary bytes to ReadState (of a Builder or a
// Shared, hand-written or spec engine), as they are and with their
// checksum fixed (to get past it into the structure checks): ReadState must
// return nil or an error wrapping ErrState, never panic, and a state it
// accepts must score events without panicking. The seeds are small real
// snapshots (two stripes, a few dozen events: about 1-3 KB), so that the
// fuzzer mutates and minimizes them quickly.
func FuzzReadState(f *testing.F) {
	optSets := [][]features.Option{{features.WithStripes(2)}, {features.WithSpec(customSpec()), features.WithStripes(2)}}
	for k, opts := range optSets {
		s, b := smallSnapshotsTiny(f, opts)
		f.Add(s, uint8(2*k+1), false)
		f.Add(b, uint8(2*k), false)
		f.Add(s[:len(s)/2], uint8(2*k+1), true)
	}
	tr := smallTraffic()
	f.Fuzz(func(t *testing.T, data []byte, which uint8, fix bool) {
		opts := optSets[int(which/2)%len(optSets)]
		shared := which%2 == 1
		if fix && len(data) >= 4 {
			data = slices.Clone(data)
			fixCRC(data)
		}
		p := newPipe(opts, nil)
		var err error
		if shared {
			err = p.s.ReadState(bytes.NewReader(data))
		} else {
			err = p.b.ReadState(bytes.NewReader(data))
		}
		if err != nil {
			if !errors.Is(err, features.ErrState) {
				t.Fatalf("error not wrapping ErrState: %v", err)
			}
			checkEmpty(t, p, shared)
			return
		}
		score(p, tr)
	})
}

// smallSnapshotsTiny is smallSnapshots over the first 60 operations.
func smallSnapshotsTiny(tb testing.TB, opts []features.Option) (shared, builder []byte) {
	tr := smallTraffic()
	p := newPipe(opts, nil)
	for _, o := range tr.ops[:min(60, len(tr.ops))] {
		p.do(tr, o)
	}
	var s, b bytes.Buffer
	if err := p.s.WriteState(&s); err != nil {
		tb.Fatal(err)
	}
	if err := p.b.WriteState(&b); err != nil {
		tb.Fatal(err)
	}
	return s.Bytes(), b.Bytes()
}

// TestWriteStateError checks that a failing writer's error is returned
// wrapped, and that ReadState passes on a reader's own error (not ErrState).
func TestWriteStateError(t *testing.T) {
	p := newPipe(nil, nil)
	tr := smallTraffic()
	for _, o := range tr.ops {
		p.do(tr, o)
	}
	boom := errors.New("disk full")
	bsize, ssize := &countWriter{}, &countWriter{}
	if p.b.WriteState(bsize) != nil || p.s.WriteState(ssize) != nil {
		t.Fatal("WriteState failed")
	}
	for _, limit := range []int{0, 5, 100, int(min(bsize.n, ssize.n)) - 1} {
		if err := p.b.WriteState(&failWriter{n: limit, err: boom}); !errors.Is(err, boom) {
			t.Errorf("Builder.WriteState to a writer failing after %d bytes: %v", limit, err)
		}
		if err := p.s.WriteState(&failWriter{n: limit, err: boom}); !errors.Is(err, boom) {
			t.Errorf("Shared.WriteState to a writer failing after %d bytes: %v", limit, err)
		}
	}
	_, snap := smallSnapshots(t, nil)
	err := p.b.ReadState(io.MultiReader(bytes.NewReader(snap[:100]), iotestErr{boom}))
	if !errors.Is(err, boom) || errors.Is(err, features.ErrState) {
		t.Errorf("reader failing: got %v, want %v and not ErrState", err, boom)
	}
	checkEmpty(t, p, false)
}

type failWriter struct {
	n   int
	err error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// benchState returns a Builder holding 100,000 cards (30 days of synth
// traffic, ~10 events per card), built once per engine.
var benchState = sync.OnceValue(func() map[string]*pipe {
	tr := synthTraffic(1, 100_000, 30, 0.4)
	out := map[string]*pipe{}
	for name, opts := range map[string][]features.Option{
		"default": nil,
		"spec":    {features.WithSpecEngine(features.DefaultSpec())},
	} {
		p := newPipe(opts, nil)
		for _, o := range tr.ops {
			if o.kind != 'p' {
				p.do(tr, o)
			}
		}
		out[name] = p
	}
	return out
})

// BenchmarkWriteState reports the size and the time per card of a
// Builder's snapshot of 100,000 cards (go test -run '^$' -bench State
// ./features/).
func BenchmarkWriteState(b *testing.B) {
	for _, name := range []string{"default", "spec"} {
		b.Run(name+"/100k", func(b *testing.B) {
			p := benchState()[name]
			cards := p.b.Cards()
			var size int64
			b.ReportAllocs()
			for b.Loop() {
				cw := &countWriter{}
				if err := p.b.WriteState(cw); err != nil {
					b.Fatal(err)
				}
				size = cw.n
			}
			b.SetBytes(size)
			b.ReportMetric(float64(cards), "cards")
			b.ReportMetric(float64(size)/float64(cards), "bytes/card")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(cards), "ns/card")
		})
	}
}

// BenchmarkReadState is BenchmarkWriteState for ReadState.
func BenchmarkReadState(b *testing.B) {
	for _, name := range []string{"default", "spec"} {
		b.Run(name+"/100k", func(b *testing.B) {
			p := benchState()[name]
			cards := p.b.Cards()
			var buf bytes.Buffer
			if err := p.b.WriteState(&buf); err != nil {
				b.Fatal(err)
			}
			snap := buf.Bytes()
			q := newPipe(nil, nil)
			if name == "spec" {
				q = newPipe([]features.Option{features.WithSpecEngine(features.DefaultSpec())}, nil)
			}
			b.SetBytes(int64(len(snap)))
			b.ReportAllocs()
			for b.Loop() {
				if err := q.b.ReadState(bytes.NewReader(snap)); err != nil {
					b.Fatal(err)
				}
			}
			if q.b.Cards() != cards {
				b.Fatalf("read %d cards, want %d", q.b.Cards(), cards)
			}
			b.ReportMetric(float64(len(snap))/float64(cards), "bytes/card")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(cards), "ns/card")
		})
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// TestSharedWriteStateConcurrent writes a Shared's state while two workers
// update it and labels arrive (run with -race): WriteState must not race,
// and what it writes must read back (a valid, if not consistent, cut).
func TestSharedWriteStateConcurrent(t *testing.T) {
	tr := smallTraffic()
	for _, opts := range [][]features.Option{nil, {features.WithSpec(customSpec()), features.WithStripes(4)}} {
		s := features.MustShared(opts...)
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := features.MustBuilder(s, opts...)
				row := make([]float32, b.Width())
				for _, o := range tr.ops {
					switch {
					case o.kind == 'l' && w == 0:
						s.ApplyLabel(&tr.labels[o.i])
					case o.kind == 'u' && o.i%2 == w:
						b.Update(&tr.evs[o.i], row)
					}
				}
			}()
		}
		var snaps [][]byte
		for range 5 {
			var buf bytes.Buffer
			if err := s.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, buf.Bytes())
		}
		wg.Wait()
		for i, snap := range snaps {
			if err := features.MustShared(opts...).ReadState(bytes.NewReader(snap)); err != nil {
				t.Fatalf("snapshot %d: %v", i, err)
			}
		}
	}
}
