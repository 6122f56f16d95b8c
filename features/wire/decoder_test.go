package wire

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamscore/streamscore/features"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/encoding/protowire"
)

// Writer schemas of the tests: v1 is the contract as JSON has it; v2 is a
// later version (fields reordered, amount a decimal, an enum channel, an
// optional position, fields the engine does not know, including nested
// ones), v0 an earlier one without the optional fields.
const (
	avroV0 = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":"double"}]}`
	avroV1 = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":"double"},
		{"name":"currency","type":["null","string"],"default":null},
		{"name":"mcc","type":["null","string"],"default":null}]}`
	avroV2 = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"schema_note","type":{"type":"map","values":{"type":"array","items":"long"}}},
		{"name":"card_id","type":"string"},
		{"name":"tx_id","type":"string"},
		{"name":"device","type":["null",{"type":"record","name":"Device","fields":[{"name":"id","type":"string"},{"name":"score","type":"float"}]}],"default":null},
		{"name":"terminal_id","type":"string"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
		{"name":"currency","type":["null","string"],"default":null},
		{"name":"channel","type":{"type":"enum","name":"Channel","symbols":["pos","ecom","atm"]}},
		{"name":"lat","type":["null","double"],"default":null},
		{"name":"lon","type":["null","double"],"default":null}]}`
	avroNoCard = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":"long"},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":"double"}]}`
	avroBoolAmount = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":"long"},
		{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":"boolean"}]}`
	avroNullableCard = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":"string"},
		{"name":"card_id","type":["null","string"]},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":["null","double","boolean"]}]}`
	avroLabel = `{"type":"record","name":"Label","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"tx_ts","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
		{"name":"fraud","type":"boolean"}]}`

	protoV1 = `syntax = "proto3";
package bank;
import "google/protobuf/timestamp.proto";
message Payment {
  string tx_id = 1;
  google.protobuf.Timestamp ts = 2;
  string card_id = 3;
  string terminal_id = 4;
  double amount = 5;
  optional string currency = 6;
}`
	// protoV2: another message first (the payment is index 1), fields
	// renumbered, an enum channel, epoch-millisecond time, a nested
	// message the mapping does not read.
	protoV2 = `syntax = "proto3";
package bank;
message Envelope { string id = 1; }
message Payment {
  message Device { string id = 1; repeated int64 seen = 2; }
  enum Channel { CHANNEL_UNSPECIFIED = 0; pos = 1; ecom = 2; }
  Device device = 1;
  string card_id = 10;
  string tx_id = 11;
  int64 ts = 12;
  string terminal_id = 13;
  double amount = 14;
  Channel channel = 15;
  optional double lat = 16;
  optional double lon = 17;
}`
	protoNoTerminal = `syntax = "proto3";
message Payment { string tx_id = 1; int64 ts = 2; string card_id = 3; double amount = 5; }`
	protoLabel = `syntax = "proto3";
message Label { string tx_id = 1; string card_id = 2; string terminal_id = 3; int64 ts = 4; bool fraud = 5; int64 tx_ts = 6; }`
)

var t0 = time.Date(2026, 11, 28, 15, 4, 5, 123_000_000, time.UTC)

// newFake returns a fake registry holding the test schemas, and a client.
func newFake(t *testing.T, opts ...srfake.Option) (*srfake.Registry, *sr.Client) {
	t.Helper()
	reg := srfake.New(opts...)
	t.Cleanup(reg.Close)
	for _, s := range []struct {
		subject     string
		version, id int
		text        string
		typ         sr.SchemaType
	}{
		{"payments-value", 1, 1, avroV1, sr.TypeAvro},
		{"payments-value", 2, 2, avroV2, sr.TypeAvro},
		{"payments-value", 3, 3, avroV0, sr.TypeAvro},
		{"other-value", 1, 4, avroNoCard, sr.TypeAvro},
		{"other2-value", 1, 5, avroBoolAmount, sr.TypeAvro},
		{"other3-value", 1, 6, avroNullableCard, sr.TypeAvro},
		{"labels-value", 1, 7, avroLabel, sr.TypeAvro},
		{"ppay-value", 1, 21, protoV1, sr.TypeProtobuf},
		{"ppay-value", 2, 22, protoV2, sr.TypeProtobuf},
		{"pother-value", 1, 23, protoNoTerminal, sr.TypeProtobuf},
		{"plabels-value", 1, 24, protoLabel, sr.TypeProtobuf},
		{"shipped-value", 1, 31, AvroEventSchema, sr.TypeAvro},
		{"pshipped-value", 1, 32, ProtoSchema, sr.TypeProtobuf},
	} {
		reg.SeedSchema(s.subject, s.version, s.id, sr.Schema{Schema: s.text, Type: s.typ})
	}
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return reg, cl
}

// jsonDecoder returns the JSON decoder the wire decoders hand their
// events to.
func jsonDecoder(t testing.TB, opts ...features.DecoderOption) *features.Decoder {
	t.Helper()
	d, err := features.NewDecoder(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newDecoder(t *testing.T, f Format, cl *sr.Client, opts ...Option) (*Decoder, *Registry) {
	t.Helper()
	r, err := NewRegistry(cl)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(f, r, jsonDecoder(t, features.WithMaxFutureSkew(-1)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d, r
}

func reasonOf(err error) string {
	var de *features.DecodeError
	if errors.As(err, &de) {
		return de.Reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestDecodeAvro(t *testing.T) {
	_, cl := newFake(t)
	d, _ := newDecoder(t, FormatAvro, cl)
	v1 := map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c-42", "terminal_id": "m-7", "amount": 57.2, "currency": "EUR", "mcc": nil}
	want := features.Event{TxID: "t-1", TS: t0, CardID: "c-42", TerminalID: "m-7", Amount: 57.2, Currency: "EUR"}
	v2 := map[string]any{"schema_note": map[string]any{"a": []int64{1, 2, 3}, "b": []int64{}}, "card_id": "c-42", "tx_id": "t-1",
		"device": map[string]any{"bank.Device": map[string]any{"id": "d-1", "score": float32(0.5)}}, "terminal_id": "m-7", "ts": t0,
		"amount": big.NewRat(5720, 100), "currency": "EUR", "channel": "ecom", "lat": 48.85, "lon": 2.35}
	want2 := want
	want2.Channel, want2.Lat, want2.Lon, want2.HasGeo = "ecom", 48.85, 2.35, true
	wantV0 := want
	wantV0.Currency = ""
	for _, tc := range []struct {
		name   string
		msg    []byte
		want   features.Event
		reason string
	}{
		{name: "v1", msg: avroRecord(t, 1, avroV1, v1), want: want},
		{name: "v2 newer writer: reordered, decimal amount, enum, micros, unknown fields", msg: avroRecord(t, 2, avroV2, v2), want: want2},
		{name: "v0 older writer without the optional fields", msg: avroRecord(t, 3, avroV0, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c-42", "terminal_id": "m-7", "amount": 57.2}), want: wantV0},
		{name: "unknown schema id", msg: append(wireHeader(99), 2, 'x'), reason: features.ReasonUnknownSchema},
		{name: "schema without card_id", msg: avroRecord(t, 4, avroNoCard, map[string]any{"tx_id": "t-1", "ts": int64(1), "terminal_id": "m", "amount": 1.0}), reason: features.ReasonSchemaMismatch},
		{name: "boolean amount", msg: avroRecord(t, 5, avroBoolAmount, map[string]any{"tx_id": "t-1", "ts": int64(1), "card_id": "c", "terminal_id": "m", "amount": true}), reason: features.ReasonSchemaMismatch},
		{name: "null card_id", msg: avroRecord(t, 6, avroNullableCard, map[string]any{"tx_id": "t-1", "ts": "2026-11-28T15:04:05Z", "card_id": nil, "terminal_id": "m", "amount": map[string]any{"double": 1.0}}), reason: features.ReasonWrongType},
		{name: "amount in a boolean branch", msg: avroRecord(t, 6, avroNullableCard, map[string]any{"tx_id": "t-1", "ts": "2026-11-28T15:04:05Z", "card_id": "c", "terminal_id": "m", "amount": map[string]any{"boolean": true}}), reason: features.ReasonWrongType},
		{name: "bad RFC 3339 time", msg: avroRecord(t, 6, avroNullableCard, map[string]any{"tx_id": "t-1", "ts": "yesterday", "card_id": "c", "terminal_id": "m", "amount": map[string]any{"double": 1.0}}), reason: features.ReasonInvalidTime},
		{name: "negative amount", msg: avroRecord(t, 1, avroV1, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m", "amount": -1.0, "currency": nil, "mcc": nil}), reason: features.ReasonInvalidAmount},
		{name: "empty card_id", msg: avroRecord(t, 1, avroV1, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "", "terminal_id": "m", "amount": 1.0, "currency": nil, "mcc": nil}), reason: features.ReasonEmptyField},
		{name: "clear card number in terminal_id", msg: avroRecord(t, 1, avroV1, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "4111111111111111", "amount": 1.0, "currency": nil, "mcc": nil}), reason: features.ReasonClearPAN},
		{name: "invalid UTF-8", msg: avroRecord(t, 1, avroV1, map[string]any{"tx_id": "t-\xff", "ts": t0, "card_id": "c", "terminal_id": "m", "amount": 1.0, "currency": nil, "mcc": nil}), reason: features.ReasonInvalidUTF8},
		{name: "no magic byte", msg: []byte(`{"tx_id":"t"}`), reason: features.ReasonMalformedRecord},
		{name: "short header", msg: []byte{0, 0, 1}, reason: features.ReasonMalformedRecord},
		{name: "empty", msg: nil, reason: features.ReasonEmpty},
		{name: "truncated payload", msg: avroRecord(t, 1, avroV1, v1)[:12], reason: features.ReasonMalformedRecord},
		{name: "trailing bytes", msg: append(avroRecord(t, 1, avroV1, v1), 0), reason: features.ReasonTrailingData},
		{name: "huge string length", msg: append(wireHeader(1), 0xfe, 0xff, 0xff, 0xff, 0x0f), reason: features.ReasonMalformedRecord},
		{name: "a protobuf schema id", msg: append(wireHeader(21), 0), reason: features.ReasonSchemaMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got features.Event
			err := d.Decode(tc.msg, &got)
			if r := reasonOf(err); r != tc.reason {
				t.Fatalf("got reason %q (%v), want %q", r, err, tc.reason)
			}
			if tc.reason == "" && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeProtobuf(t *testing.T) {
	_, cl := newFake(t)
	d, _ := newDecoder(t, FormatProtobuf, cl)
	m1 := protoMessage(t, protoV1, 0)
	m2 := protoMessage(t, protoV2, 1)
	mNoTerm := protoMessage(t, protoNoTerminal, 0)
	want := features.Event{TxID: "t-1", TS: t0, CardID: "c-42", TerminalID: "m-7", Amount: 57.2, Currency: "EUR"}
	want2 := features.Event{TxID: "t-1", TS: t0, CardID: "c-42", TerminalID: "m-7", Amount: 57.2, Channel: "ecom", Lat: 48.85, Lon: 2.35, HasGeo: true}
	wantZero := want
	wantZero.Amount, wantZero.Currency = 0, ""
	for _, tc := range []struct {
		name   string
		msg    []byte
		want   features.Event
		reason string
	}{
		{name: "v1", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c-42", "terminal_id": "m-7", "amount": 57.2, "currency": "EUR"}), want: want},
		{name: "v2 second message, renumbered, enum, epoch ms", msg: protoRecord(t, 22, m2, []int{1}, map[string]any{"tx_id": "t-1", "ts": t0.UnixMilli(), "card_id": "c-42", "terminal_id": "m-7", "amount": 57.2, "channel": "ecom", "lat": 48.85, "lon": 2.35}), want: want2},
		{name: "zero amount left out by proto3", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c-42", "terminal_id": "m-7"}), want: wantZero},
		{name: "empty card_id left out by proto3", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "terminal_id": "m-7"}), reason: features.ReasonEmptyField},
		{name: "no ts", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "card_id": "c", "terminal_id": "m-7"}), reason: features.ReasonMissingField},
		{name: "schema without terminal_id", msg: protoRecord(t, 23, mNoTerm, []int{0}, map[string]any{"tx_id": "t-1", "ts": int64(1), "card_id": "c"}), reason: features.ReasonSchemaMismatch},
		{name: "message index not in the schema", msg: protoRecord(t, 21, m1, []int{3}, map[string]any{"tx_id": "t-1"}), reason: features.ReasonSchemaMismatch},
		{name: "message index of a message without the fields", msg: protoRecord(t, 22, protoMessage(t, protoV2, 0), []int{0}, map[string]any{"id": "x"}), reason: features.ReasonSchemaMismatch},
		{name: "negative amount", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m", "amount": -3.0}), reason: features.ReasonInvalidAmount},
		{name: "latitude out of range", msg: protoRecord(t, 22, m2, []int{1}, map[string]any{"tx_id": "t-1", "ts": int64(1), "card_id": "c", "terminal_id": "m", "lat": 91.0, "lon": 0.0}), reason: features.ReasonInvalidGeo},
		{name: "duplicate field", msg: append(protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m"}), 0x0a, 1, 'x'), reason: features.ReasonDuplicateField},
		{name: "truncated", msg: protoRecord(t, 21, m1, []int{0}, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m"})[:10], reason: features.ReasonMalformedRecord},
		{name: "unknown schema id", msg: append(wireHeader(77), 0), reason: features.ReasonUnknownSchema},
		{name: "an avro schema id", msg: append(wireHeader(1), 0), reason: features.ReasonSchemaMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got features.Event
			err := d.Decode(tc.msg, &got)
			if r := reasonOf(err); r != tc.reason {
				t.Fatalf("got reason %q (%v), want %q", r, err, tc.reason)
			}
			if tc.reason == "" && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeLabels(t *testing.T) {
	_, cl := newFake(t)
	da, _ := newDecoder(t, FormatAvro, cl)
	dp, _ := newDecoder(t, FormatProtobuf, cl)
	txTS := t0.Add(-time.Hour)
	want := features.Label{TxID: "t-1", CardID: "c-42", TerminalID: "m-7", TS: t0, TxTS: txTS, Fraud: true}
	for _, tc := range []struct {
		name   string
		d      *Decoder
		msg    []byte
		want   features.Label
		reason string
	}{
		{name: "avro", d: da, msg: avroRecord(t, 7, avroLabel, map[string]any{"tx_id": "t-1", "card_id": "c-42", "terminal_id": "m-7", "ts": t0, "tx_ts": txTS, "fraud": true}), want: want},
		{name: "avro tx_ts after ts", d: da, msg: avroRecord(t, 7, avroLabel, map[string]any{"tx_id": "t-1", "card_id": "c-42", "terminal_id": "m-7", "ts": txTS, "tx_ts": t0, "fraud": true}), reason: features.ReasonInvalidTime},
		{name: "avro event schema has no fraud", d: da, msg: avroRecord(t, 3, avroV0, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c-42", "terminal_id": "m-7", "amount": 57.2}), reason: features.ReasonSchemaMismatch},
		{name: "protobuf", d: dp, msg: protoRecord(t, 24, protoMessage(t, protoLabel, 0), []int{0}, map[string]any{"tx_id": "t-1", "card_id": "c-42", "terminal_id": "m-7", "ts": t0.UnixMilli(), "tx_ts": txTS.UnixMilli(), "fraud": true}), want: want},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got features.Label
			err := tc.d.DecodeLabel(tc.msg, &got)
			if r := reasonOf(err); r != tc.reason {
				t.Fatalf("got reason %q (%v), want %q", r, err, tc.reason)
			}
			if tc.reason == "" && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMapping(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	const nested = `{"type":"record","name":"Tx","fields":[
		{"name":"id","type":"string"},
		{"name":"when","type":"long"},
		{"name":"card","type":{"type":"record","name":"Card","fields":[{"name":"token","type":"string"},{"name":"bin","type":"string"}]}},
		{"name":"merchant","type":["null",{"type":"record","name":"Merchant","fields":[{"name":"terminal","type":"string"},{"name":"country","type":"string"}]}]},
		{"name":"value","type":"float"}]}`
	reg.SeedSchema("tx-value", 1, 1, sr.Schema{Schema: nested})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	m := Mapping{"tx_id": "id", "ts": "when", "card_id": "card.token", "terminal_id": "merchant.terminal", "country": "merchant.country", "amount": "value"}
	d, _ := newDecoder(t, FormatAvro, cl, WithMapping(m))
	msg := avroRecord(t, 1, nested, map[string]any{"id": "t-9", "when": t0.UnixMilli(), "card": map[string]any{"token": "c-1", "bin": "411111"},
		"merchant": map[string]any{"Merchant": map[string]any{"terminal": "m-1", "country": "FR"}}, "value": float32(12.5)})
	var got features.Event
	if err := d.Decode(msg, &got); err != nil {
		t.Fatal(err)
	}
	want := features.Event{TxID: "t-9", TS: t0, CardID: "c-1", TerminalID: "m-1", Country: "FR", Amount: 12.5}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	null := avroRecord(t, 1, nested, map[string]any{"id": "t-9", "when": t0.UnixMilli(), "card": map[string]any{"token": "c-1", "bin": "411111"}, "merchant": nil, "value": float32(1)})
	if err := d.Decode(null, &got); reasonOf(err) != features.ReasonMissingField {
		t.Fatalf("null merchant: got %v, want missing_field", err)
	}
	for _, tc := range []struct {
		name string
		m    Mapping
	}{
		{"not a contract field", Mapping{"cardnumber": "x"}},
		{"required unread", Mapping{"card_id": "-"}},
		{"empty segment", Mapping{"card_id": "card..token"}},
		{"prefix of another", Mapping{"card_id": "card", "terminal_id": "card.terminal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := NewRegistry(cl)
			_, err := New(FormatAvro, r, jsonDecoder(t), WithMapping(tc.m))
			if !errors.Is(err, ErrInvalidOption) || !errors.Is(tc.m.Check(), ErrInvalidOption) {
				t.Fatalf("got %v, want ErrInvalidOption", err)
			}
		})
	}
}

// TestRegistryDown: Prepare holds while the registry fails (and tells the
// observer), and lets go once it answers; nothing is dead-lettered.
func TestRegistryDown(t *testing.T) {
	reg, cl := newFake(t)
	var down atomic.Bool
	down.Store(true)
	reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if down.Load() {
			http.Error(w, `{"error_code":50001,"message":"down"}`, http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	var fails, ups atomic.Int32
	preg := prometheus.NewRegistry()
	r, err := NewRegistry(cl, WithRegisterer(preg))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(FormatAvro, r, jsonDecoder(t, features.WithMaxFutureSkew(-1)), WithBackoff(5*time.Millisecond, 20*time.Millisecond),
		WithObserver(func(err error) {
			if err != nil {
				fails.Add(1)
			} else {
				ups.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	msg := avroRecord(t, 1, avroV1, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m", "amount": 1.0, "currency": nil, "mcc": nil})

	if d.Prepared(msg) {
		t.Fatal("Prepared before the schema was ever fetched")
	}
	if !d.Prepared([]byte(`{"tx_id":"t-1"}`)) {
		t.Fatal("a message not in the wire format needs no preparation (Decode refuses it), Prepared = false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = d.Prepare(ctx, msg)
	cancel()
	if d.Prepared(msg) {
		t.Fatal("Prepared while the registry is down")
	}
	if !errors.Is(err, context.DeadlineExceeded) || fails.Load() == 0 {
		t.Fatalf("Prepare with the registry down: %v, %d failures observed; want to be held until the deadline", err, fails.Load())
	}
	if got := testutil.ToFloat64(r.fetches.WithLabelValues("error")); got == 0 {
		t.Fatal("no failed fetch counted")
	}
	done := make(chan error, 1)
	go func() { done <- d.Prepare(context.Background(), msg) }()
	time.Sleep(30 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Prepare returned %v while the registry is down", err)
	default:
	}
	down.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Prepare still held after the registry came back")
	}
	if ups.Load() != 1 {
		t.Fatalf("observer told %d times the registry is back, want 1", ups.Load())
	}
	if err := d.Prepare(context.Background(), msg); err != nil || ups.Load() != 1 {
		t.Fatalf("a second Prepare: %v, %d ups; want nil and no new report", err, ups.Load())
	}
	if !d.Prepared(msg) {
		t.Fatal("not Prepared once its schema is cached")
	}
	var ev features.Event
	if err := d.Decode(msg, &ev); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(r.cached); got != 1 {
		t.Fatalf("schemas cached: %v, want 1", got)
	}
	// Decode without Prepare, registry down: an error that is not a
	// dead-letter reason.
	down.Store(true)
	d2, _ := New(FormatAvro, r, jsonDecoder(t), WithBackoff(time.Millisecond, time.Millisecond), WithMissWait(20*time.Millisecond))
	if err := d2.Decode(msg, &ev); !errors.Is(err, ErrRegistryUnavailable) || reasonOf(err) == features.ReasonUnknownSchema {
		t.Fatalf("got %v, want ErrRegistryUnavailable", err)
	}
	if problems, err := testutil.GatherAndLint(preg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// TestCacheBound: the cache keeps at most WithMaxSchemas schemas.
func TestCacheBound(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	for id := 1; id <= 40; id++ {
		reg.SeedSchema("s"+string(rune('a'+id%26))+"-value", id, id, sr.Schema{Schema: avroV0})
	}
	d, r := newDecoder(t, FormatAvro, cl, WithMaxSchemas(16))
	for id := 1; id <= 40; id++ {
		msg := avroRecord(t, id, avroV0, map[string]any{"tx_id": "t-1", "ts": t0, "card_id": "c", "terminal_id": "m", "amount": 1.0})
		var ev features.Event
		if err := d.Decode(msg, &ev); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(d.cache); n != 16 {
		t.Fatalf("cached %d, want 16", n)
	}
	if got := testutil.ToFloat64(r.cached); got != 16 {
		t.Fatalf("gauge %v, want 16", got)
	}
}

// TestReferences: writer schemas that reference others (a .proto import,
// an Avro named type of another subject) are compiled with them.
func TestReferences(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	const moneyProto = `syntax = "proto3";
package common;
message Money { string currency = 1; double value = 2; }`
	const payProto = `syntax = "proto3";
package bank;
import "common/money.proto";
message Payment { string tx_id = 1; int64 ts = 2; string card_id = 3; string terminal_id = 4; common.Money amount = 5; }`
	const cardAvro = `{"type":"record","name":"Card","namespace":"common","fields":[{"name":"token","type":"string"}]}`
	const payAvro = `{"type":"record","name":"Payment","namespace":"bank","fields":[
		{"name":"tx_id","type":"string"},{"name":"ts","type":"long"},{"name":"card","type":"common.Card"},
		{"name":"terminal_id","type":"string"},{"name":"amount","type":"double"}]}`
	reg.SeedSchema("common-money", 1, 1, sr.Schema{Schema: moneyProto, Type: sr.TypeProtobuf})
	reg.SeedSchema("pay-value", 1, 2, sr.Schema{Schema: payProto, Type: sr.TypeProtobuf,
		References: []sr.SchemaReference{{Name: "common/money.proto", Subject: "common-money", Version: 1}}})
	reg.SeedSchema("common-card", 1, 3, sr.Schema{Schema: cardAvro})
	reg.SeedSchema("apay-value", 1, 4, sr.Schema{Schema: payAvro,
		References: []sr.SchemaReference{{Name: "common.Card", Subject: "common-card", Version: 1}}})
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	want := features.Event{TxID: "t-1", TS: t0, CardID: "c-1", TerminalID: "m-1", Amount: 9.5, Currency: "EUR"}

	pd, _ := newDecoder(t, FormatProtobuf, cl, WithMapping(Mapping{"amount": "amount.value", "currency": "amount.currency"}))
	msg := append(wireHeader(2), 0)
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, "t-1")
	msg = protowire.AppendTag(msg, 2, protowire.VarintType)
	msg = protowire.AppendVarint(msg, uint64(t0.UnixMilli()))
	msg = protowire.AppendTag(msg, 3, protowire.BytesType)
	msg = protowire.AppendString(msg, "c-1")
	msg = protowire.AppendTag(msg, 4, protowire.BytesType)
	msg = protowire.AppendString(msg, "m-1")
	var money []byte
	money = protowire.AppendTag(money, 1, protowire.BytesType)
	money = protowire.AppendString(money, "EUR")
	money = protowire.AppendTag(money, 2, protowire.Fixed64Type)
	money = protowire.AppendFixed64(money, math.Float64bits(9.5))
	msg = protowire.AppendTag(msg, 5, protowire.BytesType)
	msg = protowire.AppendBytes(msg, money)
	var got features.Event
	if err := pd.Decode(msg, &got); err != nil || got != want {
		t.Fatalf("protobuf with an import: %+v, %v; want %+v", got, err, want)
	}

	ad, _ := newDecoder(t, FormatAvro, cl, WithMapping(Mapping{"card_id": "card.token"}))
	full := strings.Replace(payAvro, `"type":"common.Card"`, `"type":`+cardAvro, 1)
	amsg := avroRecord(t, 4, full, map[string]any{"tx_id": "t-1", "ts": t0.UnixMilli(), "card": map[string]any{"token": "c-1"}, "terminal_id": "m-1", "amount": 9.5})
	want.Currency = ""
	if err := ad.Decode(amsg, &got); err != nil || got != want {
		t.Fatalf("avro with a referenced type: %+v, %v; want %+v", got, err, want)
	}
}

// TestProtoWrappers: fields typed with the well-known wrappers
// (google.protobuf.StringValue, DoubleValue, …) read as optional scalars.
func TestProtoWrappers(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	const text = `syntax = "proto3";
import "google/protobuf/wrappers.proto";
message Payment {
  google.protobuf.StringValue tx_id = 1;
  google.protobuf.Int64Value ts = 2;
  string card_id = 3;
  string terminal_id = 4;
  google.protobuf.DoubleValue amount = 5;
  google.protobuf.StringValue currency = 6;
  google.protobuf.BoolValue mcc = 7;
}`
	reg.SeedSchema("w-value", 1, 1, sr.Schema{Schema: text, Type: sr.TypeProtobuf})
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	d, _ := newDecoder(t, FormatProtobuf, cl, WithMapping(Mapping{"mcc": "-"}))
	wrap := func(b []byte, num protowire.Number, inner []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, inner)
	}
	str := func(s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), s)
	}
	base := func() []byte {
		b := append(wireHeader(1), 0)
		b = wrap(b, 1, str("t-1"))
		b = wrap(b, 2, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(t0.UnixMilli())))
		b = protowire.AppendString(protowire.AppendTag(b, 3, protowire.BytesType), "c-1")
		return protowire.AppendString(protowire.AppendTag(b, 4, protowire.BytesType), "m-1")
	}
	for _, tc := range []struct {
		name   string
		msg    []byte
		want   features.Event
		reason string
	}{
		{name: "amount and currency", msg: wrap(wrap(base(), 5, protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), math.Float64bits(3.5))), 6, str("EUR")),
			want: features.Event{TxID: "t-1", TS: t0, CardID: "c-1", TerminalID: "m-1", Amount: 3.5, Currency: "EUR"}},
		{name: "amount wrapper at zero", msg: wrap(base(), 5, nil), want: features.Event{TxID: "t-1", TS: t0, CardID: "c-1", TerminalID: "m-1"}},
		{name: "no amount wrapper", msg: base(), reason: features.ReasonMissingField},
		{name: "empty tx_id wrapper", msg: wrap(wrap(append(wireHeader(1), 0), 1, nil), 5, nil), reason: features.ReasonEmptyField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got features.Event
			err := d.Decode(tc.msg, &got)
			if r := reasonOf(err); r != tc.reason {
				t.Fatalf("got reason %q (%v), want %q", r, err, tc.reason)
			}
			if tc.reason == "" && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	d2, _ := newDecoder(t, FormatProtobuf, cl) // mcc is a BoolValue: not a string
	var got features.Event
	if err := d2.Decode(wrap(base(), 5, nil), &got); reasonOf(err) != features.ReasonSchemaMismatch {
		t.Fatalf("BoolValue mcc: %v, want schema_mismatch", err)
	}
}

// TestAvroRecursive: a recursive type the mapping does not read (a linked
// list) is skipped whole; nested beyond maxDepth it is a malformed record,
// not a stack overflow.
func TestAvroRecursive(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	const text = `{"type":"record","name":"Payment","fields":[
		{"name":"hops","type":["null",{"type":"record","name":"Hop","fields":[{"name":"id","type":"string"},{"name":"next","type":["null","Hop"]}]}]},
		{"name":"tx_id","type":"string"},{"name":"ts","type":"long"},{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},{"name":"amount","type":"double"}]}`
	reg.SeedSchema("r-value", 1, 1, sr.Schema{Schema: text})
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	d, _ := newDecoder(t, FormatAvro, cl)
	chain := func(n int) any {
		var hop any
		for i := range n {
			hop = map[string]any{"Hop": map[string]any{"id": fmt.Sprint(i), "next": hop}}
		}
		return hop
	}
	for _, tc := range []struct {
		name   string
		hops   int
		reason string
	}{
		{"no hop", 0, ""},
		{"three hops", 3, ""},
		{"deeper than the bound", maxDepth + 5, features.ReasonMalformedRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := avroRecord(t, 1, text, map[string]any{"hops": chain(tc.hops), "tx_id": "t-1", "ts": t0.UnixMilli(), "card_id": "c", "terminal_id": "m", "amount": 2.0})
			var got features.Event
			err := d.Decode(msg, &got)
			if r := reasonOf(err); r != tc.reason {
				t.Fatalf("got reason %q (%v), want %q", r, err, tc.reason)
			}
			if tc.reason == "" && (got.TxID != "t-1" || got.Amount != 2) {
				t.Fatalf("got %+v", got)
			}
		})
	}
}
