package onnx

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/onnx/internal/onnxpb"
)

// graph builds a serialized ONNX model with one float input of the given
// shape (0 = dynamic), float initializers and nodes; the first node
// output named "score" is the graph output.
type graph struct {
	in    []int64
	inits map[string]*tensor
	nodes []*onnxpb.NodeProto
}

func (g graph) bytes(t *testing.T) []byte {
	t.Helper()
	var dims []*onnxpb.TensorShapeProto_Dimension
	for _, d := range g.in {
		if d == 0 {
			dims = append(dims, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}})
			continue
		}
		dims = append(dims, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	gp := &onnxpb.GraphProto{
		Name: proto.String("test"),
		Node: g.nodes,
		Input: []*onnxpb.ValueInfoProto{{
			Name: proto.String("x"),
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
				ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
				Shape:    &onnxpb.TensorShapeProto{Dim: dims},
			}}},
		}},
		Output: []*onnxpb.ValueInfoProto{{Name: proto.String("score")}},
	}
	for name, tv := range g.inits {
		fl := make([]float32, len(tv.v))
		for i, v := range tv.v {
			fl[i] = float32(v)
		}
		gp.Initializer = append(gp.Initializer, &onnxpb.TensorProto{
			Name: proto.String(name), Dims: tv.dims,
			DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: fl,
		})
	}
	b, err := proto.Marshal(&onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph:       gp,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func node(op, name string, in, out []string, at ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: in, Output: out, Attribute: at}
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrStr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

func filled(dims []int64, v float64) *tensor {
	t := &tensor{dims: dims}
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	t.v = make([]float64, n)
	for i := range t.v {
		t.v[i] = v + 0.01*float64(i)
	}
	return t
}

var names3 = []string{"a", "b", "c"}

// gemm3 is a logistic model on 3 inputs; extra nodes go before it.
func gemm3(pre ...*onnxpb.NodeProto) graph {
	from := "x"
	if len(pre) > 0 {
		from = pre[len(pre)-1].GetOutput()[0]
	}
	nodes := append(pre,
		node("Gemm", "head", []string{from, "W", "B"}, []string{"z"}, attrInt("transB", 1)),
		node("Sigmoid", "sig", []string{"z"}, []string{"score"}))
	return graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{1, 3}, 0.5), "B": filled([]int64{1}, 0.1)}, nodes: nodes}
}

func TestImportRefusals(t *testing.T) {
	rnn := func(op string, at ...*onnxpb.AttributeProto) graph {
		g := 3
		if op == "LSTM" {
			g = 4
		}
		return graph{
			in: []int64{0, 0, 3},
			inits: map[string]*tensor{
				"W": filled([]int64{1, int64(2 * g), 3}, 0.1), "R": filled([]int64{1, int64(2 * g), 2}, 0.1),
				"H": filled([]int64{2, 1}, 0.1), "HB": filled([]int64{1}, 0),
			},
			nodes: []*onnxpb.NodeProto{
				node(op, "cell", []string{"x", "W", "R"}, []string{"y"}, append(at, attrInt("hidden_size", 2))...),
				node("Squeeze", "sq", []string{"y"}, []string{"ys"}, attrInts("axes", 1)),
				node("MatMul", "mm", []string{"ys", "H"}, []string{"z"}),
				node("Sigmoid", "sig", []string{"z"}, []string{"score"}),
			},
		}
	}
	conv := func(at ...*onnxpb.AttributeProto) graph {
		return graph{
			in:    []int64{0, 3, 4},
			inits: map[string]*tensor{"K": filled([]int64{2, 3, 2}, 0.1), "W": filled([]int64{6, 1}, 0.1)},
			nodes: []*onnxpb.NodeProto{
				node("Conv", "conv", []string{"x", "K"}, []string{"c"}, at...),
				node("Flatten", "flat", []string{"c"}, []string{"f"}),
				node("MatMul", "mm", []string{"f", "W"}, []string{"z"}),
				node("Sigmoid", "sig", []string{"z"}, []string{"score"}),
			},
		}
	}
	for _, tc := range []struct {
		name   string
		g      graph
		inputs []string
		want   error
		msg    string // the error must contain it
	}{
		{"unsupported op by name", gemm3(node("Abs", "my_abs", []string{"x"}, []string{"y"})), names3, ErrUnsupported, `node "my_abs" (Abs): operator Abs is not supported`},
		{"other domain", gemm3(&onnxpb.NodeProto{OpType: proto.String("Scaler"), Domain: proto.String("ai.onnx.ml"), Name: proto.String("sc"), Input: []string{"x"}, Output: []string{"y"}}), names3, ErrUnsupported, `node "sc" (Scaler)`},
		{"input names vs graph", gemm3(), []string{"a", "b"}, ErrShape, "3 features, 2 input names"},
		{"weights vs width", graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{1, 4}, 0.5)}, nodes: []*onnxpb.NodeProto{
			node("Gemm", "head", []string{"x", "W"}, []string{"z"}, attrInt("transB", 1)),
			node("Sigmoid", "sig", []string{"z"}, []string{"score"})}}, names3, ErrShape, `node "head" (Gemm): weights of shape [1 4] read 4 values, the tensor has 3`},
		{"output width", graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{3, 3}, 0.5)}, nodes: []*onnxpb.NodeProto{
			node("MatMul", "head", []string{"x", "W"}, []string{"score"})}}, names3, ErrShape, "3 values per row"},
		{"gru linear_before_reset 0", rnn("GRU"), names3, ErrUnsupported, `node "cell" (GRU): linear_before_reset 0`},
		{"bidirectional", rnn("GRU", attrInt("linear_before_reset", 1), attrStr("direction", "bidirectional")), names3, ErrUnsupported, "direction bidirectional"},
		{"lstm clip", rnn("LSTM", &onnxpb.AttributeProto{Name: proto.String("clip"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(3)}), names3, ErrUnsupported, `node "cell" (LSTM): clip`},
		{"conv padding", conv(attrInts("pads", 1, 1)), names3, ErrUnsupported, `node "conv" (Conv): pads [1 1]`},
		{"conv dilation", conv(attrInts("dilations", 2)), names3, ErrUnsupported, "dilations [2]"},
		{"conv groups", conv(attrInt("group", 3)), names3, ErrUnsupported, "group 3"},
		{"conv dynamic window", func() graph { g := conv(); g.in = []int64{0, 3, 0}; return g }(), names3, ErrShape, `node "conv" (Conv): the input's sequence length is dynamic: give the window`},
		{"conv input names", conv(), []string{"a", "b"}, ErrShape, "the input has 3 features, 2 input names given"},
		{"conv head width", func() graph { g := conv(); g.inits["W"] = filled([]int64{5, 1}, 0.1); return g }(), names3, ErrShape, `node "mm" (MatMul): weights of shape [5 1] read 5 values, the tensor has 6`},
		{"branch", graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{3, 1}, 0.5), "V": filled([]int64{3, 3}, 0.5)}, nodes: []*onnxpb.NodeProto{
			node("MatMul", "mm0", []string{"x", "V"}, []string{"h"}),
			node("Relu", "r", []string{"h"}, []string{"y"}),
			node("Add", "res", []string{"h", "y"}, []string{"s"}),
			node("MatMul", "mm", []string{"s", "W"}, []string{"score"})}}, names3, ErrUnsupported, `node "res" (Add): two inputs`},
		{"softmax of 3", graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{3, 3}, 0.5)}, nodes: []*onnxpb.NodeProto{
			node("MatMul", "mm", []string{"x", "W"}, []string{"z"}),
			node("Softmax", "sm", []string{"z"}, []string{"score"}, attrInt("axis", 1))}}, names3, ErrUnsupported, "softmax over 3 classes"},
		{"mul after a layer", graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{3, 1}, 0.5), "K": filled([]int64{1}, 2)}, nodes: []*onnxpb.NodeProto{
			node("MatMul", "mm", []string{"x", "W"}, []string{"z"}),
			node("Mul", "scale", []string{"z", "K"}, []string{"score"})}}, names3, ErrUnsupported, `node "scale" (Mul): Mul after the first layer`},
		{"plain logistic", gemm3(), names3, nil, ""},
		{"not onnx", graph{}, names3, ErrDecode, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.g.bytes(t)
			if tc.name == "not onnx" {
				b = []byte("definitely not protobuf \xff\xff\xff")
			}
			_, err := Import(b, "m", tc.inputs)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

// TestGateReorder: ONNX gate blocks (GRU z, r, h; LSTM i, o, f, c) land in
// the native column blocks (GRU r, z, n; LSTM i, f, g, o), W and R
// transposed, B split into Bx and Bh.
func TestGateReorder(t *testing.T) {
	for _, tc := range []struct {
		cell string
		onnx []string // ONNX block order
		nat  []string // native block order
	}{
		{models.FamilyGRU, []string{"z", "r", "h"}, []string{"r", "z", "h"}},
		{models.FamilyLSTM, []string{"i", "o", "f", "c"}, []string{"i", "f", "c", "o"}},
	} {
		t.Run(tc.cell, func(t *testing.T) {
			const h, in = 2, 3
			g := len(tc.onnx)
			code := map[string]float64{"z": 1, "r": 2, "h": 3, "i": 4, "o": 5, "f": 6, "c": 7}
			// value = gate code·100 + unit·10 + column
			w := make([]float64, g*h*in)
			r := make([]float64, g*h*h)
			b := make([]float64, 2*g*h)
			for gi, gate := range tc.onnx {
				for j := range h {
					row := gi*h + j
					for i := range in {
						w[row*in+i] = code[gate]*100 + float64(j)*10 + float64(i)
					}
					for k := range h {
						r[row*h+k] = -(code[gate]*100 + float64(j)*10 + float64(k))
					}
					b[row] = code[gate]*100 + float64(j)*10
					b[g*h+row] = -(code[gate]*100 + float64(j)*10)
				}
			}
			rc := reorderGates(tc.cell, h, in, w, r, b)
			gh := g * h
			for ng, gate := range tc.nat {
				for j := range h {
					col := ng*h + j
					for i := range in {
						if got, want := rc.Wx[i*gh+col], float32(code[gate]*100+float64(j)*10+float64(i)); got != want {
							t.Fatalf("Wx[%d][%d] (gate %s unit %d) = %v, want %v", i, col, gate, j, got, want)
						}
					}
					for k := range h {
						if got, want := rc.Wh[k*gh+col], float32(-(code[gate]*100 + float64(j)*10 + float64(k))); got != want {
							t.Fatalf("Wh[%d][%d] = %v, want %v", k, col, got, want)
						}
					}
					if got, want := rc.Bx[col], float32(code[gate]*100+float64(j)*10); got != want {
						t.Fatalf("Bx[%d] = %v, want %v", col, got, want)
					}
					if got, want := rc.Bh[col], -float32(code[gate]*100+float64(j)*10); got != want {
						t.Fatalf("Bh[%d] = %v, want %v", col, got, want)
					}
				}
			}
		})
	}
}

// TestNegativeScaleFolded: a leading x·(−2) + 1 becomes mean 0.5, std 0.5
// with the first layer's row negated, and scores the same.
func TestNegativeScaleFolded(t *testing.T) {
	g := gemm3(
		node("Mul", "neg", []string{"x", "S"}, []string{"m"}),
		node("Add", "shift", []string{"O", "m"}, []string{"s"}))
	g.inits["S"] = &tensor{dims: []int64{3}, v: []float64{-2, 4, 1}}
	g.inits["O"] = &tensor{dims: []int64{1, 3}, v: []float64{1, -2, 0}}
	f, err := Import(g.bytes(t), "m", names3)
	if err != nil {
		t.Fatal(err)
	}
	x := [][]float64{{0.3, -1, 2}, {5, 2, -3}}
	want := make([]float64, len(x))
	for r, row := range x {
		s := 0.1
		for i, v := range row {
			z := v*[]float64{-2, 4, 1}[i] + []float64{1, -2, 0}[i]
			s += z * float64(float32(0.5+0.01*float64(i)))
		}
		want[r] = sigmoid(s)
	}
	got := refScore(t, f, x)
	for r := range want {
		if d := got[r] - want[r]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("row %d: %v, want %v (inputs %+v)", r, got[r], want[r], f.Inputs)
		}
	}
	if f.Inputs[0].Mean != 0.5 || f.Inputs[0].Std != 0.5 {
		t.Fatalf("input 0: %+v, want mean 0.5 std 0.5", f.Inputs[0])
	}
}

// TestConvWindow: a dynamic sequence length takes the window from
// WithWindow; a fixed one must agree with it.
func TestConvWindow(t *testing.T) {
	g := graph{
		in:    []int64{0, 3, 0},
		inits: map[string]*tensor{"K": filled([]int64{2, 3, 2}, 0.1), "W": filled([]int64{6, 1}, 0.1)},
		nodes: []*onnxpb.NodeProto{
			node("Conv", "conv", []string{"x", "K"}, []string{"c"}),
			node("Relu", "relu", []string{"c"}, []string{"r"}),
			node("Flatten", "flat", []string{"r"}, []string{"f"}),
			node("MatMul", "mm", []string{"f", "W"}, []string{"score"}),
		},
	}
	f, err := Import(g.bytes(t), "risk_cnn", names3, WithWindow(4))
	if err != nil {
		t.Fatal(err)
	}
	if f.Family != models.FamilyCNN || f.Output != models.OutputValue || f.Conv.Window != 4 || f.Conv.PoolSize != 1 {
		t.Fatalf("got family %s output %s conv %+v", f.Family, f.Output, f.Conv)
	}
	if _, err := f.Encode(); err != nil {
		t.Fatal(err)
	}
	g.in = []int64{0, 3, 4}
	if _, err := Import(g.bytes(t), "risk_cnn", names3, WithWindow(5)); !errors.Is(err, ErrShape) {
		t.Fatalf("window 5 on a graph of window 4: got %v, want ErrShape", err)
	}
}
