package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/streamscore/streamscore/internal/frame"
)

// This file writes and reads state snapshots: Builder.WriteState and
// ReadState (card state), Shared.WriteState and ReadState (terminal state,
// labels, and a spec's shared entity states).
//
// Format (version 2): the container of internal/frame (header, frames of
// at most 64 KiB, end frame, CRC-32C), magic "SSFSTATE", kind 'B'
// (Builder) or 'S' (Shared). The body is one byte stream cut into frames:
// a fingerprint (engine, TTL, max lateness, the canonical form of every
// feature, the window layout of every entity), the state, and a closing
// marker. Framing lets
// ReadState read exactly the snapshot's bytes (no read-ahead past it), so
// snapshots can follow one another in one stream, and bounds what a corrupt
// length can make it read at once. A state is written field by field
// (fixed-width integers, float bits, length-prefixed strings and slices);
// maps are written as their expiry clock and their two generations.

// ErrState is wrapped by every error of ReadState about the snapshot
// itself: not a snapshot, another format version, written by a Builder or
// Shared with other options (the error names the difference), truncated,
// or corrupt (checksum, or a structure no Update could have produced). Other
// errors of the reader are returned wrapped as they are.
var ErrState = errors.New("features: bad state snapshot")

const (
	stateMagic = "SSFSTATE"
	// stateVersion 2: a fraud label carries its transaction's time, and
	// a terminal of a spec counting labels by transaction time its
	// transactions' ids. Version 1 snapshots are refused (ReadState names
	// the reason): their labels lack the transaction time.
	stateVersion = 2
	stateBuilder = 'B'
	stateShared  = 'S'
	stateFrame   = frame.MaxBody // largest frame body
	stateEnd     = 0x21444e45    // "END!", closes the body

	// Limits: a length above one is corrupt. Slices are allocated in chunks
	// as their elements arrive, so a corrupt length below a limit costs at
	// most a chunk more than the bytes actually present.
	maxStateString  = 1 << 20 // an id or a country
	maxStateLen     = 1 << 30 // points, labels or tiles of one entity
	maxStateEntries = 1 << 40 // entities of one map
	maxStateFeats   = 1 << 16 // features of a spec
	stateChunk      = 4096    // elements allocated ahead of the data
	stateMapHint    = 1 << 16 // largest map size hint taken from a snapshot
)

// WriteState writes the Builder's card state to w, in the format ReadState
// reads: every card held (live or awaiting release by the TTL rotation, with
// its generation), the card map's expiry clock, and the counters that pace
// sweeps and count late events; with WithSpec, the spec engine's card_id
// entity states instead. Terminal state is in the Shared: write it with
// Shared.WriteState. WriteState streams through a 64 KiB buffer (the
// snapshot is never held in memory whole); an error of w is returned
// wrapped. Like Update, it must not run concurrently with the Builder's
// other methods.
func (b *Builder) WriteState(w io.Writer) error {
	e := newStateWriter(w, stateBuilder)
	e.fingerprint(b.fingerprint())
	e.u64(b.n)
	e.u64(b.late)
	e.flag(b.lastLate)
	if b.sp == nil {
		writeExpiry(e, &b.cards, func(c *cardState) { e.cardState(c) })
	} else {
		var en *cent
		if cs := b.sp.cs; cs.local >= 0 {
			en = &cs.ents[cs.local]
		}
		writeExpiry(e, &b.sp.loc, func(st *entState) { e.entState(en, st) })
	}
	if err := e.close(); err != nil {
		return fmt.Errorf("write builder state: %w", err)
	}
	return nil
}

// ReadState replaces the Builder's card state with a snapshot written by
// WriteState of a Builder built with the same options (the same spec, or
// none; the same TTL and max lateness). It reads exactly the snapshot's
// bytes from r. Once it returns nil, the Builder writes the rows, and
// expires the cards, that the Builder it was written from would have:
// bit-identical, provided its Shared was restored from the same cut
// (Shared.ReadState).
//
// A restored state holds no more memory than the one written: the evicted
// prefix of each history is not written, slices are allocated to their
// length (points to at least 4) and maps to their entry count.
//
// The Builder's former state is dropped first. On any error the Builder is
// left empty, as new; the error wraps ErrState when the snapshot is at fault
// (a mismatch of options names the difference). Like Update, ReadState must
// not run concurrently with the Builder's other methods.
func (b *Builder) ReadState(r io.Reader) error {
	b.resetState()
	ttl, dropped := b.cardCounts()
	defer b.limitCards(ttl, dropped)
	d := newStateReader(r, stateBuilder)
	d.fingerprint(b.fingerprint(), "Builder")
	n, late, lastLate := d.u64(), d.u64(), d.flag()
	if b.sp == nil {
		b.cards = readExpiryInto(d, b.cards.ttl, "card", func() *cardState { return d.cardState(b.wins) })
	} else {
		cs := b.sp.cs
		var en *cent
		if cs.local >= 0 {
			en = &cs.ents[cs.local]
		}
		b.sp.loc = readExpiryInto(d, b.sp.loc.ttl, "card", func() *entState {
			if en == nil {
				d.fail("card state in a snapshot of a spec without card_id features")
				return nil
			}
			return d.entState(en)
		})
	}
	if err := d.finish(); err != nil {
		b.resetState()
		return fmt.Errorf("read builder state: %w", err)
	}
	b.n, b.late, b.lastLate = n, late, lastLate
	return nil
}

// resetState empties the Builder, as NewBuilder left it.
func (b *Builder) resetState() {
	ttl, dropped := b.cardCounts()
	b.cards = newExpiryMap[*cardState](b.cards.ttl)
	b.n, b.late, b.lastLate, b.lastSlot = 0, 0, false, nil
	if b.sp != nil {
		b.sp.loc = newExpiryMap[*entState](b.sp.loc.ttl)
		b.sp.empty = entState{}
	}
	b.limitCards(ttl, dropped)
}

func (b *Builder) fingerprint() stateFP {
	var cs *compiledSpec
	if b.sp != nil {
		cs = b.sp.cs
	}
	return newStateFP(cs, b.cards.ttl, b.lateness)
}

// WriteState writes the Shared's state to w, in the format ReadState reads:
// every terminal (its transactions and fraud labels) or, with WithSpec,
// every state of the spec's entities other than card_id and the labels of
// card_id; each stripe's expiry clocks and generations; and the key of its
// id hashes. It locks each stripe in turn while writing it (workers touching
// that stripe wait for it), so it is safe for concurrent use, but only a
// Shared that no Builder or ApplyLabel changes meanwhile gives a consistent
// cut: the caller pauses them. It streams like Builder.WriteState.
func (s *Shared) WriteState(w io.Writer) error {
	e := newStateWriter(w, stateShared)
	e.fingerprint(s.fingerprint())
	e.u64(s.seed)
	e.u32(uint32(len(s.stripes)))
	var maps []smapDef
	if s.sp != nil {
		maps = s.sp.cs.smaps
	}
	e.u32(uint32(len(maps)))
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		writeExpiry(e, &st.m, func(t *terminalState) { e.terminalState(t) })
		for k, m := range maps {
			en := &s.sp.cs.ents[m.ent]
			writeExpiry(e, &st.spec[k], func(es *entState) { e.entState(en, es) })
		}
		st.mu.Unlock()
		if e.err != nil {
			break
		}
	}
	if err := e.close(); err != nil {
		return fmt.Errorf("write shared state: %w", err)
	}
	return nil
}

// ReadState replaces the Shared's state with a snapshot written by
// WriteState of a Shared built with the same options (the same spec, or
// none; the same TTL and max lateness; the stripe count may differ). It
// reads exactly the snapshot's bytes from r. The Shared adopts the
// snapshot's hash key, so with the same stripe count every entity returns to
// its stripe, with that stripe's expiry clock, and the rows its Builders
// write are bit-identical to those of the Shared it was written from. With
// another stripe count, entities are re-hashed into the new stripes, whose
// expiry clocks all take the newest clock and latest rotation of the old
// ones: rows stay identical except that an idle entity may expire at a
// slightly different event time (state idle for more than the TTL is
// still never used).
//
// The former state is dropped first. On any error the Shared is left empty
// (its hash key unchanged); the error wraps ErrState when the snapshot is at
// fault. ReadState must not run concurrently with any other use of the
// Shared or of its Builders: restore before starting them.
func (s *Shared) ReadState(r io.Reader) error {
	s.resetState()
	if err := s.readState(r); err != nil {
		s.resetState()
		return fmt.Errorf("read shared state: %w", err)
	}
	return nil
}

// sharedMaps is the content of one stripe being read.
type sharedMaps struct {
	m    expiryMap[*terminalState]
	spec []expiryMap[*entState]
}

func (s *Shared) readState(r io.Reader) error {
	d := newStateReader(r, stateShared)
	d.fingerprint(s.fingerprint(), "Shared")
	seed := d.u64()
	nStripes := int(d.u32())
	nMaps := int(d.u32())
	var maps []smapDef
	if s.sp != nil {
		maps = s.sp.cs.smaps
	}
	switch {
	case d.err != nil:
		return d.err
	case nStripes < 1 || nStripes > 4096 || nStripes&(nStripes-1) != 0:
		d.fail("%d stripes", nStripes)
		return d.err
	case nMaps != len(maps):
		d.fail("%d entity maps per stripe, want %d", nMaps, len(maps))
		return d.err
	}
	ttl := int64(s.cfg.ttl)
	fresh := make([]sharedMaps, len(s.stripes))
	for i := range fresh {
		fresh[i].m = newExpiryMap[*terminalState](ttl)
		fresh[i].spec = make([]expiryMap[*entState], len(maps))
		for k := range maps {
			fresh[i].spec[k] = newExpiryMap[*entState](ttl)
		}
	}
	mask := uint64(len(s.stripes) - 1)
	same := nStripes == len(s.stripes)
	// The clocks of the maps read, merged (re-hashing), per map kind.
	merged := make([]expiryMeta, 1+len(maps))
	for i := 0; i < nStripes && d.err == nil; i++ {
		for k := 0; k <= len(maps) && d.err == nil; k++ {
			meta, nCur, nOld := d.expiryHead()
			what := "terminal"
			if k > 0 {
				what = stringFields[maps[k-1].field]
			}
			place := func(id string) (j int, ok bool) {
				j = int(keyedHash(seed, id) & mask)
				if same && j != i {
					d.fail("%s %q in stripe %d, its hash puts it in %d", what, id, i, j)
					return 0, false
				}
				return j, true
			}
			if k == 0 {
				readExpiryEntries(d, nCur, nOld, what, func() *terminalState { return d.terminalState(s.wins) },
					func(old bool, id string, v *terminalState) {
						if j, ok := place(id); ok {
							putGen(d, &fresh[j].m, old, id, v, what)
						}
					})
			} else {
				en := &s.sp.cs.ents[maps[k-1].ent]
				readExpiryEntries(d, nCur, nOld, what, func() *entState { return d.entState(en) },
					func(old bool, id string, v *entState) {
						if j, ok := place(id); ok {
							putGen(d, &fresh[j].spec[k-1], old, id, v, what)
						}
					})
			}
			if same {
				if k == 0 {
					fresh[i].m.setMeta(meta)
				} else {
					fresh[i].spec[k-1].setMeta(meta)
				}
			} else {
				merged[k] = merged[k].merge(meta)
			}
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	if !same {
		for i := range fresh {
			fresh[i].m.setMeta(merged[0])
			for k := range fresh[i].spec {
				fresh[i].spec[k].setMeta(merged[k+1])
			}
		}
	}
	s.seed = seed
	s.applied.Store(0) // Apply's sweep pacing starts afresh (split.go)
	s.clock.Store(0)
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		fresh[i].m.droppedTTL, fresh[i].m.droppedCap = st.m.droppedTTL, st.m.droppedCap
		st.m = fresh[i].m
		if s.sp != nil {
			for k := range st.spec {
				fresh[i].spec[k].droppedTTL, fresh[i].spec[k].droppedCap = st.spec[k].droppedTTL, st.spec[k].droppedCap
			}
			st.spec = fresh[i].spec
		}
		s.limitStripe(st)
		st.mu.Unlock()
	}
	return nil
}

// resetState empties every stripe, as NewShared left it (the hash key is
// kept).
func (s *Shared) resetState() {
	ttl := int64(s.cfg.ttl)
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		m := newExpiryMap[*terminalState](ttl)
		m.droppedTTL, m.droppedCap = st.m.droppedTTL, st.m.droppedCap
		st.m = m
		for k := range st.spec {
			e := newExpiryMap[*entState](ttl)
			e.droppedTTL, e.droppedCap = st.spec[k].droppedTTL, st.spec[k].droppedCap
			st.spec[k] = e
		}
		s.limitStripe(st)
		st.mu.Unlock()
	}
}

func (s *Shared) fingerprint() stateFP {
	var cs *compiledSpec
	if s.sp != nil {
		cs = s.sp.cs
	}
	return newStateFP(cs, int64(s.cfg.ttl), s.lateness)
}

// stateFP is what a state depends on besides the events: a snapshot is
// read only by a Builder or Shared with the same fingerprint.
type stateFP struct {
	engine        uint8 // 0: the hand-written Builder, 1: the spec engine
	ttl, lateness int64
	feats         []string // canonical form of each feature, row order
	layout        string   // the windows and state slots of every entity
}

func newStateFP(cs *compiledSpec, ttl, lateness int64) stateFP {
	fp := stateFP{ttl: ttl, lateness: lateness}
	spec := cs
	if cs == nil {
		spec = defaultCompiled()
		fp.layout = fmt.Sprintf("card_id wins=%v sums=%d; terminal_id wins=%v sums=%d lagged=%v",
			cardWindows, len(cardWindows), terminalWindows, terminalSummed, lagWindows)
	} else {
		fp.engine = 1
		var b strings.Builder
		for _, en := range cs.ents {
			fmt.Fprintf(&b, "%s local=%v wins=%v sums=%d tiled=%v of=%v/%d strs=%d heads=%d geo=%v labels=%v maps=%d/%d; ",
				stringFields[en.field], en.local, en.wins, en.nSum, en.tiled, en.hasOf, en.of, en.nStrs, en.nHead,
				en.geo, en.labels, en.smap, en.lmap)
		}
		fp.layout = b.String()
	}
	for _, f := range spec.spec.Features {
		fp.feats = append(fp.feats, canonicalFeature(&f))
	}
	return fp
}

// canonicalFeature is f with every field spelled out (defaults included).
func canonicalFeature(f *FeatureSpec) string {
	opt := func(p *int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("name=%s agg=%s entity=%s field=%s of=%s window=%s offset=%s cap=%s transform=%s night_hour=%s tiles=%d",
		f.Name, f.Agg, f.Entity, f.Field, f.Of, f.Window, f.Offset, opt(f.Cap), f.Transform, opt(f.NightHour), f.Tiles)
}

func engineName(e uint8) string {
	switch e {
	case 0:
		return "hand-written engine"
	case 1:
		return "spec engine"
	}
	return fmt.Sprintf("engine %d", e)
}

// expiryMeta is an expiryMap's clock.
type expiryMeta struct {
	started         bool
	clock, rotateAt int64
}

func (m *expiryMap[V]) setMeta(x expiryMeta) {
	m.started, m.clock, m.rotateAt = x.started, x.clock, x.rotateAt
}

// merge returns the clock of a map holding the entries of maps with
// clocks a and x: the newest clock and the latest rotation, so that no
// entry leaves its generation earlier than it would have.
func (a expiryMeta) merge(x expiryMeta) expiryMeta {
	switch {
	case !x.started:
		return a
	case !a.started:
		return x
	}
	return expiryMeta{started: true, clock: max(a.clock, x.clock), rotateAt: max(a.rotateAt, x.rotateAt)}
}

// stateWriter writes the framed body of a snapshot to w. It fills frames
// in its own buffer and hands each whole to the frame.Writer (no copy).
type stateWriter struct {
	fw  *frame.Writer
	buf []byte // the frame being filled; buf[:frame.Reserve] is for its length
	err error
}

func newStateWriter(w io.Writer, kind byte) *stateWriter {
	return &stateWriter{
		fw:  frame.NewWriter(w, frame.Header{Magic: stateMagic, Version: stateVersion, Kind: kind}),
		buf: make([]byte, frame.Reserve, frame.Reserve+stateFrame),
	}
}

// flush writes the frame filled so far.
func (e *stateWriter) flush() {
	e.err = e.fw.WriteFrame(e.buf)
	e.buf = e.buf[:frame.Reserve]
}

// close ends the body and writes the end frame and the checksum.
func (e *stateWriter) close() error {
	e.u32(stateEnd)
	e.flush()
	e.err = e.fw.Close()
	return e.err
}

func (e *stateWriter) room(n int) {
	if len(e.buf)+n > cap(e.buf) {
		e.flush()
	}
}

func (e *stateWriter) u8(v uint8) {
	e.room(1)
	e.buf = append(e.buf, v)
}

func (e *stateWriter) flag(v bool) {
	var x uint8
	if v {
		x = 1
	}
	e.u8(x)
}

func (e *stateWriter) u32(v uint32) {
	e.room(4)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, v)
}

func (e *stateWriter) u64(v uint64) {
	e.room(8)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, v)
}

func (e *stateWriter) i64(v int64)   { e.u64(uint64(v)) }
func (e *stateWriter) f64(v float64) { e.u64(math.Float64bits(v)) }
func (e *stateWriter) f32(v float32) { e.u32(math.Float32bits(v)) }

func (e *stateWriter) str(s string) {
	e.u32(uint32(len(s)))
	for len(s) > 0 {
		e.room(1)
		n := min(len(s), cap(e.buf)-len(e.buf))
		e.buf = append(e.buf, s[:n]...)
		s = s[n:]
	}
}

func (e *stateWriter) fingerprint(fp stateFP) {
	e.u8(fp.engine)
	e.i64(fp.ttl)
	e.i64(fp.lateness)
	e.u32(uint32(len(fp.feats)))
	for _, f := range fp.feats {
		e.str(f)
	}
	e.str(fp.layout)
}

// writeExpiry writes m's clock, its entry counts, then its entries (key and
// state), the current generation first.
func writeExpiry[V expiring](e *stateWriter, m *expiryMap[V], put func(V)) {
	e.flag(m.started)
	e.i64(m.clock)
	e.i64(m.rotateAt)
	e.u64(uint64(len(m.cur)))
	e.u64(uint64(len(m.old)))
	for _, gen := range [2]map[string]V{m.cur, m.old} {
		for k, v := range gen {
			if e.err != nil {
				return
			}
			e.str(k)
			put(v)
		}
	}
}

// series writes the live points of s (the evicted prefix is dropped: the
// window indexes are written relative to the first live point), the tags
// when tagged, and the running aggregates.
func (e *stateWriter) series(s *series, tags []uint64, tagged bool) {
	e.flag(s.has())
	if !s.has() {
		return
	}
	live := s.pts[s.off:]
	e.u32(uint32(len(live)))
	for _, p := range live {
		e.i64(p.ts)
		e.f64(p.amt)
	}
	if tagged {
		for _, t := range tags[s.off:] {
			e.u64(t)
		}
	}
	e.u32(uint32(s.subs))
	e.i64(s.maxTS)
	e.u32(uint32(len(s.ws)))
	for _, w := range s.ws {
		e.u32(uint32(w.start - s.off))
		e.u32(uint32(w.end - s.off))
		e.f64(w.sum)
		e.f64(w.sq)
	}
}

func (e *stateWriter) labels(ls []labelPoint) {
	e.u32(uint32(len(ls)))
	for _, l := range ls {
		e.i64(l.ts)
		e.i64(l.txTs)
		e.u64(l.tx)
	}
}

func (e *stateWriter) cardState(c *cardState) {
	e.series(&c.s, nil, false)
	e.str(c.country)
	e.f64(c.lat)
	e.f64(c.lon)
	e.flag(c.hasGeo)
	e.flag(c.headChanged)
	e.f32(c.headSince)
	e.f32(c.headKmh)
}

func (e *stateWriter) terminalState(t *terminalState) {
	e.series(&t.s, t.txs, true)
	e.labels(t.labels)
	e.i64(t.seen)
}

func (e *stateWriter) entState(en *cent, st *entState) {
	e.series(&st.s.series, st.s.tags, en.hasOf)
	e.u32(uint32(len(st.tl)))
	for _, tl := range st.tl {
		e.u32(uint32(len(tl.ts)))
		for _, t := range tl.ts {
			e.i64(t.k)
			e.i64(t.n)
			e.f64(t.sum)
			e.f64(t.sq)
			e.f64(t.min)
			e.f64(t.max)
		}
	}
	e.labels(st.labels)
	e.u32(uint32(len(st.txs)))
	for _, p := range st.txs {
		e.i64(p.ts)
		e.u64(p.tx)
	}
	e.i64(st.seen)
	e.u32(uint32(len(st.strs)))
	for _, s := range st.strs {
		e.str(s)
	}
	e.u32(uint32(len(st.headVals)))
	for _, v := range st.headVals {
		e.f32(v)
	}
	e.f64(st.lat)
	e.f64(st.lon)
	e.flag(st.hasGeo)
}

// stateReader reads a snapshot from r: the header, then the body frame by
// frame, never past the trailer. Its first error sticks: later reads return
// zero values, and loops stop on it.
type stateReader struct {
	fr  *frame.Reader
	buf []byte // the current frame's body (the frame.Reader's)
	pos int    // read position in buf
	err error
	tmp [8]byte
}

func newStateReader(r io.Reader, kind byte) *stateReader {
	d := &stateReader{fr: frame.NewReader(r)}
	h, err := d.fr.ReadHeader()
	if err != nil {
		d.frameErr(err)
		return d
	}
	switch v := h.Version; {
	case h.Magic != stateMagic:
		d.fail("not a features state snapshot (magic %q)", h.Magic)
	case v == 1:
		d.fail("format version 1, this build reads version %d: its fraud labels lack their transaction's time, "+
			"which the fraud features now count by; rebuild the state by replaying the history", stateVersion)
	case v != stateVersion:
		d.fail("format version %d, this build reads version %d", v, stateVersion)
	case h.Kind != kind:
		d.fail("snapshot of a %s, want a %s", kindName(h.Kind), kindName(kind))
	}
	return d
}

func kindName(k byte) string {
	switch k {
	case stateBuilder:
		return "Builder"
	case stateShared:
		return "Shared"
	}
	return fmt.Sprintf("kind %q", k)
}

// fail records a corrupt or incompatible snapshot (the first error sticks).
func (d *stateReader) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s (at byte %d)", ErrState, fmt.Sprintf(format, args...), d.fr.Offset())
	}
}

// frameErr records an error of the frame.Reader: the container's fault
// wraps ErrState, the underlying reader's is kept as it is.
func (d *stateReader) frameErr(err error) {
	var ce *frame.CorruptError
	switch {
	case d.err != nil:
	case errors.As(err, &ce):
		d.err = fmt.Errorf("%w: %s (at byte %d)", ErrState, ce.Reason, ce.Off)
	default:
		d.err = err
	}
}

// nextFrame reads the next frame of the body.
func (d *stateReader) nextFrame() bool {
	if d.err != nil {
		return false
	}
	b, err := d.fr.Next()
	switch {
	case err == io.EOF:
		d.fail("body ends early")
		return false
	case err != nil:
		d.frameErr(err)
		return false
	}
	d.buf, d.pos = b, 0
	return true
}

// bytes returns the next n <= 8 bytes of the body (zeros after an error),
// valid until the next read.
func (d *stateReader) bytes(n int) []byte {
	if len(d.buf)-d.pos >= n {
		p := d.buf[d.pos : d.pos+n]
		d.pos += n
		return p
	}
	t := d.tmp[:0]
	for len(t) < n {
		if d.pos == len(d.buf) && !d.nextFrame() {
			clear(d.tmp[:])
			return d.tmp[:n]
		}
		k := min(n-len(t), len(d.buf)-d.pos)
		t = append(t, d.buf[d.pos:d.pos+k]...)
		d.pos += k
	}
	return t
}

func (d *stateReader) u8() uint8   { return d.bytes(1)[0] }
func (d *stateReader) u32() uint32 { return binary.LittleEndian.Uint32(d.bytes(4)) }
func (d *stateReader) u64() uint64 { return binary.LittleEndian.Uint64(d.bytes(8)) }
func (d *stateReader) i64() int64  { return int64(d.u64()) }

func (d *stateReader) f64() float64 { return math.Float64frombits(d.u64()) }
func (d *stateReader) f32() float32 { return math.Float32frombits(d.u32()) }

func (d *stateReader) flag() bool {
	switch v := d.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("flag byte %d", v)
		return false
	}
}

// length reads a uint32 length of what, at most limit.
func (d *stateReader) length(limit int, what string) int {
	n := int(d.u32())
	if n > limit {
		d.fail("%d %s, at most %d", n, what, limit)
		return 0
	}
	return n
}

func (d *stateReader) str(limit int, what string) string {
	n := d.length(limit, what+" bytes")
	if d.err != nil || n == 0 {
		return ""
	}
	if len(d.buf)-d.pos >= n {
		s := string(d.buf[d.pos : d.pos+n])
		d.pos += n
		return s
	}
	b := make([]byte, 0, min(n, stateFrame))
	for len(b) < n {
		if d.pos == len(d.buf) && !d.nextFrame() {
			return ""
		}
		k := min(n-len(b), len(d.buf)-d.pos)
		b = append(b, d.buf[d.pos:d.pos+k]...)
		d.pos += k
	}
	return string(b)
}

// fingerprint reads a snapshot's fingerprint and fails, naming the first
// difference, unless it is want's. who names the receiver.
func (d *stateReader) fingerprint(want stateFP, who string) {
	engine := d.u8()
	ttl, lateness := d.i64(), d.i64()
	n := d.length(maxStateFeats, "features")
	var feats []string
	for i := 0; i < n && d.err == nil; i++ {
		feats = append(feats, d.str(64<<10, "feature"))
	}
	layout := d.str(maxStateString, "layout")
	if d.err != nil {
		return
	}
	switch {
	case ttl != want.ttl:
		d.fail("ttl differs: snapshot %v, this %s %v (WithTTL)", time.Duration(ttl), who, time.Duration(want.ttl))
	case lateness != want.lateness:
		d.fail("max lateness differs: snapshot %v, this %s %v (WithMaxLateness)", time.Duration(lateness), who, time.Duration(want.lateness))
	}
	for i := 0; d.err == nil && i < max(len(feats), len(want.feats)); i++ {
		got, w := "(none)", "(none)"
		if i < len(feats) {
			got = feats[i]
		}
		if i < len(want.feats) {
			w = want.feats[i]
		}
		if got != w {
			d.fail("spec differs at feature %d of %d (%d in the snapshot): snapshot {%s}, this %s {%s} (WithSpec)",
				i, len(want.feats), len(feats), got, who, w)
		}
	}
	switch {
	case d.err != nil:
	case engine != want.engine:
		d.fail("engine differs: snapshot of the %s, this %s runs the %s", engineName(engine), who, engineName(want.engine))
	case layout != want.layout:
		d.fail("window layout differs (snapshot of another version?): snapshot {%s}, this %s {%s}", layout, who, want.layout)
	}
}

// finish reads the end of the body, the end frame and the checksum.
func (d *stateReader) finish() error {
	if m := d.u32(); d.err == nil && m != stateEnd {
		d.fail("end marker %#x, want %#x", m, stateEnd)
	}
	if d.err == nil && d.pos != len(d.buf) {
		d.fail("%d bytes after the end marker", len(d.buf)-d.pos)
	}
	if d.err == nil {
		switch _, err := d.fr.Next(); {
		case err == nil:
			d.fail("data after the end of the state")
		case err != io.EOF:
			d.frameErr(err)
		}
	}
	return d.err
}

// expiryHead reads an expiryMap's clock and its entry counts.
func (d *stateReader) expiryHead() (meta expiryMeta, nCur, nOld uint64) {
	meta = expiryMeta{started: d.flag(), clock: d.i64(), rotateAt: d.i64()}
	nCur, nOld = d.u64(), d.u64()
	switch {
	case d.err != nil:
	case nCur > maxStateEntries || nOld > maxStateEntries:
		d.fail("map of %d+%d entries, at most %d", nCur, nOld, maxStateEntries)
	case !meta.started && (nCur > 0 || nOld > 0 || meta.clock != 0 || meta.rotateAt != 0):
		d.fail("entries or a clock in a map never ticked")
	}
	return meta, nCur, nOld
}

// readExpiryEntries reads nCur entries of the current generation, then nOld
// of the old one, each passed to place.
func readExpiryEntries[V any](d *stateReader, nCur, nOld uint64, what string, read func() V, place func(old bool, key string, v V)) {
	for i := uint64(0); i < nCur+nOld && d.err == nil; i++ {
		key := d.str(maxStateString, what+" id")
		v := read()
		if d.err != nil {
			return
		}
		place(i >= nCur, key, v)
	}
}

// readExpiryInto reads an expiryMap written by writeExpiry.
func readExpiryInto[V expiring](d *stateReader, ttl int64, what string, read func() V) expiryMap[V] {
	meta, nCur, nOld := d.expiryHead()
	m := newExpiryMap[V](ttl)
	if d.err != nil {
		return m
	}
	m.setMeta(meta)
	m.cur = make(map[string]V, min(nCur, stateMapHint))
	readExpiryEntries(d, nCur, nOld, what, read, func(old bool, key string, v V) { putGen(d, &m, old, key, v, what) })
	return m
}

// putGen stores v under key in m's generation, failing on a duplicate key.
func putGen[V expiring](d *stateReader, m *expiryMap[V], old bool, key string, v V, what string) {
	_, inCur := m.cur[key]
	_, inOld := m.old[key]
	if inCur || inOld {
		d.fail("%s %q twice", what, key)
		return
	}
	if !old {
		m.cur[key] = v
		return
	}
	if m.old == nil {
		m.old = make(map[string]V)
	}
	m.old[key] = v
}

// series reads a series written by stateWriter.series into s (and *tags,
// when not nil), for the windows wins, checking what Update relies on:
// points in time order, none after the newest time, and window bounds that
// are those of the points.
func (d *stateReader) series(s *series, tags *[]uint64, wins []window) {
	if !d.flag() {
		return
	}
	n := d.length(maxStateLen, "points")
	pts := make([]point, 0, max(min(n, stateChunk), 4))
	for i := 0; i < n && d.err == nil; i++ {
		p := point{ts: d.i64(), amt: d.f64()}
		if i > 0 && p.ts < pts[i-1].ts {
			d.fail("points out of time order")
		}
		pts = append(pts, p)
	}
	pts = fitCap(pts, 4)
	if tags != nil {
		t := make([]uint64, 0, cap(pts))
		for i := 0; i < n && d.err == nil; i++ {
			t = append(t, d.u64())
		}
		*tags = t
	}
	subs := int32(d.u32())
	maxTS := d.i64()
	nw := int(d.u32())
	if d.err != nil {
		return
	}
	switch {
	case subs < 0:
		d.fail("negative subtraction count")
	case n > 0 && (pts[0].ts < 0 || pts[n-1].ts > maxTS):
		d.fail("points outside [0, newest time]")
	case maxTS < 0 || maxTS >= maxEventTime.UnixNano():
		d.fail("newest time %d outside the event-time range", maxTS)
	case nw != len(wins):
		d.fail("series of %d windows, want %d", nw, len(wins))
	}
	if d.err != nil {
		return
	}
	s.pts, s.off, s.subs, s.maxTS = pts, 0, subs, maxTS
	s.ws = make([]winState, nw)
	for k := range s.ws {
		st := &s.ws[k]
		st.start, st.end = int32(d.u32()), int32(d.u32())
		st.sum, st.sq = d.f64(), d.f64()
		if d.err != nil {
			return
		}
		w := wins[k]
		if st.start < 0 || st.end < st.start || int(st.end) > n ||
			st.start != s.upper(maxTS-w.offset-w.length) || st.end != s.upper(maxTS-w.offset) {
			d.fail("window %d bounds [%d, %d) do not match its points", k, st.start, st.end)
			return
		}
	}
}

// fitCap returns s, copied into a smaller array when appending in chunks
// left more than a quarter of it unused (and more than least).
func fitCap[T any](s []T, least int) []T {
	if c := cap(s); c > least && c-len(s) > len(s)/4 {
		return append(make([]T, 0, max(len(s), least)), s...)
	}
	return s
}

func (d *stateReader) labels() []labelPoint {
	n := d.length(maxStateLen, "labels")
	if n == 0 {
		return nil
	}
	ls := make([]labelPoint, 0, min(n, stateChunk))
	for i := 0; i < n && d.err == nil; i++ {
		l := labelPoint{ts: d.i64(), txTs: d.i64(), tx: d.u64()}
		if i > 0 && l.ts < ls[i-1].ts {
			d.fail("labels out of time order")
		}
		if l.txTs > l.ts {
			d.fail("label transaction time after the label's")
		}
		ls = append(ls, l)
	}
	return fitCap(ls, 0)
}

func (d *stateReader) cardState(wins []window) *cardState {
	c := &cardState{}
	d.series(&c.s, nil, wins)
	if d.err == nil && c.s.has() {
		c.inlineWins(0)
	}
	c.country = d.str(maxStateString, "country")
	c.lat, c.lon = d.f64(), d.f64()
	c.hasGeo, c.headChanged = d.flag(), d.flag()
	c.headSince, c.headKmh = d.f32(), d.f32()
	return c
}

func (d *stateReader) terminalState(wins []window) *terminalState {
	t := &terminalState{}
	d.series(&t.s, &t.txs, wins)
	if d.err == nil && t.s.has() {
		t.inlineWins(0)
	}
	t.labels = d.labels()
	t.seen = d.i64()
	return t
}

func (d *stateReader) entState(en *cent) *entState {
	st := newEntState(en)
	var tags *[]uint64
	if en.hasOf {
		tags = &st.s.tags
	}
	d.series(&st.s.series, tags, en.wins)
	if n := int(d.u32()); d.err == nil && n != len(st.tl) {
		d.fail("%d tiled windows, want %d", n, len(st.tl))
	}
	for k := 0; k < len(st.tl) && d.err == nil; k++ {
		n := d.length(maxStateLen, "tiles")
		ts := make([]tile, 0, min(n, stateChunk))
		for i := 0; i < n && d.err == nil; i++ {
			t := tile{k: d.i64(), n: d.i64(), sum: d.f64(), sq: d.f64(), min: d.f64(), max: d.f64()}
			if i > 0 && t.k <= ts[i-1].k {
				d.fail("tiles out of order")
			}
			ts = append(ts, t)
		}
		if n > 0 {
			st.tl[k].ts = fitCap(ts, 0)
		}
	}
	st.labels = d.labels()
	if n := d.length(maxStateLen, "transactions"); n > 0 {
		if !en.keepTx {
			d.fail("transactions kept for an entity that keeps none")
		}
		txs := make([]txPoint, 0, min(n, stateChunk))
		for i := 0; i < n && d.err == nil; i++ {
			p := txPoint{ts: d.i64(), tx: d.u64()}
			if i > 0 && p.ts < txs[i-1].ts {
				d.fail("transactions out of time order")
			}
			txs = append(txs, p)
		}
		st.txs = fitCap(txs, 0)
	}
	st.seen = d.i64()
	if n := int(d.u32()); d.err == nil && n != len(st.strs) {
		d.fail("%d changed fields, want %d", n, len(st.strs))
	}
	for k := 0; k < len(st.strs) && d.err == nil; k++ {
		st.strs[k] = d.str(maxStateString, "changed field")
	}
	if n := int(d.u32()); d.err == nil && n != len(st.headVals) {
		d.fail("%d head values, want %d", n, len(st.headVals))
	}
	for k := 0; k < len(st.headVals) && d.err == nil; k++ {
		st.headVals[k] = d.f32()
	}
	st.lat, st.lon = d.f64(), d.f64()
	st.hasGeo = d.flag()
	return st
}
