package output

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	testTS       = time.Date(2026, 11, 28, 15, 4, 5, 123000000, time.UTC)
	testScoredAt = time.Date(2026, 11, 28, 16, 4, 5, 125200000, time.FixedZone("CET", 3600)) // printed in UTC
)

func sampleScore() ScoreRecord {
	return ScoreRecord{
		TxID: "t-000001", CardID: "c-42", TS: testTS, ScoredAt: testScoredAt,
		Amount: 57.2, Currency: "EUR",
		Scores:    []NamedScore{{"fraud", 0.93}, {"risk", 118.4}},
		Decision:  "alert",
		Models:    []NamedModel{{"fraud", "fraud-mlp@3 sha256:ab12cd34ef56"}, {"risk", "risk-linear@1 sha256:0011223344ff"}},
		Reasons:   []Reason{{"card_amount_sum_1h", 1.84}, {"term_fraud_rate_7d", -0.25}},
		LatencyMS: 2.1,
	}
}

func sampleAudit() AuditRecord {
	return AuditRecord{
		ScoreRecord:  sampleScore(),
		FeatureNames: []string{"card_amount_sum_1h", "card_tx_count_1h", "amount"},
		Features:     []float32{512.5, 3, 0.1},
		Thresholds:   []Threshold{{"fraud", 0.5, 0.8}, {"risk", 50, 100}},
	}
}

func sampleDeadLetter() DeadLetterRecord {
	return DeadLetterRecord{
		Topic: "transactions", Partition: 3, Offset: 1042,
		Key:    []byte("c-\xff42"),
		Reason: "invalid_amount", Error: "features: decode event: \"amount\": negative amount\n",
		Size: 212, Digest: bytes.Repeat([]byte{0xab}, 32), DigestKeyID: "k2",
		Redacted: []byte(`{"tx_id":"t-1","card_id":"p1:k2:AAAAAAAAAAAAAAAAAAAAAAAA","amount":-3}`),
		At:       testTS,
	}
}

// jsonScore mirrors the score record for decoding with encoding/json.
type jsonScore struct {
	TxID     string             `json:"tx_id"`
	CardID   string             `json:"card_id"`
	TS       time.Time          `json:"ts"`
	Amount   *float64           `json:"amount"`
	Currency string             `json:"currency"`
	ScoredAt time.Time          `json:"scored_at"`
	Scores   map[string]float64 `json:"scores"`
	Decision string             `json:"decision"`
	Models   map[string]string  `json:"models"`
	Reasons  []struct {
		Feature      string  `json:"feature"`
		Contribution float64 `json:"contribution"`
	} `json:"reasons"`
	LatencyMS *float64 `json:"latency_ms"`
}

type jsonAudit struct {
	jsonScore
	Features   map[string]float32 `json:"features"`
	Thresholds map[string]struct {
		Review float64 `json:"review"`
		Alert  float64 `json:"alert"`
	} `json:"thresholds"`
	Shadow       map[string]float64 `json:"shadow"`
	ShadowModels map[string]string  `json:"shadow_models"`
}

type jsonDeadLetter struct {
	Topic     string          `json:"topic"`
	Partition int             `json:"partition"`
	Offset    int64           `json:"offset"`
	Key       string          `json:"key"`
	KeyB64    []byte          `json:"key_b64"` // encoding/json decodes std base64 into []byte
	Reason    string          `json:"reason"`
	Error     string          `json:"error"`
	Size      int             `json:"value_size"`
	SHA       string          `json:"value_sha256"`
	HMAC      string          `json:"value_hmac_sha256"`
	HMACKeyID string          `json:"value_hmac_key_id"`
	Redacted  json.RawMessage `json:"value_redacted"`
	At        time.Time       `json:"dead_lettered_at"`
}

func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func checkScore(t *testing.T, r *ScoreRecord, got *jsonScore) {
	t.Helper()
	if got.TxID != r.TxID || got.CardID != r.CardID || got.Decision != r.Decision {
		t.Errorf("ids/decision: got %q %q %q, want %q %q %q", got.TxID, got.CardID, got.Decision, r.TxID, r.CardID, r.Decision)
	}
	if !got.TS.Equal(r.TS) || !got.ScoredAt.Equal(r.ScoredAt) || got.ScoredAt.Location() != time.UTC {
		t.Errorf("times: got %v %v, want %v %v (UTC)", got.TS, got.ScoredAt, r.TS, r.ScoredAt)
	}
	if len(got.Scores) != len(r.Scores) || len(got.Models) != len(r.Models) || len(got.Reasons) != len(r.Reasons) {
		t.Fatalf("lengths: got %d %d %d", len(got.Scores), len(got.Models), len(got.Reasons))
	}
	for _, s := range r.Scores {
		if got.Scores[s.Name] != s.Value {
			t.Errorf("score %s: got %v, want %v", s.Name, got.Scores[s.Name], s.Value)
		}
	}
	for _, m := range r.Models {
		if got.Models[m.Name] != m.Ident {
			t.Errorf("model %s: got %q, want %q", m.Name, got.Models[m.Name], m.Ident)
		}
	}
	for i, re := range r.Reasons {
		if got.Reasons[i].Feature != re.Feature || got.Reasons[i].Contribution != re.Contribution {
			t.Errorf("reason %d: got %+v, want %+v", i, got.Reasons[i], re)
		}
	}
	if got.Amount == nil || *got.Amount != r.Amount || got.Currency != r.Currency {
		t.Errorf("amount/currency: got %v %q, want %v %q", got.Amount, got.Currency, r.Amount, r.Currency)
	}
	if got.LatencyMS == nil || *got.LatencyMS != r.LatencyMS {
		t.Errorf("latency_ms: got %v, want %v", got.LatencyMS, r.LatencyMS)
	}
}

func TestScoreRecordRoundTrip(t *testing.T) {
	r := sampleScore()
	b := r.AppendJSON(nil)
	var got jsonScore
	decodeStrict(t, b, &got)
	checkScore(t, &r, &got)

	var m map[string]any
	decodeStrict(t, b, &m)
	want := []string{"tx_id", "card_id", "ts", "amount", "currency", "scored_at", "scores", "decision", "models", "reasons", "latency_ms"}
	if len(m) != len(want) {
		t.Errorf("got %d members, want %d: %v", len(m), len(want), m)
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("member %q missing", k)
		}
	}
	// A pseudonymised card's record names the key right after card_id.
	keyed := r
	keyed.CardID, keyed.CardKeyID = "p1:k2:AAAAAAAAAAAAAAAAAAAAAAAA", "k2"
	if kb := keyed.AppendJSON(nil); !bytes.Contains(kb, []byte(`"card_id":"p1:k2:AAAAAAAAAAAAAAAAAAAAAAAA","card_key_id":"k2","ts":`)) {
		t.Errorf("record with a card pseudonym: %s", kb)
	}
	// A late event's record ends with "late":true.
	late := r
	late.Late = true
	lb := late.AppendJSON(nil)
	if !bytes.HasSuffix(lb, []byte(`,"late":true}`)) || !bytes.Equal(lb[:len(b)-1], b[:len(b)-1]) {
		t.Errorf("late record %s, want the in-time record %s plus \"late\":true", lb, b)
	}
	// No currency in the event, none in the record; the amount stays.
	nocur := r
	nocur.Currency = ""
	if nb := nocur.AppendJSON(nil); bytes.Contains(nb, []byte(`"currency"`)) || !bytes.Contains(nb, []byte(`"ts":"2026-11-28T15:04:05.123Z","amount":57.2,"scored_at":`)) {
		t.Errorf("record without a currency: %s", nb)
	}
	if m["ts"] != "2026-11-28T15:04:05.123Z" || m["scored_at"] != "2026-11-28T15:04:05.1252Z" {
		t.Errorf("times: got %v %v", m["ts"], m["scored_at"])
	}
}

func TestAuditRecordRoundTrip(t *testing.T) {
	r := sampleAudit()
	b := r.AppendJSON(nil)
	var got jsonAudit
	decodeStrict(t, b, &got)
	checkScore(t, &r.ScoreRecord, &got.jsonScore)
	if len(got.Features) != len(r.Features) {
		t.Fatalf("features: got %v", got.Features)
	}
	for i, n := range r.FeatureNames {
		if got.Features[n] != r.Features[i] {
			t.Errorf("feature %s: got %v, want %v", n, got.Features[n], r.Features[i])
		}
	}
	for _, th := range r.Thresholds {
		g := got.Thresholds[th.Name]
		if g.Review != th.Review || g.Alert != th.Alert {
			t.Errorf("threshold %s: got %+v, want %+v", th.Name, g, th)
		}
	}
	var m map[string]any
	decodeStrict(t, b, &m)
	if f := m["features"].(map[string]any); f["amount"] != 0.1 { // float32 printed shortest
		t.Errorf("features.amount: got %v, want 0.1", f["amount"])
	}
}

func TestDeadLetterRecordRoundTrip(t *testing.T) {
	r := sampleDeadLetter()
	b := r.AppendJSON(nil)
	var got jsonDeadLetter
	decodeStrict(t, b, &got)
	if got.Topic != r.Topic || got.Partition != r.Partition || got.Offset != r.Offset ||
		got.Reason != r.Reason || got.Error != r.Error || !got.At.Equal(r.At) {
		t.Errorf("got %+v, want %+v", got, r)
	}
	if !bytes.Equal(got.KeyB64, r.Key) || got.Size != r.Size || got.HMAC != hex.EncodeToString(r.Digest) ||
		got.HMACKeyID != r.DigestKeyID || got.SHA != "" || !bytes.Equal(got.Redacted, r.Redacted) {
		t.Errorf("got %+v, want %+v", got, r)
	}
	if want := "c-\ufffd42"; got.Key != want {
		t.Errorf("key: got %q, want %q", got.Key, want)
	}
	var m map[string]any
	decodeStrict(t, b, &m)
	if len(m) != 12 {
		t.Errorf("got %d members, want 12: %v", len(m), m)
	}

	empty := DeadLetterRecord{}
	got = jsonDeadLetter{}
	decodeStrict(t, empty.AppendJSON(nil), &got)
	if got.Key != "" || len(got.KeyB64) != 0 || got.Redacted != nil || got.SHA != "" || got.HMAC != "" {
		t.Errorf("empty record: got %+v", got)
	}
	plain := DeadLetterRecord{Digest: []byte{1, 2}}
	got = jsonDeadLetter{}
	decodeStrict(t, plain.AppendJSON(nil), &got)
	if got.SHA != "0102" || got.HMAC != "" || got.HMACKeyID != "" {
		t.Errorf("unkeyed digest: got %+v", got)
	}
}

func TestRecordGolden(t *testing.T) {
	score, audit, dl := sampleScore(), sampleAudit(), sampleDeadLetter()
	tests := []struct {
		name string
		got  []byte
	}{
		{"score", score.AppendJSON(nil)},
		{"audit", audit.AppendJSON(nil)},
		{"deadletter", dl.AppendJSON(nil)},
		{"score_empty", (&ScoreRecord{}).AppendJSON(nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkGolden(t, tc.name, tc.got) })
	}
}

// checkGolden compares got, plus a newline, with testdata/<name>.golden.json
// (rewritten first with -update).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden.json")
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestScoreRecordExactLayout(t *testing.T) {
	r := ScoreRecord{
		TxID: "t-000001", CardID: "c-42", TS: testTS, ScoredAt: testTS, Amount: 1250,
		Scores: []NamedScore{{"fraud", 0.93}, {"risk", 118.4}}, Decision: "alert",
		Models:  []NamedModel{{"fraud", "fraud-mlp@3 sha256:ab12"}},
		Reasons: []Reason{{"card_amount_sum_1h", 1.84}}, LatencyMS: 2.1,
	}
	want := `{"tx_id":"t-000001","card_id":"c-42","ts":"2026-11-28T15:04:05.123Z","amount":1250,"scored_at":"2026-11-28T15:04:05.123Z",` +
		`"scores":{"fraud":0.93,"risk":118.4},"decision":"alert","models":{"fraud":"fraud-mlp@3 sha256:ab12"},` +
		`"reasons":[{"feature":"card_amount_sum_1h","contribution":1.84}],"latency_ms":2.1}`
	if got := string(r.AppendJSON(nil)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	prefix := []byte("prefix ")
	if got := r.AppendJSON(prefix); string(got) != "prefix "+want {
		t.Errorf("append to prefix: got %s", got)
	}
}

func TestNonFiniteIsNull(t *testing.T) {
	r := AuditRecord{
		ScoreRecord: ScoreRecord{
			Scores:    []NamedScore{{"a", math.NaN()}, {"b", math.Inf(1)}, {"c", math.Inf(-1)}},
			Reasons:   []Reason{{"x", math.NaN()}},
			LatencyMS: math.Inf(1),
		},
		FeatureNames: []string{"f"},
		Features:     []float32{float32(math.NaN())},
		Thresholds:   []Threshold{{"a", math.NaN(), math.Inf(1)}},
	}
	b := r.AppendJSON(nil)
	var m map[string]any
	decodeStrict(t, b, &m)
	if s := m["scores"].(map[string]any); s["a"] != nil || s["b"] != nil || s["c"] != nil {
		t.Errorf("scores: got %v, want nulls", s)
	}
	if m["latency_ms"] != nil || m["features"].(map[string]any)["f"] != nil {
		t.Errorf("latency/features: got %v %v", m["latency_ms"], m["features"])
	}
}

func TestFloatFormat(t *testing.T) {
	tests := []struct {
		name string
		in   float64
		bits int
		want string
	}{
		{"simple", 0.93, 64, "0.93"},
		{"integer", 3, 64, "3"},
		{"negative", -1.5, 64, "-1.5"},
		{"zero", 0, 64, "0"},
		{"large", 1e21, 64, "1e+21"},
		{"small", 1e-7, 64, "1e-07"},
		{"float32 tenth", float64(float32(0.1)), 32, "0.1"},
		{"max", math.MaxFloat64, 64, "1.7976931348623157e+308"},
		{"nan", math.NaN(), 64, "null"},
		{"-inf", math.Inf(-1), 32, "null"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendFloat(nil, tc.in, tc.bits))
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("%s is not valid JSON", got)
			}
		})
	}
}

func TestAppendJSONNoAllocs(t *testing.T) {
	score, audit, shadow, dl := sampleScore(), sampleAudit(), sampleShadowAudit(), sampleDeadLetter()
	buf := make([]byte, 0, 4096)
	tests := []struct {
		name string
		fn   func()
	}{
		{"score", func() { buf = score.AppendJSON(buf[:0]) }},
		{"audit", func() { buf = audit.AppendJSON(buf[:0]) }},
		{"audit_shadow", func() { buf = shadow.AppendJSON(buf[:0]) }},
		{"deadletter", func() { buf = dl.AppendJSON(buf[:0]) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.fn); n != 0 {
				t.Errorf("got %v allocs per AppendJSON, want 0", n)
			}
		})
	}
}

func TestRecordStructsMatchMirror(t *testing.T) {
	// Guards the mirrors above: a field added to a record must be encoded.
	for _, tc := range []struct {
		name   string
		record any
		fields int
	}{
		{"score", ScoreRecord{}, 13},
		{"audit", AuditRecord{}, 6},
		{"deadletter", DeadLetterRecord{}, 12},
	} {
		n := 0
		for _, f := range reflect.VisibleFields(reflect.TypeOf(tc.record)) {
			if f.IsExported() && len(f.Index) == 1 {
				n++
			}
		}
		if n != tc.fields {
			t.Errorf("%s has %d fields, the encoder knows %d: update AppendJSON and the tests", tc.name, n, tc.fields)
		}
	}
}

// scoreStd is what the record looks like to encoding/json, as a baseline.
type scoreStd struct {
	TxID     string             `json:"tx_id"`
	CardID   string             `json:"card_id"`
	TS       time.Time          `json:"ts"`
	ScoredAt time.Time          `json:"scored_at"`
	Scores   map[string]float64 `json:"scores"`
	Decision string             `json:"decision"`
	Models   map[string]string  `json:"models"`
	Reasons  []struct {
		Feature      string  `json:"feature"`
		Contribution float64 `json:"contribution"`
	} `json:"reasons"`
	LatencyMS float64 `json:"latency_ms"`
}

func BenchmarkRecordAppendJSON(b *testing.B) {
	score, audit, dl := sampleScore(), sampleAudit(), sampleDeadLetter()
	var std scoreStd
	decodeStrictB(b, score.AppendJSON(nil), &std)
	buf := make([]byte, 0, 4096)
	for _, bc := range []struct {
		name string
		fn   func() []byte
	}{
		{"score", func() []byte { return score.AppendJSON(buf[:0]) }},
		{"audit", func() []byte { return audit.AppendJSON(buf[:0]) }},
		{"deadletter", func() []byte { return dl.AppendJSON(buf[:0]) }},
		{"score_encoding_json", func() []byte { out, _ := json.Marshal(&std); return out }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.fn())))
			b.ReportAllocs()
			for b.Loop() {
				buf = bc.fn()
			}
		})
	}
}

func decodeStrictB(b *testing.B, data []byte, v any) {
	b.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		b.Fatal(err)
	}
}
