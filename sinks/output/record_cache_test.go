package output

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// TestRecordEncodingCaches checks that a record reused for a sequence of
// events — as a worker reuses its one record — encodes each exactly as a
// fresh record with the same fields does, when the models, the scores'
// names, the thresholds, the shadow maps or the feature names change between events, and
// that AppendJSONAfterScore gives AppendJSON's bytes.
func TestRecordEncodingCaches(t *testing.T) {
	mutations := []struct {
		name string
		f    func(a *AuditRecord)
	}{
		{name: "same fields", f: func(a *AuditRecord) {}},
		{name: "other ident", f: func(a *AuditRecord) {
			a.Models = []NamedModel{{"fraud", "fraud-mlp@4 sha256:99"}, {"risk", "risk-linear@1 sha256:0011223344ff"}}
		}},
		{name: "ident changed in place", f: func(a *AuditRecord) { a.Models[1].Ident = "risk-linear@2 sha256:77" }},
		{name: "score renamed in place", f: func(a *AuditRecord) { a.Scores[0].Name = "fraud_v2" }},
		{name: "one score fewer", f: func(a *AuditRecord) { a.Scores = a.Scores[:1]; a.Models = a.Models[:1] }},
		{name: "no scores", f: func(a *AuditRecord) { a.Scores, a.Models = nil, nil }},
		{name: "escaped names", f: func(a *AuditRecord) {
			a.Scores = []NamedScore{{"fr\"aud", 0.5}, {"ri\\sk", 2}}
			a.Models = []NamedModel{{"fr\"aud", "x\ny"}, {"ri\\sk", "r@1"}}
		}},
		{name: "values, pseudonym, late", f: func(a *AuditRecord) {
			a.Scores[0].Value, a.CardKeyID, a.Late, a.Reasons = 0.125, "k2", true, nil
		}},
		{name: "shadow", f: func(a *AuditRecord) {
			a.Shadow = []NamedScore{{"fraud", 0.41}}
			a.ShadowModels = []NamedModel{{"fraud", "fraud-mlp@5 sha256:9f"}}
		}},
		{name: "threshold changed in place", f: func(a *AuditRecord) { a.Thresholds[1].Alert = 120 }},
		{name: "threshold changed to -0 in place", f: func(a *AuditRecord) { a.Thresholds[1].Review = math.Copysign(0, -1) }},
		{name: "threshold -0 to 0 in place", f: func(a *AuditRecord) { a.Thresholds[1].Review = 0 }},
		{name: "threshold NaN in place", f: func(a *AuditRecord) { a.Thresholds[0].Alert = math.NaN() }},
		{name: "other thresholds", f: func(a *AuditRecord) { a.Thresholds = []Threshold{{"fr\"aud", 0.25, 0.5}} }},
		{name: "feature names", f: func(a *AuditRecord) { a.FeatureNames = []string{"a", "b", "c"} }},
		{name: "feature renamed in place", f: func(a *AuditRecord) { a.FeatureNames[1] = "b_2" }},
		{name: "feature names, equal strings elsewhere", f: func(a *AuditRecord) {
			a.FeatureNames = []string{string([]byte("a")), string([]byte("b_2")), string([]byte("c"))}
		}},
		{name: "feature names longer than a block", f: func(a *AuditRecord) {
			a.FeatureNames = []string{"a", strings.Repeat("long_", 9) + "x", "c"}
		}},
		{name: "feature keys of 48 and 49 bytes, escaped", f: func(a *AuditRecord) {
			a.FeatureNames = []string{strings.Repeat("n", 45), strings.Repeat("m", 44), "q\\" + strings.Repeat("o", 44)}
		}},
	}
	reused := sampleAudit()
	var buf []byte
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			m.f(&reused)
			// A fresh record with deep copies of the same fields.
			fresh := AuditRecord{ScoreRecord: ScoreRecord{TxID: reused.TxID, CardID: reused.CardID, TS: reused.TS,
				ScoredAt: reused.ScoredAt, Amount: reused.Amount, Currency: reused.Currency, Decision: reused.Decision,
				Scores: append([]NamedScore(nil), reused.Scores...), Models: append([]NamedModel(nil), reused.Models...),
				Reasons: append([]Reason(nil), reused.Reasons...), LatencyMS: reused.LatencyMS, CardKeyID: reused.CardKeyID, Late: reused.Late},
				FeatureNames: append([]string(nil), reused.FeatureNames...), Features: reused.Features, Thresholds: append([]Threshold(nil), reused.Thresholds...),
				Shadow: reused.Shadow, ShadowModels: reused.ShadowModels}
			for round := range 2 { // the second round runs on warm caches
				score := reused.ScoreRecord.AppendJSON(nil)
				if want := fresh.ScoreRecord.AppendJSON(nil); !bytes.Equal(score, want) {
					t.Fatalf("round %d: score record\n got %s\nwant %s", round, score, want)
				}
				want := fresh.AppendJSON(nil)
				if got := reused.AppendJSON(nil); !bytes.Equal(got, want) {
					t.Fatalf("round %d: audit record\n got %s\nwant %s", round, got, want)
				}
				// As the worker does: both in one buffer, the score record first.
				buf = reused.ScoreRecord.AppendJSON(buf[:0])
				n := len(buf)
				buf = reused.AppendJSONAfterScore(buf, buf[:n])
				if got := buf[n:]; !bytes.Equal(got, want) {
					t.Fatalf("round %d: AppendJSONAfterScore\n got %s\nwant %s", round, got, want)
				}
			}
		})
	}
	// A copy of a record shares its caches: encoding the copy with other
	// models must not change the original's encoding.
	orig := sampleScore()
	before := orig.AppendJSON(nil)
	cp := orig
	cp.Models = []NamedModel{{"fraud", "other@1"}, {"risk", "other@2"}}
	cp.AppendJSON(nil)
	if after := orig.AppendJSON(nil); !bytes.Equal(after, before) {
		t.Errorf("a copy's encoding changed the original's:\n got %s\nwant %s", after, before)
	}
}
