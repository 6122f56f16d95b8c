package features

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The default windows. Card and terminal windows end at the event's time
// and include the event; the three lagged terminal windows end 7 days
// before it (delayed fraud feedback). The terminal windows are in the order
// the spec engine gives DefaultSpec's (windows with running sums first, each
// group in order of first use), so that both keep the same running
// aggregates: the first terminalSummed windows keep running sums (for the
// means), the lagged ones only counts (their features need no sums).
var (
	windowSuffixes  = [...]string{"1h", "1d", "7d", "30d"}
	cardWindows     = []window{{0, hourNs}, {0, dayNs}, {0, 7 * dayNs}, {0, 30 * dayNs}}
	terminalWindows = []window{
		{0, hourNs}, {0, dayNs}, {0, 7 * dayNs}, {0, 30 * dayNs},
		{lagNs, 7 * dayNs}, {lagNs, 30 * dayNs}, {lagNs, dayNs},
	}
	// lagWindows are the indexes in terminalWindows of the lagged windows,
	// in the order of the lagged block of the row (1d, 7d, 30d).
	lagWindows  = [nLagged]int{6, 4, 5}
	lagSuffixes = [nLagged]string{"1d_lag7d", "7d_lag7d", "30d_lag7d"}
)

const (
	nWindows = 4 // offset-0 windows, same for cards and terminals
	// nTerminalWindows is len(terminalWindows).
	nTerminalWindows = nWindows + nLagged

	// Row layout.
	offAmount       = 0
	offCardCount    = 1
	offCardSum      = offCardCount + nWindows
	offCardMean     = offCardSum + nWindows
	offCardSince    = offCardMean + nWindows
	offCardRatio    = offCardSince + 1
	offCardZ        = offCardRatio + 1
	offCardCountry  = offCardZ + 1
	offCardVelocity = offCardCountry + 1
	offTerminal     = offCardVelocity + 1
	terminalWidth   = 2*nWindows + 4
	offCalendar     = offTerminal + terminalWidth
	offLagged       = offCalendar + 4 // added after the calendar: names bind models, not positions
	laggedWidth     = nLagged + 2
	width           = offLagged + laggedWidth

	lagNs          = 7 * dayNs // offset of the lagged terminal windows
	nLagged        = 3         // lagged terminal windows
	terminalSummed = nWindows  // terminal windows with running sums
)

// SinceFirstSeen is the value of card_secs_since_prev_log1p for a card's
// first transaction (no previous transaction known).
const SinceFirstSeen = -1

// defaultNames is built once and never modified; Names returns copies.
var defaultNames = func() []string {
	n := make([]string, width)
	n[offAmount] = "amount_log1p"
	for k, s := range windowSuffixes {
		n[offCardCount+k] = "card_tx_count_" + s
		n[offCardSum+k] = "card_amount_sum_" + s
		n[offCardMean+k] = "card_amount_mean_" + s
		n[offTerminal+k] = "terminal_tx_count_" + s
		n[offTerminal+nWindows+k] = "terminal_amount_mean_" + s
	}
	n[offCardSince] = "card_secs_since_prev_log1p"
	n[offCardRatio] = "card_amount_ratio_30d"
	n[offCardZ] = "card_amount_zscore_30d"
	n[offCardCountry] = "card_country_changed"
	n[offCardVelocity] = "card_geo_velocity_kmh"
	t := offTerminal + 2*nWindows
	n[t+0] = "terminal_fraud_count_7d_lag7d"
	n[t+1] = "terminal_fraud_rate_7d_lag7d"
	n[t+2] = "terminal_fraud_count_30d_lag7d"
	n[t+3] = "terminal_fraud_rate_30d_lag7d"
	n[offCalendar+0] = "hour_sin"
	n[offCalendar+1] = "hour_cos"
	n[offCalendar+2] = "is_weekend"
	n[offCalendar+3] = "is_night"
	for j, s := range lagSuffixes {
		n[offLagged+j] = "terminal_tx_count_" + s
	}
	n[offLagged+nLagged+0] = "terminal_fraud_count_1d_lag7d"
	n[offLagged+nLagged+1] = "terminal_fraud_rate_1d_lag7d"
	return n
}()

// Names returns the default feature names, in row order (a default
// Builder's Names).
func Names() []string { return slices.Clone(defaultNames) }

// Builder applies events to entity state and assembles feature rows. Card
// state is owned by the Builder; terminal state lives in the Shared it was
// created with. A Builder is NOT safe for concurrent use: give each worker
// (which owns a set of partitions, hence of cards) its own.
type Builder struct {
	shared   *Shared
	cards    expiryMap[*cardState]
	wins     []window
	lateness int64
	retain   int64
	n        uint64       // events applied, paces Shared sweeps
	late     uint64       // events not inserted into some state (too late)
	rekeyed  uint64       // cards moved to their new pseudonym (rekey.go)
	lastLate bool         // the last event Update or Peek was given was late
	lastSlot *CardSlot    // the slot of the last event's card state (LastCardSlot), or nil
	sp       *specBuilder // WithSpec: the spec-driven engine, else nil
	maxCards int          // WithMaxCards (0: unbounded); see state_cap.go
	maxPts   int32        // WithMaxPoints (0: unbounded)
	cal      calCache     // the calendar features of the last second
}

// NewBuilder returns a Builder whose terminal features come from s (a nil s
// gets a private Shared built from opts). Options: WithTTL, WithMaxLateness,
// WithSpec, WithMaxCards. It returns an error wrapping ErrInvalidOption for
// an invalid option, or for a Builder's spec (WithSpec, or none) that is
// not s's.
func NewBuilder(s *Shared, opts ...Option) (*Builder, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if s == nil {
		if s, err = NewShared(opts...); err != nil {
			return nil, err
		}
	}
	b := &Builder{
		shared:   s,
		cards:    newExpiryMap[*cardState](int64(cfg.ttl)),
		wins:     cardWindows,
		lateness: int64(cfg.lateness),
	}
	b.retain = maxSpan(b.wins) + b.lateness
	var sharedSpec *compiledSpec
	if s.sp != nil {
		sharedSpec = s.sp.cs
	}
	if !sameSpec(cfg.spec, sharedSpec) {
		return nil, fmt.Errorf("%w: the Builder's spec (WithSpec) differs from its Shared's: pass the same WithSpec to NewShared", ErrInvalidOption)
	}
	if cfg.spec != nil {
		b.sp = newSpecBuilder(cfg.spec, cfg, s)
	}
	b.maxCards, b.maxPts = cfg.maxCards, int32(cfg.maxPoints)
	b.limitCards(0, 0)
	return b, nil
}

// Names returns the feature names, in row order.
func (b *Builder) Names() []string {
	if b.sp != nil {
		return slices.Clone(b.sp.cs.names)
	}
	return slices.Clone(defaultNames)
}

// Width returns the number of features in a row.
func (b *Builder) Width() int {
	if b.sp != nil {
		return len(b.sp.cs.feats)
	}
	return width
}

// Cards returns the number of card states held (live, or idle and awaiting
// release by the TTL rotation).
func (b *Builder) Cards() int {
	if b.sp != nil {
		return b.sp.loc.len()
	}
	return b.cards.len()
}

// Late returns the number of events Update (or UpdateLocal, given
// Shared.Apply's late flag) scored but did not insert into
// at least one of their states (card, terminal, or with WithSpec any keyed
// entity) because they were more than the max lateness (WithMaxLateness)
// behind that entity's newest event. An event late for several entities
// counts once. Peek never counts. The count is monotonic over the Builder's
// life: export it as a counter. Like Update, not safe for concurrent use;
// read it from the Builder's goroutine.
func (b *Builder) Late() uint64 { return b.late }

// LastLate reports whether the event of the last Update or Peek call was
// late: for Update, that it was scored but not inserted into at least one
// of its states because it was more than the max lateness behind that
// entity's newest event (the events Late counts); for Peek, that it is not
// in one of its states and Update would now find it too late to insert
// there (so Peek scored it on the "not inserted" path, as Update did for a
// late event). It is false before the first call. Like Update, not safe for
// concurrent use: read it from the Builder's goroutine, after the call and
// before the next.
func (b *Builder) LastLate() bool { return b.lastLate }

// LastCardSlot returns the CardSlot of the card state that the last
// Update, UpdateLocal, Peek or PeekLocal call read e's card columns from,
// stored under e.CardID; nil when there was none (Peek of a card not in
// the state, a spec without a card_id entity) or when Peek(Local) was
// given an event with a CardAlias (it may have read the state of the
// previous pseudonym, which Peek does not move). After an Update(Local)
// of an event with a CardAlias it is the slot of the state now under
// e.CardID, which may have been renamed from e.CardAlias by that very call.
// Like Update, not safe for concurrent use: read it from the Builder's
// goroutine, after the call and before the next.
func (b *Builder) LastCardSlot() *CardSlot { return b.lastSlot }

// Update applies e to the card and terminal state and writes e's feature
// row to row[:Width()]. Every value written is finite. It panics if
// len(row) < Width().
//
// Window features are computed at e's own event time and include e. An
// event more than the max lateness behind its card's (or terminal's) newest
// event is scored against the retained state but not inserted (see Late and
// LastLate). A negative or non-finite Amount is treated as 0 (the Decoder
// never produces one).
//
// Update must be called once per event: for an event that may already have
// been applied (a re-delivery), use Peek.
func (b *Builder) Update(e *Event, row []float32) {
	if len(b.EvictedCards()) > 0 {
		b.clearEvicted()
	}
	b.lastSlot = nil
	if b.sp != nil {
		b.updateSpec(e, row)
		return
	}
	row = row[:width]
	t := nanos(e.TS)
	amt := amount(e)
	inserted := b.applyCard(e, t, amt, row)
	late := !b.shared.observe(e.TerminalID, e.TxID, t, amt, row) || !inserted
	if late {
		b.late++
	}
	b.lastLate = late
	if b.n++; b.n%sweepEvery == 0 {
		b.shared.sweep(b.n/sweepEvery, b.cards.clock)
	}

	b.cal.write(e.TS, row)
}

// applyCard applies e (at t, amount amt) to its card, writing the card
// columns and amount_log1p: Update's card half. It reports whether e was
// inserted into the card's windows (false: beyond the max lateness).
func (b *Builder) applyCard(e *Event, t int64, amt float64, row []float32) (inserted bool) {
	b.cards.tick(t)
	b.rekeyCard(e)
	c, ok := b.cards.get(e.CardID)
	if !ok {
		c = &cardState{}
		b.cards.put(e.CardID, c)
	}
	b.lastSlot = &c.slot
	first := !c.s.has()
	if first {
		c.inlineWins(t) // what add would do, with the windows inline
	}
	prevTS := c.s.maxTS
	idx := c.s.add(t, amt, b.wins, len(b.wins), b.lateness, b.retain, b.maxPts)
	inserted = idx >= 0
	inOrder := first || t >= prevTS

	row[offAmount] = f32(math.Log1p(amt))
	a30 := b.cardWindows(&c.s, t, amt, inserted, row)

	// Seconds since the card's previous transaction in event time.
	since := float64(SinceFirstSeen)
	switch {
	case first:
	case inOrder:
		since = math.Log1p(float64(t-prevTS) / 1e9)
	default:
		j := idx - 1 // the point before e
		if !inserted {
			j = c.s.upper(t) - 1
		}
		since = sinceBefore(&c.s, j, t)
	}
	row[offCardSince] = f32(since)

	ratioZ(a30, amt, row)

	// Country change and geo velocity against the previous transaction.
	changed, kmh := 0.0, 0.0
	if inOrder {
		if !first {
			changed, kmh = c.compare(e, t, prevTS)
		}
		if c.country != e.Country {
			c.country = strings.Clone(e.Country)
		}
		c.lat, c.lon, c.hasGeo = e.Lat, e.Lon, e.HasGeo
	}
	row[offCardCountry] = float32(changed)
	row[offCardVelocity] = f32(kmh)
	if inOrder { // e is the new head: remember what it got, for Peek
		c.headSince, c.headChanged, c.headKmh = row[offCardSince], changed != 0, row[offCardVelocity]
	}
	return inserted
}

// Peek writes e's feature row to row[:Width()] as Update did when it applied
// e, for an event that is already in the state (a re-delivery after a
// consumer-group rebalance), without changing any state: no card, terminal,
// expiry clock, TTL generation or sweep counter is touched, so Peek may be
// called any number of times. Terminal state is read under its stripe lock
// (Peek is as safe against other Builders and ApplyLabel as Update); like
// Update, a Builder's Peek must not run concurrently with its other methods.
// It panics if len(row) < Width().
//
// An event is taken to be in a card's (terminal's) state when that state
// holds a point at e's time with e's amount (states keep no event ids: a
// different event with the same card or terminal, time and amount is
// indistinguishable from e). The card and the terminal are looked at
// separately, and a state Update would find expired at e's time counts as
// absent.
//
// When e is in the state, its windows at e's time are read as they are (e
// counted once); card_secs_since_prev_log1p is the gap to the point before
// e's own; the 30-day ratio and z-score exclude e once; the terminal fraud
// features count the labels applied so far. The row equals Update's row for e
// whenever no other event with a time <= e.TS reached the same card or
// terminal since e (nor a fraud label with a time <= e.TS-7d its terminal),
// and e.TS is within the max lateness of the entity's newest event (older
// points may have been evicted since). Country change and geo velocity are
// Update's values when e is still its card's newest in-order event (the
// card remembers them); for any other event already in the state they are 0,
// because the previous transaction's country and position are not kept.
// card_secs_since_prev_log1p is SinceFirstSeen when no point before e's is
// retained and e is not the card's newest event.
//
// When e is not in the state (never applied, beyond the lateness, evicted or
// expired), Peek scores it like Update's "scored but not inserted" path: its
// amount is added to the windows read from the state, and the other features
// are those Update would write if it applied e now (including country change
// and velocity against the card's newest event when e is not older than it).
// The row then equals Update's up to float64 rounding of the window sums.
// LastLate then reports whether e was scored on that path because it is
// more than the max lateness behind its card's or terminal's newest event.
func (b *Builder) Peek(e *Event, row []float32) {
	b.lastSlot = nil
	if b.sp != nil {
		b.peekSpec(e, row)
		return
	}
	row = row[:width]
	t := nanos(e.TS)
	amt := amount(e)

	cardLate := b.peekCardRow(e, t, amt, row)
	termLate := b.shared.peek(e.TerminalID, t, amt, row)
	b.lastLate = termLate || cardLate

	b.cal.write(e.TS, row)
}

// peekCardRow writes e's card columns and amount_log1p as Peek does,
// changing nothing: Peek's card half. It reports whether e is not in its
// card's state and is beyond the max lateness there.
func (b *Builder) peekCardRow(e *Event, t int64, amt float64, row []float32) (late bool) {
	c, ok := peekCard(&b.cards, e, t)
	if !ok {
		var empty cardState // what Update would start from; not stored
		c = &empty
	} else if e.CardAlias == "" {
		b.lastSlot = &c.slot
	}
	idx := c.s.find(t, amt)
	counted := idx >= 0

	row[offAmount] = f32(math.Log1p(amt))
	a30 := b.cardWindows(&c.s, t, amt, counted, row)

	if c.isHead(e, t, amt) { // still the newest: Update's values, remembered
		row[offCardSince] = c.headSince
		row[offCardCountry] = flag(c.headChanged)
		row[offCardVelocity] = c.headKmh
	} else {
		since := float64(SinceFirstSeen)
		changed, kmh := 0.0, 0.0
		switch {
		case !c.s.has(): // new card
		case counted: // in the state, not the newest
			since = sinceBefore(&c.s, idx-1, t)
		case t >= c.s.maxTS: // Update would apply e in order
			since = math.Log1p(float64(t-c.s.maxTS) / 1e9)
			changed, kmh = c.compare(e, t, c.s.maxTS)
		default: // out of order
			since = sinceBefore(&c.s, c.s.upper(t)-1, t)
		}
		row[offCardSince] = f32(since)
		row[offCardCountry] = float32(changed)
		row[offCardVelocity] = f32(kmh)
	}

	ratioZ(a30, amt, row)
	return !counted && c.s.tooLate(t, b.lateness)
}

// amount returns e's amount, with a negative or non-finite one as 0.
func amount(e *Event) float64 {
	amt := e.Amount
	if !(amt >= 0) || amt > math.MaxFloat64 {
		amt = 0
	}
	return amt
}

// cardWindows writes the card window features at t and returns the 30-day
// aggregate; counted reports whether s already holds the transaction (else
// amt is added). Read-only.
func (b *Builder) cardWindows(s *series, t int64, amt float64, counted bool, row []float32) agg {
	var a30 agg
	has, now := s.has(), s.has() && t == s.maxTS // now: at's common case, inline
	for k, w := range b.wins {
		var a agg
		switch {
		case now:
			a = s.ws[k].agg()
		case has:
			a = s.at(k, w, t)
		}
		if !counted {
			a.add(amt)
		}
		row[offCardCount+k] = float32(a.n)
		row[offCardSum+k] = f32(a.sum)
		row[offCardMean+k] = f32(a.mean())
		a30 = a
	}
	return a30
}

// sinceBefore returns log1p of the seconds from the point j (absolute index)
// to t, or SinceFirstSeen when j is not a live point.
func sinceBefore(s *series, j int32, t int64) float64 {
	if j >= s.off && j < int32(len(s.pts)) {
		return math.Log1p(float64(t-s.pts[j].ts) / 1e9)
	}
	return SinceFirstSeen
}

// compare returns the country change and geo velocity of e (at t) against
// the card's head (at prevTS).
func (c *cardState) compare(e *Event, t, prevTS int64) (changed, kmh float64) {
	if c.country != "" && e.Country != "" && c.country != e.Country {
		changed = 1
	}
	if c.hasGeo && e.HasGeo {
		secs := max(float64(t-prevTS)/1e9, 1)
		kmh = haversineKm(c.lat, c.lon, e.Lat, e.Lon) / (secs / 3600)
	}
	return changed, kmh
}

// ratioZ writes the amount ratio and z-score against the card's other
// transactions of the 30-day aggregate a30 (which includes amt once).
func ratioZ(a30 agg, amt float64, row []float32) {
	ratio, z := 1.0, 0.0
	if n0 := a30.n - 1; n0 >= 1 {
		mean0 := (a30.sum - amt) / float64(n0)
		ratio = amt / max(mean0, minStd)
		if n0 >= 2 {
			v := (a30.sq-amt*amt)/float64(n0) - mean0*mean0
			z = (amt - mean0) / max(math.Sqrt(max(v, 0)), minStd)
		}
	}
	row[offCardRatio] = f32(ratio)
	row[offCardZ] = f32(z)
}

// calCache holds the calendar features of the last second a Builder
// computed them for: the events of one second (all of them, at a rate of a
// few per second and more) share them, and their sine and cosine are the
// dearest part of a row after the windows. Not state: Peek uses it too.
type calCache struct {
	sec  int64 // Unix seconds of vals, when set
	set  bool
	vals [4]float32
}

// write writes the calendar features of ts, as calendar does. They depend
// on ts's UTC clock and weekday, which are those of its Unix second.
func (c *calCache) write(ts time.Time, row []float32) {
	if sec := ts.Unix(); !c.set || sec != c.sec {
		calendarTo(&c.vals, ts)
		c.sec, c.set = sec, true
	}
	*(*[4]float32)(row[offCalendar : offCalendar+4]) = c.vals
}

// calendarTo writes the calendar features of ts to out: hour_sin,
// hour_cos, is_weekend, is_night. The UTC clock and weekday come from ts's
// Unix second by integer arithmetic (what time.Time's Clock and Weekday
// compute, without their calendar work), and the sine and cosine from one
// math.Sincos, which shares its argument reduction and returns math.Sin's
// and math.Cos's values bit for bit (TestCalendarToAllSeconds checks every
// second of a day): calendarTo runs for every event of a new second, which
// at one event per second or fewer is every event.
func calendarTo(out *[4]float32, ts time.Time) {
	const daySecs = 24 * 60 * 60
	sec := ts.Unix()
	day, sod := sec/daySecs, sec%daySecs
	if sod < 0 { // before 1970: floor, not truncation
		day, sod = day-1, sod+daySecs
	}
	h, m, s := sod/3600, sod/60%60, sod%60
	hour := float64(h) + float64(m)/60 + float64(s)/3600
	sin, cos := math.Sincos(2 * math.Pi * hour / 24)
	out[0] = float32(sin)
	out[1] = float32(cos)
	wd := (day + 4) % 7 // 1970-01-01 was a Thursday (time.Weekday 4)
	if wd < 0 {
		wd += 7
	}
	out[2] = flag(wd == int64(time.Saturday) || wd == int64(time.Sunday))
	out[3] = flag(h <= 6)
}

// minStd floors the standard deviation and mean used as denominators (one
// cent), so that constant or zero histories give large but finite values.
const minStd = 0.01

func flag(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// f32 converts to float32, mapping NaN to 0 and clamping to the finite range.
func f32(v float64) float32 {
	if v >= -math.MaxFloat32 && v <= math.MaxFloat32 { // the usual case (one test less: NaN fails both)
		return float32(v)
	}
	switch {
	case v != v:
		return 0
	case v > 0:
		return math.MaxFloat32
	}
	return -math.MaxFloat32
}

// nanos returns t as Unix nanoseconds, clamped to the supported event-time
// range [1970-01-01, 2262-01-01). Both bounds are whole seconds, so t's
// Unix second places it (what time.Time's Before against them computes,
// with one conversion instead of three: nanos runs twice per event).
func nanos(t time.Time) int64 {
	switch sec := t.Unix(); {
	case sec < minEventSec:
		return 0
	case sec >= maxEventSec:
		return maxEventSec*1e9 - 1
	}
	return t.UnixNano()
}

// The event-time range in Unix seconds (minEventTime, maxEventTime).
const (
	minEventSec = 0
	maxEventSec = 9214646400 // 2262-01-01T00:00:00Z
)

const earthRadiusKm = 6371.0088

// haversineKm returns the great-circle distance between two points.
func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dlat := (lat2 - lat1) * rad
	dlon := (lon2 - lon1) * rad
	s1, s2 := math.Sin(dlat/2), math.Sin(dlon/2)
	h := s1*s1 + math.Cos(lat1*rad)*math.Cos(lat2*rad)*s2*s2
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(min(h, 1)))
}
