package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/streamscore/streamscore/features"
)

// maxDepth bounds the nesting of records, arrays, maps and unions walked
// in one payload (a recursive schema lets a record nest without end).
const maxDepth = 64

// maxZeroSizeItems bounds the items of an array or map whose items take no
// byte (nulls): a block count cannot then be checked against the bytes left.
const maxZeroSizeItems = 1 << 16

type akind uint8

const (
	aNull akind = iota
	aBool
	aInt
	aLong
	aFloat
	aDouble
	aBytes
	aString
	aRecord
	aEnum
	aArray
	aMap
	aUnion
	aFixed
)

type alogical uint8

const (
	lNone alogical = iota
	lTSMillis
	lTSMicros
	lDecimal
	lOther // a logical type with no meaning here (date, uuid, …)
)

// anode is a compiled Avro type of the writer schema.
type anode struct {
	kind     akind
	logical  alogical
	scale    int
	size     int      // fixed
	symbols  [][]byte // enum
	fields   []afield // record
	elem     *anode   // array items, map values
	branches []*anode // union
	minSize  int      // fewest bytes a value takes (0: null, empty record)
	bound    bool     // a record (or union) with targets below it
}

// afield is a field of a record: read into target (>= 0), descended into
// (bound: a record or union holding targets), or skipped.
type afield struct {
	node   *anode
	target features.RecordField
	bound  bool
}

// avroPlan decodes payloads of one writer schema for one role.
type avroPlan struct {
	root *anode
	role role
}

// compileAvro compiles writer schema text (with the named types of its
// references) for role r. The error is a *features.DecodeError with
// ReasonSchemaMismatch for a schema the mapping does not fit.
func compileAvro(f fetched, p *paths, r role) (*avroPlan, error) {
	cache := &avro.SchemaCache{}
	for _, ref := range f.refs {
		if _, err := avro.ParseWithCache(ref.Schema.Schema, "", cache); err != nil {
			return nil, mismatch("parse Avro reference %q: %w", ref.name, err)
		}
	}
	s, err := avro.ParseWithCache(f.schema.Schema, "", cache)
	if err != nil {
		return nil, mismatch("parse Avro schema: %w", err)
	}
	t, err := p.trie(r)
	if err != nil {
		return nil, err
	}
	c := avroCompiler{memo: map[string]*anode{}}
	root, err := c.bound(s, t)
	if err != nil {
		return nil, err
	}
	if err := checkFound(r, c.found, p); err != nil {
		return nil, err
	}
	return &avroPlan{root: root, role: r}, nil
}

type avroCompiler struct {
	memo  map[string]*anode // unbound named types (records may recurse)
	found uint32            // targets found in the writer schema
}

// bound compiles s, a record holding the targets of t (or a union with
// such records and null).
func (c *avroCompiler) bound(s avro.Schema, t *trie) (*anode, error) {
	switch x := s.(type) {
	case *avro.RefSchema:
		return c.bound(x.Schema(), t)
	case *avro.UnionSchema:
		n := &anode{kind: aUnion, bound: true}
		for _, b := range x.Types() {
			var bn *anode
			var err error
			if b.Type() == avro.Record || b.Type() == avro.Ref {
				bn, err = c.bound(b, t)
			} else {
				bn, err = c.unbound(b)
			}
			if err != nil {
				return nil, err
			}
			n.branches = append(n.branches, bn)
		}
		n.minSize = 1
		return n, nil
	case *avro.RecordSchema:
		n := &anode{kind: aRecord, bound: true}
		for _, fd := range x.Fields() {
			k := t.kids[fd.Name()]
			switch {
			case k == nil:
				fn, err := c.unbound(fd.Type())
				if err != nil {
					return nil, err
				}
				n.fields = append(n.fields, afield{node: fn, target: -1})
			case k.target >= 0:
				fn, err := c.unbound(fd.Type())
				if err != nil {
					return nil, err
				}
				if !avroFits(fn, k.target) {
					return nil, &features.DecodeError{Reason: features.ReasonSchemaMismatch, Field: k.target.String(),
						Err: fmt.Errorf("writer field %q is %s, which cannot be a %s", fd.Name(), fd.Type().Type(), features.KindOf(k.target))}
				}
				c.found |= 1 << k.target
				n.fields = append(n.fields, afield{node: fn, target: k.target})
			default:
				if ft := fd.Type().Type(); ft != avro.Record && ft != avro.Ref && ft != avro.Union {
					return nil, mismatch("writer field %q is %s, not a record with the mapped fields below it", fd.Name(), ft)
				}
				fn, err := c.bound(fd.Type(), k)
				if err != nil {
					return nil, err
				}
				n.fields = append(n.fields, afield{node: fn, target: -1, bound: true})
			}
			n.minSize += n.fields[len(n.fields)-1].node.minSize
		}
		return n, nil
	}
	return nil, mismatch("the writer schema is %s, not a record", s.Type())
}

// unbound compiles s, holding no target: it is read as a leaf or skipped.
func (c *avroCompiler) unbound(s avro.Schema) (*anode, error) {
	if named, ok := s.(avro.NamedSchema); ok {
		if n := c.memo[named.FullName()]; n != nil {
			return n, nil
		}
	}
	n := &anode{minSize: 1}
	switch x := s.(type) {
	case *avro.RefSchema:
		return c.unbound(x.Schema())
	case *avro.NullSchema:
		n.kind, n.minSize = aNull, 0
	case *avro.PrimitiveSchema:
		switch x.Type() {
		case avro.Null:
			n.kind, n.minSize = aNull, 0
		case avro.Boolean:
			n.kind = aBool
		case avro.Int:
			n.kind = aInt
		case avro.Long:
			n.kind = aLong
		case avro.Float:
			n.kind, n.minSize = aFloat, 4
		case avro.Double:
			n.kind, n.minSize = aDouble, 8
		case avro.Bytes:
			n.kind = aBytes
		case avro.String:
			n.kind = aString
		default:
			return nil, mismatch("unsupported Avro type %s", x.Type())
		}
		n.logical, n.scale = avroLogical(x.Logical())
	case *avro.RecordSchema:
		n.kind, n.minSize = aRecord, 0
		c.memo[x.FullName()] = n
		for _, fd := range x.Fields() {
			fn, err := c.unbound(fd.Type())
			if err != nil {
				return nil, err
			}
			n.fields = append(n.fields, afield{node: fn, target: -1})
			n.minSize += fn.minSize
		}
	case *avro.EnumSchema:
		n.kind = aEnum
		for _, sym := range x.Symbols() {
			n.symbols = append(n.symbols, []byte(sym))
		}
		c.memo[x.FullName()] = n
	case *avro.FixedSchema:
		n.kind, n.size, n.minSize = aFixed, x.Size(), x.Size()
		n.logical, n.scale = avroLogical(x.Logical())
		c.memo[x.FullName()] = n
	case *avro.ArraySchema:
		n.kind = aArray
		e, err := c.unbound(x.Items())
		if err != nil {
			return nil, err
		}
		n.elem = e
	case *avro.MapSchema:
		n.kind = aMap
		e, err := c.unbound(x.Values())
		if err != nil {
			return nil, err
		}
		n.elem = e
	case *avro.UnionSchema:
		n.kind = aUnion
		for _, b := range x.Types() {
			bn, err := c.unbound(b)
			if err != nil {
				return nil, err
			}
			n.branches = append(n.branches, bn)
		}
	default:
		return nil, mismatch("unsupported Avro type %s", s.Type())
	}
	return n, nil
}

func avroLogical(l avro.LogicalSchema) (alogical, int) {
	if l == nil {
		return lNone, 0
	}
	switch l.Type() {
	case avro.TimestampMillis:
		return lTSMillis, 0
	case avro.TimestampMicros:
		return lTSMicros, 0
	case avro.Decimal:
		if d, ok := l.(*avro.DecimalLogicalSchema); ok {
			return lDecimal, d.Scale()
		}
	}
	return lOther, 0
}

// avroFits reports whether a value of n can be read into target f: for a
// union, whether some branch can (the others are wrong_type at decode).
func avroFits(n *anode, f features.RecordField) bool {
	if n.kind == aUnion {
		for _, b := range n.branches {
			if b.kind != aNull && avroFits(b, f) {
				return true
			}
		}
		return false
	}
	switch {
	case f.IsString():
		return (n.kind == aString || n.kind == aBytes) && n.logical != lDecimal || n.kind == aEnum
	case f == features.FieldTS || f == features.FieldTxTS:
		return n.kind == aLong && (n.logical == lNone || n.logical == lTSMillis || n.logical == lTSMicros) || n.kind == aString
	case f == features.FieldFraud:
		return n.kind == aBool
	}
	switch n.kind {
	case aInt, aLong:
		return n.logical == lNone
	case aFloat, aDouble:
		return true
	case aBytes, aFixed:
		return n.logical == lDecimal
	}
	return false
}

// areader reads Avro's binary encoding; bad records the first error.
type areader struct {
	b     []byte
	i     int
	bad   bool
	depth int
}

func (r *areader) long() int64 {
	var u uint64
	for shift := uint(0); shift < 70; shift += 7 {
		if r.i >= len(r.b) {
			r.bad = true
			return 0
		}
		c := r.b[r.i]
		r.i++
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return int64(u>>1) ^ -int64(u&1)
		}
	}
	r.bad = true
	return 0
}

func (r *areader) take(n int64) []byte {
	if n < 0 || n > int64(len(r.b)-r.i) {
		r.bad = true
		r.i = len(r.b)
		return nil
	}
	b := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return b
}

func (r *areader) bytes() []byte { return r.take(r.long()) }

// decode walks payload b into rec.
func (p *avroPlan) decode(b []byte, rec *features.Record) {
	rd := areader{b: b}
	p.record(&rd, p.root, rec)
	switch {
	case rd.bad:
		rec.Fail(features.ReasonMalformedRecord, -1, "truncated or malformed Avro payload")
	case rd.i < len(b):
		rec.Fail(features.ReasonTrailingData, -1, fmt.Sprintf("%d bytes after the Avro record", len(b)-rd.i))
	}
}

// record reads a bound record (or union of them).
func (p *avroPlan) record(rd *areader, n *anode, rec *features.Record) {
	if n.kind == aUnion {
		i := rd.long()
		if rd.bad || i < 0 || i >= int64(len(n.branches)) {
			rd.bad = true
			return
		}
		b := n.branches[i]
		if b.bound {
			p.record(rd, b, rec)
		} else {
			skip(rd, b)
		}
		return
	}
	rd.depth++
	if rd.depth > maxDepth {
		rd.bad = true
		return
	}
	for i := range n.fields {
		fd := &n.fields[i]
		switch {
		case rd.bad:
			return
		case fd.target >= 0:
			p.leaf(rd, fd.node, fd.target, rec)
		case fd.bound:
			p.record(rd, fd.node, rec)
		default:
			skip(rd, fd.node)
		}
	}
	rd.depth--
}

// leaf reads a value of n into target f.
func (p *avroPlan) leaf(rd *areader, n *anode, f features.RecordField, rec *features.Record) {
	if n.kind == aUnion {
		i := rd.long()
		if rd.bad || i < 0 || i >= int64(len(n.branches)) {
			rd.bad = true
			return
		}
		n = n.branches[i]
		if n.kind == aNull {
			rec.SetNull(f, p.role.required(f))
			return
		}
		if !avroFits(n, f) {
			skip(rd, n)
			rec.Fail(features.ReasonWrongType, f, "expected a "+features.KindOf(f))
			return
		}
	}
	switch n.kind {
	case aString, aBytes:
		b := rd.bytes()
		if rd.bad {
			return
		}
		switch {
		case n.logical == lDecimal:
			rec.SetNumber(f, decimal(b, n.scale))
		case f.IsString():
			rec.SetString(f, b)
		default:
			rec.SetTimeText(f, b)
		}
	case aFixed:
		b := rd.take(int64(n.size))
		if !rd.bad {
			rec.SetNumber(f, decimal(b, n.scale))
		}
	case aEnum:
		i := rd.long()
		if rd.bad || i < 0 || i >= int64(len(n.symbols)) {
			rd.bad = true
			return
		}
		rec.SetString(f, n.symbols[i])
	case aInt, aLong:
		v := rd.long()
		if rd.bad {
			return
		}
		switch {
		case f != features.FieldTS && f != features.FieldTxTS:
			rec.SetNumber(f, float64(v))
		case n.logical == lTSMicros:
			rec.SetTime(f, time.UnixMicro(v))
		default:
			rec.SetEpochMillis(f, v)
		}
	case aFloat:
		b := rd.take(4)
		if !rd.bad {
			rec.SetNumber(f, float64(math.Float32frombits(binary.LittleEndian.Uint32(b))))
		}
	case aDouble:
		b := rd.take(8)
		if !rd.bad {
			rec.SetNumber(f, math.Float64frombits(binary.LittleEndian.Uint64(b)))
		}
	case aBool:
		b := rd.take(1)
		if !rd.bad {
			rec.SetBool(f, b[0] != 0)
		}
	}
}

// decimal returns the value of an Avro decimal: a big-endian two's
// complement unscaled integer, divided by 10^scale.
func decimal(b []byte, scale int) float64 {
	var v float64
	if len(b) <= 8 {
		var u int64
		for _, c := range b {
			u = u<<8 | int64(c)
		}
		if len(b) > 0 && len(b) < 8 && b[0]&0x80 != 0 {
			u -= 1 << (8 * len(b))
		}
		v = float64(u)
	} else {
		x := new(big.Int).SetBytes(b)
		if b[0]&0x80 != 0 {
			x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
		}
		v, _ = new(big.Float).SetInt(x).Float64()
	}
	if scale > 0 {
		if scale <= 22 {
			return v / math.Pow10(scale)
		}
		return v * math.Pow10(-scale)
	}
	return v
}

// skip reads past a value of n.
func skip(rd *areader, n *anode) {
	if rd.bad {
		return
	}
	switch n.kind {
	case aNull:
	case aBool:
		rd.take(1)
	case aInt, aLong, aEnum:
		rd.long()
	case aFloat:
		rd.take(4)
	case aDouble:
		rd.take(8)
	case aBytes, aString:
		rd.bytes()
	case aFixed:
		rd.take(int64(n.size))
	case aRecord:
		rd.depth++
		if rd.depth > maxDepth {
			rd.bad = true
			return
		}
		for i := range n.fields {
			skip(rd, n.fields[i].node)
		}
		rd.depth--
	case aUnion:
		i := rd.long()
		if rd.bad || i < 0 || i >= int64(len(n.branches)) {
			rd.bad = true
			return
		}
		skip(rd, n.branches[i])
	case aArray, aMap:
		rd.depth++
		if rd.depth > maxDepth {
			rd.bad = true
			return
		}
		total := 0
		for !rd.bad {
			count := rd.long()
			if count == 0 {
				break
			}
			if count < 0 {
				size := rd.long() // the block's size in bytes: skipped whole
				rd.take(size)
				continue
			}
			total += int(min(count, math.MaxInt32))
			perItem := n.elem.minSize
			if n.kind == aMap {
				perItem++ // the key's length
			}
			if perItem == 0 && total > maxZeroSizeItems || perItem > 0 && count > int64(len(rd.b)-rd.i)/int64(perItem) {
				rd.bad = true
				return
			}
			for range count {
				if n.kind == aMap {
					rd.bytes()
				}
				skip(rd, n.elem)
				if rd.bad {
					return
				}
			}
		}
		rd.depth--
	}
}
