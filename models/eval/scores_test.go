package eval

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReadScores(t *testing.T) {
	in := `{"tx_id":"t1","card_id":"c1","ts":"2026-03-01T10:00:00.5Z","scored_at":"2026-03-01T10:00:00.6Z","scores":{"fraud":0.93,"risk":118.4},"decision":"alert","models":{"fraud":"fraud-mlp@3 sha256:ab12"},"reasons":[{"feature":"x","contribution":1.5}],"latency_ms":2.1}

{"tx_id":"t2","card_id":"c2","ts":"2026-03-01T12:00:00+02:00","scores":{"fraud":0.1}}
{"tx_id":"t1","card_id":"c1","ts":"2026-03-01T10:00:00.5Z","scores":{"fraud":0.5}}
{"tx_id":"t3","card_id":"c3","ts":"2026-03-01T11:00:00Z","scores":{"fraud":null}}
`
	s, err := ReadScores(strings.NewReader(in), "fraud")
	if err != nil {
		t.Fatal(err)
	}
	want := []Scored{
		{TxID: "t1", CardID: "c1", TS: time.Date(2026, 3, 1, 10, 0, 0, 5e8, time.UTC), Score: 0.93, Ident: "fraud-mlp@3 sha256:ab12"},
		{TxID: "t2", CardID: "c2", TS: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Score: 0.1},
	}
	if len(s.Records) != len(want) {
		t.Fatalf("got %d records %+v, want %d", len(s.Records), s.Records, len(want))
	}
	for i := range want {
		if g := s.Records[i]; g.TxID != want[i].TxID || g.CardID != want[i].CardID || !g.TS.Equal(want[i].TS) ||
			g.TS.Location() != time.UTC || g.Score != want[i].Score || g.Ident != want[i].Ident {
			t.Errorf("record %d: got %+v, want %+v", i, g, want[i])
		}
	}
	if s.Duplicates != 1 || s.Nulls != 1 || s.Model != "fraud" {
		t.Errorf("got model %q, %d duplicates, %d nulls; want fraud, 1, 1", s.Model, s.Duplicates, s.Nulls)
	}
}

func TestReadScoresErrors(t *testing.T) {
	good := `{"tx_id":"t1","card_id":"c1","ts":"2026-03-01T10:00:00Z","scores":{"fraud":0.9}}` + "\n"
	for _, tc := range []struct {
		name, line, want string
	}{
		{"not json", `{"tx_id":`, "unexpected end"},
		{"not an object", `[1,2]`, "cannot unmarshal"},
		{"no tx_id", `{"card_id":"c","ts":"2026-03-01T10:00:00Z","scores":{"fraud":1}}`, "tx_id"},
		{"empty card_id", `{"tx_id":"t","card_id":"","ts":"2026-03-01T10:00:00Z","scores":{"fraud":1}}`, "card_id"},
		{"no ts", `{"tx_id":"t","card_id":"c","scores":{"fraud":1}}`, "missing ts"},
		{"epoch ts", `{"tx_id":"t","card_id":"c","ts":1700000000000,"scores":{"fraud":1}}`, "cannot unmarshal"},
		{"bad ts", `{"tx_id":"t","card_id":"c","ts":"yesterday","scores":{"fraud":1}}`, `ts "yesterday"`},
		{"no score for the model", `{"tx_id":"t","card_id":"c","ts":"2026-03-01T10:00:00Z","scores":{"risk":1,"fraud_lr":0.2}}`, `no score for model "fraud" (the record has: fraud_lr, risk)`},
		{"score not a number", `{"tx_id":"t","card_id":"c","ts":"2026-03-01T10:00:00Z","scores":{"fraud":"high"}}`, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadScores(strings.NewReader(good+"\n"+tc.line+"\n"), "fraud")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("error %v does not wrap ErrInvalidRecord", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "line 3:") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want it to name line 3 and say %q", msg, tc.want)
			}
		})
	}
}
