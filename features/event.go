package features

import (
	"strconv"
	"time"

	"github.com/streamscore/streamscore/internal/jsonstr"
)

// Event is one payment transaction, as decoded from the transactions topic.
type Event struct {
	TxID, CardID, TerminalID string
	TS                       time.Time // event time, UTC
	Amount                   float64
	Currency, MCC, Channel   string // optional, "" when absent
	Country                  string // optional, "" when absent
	Lat, Lon                 float64
	HasGeo                   bool // lat and lon both present

	// CardAlias is, during a PAN-key rotation (WithPANKey with a previous
	// key), the card's pseudonym under the previous key, and "" otherwise
	// (no key, no previous key, or a card_id received already
	// pseudonymised). The Builder and the stream's per-card model state use
	// it once to move a card's state from its old pseudonym to CardID (see
	// Builder.Rekeyed), so that a rotation keeps every card's history. It is
	// never written to any record, snapshot or log: AppendJSON omits it.
	CardAlias string
}

// Label is delayed feedback about one transaction.
type Label struct {
	TxID, CardID, TerminalID string
	TS                       time.Time // when the label became known (chargeback time), NOT the tx time
	Fraud                    bool

	// TxTS is the labelled transaction's own time (tx_ts), the zero Time
	// when the label does not carry it. Fraud features counting by
	// transaction time (label_time: transaction, the default) place the
	// label at TxTS; without it, ApplyLabel looks the transaction up by
	// TxID in its terminal's retained history, and counts (and logs) the
	// labels it cannot place (Shared.UnplacedLabels). Not after TS.
	TxTS time.Time

	// Scenario names the kind of fraud ("card_testing",
	// "account_takeover", ...) when the label's source knows it (the
	// generator's labels do); "" when absent. Only evaluation reads it
	// (recall per scenario); no feature depends on it.
	Scenario string

	// CardAlias is the card's pseudonym under the previous PAN key during
	// a rotation, as for Event.CardAlias; AppendJSON omits it.
	CardAlias string
}

// AppendJSON appends e as one JSON object in the input contract's layout
// (ts as RFC 3339 with nanoseconds in UTC; optional fields only when set;
// lat/lon only when HasGeo) and returns the extended buffer. Decoding the
// result with a Decoder yields e again. Invalid UTF-8 in e's strings is
// written as U+FFFD; a non-finite Amount, Lat or Lon is written as 0.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"tx_id":`...)
	dst = jsonstr.Append(dst, e.TxID)
	dst = append(dst, `,"ts":"`...)
	dst = e.TS.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","card_id":`...)
	dst = jsonstr.Append(dst, e.CardID)
	dst = append(dst, `,"terminal_id":`...)
	dst = jsonstr.Append(dst, e.TerminalID)
	dst = append(dst, `,"amount":`...)
	dst = appendJSONFloat(dst, e.Amount)
	for _, f := range [...]struct{ k, v string }{
		{`,"currency":`, e.Currency},
		{`,"mcc":`, e.MCC},
		{`,"channel":`, e.Channel},
		{`,"country":`, e.Country},
	} {
		if f.v != "" {
			dst = append(dst, f.k...)
			dst = jsonstr.Append(dst, f.v)
		}
	}
	if e.HasGeo {
		dst = append(dst, `,"lat":`...)
		dst = appendJSONFloat(dst, e.Lat)
		dst = append(dst, `,"lon":`...)
		dst = appendJSONFloat(dst, e.Lon)
	}
	return append(dst, '}')
}

// AppendJSON appends l as one JSON object in the label contract's layout
// (tx_ts only when set) and returns the extended buffer.
func (l *Label) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"tx_id":`...)
	dst = jsonstr.Append(dst, l.TxID)
	dst = append(dst, `,"card_id":`...)
	dst = jsonstr.Append(dst, l.CardID)
	dst = append(dst, `,"terminal_id":`...)
	dst = jsonstr.Append(dst, l.TerminalID)
	dst = append(dst, `,"ts":"`...)
	dst = l.TS.UTC().AppendFormat(dst, time.RFC3339Nano)
	if !l.TxTS.IsZero() {
		dst = append(dst, `","tx_ts":"`...)
		dst = l.TxTS.UTC().AppendFormat(dst, time.RFC3339Nano)
	}
	dst = append(dst, `","fraud":`...)
	dst = strconv.AppendBool(dst, l.Fraud)
	if l.Scenario != "" {
		dst = append(dst, `,"scenario":`...)
		dst = jsonstr.Append(dst, l.Scenario)
	}
	return append(dst, '}')
}

func appendJSONFloat(dst []byte, f float64) []byte {
	if f != f || f > maxFloat64 || f < -maxFloat64 {
		f = 0
	}
	if f == 0 {
		return append(dst, '0') // also folds -0
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

const maxFloat64 = 1.79769313486231570814527423731704356798070e+308
