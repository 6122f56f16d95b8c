package onnx

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/streamscore/streamscore/models/onnx/internal/onnxpb"
)

// tensor is a constant of the graph (an initializer or a Constant node):
// its shape and its values as float64, whatever the stored element type.
type tensor struct {
	dims []int64
	v    []float64
}

func (t *tensor) size() int {
	n := 1
	for _, d := range t.dims {
		n *= int(d)
	}
	return n
}

// ints returns the values as int64 (shape and axes arguments).
func (t *tensor) ints() []int64 {
	out := make([]int64, len(t.v))
	for i, v := range t.v {
		out[i] = int64(v)
	}
	return out
}

// decodeTensor reads a TensorProto of element type float, double, int32 or
// int64, stored in the typed fields or in raw_data (little-endian).
func decodeTensor(p *onnxpb.TensorProto) (*tensor, error) {
	if p.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q: external data is not supported (save the model with its weights inside)", p.GetName())
	}
	t := &tensor{dims: append([]int64(nil), p.GetDims()...)}
	for _, d := range t.dims {
		if d < 0 || d > 1<<24 {
			return nil, fmt.Errorf("tensor %q: dimension %d out of range", p.GetName(), d)
		}
	}
	n := t.size()
	if n > 1<<24 {
		return nil, fmt.Errorf("tensor %q: %d values is too large", p.GetName(), n)
	}
	raw := p.GetRawData()
	dt := onnxpb.TensorProto_DataType(p.GetDataType())
	var width int
	switch dt {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_INT32:
		width = 4
	case onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64:
		width = 8
	default:
		return nil, fmt.Errorf("tensor %q: element type %s is not supported", p.GetName(), dt)
	}
	t.v = make([]float64, 0, n)
	if len(raw) > 0 {
		if len(raw) != n*width {
			return nil, fmt.Errorf("tensor %q: %d raw bytes for %d values of %s", p.GetName(), len(raw), n, dt)
		}
		for i := 0; i < n; i++ {
			b := raw[i*width:]
			switch dt {
			case onnxpb.TensorProto_FLOAT:
				t.v = append(t.v, float64(math.Float32frombits(binary.LittleEndian.Uint32(b))))
			case onnxpb.TensorProto_INT32:
				t.v = append(t.v, float64(int32(binary.LittleEndian.Uint32(b))))
			case onnxpb.TensorProto_DOUBLE:
				t.v = append(t.v, math.Float64frombits(binary.LittleEndian.Uint64(b)))
			case onnxpb.TensorProto_INT64:
				t.v = append(t.v, float64(int64(binary.LittleEndian.Uint64(b))))
			}
		}
		return t, nil
	}
	switch dt {
	case onnxpb.TensorProto_FLOAT:
		for _, v := range p.GetFloatData() {
			t.v = append(t.v, float64(v))
		}
	case onnxpb.TensorProto_INT32:
		for _, v := range p.GetInt32Data() {
			t.v = append(t.v, float64(v))
		}
	case onnxpb.TensorProto_DOUBLE:
		t.v = append(t.v, p.GetDoubleData()...)
	case onnxpb.TensorProto_INT64:
		for _, v := range p.GetInt64Data() {
			t.v = append(t.v, float64(v))
		}
	}
	if len(t.v) != n {
		return nil, fmt.Errorf("tensor %q: %d values for shape %v", p.GetName(), len(t.v), t.dims)
	}
	return t, nil
}

// attrs gives typed access to a node's attributes.
type attrs map[string]*onnxpb.AttributeProto

func nodeAttrs(n *onnxpb.NodeProto) attrs {
	a := attrs{}
	for _, at := range n.GetAttribute() {
		a[at.GetName()] = at
	}
	return a
}

func (a attrs) int(name string, def int64) int64 {
	if at, ok := a[name]; ok {
		return at.GetI()
	}
	return def
}

func (a attrs) float(name string, def float32) float32 {
	if at, ok := a[name]; ok {
		return at.GetF()
	}
	return def
}

func (a attrs) ints(name string) ([]int64, bool) {
	at, ok := a[name]
	if !ok {
		return nil, false
	}
	return at.GetInts(), true
}

func (a attrs) str(name, def string) string {
	if at, ok := a[name]; ok {
		return string(at.GetS())
	}
	return def
}

func (a attrs) strs(name string) []string {
	at, ok := a[name]
	if !ok {
		return nil
	}
	var out []string
	for _, s := range at.GetStrings() {
		out = append(out, string(s))
	}
	return out
}
