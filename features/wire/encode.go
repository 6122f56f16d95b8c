package wire

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/streamscore/streamscore/features"
	"google.golang.org/protobuf/encoding/protowire"
)

// The schemas streamscore writes events and labels with (the generator's
// --format): the JSON contract's fields and names, so that the default
// mapping reads them. Register them under the topic's subject
// (<topic>-value) and pass the id to the Append functions.
const (
	// AvroEventSchema is an event as an Avro record; ts is
	// timestamp-micros.
	AvroEventSchema = `{"type":"record","name":"Transaction","namespace":"streamscore","fields":[` +
		`{"name":"tx_id","type":"string"},` +
		`{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},` +
		`{"name":"card_id","type":"string"},` +
		`{"name":"terminal_id","type":"string"},` +
		`{"name":"amount","type":"double"},` +
		`{"name":"currency","type":["null","string"],"default":null},` +
		`{"name":"mcc","type":["null","string"],"default":null},` +
		`{"name":"channel","type":["null","string"],"default":null},` +
		`{"name":"country","type":["null","string"],"default":null},` +
		`{"name":"lat","type":["null","double"],"default":null},` +
		`{"name":"lon","type":["null","double"],"default":null}]}`
	// AvroLabelSchema is a label as an Avro record.
	AvroLabelSchema = `{"type":"record","name":"Label","namespace":"streamscore","fields":[` +
		`{"name":"tx_id","type":"string"},` +
		`{"name":"card_id","type":"string"},` +
		`{"name":"terminal_id","type":"string"},` +
		`{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},` +
		`{"name":"tx_ts","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null},` +
		`{"name":"fraud","type":"boolean"},` +
		`{"name":"scenario","type":["null","string"],"default":null}]}`
	// ProtoSchema holds both messages: Transaction (index 0) and Label
	// (index 1).
	ProtoSchema = `syntax = "proto3";
package streamscore;
import "google/protobuf/timestamp.proto";
message Transaction {
  string tx_id = 1;
  google.protobuf.Timestamp ts = 2;
  string card_id = 3;
  string terminal_id = 4;
  double amount = 5;
  optional string currency = 6;
  optional string mcc = 7;
  optional string channel = 8;
  optional string country = 9;
  optional double lat = 10;
  optional double lon = 11;
}
message Label {
  string tx_id = 1;
  string card_id = 2;
  string terminal_id = 3;
  google.protobuf.Timestamp ts = 4;
  google.protobuf.Timestamp tx_ts = 5;
  bool fraud = 6;
  optional string scenario = 7;
}
`
)

func appendHeader(dst []byte, id int) []byte {
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(id))
}

func appendAvroString(dst []byte, s string) []byte {
	dst = binary.AppendVarint(dst, int64(len(s)))
	return append(dst, s...)
}

func appendAvroOptString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, 0) // branch 0: null
	}
	return appendAvroString(append(dst, 2), s) // branch 1
}

func appendAvroDouble(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// AppendAvroEvent appends e in the wire format with AvroEventSchema
// registered as schema id.
func AppendAvroEvent(dst []byte, id int, e *features.Event) []byte {
	dst = appendHeader(dst, id)
	dst = appendAvroString(dst, e.TxID)
	dst = binary.AppendVarint(dst, e.TS.UnixMicro())
	dst = appendAvroString(dst, e.CardID)
	dst = appendAvroString(dst, e.TerminalID)
	dst = appendAvroDouble(dst, e.Amount)
	for _, s := range []string{e.Currency, e.MCC, e.Channel, e.Country} {
		dst = appendAvroOptString(dst, s)
	}
	if !e.HasGeo {
		return append(dst, 0, 0)
	}
	dst = appendAvroDouble(append(dst, 2), e.Lat)
	return appendAvroDouble(append(dst, 2), e.Lon)
}

// AppendAvroLabel appends l in the wire format with AvroLabelSchema
// registered as schema id.
func AppendAvroLabel(dst []byte, id int, l *features.Label) []byte {
	dst = appendHeader(dst, id)
	dst = appendAvroString(dst, l.TxID)
	dst = appendAvroString(dst, l.CardID)
	dst = appendAvroString(dst, l.TerminalID)
	dst = binary.AppendVarint(dst, l.TS.UnixMicro())
	if l.TxTS.IsZero() {
		dst = append(dst, 0)
	} else {
		dst = binary.AppendVarint(append(dst, 2), l.TxTS.UnixMicro())
	}
	if l.Fraud {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	return appendAvroOptString(dst, l.Scenario)
}

func appendProtoString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

func appendProtoTime(dst []byte, num protowire.Number, t time.Time) []byte {
	var ts [24]byte
	b := ts[:0]
	if s := t.Unix(); s != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(n))
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendBytes(dst, b)
}

func appendProtoDouble(dst []byte, num protowire.Number, v float64) []byte {
	dst = protowire.AppendTag(dst, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(dst, math.Float64bits(v))
}

// AppendProtoEvent appends e in the wire format as message Transaction of
// ProtoSchema registered as schema id.
func AppendProtoEvent(dst []byte, id int, e *features.Event) []byte {
	dst = append(appendHeader(dst, id), 0) // message index [0]
	dst = appendProtoString(dst, 1, e.TxID)
	dst = appendProtoTime(dst, 2, e.TS)
	dst = appendProtoString(dst, 3, e.CardID)
	dst = appendProtoString(dst, 4, e.TerminalID)
	if e.Amount != 0 {
		dst = appendProtoDouble(dst, 5, e.Amount)
	}
	for i, s := range []string{e.Currency, e.MCC, e.Channel, e.Country} {
		dst = appendProtoString(dst, protowire.Number(6+i), s)
	}
	if e.HasGeo {
		dst = appendProtoDouble(dst, 10, e.Lat)
		dst = appendProtoDouble(dst, 11, e.Lon)
	}
	return dst
}

// AppendProtoLabel appends l in the wire format as message Label of
// ProtoSchema registered as schema id.
func AppendProtoLabel(dst []byte, id int, l *features.Label) []byte {
	dst = appendHeader(dst, id)
	dst = append(dst, 2, 2) // message index [1]: count 1, index 1 (zig-zag)
	dst = appendProtoString(dst, 1, l.TxID)
	dst = appendProtoString(dst, 2, l.CardID)
	dst = appendProtoString(dst, 3, l.TerminalID)
	dst = appendProtoTime(dst, 4, l.TS)
	if !l.TxTS.IsZero() {
		dst = appendProtoTime(dst, 5, l.TxTS)
	}
	if l.Fraud {
		dst = protowire.AppendTag(dst, 6, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	return appendProtoString(dst, 7, l.Scenario)
}
