package output

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// valueSet is testdata/values.txt (see TestCaptureValues): the numbers of
// the records of realistic traffic.
type valueSet struct {
	names, models []string
	events        []valueEvent
}

type valueEvent struct {
	amount, latency float64
	scores          []float64 // float32 scores, widened as the worker does
	row             []float32
}

func loadValues(tb testing.TB) *valueSet {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "values.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	vs := &valueSet{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	parse := func(s string, bits int) float64 {
		v, err := strconv.ParseFloat(s, bits)
		if err != nil {
			tb.Fatalf("values.txt: %v", err)
		}
		return v
	}
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "names":
			vs.names = fields[1:]
		case "models":
			vs.models = fields[1:]
		case "e":
			if len(fields) != 1+2+len(vs.models)+1+len(vs.names) || fields[3+len(vs.models)] != "|" {
				tb.Fatalf("values.txt: event line with %d fields", len(fields))
			}
			e := valueEvent{amount: parse(fields[1], 64), latency: parse(fields[2], 64)}
			for _, s := range fields[3 : 3+len(vs.models)] {
				e.scores = append(e.scores, float64(float32(parse(s, 32))))
			}
			for _, s := range fields[4+len(vs.models):] {
				e.row = append(e.row, float32(parse(s, 32)))
			}
			vs.events = append(vs.events, e)
		default:
			tb.Fatalf("values.txt: unknown line %q", fields[0])
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(vs.events) == 0 {
		tb.Fatal("values.txt: no events")
	}
	return vs
}

// records returns the score and audit records of the events of vs, filled
// as the worker fills its one record (decision, models, reasons and
// thresholds as the shipped configuration has them).
func (vs *valueSet) records() []AuditRecord {
	models := make([]NamedModel, len(vs.models))
	thresholds := make([]Threshold, len(vs.models))
	for i, m := range vs.models {
		models[i] = NamedModel{m, m + "-mlp@1 sha256:e8e64018f31d"}
		thresholds[i] = Threshold{m, 0.5, 0.8}
	}
	ts := time.Date(2026, 11, 28, 15, 4, 5, 0, time.UTC)
	recs := make([]AuditRecord, len(vs.events))
	for i, e := range vs.events {
		scores := make([]NamedScore, len(vs.models))
		for j, m := range vs.models {
			scores[j] = NamedScore{m, e.scores[j]}
		}
		at := ts.Add(time.Duration(i) * 1_234_567_891)
		recs[i] = AuditRecord{
			ScoreRecord: ScoreRecord{TxID: "t-" + strconv.Itoa(100000+i), CardID: "c-" + strconv.Itoa(i%2000),
				TS: at, ScoredAt: at.Add(time.Duration(e.latency * 1e6)), Amount: e.amount, Currency: "EUR",
				Scores: scores, Decision: "approve", Models: models, LatencyMS: e.latency},
			FeatureNames: vs.names, Features: e.row, Thresholds: thresholds,
		}
	}
	return recs
}

// BenchmarkRecordsRealistic encodes the score record and then the audit
// record of each captured event (as the worker does: both into one buffer,
// the audit record after the score record's bytes), cycling over the
// events. ns/op is per event (score + audit).
func BenchmarkRecordsRealistic(b *testing.B) {
	vs := loadValues(b)
	recs := vs.records()
	// One reused record, as the worker has: its caches stay warm.
	var rec AuditRecord
	buf := make([]byte, 0, 8192)
	fill := func(i int) {
		src := &recs[i%len(recs)]
		caches := rec.ScoreRecord.enc
		rec.ScoreRecord = src.ScoreRecord
		rec.ScoreRecord.enc = caches
		rec.FeatureNames, rec.Features, rec.Thresholds = src.FeatureNames, src.Features, src.Thresholds
	}
	b.Run("score", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			fill(i)
			buf = rec.ScoreRecord.AppendJSON(buf[:0])
			i++
		}
	})
	b.Run("score+audit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			fill(i)
			buf = rec.ScoreRecord.AppendJSON(buf[:0])
			n := len(buf)
			buf = rec.AppendJSONAfterScore(buf, buf[:n])
			i++
		}
	})
}

// TestValuesRealistic checks the encoders on the captured values against
// strconv (appendFloatRef): every feature value as a float32, every score,
// amount and latency as the float64 the records carry.
func TestValuesRealistic(t *testing.T) {
	vs := loadValues(t)
	var got, want []byte
	for _, e := range vs.events {
		for _, f := range e.row {
			got = appendFloat32(got[:0], f)
			want = appendFloatRef(want[:0], float64(f), 32)
			if string(got) != string(want) {
				t.Fatalf("feature %v: got %s, want %s", f, got, want)
			}
		}
		for _, v := range append([]float64{e.amount, e.latency}, e.scores...) {
			got = appendFloat(got[:0], v, 64)
			want = appendFloatRef(want[:0], v, 64)
			if string(got) != string(want) {
				t.Fatalf("%v: got %s, want %s", v, got, want)
			}
		}
	}
}

// TestAuditRecordsRealistic compares the score and audit records of the
// captured values, encoded as the worker encodes them (one reused record,
// both into one buffer), with an encoding by strconv and
// time.AppendFormat alone: every number, timestamp and key of them.
func TestAuditRecordsRealistic(t *testing.T) {
	vs := loadValues(t)
	recs := vs.records()
	var rec AuditRecord
	buf := make([]byte, 0, 64) // grown by the encoders
	for i := range recs {
		src := &recs[i]
		caches := rec.ScoreRecord.enc
		rec.ScoreRecord = src.ScoreRecord
		rec.ScoreRecord.enc = caches
		rec.FeatureNames, rec.Features, rec.Thresholds = src.FeatureNames, src.Features, src.Thresholds
		buf = rec.ScoreRecord.AppendJSON(buf[:0])
		n := len(buf)
		buf = rec.AppendJSONAfterScore(buf, buf[:n])
		score, audit := refScoreJSON(&src.ScoreRecord), refAuditRest(src)
		if string(buf[:n]) != score+"}" {
			t.Fatalf("event %d: score record\n got %s\nwant %s}", i, buf[:n], score)
		}
		if string(buf[n:]) != score+audit {
			t.Fatalf("event %d: audit record\n got %s\nwant %s%s", i, buf[n:], score, audit)
		}
	}
}

// refScoreJSON is the score record r without its closing brace, by
// strconv and AppendFormat (for records without reasons, card key or
// lateness, with plain names).
func refScoreJSON(r *ScoreRecord) string {
	num := func(f float64) string { return string(appendFloatRef(nil, f, 64)) }
	tm := func(t time.Time) string { return `"` + t.UTC().Format(time.RFC3339Nano) + `"` }
	s := `{"tx_id":"` + r.TxID + `","card_id":"` + r.CardID + `","ts":` + tm(r.TS) + `,"amount":` + num(r.Amount) +
		`,"currency":"` + r.Currency + `","scored_at":` + tm(r.ScoredAt) + `,"scores":{`
	for i, sc := range r.Scores {
		if i > 0 {
			s += ","
		}
		s += `"` + sc.Name + `":` + num(sc.Value)
	}
	s += `},"decision":"` + r.Decision + `","models":{`
	for i, m := range r.Models {
		if i > 0 {
			s += ","
		}
		s += `"` + m.Name + `":"` + m.Ident + `"`
	}
	return s + `},"reasons":[],"latency_ms":` + num(r.LatencyMS)
}

// refAuditRest is the audit record's own members after the score
// record's, by strconv alone.
func refAuditRest(r *AuditRecord) string {
	s := `,"features":{`
	for i, name := range r.FeatureNames {
		if i > 0 {
			s += ","
		}
		s += `"` + name + `":` + string(appendFloatRef(nil, float64(r.Features[i]), 32))
	}
	s += `},"thresholds":{`
	for i, th := range r.Thresholds {
		if i > 0 {
			s += ","
		}
		s += `"` + th.Name + `":{"review":` + string(appendFloatRef(nil, th.Review, 64)) +
			`,"alert":` + string(appendFloatRef(nil, th.Alert, 64)) + `}`
	}
	return s + "}}"
}

// appendFloatRef is appendFloat without fast paths: strconv alone, the
// oracle of the encoders' numbers.
func appendFloatRef(dst []byte, f float64, bitSize int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if bitSize == 64 && float64(float32(f)) == f {
		bitSize = 32
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bitSize)
}

// BenchmarkFloatsRealistic encodes the captured feature values (features)
// and scores (scores), ns/op per value, with the encoder (fast), the
// linear-scan encoder it replaced (scan) and strconv (strconv); and the
// feature rows with their keys as the audit record writes them
// (features/rows, ns/op per row and ns/value).
func BenchmarkFloatsRealistic(b *testing.B) {
	vs := loadValues(b)
	var feats []float32
	var scores []float64
	for _, e := range vs.events {
		feats = append(feats, e.row...)
		scores = append(scores, e.scores...)
	}
	buf := make([]byte, 0, 64)
	for _, bc := range []struct {
		name string
		fn   func([]byte, float32) []byte
	}{
		{"fast", appendFloat32},
		{"scan", appendFloat32Scan},
		{"strconv", func(dst []byte, f float32) []byte { return appendFloatRef(dst, float64(f), 32) }},
	} {
		b.Run("features/"+bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				buf = bc.fn(buf[:0], feats[i%len(feats)])
				i++
			}
		})
	}
	// The audit record's loop: whole rows with their keys, ns/op per value.
	b.Run("features/rows", func(b *testing.B) {
		rec := AuditRecord{FeatureNames: vs.names}
		keys := rec.featureKeys()
		if keys.blocks == nil {
			b.Fatal("values.txt: a feature key longer than a block")
		}
		room := make([]byte, len(vs.names)*(keyWords+floatRoom))
		i, n := 0, 0
		for b.Loop() {
			row := vs.events[i%len(vs.events)].row
			putFloats(room, row, keys.blocks[:len(row)])
			i++
			n += len(row)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/value")
	})
	for _, bc := range []struct {
		name string
		fn   func([]byte, float64, int) []byte
	}{
		{"fast", appendFloat},
		{"strconv", appendFloatRef},
	} {
		b.Run("scores/"+bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				buf = bc.fn(buf[:0], scores[i%len(scores)], 64)
				i++
			}
		})
	}
}
