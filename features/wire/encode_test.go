package wire

import (
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// TestEncodeRoundTrip: generated events and labels written by the Append
// functions decode to themselves, and are valid for independent decoders
// (hamba/avro, dynamicpb).
func TestEncodeRoundTrip(t *testing.T) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	reg.SeedSchema("tx-value", 1, 1, sr.Schema{Schema: AvroEventSchema})
	reg.SeedSchema("labels-value", 1, 2, sr.Schema{Schema: AvroLabelSchema})
	reg.SeedSchema("ptx-value", 1, 3, sr.Schema{Schema: ProtoSchema, Type: sr.TypeProtobuf})
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	ad, _ := newDecoder(t, FormatAvro, cl)
	pd, _ := newDecoder(t, FormatProtobuf, cl)
	avroTx, err := avro.ParseWithCache(AvroEventSchema, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatal(err)
	}
	ptx := protoMessage(t, ProtoSchema, 0)

	g, err := synth.New(synth.Config{Seed: 3, Cards: 50, Terminals: 20, FraudRate: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	labels := 0
	for i := range 500 {
		tx := g.Next(start.Add(time.Duration(i) * time.Minute))
		want := tx.Event
		want.TS = want.TS.Truncate(time.Microsecond)
		if i%7 == 0 { // exercise the geo branch
			want.Lat, want.Lon, want.HasGeo = 48.85, 2.35, true
		}
		for _, c := range []struct {
			name string
			msg  []byte
			d    *Decoder
		}{
			{"avro", AppendAvroEvent(nil, 1, &want), ad},
			{"protobuf", AppendProtoEvent(nil, 3, &want), pd},
		} {
			var got features.Event
			if err := c.d.Decode(c.msg, &got); err != nil {
				t.Fatalf("%s event %d: %v", c.name, i, err)
			}
			if got != want {
				t.Fatalf("%s event %d: got %+v, want %+v", c.name, i, got, want)
			}
		}
		var m map[string]any
		if err := avro.Unmarshal(avroTx, AppendAvroEvent(nil, 1, &want)[5:], &m); err != nil || m["tx_id"] != want.TxID {
			t.Fatalf("hamba/avro reads %v (%v)", m, err)
		}
		pm := dynamicpb.NewMessage(ptx)
		if err := proto.Unmarshal(AppendProtoEvent(nil, 3, &want)[6:], pm); err != nil || pm.Get(ptx.Fields().ByName("card_id")).String() != want.CardID {
			t.Fatalf("protobuf reads %v (%v)", pm, err)
		}
		lb, ok := g.LabelFor(tx)
		if !ok {
			continue
		}
		labels++
		lb.TS, lb.TxTS = lb.TS.Truncate(time.Microsecond), lb.TxTS.Truncate(time.Microsecond)
		for _, c := range []struct {
			name string
			msg  []byte
			d    *Decoder
		}{
			{"avro", AppendAvroLabel(nil, 2, &lb), ad},
			{"protobuf", AppendProtoLabel(nil, 3, &lb), pd},
		} {
			var got features.Label
			if err := c.d.DecodeLabel(c.msg, &got); err != nil {
				t.Fatalf("%s label %d: %v", c.name, i, err)
			}
			if got != lb {
				t.Fatalf("%s label %d: got %+v, want %+v", c.name, i, got, lb)
			}
		}
	}
	if labels == 0 {
		t.Fatal("no label drawn")
	}
}
