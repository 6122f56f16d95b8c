package wire

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/streamscore/streamscore/features"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxMessageIndexes bounds the message-index path of a Protobuf record.
const maxMessageIndexes = 8

// pfield is a mapped field of a compiled Protobuf message.
type pfield struct {
	num      protowire.Number
	kind     protoreflect.Kind
	target   features.RecordField // -1: sub is a nested message with targets
	sub      *pmsg
	stamp    bool             // google.protobuf.Timestamp
	enum     map[int32][]byte // enum value names
	enumZero []byte           // the name of value 0 (implicit presence)
	implicit bool             // proto3 without presence: absent is the zero value
}

// pmsg is a compiled message: only its mapped fields.
type pmsg struct {
	fields []pfield
}

// protoPlan decodes payloads of one message of a writer schema for one role.
type protoPlan struct {
	root *pmsg
	role role
}

// protoFile is a compiled .proto writer schema.
type protoFile struct {
	fd protoreflect.FileDescriptor
}

// compileProtoFile compiles the .proto text of a writer schema with its
// references (imports by reference name; the well-known google/protobuf
// files are built in).
func compileProtoFile(f fetched) (*protoFile, error) {
	const main = "streamscore-writer-schema.proto"
	srcs := map[string]string{main: f.schema.Schema}
	for _, r := range f.refs {
		srcs[r.name] = r.Schema.Schema
	}
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{Accessor: protocompile.SourceAccessorFromMap(srcs)}),
	}
	files, err := c.Compile(context.Background(), main)
	if err != nil {
		return nil, mismatch("compile Protobuf schema: %w", err)
	}
	return &protoFile{fd: files[0]}, nil
}

// message returns the message at index path idx (top-level, then nested).
func (pf *protoFile) message(idx []int) (protoreflect.MessageDescriptor, error) {
	msgs := pf.fd.Messages()
	var md protoreflect.MessageDescriptor
	for _, i := range idx {
		if i < 0 || i >= msgs.Len() {
			return nil, mismatch("message index %v: the writer schema has no such message", idx)
		}
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	if md == nil {
		return nil, mismatch("empty message index")
	}
	return md, nil
}

// compileProto compiles message md for role r.
func compileProto(md protoreflect.MessageDescriptor, p *paths, r role) (*protoPlan, error) {
	t, err := p.trie(r)
	if err != nil {
		return nil, err
	}
	var found uint32
	root, err := compileMsg(md, t, &found, 0)
	if err != nil {
		return nil, err
	}
	if err := checkFound(r, found, p); err != nil {
		return nil, err
	}
	return &protoPlan{root: root, role: r}, nil
}

const timestampName = "google.protobuf.Timestamp"

// isWrapper reports whether a message is a well-known wrapper of one
// scalar (field 1): google.protobuf.DoubleValue, StringValue, ….
func isWrapper(n protoreflect.FullName) bool {
	switch n {
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
		"google.protobuf.Int64Value", "google.protobuf.UInt64Value",
		"google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue",
		"google.protobuf.BytesValue":
		return true
	}
	return false
}

func compileMsg(md protoreflect.MessageDescriptor, t *trie, found *uint32, depth int) (*pmsg, error) {
	if depth > maxDepth {
		return nil, mismatch("mapped paths nest deeper than %d", maxDepth)
	}
	m := &pmsg{}
	for name, k := range t.kids {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			continue // absent from this writer schema: required ones are caught by checkFound
		}
		if fd.Cardinality() == protoreflect.Repeated {
			return nil, mismatch("writer field %q is repeated, not a single value", name)
		}
		pf := pfield{num: fd.Number(), kind: fd.Kind(), target: k.target, implicit: !fd.HasPresence()}
		if k.target < 0 {
			if fd.Kind() != protoreflect.MessageKind {
				return nil, mismatch("writer field %q is %s, not a message with the mapped fields below it", name, fd.Kind())
			}
			sub, err := compileMsg(fd.Message(), k, found, depth+1)
			if err != nil {
				return nil, err
			}
			pf.sub = sub
			m.fields = append(m.fields, pf)
			continue
		}
		if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == timestampName {
			pf.stamp = true
		}
		if fd.Kind() == protoreflect.MessageKind && isWrapper(fd.Message().FullName()) {
			// google.protobuf.DoubleValue, StringValue, …: an optional
			// scalar; present with its value at zero when the wrapper is
			// there without field 1.
			inner := fd.Message().Fields().ByNumber(1)
			in := pfield{num: 1, kind: inner.Kind(), target: k.target, implicit: true}
			if !protoFits(&in, k.target) {
				return nil, &features.DecodeError{Reason: features.ReasonSchemaMismatch, Field: k.target.String(),
					Err: fmt.Errorf("writer field %q is %s, which cannot be a %s", name, fd.Message().FullName(), features.KindOf(k.target))}
			}
			*found |= 1 << k.target
			pf.target, pf.sub = -1, &pmsg{fields: []pfield{in}}
			m.fields = append(m.fields, pf)
			continue
		}
		if fd.Kind() == protoreflect.EnumKind {
			pf.enum = map[int32][]byte{}
			vals := fd.Enum().Values()
			for i := range vals.Len() {
				v := vals.Get(i)
				pf.enum[int32(v.Number())] = []byte(v.Name())
			}
			pf.enumZero = pf.enum[0]
		}
		if !protoFits(&pf, k.target) {
			return nil, &features.DecodeError{Reason: features.ReasonSchemaMismatch, Field: k.target.String(),
				Err: fmt.Errorf("writer field %q is %s, which cannot be a %s", name, fd.Kind(), features.KindOf(k.target))}
		}
		*found |= 1 << k.target
		m.fields = append(m.fields, pf)
	}
	return m, nil
}

func protoFits(pf *pfield, f features.RecordField) bool {
	k := pf.kind
	switch {
	case f.IsString():
		return k == protoreflect.StringKind || k == protoreflect.BytesKind || k == protoreflect.EnumKind
	case f == features.FieldTS || f == features.FieldTxTS:
		return pf.stamp || k == protoreflect.StringKind || isInt(k)
	case f == features.FieldFraud:
		return k == protoreflect.BoolKind
	}
	return isInt(k) || k == protoreflect.DoubleKind || k == protoreflect.FloatKind
}

func isInt(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return true
	}
	return false
}

// wireType is the wire type a field of kind k is encoded with.
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.DoubleKind, protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return protowire.Fixed64Type
	case protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return protowire.Fixed32Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	}
	return protowire.VarintType
}

// decode walks payload b into rec.
func (p *protoPlan) decode(b []byte, rec *features.Record) {
	if !p.msg(b, p.root, rec) {
		rec.Fail(features.ReasonMalformedRecord, -1, "truncated or malformed Protobuf payload")
	}
}

// msg reads message b of m; false when b is not a valid message.
func (p *protoPlan) msg(b []byte, m *pmsg, rec *features.Record) bool {
	var seen uint64 // m.fields seen (a message maps at most NumRecordFields)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		fi := -1
		for i := range m.fields {
			if m.fields[i].num == num {
				fi = i
				break
			}
		}
		if fi < 0 {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		pf := &m.fields[fi]
		if typ != wireType(pf.kind) {
			return false
		}
		seen |= 1 << fi
		n = p.value(b, pf, typ, rec)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	for i := range m.fields {
		pf := &m.fields[i]
		if seen&(1<<i) != 0 || !pf.implicit || pf.target < 0 {
			continue
		}
		// proto3 leaves out a zero value: the field is there, at zero.
		switch {
		case pf.enum != nil:
			rec.SetString(pf.target, pf.enumZero)
		case pf.target.IsString():
			rec.SetString(pf.target, nil)
		case pf.target == features.FieldAmount:
			rec.SetNumber(pf.target, 0)
		case pf.target == features.FieldFraud:
			rec.SetBool(pf.target, false)
		}
		// A zero timestamp (1970) or a zero position (0, 0) is taken as
		// absent, not as a value.
	}
	return true
}

// value reads the value of mapped field pf; it returns the bytes read, or
// -1 for a malformed value.
func (p *protoPlan) value(b []byte, pf *pfield, typ protowire.Type, rec *features.Record) int {
	switch typ {
	case protowire.BytesType:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return -1
		}
		switch {
		case pf.sub != nil:
			if !p.msg(v, pf.sub, rec) {
				return -1
			}
		case pf.stamp:
			t, ok := timestamp(v)
			if !ok {
				return -1
			}
			rec.SetTime(pf.target, t)
		case pf.target.IsString():
			rec.SetString(pf.target, v)
		default:
			rec.SetTimeText(pf.target, v)
		}
		return n
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(b)
		if n < 0 {
			return -1
		}
		switch pf.kind {
		case protoreflect.DoubleKind:
			rec.SetNumber(pf.target, math.Float64frombits(v))
		case protoreflect.Sfixed64Kind:
			p.integer(pf.target, int64(v), rec)
		default:
			p.unsigned(pf.target, v, rec)
		}
		return n
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(b)
		if n < 0 {
			return -1
		}
		switch pf.kind {
		case protoreflect.FloatKind:
			rec.SetNumber(pf.target, float64(math.Float32frombits(v)))
		case protoreflect.Sfixed32Kind:
			p.integer(pf.target, int64(int32(v)), rec)
		default:
			p.unsigned(pf.target, uint64(v), rec)
		}
		return n
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return -1
	}
	switch pf.kind {
	case protoreflect.BoolKind:
		rec.SetBool(pf.target, v != 0)
	case protoreflect.EnumKind:
		name, ok := pf.enum[int32(v)]
		if !ok {
			rec.Fail(features.ReasonWrongType, pf.target, "enum value not in the writer schema")
			return n
		}
		rec.SetString(pf.target, name)
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		p.integer(pf.target, protowire.DecodeZigZag(v), rec)
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		p.unsigned(pf.target, v, rec)
	case protoreflect.Int32Kind:
		p.integer(pf.target, int64(int32(v)), rec)
	default:
		p.integer(pf.target, int64(v), rec)
	}
	return n
}

// integer sets target f from an integer: epoch milliseconds for a
// timestamp, else a number.
func (p *protoPlan) integer(f features.RecordField, v int64, rec *features.Record) {
	if f == features.FieldTS || f == features.FieldTxTS {
		rec.SetEpochMillis(f, v)
		return
	}
	rec.SetNumber(f, float64(v))
}

func (p *protoPlan) unsigned(f features.RecordField, v uint64, rec *features.Record) {
	if v > math.MaxInt64 {
		if f == features.FieldTS || f == features.FieldTxTS {
			rec.SetEpochMillis(f, -1)
			return
		}
		rec.SetNumber(f, float64(v))
		return
	}
	p.integer(f, int64(v), rec)
}

// timestamp decodes a google.protobuf.Timestamp message.
func timestamp(b []byte) (time.Time, bool) {
	var secs int64
	var nanos int32
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return time.Time{}, false
			}
			if num == 1 {
				secs = int64(v)
			} else {
				nanos = int32(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
	}
	if nanos < 0 || nanos > 999_999_999 {
		return time.Time{}, false
	}
	return time.Unix(secs, int64(nanos)), true
}
