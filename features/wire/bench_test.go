package wire

import (
	"testing"

	"github.com/streamscore/streamscore/features"
)

// BenchmarkDecode compares, on the same event (the contract's example:
// ids, time, amount, currency, mcc, channel, country, position), the JSON
// decoder with the Avro and Protobuf decoders on a cached writer schema
// (the shipped ones: AvroEventSchema, ProtoSchema).
func BenchmarkDecode(b *testing.B) {
	t := &testing.T{}
	_, cl := newFake(t)
	ev := features.Event{TxID: "t-000001", TS: t0, CardID: "c-42", TerminalID: "m-7", Amount: 57.2, Currency: "EUR", MCC: "5411",
		Channel: "pos", Country: "FR", Lat: 48.85, Lon: 2.35, HasGeo: true}
	jsonMsg := ev.AppendJSON(nil)
	avroMsg := AppendAvroEvent(nil, 31, &ev)
	protoMsg := AppendProtoEvent(nil, 32, &ev)
	jd := jsonDecoder(b, features.WithMaxFutureSkew(-1))
	ad, _ := newDecoder(t, FormatAvro, cl)
	pd, _ := newDecoder(t, FormatProtobuf, cl)
	for _, bc := range []struct {
		name string
		msg  []byte
		dec  interface {
			Decode([]byte, *features.Event) error
		}
	}{
		{"json", jsonMsg, jd},
		{"avro", avroMsg, ad},
		{"protobuf", protoMsg, pd},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var got features.Event
			if err := bc.dec.Decode(bc.msg, &got); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bc.msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.dec.Decode(bc.msg, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
