package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// ErrInvalidRecord is returned (wrapped, with the 1-based line number) by
// ReadScores for a line that is not a usable score record.
var ErrInvalidRecord = errors.New("eval: invalid score record")

// maxLine is the longest score-record line ReadScores accepts.
const maxLine = 16 << 20

// Scored is one transaction scored by one model.
type Scored struct {
	TxID, CardID string
	TS           time.Time // event time of the transaction, UTC
	Score        float64
	// Ident is the identity of the model that scored it, from the record's
	// "models" object ("fraud-mlp@3 sha256:…"); "" when absent.
	Ident string
	// Amount is the transaction's amount (the record's "amount"), valid
	// when HasAmount; records written before amounts were published have
	// none, and the money view is then left out.
	Amount    float64
	HasAmount bool
}

// Scores are one model's records from a score-record file.
type Scores struct {
	// Model is the key of the model in the records' "scores" object.
	Model string
	// Records holds one record per tx_id, in file order.
	Records []Scored
	// Duplicates counts records dropped because their tx_id came earlier in
	// the file (at-least-once delivery publishes some records twice); the
	// first one is kept.
	Duplicates int
	// Nulls counts records dropped because the model's score is null, the
	// score record's encoding of a non-finite score.
	Nulls int
}

// scoreLine is the part of a score record evaluation reads.
type scoreLine struct {
	TxID   *string             `json:"tx_id"`
	CardID *string             `json:"card_id"`
	TS     *string             `json:"ts"`
	Amount *float64            `json:"amount"`
	Scores map[string]*float64 `json:"scores"`
	Models map[string]string   `json:"models"`
}

// ReadScores reads JSON Lines score records (the stream's score-record
// contract) and keeps model's score of each. Blank lines are skipped. tx_id,
// card_id, ts (RFC 3339) and a score for model are required: a line without
// them, or that is not a JSON object, stops the read with an error naming
// the line and wrapping ErrInvalidRecord. Other fields are ignored.
func ReadScores(r io.Reader, model string) (*Scores, error) {
	s := &Scores{Model: model}
	seen := map[string]struct{}{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rec, null, err := parseScoreLine(line, model)
		if err != nil {
			return nil, fmt.Errorf("read scores: line %d: %w", n, err)
		}
		if _, dup := seen[rec.TxID]; dup {
			s.Duplicates++
			continue
		}
		seen[rec.TxID] = struct{}{}
		if null {
			s.Nulls++
			continue
		}
		s.Records = append(s.Records, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read scores: line %d: %w", n+1, err)
	}
	return s, nil
}

func parseScoreLine(line []byte, model string) (Scored, bool, error) {
	var l scoreLine
	if err := json.Unmarshal(line, &l); err != nil {
		return Scored{}, false, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	switch {
	case l.TxID == nil || *l.TxID == "":
		return Scored{}, false, fmt.Errorf("%w: missing or empty tx_id", ErrInvalidRecord)
	case l.CardID == nil || *l.CardID == "":
		return Scored{}, false, fmt.Errorf("%w: missing or empty card_id", ErrInvalidRecord)
	case l.TS == nil:
		return Scored{}, false, fmt.Errorf("%w: missing ts", ErrInvalidRecord)
	}
	ts, err := time.Parse(time.RFC3339Nano, *l.TS)
	if err != nil {
		return Scored{}, false, fmt.Errorf("%w: ts %q: want RFC 3339", ErrInvalidRecord, *l.TS)
	}
	v, ok := l.Scores[model]
	if !ok {
		have := slices.Sorted(maps.Keys(l.Scores))
		return Scored{}, false, fmt.Errorf("%w: no score for model %q (the record has: %s)", ErrInvalidRecord, model, strings.Join(have, ", "))
	}
	p := Scored{TxID: *l.TxID, CardID: *l.CardID, TS: ts.UTC(), Ident: l.Models[model]}
	if l.Amount != nil {
		if a := *l.Amount; a < 0 || math.IsInf(a, 0) {
			return Scored{}, false, fmt.Errorf("%w: amount %v: want a finite amount >= 0", ErrInvalidRecord, a)
		}
		p.Amount, p.HasAmount = *l.Amount, true
	}
	if v == nil {
		return p, true, nil
	}
	p.Score = *v
	return p, false, nil
}
