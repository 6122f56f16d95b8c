package output

import (
	"bytes"
	"testing"
)

func sampleShadowAudit() AuditRecord {
	r := sampleAudit()
	r.Shadow = []NamedScore{{"fraud", 0.41}, {"fraud_gbt", 0.07}}
	r.ShadowModels = []NamedModel{{"fraud", "fraud-mlp@4 sha256:9f00aa11bb22"}, {"fraud_gbt", "fraud_gbt-mlp@1 sha256:0123456789ab"}}
	return r
}

func TestAuditRecordShadow(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rec        AuditRecord
		wantShadow bool
	}{
		{"without shadow models", sampleAudit(), false},
		{"with shadow models", sampleShadowAudit(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.rec.AppendJSON(nil)
			var got jsonAudit
			decodeStrict(t, b, &got)
			checkScore(t, &tc.rec.ScoreRecord, &got.jsonScore)
			var m map[string]any
			decodeStrict(t, b, &m)
			_, hasShadow := m["shadow"]
			_, hasModels := m["shadow_models"]
			if hasShadow != tc.wantShadow || hasModels != tc.wantShadow {
				t.Fatalf("shadow members present: got %v/%v, want %v: %s", hasShadow, hasModels, tc.wantShadow, b)
			}
			if len(got.Shadow) != len(tc.rec.Shadow) || len(got.ShadowModels) != len(tc.rec.ShadowModels) {
				t.Fatalf("got %d shadow scores and %d models, want %d and %d", len(got.Shadow), len(got.ShadowModels), len(tc.rec.Shadow), len(tc.rec.ShadowModels))
			}
			for i, s := range tc.rec.Shadow {
				if got.Shadow[s.Name] != s.Value {
					t.Errorf("shadow %s: got %v, want %v", s.Name, got.Shadow[s.Name], s.Value)
				}
				if want := tc.rec.ShadowModels[i]; got.ShadowModels[want.Name] != want.Ident {
					t.Errorf("shadow model %s: got %q, want %q", want.Name, got.ShadowModels[want.Name], want.Ident)
				}
			}
			// Shadow scores never leak into the score members.
			for name := range got.Scores {
				if name == "fraud_gbt" {
					t.Errorf("shadow model %s among the scores", name)
				}
			}
			if !bytes.HasPrefix(b, tc.rec.ScoreRecord.AppendJSON(nil)[:len(tc.rec.ScoreRecord.AppendJSON(nil))-1]) {
				t.Errorf("audit record does not start with the score record members")
			}
		})
	}
}

func TestAuditRecordShadowGolden(t *testing.T) {
	r := sampleShadowAudit()
	checkGolden(t, "audit_shadow", r.AppendJSON(nil))
}
