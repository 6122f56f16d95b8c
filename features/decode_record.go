package features

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Reason codes of the binary input formats (Avro, Protobuf in the Confluent
// wire format), besides the JSON ones their records share.
const (
	// ReasonUnknownSchema: the record's schema id is not in the schema
	// registry (or the registry refused the schema as invalid).
	ReasonUnknownSchema = "unknown_schema"
	// ReasonSchemaMismatch: the writer schema lacks a required mapped
	// field, or gives a mapped field a type it cannot have (a boolean
	// amount), or names a message the schema does not hold.
	ReasonSchemaMismatch = "schema_mismatch"
	// ReasonMalformedRecord: the bytes are not a record of the wire format
	// (no magic byte, a truncated header or payload, an invalid varint).
	ReasonMalformedRecord = "malformed_record"
)

// RecordField names one field of the event and label contract, for
// decoders of binary formats that fill a Record.
type RecordField int

// The contract's fields. The order is the decoder's own (string fields
// first).
const (
	FieldTxID       = RecordField(fTxID)
	FieldCardID     = RecordField(fCardID)
	FieldTerminalID = RecordField(fTerminalID)
	FieldCurrency   = RecordField(fCurrency)
	FieldMCC        = RecordField(fMCC)
	FieldChannel    = RecordField(fChannel)
	FieldCountry    = RecordField(fCountry)
	FieldScenario   = RecordField(fScenario) // labels only
	FieldTS         = RecordField(fTS)
	FieldAmount     = RecordField(fAmount)
	FieldLat        = RecordField(fLat)
	FieldLon        = RecordField(fLon)
	FieldFraud      = RecordField(fFraud)
	FieldTxTS       = RecordField(fTxTS)
	NumRecordFields = RecordField(len(fieldNames))
)

// String returns the field's name in the JSON contract ("tx_id", "ts", …).
func (f RecordField) String() string {
	if f < 0 || f >= NumRecordFields {
		return "field(" + fmt.Sprint(int(f)) + ")"
	}
	return fieldNames[f]
}

// IsString reports whether f holds a string (ids, currency, mcc, channel,
// country, scenario).
func (f RecordField) IsString() bool { return f >= 0 && f < nStrFields }

// EventFields and LabelFields are the fields of an event and of a label.
var (
	EventFields = []RecordField{FieldTxID, FieldCardID, FieldTerminalID, FieldTS, FieldAmount,
		FieldCurrency, FieldMCC, FieldChannel, FieldCountry, FieldLat, FieldLon}
	LabelFields = []RecordField{FieldTxID, FieldCardID, FieldTerminalID, FieldTS, FieldFraud, FieldTxTS, FieldScenario}
)

// RequiredEvent and RequiredLabel report whether an event (a label) must
// have field f.
func RequiredEvent(f RecordField) bool { return f >= 0 && eventRequired&(1<<f) != 0 }

// RequiredLabel reports whether a label must have field f.
func RequiredLabel(f RecordField) bool { return f >= 0 && labelRequired&(1<<f) != 0 }

// Record is one event or label read field by field from a binary encoding
// (Avro, Protobuf), to be checked and materialized by Decoder.DecodeRecord
// or DecodeLabelRecord with exactly the rules of the JSON decoder. The Set
// methods record the first error, as the JSON scanner does; a field set
// twice is a duplicate_field. A Record is reused with Reset: its string
// buffer grows to the largest record and stays (no allocation per record).
// Not safe for concurrent use.
type Record struct {
	buf      []byte
	str      [nStrFields]strSpan
	seen     uint32
	present  uint32
	ts, txTS time.Time
	amount   float64
	lat, lon float64
	fraud    bool
	// first error
	reason, field, msg string
}

// Reset empties r for the next record, keeping its buffer.
func (r *Record) Reset() {
	buf := r.buf[:0]
	*r = Record{buf: buf}
}

// Fail records a decoding error of field f (its reason one of the Reason*
// codes), unless an earlier one is recorded. f < 0: the record as a whole.
func (r *Record) Fail(reason string, f RecordField, msg string) {
	if r.reason != "" {
		return
	}
	r.reason, r.msg = reason, msg
	if f >= 0 && f < NumRecordFields {
		r.field = fieldNames[f]
	}
}

// Failed reports whether an error is recorded.
func (r *Record) Failed() bool { return r.reason != "" }

// first marks f as seen and reports false (recording duplicate_field) if it
// was seen before.
func (r *Record) first(f RecordField) bool {
	bit := uint32(1) << f
	if r.seen&bit != 0 {
		r.Fail(ReasonDuplicateField, f, "field given twice")
		return false
	}
	r.seen |= bit
	return true
}

// SetNull records that field f holds null: absent when f is optional, a
// wrong_type error when required (RequiredEvent, RequiredLabel) is set.
func (r *Record) SetNull(f RecordField, required bool) {
	if !r.first(f) {
		return
	}
	if required {
		r.Fail(ReasonWrongType, f, "null for required field")
	}
}

// SetString sets string field f to b (copied). Invalid UTF-8 is an
// invalid_utf8 error; an empty required string is checked by Decode*.
func (r *Record) SetString(f RecordField, b []byte) {
	if !f.IsString() {
		r.Fail(ReasonWrongType, f, "expected a "+kindOf(f))
		return
	}
	if !r.first(f) {
		return
	}
	if !utf8.Valid(b) {
		r.Fail(ReasonInvalidUTF8, f, "invalid UTF-8")
		return
	}
	start := len(r.buf)
	r.buf = append(r.buf, b...)
	r.str[f] = strSpan{start: start, end: len(r.buf)}
	r.present |= 1 << f
}

// SetTime sets timestamp field f (ts, tx_ts). A time outside [1970, 2262)
// is an invalid_timestamp error.
func (r *Record) SetTime(f RecordField, t time.Time) {
	if f != FieldTS && f != FieldTxTS {
		r.Fail(ReasonWrongType, f, "expected a "+kindOf(f))
		return
	}
	if !r.first(f) {
		return
	}
	if t.Before(minEventTime) || !t.Before(maxEventTime) {
		r.Fail(ReasonInvalidTime, f, "timestamp outside [1970, 2262)")
		return
	}
	t = t.UTC()
	if f == FieldTS {
		r.ts = t
	} else {
		r.txTS = t
	}
	r.present |= 1 << f
}

// SetTimeText sets timestamp field f from RFC 3339 text, as the JSON
// contract's string form.
func (r *Record) SetTimeText(f RecordField, b []byte) {
	t, ok := parseRFC3339(b)
	if !ok {
		if r.first(f) {
			r.Fail(ReasonInvalidTime, f, "not an RFC 3339 timestamp")
		}
		return
	}
	r.SetTime(f, t)
}

// SetEpochMillis sets timestamp field f from epoch milliseconds, as the
// JSON contract's number form: negative is an invalid_timestamp error.
func (r *Record) SetEpochMillis(f RecordField, ms int64) {
	if ms < 0 || uint64(ms) >= maxEpochMillis {
		if r.first(f) {
			r.Fail(ReasonInvalidTime, f, "epoch milliseconds outside [1970, 2262)")
		}
		return
	}
	r.SetTime(f, time.UnixMilli(ms))
}

// SetNumber sets number field f (amount, lat, lon) with the JSON
// decoder's checks: finite, amount >= 0, lat in [-90, 90], lon in
// [-180, 180].
func (r *Record) SetNumber(f RecordField, v float64) {
	if f != FieldAmount && f != FieldLat && f != FieldLon {
		r.Fail(ReasonWrongType, f, "expected a "+kindOf(f))
		return
	}
	if !r.first(f) {
		return
	}
	reason := ReasonInvalidGeo
	if f == FieldAmount {
		reason = ReasonInvalidAmount
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		r.Fail(reason, f, "number out of range")
		return
	}
	if v == 0 {
		v = 0 // fold -0
	}
	switch f {
	case FieldAmount:
		if v < 0 {
			r.Fail(reason, f, "negative amount")
			return
		}
		r.amount = v
	case FieldLat:
		if v < -90 || v > 90 {
			r.Fail(reason, f, "latitude outside [-90, 90]")
			return
		}
		r.lat = v
	case FieldLon:
		if v < -180 || v > 180 {
			r.Fail(reason, f, "longitude outside [-180, 180]")
			return
		}
		r.lon = v
	}
	r.present |= 1 << f
}

// SetBool sets the boolean field (a label's fraud).
func (r *Record) SetBool(f RecordField, v bool) {
	if f != FieldFraud {
		r.Fail(ReasonWrongType, f, "expected a "+kindOf(f))
		return
	}
	if !r.first(f) {
		return
	}
	r.fraud = v
	r.present |= 1 << f
}

// kindOf names the kind of value field f holds.
func kindOf(f RecordField) string {
	switch {
	case f.IsString():
		return "string"
	case f == FieldTS || f == FieldTxTS:
		return "timestamp"
	case f == FieldFraud:
		return "boolean"
	}
	return "number"
}

// KindOf names the kind of value field f holds: "string", "timestamp",
// "number" or "boolean".
func KindOf(f RecordField) string { return kindOf(f) }

// parse turns r into the JSON scanner's result, so that the checks after
// the scan are the JSON decoder's own.
func (r *Record) parse(required uint32, label bool) (parse, error) {
	p := parse{s: scanner{b: r.buf}, required: required, label: label, seen: r.seen, present: r.present,
		str: r.str, ts: r.ts, txTS: r.txTS, amount: r.amount, lat: r.lat, lon: r.lon, fraud: r.fraud}
	if r.reason != "" {
		return p, &DecodeError{Reason: r.reason, Field: r.field, Err: errors.New(r.msg)}
	}
	for f := range nStrFields {
		if required&(1<<f) != 0 && p.present&(1<<f) != 0 && p.str[f].start == p.str[f].end {
			return p, &DecodeError{Reason: ReasonEmptyField, Field: fieldNames[f], Err: errors.New("empty required string")}
		}
	}
	if missing := required &^ p.present; missing != 0 {
		for _, f := range requiredOrder {
			if missing&(1<<f) != 0 {
				return p, &DecodeError{Reason: ReasonMissingField, Field: fieldNames[f], Err: errors.New("missing required field")}
			}
		}
	}
	return p, nil
}

// DecodeRecord checks the event in r and materializes it into *e with the
// rules of Decode (required fields, geo pair, future skew, field lengths,
// card-number policy and pseudonyms). Errors are *DecodeError; *e is then
// unchanged. It allocates once on success, as Decode.
func (d *Decoder) DecodeRecord(r *Record, e *Event) error {
	p, err := r.parse(eventRequired, false)
	if err != nil {
		return err
	}
	return d.finishEvent(&p, e, time.Time{})
}

// DecodeLabelRecord checks the label in r and materializes it into *l with
// the rules of DecodeLabel.
func (d *Decoder) DecodeLabelRecord(r *Record, l *Label) error {
	p, err := r.parse(labelRequired, true)
	if err != nil {
		return AsLabelError(err)
	}
	return AsLabelError(d.finishLabel(&p, l))
}
