package features

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
)

// This file is the spec-driven engine (WithSpec): a compiled Spec, the
// per-entity state it keeps, and the Update, Peek and ApplyLabel paths over
// it. Its windowed state is xseries (series, plus a tag per point for
// distinct counts: the same code), its windows are ordered as the hand-written
// Builder's (orderWindows), and its feature formulas are those of builder.go,
// so that DefaultSpec produces the hand-written Builder's rows bit for bit
// (TestSpecDefaultMatchesBuilder).

// fieldID names a string field of Event.
type fieldID uint8

const (
	sfCard fieldID = iota
	sfTerminal
	sfCurrency
	sfMCC
	sfChannel
	sfCountry
)

func fieldIDOf(name string) fieldID {
	return fieldID(slices.Index(stringFields, name))
}

func (f fieldID) of(e *Event) string {
	switch f {
	case sfCard:
		return e.CardID
	case sfTerminal:
		return e.TerminalID
	case sfCurrency:
		return e.Currency
	case sfMCC:
		return e.MCC
	case sfChannel:
		return e.Channel
	default:
		return e.Country
	}
}

// required reports whether the Decoder guarantees the field is non-empty.
func (f fieldID) required() bool { return f == sfCard || f == sfTerminal }

type featKind uint8

const (
	kValue featKind = iota
	kCount
	kSum
	kMean
	kMin
	kMax
	kStd
	kDistinct
	kLast
	kSince
	kRatio
	kZScore
	kChanged
	kGeo
	kFraudCount
	kFraudRate
	kHourSin
	kHourCos
	kWeekend
	kNight
)

var kinds = map[string]featKind{
	AggValue: kValue, AggCount: kCount, AggSum: kSum, AggMean: kMean, AggMin: kMin, AggMax: kMax,
	AggStd: kStd, AggDistinct: kDistinct, AggLast: kLast, AggSincePrev: kSince, AggRatio: kRatio,
	AggZScore: kZScore, AggChanged: kChanged, AggGeoVelocity: kGeo, AggFraudCount: kFraudCount,
	AggFraudRate: kFraudRate, AggHourSin: kHourSin, AggHourCos: kHourCos, AggWeekend: kWeekend, AggNight: kNight,
}

// cfeat is one compiled feature.
type cfeat struct {
	kind   featKind
	ent    int // index in compiledSpec.ents, -1 for value and calendar features
	win    int // index in the entity's wins, -1 when not windowed
	w      window
	log1p  bool
	cap    int
	field  fieldID // changed
	slot   int     // changed: index in entState.strs
	head   int     // since, changed, geo: index in entState.headVals; else -1
	tile   int     // tiled window: index in the entity's tiled; else -1
	night  int
	txTime bool // fraud_count, fraud_rate: labels placed by transaction time
}

// cent is one compiled entity: a field keying state, the windows of its
// features (distinct, in order of first use: the running aggregates of its
// xseries) and where its state lives.
type cent struct {
	field  fieldID
	local  bool // card_id: state owned by the Builder; else in the Shared
	wins   []window
	nSum   int       // wins[:nSum] keep running sums; the others only counts
	tiled  []tileDef // tiled windows (features with tiles), distinct
	span   int64     // longest offset+length, tiled windows included
	pspan  int64     // longest offset+length of wins: the history its xseries keeps
	hasOf  bool
	of     fieldID
	feats  []int // its features, in row order
	chg    []int // its changed features
	heads  []int // its since, changed and geo features
	nStrs  int   // changed features
	nHead  int   // since, changed and geo features
	geo    bool
	labels bool // has fraud features
	txTime bool // has fraud features placing labels by transaction time
	keepTx bool // keeps its transactions' ids (entState.txs): ApplyLabel finds tx times there
	smap   int  // index of its map in the Shared (non-local entities), else -1
	lmap   int  // index of the Shared map holding its labels, else -1
}

// smapDef is one map of entity states per stripe of a Shared: a non-local
// entity's states (series and labels), or the labels of the local (card)
// entity.
type smapDef struct {
	ent    int // the entity whose states (or labels, for the local one) it holds
	field  fieldID
	span   int64
	labels bool
}

// compiledSpec is a validated Spec ready to run. Immutable.
type compiledSpec struct {
	spec   Spec
	names  []string
	feats  []cfeat
	ents   []cent
	local  int // index of the card_id entity, -1 if none
	smaps  []smapDef
	nWins  int // most windows of any entity
	nTiled int // most tiled windows of any entity
	// needTx: some entity places fraud labels by transaction time; txMap
	// is the smap of the terminal_id entity (which keeps its transactions'
	// ids for labels without tx_ts), -1 if the spec has none.
	needTx bool
	txMap  int
	txSpan int64 // longest offset+window of the transaction-time fraud features
}

func compileSpec(s *Spec) (*compiledSpec, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	cs := &compiledSpec{spec: Spec{Features: slices.Clone(s.Features)}, names: s.Names(), local: -1, txMap: -1}
	for i := range cs.spec.Features { // spell out defaults, so that equal specs compare equal
		f := &cs.spec.Features[i]
		if f.Agg == AggNight && f.NightHour == nil {
			v := DefaultNightHour
			f.NightHour = &v
		}
		if f.Agg == AggDistinct && f.Cap == nil {
			v := DefaultDistinctCap
			f.Cap = &v
		}
		if f.txTime() {
			f.LabelTime = LabelTimeTransaction
		}
	}
	entOf := map[fieldID]int{}
	for i, f := range s.Features {
		cf := cfeat{kind: kinds[f.Agg], ent: -1, win: -1, head: -1, tile: -1, log1p: f.Transform == "log1p", night: DefaultNightHour}
		if f.NightHour != nil {
			cf.night = *f.NightHour
		}
		if f.Entity != "" {
			id := fieldIDOf(f.Entity)
			ei, ok := entOf[id]
			if !ok {
				ei = len(cs.ents)
				entOf[id] = ei
				cs.ents = append(cs.ents, cent{field: id, local: id == sfCard, smap: -1, lmap: -1})
				if id == sfCard {
					cs.local = ei
				}
			}
			cf.ent = ei
			en := &cs.ents[ei]
			en.feats = append(en.feats, i)
			if f.Window > 0 && f.Tiles > 0 {
				cf.w = window{offset: int64(f.Offset), length: int64(f.Window)}
				td := tileDef{w: cf.w, n: f.Tiles, width: int64(f.Window) / int64(f.Tiles)}
				cf.tile = slices.Index(en.tiled, td)
				if cf.tile < 0 {
					cf.tile = len(en.tiled)
					en.tiled = append(en.tiled, td)
				}
			} else if f.Window > 0 {
				cf.w = window{offset: int64(f.Offset), length: int64(f.Window)}
				cf.win = slices.Index(en.wins, cf.w)
				if cf.win < 0 {
					cf.win = len(en.wins)
					en.wins = append(en.wins, cf.w)
				}
			}
			switch cf.kind {
			case kDistinct:
				en.hasOf, en.of = true, fieldIDOf(f.Of)
				cf.cap = DefaultDistinctCap
				if f.Cap != nil {
					cf.cap = *f.Cap
				}
			case kChanged:
				cf.field = fieldIDOf(f.Field)
				cf.slot = en.nStrs
				en.chg = append(en.chg, i)
				en.nStrs++
			case kGeo:
				en.geo = true
			case kFraudCount, kFraudRate:
				en.labels = true
				cf.txTime = f.txTime()
				en.txTime = en.txTime || cf.txTime
				cs.needTx = cs.needTx || cf.txTime
				if cf.txTime {
					cs.txSpan = max(cs.txSpan, int64(f.Offset+f.Window))
				}
			}
			if cf.kind == kSince || cf.kind == kChanged || cf.kind == kGeo {
				cf.head = en.nHead
				en.nHead++
				en.heads = append(en.heads, i)
			}
		}
		cs.feats = append(cs.feats, cf)
	}
	for i := range cs.ents {
		en := &cs.ents[i]
		en.keepTx = cs.needTx && en.field == sfTerminal
		en.orderWindows(cs.feats)
		en.pspan = maxSpan(en.wins)
		en.span = en.pspan
		for _, td := range en.tiled {
			en.span = max(en.span, td.w.offset+td.w.length)
		}
		cs.nWins = max(cs.nWins, len(en.wins))
		cs.nTiled = max(cs.nTiled, len(en.tiled))
		if !en.local {
			en.smap = len(cs.smaps)
			en.lmap = -1
			if en.labels {
				en.lmap = en.smap
			}
			if en.keepTx {
				cs.txMap = en.smap
			}
			cs.smaps = append(cs.smaps, smapDef{ent: i, field: en.field, span: en.span, labels: en.labels})
		} else if en.labels {
			en.lmap = len(cs.smaps)
			cs.smaps = append(cs.smaps, smapDef{ent: i, field: en.field, span: en.span, labels: true})
		}
	}
	return cs, nil
}

// needsSums reports whether a feature of kind k reads its window's running
// sums (else only the count, or a scan of the window's points).
func (k featKind) needsSums() bool {
	return k == kSum || k == kMean || k == kStd || k == kRatio || k == kZScore
}

// orderWindows puts the entity's windows whose running sums a feature reads
// first and sets nSum: the other windows keep only counts (series). Each
// group stays in order of first use, so the default spec's terminal windows
// are the hand-written Builder's (terminalWindows). Its features' win
// indexes follow.
func (en *cent) orderWindows(feats []cfeat) {
	summed := make([]bool, len(en.wins))
	for _, fi := range en.feats {
		if f := &feats[fi]; f.win >= 0 && f.kind.needsSums() {
			summed[f.win] = true
		}
	}
	order := make([]int, 0, len(en.wins)) // new position -> old index
	for _, want := range []bool{true, false} {
		for k, sum := range summed {
			if sum == want {
				order = append(order, k)
			}
		}
		if want {
			en.nSum = len(order)
		}
	}
	wins := make([]window, len(en.wins))
	moved := make([]int, len(en.wins)) // old index -> new position
	for nk, k := range order {
		wins[nk] = en.wins[k]
		moved[k] = nk
	}
	en.wins = wins
	for _, fi := range en.feats {
		if f := &feats[fi]; f.win >= 0 {
			f.win = moved[f.win]
		}
	}
}

// ptsRetain is the history the entity's xseries keeps behind its newest
// event: its exact windows plus the lateness, and at least 1ns so that the
// newest point stays (Peek finds it; since_prev reads it) when every
// windowed feature is tiled.
func (en *cent) ptsRetain(lateness int64) int64 { return max(en.pspan+lateness, 1) }

func sameSpec(a, b *compiledSpec) bool {
	return a == b || (a != nil && b != nil && reflect.DeepEqual(a.spec, b.spec))
}

// entState is the state of one entity of a spec: its xseries, its fraud
// labels (by label time), and its head (newest in-order event): the values
// of its changed fields and position, and the head-dependent features
// Update wrote for it (for Peek).
type entState struct {
	s        xseries
	tl       []tiles      // per tiled window of the entity
	labels   []labelPoint // sorted by ts
	txs      []txPoint    // keepTx: its transactions, sorted by ts (then as applied)
	seen     int64        // newest event time (local) or event or label time (shared)
	strs     []string
	headVals []float32
	lat, lon float64
	hasGeo   bool
	// slot is the CardSlot of a card_id entity's state (see
	// Builder.LastCardSlot); free: 288 bytes are the size class of 280.
	slot CardSlot
	// Inline backing for strs and headVals in the common case (one changed
	// feature, up to four head features): no extra allocation, and no
	// extra cache miss per event.
	strBuf  [1]string
	headBuf [4]float32
}

func (st *entState) lastSeen() int64 { return st.seen }

// txPoint is one transaction of an entity that keeps them (cent.keepTx):
// its time and the hash of its tx id (hashLabelTx).
type txPoint struct {
	ts int64
	tx uint64
}

// fraudIn counts the entity's fraud labels in (from, to]: by label time,
// or, with txTime, by transaction time among the labels known at t
// (label time <= t).
func (st *entState) fraudIn(txTime bool, from, to, t int64) int64 {
	if !txTime {
		return labelsUpTo(st.labels, to) - labelsUpTo(st.labels, from)
	}
	// A label's transaction precedes it (txTs <= ts): only labels with ts
	// in (from, t] can count.
	var n int64
	for _, p := range st.labels[labelsUpTo(st.labels, from):labelsUpTo(st.labels, t)] {
		if p.txTs > from && p.txTs <= to {
			n++
		}
	}
	return n
}

// labelIn reports whether p counts in (from, to] at t (entState.fraudIn).
func labelIn(p labelPoint, txTime bool, from, to, t int64) bool {
	if txTime {
		return p.ts <= t && p.txTs > from && p.txTs <= to
	}
	return p.ts > from && p.ts <= to
}

// addTx records a transaction of a keepTx entity, and forgets those at or
// before seen-retain (their labels could count in no window) and, past
// maxPts (> 0), the oldest.
func (st *entState) addTx(t int64, tx uint64, retain int64, maxPts int) {
	horizon := st.seen - retain
	if t > horizon {
		at := len(st.txs)
		for at > 0 && st.txs[at-1].ts > t {
			at--
		}
		st.txs = slices.Insert(st.txs, at, txPoint{ts: t, tx: tx})
	}
	n := 0
	for n < len(st.txs) && st.txs[n].ts <= horizon {
		n++
	}
	if maxPts > 0 {
		n = max(n, len(st.txs)-maxPts)
	}
	if n > 0 {
		st.txs = slices.Delete(st.txs, 0, n)
		if cap(st.txs) > 16 && len(st.txs) < cap(st.txs)/4 {
			st.txs = slices.Clip(slices.Clone(st.txs))
		}
	}
}

// txTime returns the time of the newest retained transaction with tx-id
// hash tx (after seen-retain), or noTxTime; noTxTime too when that time is
// after the label's, at (a label cannot precede its transaction).
func (st *entState) txTime(tx uint64, retain, at int64) int64 {
	horizon := st.seen - retain
	for i := len(st.txs) - 1; i >= 0 && st.txs[i].ts > horizon; i-- {
		if st.txs[i].tx == tx {
			if x := st.txs[i].ts; x <= at {
				return x
			}
			return noTxTime
		}
	}
	return noTxTime
}

// labelsUpTo returns the number of labels with ts <= x (ls sorted by ts):
// a binary search written out, so that it inlines (most terminals have no
// labels, and the default features search three times per event).
func labelsUpTo(ls []labelPoint, x int64) int64 {
	lo, hi := 0, len(ls)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ls[m].ts <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return int64(lo)
}

// evictLabels is terminalState.evictLabels.
func (st *entState) evictLabels(retain int64) {
	horizon := st.seen - retain
	n := 0
	for n < len(st.labels) && st.labels[n].ts <= horizon {
		n++
	}
	if n > 0 {
		st.labels = slices.Delete(st.labels, 0, n)
		if cap(st.labels) > 16 && len(st.labels) < cap(st.labels)/4 {
			st.labels = slices.Clip(slices.Clone(st.labels))
		}
	}
}

// headCtx carries the head-dependent values of one event for one entity.
type headCtx struct {
	counted bool  // the entity's state holds the event (at idx)
	idx     int32 // absolute index of the event's point, when counted
	since   float64
	changed []float64 // per changed slot
	kmh     float64
	useHead bool // Peek of the head: take the remembered values
}

// specShared is the Shared's part for a spec.
type specShared struct {
	cs     *compiledSpec
	retain []int64 // per smap: history kept behind the newest event (labels)
	pts    []int64 // per smap: history its xseries keeps (pspan + lateness)
	// txRetain is the history of transaction ids the terminal keeps
	// behind its newest event (txSpan + lateness): a label's transaction
	// older than that lies in no transaction-time window of any entity.
	txRetain int64
	// cardLabels: some smap holds the card entity's labels.
	cardLabels bool
}

func newSpecShared(cs *compiledSpec, lateness int64) *specShared {
	ss := &specShared{cs: cs, retain: make([]int64, len(cs.smaps)), pts: make([]int64, len(cs.smaps)), txRetain: cs.txSpan + lateness}
	for i, m := range cs.smaps {
		ss.cardLabels = ss.cardLabels || m.field == sfCard
		ss.retain[i] = m.span + lateness
		ss.pts[i] = cs.ents[m.ent].ptsRetain(lateness)
	}
	return ss
}

// labelSide selects the label maps applyLabelSpec updates: all, those of
// the shared entities (terminal_id), or the card's (split.go).
type labelSide uint8

const (
	sideAll labelSide = iota
	sideShared
	sideLocal
)

// has reports whether the side updates the label map m.
func (sd labelSide) has(m *smapDef) bool {
	return sd == sideAll || (m.field == sfCard) == (sd == sideLocal)
}

// applyLabelSpec is ApplyLabel for a spec Shared: the same rules, for the
// label states of each labelled entity (card_id, terminal_id) of side. It
// also returns the transaction time it placed l at (noTxTime: none).
func (s *Shared) applyLabelSpec(l *Label, side labelSide) (placed bool, txT int64) {
	cs := s.sp.cs
	txT = labelTxTime(l, nanos(l.TS))
	placed = true
	needTx := cs.needTx // the shared side resolves tx times for both (ApplyLabelShared)
	if side == sideLocal {
		needTx = false
		for _, m := range cs.smaps {
			needTx = needTx || m.labels && side.has(&m) && cs.ents[m.ent].txTime
		}
	}
	if l.Fraud && needTx && txT == noTxTime {
		if l.TxTS.IsZero() {
			txT = s.findTx(l)
		}
		if txT == noTxTime {
			placed = false
			s.unplaced.Add(1)
		}
	}
	for mi, m := range cs.smaps {
		if !m.labels || !side.has(&m) {
			continue
		}
		id := l.TerminalID
		if m.field == sfCard {
			id = l.CardID
		}
		if id == "" {
			continue
		}
		t := nanos(l.TS)
		if m.field == sfCard {
			s.rekeyLabels(mi, id, l.CardAlias, t)
		}
		h := hashLabelTx(s, l.TxID)
		st := s.stripe(id)
		st.mu.Lock()
		mp := &st.spec[mi]
		mp.tick(t)
		es, ok := mp.get(id)
		if !ok {
			if !l.Fraud {
				st.mu.Unlock()
				continue
			}
			es = newEntState(&s.sp.cs.ents[m.ent]) // as an event would create it
			es.seen = t
			mp.put(id, es)
		}
		i := slices.IndexFunc(es.labels, func(p labelPoint) bool { return p.tx == h })
		switch {
		case !l.Fraud:
			if i >= 0 {
				es.labels = slices.Delete(es.labels, i, i+1)
			}
		case i < 0:
			at := labelsUpTo(es.labels, t)
			es.labels = slices.Insert(es.labels, int(at), labelPoint{ts: t, txTs: txT, tx: h})
			es.seen = max(es.seen, t)
			es.evictLabels(s.sp.retain[mi])
		}
		st.mu.Unlock()
	}
	return placed, txT
}

// findTx returns the time of transaction l.TxID in the retained history
// of l.TerminalID (cs.txMap): its transactions after its newest event
// minus txRetain; or noTxTime.
func (s *Shared) findTx(l *Label) int64 {
	mi := s.sp.cs.txMap
	if mi < 0 || l.TerminalID == "" {
		return noTxTime
	}
	st := s.stripe(l.TerminalID)
	st.mu.Lock()
	defer st.mu.Unlock()
	es, ok := st.spec[mi].peek(l.TerminalID, nanos(l.TS))
	if !ok {
		return noTxTime
	}
	return es.txTime(hashLabelTx(s, l.TxID), s.sp.txRetain, nanos(l.TS))
}

// specBuilder is the Builder's part for a spec: its local (card) entity
// states and the scratch of the entity evaluation (applyEnt, peekEnt,
// evalEnt). A Shared holds one per stripe, without local states, to apply
// and peek its entities under the stripe lock (Shared.Apply, Shared.Peek).
type specBuilder struct {
	cs     *compiledSpec
	shared *Shared              // the Shared of the Builder (or holding the stripe)
	loc    expiryMap[*entState] // local (card_id) entity states; unused in a Shared's
	retain int64                // of the local entity's xseries
	maxPts int32                // WithMaxPoints, for the local entity
	aggs   []agg                // scratch, per window
	taggs  []tileAgg            // scratch, per tiled window
	kmv    []uint64             // scratch, distinct
	chg    []float64            // scratch, changed values
	empty  entState             // scratch: state of an entity not stored
}

func newSpecBuilder(cs *compiledSpec, cfg config, s *Shared) *specBuilder {
	sb := newSpecScratch(cs, s)
	sb.loc = newExpiryMap[*entState](int64(cfg.ttl))
	sb.maxPts = int32(cfg.maxPoints)
	if cs.local >= 0 {
		sb.retain = cs.ents[cs.local].ptsRetain(int64(cfg.lateness))
	}
	return sb
}

// newSpecScratch returns a specBuilder with only the evaluation scratch:
// a Shared's, for its own entities.
func newSpecScratch(cs *compiledSpec, s *Shared) *specBuilder {
	return &specBuilder{cs: cs, shared: s, aggs: make([]agg, cs.nWins), taggs: make([]tileAgg, cs.nTiled)}
}

func (b *Builder) updateSpec(e *Event, row []float32) {
	sb := b.sp
	cs := sb.cs
	row = row[:len(cs.feats)]
	t := nanos(e.TS)
	amt := amount(e)
	sb.loc.tick(t)
	b.rekeyCard(e)
	late := false
	for ei := range cs.ents {
		en := &cs.ents[ei]
		id := en.field.of(e)
		if en.local {
			st, ok := sb.loc.get(id)
			if !ok {
				st = newEntState(en)
				sb.loc.put(id, st)
			}
			b.lastSlot = &st.slot
			late = !sb.applyEnt(en, st, e, t, amt, b.lateness, sb.retain, row) || late
			st.seen = st.s.maxTS
			continue
		}
		if id == "" && !en.field.required() {
			sb.peekEnt(en, nil, e, t, amt, 0, row)
			continue
		}
		late = !b.shared.applyEnt(sb, en, id, e, t, amt, row) || late
	}
	if late {
		b.late++
	}
	b.lastLate = late
	if b.n++; b.n%sweepEvery == 0 {
		b.shared.sweep(b.n/sweepEvery, sb.loc.clock)
	}
	b.globalSpec(e, amt, row)
}

// applyEnt applies e to the state of shared entity en keyed id, under its
// stripe lock, and writes the entity's features with the scratch sb (nil:
// the stripe's). It reports whether e was inserted (false: beyond the max
// lateness).
func (s *Shared) applyEnt(sb *specBuilder, en *cent, id string, e *Event, t int64, amt float64, row []float32) (inserted bool) {
	st := s.stripe(id)
	st.mu.Lock()
	if sb == nil {
		sb = st.sc
	}
	mp := &st.spec[en.smap]
	mp.tick(t)
	es, ok := mp.get(id)
	if !ok {
		es = newEntState(en)
		es.seen = t
		mp.put(id, es)
	}
	es.seen = max(es.seen, t)
	inserted = sb.applyEnt(en, es, e, t, amt, s.lateness, s.sp.pts[en.smap], row)
	if en.keepTx && inserted {
		es.addTx(t, hashLabelTx(s, e.TxID), s.sp.txRetain, s.cfg.maxPoints)
	}
	es.evictLabels(s.sp.retain[en.smap])
	st.mu.Unlock()
	return inserted
}

// peekEnt is applyEnt's read-only counterpart (peekEnt of the entity's
// state under its stripe lock). It reports whether e is not in the state
// and beyond the max lateness.
func (s *Shared) peekEnt(sb *specBuilder, en *cent, id string, e *Event, t int64, amt float64, row []float32) (late bool) {
	st := s.stripe(id)
	st.mu.Lock()
	if sb == nil {
		sb = st.sc
	}
	es, _ := st.spec[en.smap].peek(id, t)
	late = sb.peekEnt(en, es, e, t, amt, s.lateness, row)
	st.mu.Unlock()
	return late
}

func newEntState(en *cent) *entState {
	st := &entState{}
	st.s.tagged = en.hasOf
	if len(en.tiled) > 0 {
		st.tl = make([]tiles, len(en.tiled))
	}
	switch {
	case en.nStrs > len(st.strBuf):
		st.strs = make([]string, en.nStrs)
	case en.nStrs > 0:
		st.strs = st.strBuf[:en.nStrs]
	}
	switch {
	case en.nHead > len(st.headBuf):
		st.headVals = make([]float32, en.nHead)
	case en.nHead > 0:
		st.headVals = st.headBuf[:en.nHead]
	}
	return st
}

// applyEnt inserts e into the entity's state and writes its features; the
// same steps as Update's for a card. It reports whether e was inserted
// (false: more than the lateness behind the entity's newest event).
func (sb *specBuilder) applyEnt(en *cent, st *entState, e *Event, t int64, amt float64, lateness, retain int64, row []float32) bool {
	first := !st.s.has()
	prevTS := st.s.maxTS
	var tag uint64
	if en.hasOf {
		tag = hashString(en.of.of(e))
	}
	maxPts := int32(sb.shared.cfg.maxPoints)
	if en.local {
		maxPts = sb.maxPts
	}
	idx := st.s.add(point{ts: t, amt: amt}, tag, en.wins, en.nSum, lateness, retain, maxPts)
	inserted := idx >= 0
	inOrder := first || t >= prevTS
	if inserted {
		for k := range en.tiled {
			st.tl[k].add(&en.tiled[k], t, amt, st.s.maxTS, lateness)
		}
	}

	hc := headCtx{counted: inserted, idx: idx, since: SinceFirstSeen, changed: sb.chg[:0]}
	switch {
	case first:
	case inOrder:
		hc.since = float64(t-prevTS) / 1e9
	default:
		j := idx - 1
		if !inserted {
			j = st.s.upper(t) - 1
		}
		hc.since = secsSince(&st.s, j, t)
	}
	for range en.nStrs {
		hc.changed = append(hc.changed, 0)
	}
	if inOrder && !first {
		for _, fi := range en.chg {
			f := &sb.cs.feats[fi]
			hc.changed[f.slot] = changedFlag(st.strs[f.slot], f.field.of(e))
		}
		if en.geo && st.hasGeo && e.HasGeo {
			secs := max(float64(t-prevTS)/1e9, 1)
			hc.kmh = haversineKm(st.lat, st.lon, e.Lat, e.Lon) / (secs / 3600)
		}
	}
	sb.evalEnt(en, st, e, t, amt, &hc, row)
	sb.chg = hc.changed[:0]
	if inOrder {
		for _, fi := range en.chg {
			f := &sb.cs.feats[fi]
			if v := f.field.of(e); st.strs[f.slot] != v {
				st.strs[f.slot] = strings.Clone(v)
			}
		}
		for _, fi := range en.heads {
			st.headVals[sb.cs.feats[fi].head] = row[fi]
		}
		if en.geo {
			st.lat, st.lon, st.hasGeo = e.Lat, e.Lon, e.HasGeo
		}
	}
	return inserted
}

func changedFlag(prev, cur string) float64 {
	if prev != "" && cur != "" && prev != cur {
		return 1
	}
	return 0
}

// secsSince returns the seconds from point j (absolute index) to t, or
// SinceFirstSeen when j is not a live point.
func secsSince(s *xseries, j int32, t int64) float64 {
	if j >= s.off && j < int32(len(s.pts)) {
		return float64(t-s.pts[j].ts) / 1e9
	}
	return SinceFirstSeen
}

// peekSpec is Peek for a spec: the rules of Peek, per entity.
func (b *Builder) peekSpec(e *Event, row []float32) {
	sb := b.sp
	cs := sb.cs
	row = row[:len(cs.feats)]
	t := nanos(e.TS)
	amt := amount(e)
	late := false
	for ei := range cs.ents {
		en := &cs.ents[ei]
		id := en.field.of(e)
		if en.local {
			st, ok := peekCard(&sb.loc, e, t)
			if ok && e.CardAlias == "" {
				b.lastSlot = &st.slot
			}
			late = sb.peekEnt(en, st, e, t, amt, b.lateness, row) || late
			continue
		}
		if id == "" && !en.field.required() {
			sb.peekEnt(en, nil, e, t, amt, 0, row)
			continue
		}
		late = b.shared.peekEnt(sb, en, id, e, t, amt, row) || late
	}
	b.lastLate = late
	b.globalSpec(e, amt, row)
}

// peekEnt writes the entity's features of e without changing st (nil: an
// entity with no state). It reports whether e is not in st and is more than
// lateness behind st's newest event (applyEnt would not insert it now).
func (sb *specBuilder) peekEnt(en *cent, st *entState, e *Event, t int64, amt float64, lateness int64, row []float32) (late bool) {
	if st == nil {
		sb.empty = entState{}
		st = &sb.empty
	}
	idx := st.s.find(t, amt)
	hc := headCtx{counted: idx >= 0, idx: idx, since: SinceFirstSeen, changed: sb.chg[:0]}
	for range en.nStrs {
		hc.changed = append(hc.changed, 0)
	}
	switch {
	case st.isHead(sb.cs, en, e, t, amt):
		hc.useHead = true
	case !st.s.has():
	case hc.counted:
		hc.since = secsSince(&st.s, idx-1, t)
	case t >= st.s.maxTS:
		hc.since = float64(t-st.s.maxTS) / 1e9
		for _, fi := range en.chg {
			f := &sb.cs.feats[fi]
			hc.changed[f.slot] = changedFlag(st.strs[f.slot], f.field.of(e))
		}
		if en.geo && st.hasGeo && e.HasGeo {
			secs := max(float64(t-st.s.maxTS)/1e9, 1)
			hc.kmh = haversineKm(st.lat, st.lon, e.Lat, e.Lon) / (secs / 3600)
		}
	default:
		hc.since = secsSince(&st.s, st.s.upper(t)-1, t)
	}
	sb.evalEnt(en, st, e, t, amt, &hc, row)
	sb.chg = hc.changed[:0]
	return !hc.counted && st.s.tooLate(t, lateness)
}

// isHead reports whether e is the entity's head (cardState.isHead): the
// newest in-order event, with e's time, amount, changed fields and position.
func (st *entState) isHead(cs *compiledSpec, en *cent, e *Event, t int64, amt float64) bool {
	s := &st.s
	n := int32(len(s.pts))
	if !s.has() || n <= s.off || t != s.maxTS || s.pts[n-1].ts != t || s.pts[n-1].amt != amt {
		return false
	}
	if en.geo && (e.HasGeo != st.hasGeo || !sameFloat(e.Lat, st.lat) || !sameFloat(e.Lon, st.lon)) {
		return false
	}
	for _, fi := range en.chg {
		if f := &cs.feats[fi]; st.strs[f.slot] != f.field.of(e) {
			return false
		}
	}
	return true
}

// evalEnt writes the features of entity en for e (at t, amount amt) from
// st, read-only; hc says whether st holds e and carries the head-dependent
// values.
func (sb *specBuilder) evalEnt(en *cent, st *entState, e *Event, t int64, amt float64, hc *headCtx, row []float32) {
	aggs := sb.aggs[:len(en.wins)]
	for k, w := range en.wins {
		var a agg
		if st.s.has() {
			a = st.s.at(k, w, t)
		}
		if !hc.counted && w.offset == 0 {
			a.add(amt)
		}
		aggs[k] = a
	}
	taggs := sb.taggs[:len(en.tiled)]
	for k := range en.tiled {
		var a tileAgg
		if st.tl != nil {
			a = st.tl[k].at(&en.tiled[k], t)
		}
		if !hc.counted && en.tiled[k].w.offset == 0 {
			a.addValue(amt)
		}
		taggs[k] = a
	}
	for _, fi := range en.feats {
		f := &sb.cs.feats[fi]
		var a agg
		switch {
		case f.win >= 0:
			a = aggs[f.win]
		case f.tile >= 0:
			a = taggs[f.tile].agg
		}
		cur := !hc.counted && f.w.offset == 0 // e is not in st but is in the window
		if hc.useHead && f.head >= 0 {
			row[fi] = st.headVals[f.head]
			continue
		}
		var v float32
		switch f.kind {
		case kCount:
			v = float32(a.n)
		case kSum:
			v = f32(a.sum)
		case kMean:
			v = f32(a.mean())
		case kStd:
			if a.n > 0 {
				m := a.mean()
				v = f32(math.Sqrt(max(a.sq/float64(a.n)-m*m, 0)))
			}
		case kMin, kMax:
			if f.tile >= 0 {
				if ta := &taggs[f.tile]; ta.n > 0 {
					v = f32(ta.min)
					if f.kind == kMax {
						v = f32(ta.max)
					}
				}
				break
			}
			lo, hi := st.s.window(f.w, t)
			have := cur
			m := amt
			for _, p := range st.s.pts[lo:hi] {
				if !have || (f.kind == kMin && p.amt < m) || (f.kind == kMax && p.amt > m) {
					m, have = p.amt, true
				}
			}
			if have {
				v = f32(m)
			}
		case kLast:
			lo, hi := st.s.window(f.w, t)
			j := hi - 1
			if hc.counted && j == hc.idx {
				j--
			}
			if j >= lo {
				v = f32(st.s.pts[j].amt)
			}
		case kDistinct:
			lo, hi := st.s.window(f.w, t)
			d := newKMV(sb.kmv, f.cap)
			for _, h := range st.s.tags[lo:hi] {
				d.add(h)
			}
			if cur {
				d.add(hashString(en.of.of(e)))
			}
			v = f32(d.count())
			sb.kmv = d.h[:0]
		case kSince:
			s := hc.since
			if s != SinceFirstSeen && f.log1p {
				s = math.Log1p(s)
			}
			v = f32(s)
		case kRatio, kZScore:
			r, z := ratioZValues(a, amt, f.w.offset == 0)
			if f.kind == kRatio {
				v = f32(r)
			} else {
				v = f32(z)
			}
		case kChanged:
			v = float32(hc.changed[f.slot])
		case kGeo:
			v = f32(hc.kmh)
		case kFraudCount, kFraudRate:
			fraud := sb.fraudIn(en, st, e, f.txTime, t-f.w.offset-f.w.length, t-f.w.offset, t)
			if f.kind == kFraudCount {
				v = float32(fraud)
			} else {
				rate := 0.0
				if a.n > 0 {
					rate = min(float64(fraud)/float64(a.n), 1)
				}
				v = f32(rate)
			}
		}
		row[fi] = v
	}
}

// window returns the absolute index range of the live points in w at t.
func (s *xseries) window(w window, t int64) (lo, hi int32) {
	if !s.has() {
		return 0, 0
	}
	return s.upper(t - w.offset - w.length), s.upper(t - w.offset)
}

// fraudIn counts the entity's fraud labels in (from, to] at t
// (entState.fraudIn). A shared entity holds its own labels (the caller
// holds its stripe lock); a local one's are in the Shared.
func (sb *specBuilder) fraudIn(en *cent, st *entState, e *Event, txTime bool, from, to, t int64) int64 {
	if !en.local {
		return st.fraudIn(txTime, from, to, t)
	}
	var buf [8]uint64
	moved := sb.shared.aliasLabels(en.lmap, e, txTime, from, to, t, buf[:0]) // a PAN-key rotation: see rekey.go
	id := en.field.of(e)
	s := sb.shared.stripe(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	ls, ok := s.spec[en.lmap].peek(id, nanos(e.TS))
	var n int64
	if ok {
		n = ls.fraudIn(txTime, from, to, t)
	}
	for _, tx := range moved {
		if !ok || !slices.ContainsFunc(ls.labels, func(p labelPoint) bool { return p.tx == tx }) {
			n++
		}
	}
	return n
}

// ratioZValues returns the ratio and z-score of amt against the events of
// aggregate a other than the current one (a includes it once when withCur):
// ratioZ's formulas.
func ratioZValues(a agg, amt float64, withCur bool) (ratio, z float64) {
	ratio = 1
	n0, sum0, sq0 := a.n, a.sum, a.sq
	if withCur {
		n0 = a.n - 1
	}
	if n0 >= 1 {
		var mean0 float64
		if withCur {
			mean0 = (a.sum - amt) / float64(n0)
		} else {
			mean0 = sum0 / float64(n0)
		}
		ratio = amt / max(mean0, minStd)
		if n0 >= 2 {
			var v float64
			if withCur {
				v = (a.sq-amt*amt)/float64(n0) - mean0*mean0
			} else {
				v = sq0/float64(n0) - mean0*mean0
			}
			z = (amt - mean0) / max(math.Sqrt(max(v, 0)), minStd)
		}
	}
	return ratio, z
}

// globalSpec writes the features without an entity: value and calendar.
func (b *Builder) globalSpec(e *Event, amt float64, row []float32) {
	var u time.Time
	var h int
	var hour float64
	cal := false
	for fi := range b.sp.cs.feats {
		f := &b.sp.cs.feats[fi]
		if f.ent >= 0 {
			continue
		}
		if f.kind != kValue && !cal {
			u = e.TS.UTC()
			hh, m, s := u.Clock()
			h = hh
			hour = float64(hh) + float64(m)/60 + float64(s)/3600
			cal = true
		}
		switch f.kind {
		case kValue:
			v := amt
			if f.log1p {
				v = math.Log1p(v)
			}
			row[fi] = f32(v)
		case kHourSin:
			row[fi] = float32(math.Sin(2 * math.Pi * hour / 24))
		case kHourCos:
			row[fi] = float32(math.Cos(2 * math.Pi * hour / 24))
		case kWeekend:
			row[fi] = flag(u.Weekday() == time.Saturday || u.Weekday() == time.Sunday)
		case kNight:
			row[fi] = flag(h <= f.night)
		}
	}
}

// hashString is a fixed (process-independent) 64-bit hash: FNV-1a, then
// the splitmix64 finalizer so that every bit is uniform (the distinct
// sketch needs uniform values).
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// hashLabelTx is the tx-id hash ApplyLabel uses for duplicates and corrections.
func hashLabelTx(s *Shared, tx string) uint64 { return keyedHash(^s.seed, tx) }

// kmv counts distinct hashes: exactly while there are at most k, then with
// a k-minimum-values sketch: it keeps the k smallest distinct hashes, and
// estimates n ≈ (k-1)·2^64/h_k, h_k the largest kept. The estimate is
// unbiased with relative standard error ≤ 1/sqrt(k-2) (about 3% for the
// default k = 1024). Deterministic for a given input (fixed hash).
type kmv struct {
	h        []uint64 // sorted, distinct
	k        int
	overflow bool
}

func newKMV(buf []uint64, k int) kmv { return kmv{h: buf[:0], k: k} }

func (d *kmv) add(x uint64) {
	i, found := slices.BinarySearch(d.h, x)
	switch {
	case found:
	case len(d.h) < d.k:
		d.h = slices.Insert(d.h, i, x)
	case i < len(d.h):
		d.overflow = true
		copy(d.h[i+1:], d.h[i:len(d.h)-1])
		d.h[i] = x
	default:
		d.overflow = true
	}
}

func (d *kmv) count() float64 {
	if !d.overflow {
		return float64(len(d.h))
	}
	hk := d.h[len(d.h)-1] // the k-th smallest; hk+1 avoids a zero denominator
	return float64(d.k-1) * 0x1p64 / (float64(hk) + 1)
}
