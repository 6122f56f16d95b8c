package output

import (
	"slices"
	"time"
	"unsafe"
)

// NamedScore is one model's score: "scores":{"<Name>":<Value>,...}.
type NamedScore struct {
	Name  string
	Value float64
}

// NamedModel names the model behind a score: "models":{"<Name>":"<Ident>"}.
type NamedModel struct {
	Name  string // key in the record, the same as NamedScore.Name
	Ident string // "fraud-mlp@3 sha256:ab12cd34ef56"
}

// Reason is one feature's contribution to the decision.
type Reason struct {
	Feature      string
	Contribution float64
}

// ScoreRecord is the output record of one scored event, published to NATS
// and Kafka alike:
//
//	{"tx_id":"t-000001","card_id":"c-42","ts":"2026-11-28T15:04:05.123Z",
//	 "amount":57.2,"currency":"EUR",
//	 "scored_at":"2026-11-28T15:04:05.1252Z","scores":{"fraud":0.93,"risk":118.4},
//	 "decision":"alert","models":{"fraud":"fraud-mlp@3 sha256:ab12cd34ef56"},
//	 "reasons":[{"feature":"card_amount_sum_1h","contribution":1.84}],
//	 "latency_ms":2.1}
//
// Amount is the transaction's amount as decoded from the event (the
// evaluation's money view reads it); currency follows it only when the event
// had one.
//
// Times are RFC 3339 in UTC with up to nanosecond precision. Numbers use the
// shortest representation that round-trips (strconv 'g'); a non-finite score,
// contribution or latency is written as null, since JSON has no NaN or
// infinity. Scores, models and reasons keep their slice order; empty or nil
// slices are written as {} or []. Key order is fixed as above. Names within
// Scores (and within Models) must be distinct: they become object keys and
// are not checked.
type ScoreRecord struct {
	TxID, CardID string
	TS, ScoredAt time.Time
	// Amount and Currency are the event's: "amount" is always written
	// (right after ts), "currency" only when not empty.
	Amount    float64
	Currency  string
	Scores    []NamedScore
	Decision  string
	Models    []NamedModel
	Reasons   []Reason
	LatencyMS float64
	// CardKeyID is the id of the PAN key that made CardID, when CardID is a
	// card pseudonym ("p1:<key-id>:<mac>"): written as "card_key_id" right
	// after card_id, and only then, so downstream systems know which key's
	// pseudonyms they are joining on (two during a key rotation).
	CardKeyID string
	// Late marks an event older than its card's or terminal's newest event
	// by more than the allowed lateness: it was scored against the state
	// but not applied to it. Written as "late":true after latency_ms, and
	// only then (in-time records have no "late" member).
	Late bool

	enc encodedMaps // Models and the names of Scores, encoded once
}

// encodedMaps caches the encoding of the parts of a record that a worker
// reuses for every record — the "models" object and the keys of the
// "scores" object — rebuilt whenever the slices' contents change (they are
// compared, element by element, on every record). A rebuild allocates new
// slices, never writing into the old ones, so copies of a record (which
// share them) stay correct.
type encodedMaps struct {
	models     []NamedModel // the Models encoded in modelsJSON
	modelsJSON []byte
	names      []string // the Scores' names encoded in keys
	keys       []byte   // `"name":` per score, back to back
	keyEnds    []int
}

// modelMap returns the encoded "models" object of ms.
func (c *encodedMaps) modelMap(ms []NamedModel) []byte {
	if c.modelsJSON == nil || !(sameMemory(c.models, ms) || slices.Equal(c.models, ms)) {
		c.models = slices.Clone(ms)
		c.modelsJSON = appendModelMap(make([]byte, 0, 64*len(ms)+2), ms)
	}
	return c.modelsJSON
}

// scoreKeys returns the encoded keys of scores' names and their ends.
func (c *encodedMaps) scoreKeys(scores []NamedScore) ([]byte, []int) {
	same := c.keyEnds != nil && len(c.names) == len(scores)
	for i := 0; same && i < len(scores); i++ {
		// The same string (the worker's names) without a call first.
		a, b := c.names[i], scores[i].Name
		same = len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
	}
	if !same {
		c.names, c.keys, c.keyEnds = make([]string, 0, len(scores)), nil, make([]int, 0, len(scores))
		for i := range scores {
			c.names = append(c.names, scores[i].Name)
			c.keys = appendString(c.keys, scores[i].Name)
			c.keys = append(c.keys, ':')
			c.keyEnds = append(c.keyEnds, len(c.keys))
		}
	}
	return c.keys, c.keyEnds
}

// appendScores appends {"name":value,...} with the cached keys.
func (c *encodedMaps) appendScores(dst []byte, scores []NamedScore) []byte {
	keys, ends := c.scoreKeys(scores)
	dst = append(dst, '{')
	start := 0
	for i := range scores {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, keys[start:ends[i]]...)
		start = ends[i]
		dst = appendFloat(dst, scores[i].Value, 64)
	}
	return append(dst, '}')
}

// AppendJSON appends the record as one JSON object (no trailing newline) and
// returns the extended slice. It does not allocate when dst has capacity;
// it may use up to 24 bytes of dst's spare capacity past what it appends
// as scratch (numbers are written as whole words, past their last digit).
func (r *ScoreRecord) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = r.appendFields(dst)
	return append(dst, '}')
}

// appendFields appends the members of r without the enclosing braces (the
// keys as whole constant strings: one move each, not appendKey's four
// appends).
func (r *ScoreRecord) appendFields(dst []byte) []byte {
	dst = append(dst, `"tx_id":`...)
	dst = appendString(dst, r.TxID)
	dst = append(dst, `,"card_id":`...)
	dst = appendString(dst, r.CardID)
	if r.CardKeyID != "" {
		dst = append(dst, `,"card_key_id":`...)
		dst = appendString(dst, r.CardKeyID)
	}
	dst = append(dst, `,"ts":`...)
	dst = appendTime(dst, r.TS)
	dst = append(dst, `,"amount":`...)
	dst = appendFloat(dst, r.Amount, 64)
	if r.Currency != "" {
		dst = append(dst, `,"currency":`...)
		dst = appendString(dst, r.Currency)
	}
	dst = append(dst, `,"scored_at":`...)
	dst = appendTime(dst, r.ScoredAt)
	dst = append(dst, `,"scores":`...)
	dst = r.enc.appendScores(dst, r.Scores)
	dst = append(dst, `,"decision":`...)
	dst = appendString(dst, r.Decision)
	dst = append(dst, `,"models":`...)
	dst = append(dst, r.enc.modelMap(r.Models)...)
	dst = append(dst, `,"reasons":`...)
	dst = append(dst, '[')
	for i := range r.Reasons {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"feature":`...)
		dst = appendString(dst, r.Reasons[i].Feature)
		dst = append(dst, `,"contribution":`...)
		dst = appendFloat(dst, r.Reasons[i].Contribution, 64)
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	dst = append(dst, `,"latency_ms":`...)
	dst = appendFloat(dst, r.LatencyMS, 64)
	if r.Late {
		dst = append(dst, `,"late":`...)
		dst = append(dst, "true"...)
	}
	return dst
}

// appendScoreMap appends {"name":value,...}.
func appendScoreMap(dst []byte, scores []NamedScore) []byte {
	dst = append(dst, '{')
	for i := range scores {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, scores[i].Name)
		dst = append(dst, ':')
		dst = appendFloat(dst, scores[i].Value, 64)
	}
	return append(dst, '}')
}

// appendModelMap appends {"name":"ident",...}.
func appendModelMap(dst []byte, ms []NamedModel) []byte {
	dst = append(dst, '{')
	for i := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, ms[i].Name)
		dst = append(dst, ':')
		dst = appendString(dst, ms[i].Ident)
	}
	return append(dst, '}')
}
