package stream_test

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// pbAudit is what TestMemPipelineAuditProtobuf reads back from a Protobuf
// audit record (output.AuditProtoSchema), parsed with protowire.
type pbAudit struct {
	txID     string
	decision string
	names    []string
	values   []float32
	scores   map[string]float64
}

func parsePBAudit(t *testing.T, b []byte) pbAudit {
	t.Helper()
	a := pbAudit{scores: map[string]float64{}}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case 1:
			a.txID = string(v)
		case 9:
			a.decision = string(v)
		case 13:
			a.names = append(a.names, string(v))
		case 14:
			for len(v) >= 4 {
				u, _ := protowire.ConsumeFixed32(v)
				a.values = append(a.values, math.Float32frombits(u))
				v = v[4:]
			}
		case 8:
			var name string
			var val float64
			for len(v) > 0 {
				fn, ft, k := protowire.ConsumeTag(v)
				v = v[k:]
				switch {
				case fn == 1 && ft == protowire.BytesType:
					s, k := protowire.ConsumeBytes(v)
					name, v = string(s), v[k:]
				case fn == 2 && ft == protowire.Fixed64Type:
					u, k := protowire.ConsumeFixed64(v)
					val, v = math.Float64frombits(u), v[k:]
				default:
					k := protowire.ConsumeFieldValue(fn, ft, v)
					if k < 0 {
						t.Fatalf("score field %d: %v", fn, protowire.ParseError(k))
					}
					v = v[k:]
				}
			}
			a.scores[name] = val
		}
	}
	return a
}

// TestMemPipelineAuditProtobuf: with WithAuditFormat(AuditProtobuf) the
// same events give audit records that carry, read back as Protobuf, the
// features bit for bit and the scores and decisions of the JSON audit
// records of a run with the default format; score records are JSON in both.
func TestMemPipelineAuditProtobuf(t *testing.T) {
	const parts = 2
	_, msgs, _, _ := history(t, 47, 600)
	run := func(group string, opts ...stream.Option) *memSink {
		b := stream.NewMemBroker(map[string]int{txTopic: parts})
		ends := appendAll(t, b, parts, msgs)
		sink := &memSink{}
		r := runPipeline(t, memMember(t, b, group, sink, opts...))
		waitCommittedTo(t, b, group, ends)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		return sink
	}
	js := run("audit-json")
	pb := run("audit-pb", stream.WithAuditFormat(stream.AuditProtobuf))

	type jsonAudit struct {
		TxID     string             `json:"tx_id"`
		Decision string             `json:"decision"`
		Scores   map[string]float64 `json:"scores"`
		Features map[string]float64 `json:"features"`
	}
	want := map[string]jsonAudit{}
	for _, m := range js.kind(output.KindAudit) {
		var r jsonAudit
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		want[r.TxID] = r
	}
	got := pb.kind(output.KindAudit)
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("%d Protobuf audit records, %d JSON ones", len(got), len(want))
	}
	for _, m := range pb.kind(output.KindScore) {
		if !json.Valid(m.Value) {
			t.Fatalf("score record is not JSON: %q", m.Value)
		}
	}
	for _, m := range got {
		a := parsePBAudit(t, m.Value)
		w, ok := want[a.txID]
		if !ok {
			t.Fatalf("audit record for %q, not in the JSON run", a.txID)
		}
		if a.decision != w.Decision || len(a.names) != len(w.Features) || len(a.values) != len(a.names) {
			t.Fatalf("%s: decision %q, %d names, %d values; JSON: %q, %d features", a.txID, a.decision, len(a.names), len(a.values), w.Decision, len(w.Features))
		}
		for i, name := range a.names {
			if math.Float32bits(a.values[i]) != math.Float32bits(float32(w.Features[name])) {
				t.Fatalf("%s: %s = %v, JSON %v", a.txID, name, a.values[i], w.Features[name])
			}
		}
		for name, v := range w.Scores {
			// JSON prints the float32 score's shortest form: compare as float32.
			if float32(a.scores[name]) != float32(v) {
				t.Fatalf("%s: score %s = %v, JSON %v", a.txID, name, a.scores[name], v)
			}
		}
	}
}

func TestWithAuditFormat(t *testing.T) {
	_, err := stream.New(noBrokers, "g", txTopic, nil, &memSink{}, stream.WithAuditFormat("avro"))
	if !errors.Is(err, stream.ErrAuditFormat) {
		t.Fatalf("got %v, want ErrAuditFormat", err)
	}
}
