package output

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "google.golang.org/protobuf/types/known/timestamppb" // registers google/protobuf/timestamp.proto
)

// auditDescriptor builds AuditProtoSchema's file as a descriptor: the
// protobuf library then decodes what AppendProto wrote. TestAuditProtoSchema
// prints it back and compares it with the constant, so the two cannot drift.
func auditDescriptor(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	type fld struct {
		name string
		num  int32
		typ  descriptorpb.FieldDescriptorProto_Type
		msg  string // message type name, for TYPE_MESSAGE
		rep  bool
	}
	const (
		tString = descriptorpb.FieldDescriptorProto_TYPE_STRING
		tDouble = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		tFloat  = descriptorpb.FieldDescriptorProto_TYPE_FLOAT
		tBool   = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		tMsg    = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	msgs := []struct {
		name   string
		fields []fld
	}{
		{"AuditRecord", []fld{
			{"tx_id", 1, tString, "", false}, {"card_id", 2, tString, "", false}, {"card_key_id", 3, tString, "", false},
			{"ts", 4, tMsg, ".google.protobuf.Timestamp", false}, {"amount", 5, tDouble, "", false},
			{"currency", 6, tString, "", false}, {"scored_at", 7, tMsg, ".google.protobuf.Timestamp", false},
			{"scores", 8, tMsg, ".streamscore.audit.v1.Score", true}, {"decision", 9, tString, "", false},
			{"reasons", 10, tMsg, ".streamscore.audit.v1.Reason", true}, {"latency_ms", 11, tDouble, "", false},
			{"late", 12, tBool, "", false}, {"feature_names", 13, tString, "", true}, {"features", 14, tFloat, "", true},
			{"thresholds", 15, tMsg, ".streamscore.audit.v1.Threshold", true},
			{"shadow", 16, tMsg, ".streamscore.audit.v1.Score", true},
		}},
		{"Score", []fld{{"name", 1, tString, "", false}, {"value", 2, tDouble, "", false}, {"model", 3, tString, "", false}}},
		{"Reason", []fld{{"feature", 1, tString, "", false}, {"contribution", 2, tDouble, "", false}}},
		{"Threshold", []fld{{"name", 1, tString, "", false}, {"review", 2, tDouble, "", false}, {"alert", 3, tDouble, "", false}}},
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("streamscore/audit/v1/audit.proto"),
		Package:    proto.String("streamscore.audit.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/timestamp.proto"},
	}
	var text strings.Builder
	text.WriteString("syntax = \"proto3\";\npackage streamscore.audit.v1;\nimport \"google/protobuf/timestamp.proto\";\n")
	for _, m := range msgs {
		dp := &descriptorpb.DescriptorProto{Name: proto.String(m.name)}
		fmt.Fprintf(&text, "message %s {\n", m.name)
		for _, f := range m.fields {
			label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
			prefix := ""
			if f.rep {
				label, prefix = descriptorpb.FieldDescriptorProto_LABEL_REPEATED, "repeated "
			}
			fp := &descriptorpb.FieldDescriptorProto{Name: proto.String(f.name), Number: proto.Int32(f.num),
				Type: f.typ.Enum(), Label: label.Enum(), JsonName: proto.String(jsonName(f.name))}
			typ := strings.ToLower(strings.TrimPrefix(f.typ.String(), "TYPE_"))
			if f.msg != "" {
				fp.TypeName = proto.String(f.msg)
				typ = strings.TrimPrefix(strings.TrimPrefix(f.msg, "."), "streamscore.audit.v1.")
			}
			dp.Field = append(dp.Field, fp)
			fmt.Fprintf(&text, "  %s%s %s = %d;\n", prefix, typ, f.name, f.num)
		}
		text.WriteString("}\n")
		fd.MessageType = append(fd.MessageType, dp)
	}
	if got := text.String(); got != AuditProtoSchema {
		t.Fatalf("AuditProtoSchema differs from the descriptor the tests decode with:\n%s\nwant (from the descriptor):\n%s", AuditProtoSchema, got)
	}
	file, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	md := file.Messages().ByName("AuditRecord")
	if string(md.FullName()) != AuditProtoType {
		t.Fatalf("message %s, want %s", md.FullName(), AuditProtoType)
	}
	return md
}

func jsonName(s string) string {
	parts := strings.Split(s, "_")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

func TestAuditProtoSchema(t *testing.T) { auditDescriptor(t) }

// TestAuditAppendProto decodes AppendProto's bytes with the protobuf
// library (the schema's descriptor) and checks every member against the
// record: the JSON record's sample, one with shadow models and a late
// event, and the empty record.
func TestAuditAppendProto(t *testing.T) {
	md := auditDescriptor(t)
	shadow := sampleAudit()
	shadow.Shadow = []NamedScore{{"fraud", 0.41}}
	shadow.ShadowModels = []NamedModel{{"fraud", "fraud-mlp@4 sha256:9f00aa11bb22"}}
	shadow.Late, shadow.CardKeyID = true, "k2"
	shadow.Features = []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.Copysign(0, -1))}
	shadow.Reasons = append(shadow.Reasons, Reason{"negative_zero", math.Copysign(0, -1)})
	tests := []struct {
		name string
		rec  AuditRecord
	}{
		{"sample", sampleAudit()},
		{"shadow-late-nonfinite", shadow},
		{"empty", AuditRecord{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			b := r.AppendProto([]byte("prefix"))
			if string(b[:6]) != "prefix" {
				t.Fatal("AppendProto overwrote dst")
			}
			m := dynamicpb.NewMessage(md)
			if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b[6:], m); err != nil {
				t.Fatal(err)
			}
			if len(m.GetUnknown()) > 0 {
				t.Fatalf("unknown fields %x", m.GetUnknown())
			}
			get := func(name string) protoreflect.Value {
				return m.Get(md.Fields().ByName(protoreflect.Name(name)))
			}
			eqs := func(name, want string) {
				if got := get(name).String(); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			eqf := func(name string, got, want float64) {
				if math.Float64bits(got) != math.Float64bits(want) {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			eqt := func(name string, want time.Time) {
				var got time.Time
				if m.Has(md.Fields().ByName(protoreflect.Name(name))) {
					ts := get(name).Message()
					got = time.Unix(ts.Get(ts.Descriptor().Fields().ByName("seconds")).Int(), ts.Get(ts.Descriptor().Fields().ByName("nanos")).Int())
				}
				if !got.Equal(want) {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			eqs("tx_id", r.TxID)
			eqs("card_id", r.CardID)
			eqs("card_key_id", r.CardKeyID)
			eqt("ts", r.TS)
			eqt("scored_at", r.ScoredAt)
			eqf("amount", get("amount").Float(), r.Amount)
			eqs("currency", r.Currency)
			eqs("decision", r.Decision)
			eqf("latency_ms", get("latency_ms").Float(), r.LatencyMS)
			if got := get("late").Bool(); got != r.Late {
				t.Errorf("late = %v, want %v", got, r.Late)
			}
			scoreList := func(name string, want []NamedScore, models []NamedModel) {
				l := get(name).List()
				if l.Len() != len(want) {
					t.Fatalf("%s: %d, want %d", name, l.Len(), len(want))
				}
				for i, s := range want {
					e := l.Get(i).Message()
					f := e.Descriptor().Fields()
					if e.Get(f.ByName("name")).String() != s.Name || e.Get(f.ByName("model")).String() != models[i].Ident {
						t.Errorf("%s[%d] = %v", name, i, e)
					}
					eqf(name+".value", e.Get(f.ByName("value")).Float(), s.Value)
				}
			}
			scoreList("scores", r.Scores, r.Models)
			scoreList("shadow", r.Shadow, r.ShadowModels)
			reasons := get("reasons").List()
			if reasons.Len() != len(r.Reasons) {
				t.Fatalf("reasons: %d, want %d", reasons.Len(), len(r.Reasons))
			}
			for i, rs := range r.Reasons {
				e := reasons.Get(i).Message()
				f := e.Descriptor().Fields()
				eqs := e.Get(f.ByName("feature")).String()
				if eqs != rs.Feature {
					t.Errorf("reasons[%d].feature = %q, want %q", i, eqs, rs.Feature)
				}
				eqf("contribution", e.Get(f.ByName("contribution")).Float(), rs.Contribution)
			}
			names, vals := get("feature_names").List(), get("features").List()
			if names.Len() != len(r.FeatureNames) || vals.Len() != len(r.Features) {
				t.Fatalf("features: %d names, %d values; want %d, %d", names.Len(), vals.Len(), len(r.FeatureNames), len(r.Features))
			}
			for i := range r.Features {
				if names.Get(i).String() != r.FeatureNames[i] {
					t.Errorf("feature_names[%d] = %q", i, names.Get(i).String())
				}
				if got := float32(vals.Get(i).Float()); math.Float32bits(got) != math.Float32bits(r.Features[i]) {
					t.Errorf("features[%d] = %v, want %v (bit for bit)", i, got, r.Features[i])
				}
			}
			thr := get("thresholds").List()
			if thr.Len() != len(r.Thresholds) {
				t.Fatalf("thresholds: %d, want %d", thr.Len(), len(r.Thresholds))
			}
			for i, th := range r.Thresholds {
				e := thr.Get(i).Message()
				f := e.Descriptor().Fields()
				if e.Get(f.ByName("name")).String() != th.Name {
					t.Errorf("thresholds[%d].name = %v", i, e)
				}
				eqf("review", e.Get(f.ByName("review")).Float(), th.Review)
				eqf("alert", e.Get(f.ByName("alert")).Float(), th.Alert)
			}
			// Re-encoding with a record whose names changed rebuilds the cache.
			if len(r.FeatureNames) > 0 {
				r2 := r
				r2.FeatureNames = append([]string{"renamed"}, r.FeatureNames[1:]...)
				r2.pbKeys = r.pbKeys
				m2 := dynamicpb.NewMessage(md)
				if err := proto.Unmarshal(r2.AppendProto(nil), m2); err != nil {
					t.Fatal(err)
				}
				if got := m2.Get(md.Fields().ByName("feature_names")).List().Get(0).String(); got != "renamed" {
					t.Errorf("after renaming: feature_names[0] = %q", got)
				}
			}
		})
	}
}

func TestAuditAppendProtoAllocs(t *testing.T) {
	r := sampleAudit()
	buf := r.AppendProto(nil)
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendProto(buf[:0]) }); n != 0 {
		t.Errorf("%v allocations per record, want 0", n)
	}
}

// BenchmarkAuditEncode: one audit record of the shipped size (39 features,
// four scores, three reasons) as JSON (after its score record, as the
// worker does) and as Protobuf, in the same run.
func BenchmarkAuditEncode(b *testing.B) {
	r := sampleAudit()
	r.FeatureNames, r.Features = nil, nil
	for i := range 39 {
		r.FeatureNames = append(r.FeatureNames, fmt.Sprintf("feature_number_%02d_7d", i))
		r.Features = append(r.Features, float32(math.Log1p(float64(i)*13.7+0.123)))
	}
	r.Scores = append(r.Scores, NamedScore{"fraud_gru", 0.0123}, NamedScore{"fraud_lr", 0.2345})
	r.Models = append(r.Models, NamedModel{"fraud_gru", "fraud_gru-gru@1 sha256:7dde3c4ad57e"}, NamedModel{"fraud_lr", "fraud_lr-logistic@1 sha256:b0646e293447"})
	score := r.ScoreRecord.AppendJSON(nil)
	for _, f := range []string{"json", "protobuf"} {
		b.Run("format="+f, func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				if f == "json" {
					buf = r.AppendJSONAfterScore(buf[:0], score)
				} else {
					buf = r.AppendProto(buf[:0])
				}
			}
			b.ReportMetric(float64(len(buf)), "bytes/record")
		})
	}
}
