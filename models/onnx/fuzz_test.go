package onnx

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/onnx/internal/onnxpb"
)

// overflow37 is a 37-byte ModelProto whose one initializer has dimensions
// 2^24 × 2^24 × 2^15: the product overflows int64 to a negative size, on
// which the importer once allocated (and panicked with "makeslice: cap out
// of range").
const overflow37 = "\b\b:!\n\x06\"\x04Gemm\x12\x01g*\x14\b\x80\x80\x80\b\b\x80\x80\x80\b\b\x80\x80\x02\x10\x01B\x02W1"

// TestImportHostile feeds the importer files built to break it; each must
// be refused with an error naming the problem, never a panic.
func TestImportHostile(t *testing.T) {
	if len(overflow37) != 37 {
		t.Fatalf("overflow37 is %d bytes, want 37", len(overflow37))
	}
	long := strings.Repeat("n", maxName+1)
	// nested is a Constant node whose attribute holds a graph holding a
	// node whose attribute holds a graph ... depth times.
	nested := func(depth int) *onnxpb.NodeProto {
		n := node("Identity", "leaf", []string{"x"}, []string{"y"})
		for range depth {
			n = node("If", "if", []string{"x"}, []string{"y"}, &onnxpb.AttributeProto{
				Name: proto.String("then_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(),
				G: &onnxpb.GraphProto{Node: []*onnxpb.NodeProto{n}}})
		}
		return n
	}
	many := func(n int) []*onnxpb.NodeProto {
		var ns []*onnxpb.NodeProto
		from := "x"
		for i := range n {
			to := fmt.Sprintf("v%d", i)
			ns = append(ns, node("Identity", to, []string{from}, []string{to}))
			from = to
		}
		return ns
	}
	raw := func(g graph) []byte { return g.bytes(t) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"37-byte dims overflow", []byte(overflow37), ErrLimit, "is too large"},
		{"huge tensor without its data", raw(graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": {dims: []int64{1 << 24}}},
			nodes: gemm3().nodes}), ErrDecode, "0 values for shape [16777216]"},
		{"dimension out of range", raw(graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": {dims: []int64{1 << 25, 0}}},
			nodes: gemm3().nodes}), ErrLimit, "dimension 33554432 out of range"},
		{"rank 9 tensor", raw(graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": {dims: []int64{1, 1, 1, 1, 1, 1, 1, 1, 1}, v: []float64{1}}},
			nodes: gemm3().nodes}), ErrLimit, "rank 9"},
		{"nested subgraphs", raw(graph{in: []int64{0, 3}, nodes: []*onnxpb.NodeProto{nested(maxDepth)}}), ErrDecode, "exceeded maximum recursion depth"},
		{"a subgraph", raw(graph{in: []int64{0, 3}, nodes: []*onnxpb.NodeProto{nested(1)}}), ErrUnsupported, `attribute "then_branch" holds a subgraph`},
		{"too many nodes", raw(graph{in: []int64{0, 3}, nodes: many(maxNodes + 1)}), ErrLimit, "4097 nodes"},
		{"long node name", raw(gemm3(node("Identity", long, []string{"x"}, []string{"y"}))), ErrLimit, "node name of 4097 bytes"},
		{"long value name", raw(gemm3(node("Identity", "id", []string{"x"}, []string{long}))), ErrLimit, "value name of 4097 bytes"},
		{"long attribute string", raw(gemm3(node("Identity", "id", []string{"x"}, []string{"y"}, attrStr("s", long)))), ErrLimit, "string of 4097 bytes"},
		{"many attribute values", raw(gemm3(node("Transpose", "tr", []string{"x"}, []string{"y"}, attrInts("perm", make([]int64, maxAttrInts+1)...)))), ErrLimit, "more than 64 values"},
		{"unsqueeze past the rank bound", raw(gemm3(node("Unsqueeze", "un", []string{"x"}, []string{"y"}, attrInts("axes", 0, 1, 2, 3, 4, 5, 6)))), ErrLimit, "rank 9 after unsqueezing"},
		{"huge hidden size", raw(graph{in: []int64{0, 0, 3},
			inits: map[string]*tensor{"W": filled([]int64{1, 3, 3}, 0.1), "R": filled([]int64{1, 3, 1}, 0.1)},
			nodes: []*onnxpb.NodeProto{node("GRU", "cell", []string{"x", "W", "R"}, []string{"y"}, attrInt("linear_before_reset", 1), attrInt("hidden_size", 1<<62+1))}}),
			ErrShape, "hidden_size 4097"},
		{"empty bias", raw(graph{in: []int64{0, 3}, inits: map[string]*tensor{"W": filled([]int64{1, 3}, 0.5), "B": {dims: []int64{0}}},
			nodes: gemm3().nodes}), ErrShape, "has 0 values along the features, want 1"},
		{"squeeze every axis", raw(graph{in: []int64{1, 1}, inits: map[string]*tensor{"W": filled([]int64{1, 1}, 0.5)},
			nodes: []*onnxpb.NodeProto{node("Squeeze", "sq", []string{"x"}, []string{"s"}, attrInts("axes", 0, 1)),
				node("MatMul", "mm", []string{"s", "W"}, []string{"score"})}}), ErrUnsupported, "squeezing every axis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := []string{"a", "b", "c"}
			if tc.name == "squeeze every axis" {
				names = names[:1]
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Import(tc.b, "m", names)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Fatalf("Import = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			// Refusing a file costs about its size, not its claims.
			if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20+8*uint64(len(tc.b)) {
				t.Errorf("refusing a %d-byte file allocated %d bytes", len(tc.b), d)
			}
		})
	}
}

// FuzzImport checks that Import never panics, and that whatever it accepts
// and [models.File.Encode] validates parses back and scores without
// panicking. Seeds: the fixtures in testdata and the 37-byte overflow.
func FuzzImport(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.onnx")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, p := range paths {
		b, fx := loadFixture(f, strings.TrimSuffix(filepath.Base(p), ".onnx"))
		f.Add(b, uint8(len(fx.Inputs)), uint8(0))
		f.Add(b, uint8(len(fx.Inputs)), uint8(8))
	}
	f.Add([]byte(overflow37), uint8(2), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, nIn, window uint8) {
		names := make([]string, int(nIn%32)+1)
		for i := range names {
			names[i] = "f" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		}
		var opts []Option
		if window > 0 {
			opts = append(opts, WithWindow(int(window)%models.MaxWindow+1))
		}
		file, err := Import(b, "m", names, opts...)
		if err != nil {
			return
		}
		enc, err := file.Encode()
		if err != nil {
			return // imported but not a valid model (e.g. non-finite weights)
		}
		m, err := models.Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode(Import)) = %v", err)
		}
		s, err := m.Bind(m.Inputs())
		if err != nil {
			t.Fatalf("Bind(own inputs) = %v", err)
		}
		x := make([]float32, 2*len(names))
		out := make([]float32, 2)
		states := [][]float32{make([]float32, m.StateSize()), make([]float32, m.StateSize())}
		s.ScoreSeq(x, 2, states, nil, out)
	})
}
