package features

import (
	"slices"
	"time"
)

// This file splits a row in two, for a deployment where the state of the
// shared entities (terminals, and with a spec every entity other than
// card_id) is kept by one stage and card state by another: a terminal
// stage calls Shared.Apply (or Shared.Peek) and forwards the columns it
// wrote (Shared.Columns) with the late flag; the card stage copies them
// into its row and calls Builder.UpdateLocal (or PeekLocal), which writes
// all the other columns. Labels likewise: ApplyLabelShared on the terminal
// stage, which forwards each label with the transaction time it found, and
// ApplyLabelLocal on the card stage's Shared. Applied in the same order,
// the two halves write exactly the row Update (Peek) writes, bit for bit,
// and leave the same state (TestSplitMatchesUpdate).
//
// For rows equal to Replay's, each stage must apply events in CompareEvents
// order and each label where Replay does: after the events with an earlier
// TS, before those at or after its TS, labels by CompareLabels. The label
// rules make rows point-in-time correct whatever that order, but not bit
// for bit: applying a label advances its entity's expiry clock and newest
// time (retention, TTL, cap order) to the label's TS, and a label without
// tx_ts is placed by the terminal history held when it is applied.

// Width returns the number of features in a row of the Shared's spec
// (WithSpec; else the default features): the Width of its Builders.
func (s *Shared) Width() int {
	if s.sp != nil {
		return len(s.sp.cs.feats)
	}
	return width
}

// Columns returns the indexes, in row order, of the columns Apply and Peek
// write: the features of the shared entities (terminal_id, and with a spec
// every entity other than card_id). Builder.UpdateLocal and PeekLocal write
// every other column (card features, amount, calendar). The slice is new
// on each call.
func (s *Shared) Columns() []int {
	var cols []int
	if s.sp == nil {
		for i := range terminalWidth {
			cols = append(cols, offTerminal+i)
		}
		for i := range laggedWidth {
			cols = append(cols, offLagged+i)
		}
		return cols
	}
	cs := s.sp.cs
	for i, f := range cs.feats {
		if f.ent >= 0 && !cs.ents[f.ent].local {
			cols = append(cols, i)
		}
	}
	return slices.Clip(cols)
}

// Apply applies e to the shared entities' state (Update's shared half) and
// writes their columns (Columns) of e's row to row, leaving the others
// untouched. It reports whether e was late for one of them (more than the
// max lateness behind the entity's newest event: scored, not inserted);
// pass that to Builder.UpdateLocal, which counts it in Late and LastLate.
// It panics if len(row) < Width(). Like Update, Apply must be called once
// per event; for a re-delivery use Peek.
//
// Apply paces the sweeps of the shared entities' expiry clocks itself: one
// stripe every 64 events Apply applied, to the newest event time Apply saw
// (Update paces the same sweeps by its Builder's events). These two
// counters are not in the Shared's snapshot: a restored Shared starts them
// afresh, which may release an idle entity at another moment than a Shared
// that never stopped (rows can then differ for an event more than the TTL
// after its entity's previous one).
//
// Apply is safe for concurrent use, like ApplyLabel, and may run
// concurrently with the Builders of the same Shared; but the rows are
// reproducible (equal to Replay's) only when Apply and ApplyLabel are
// called in one total order: events by CompareEvents, each label before
// the events at or after its TS (Replay's order). A Shared fed by Apply
// should not also be fed by Update (each would count its own events and
// apply every shared entity twice).
func (s *Shared) Apply(e *Event, row []float32) (late bool) {
	t := nanos(e.TS)
	amt := amount(e)
	if s.sp != nil {
		row = row[:len(s.sp.cs.feats)]
		for ei := range s.sp.cs.ents {
			en := &s.sp.cs.ents[ei]
			if en.local {
				continue
			}
			id := en.field.of(e)
			if id == "" && !en.field.required() {
				s.peekEmpty(en, e, t, amt, row)
				continue
			}
			late = !s.applyEnt(nil, en, id, e, t, amt, row) || late
		}
	} else {
		row = row[:width]
		late = !s.observe(e.TerminalID, e.TxID, t, amt, row)
	}
	for c := s.clock.Load(); t > c && !s.clock.CompareAndSwap(c, t); c = s.clock.Load() {
	}
	if n := s.applied.Add(1); n%sweepEvery == 0 {
		s.sweepSide(n/sweepEvery, s.clock.Load(), true)
	}
	return late
}

// Peek writes the shared entities' columns of e's row as Apply did when it
// applied e (Builder.Peek's shared half, with Peek's rules), changing
// nothing. It reports whether e is not in one of those entities' states
// and Apply would now find it too late to insert there; pass that to
// Builder.PeekLocal. Safe for concurrent use.
func (s *Shared) Peek(e *Event, row []float32) (late bool) {
	t := nanos(e.TS)
	amt := amount(e)
	if s.sp == nil {
		return s.peek(e.TerminalID, t, amt, row[:width])
	}
	row = row[:len(s.sp.cs.feats)]
	for ei := range s.sp.cs.ents {
		en := &s.sp.cs.ents[ei]
		if en.local {
			continue
		}
		id := en.field.of(e)
		if id == "" && !en.field.required() {
			s.peekEmpty(en, e, t, amt, row)
			continue
		}
		late = s.peekEnt(nil, en, id, e, t, amt, row) || late
	}
	return late
}

// peekEmpty writes the features of an optional entity e does not carry
// (an empty state) with the scratch of stripe 0, under its lock.
func (s *Shared) peekEmpty(en *cent, e *Event, t int64, amt float64, row []float32) {
	st := &s.stripes[0]
	st.mu.Lock()
	st.sc.peekEnt(en, nil, e, t, amt, 0, row)
	st.mu.Unlock()
}

// sweepSide is sweep for one side of a split row: with shared, the maps
// of the shared entities (terminals, a spec's entities other than
// card_id); else the card label maps of a spec. Together they are sweep.
func (s *Shared) sweepSide(i uint64, now int64, shared bool) {
	if !shared && (s.sp == nil || !s.sp.cardLabels) {
		return
	}
	st := &s.stripes[i&uint64(len(s.stripes)-1)]
	st.mu.Lock()
	if shared {
		st.m.tick(now)
	}
	for k := range st.spec {
		if (s.sp.cs.smaps[k].field != sfCard) == shared {
			st.spec[k].tick(now)
		}
	}
	st.mu.Unlock()
}

// UpdateLocal is Update's card half: it applies e to its card's state (and
// moves it on a PAN-key rotation, as Update does) and writes every column
// of e's row but the Shared's (Shared.Columns), which it leaves untouched.
// sharedLate is what Shared.Apply returned for e: UpdateLocal counts e in
// Late, and sets LastLate, when it was late for its card or for a shared
// entity. After Shared.Apply(e, row) then UpdateLocal(e, row, late), on
// the Builder's Shared or on another (see below), row holds exactly
// Update's row, and the Builder's state, Late, LastLate, EvictedCards and
// Rekeyed are Update's. It panics if len(row) < Width().
//
// UpdateLocal touches only the Builder's state and, with a spec that has
// card fraud features, the card labels in the Builder's Shared (under
// their stripe locks, as Update does): it may run in another goroutine
// than Shared.Apply, and the Shared it applies to may be another
// Shared (the card labels then belong to the Builder's, which ApplyLabel
// must feed; a label without TxTS is placed by its terminal's history,
// which only the Shared that holds the terminals has). Like Update, a
// Builder's UpdateLocal must not run concurrently with its other methods.
// A Builder fed by UpdateLocal paces no sweep of terminal state (Shared.Apply
// does); with a spec it sweeps its Shared's card label maps, as Update does.
func (b *Builder) UpdateLocal(e *Event, row []float32, sharedLate bool) {
	if len(b.EvictedCards()) > 0 {
		b.clearEvicted()
	}
	b.lastSlot = nil
	t := nanos(e.TS)
	amt := amount(e)
	late := sharedLate
	if b.sp != nil {
		row = row[:len(b.sp.cs.feats)]
		late = !b.applyLocalSpec(e, t, amt, row) || late
	} else {
		row = row[:width]
		late = !b.applyCard(e, t, amt, row) || late
	}
	if late {
		b.late++
	}
	b.lastLate = late
	if b.n++; b.n%sweepEvery == 0 && b.sp != nil {
		b.shared.sweepSide(b.n/sweepEvery, b.sp.loc.clock, false)
	}
	if b.sp != nil {
		b.globalSpec(e, amt, row)
	} else {
		b.cal.write(e.TS, row)
	}
}

// applyLocalSpec is updateSpec for the local (card) entity only. It
// reports whether e was inserted into its card's state (true without a
// card entity).
func (b *Builder) applyLocalSpec(e *Event, t int64, amt float64, row []float32) (inserted bool) {
	sb := b.sp
	sb.loc.tick(t)
	b.rekeyCard(e)
	if sb.cs.local < 0 {
		return true
	}
	en := &sb.cs.ents[sb.cs.local]
	id := en.field.of(e)
	st, ok := sb.loc.get(id)
	if !ok {
		st = newEntState(en)
		sb.loc.put(id, st)
	}
	b.lastSlot = &st.slot
	inserted = sb.applyEnt(en, st, e, t, amt, b.lateness, sb.retain, row)
	st.seen = st.s.maxTS
	return inserted
}

// PeekLocal is Peek's card half: it writes every column of e's row but the
// Shared's (Shared.Columns) as Peek does, changing nothing. sharedLate is
// what Shared.Peek returned for e; LastLate then reports what it reports
// after Peek. Shared.Peek followed by PeekLocal writes exactly Peek's row.
// Like Peek, not safe for concurrent use with the Builder's other methods.
func (b *Builder) PeekLocal(e *Event, row []float32, sharedLate bool) {
	b.lastSlot = nil
	t := nanos(e.TS)
	amt := amount(e)
	late := sharedLate
	if b.sp == nil {
		row = row[:width]
		late = b.peekCardRow(e, t, amt, row) || late
		b.lastLate = late
		b.cal.write(e.TS, row)
		return
	}
	sb := b.sp
	row = row[:len(sb.cs.feats)]
	if sb.cs.local >= 0 {
		en := &sb.cs.ents[sb.cs.local]
		st, ok := peekCard(&sb.loc, e, t)
		if ok && e.CardAlias == "" {
			b.lastSlot = &st.slot
		}
		late = sb.peekEnt(en, st, e, t, amt, b.lateness, row) || late
	}
	b.lastLate = late
	b.globalSpec(e, amt, row)
}

// ApplyLabelShared is ApplyLabel for the shared half of a split deployment:
// it records l in the labels of the shared entities only (terminal_id; a
// spec's card labels are left to ApplyLabelLocal), and returns, besides
// whether it placed l, l's transaction time as it placed it: l.TxTS, or
// the time of transaction l.TxID found in its terminal's history (zero:
// none). The Shared holding the terminals is the only one that can find
// it, so forward l to the card half with TxTS set to that time: there
// ApplyLabelLocal places it exactly where ApplyLabel on one Shared would
// have. A fraud label that cannot be placed counts in UnplacedLabels (of
// each half that needed it). Safe for concurrent use.
func (s *Shared) ApplyLabelShared(l *Label) (placed bool, txTS time.Time) {
	var txT int64
	if s.sp != nil {
		placed, txT = s.applyLabelSpec(l, sideShared)
	} else {
		placed, txT = s.applyLabelTerminal(l)
	}
	if txT == noTxTime {
		return placed, time.Time{}
	}
	return placed, time.Unix(0, txT).UTC()
}

// ApplyLabelLocal is ApplyLabel for the card half of a split deployment:
// it records l in the card labels only (a spec's card fraud features; the
// default features have none, and nothing is done), moving them on a
// PAN-key rotation as ApplyLabel does. Give it the label as
// ApplyLabelShared forwards it (TxTS set). Safe for concurrent use.
func (s *Shared) ApplyLabelLocal(l *Label) (placed bool) {
	if s.sp == nil {
		return true
	}
	placed, _ = s.applyLabelSpec(l, sideLocal)
	return placed
}

// SharedFields returns the event fields that name the shared entities,
// in the spec's order: terminal_id for the default features; with a spec,
// each entity field other than card_id its features use (none: the spec
// keeps only card state). A deployment that moves the shared state to
// another stage routes each event by these fields (SharedID).
func (s *Shared) SharedFields() []string {
	if s.sp == nil {
		return []string{"terminal_id"}
	}
	var fs []string
	for _, en := range s.sp.cs.ents {
		if !en.local {
			fs = append(fs, stringFields[en.field])
		}
	}
	return fs
}

// SharedID returns e's id for the i-th field of SharedFields ("" when the
// event leaves an optional field empty). It panics if i is out of range.
func (s *Shared) SharedID(e *Event, i int) string {
	if s.sp == nil {
		if i != 0 {
			panic("features: SharedID: index out of range")
		}
		return e.TerminalID
	}
	for _, en := range s.sp.cs.ents {
		if en.local {
			continue
		}
		if i == 0 {
			return en.field.of(e)
		}
		i--
	}
	panic("features: SharedID: index out of range")
}
