package features

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"slices"
	"sync"
	"time"
)

const (
	hourNs = int64(time.Hour)
	dayNs  = 24 * hourNs
)

// labelPoint is one fraud label of an entity, timestamped by the label's
// own time (Label.TS, when the fraud became known) and by its
// transaction's time (Label.TxTS, or the time found in the terminal's
// history; noTxTime when unknown).
type labelPoint struct {
	ts   int64  // Label.TS, Unix ns
	txTs int64  // the transaction's time, Unix ns, <= ts; noTxTime when unknown
	tx   uint64 // hash of the tx id, for duplicate and correction handling
}

// noTxTime is the txTs of a label whose transaction time is unknown: it
// lies in no window.
const noTxTime = math.MinInt64

// terminalState is the state of one terminal: its transaction history and
// the fraud labels attributed to it.
//
// ws is the storage of s.ws, as in cardState (inlineWins).
type terminalState struct {
	s      series
	ws     [nTerminalWindows]winState
	txs    []uint64     // hashLabelTx of each point's tx id, parallel to s.pts (ApplyLabel finds tx times there)
	labels []labelPoint // sorted by ts
	seen   int64        // newest event or label time
}

func (t *terminalState) lastSeen() int64 { return t.seen }

// inlineWins is cardState.inlineWins for a terminal.
func (t *terminalState) inlineWins(at int64) {
	switch {
	case t.s.ws == nil:
		t.s.ws, t.s.maxTS = t.ws[:], at
	case len(t.s.ws) == len(t.ws) && &t.s.ws[0] != &t.ws[0]:
		copy(t.ws[:], t.s.ws)
		t.s.ws = t.ws[:]
	}
}

// evictLabels drops labels at or before seen-retain.
func (t *terminalState) evictLabels(retain int64) {
	horizon := t.seen - retain
	n := 0
	for n < len(t.labels) && t.labels[n].ts <= horizon {
		n++
	}
	if n > 0 {
		t.labels = slices.Delete(t.labels, 0, n)
		if cap(t.labels) > 16 && len(t.labels) < cap(t.labels)/4 {
			t.labels = slices.Clip(slices.Clone(t.labels))
		}
	}
}

// stripe is one lock stripe of Shared. The padding keeps two stripes' locks
// off one cache line.
type stripe struct {
	mu sync.Mutex
	m  expiryMap[*terminalState]
	// spec holds the entity states of a spec Shared, one map per
	// compiledSpec.smaps entry; nil without a spec.
	spec []expiryMap[*entState]
	// sc is the evaluation scratch of Apply and Peek for the spec's
	// entities of this stripe (used under mu); nil without a spec.
	sc *specBuilder
	_  [64]byte
}

// Shared holds the terminal state of one process, shared by all its
// workers' Builders and the label feed. It is safe for concurrent use: a
// terminal's state lives in one of N stripes (maps behind a mutex each,
// chosen by a hash of the terminal id), so workers contend only when they
// touch terminals of the same stripe at the same moment.
type Shared struct {
	cfg      config
	wins     []window // terminalWindows
	lateness int64
	retain   int64
	// seed keys the hashes of terminal ids (stripes) and tx ids (labels).
	// It is random per Shared, and a snapshot carries it (ReadState adopts
	// it), so that a restored Shared places every entity in the stripe it
	// had and recognises the labels it holds: with maphash, whose seed
	// cannot be saved, stripe expiry clocks and label duplicates would
	// differ after a restart.
	seed    uint64
	stripes []stripe
	sp      *specShared // WithSpec, else nil
	// unplaced counts the fraud labels ApplyLabel could not place by
	// transaction time (UnplacedLabels).
	unplaced atomic.Uint64
	// applied and clock pace the sweeps of Apply (split.go): the events
	// it applied and the newest event time among them.
	applied atomic.Uint64
	clock   atomic.Int64
}

// UnplacedLabels returns how many fraud labels ApplyLabel could not place
// by transaction time so far: labels without tx_ts whose transaction it
// did not find in the terminal's retained history (not seen yet, or
// already forgotten), or whose tx_ts is after their ts. They count in no
// transaction-time fraud feature (label-time features count them). Both
// engines count them (a spec without transaction-time fraud features never
// needs to place a label); a label delivered twice that cannot be placed
// counts twice: it is a count of deliveries, not of transactions.
func (s *Shared) UnplacedLabels() uint64 { return s.unplaced.Load() }

// sweepEvery is how many events a Builder applies between two sweeps, each
// of which advances one stripe's expiry clock to the Builder's event-time
// clock: stripes that see no traffic still release their idle terminals.
const sweepEvery = 64

// sweep advances stripe i's expiry clock to now.
func (s *Shared) sweep(i uint64, now int64) {
	st := &s.stripes[i&uint64(len(s.stripes)-1)]
	st.mu.Lock()
	st.m.tick(now)
	for k := range st.spec {
		st.spec[k].tick(now)
	}
	st.mu.Unlock()
}

// NewShared returns empty terminal state. Options: WithTTL, WithMaxLateness,
// WithStripes, WithMaxTerminals, WithMaxCards (a spec's card labels),
// WithSpec (then it holds the state of the spec's entities other than
// card_id, and the fraud labels of its labelled entities). It returns an
// error wrapping ErrInvalidOption for an invalid option.
func NewShared(opts ...Option) (*Shared, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Shared{
		cfg:      cfg,
		wins:     terminalWindows,
		lateness: int64(cfg.lateness),
		seed:     rand.Uint64(),
		stripes:  make([]stripe, cfg.stripes),
	}
	s.retain = maxSpan(s.wins) + s.lateness
	for i := range s.stripes {
		s.stripes[i].m = newExpiryMap[*terminalState](int64(cfg.ttl))
	}
	if cfg.spec != nil {
		s.sp = newSpecShared(cfg.spec, s.lateness)
		for i := range s.stripes {
			st := &s.stripes[i]
			st.sc = newSpecScratch(cfg.spec, s)
			st.spec = make([]expiryMap[*entState], len(cfg.spec.smaps))
			for k := range st.spec {
				st.spec[k] = newExpiryMap[*entState](int64(cfg.ttl))
			}
		}
	}
	for i := range s.stripes {
		s.limitStripe(&s.stripes[i])
	}
	return s, nil
}

func maxSpan(wins []window) int64 {
	var m int64
	for _, w := range wins {
		m = max(m, w.offset+w.length)
	}
	return m
}

func (s *Shared) stripe(id string) *stripe {
	return &s.stripes[keyedHash(s.seed, id)&uint64(len(s.stripes)-1)]
}

// keyedHash is the 64-bit xxHash of s with seed key: process-independent
// for a given key, which a snapshot carries (maphash's seed cannot be
// saved). Not cryptographic; for stripes and label ids.
//
// Ids under 32 bytes (terminal and tx ids: two per event) are hashed here
// in one pass, xxHash64's short-input path written out: xxhash.Digest
// copies them into its buffer first and cost about three times the
// instructions. Longer ones go through the Digest. The values are the
// Digest's, bit for bit (TestKeyedHashIsXXHash, FuzzKeyedHash): snapshots
// hold label hashes and place entities in stripes by them.
func keyedHash(key uint64, s string) uint64 {
	if len(s) >= 32 {
		var d xxhash.Digest
		d.ResetWithSeed(key)
		d.WriteString(s)
		return d.Sum64()
	}
	h := key + xxPrime5 + uint64(len(s))
	for ; len(s) >= 8; s = s[8:] {
		k := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		k = bits.RotateLeft64(k*xxPrime2, 31) * xxPrime1
		h ^= k
		h = bits.RotateLeft64(h, 27)*xxPrime1 + xxPrime4
	}
	if len(s) >= 4 {
		k := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
		h ^= k * xxPrime1
		h = bits.RotateLeft64(h, 23)*xxPrime2 + xxPrime3
		s = s[4:]
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i]) * xxPrime5
		h = bits.RotateLeft64(h, 11) * xxPrime1
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}

// xxHash64's primes (keyedHash).
const (
	xxPrime1 uint64 = 11400714785074694791
	xxPrime2 uint64 = 14029467366897019727
	xxPrime3 uint64 = 1609587929392839161
	xxPrime4 uint64 = 9650029242287828579
	xxPrime5 uint64 = 2870177450012600261
)

// mix64 is the splitmix64 finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// ApplyLabel records a label. It is safe for concurrent use.
//
// A fraud label counts in the terminal's lagged fraud windows
// (t-7d-w, t-7d] at its transaction's time, among the labels known at t
// (l.TS <= t): the features are point-in-time correct whatever order
// labels are applied in. The transaction's time is l.TxTS or, when l
// carries none, the time of transaction l.TxID in the terminal's retained
// history (its series); a fraud label placed neither way counts in no
// window (ApplyLabel returns false; UnplacedLabels). A repeated fraud label for the same tx_id (at-least-once delivery) counts
// once while it is retained; a non-fraud label for a tx_id previously
// labelled fraud withdraws that label (a correction); other non-fraud labels
// change nothing. Labels without a terminal_id are ignored. With WithSpec,
// the same rules apply to the labels of each entity (card_id, terminal_id)
// that has fraud features, keyed by the label's card_id or terminal_id.
//
// With WithSpec, a fraud_count or fraud_rate feature counting by
// transaction time (label_time: transaction) places a fraud label the same
// way (the spec must have a terminal_id feature to find a transaction by
// its id); one counting by label time (label_time: label) at l.TS.
// ApplyLabel reports whether it placed l: false for a fraud label that a
// transaction-time feature needs, that carries no usable tx time and whose
// transaction it cannot find (counted by UnplacedLabels; the caller logs
// it). It is still recorded, for the label-time features.
func (s *Shared) ApplyLabel(l *Label) (placed bool) {
	if s.sp != nil {
		placed, _ = s.applyLabelSpec(l, sideAll)
		return placed
	}
	placed, _ = s.applyLabelTerminal(l)
	return placed
}

// applyLabelTerminal is ApplyLabel without a spec. It also returns the
// transaction time it placed l at (noTxTime: none).
func (s *Shared) applyLabelTerminal(l *Label) (placed bool, txT int64) {
	if l.TerminalID == "" {
		return true, labelTxTime(l, nanos(l.TS))
	}
	t := nanos(l.TS)
	h := hashLabelTx(s, l.TxID)
	st := s.stripe(l.TerminalID)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.m.tick(t)
	ts, ok := st.m.get(l.TerminalID)
	txT = labelTxTime(l, t)
	placed = true
	if l.Fraud && txT == noTxTime {
		if l.TxTS.IsZero() && ok {
			txT = ts.txTime(h, s.retain, t)
		}
		if txT == noTxTime {
			placed = false
			s.unplaced.Add(1)
		}
	}
	if !ok {
		if !l.Fraud {
			return true, txT
		}
		ts = &terminalState{seen: t}
		st.m.put(l.TerminalID, ts)
	}
	i := slices.IndexFunc(ts.labels, func(p labelPoint) bool { return p.tx == h })
	switch {
	case !l.Fraud:
		if i >= 0 {
			ts.labels = slices.Delete(ts.labels, i, i+1)
		}
		return true, txT
	case i >= 0:
		return placed, txT
	}
	at, _ := slices.BinarySearchFunc(ts.labels, t, func(p labelPoint, x int64) int {
		if p.ts <= x {
			return -1
		}
		return 1
	})
	ts.labels = slices.Insert(ts.labels, at, labelPoint{ts: t, txTs: txT, tx: h})
	ts.seen = max(ts.seen, t)
	ts.evictLabels(s.retain)
	return placed, txT
}

// txTime returns the time of the newest retained transaction with tx-id
// hash tx after seen-retain (entState.txTime), or noTxTime; noTxTime too
// when that time is after the label's, at (a label cannot precede its
// transaction).
func (t *terminalState) txTime(tx uint64, retain, at int64) int64 {
	horizon := t.seen - retain
	for i := len(t.s.pts) - 1; i >= int(t.s.off) && t.s.pts[i].ts > horizon; i-- {
		if t.txs[i] == tx {
			if x := t.s.pts[i].ts; x <= at {
				return x
			}
			return noTxTime
		}
	}
	return noTxTime
}

// labelTxTime returns l's transaction time (nanos), or noTxTime when it
// carries none or one after its own time t.
func labelTxTime(l *Label, t int64) int64 {
	if l.TxTS.IsZero() {
		return noTxTime
	}
	if x := nanos(l.TxTS); x <= t {
		return x
	}
	return noTxTime
}

// observe applies a transaction to its terminal and writes the terminal
// features to row (a full default row: the terminal block and the lagged
// block). It reports whether the transaction was inserted (false: beyond
// the max lateness).
func (s *Shared) observe(id, tx string, t int64, amt float64, row []float32) bool {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.m.tick(t)
	ts, ok := st.m.get(id)
	if !ok {
		ts = &terminalState{seen: t}
		st.m.put(id, ts)
	}
	ts.seen = max(ts.seen, t)
	if !ts.s.has() {
		ts.inlineWins(t) // what addTagged would do, with the windows inline
	}
	inserted := ts.s.addTagged(t, amt, hashLabelTx(s, tx), &ts.txs, s.wins, terminalSummed, s.lateness, s.retain, int32(s.cfg.maxPoints)) >= 0
	s.features(ts, t, amt, inserted, row)
	ts.evictLabels(s.retain)
	return inserted
}

// peek writes the terminal features of a transaction as observe does,
// without changing anything (a read-only path under the stripe lock, for
// Builder.Peek): when the terminal's series holds a point at t with amount
// amt, the transaction is taken to be that point (already applied) and its
// windows are read as they are; otherwise amt is added to them, as observe
// does for a transaction it does not insert. The stripe's expiry clock is
// not advanced: a state observe would find expired at t is treated as absent.
// It reports whether observe would now find the transaction too late to
// insert (not in the series, and beyond the max lateness).
func (s *Shared) peek(id string, t int64, amt float64, row []float32) (late bool) {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	ts, ok := st.m.peek(id, t)
	if !ok {
		var empty terminalState // what observe would start from; not stored
		ts = &empty
	}
	counted := ts.s.find(t, amt) >= 0
	s.features(ts, t, amt, counted, row)
	return !counted && ts.s.tooLate(t, s.lateness)
}

// fraudCols are the row columns of the fraud count of each lagged window
// (lagWindows order); its rate is the next column.
var fraudCols = [nLagged]int{offLagged + nLagged, offTerminal + 2*nWindows, offTerminal + 2*nWindows + 2}

// features writes the terminal features of a transaction at t with amount
// amt to row (the terminal block and the lagged block); counted reports
// whether ts's series already holds it (else amt is added to the offset-0
// windows). Read-only; the caller holds the stripe lock.
func (s *Shared) features(ts *terminalState, t int64, amt float64, counted bool, row []float32) {
	out := row[offTerminal : offTerminal+terminalWidth]
	has, now := ts.s.has(), ts.s.has() && t == ts.s.maxTS // now: at's common case, inline
	for k := range nWindows {
		var a agg
		switch {
		case now:
			a = ts.s.ws[k].agg()
		case has:
			a = ts.s.at(k, s.wins[k], t)
		}
		if !counted {
			a.add(amt)
		}
		out[k] = float32(a.n)
		out[nWindows+k] = f32(a.mean())
	}
	// The lagged windows (t-7d-length, t-7d]: transactions from the same
	// series, fraud labels by transaction time among those known at t; all
	// end at t-7d.
	to := t - lagNs
	known := ts.labels[:labelsUpTo(ts.labels, t)]
	for j, k := range lagWindows {
		w := s.wins[k]
		var tx int64
		switch {
		case now:
			tx = ts.s.ws[k].agg().n
		case has:
			tx = ts.s.at(k, w, t).n
		}
		// A label's transaction precedes it (txTs <= ts): only labels
		// with ts after the window's start can count.
		var fraud int64
		if len(known) > 0 { // (most terminals know no label: skip the search)
			for _, p := range known[labelsUpTo(known, to-w.length):] {
				if p.txTs > to-w.length && p.txTs <= to {
					fraud++
				}
			}
		}
		rate := 0.0
		if tx > 0 {
			rate = min(float64(fraud)/float64(tx), 1)
		}
		row[offLagged+j] = float32(tx)
		row[fraudCols[j]] = float32(fraud)
		row[fraudCols[j]+1] = f32(rate)
	}
}

// terminals returns the number of terminal states held (for tests).
func (s *Shared) terminals() int {
	n := 0
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		n += st.m.len()
		st.mu.Unlock()
	}
	return n
}
