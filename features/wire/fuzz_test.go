package wire

import (
	"errors"
	"testing"

	"github.com/streamscore/streamscore/features"
)

// FuzzDecode: whatever the bytes after a known schema id, the Avro and
// Protobuf decoders never panic, and a failure is a *features.DecodeError
// (a dead letter with a reason), never another error.
func FuzzDecode(f *testing.F) {
	t := &testing.T{}
	_, cl := newFake(t)
	ad, _ := newDecoder(t, FormatAvro, cl)
	pd, _ := newDecoder(t, FormatProtobuf, cl)
	ev := features.Event{TxID: "t-1", TS: t0, CardID: "c-42", TerminalID: "m-7", Amount: 57.2, Currency: "EUR", HasGeo: true, Lat: 1, Lon: 2}
	f.Add(AppendAvroEvent(nil, 31, &ev)[5:], uint8(31))
	f.Add(AppendProtoEvent(nil, 32, &ev)[5:], uint8(32))
	f.Add(avroRecord(f, 2, avroV2, map[string]any{"schema_note": map[string]any{"a": []int64{1}}, "card_id": "c", "tx_id": "t",
		"device": nil, "terminal_id": "m", "ts": t0, "amount": []byte{1, 2}, "currency": nil, "channel": "pos", "lat": nil, "lon": nil})[5:], uint8(2))
	f.Add([]byte{2, 2, 0x0a, 1, 'x'}, uint8(22))
	f.Fuzz(func(t *testing.T, payload []byte, id uint8) {
		// ids the fake registry holds: 1-7 Avro, 21-24 Protobuf, 31 and 32 the shipped ones
		msg := append(wireHeader(int(id)%33), payload...)
		for _, d := range []*Decoder{ad, pd} {
			var e features.Event
			if err := d.Decode(msg, &e); err != nil {
				var de *features.DecodeError
				if !errors.As(err, &de) || de.Reason == "" {
					t.Fatalf("error %v is not a dead letter with a reason", err)
				}
			}
			var l features.Label
			if err := d.DecodeLabel(msg, &l); err != nil {
				var de *features.DecodeError
				if !errors.As(err, &de) || de.Reason == "" {
					t.Fatalf("label error %v is not a dead letter with a reason", err)
				}
			}
		}
	})
}
