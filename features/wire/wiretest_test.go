package wire

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Test helpers writing records in the Confluent wire format, as a producer
// with a schema registry serializer would.

// wireHeader is the magic byte and schema id.
func wireHeader(id int) []byte {
	b := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(id))
	return b
}

// avroRecord encodes v (a map of field values) with Avro schema text.
func avroRecord(t testing.TB, id int, schema string, v map[string]any) []byte {
	t.Helper()
	s, err := avro.ParseWithCache(schema, "", &avro.SchemaCache{})
	if err != nil {
		t.Fatalf("parse schema: %v", err)
	}
	b, err := avro.Marshal(s, v)
	if err != nil {
		t.Fatalf("marshal avro: %v", err)
	}
	return append(wireHeader(id), b...)
}

// protoMessage compiles .proto text and returns the message descriptor at
// top-level index i.
func protoMessage(t testing.TB, text string, i int) protoreflect.MessageDescriptor {
	t.Helper()
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"x.proto": text})})}
	fs, err := c.Compile(context.Background(), "x.proto")
	if err != nil {
		t.Fatalf("compile proto: %v", err)
	}
	return fs[0].Messages().Get(i)
}

// protoRecord encodes v with message md: strings, float64, int64, bool,
// time.Time (into a google.protobuf.Timestamp) and enum names. idx is the
// message-index path written after the header.
func protoRecord(t testing.TB, id int, md protoreflect.MessageDescriptor, idx []int, v map[string]any) []byte {
	t.Helper()
	m := dynamicpb.NewMessage(md)
	for name, val := range v {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			t.Fatalf("no field %q", name)
		}
		switch x := val.(type) {
		case string:
			if fd.Kind() == protoreflect.EnumKind {
				m.Set(fd, protoreflect.ValueOfEnum(fd.Enum().Values().ByName(protoreflect.Name(x)).Number()))
			} else {
				m.Set(fd, protoreflect.ValueOfString(x))
			}
		case float64:
			m.Set(fd, protoreflect.ValueOfFloat64(x))
		case int64:
			m.Set(fd, protoreflect.ValueOfInt64(x))
		case bool:
			m.Set(fd, protoreflect.ValueOfBool(x))
		case time.Time:
			ts := m.NewField(fd).Message()
			ts.Set(ts.Descriptor().Fields().ByName("seconds"), protoreflect.ValueOfInt64(x.Unix()))
			ts.Set(ts.Descriptor().Fields().ByName("nanos"), protoreflect.ValueOfInt32(int32(x.Nanosecond())))
			m.Set(fd, protoreflect.ValueOfMessage(ts))
		default:
			t.Fatalf("field %q: unsupported %T", name, val)
		}
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal proto: %v", err)
	}
	out := wireHeader(id)
	if len(idx) == 1 && idx[0] == 0 {
		out = append(out, 0)
	} else {
		out = binary.AppendVarint(out, int64(len(idx)))
		for _, i := range idx {
			out = binary.AppendVarint(out, int64(i))
		}
	}
	return append(out, b...)
}
