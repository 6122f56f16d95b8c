package output

import (
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// AuditProtoSchema is the Protobuf schema of an audit record encoded by
// AuditRecord.AppendProto (--audit-format protobuf): the same members as
// the JSON audit record, for archives and consumers that would rather not
// parse 39 decimal numbers per event. Feature values are the float32s the
// models saw, bit for bit (packed fixed32), the names beside them in the
// same order; scores, thresholds and reasons are the record's float64
// values (a score is a float32 widened: 0.93 in JSON, which prints
// float32-exact values in float32's shortest form, is 0.9300000071525574
// here; narrow it to float32 to compare). A Score's model is the ident the JSON record
// writes under "models" (or "shadow_models") for that name. Fields are only
// ever added to this message, never renumbered.
const AuditProtoSchema = `syntax = "proto3";
package streamscore.audit.v1;
import "google/protobuf/timestamp.proto";
message AuditRecord {
  string tx_id = 1;
  string card_id = 2;
  string card_key_id = 3;
  google.protobuf.Timestamp ts = 4;
  double amount = 5;
  string currency = 6;
  google.protobuf.Timestamp scored_at = 7;
  repeated Score scores = 8;
  string decision = 9;
  repeated Reason reasons = 10;
  double latency_ms = 11;
  bool late = 12;
  repeated string feature_names = 13;
  repeated float features = 14;
  repeated Threshold thresholds = 15;
  repeated Score shadow = 16;
}
message Score {
  string name = 1;
  double value = 2;
  string model = 3;
}
message Reason {
  string feature = 1;
  double contribution = 2;
}
message Threshold {
  string name = 1;
  double review = 2;
  double alert = 3;
}
`

// AuditProtoType is the full name of the message AppendProto encodes.
const AuditProtoType = "streamscore.audit.v1.AuditRecord"

// Field numbers of AuditProtoSchema.
const (
	pbTxID         = 1
	pbCardID       = 2
	pbCardKeyID    = 3
	pbTS           = 4
	pbAmount       = 5
	pbCurrency     = 6
	pbScoredAt     = 7
	pbScores       = 8
	pbDecision     = 9
	pbReasons      = 10
	pbLatencyMS    = 11
	pbLate         = 12
	pbFeatureNames = 13
	pbFeatures     = 14
	pbThresholds   = 15
	pbShadow       = 16
)

// AppendProto appends the record as one AuditProtoSchema message and
// returns the extended slice. Like AppendJSON, it does not allocate when
// dst has capacity (the feature names are encoded once per name slice and
// copied). Proto3 rules: members at their zero value are not written; a
// decoder gives them back as zero. A NaN or infinite value, which the JSON
// record writes as null, is written as itself.
func (r *AuditRecord) AppendProto(dst []byte) []byte {
	dst = appendPBString(dst, pbTxID, r.TxID)
	dst = appendPBString(dst, pbCardID, r.CardID)
	dst = appendPBString(dst, pbCardKeyID, r.CardKeyID)
	dst = appendPBTime(dst, pbTS, r.TS)
	dst = appendPBDouble(dst, pbAmount, r.Amount)
	dst = appendPBString(dst, pbCurrency, r.Currency)
	dst = appendPBTime(dst, pbScoredAt, r.ScoredAt)
	for i, s := range r.Scores {
		dst = appendPBScore(dst, pbScores, s, modelOf(r.Models, i, s.Name))
	}
	dst = appendPBString(dst, pbDecision, r.Decision)
	for _, rs := range r.Reasons {
		n := pbStringLen(1, rs.Feature) + pbDoubleLen(2, rs.Contribution)
		dst = protowire.AppendTag(dst, pbReasons, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		dst = appendPBString(dst, 1, rs.Feature)
		dst = appendPBDouble(dst, 2, rs.Contribution)
	}
	dst = appendPBDouble(dst, pbLatencyMS, r.LatencyMS)
	if r.Late {
		dst = protowire.AppendTag(dst, pbLate, protowire.VarintType)
		dst = append(dst, 1)
	}
	n := min(len(r.FeatureNames), len(r.Features))
	if n > 0 {
		dst = append(dst, r.protoNames(n)...)
		dst = protowire.AppendTag(dst, pbFeatures, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(4*n))
		for _, v := range r.Features[:n] {
			dst = protowire.AppendFixed32(dst, math.Float32bits(v))
		}
	}
	for _, t := range r.Thresholds {
		n := pbStringLen(1, t.Name) + pbDoubleLen(2, t.Review) + pbDoubleLen(3, t.Alert)
		dst = protowire.AppendTag(dst, pbThresholds, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		dst = appendPBString(dst, 1, t.Name)
		dst = appendPBDouble(dst, 2, t.Review)
		dst = appendPBDouble(dst, 3, t.Alert)
	}
	for i, s := range r.Shadow {
		dst = appendPBScore(dst, pbShadow, s, modelOf(r.ShadowModels, i, s.Name))
	}
	return dst
}

// protoNames returns the encoded feature_names members of the first n
// FeatureNames, cached like the JSON keys (rebuilt when the names change).
func (r *AuditRecord) protoNames(n int) []byte {
	k := &r.pbKeys
	if k.n == n && len(k.names) == n && k.first == &r.FeatureNames[0] && equalStrings(k.names, r.FeatureNames[:n]) {
		return k.buf
	}
	k.buf = k.buf[:0]
	for _, name := range r.FeatureNames[:n] {
		k.buf = protowire.AppendTag(k.buf, pbFeatureNames, protowire.BytesType)
		k.buf = protowire.AppendString(k.buf, name)
	}
	k.first, k.n = &r.FeatureNames[0], n
	k.names = append(k.names[:0], r.FeatureNames[:n]...)
	return k.buf
}

// protoKeys caches the encoded feature_names of an audit record.
type protoKeys struct {
	buf   []byte
	first *string
	n     int
	names []string
}

// modelOf returns the ident of the model named name: ms[i] when it has that
// name (the worker keeps Scores and Models in the same order), else the
// first of that name, else "".
func modelOf(ms []NamedModel, i int, name string) string {
	if i < len(ms) && ms[i].Name == name {
		return ms[i].Ident
	}
	for _, m := range ms {
		if m.Name == name {
			return m.Ident
		}
	}
	return ""
}

func appendPBScore(dst []byte, num protowire.Number, s NamedScore, model string) []byte {
	n := pbStringLen(1, s.Name) + pbDoubleLen(2, s.Value) + pbStringLen(3, model)
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	dst = appendPBString(dst, 1, s.Name)
	dst = appendPBDouble(dst, 2, s.Value)
	return appendPBString(dst, 3, model)
}

func appendPBString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

func pbStringLen(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendPBDouble(dst []byte, num protowire.Number, v float64) []byte {
	if math.Float64bits(v) == 0 { // +0 is the default; -0 is written
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(dst, math.Float64bits(v))
}

func pbDoubleLen(num protowire.Number, v float64) int {
	if math.Float64bits(v) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeFixed64()
}

// appendPBTime appends t as a google.protobuf.Timestamp (seconds and nanos
// since the Unix epoch, UTC); the zero time is not written.
func appendPBTime(dst []byte, num protowire.Number, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	sec, nsec := t.Unix(), uint64(t.Nanosecond())
	n := 0
	if sec != 0 {
		n += protowire.SizeTag(1) + protowire.SizeVarint(uint64(sec))
	}
	if nsec != 0 {
		n += protowire.SizeTag(2) + protowire.SizeVarint(nsec)
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n))
	if sec != 0 {
		dst = protowire.AppendTag(dst, 1, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(sec))
	}
	if nsec != 0 {
		dst = protowire.AppendTag(dst, 2, protowire.VarintType)
		dst = protowire.AppendVarint(dst, nsec)
	}
	return dst
}
