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

// ints returns the values as int64 (shape and axes arguments).
func (t *tensor) ints() []int64 {
	out := make([]int64, len(t.v))
	for i, v := range t.v {
		out[i] = int64(v)
	}
	return out
}

// decodeTensor reads a TensorProto of element type float, double, int32 or
// int64, stored in the typed fields or in raw_data (little-endian). The
// shape is checked before anything is allocated: rank <= maxRank, each
// dimension in [0, maxDim], the product (computed without overflow) <=
// maxElements, and the values actually present in the file must be exactly
// that many, so a tensor never costs more memory than twice the bytes that
// hold it.
func decodeTensor(p *onnxpb.TensorProto) (*tensor, error) {
	if p.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q: external data is not supported (save the model with its weights inside)", p.GetName())
	}
	if err := checkName("tensor name", p.GetName()); err != nil {
		return nil, err
	}
	if len(p.GetDims()) > maxRank {
		return nil, fmt.Errorf("tensor %q: rank %d is too large (at most %d): %w", p.GetName(), len(p.GetDims()), maxRank, ErrLimit)
	}
	n := 1
	for _, d := range p.GetDims() {
		if d < 0 || d > maxDim {
			return nil, fmt.Errorf("tensor %q: dimension %d out of range [0, %d]: %w", p.GetName(), d, maxDim, ErrLimit)
		}
		// n <= maxElements and d <= maxDim: the product fits in 48 bits.
		n *= int(d)
		if n > maxElements {
			return nil, fmt.Errorf("tensor %q: shape %v is too large (more than %d values): %w", p.GetName(), p.GetDims(), maxElements, ErrLimit)
		}
	}
	t := &tensor{dims: append([]int64(nil), p.GetDims()...)}
	raw := p.GetRawData()
	dt := onnxpb.TensorProto_DataType(p.GetDataType())
	var width, typed int
	switch dt {
	case onnxpb.TensorProto_FLOAT:
		width, typed = 4, len(p.GetFloatData())
	case onnxpb.TensorProto_INT32:
		width, typed = 4, len(p.GetInt32Data())
	case onnxpb.TensorProto_DOUBLE:
		width, typed = 8, len(p.GetDoubleData())
	case onnxpb.TensorProto_INT64:
		width, typed = 8, len(p.GetInt64Data())
	default:
		return nil, fmt.Errorf("tensor %q: element type %s is not supported", p.GetName(), dt)
	}
	if len(raw) > 0 {
		if len(raw) != n*width || typed > 0 {
			return nil, fmt.Errorf("tensor %q: %d raw bytes (and %d typed values) for %d values of %s", p.GetName(), len(raw), typed, n, dt)
		}
		t.v = make([]float64, 0, n)
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
	if typed != n {
		return nil, fmt.Errorf("tensor %q: %d values for shape %v (%d values)", p.GetName(), typed, t.dims, n)
	}
	t.v = make([]float64, 0, n)
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
