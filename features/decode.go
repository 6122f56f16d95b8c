package features

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Stable machine-readable reason codes for dead letters.
const (
	ReasonEmpty          = "empty_message"
	ReasonInvalidUTF8    = "invalid_utf8"
	ReasonMalformedJSON  = "malformed_json" // syntax error, truncated, not an object
	ReasonTrailingData   = "trailing_data"
	ReasonWrongType      = "wrong_type"
	ReasonMissingField   = "missing_field"
	ReasonEmptyField     = "empty_field"
	ReasonDuplicateField = "duplicate_field"
	ReasonInvalidAmount  = "invalid_amount" // negative, non-finite, overflowing
	ReasonInvalidTime    = "invalid_timestamp"
	ReasonFutureTime     = "future_timestamp"
	ReasonInvalidGeo     = "invalid_geo" // lat/lon out of range
	// ReasonClearPAN: a string field holds a card number in clear (13-19
	// digits passing the Luhn check, see PANIn): card_id without a PAN key,
	// any other field always.
	ReasonClearPAN = "clear_pan"
	// ReasonPseudonymKey: with a PAN key, card_id is a pseudonym under a key
	// id that is neither the active nor the previous key's.
	ReasonPseudonymKey = "unknown_pseudonym_key"
	// ReasonFieldTooLong: a string field is longer than the decoder's
	// WithMaxFieldBytes (an id made up to exhaust memory).
	ReasonFieldTooLong = "field_too_long"
)

// errClearPAN is the text of a ReasonClearPAN error; it never holds the value.
var errClearPAN = errors.New("holds a card number in clear (13-19 digits passing the Luhn check); configure a PAN key for card_id, never send one in other fields")

// DecodeError is returned by Decode and DecodeLabel for bad input. Reason is
// one of the Reason* codes; Field names the offending top-level field, or is
// empty when the message as a whole is bad; Label is true when the message
// was decoded as a label (DecodeLabel, DecodeLabelRecord, AsLabelError).
type DecodeError struct {
	Reason, Field string
	Err           error
	Label         bool
}

// Error returns "features: decode event: <field>: <text>", or "features:
// decode label: …" for a label (without the field part when Field is empty).
func (e *DecodeError) Error() string {
	text := e.Reason
	if e.Err != nil {
		text = e.Err.Error()
	}
	what := "features: decode event: "
	if e.Label {
		what = "features: decode label: "
	}
	if e.Field == "" {
		return what + text
	}
	return what + e.Field + ": " + text
}

// AsLabelError returns err with a *DecodeError it is (not wraps) marked as
// a label's: a copy with Label set, so that an error value shared by other
// callers (a cached schema error) is never changed. Any other error is
// returned as is. Decoders of other formats call it from their DecodeLabel.
func AsLabelError(err error) error {
	de, ok := err.(*DecodeError)
	if !ok || de.Label {
		return err
	}
	c := *de
	c.Label = true
	return &c
}

// Unwrap returns the underlying error.
func (e *DecodeError) Unwrap() error { return e.Err }

// DecoderOption tunes a Decoder.
type DecoderOption func(*decoderConfig) error

type decoderConfig struct {
	maxSkew time.Duration
	clock   func() time.Time
	pan     *PANKey // nil: no pseudonyms, and clear card numbers are refused
	maxStr  int     // WithMaxFieldBytes
}

// WithMaxFutureSkew sets how far ahead of the decoder's clock an event or
// label timestamp may be before it is rejected with ReasonFutureTime.
// Default 5m. A negative d disables the check: use that when decoding
// generated or historical files whose simulated clock runs ahead of the wall
// clock (the trap: with the default, such files dead-letter every event).
func WithMaxFutureSkew(d time.Duration) DecoderOption {
	return func(c *decoderConfig) error {
		c.maxSkew = d
		return nil
	}
}

// WithClock sets the clock the future-skew check compares against. Default
// time.Now. fn must be safe for concurrent use if the Decoder is shared.
func WithClock(fn func() time.Time) DecoderOption {
	return func(c *decoderConfig) error {
		if fn == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		c.clock = fn
		return nil
	}
}

// Decoder is a strict decoder of events and labels. It holds only its
// configuration: it is safe for concurrent use.
type Decoder struct {
	cfg decoderConfig
}

// NewDecoder returns a Decoder, or an error for an invalid option.
func NewDecoder(opts ...DecoderOption) (*Decoder, error) {
	c := decoderConfig{maxSkew: 5 * time.Minute, clock: time.Now, maxStr: DefaultMaxFieldBytes}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, fmt.Errorf("apply decoder option: %w", err)
		}
	}
	return &Decoder{cfg: c}, nil
}

// Field indexes. The string fields come first so their spans index p.str.
const (
	fTxID = iota
	fCardID
	fTerminalID
	fCurrency
	fMCC
	fChannel
	fCountry
	fScenario // labels only
	nStrFields
	fTS = iota - 1
	fAmount
	fLat
	fLon
	fFraud
	fTxTS
)

var fieldNames = [...]string{
	fTxID: "tx_id", fCardID: "card_id", fTerminalID: "terminal_id",
	fCurrency: "currency", fMCC: "mcc", fChannel: "channel", fCountry: "country", fScenario: "scenario",
	fTS: "ts", fAmount: "amount", fLat: "lat", fLon: "lon", fFraud: "fraud",
	fTxTS: "tx_ts",
}

const (
	eventRequired = 1<<fTxID | 1<<fCardID | 1<<fTerminalID | 1<<fTS | 1<<fAmount
	labelRequired = 1<<fTxID | 1<<fCardID | 1<<fTerminalID | 1<<fTS | 1<<fFraud
)

// keyOrder is a canonical order of a message's known keys (Event and
// Label AppendJSON's, the order producers mostly keep), each quoted as it
// is written without escapes, for object's fast path: a key is first
// compared with those after the one matched last, and only scanned and
// looked up (eventField, labelField) when none of them is written there.
type keyOrder struct {
	field  []int
	quoted []string
}

func newKeyOrder(fields ...int) keyOrder {
	o := keyOrder{field: fields}
	for _, f := range fields {
		o.quoted = append(o.quoted, `"`+fieldNames[f]+`"`)
	}
	return o
}

var (
	eventKeyOrder = newKeyOrder(fTxID, fTS, fCardID, fTerminalID, fAmount, fCurrency, fMCC, fChannel, fCountry, fLat, fLon)
	labelKeyOrder = newKeyOrder(fTxID, fCardID, fTerminalID, fTS, fTxTS, fFraud, fScenario)
)

// match returns the field of the key written at b[i:] (from its opening
// quote) when it is one of the order's from next on, as written there
// (quoted, no escape), and the index after it in the order; f < 0 if
// none.
func (o *keyOrder) match(b []byte, i, next int) (f, after int) {
	rest := b[i:]
	for j := next; j < len(o.quoted); j++ {
		if q := o.quoted[j]; len(rest) >= len(q) && string(rest[:len(q)]) == q {
			return o.field[j], j + 1
		}
	}
	return -1, next
}

// requiredOrder is the order missing fields are reported in.
var requiredOrder = [...]int{fTxID, fTS, fCardID, fTerminalID, fAmount, fFraud}

func eventField(key []byte) int {
	switch string(key) {
	case "tx_id":
		return fTxID
	case "ts":
		return fTS
	case "card_id":
		return fCardID
	case "terminal_id":
		return fTerminalID
	case "amount":
		return fAmount
	case "currency":
		return fCurrency
	case "mcc":
		return fMCC
	case "channel":
		return fChannel
	case "country":
		return fCountry
	case "lat":
		return fLat
	case "lon":
		return fLon
	}
	return -1
}

func labelField(key []byte) int {
	switch string(key) {
	case "tx_id":
		return fTxID
	case "ts":
		return fTS
	case "card_id":
		return fCardID
	case "terminal_id":
		return fTerminalID
	case "fraud":
		return fFraud
	case "tx_ts":
		return fTxTS
	case "scenario":
		return fScenario
	}
	return -1
}

type strSpan struct {
	start, end int
	esc        bool
}

// maxUnknownKeys is how many distinct unknown top-level keys are tracked for
// duplicate detection; further unknown keys are skipped unchecked.
const maxUnknownKeys = 16

// parse holds the result of scanning one object.
type parse struct {
	s        scanner
	label    bool
	required uint32
	seen     uint32 // keys seen (duplicate detection)
	present  uint32 // fields with a non-null value
	str      [nStrFields]strSpan
	ts       time.Time
	txTS     time.Time // label tx_ts, when present
	amount   float64
	lat, lon float64
	fraud    bool
	unknown  [maxUnknownKeys]strSpan
	nUnknown int
	// first semantic error
	semReason, semField, semMsg string
}

func (p *parse) sem(reason string, f int, msg string) {
	if p.semReason == "" {
		p.semReason, p.semField, p.semMsg = reason, fieldNames[f], msg
	}
}

// run scans the whole message; it returns a *DecodeError or nil.
func (p *parse) run() error {
	b := p.s.b
	if len(b) == 0 {
		return &DecodeError{Reason: ReasonEmpty, Err: errors.New("empty message")}
	}
	s := &p.s
	s.ws()
	if s.i == len(b) {
		return &DecodeError{Reason: ReasonEmpty, Err: errors.New("message is only whitespace")}
	}
	if !p.object() {
		return p.fail()
	}
	s.ws()
	if s.i < len(b) {
		if !utf8.Valid(b) {
			return invalidUTF8()
		}
		return &DecodeError{Reason: ReasonTrailingData, Err: fmt.Errorf("trailing data at byte %d", s.i)}
	}
	if p.semReason != "" {
		return &DecodeError{Reason: p.semReason, Field: p.semField, Err: errors.New(p.semMsg)}
	}
	if missing := p.required &^ p.present; missing != 0 {
		for _, f := range requiredOrder {
			if missing&(1<<f) != 0 {
				return &DecodeError{Reason: ReasonMissingField, Field: fieldNames[f], Err: errors.New("missing required field")}
			}
		}
	}
	return nil
}

func invalidUTF8() error {
	return &DecodeError{Reason: ReasonInvalidUTF8, Err: errors.New("invalid UTF-8")}
}

func (p *parse) fail() error {
	s := &p.s
	if s.reason != ReasonInvalidUTF8 && !utf8.Valid(s.b) {
		return invalidUTF8()
	}
	if s.i >= len(s.b) && s.reason == ReasonMalformedJSON {
		return &DecodeError{Reason: ReasonMalformedJSON, Err: fmt.Errorf("%s: truncated at byte %d", s.msg, s.pos)}
	}
	return &DecodeError{Reason: s.reason, Err: fmt.Errorf("%s at byte %d", s.msg, s.pos)}
}

func (p *parse) object() bool {
	s := &p.s
	if s.peek() != '{' {
		return s.fail(ReasonMalformedJSON, "not a JSON object")
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	var keyBuf [32]byte
	order := &eventKeyOrder
	if p.label {
		order = &labelKeyOrder
	}
	next := 0 // in order: the keys after the last one matched
	for {
		s.ws()
		// The fast path: a known key as the canonical order has it next
		// (a quoted name is exactly what str would scan).
		f, after := order.match(s.b, s.i, next)
		matched := f >= 0
		var key []byte
		var ks, ke int
		var kesc bool
		if matched {
			next = after
			s.i += len(fieldNames[f]) + 2
		} else {
			var ok bool
			ks, ke, kesc, ok = s.str()
			if !ok {
				return false
			}
			key = s.b[ks:ke]
			if kesc {
				key = appendUnescaped(keyBuf[:0], key)
			}
		}
		s.ws()
		if s.peek() != ':' {
			return s.fail(ReasonMalformedJSON, "expected ':'")
		}
		s.i++
		s.ws()
		switch {
		case matched:
		case p.label:
			f = labelField(key)
		default:
			f = eventField(key)
		}
		if f < 0 {
			if !kesc {
				for _, u := range p.unknown[:p.nUnknown] {
					if string(s.b[u.start:u.end]) == string(key) {
						if p.semReason == "" {
							name := string(key)
							if panIn(key) { // the error is logged and dead-lettered
								name = "[redacted]"
							}
							p.semReason, p.semField, p.semMsg = ReasonDuplicateField, name, "duplicate key"
						}
						break
					}
				}
				if p.nUnknown < maxUnknownKeys {
					p.unknown[p.nUnknown] = strSpan{start: ks, end: ke}
					p.nUnknown++
				}
			}
			if !s.skipValue(0) {
				return false
			}
		} else if !p.value(f) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			if s.i >= len(s.b) {
				return s.fail(ReasonMalformedJSON, "unexpected end of input")
			}
			return s.fail(ReasonMalformedJSON, "expected ',' or '}'")
		}
	}
}

// value scans the value of known field f.
func (p *parse) value(f int) bool {
	s := &p.s
	bit := uint32(1) << f
	if p.seen&bit != 0 {
		p.sem(ReasonDuplicateField, f, "duplicate key")
		return s.skipValue(0)
	}
	p.seen |= bit
	required := p.required&bit != 0
	c := s.peek()
	if c == 'n' { // null
		if !s.literal("null") {
			return false
		}
		if required {
			p.sem(ReasonWrongType, f, "null for required field")
		}
		return true // optional null: treated as absent
	}
	switch {
	case f < nStrFields:
		if c != '"' {
			p.sem(ReasonWrongType, f, "expected a string")
			return s.skipValue(0)
		}
		start, end, esc, ok := s.str()
		if !ok {
			return false
		}
		p.str[f] = strSpan{start, end, esc}
		p.present |= bit
		if required && start == end {
			p.sem(ReasonEmptyField, f, "empty required string")
		}
		return true
	case f == fTS:
		return p.timestamp(f, &p.ts)
	case f == fTxTS:
		return p.timestamp(f, &p.txTS)
	case f == fFraud:
		switch c {
		case 't':
			p.fraud = true
			p.present |= bit
			return s.literal("true")
		case 'f':
			p.fraud = false
			p.present |= bit
			return s.literal("false")
		}
		p.sem(ReasonWrongType, f, "expected a boolean")
		return s.skipValue(0)
	default: // amount, lat, lon
		if c != '-' && (c < '0' || c > '9') {
			p.sem(ReasonWrongType, f, "expected a number")
			return s.skipValue(0)
		}
		start, end, _, ok := s.num()
		if !ok {
			return false
		}
		v, err := s.parseNumber(s.b[start:end])
		reason := ReasonInvalidGeo
		if f == fAmount {
			reason = ReasonInvalidAmount
		}
		if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
			p.sem(reason, f, "number out of range")
			return true
		}
		if v == 0 {
			v = 0 // fold -0
		}
		switch f {
		case fAmount:
			if v < 0 {
				p.sem(reason, f, "negative amount")
				return true
			}
			p.amount = v
		case fLat:
			if v < -90 || v > 90 {
				p.sem(reason, f, "latitude outside [-90, 90]")
				return true
			}
			p.lat = v
		case fLon:
			if v < -180 || v > 180 {
				p.sem(reason, f, "longitude outside [-180, 180]")
				return true
			}
			p.lon = v
		}
		p.present |= bit
		return true
	}
}

// timestamp scans the timestamp of field f (ts, or a label's tx_ts) into
// *dst: an RFC 3339 string or epoch milliseconds.
func (p *parse) timestamp(f int, dst *time.Time) bool {
	s := &p.s
	switch c := s.peek(); {
	case c == '"':
		start, end, esc, ok := s.str()
		if !ok {
			return false
		}
		raw := s.b[start:end]
		if esc {
			var buf [40]byte
			raw = appendUnescaped(buf[:0], raw)
		}
		t, ok := parseRFC3339(raw)
		if !ok {
			p.sem(ReasonInvalidTime, f, "not an RFC 3339 timestamp")
			return true
		}
		if t.Before(minEventTime) || !t.Before(maxEventTime) {
			p.sem(ReasonInvalidTime, f, "timestamp outside [1970, 2262)")
			return true
		}
		*dst = t
	case c == '-' || (c >= '0' && c <= '9'):
		start, end, isInt, ok := s.num()
		if !ok {
			return false
		}
		raw := s.b[start:end]
		if !isInt || raw[0] == '-' || len(raw) > 16 {
			p.sem(ReasonInvalidTime, f, "epoch milliseconds must be a non-negative integer")
			return true
		}
		ms, _ := digits(raw)
		if ms >= maxEpochMillis {
			p.sem(ReasonInvalidTime, f, "timestamp outside [1970, 2262)")
			return true
		}
		*dst = time.UnixMilli(int64(ms)).UTC()
	default:
		p.sem(ReasonWrongType, f, "expected an RFC 3339 string or epoch milliseconds")
		return s.skipValue(0)
	}
	p.present |= 1 << f
	return true
}

// Now returns a reading of the decoder's clock (WithClock; default
// time.Now), for DecodeAt, or the zero Time without
// reading the clock when the future-skew check is disabled
// (WithMaxFutureSkew negative): the check then needs none.
func (d *Decoder) Now() time.Time {
	if d.cfg.maxSkew < 0 {
		return time.Time{}
	}
	return d.cfg.clock()
}

// checkTime applies the future-skew check to the decoded timestamp,
// against now, or a reading of the decoder's clock when now is the zero
// Time.
func (d *Decoder) checkTime(t, now time.Time) error {
	if d.cfg.maxSkew < 0 {
		return nil
	}
	if now.IsZero() {
		now = d.cfg.clock()
	}
	if t.After(now.Add(d.cfg.maxSkew)) {
		return &DecodeError{Reason: ReasonFutureTime, Field: "ts",
			Err: fmt.Errorf("timestamp %s is more than %v ahead of %s", t.Format(time.RFC3339Nano), d.cfg.maxSkew, now.UTC().Format(time.RFC3339Nano))}
	}
	return nil
}

// protect applies the card-number policy to a scanned message: a string
// field holding a card number in clear is refused (card_id only without a
// key), and with a key, card_id's pseudonym is appended to dst and returned
// (nil: keep card_id as it is), followed, when the key has a previous one,
// by its pseudonym under that key (the alias, else nil). Both share dst's
// array.
func (d *Decoder) protect(p *parse, dst []byte) (pseudonym, alias []byte, err error) {
	key := d.cfg.pan
	for f := range nStrFields {
		if p.present&(1<<f) == 0 || (f == fCardID && key != nil) {
			continue
		}
		// Shorter than minPANDigits bytes, a value cannot hold that many
		// digits (nor escapes of them): panIn's own first test, without the call.
		if sp := p.str[f]; sp.end-sp.start >= minPANDigits && panIn(p.s.b[sp.start:sp.end]) {
			return nil, nil, &DecodeError{Reason: ReasonClearPAN, Field: fieldNames[f], Err: errClearPAN}
		}
	}
	if key == nil {
		return nil, nil, nil
	}
	sp := p.str[fCardID]
	card := p.s.b[sp.start:sp.end]
	if sp.esc {
		card = appendUnescaped(nil, card)
	}
	if id, ok := pseudonymKeyID(card); ok {
		if key.accepts(id) {
			return nil, nil, nil
		}
		return nil, nil, &DecodeError{Reason: ReasonPseudonymKey, Field: "card_id",
			Err: fmt.Errorf("a pseudonym under key id %q, which is not one of the PAN key file's", id)}
	}
	dst = key.appendPseudonym(dst, card)
	if !key.rotating() {
		return dst, nil, nil
	}
	n := len(dst)
	dst = key.appendAlias(dst, card)
	return dst[:n:n], dst[n:], nil
}

// strings materializes the present string fields with one allocation: all
// of them share one backing string. card, when not nil, replaces card_id;
// alias, when not nil, is written to *aliasOut (from the same backing
// string). One compact string, not the message's own bytes: tried on
// 2026-12-06, strings left in the message allocated nothing here but cost
// the engine more per event (BenchmarkFloor, 5 alternating rounds: own CPU
// 5.99 µs/event against 5.28 copying; likely the stage reading each
// event's strings from several cache lines of a message decoded on
// another core, where the copy is one line).
func (p *parse) strings(out [nStrFields]*string, card, alias []byte, aliasOut *string) {
	total := len(card) + len(alias)
	for f := range p.str {
		total += p.str[f].end - p.str[f].start
	}
	// buf is never written after the string is made from it: this is what
	// strings.Builder.String does, without the Builder's checks per Write.
	buf := make([]byte, 0, total)
	var bounds [nStrFields][2]int
	for f := range p.str { // by index: ranging over the array would copy it
		if out[f] == nil {
			continue
		}
		sp := &p.str[f]
		bounds[f][0] = len(buf)
		if f == fCardID && card != nil {
			buf = append(buf, card...)
		} else if sp.esc {
			buf = appendUnescaped(buf, p.s.b[sp.start:sp.end])
		} else {
			buf = append(buf, p.s.b[sp.start:sp.end]...)
		}
		bounds[f][1] = len(buf)
	}
	aliasAt := len(buf)
	buf = append(buf, alias...)
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	for f, o := range out {
		if o != nil {
			*o = all[bounds[f][0]:bounds[f][1]]
		}
	}
	if alias != nil {
		*aliasOut = all[aliasAt:]
	}
}

// Decode decodes one event from b into *e. For bad input it returns a
// *DecodeError carrying one of the Reason* codes and leaves *e unchanged.
// Strict: invalid UTF-8 anywhere, duplicate top-level keys, trailing data and
// null or mistyped required fields are errors; keys are case-sensitive;
// unknown fields are validated and skipped (duplicates among the first 16
// distinct unknown keys spelled without escapes are detected); a null
// optional field counts as absent. Decode allocates once on success (the
// backing string shared by all string fields) and never panics. It reads
// the decoder's clock once per event (the future-skew check): DecodeAt
// reads it once for many.
func (d *Decoder) Decode(b []byte, e *Event) error {
	return d.decodeEvent(b, e, time.Time{})
}

// DecodeAt is Decode with the future-skew check (WithMaxFutureSkew) made
// against now instead of a reading of the decoder's clock per event: a
// caller decoding a slice of messages reads the clock once (Now) and
// passes the reading to each, which saves a clock read per event (tens of
// nanoseconds to over a hundred on a virtual machine's clock). The trap:
// the check is as strict as the clock was when now was read, so the later
// messages of the slice are checked against a clock behind the real one
// by the time spent since, which makes the check stricter by that much
// (microseconds against the minutes of the skew, unless the caller waits
// between messages), never looser. The zero
// Time reads the clock, as Decode.
func (d *Decoder) DecodeAt(b []byte, e *Event, now time.Time) error {
	return d.decodeEvent(b, e, now)
}

func (d *Decoder) decodeEvent(b []byte, e *Event, now time.Time) error {
	p := parse{s: scanner{b: b}, required: eventRequired}
	if err := p.run(); err != nil {
		return err
	}
	return d.finishEvent(&p, e, now)
}

// finishEvent checks a scanned event (geo pair, then what finish checks)
// and materializes it into *e.
func (d *Decoder) finishEvent(p *parse, e *Event, now time.Time) error {
	hasLat, hasLon := p.present&(1<<fLat) != 0, p.present&(1<<fLon) != 0
	if hasLat != hasLon {
		f := "lat"
		if hasLat {
			f = "lon"
		}
		return &DecodeError{Reason: ReasonInvalidGeo, Field: f, Err: errors.New("lat and lon must be given together")}
	}
	var ev Event
	var out [nStrFields]*string
	out[fTxID], out[fCardID], out[fTerminalID] = &ev.TxID, &ev.CardID, &ev.TerminalID
	out[fCurrency], out[fMCC], out[fChannel], out[fCountry] = &ev.Currency, &ev.MCC, &ev.Channel, &ev.Country
	if err := d.finish(p, out, &ev.CardAlias, now); err != nil {
		return err
	}
	ev.TS = p.ts
	ev.Amount = p.amount
	if hasLat {
		ev.Lat, ev.Lon, ev.HasGeo = p.lat, p.lon, true
	}
	*e = ev
	return nil
}

// DecodeLabel decodes one label from b into *l, with the same strictness as
// Decode. tx_id, card_id, terminal_id, ts and fraud (a JSON boolean) are
// required; tx_ts (the transaction's time, as ts: RFC 3339 or epoch
// milliseconds) is optional and may not be after ts (a label cannot
// precede its transaction); scenario (a string naming the kind of fraud,
// e.g. "card_testing") is optional, kept only for evaluation. Errors are *DecodeError.
func (d *Decoder) DecodeLabel(b []byte, l *Label) error {
	p := parse{s: scanner{b: b}, required: labelRequired, label: true}
	if err := p.run(); err != nil {
		return AsLabelError(err)
	}
	return AsLabelError(d.finishLabel(&p, l))
}

// finishLabel checks a scanned label (tx_ts order, then what finish
// checks) and materializes it into *l.
func (d *Decoder) finishLabel(p *parse, l *Label) error {
	if p.present&(1<<fTxTS) != 0 && p.txTS.After(p.ts) {
		return &DecodeError{Reason: ReasonInvalidTime, Field: "tx_ts",
			Err: fmt.Errorf("tx_ts %s is after ts %s: a label cannot precede its transaction", p.txTS.Format(time.RFC3339Nano), p.ts.Format(time.RFC3339Nano))}
	}
	var lb Label
	var out [nStrFields]*string
	out[fTxID], out[fCardID], out[fTerminalID] = &lb.TxID, &lb.CardID, &lb.TerminalID
	out[fScenario] = &lb.Scenario
	if err := d.finish(p, out, &lb.CardAlias, time.Time{}); err != nil {
		return err
	}
	lb.TS = p.ts
	if p.present&(1<<fTxTS) != 0 {
		lb.TxTS = p.txTS
	}
	lb.Fraud = p.fraud
	*l = lb
	return nil
}

// finish runs the checks events and labels share (time skew, field
// lengths, card numbers: pseudonym and alias) and writes the string fields
// of out: the required ones always, the others only when present and not
// empty (their destination is left as is otherwise).
func (d *Decoder) finish(p *parse, out [nStrFields]*string, cardAlias *string, now time.Time) error {
	if err := d.checkTime(p.ts, now); err != nil {
		return err
	}
	if err := d.checkLengths(p); err != nil {
		return err
	}
	var cardBuf [2 * maxPseudonymLen]byte
	card, alias, err := d.protect(p, cardBuf[:0])
	if err != nil {
		return err
	}
	for f := range out {
		if f != fTxID && f != fCardID && f != fTerminalID && (p.present&(1<<f) == 0 || p.str[f].end <= p.str[f].start) {
			out[f] = nil
		}
	}
	p.strings(out, card, alias, cardAlias)
	return nil
}
