package onnx

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/onnx/internal/onnxpb"
)

// Errors returned (wrapped) by [Import]; branch on them with errors.Is.
var (
	// ErrDecode: the bytes are not an ONNX model (protobuf decoding failed,
	// no graph, unreadable tensor).
	ErrDecode = errors.New("onnx: not a readable ONNX model")
	// ErrUnsupported: the graph uses an operator, attribute or structure
	// the native families cannot express. The message names the node.
	ErrUnsupported = errors.New("onnx: unsupported graph")
	// ErrShape: the graph's shapes disagree with each other or with the
	// input names given.
	ErrShape = errors.New("onnx: shape mismatch")
	// ErrLimit: the file exceeds one of the importer's bounds (file size,
	// nesting depth, node, initializer, input or attribute count, name
	// length, tensor rank, dimension or value count). The message names
	// the bound. A file from an untrusted source cannot make Import
	// allocate much more than its own size or recurse deeply.
	ErrLimit = errors.New("onnx: file exceeds the importer's limits")
)

// Bounds on a graph, far above what the native families can express (a
// model has at most a few dense layers, one convolution or recurrent cell
// and a standardisation), checked before the work they would cost.
const (
	MaxFileSize = 256 << 20 // bytes of the serialized ModelProto

	maxDepth       = 32      // protobuf message nesting (subgraphs, functions)
	maxNodes       = 4096    // nodes of the main graph
	maxInits       = 4096    // initializers
	maxGraphIO     = 4096    // graph inputs (IR < 4 lists initializers) and outputs
	maxNodeIO      = 16      // inputs or outputs of one node
	maxAttrs       = 64      // attributes of one node
	maxAttrInts    = 64      // values of an ints/strings attribute
	maxName        = 4096    // bytes of a name (node, tensor, value, op type, attribute string)
	maxRank        = 8       // dimensions of a tensor or a computed value
	maxDim         = 1 << 24 // one dimension of a tensor
	maxElements    = 1 << 24 // values of one tensor
	maxHidden      = 1 << 12 // recurrent hidden size (models.Recurrent's bound)
	maxTotalValues = 1 << 26 // values of all constants together
)

// checkName refuses a name longer than maxName.
func checkName(what, s string) error {
	if len(s) > maxName {
		return fmt.Errorf("%s of %d bytes is too long (at most %d): %w", what, len(s), maxName, ErrLimit)
	}
	return nil
}

// checkGraph enforces the structural bounds on the main graph before it
// is walked: counts, name lengths, and no subgraph or sparse attributes
// (control flow is not a native family and a subgraph is where a hostile
// file nests).
func checkGraph(g *onnxpb.GraphProto) error {
	switch {
	case len(g.GetNode()) > maxNodes:
		return fmt.Errorf("%d nodes (at most %d): %w", len(g.GetNode()), maxNodes, ErrLimit)
	case len(g.GetInitializer()) > maxInits:
		return fmt.Errorf("%d initializers (at most %d): %w", len(g.GetInitializer()), maxInits, ErrLimit)
	case len(g.GetInput()) > maxGraphIO || len(g.GetOutput()) > maxGraphIO:
		return fmt.Errorf("%d graph inputs and %d outputs (at most %d each): %w", len(g.GetInput()), len(g.GetOutput()), maxGraphIO, ErrLimit)
	case len(g.GetSparseInitializer()) > 0:
		return fmt.Errorf("sparse initializers are not supported: %w", ErrUnsupported)
	}
	for _, vi := range append(slices.Clip(g.GetInput()), g.GetOutput()...) {
		if err := checkName("graph input/output name", vi.GetName()); err != nil {
			return err
		}
		if d := len(vi.GetType().GetTensorType().GetShape().GetDim()); d > maxRank {
			return fmt.Errorf("graph input/output %q: rank %d (at most %d): %w", vi.GetName(), d, maxRank, ErrLimit)
		}
	}
	total := 0
	for _, ini := range g.GetInitializer() {
		total += len(ini.GetFloatData()) + len(ini.GetInt32Data()) + len(ini.GetDoubleData()) + len(ini.GetInt64Data()) + len(ini.GetRawData())/4
	}
	if total > maxTotalValues {
		return fmt.Errorf("initializers hold %d values (at most %d): %w", total, maxTotalValues, ErrLimit)
	}
	for i, n := range g.GetNode() {
		for _, c := range []struct {
			what string
			s    string
		}{{"node name", n.GetName()}, {"op type", n.GetOpType()}, {"domain", n.GetDomain()}} {
			if err := checkName(fmt.Sprintf("node %d: %s", i, c.what), c.s); err != nil {
				return err
			}
		}
		if len(n.GetInput()) > maxNodeIO || len(n.GetOutput()) > maxNodeIO {
			return fmt.Errorf("node %d %q: %d inputs and %d outputs (at most %d each): %w", i, n.GetName(), len(n.GetInput()), len(n.GetOutput()), maxNodeIO, ErrLimit)
		}
		for _, s := range append(slices.Clip(n.GetInput()), n.GetOutput()...) {
			if err := checkName(fmt.Sprintf("node %d %q: value name", i, n.GetName()), s); err != nil {
				return err
			}
		}
		if len(n.GetAttribute()) > maxAttrs {
			return fmt.Errorf("node %d %q: %d attributes (at most %d): %w", i, n.GetName(), len(n.GetAttribute()), maxAttrs, ErrLimit)
		}
		for _, at := range n.GetAttribute() {
			where := fmt.Sprintf("node %d %q: attribute %q", i, n.GetName(), at.GetName())
			if err := checkName(where+": name", at.GetName()); err != nil {
				return err
			}
			if at.GetG() != nil || len(at.GetGraphs()) > 0 || at.GetSparseTensor() != nil || len(at.GetSparseTensors()) > 0 || len(at.GetTensors()) > 0 {
				return nodeErr(n, ErrUnsupported, "attribute %q holds a subgraph, sparse tensor or tensor list", at.GetName())
			}
			if len(at.GetInts()) > maxAttrInts || len(at.GetFloats()) > maxAttrInts || len(at.GetStrings()) > maxAttrInts {
				return fmt.Errorf("%s: more than %d values: %w", where, maxAttrInts, ErrLimit)
			}
			if err := checkName(where+": string", string(at.GetS())); err != nil {
				return err
			}
			for _, s := range at.GetStrings() {
				if err := checkName(where+": string", string(s)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// axis kinds of a dynamic tensor.
const (
	axUnresolved = iota // an axis of a rank-3 graph input not yet given a meaning
	axBatch
	axTime
	axFeat
	axUnit // size 1, a layout artefact (ONNX RNN num_directions, Unsqueeze)
)

// axis is one dimension of a dynamic tensor; size 0 is unknown (dynamic).
type axis struct {
	kind int
	size int
	orig int // index in the graph input, for axUnresolved
}

// flow is a dynamic tensor: a value computed from the graph input.
type flow struct {
	axes []axis
	used bool
}

// value kinds
const (
	vConst = iota // a constant tensor
	vFlow         // computed from the graph input
	vShape        // computed from the input's shape only (Shape, Gather, ...)
	vZeros        // a tensor of zeros of a dynamic shape (ConstantOfShape 0)
	vDead         // an output that must not be used (LSTM Y_c)
)

type value struct {
	kind int
	t    *tensor
	f    *flow
	why  string // vDead: what using it would mean
}

// affine is one step of a standardisation before the first layer:
// z = x·a + b per feature, recorded with the layout at that point so that
// its constant can be read per feature once the feature axis is known.
type affine struct {
	node   string
	op     string
	c      *tensor
	axes   []axis
	cFirst bool // c op x (Sub, Div with the constant first)
}

// builder accumulates the native model while the graph is walked.
type builder struct {
	n        int // model inputs
	cfg      *config
	pend     []affine
	origKind [3]int // meaning of each graph input axis once resolved
	inDims   []int  // graph input sizes (0 = dynamic)

	conv     *models.Conv
	convAct  bool
	pooled   bool
	convTime int // output positions of the conv/pool so far
	flat     bool
	rec      *models.Recurrent
	layers   []models.Layer
	actSet   bool     // the last layer's activation was given
	biasOpen bool     // the last layer is a MatMul whose Add may follow
	softmax  bool     // a 2-class softmax head was folded: nothing may follow
	width    int      // features of the current dense stage (last axis)
	recOuts  [2]*flow // Y and Y_h of the recurrent layer
}

func (b *builder) started() bool { return b.conv != nil || b.rec != nil || len(b.layers) > 0 }

// Import converts a serialized ONNX model (ModelProto) into a native model
// file named name whose inputs are, in the order of the graph input's
// feature axis, the feature names inputs. It returns the File unencoded;
// call [models.File.Encode] for the bytes. See the package doc for the
// operators understood and the family inference.
func Import(onnxModel []byte, name string, inputs []string, opts ...Option) (*models.File, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("import onnx: %w", err)
		}
	}
	if len(onnxModel) > MaxFileSize {
		return nil, fmt.Errorf("import onnx: %d bytes (at most %d): %w", len(onnxModel), MaxFileSize, ErrLimit)
	}
	var mp onnxpb.ModelProto
	// The recursion limit bounds the nesting of messages (graphs in
	// attributes, functions); the default (10,000) would let a small file
	// nest deeply.
	if err := (proto.UnmarshalOptions{RecursionLimit: maxDepth}).Unmarshal(onnxModel, &mp); err != nil {
		return nil, fmt.Errorf("import onnx: %w: %w", ErrDecode, err)
	}
	g := mp.GetGraph()
	if g == nil || len(g.GetNode()) == 0 {
		return nil, fmt.Errorf("import onnx: no graph or an empty graph: %w", ErrDecode)
	}
	if err := checkGraph(g); err != nil {
		return nil, fmt.Errorf("import onnx: %w", err)
	}
	if len(inputs) == 0 {
		return nil, fmt.Errorf("import onnx: no input names given: %w", ErrShape)
	}
	b := &builder{n: len(inputs), cfg: &cfg}
	f, err := b.walk(g)
	if err != nil {
		return nil, fmt.Errorf("import onnx: %w", err)
	}
	f.Name = name
	f.Version = cfg.Version
	for i, in := range inputs {
		f.Inputs[i].Name = in
	}
	f.Thresholds = cfg.Thresholds(f.Output)
	sum := sha256.Sum256(onnxModel)
	f.Training = map[string]any{
		"source":        "onnx",
		"onnx_producer": (mp.GetProducerName() + " " + mp.GetProducerVersion()),
		"onnx_sha256":   hex.EncodeToString(sum[:]),
	}
	for _, op := range mp.GetOpsetImport() {
		if op.GetDomain() == "" || op.GetDomain() == "ai.onnx" {
			f.Training["onnx_opset"] = op.GetVersion()
		}
	}
	for k, v := range cfg.Training {
		f.Training[k] = v
	}
	return f, nil
}

// nodeErr formats an error naming the node and its operator.
func nodeErr(n *onnxpb.NodeProto, sentinel error, format string, args ...any) error {
	return fmt.Errorf("node %q (%s): %s: %w", n.GetName(), n.GetOpType(), fmt.Sprintf(format, args...), sentinel)
}

// walk interprets the graph's nodes in order (ONNX graphs are
// topologically sorted) and returns the native file without name,
// version, input names, thresholds or metadata.
func (b *builder) walk(g *onnxpb.GraphProto) (*models.File, error) {
	vals := map[string]*value{}
	for _, ini := range g.GetInitializer() {
		t, err := decodeTensor(ini)
		if err != nil {
			return nil, fmt.Errorf("initializer: %w: %w", ErrDecode, err)
		}
		vals[ini.GetName()] = &value{kind: vConst, t: t}
	}
	var in *onnxpb.ValueInfoProto
	for _, gi := range g.GetInput() {
		if _, ok := vals[gi.GetName()]; ok {
			continue // an initializer listed as an input (IR < 4)
		}
		if in != nil {
			return nil, fmt.Errorf("graph inputs %q and %q: one input tensor (rows of features) is supported: %w", in.GetName(), gi.GetName(), ErrUnsupported)
		}
		in = gi
	}
	if in == nil {
		return nil, fmt.Errorf("graph has no input: %w", ErrUnsupported)
	}
	tt := in.GetType().GetTensorType()
	if tt == nil || (tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) && tt.GetElemType() != 0) {
		return nil, fmt.Errorf("graph input %q: want a float32 tensor: %w", in.GetName(), ErrUnsupported)
	}
	dims := tt.GetShape().GetDim()
	for _, d := range dims {
		b.inDims = append(b.inDims, int(d.GetDimValue()))
	}
	fl := &flow{}
	switch len(dims) {
	case 2:
		if s := b.inDims[1]; s != 0 && s != b.n {
			return nil, fmt.Errorf("graph input %q has %d features, %d input names given: %w", in.GetName(), s, b.n, ErrShape)
		}
		fl.axes = []axis{{kind: axBatch, size: b.inDims[0]}, {kind: axFeat, size: b.n}}
		b.width = b.n
	case 3:
		for i, s := range b.inDims {
			fl.axes = append(fl.axes, axis{kind: axUnresolved, size: s, orig: i})
		}
	default:
		return nil, fmt.Errorf("graph input %q has rank %d: want 2 (batch, features) or 3 (a sequence): %w", in.GetName(), len(dims), ErrUnsupported)
	}
	vals[in.GetName()] = &value{kind: vFlow, f: fl}

	for _, n := range g.GetNode() {
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			return nil, nodeErr(n, ErrUnsupported, "operator %s of domain %q is not supported", n.GetOpType(), d)
		}
		args := make([]*value, len(n.GetInput()))
		for i, name := range n.GetInput() {
			if name == "" {
				continue // an omitted optional input
			}
			v, ok := vals[name]
			if !ok {
				return nil, nodeErr(n, ErrDecode, "input %q is not produced by any earlier node", name)
			}
			args[i] = v
		}
		outs, err := b.node(n, args)
		if err != nil {
			return nil, err
		}
		for i, name := range n.GetOutput() {
			if name != "" && i < len(outs) && outs[i] != nil {
				vals[name] = outs[i]
			}
		}
	}

	if len(g.GetOutput()) == 0 {
		return nil, fmt.Errorf("graph has no output: %w", ErrUnsupported)
	}
	outName := g.GetOutput()[0].GetName()
	ov, ok := vals[outName]
	if !ok || ov.kind != vFlow {
		return nil, fmt.Errorf("graph output %q is not computed from the input: %w", outName, ErrUnsupported)
	}
	return b.finish(outName)
}

// flowArg returns the only dynamic argument of a node and the constant
// arguments; it refuses shapes computed at run time and fan-out.
func (b *builder) flowArg(n *onnxpb.NodeProto, args []*value) (*flow, int, error) {
	idx := -1
	for i, a := range args {
		if a == nil {
			continue
		}
		switch a.kind {
		case vFlow:
			if idx >= 0 {
				return nil, 0, nodeErr(n, ErrUnsupported, "two inputs computed from the graph input (branches and residual connections are not supported)")
			}
			idx = i
		case vShape, vZeros:
			return nil, 0, nodeErr(n, ErrUnsupported, "input %q is computed from a run-time shape; only constants are supported here", n.GetInput()[i])
		case vDead:
			return nil, 0, nodeErr(n, ErrUnsupported, "input %q: %s", n.GetInput()[i], a.why)
		}
	}
	if idx < 0 {
		return nil, 0, nodeErr(n, ErrUnsupported, "constant computation is not supported (export with constant folding on)")
	}
	f := args[idx].f
	if f.used {
		return nil, 0, nodeErr(n, ErrUnsupported, "input %q is used by more than one node (branches are not supported)", n.GetInput()[idx])
	}
	f.used = true
	return f, idx, nil
}

// constArg returns argument i as a constant, or an error naming it.
func constArg(n *onnxpb.NodeProto, args []*value, i int) (*tensor, error) {
	if i >= len(args) || args[i] == nil {
		return nil, nodeErr(n, ErrUnsupported, "input %d is missing", i)
	}
	if args[i].kind != vConst {
		return nil, nodeErr(n, ErrUnsupported, "input %q must be a constant (an initializer)", n.GetInput()[i])
	}
	return args[i].t, nil
}

func out(axes []axis) []*value {
	return []*value{{kind: vFlow, f: &flow{axes: axes}}}
}

// node interprets one node.
func (b *builder) node(n *onnxpb.NodeProto, args []*value) ([]*value, error) {
	a := nodeAttrs(n)
	op := n.GetOpType()

	// Constants and run-time shape computations (PyTorch builds the zero
	// initial state of an RNN from the input's shape).
	switch op {
	case "Constant":
		at, ok := a["value"]
		if !ok || at.GetT() == nil {
			return nil, nodeErr(n, ErrUnsupported, "only a tensor 'value' attribute is supported")
		}
		t, err := decodeTensor(at.GetT())
		if err != nil {
			return nil, nodeErr(n, ErrDecode, "%v", err)
		}
		return []*value{{kind: vConst, t: t}}, nil
	case "Shape":
		if len(args) == 0 || args[0] == nil || args[0].kind != vFlow {
			return nil, nodeErr(n, ErrUnsupported, "shape of a constant is not supported")
		}
		return []*value{{kind: vShape}}, nil
	case "ConstantOfShape":
		if len(args) == 0 || args[0] == nil || (args[0].kind != vShape && args[0].kind != vConst) {
			return nil, nodeErr(n, ErrUnsupported, "shape argument must be a constant or a run-time shape")
		}
		if at, ok := a["value"]; ok && at.GetT() != nil {
			t, err := decodeTensor(at.GetT())
			if err != nil {
				return nil, nodeErr(n, ErrDecode, "%v", err)
			}
			for _, v := range t.v {
				if v != 0 {
					return nil, nodeErr(n, ErrUnsupported, "fill value %v: only zeros (an initial state of zero) are supported", v)
				}
			}
		}
		return []*value{{kind: vZeros}}, nil
	}
	shapeIn, flowIn := false, false
	for _, v := range args {
		if v != nil && v.kind == vShape {
			shapeIn = true
		}
		if v != nil && v.kind == vFlow {
			flowIn = true
		}
	}
	if shapeIn && !flowIn {
		switch op {
		case "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity":
			return []*value{{kind: vShape}}, nil
		}
	}
	if !flowIn {
		if op == "Identity" && len(args) == 1 && args[0] != nil {
			return []*value{args[0]}, nil
		}
		for _, v := range args {
			if v != nil && v.kind == vDead {
				return nil, nodeErr(n, ErrUnsupported, "%s", v.why)
			}
		}
		return nil, nodeErr(n, ErrUnsupported, "operator %s on constants is not supported (export with constant folding on)", op)
	}

	switch op {
	case "Identity":
		f, _, err := b.flowArg(n, args)
		if err != nil {
			return nil, err
		}
		return out(f.axes), nil
	case "Dropout":
		f, _, err := b.flowArg(n, args)
		if err != nil {
			return nil, err
		}
		if len(args) > 2 && args[2] != nil {
			t, err := constArg(n, args, 2)
			if err != nil {
				return nil, err
			}
			if len(t.v) > 0 && t.v[0] != 0 {
				return nil, nodeErr(n, ErrUnsupported, "training_mode is true")
			}
		}
		return out(f.axes), nil
	case "Pad":
		f, _, err := b.flowArg(n, args)
		if err != nil {
			return nil, err
		}
		pads, ok := a.ints("pads")
		if len(args) > 1 && args[1] != nil {
			t, err := constArg(n, args, 1)
			if err != nil {
				return nil, err
			}
			pads, ok = t.ints(), true
		}
		if ok {
			for _, p := range pads {
				if p != 0 {
					return nil, nodeErr(n, ErrUnsupported, "pads %v: only zero padding (a no-op) is supported", pads)
				}
			}
		}
		return out(f.axes), nil
	case "Transpose":
		return b.transpose(n, a, args)
	case "Squeeze", "Unsqueeze":
		return b.squeeze(n, a, args)
	case "Flatten", "Reshape":
		return b.flatten(n, a, args)
	case "Sub", "Div", "Mul", "Add":
		return b.arith(n, args)
	case "Gemm", "MatMul":
		return b.dense(n, a, args)
	case "Relu", "Sigmoid", "Tanh":
		return b.activation(n, args)
	case "Softmax":
		return b.softmaxHead(n, a, args)
	case "Conv":
		return b.convolution(n, a, args)
	case "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool":
		return b.pool(n, a, args)
	case "GRU", "LSTM":
		return b.recurrent(n, a, args)
	}
	return nil, nodeErr(n, ErrUnsupported, "operator %s is not supported", op)
}

func (b *builder) transpose(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	perm, ok := a.ints("perm")
	if !ok {
		for i := len(f.axes) - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	if len(perm) != len(f.axes) {
		return nil, nodeErr(n, ErrShape, "perm %v for a rank-%d tensor", perm, len(f.axes))
	}
	axes := make([]axis, len(perm))
	seen := map[int64]bool{}
	for i, p := range perm {
		if p < 0 || int(p) >= len(f.axes) || seen[p] {
			return nil, nodeErr(n, ErrShape, "perm %v is not a permutation", perm)
		}
		seen[p] = true
		axes[i] = f.axes[p]
	}
	return out(axes), nil
}

// axesArg reads the axes of Squeeze/Unsqueeze: attribute (opset < 13) or
// second input.
func axesArg(n *onnxpb.NodeProto, a attrs, args []*value) ([]int64, bool, error) {
	if len(args) > 1 && args[1] != nil {
		t, err := constArg(n, args, 1)
		if err != nil {
			return nil, false, err
		}
		return t.ints(), true, nil
	}
	ax, ok := a.ints("axes")
	return ax, ok, nil
}

func (b *builder) squeeze(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	ax, given, err := axesArg(n, a, args)
	if err != nil {
		return nil, err
	}
	if n.GetOpType() == "Unsqueeze" {
		rank := len(f.axes) + len(ax)
		if rank > maxRank {
			return nil, nodeErr(n, ErrLimit, "rank %d after unsqueezing (at most %d)", rank, maxRank)
		}
		ins := map[int]bool{}
		for _, x := range ax {
			if x < 0 {
				x += int64(rank)
			}
			if x < 0 || int(x) >= rank {
				return nil, nodeErr(n, ErrShape, "axes %v out of range for rank %d", ax, rank)
			}
			ins[int(x)] = true
		}
		var axes []axis
		j := 0
		for i := 0; i < rank; i++ {
			if ins[i] {
				axes = append(axes, axis{kind: axUnit, size: 1})
				continue
			}
			axes = append(axes, f.axes[j])
			j++
		}
		return out(axes), nil
	}
	drop := map[int]bool{}
	if !given {
		for i, x := range f.axes {
			if x.kind == axUnit || x.size == 1 && x.kind != axFeat {
				drop[i] = true
			}
		}
	}
	for _, x := range ax {
		if x < 0 {
			x += int64(len(f.axes))
		}
		if x < 0 || int(x) >= len(f.axes) {
			return nil, nodeErr(n, ErrShape, "axes %v out of range for rank %d", ax, len(f.axes))
		}
		if k := f.axes[x]; k.kind != axUnit && k.size != 1 {
			return nil, nodeErr(n, ErrUnsupported, "axis %d is not of size 1 (squeezing data axes is not a layout change)", x)
		}
		drop[int(x)] = true
	}
	var axes []axis
	for i, x := range f.axes {
		if !drop[i] {
			axes = append(axes, x)
		}
	}
	if len(axes) == 0 {
		return nil, nodeErr(n, ErrUnsupported, "squeezing every axis (a scalar) is not a layout of rows")
	}
	return out(axes), nil
}

// flatten handles Flatten(axis=1) and Reshape to (batch, -1): the (channel,
// position) output of a convolution becomes the channel-major vector the
// dense head reads, or a (batch, features) tensor stays as it is.
func (b *builder) flatten(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	want := int64(-1) // Reshape's second dimension
	if n.GetOpType() == "Flatten" {
		ax := a.int("axis", 1)
		if ax < 0 {
			ax += int64(len(f.axes))
		}
		if ax != 1 {
			return nil, nodeErr(n, ErrUnsupported, "axis %d: only axis 1 (keep the batch axis) is supported", a.int("axis", 1))
		}
	} else {
		t, err := constArg(n, args, 1)
		if err != nil {
			return nil, err
		}
		shape := t.ints()
		if len(shape) != 2 || (shape[0] != 0 && shape[0] != -1 && (f.axes[0].size == 0 || int(shape[0]) != f.axes[0].size)) {
			return nil, nodeErr(n, ErrUnsupported, "reshape to %v: only (batch, -1) flattening is supported", shape)
		}
		want = shape[1]
	}
	if f.axes[0].kind != axBatch {
		return nil, nodeErr(n, ErrUnsupported, "the first axis is not the batch axis")
	}
	var rest []axis
	for _, x := range f.axes[1:] {
		if x.kind != axUnit {
			rest = append(rest, x)
		}
	}
	var width int
	switch {
	case len(rest) == 1 && rest[0].kind == axFeat:
		width = rest[0].size
	case b.conv != nil && !b.flat && len(rest) == 2 && rest[0].kind == axFeat && rest[1].kind == axTime:
		width = b.conv.Channels * b.convTime
	case b.conv != nil && !b.flat && len(rest) == 2 && rest[0].kind == axTime:
		return nil, nodeErr(n, ErrUnsupported, "flattening (position, channel) is not supported: flatten the convolution's (channel, position) output, as PyTorch's Conv1d gives it")
	default:
		return nil, nodeErr(n, ErrUnsupported, "flattening this tensor is not a layout change streamscore understands")
	}
	if want != -1 && int(want) != width {
		return nil, nodeErr(n, ErrShape, "reshape to (batch, %d): the tensor has %d values per row", want, width)
	}
	if len(rest) == 2 {
		if !b.pooled {
			b.conv.Pool, b.conv.PoolSize, b.conv.PoolStride = models.PoolMax, 1, 1
			b.pooled = true
		}
		b.flat = true
		b.width = width
	}
	return out([]axis{f.axes[0], {kind: axFeat, size: width}}), nil
}

// arith handles Sub, Div, Mul and Add: a standardisation of the input
// before the first layer, or the bias Add after a MatMul.
func (b *builder) arith(n *onnxpb.NodeProto, args []*value) ([]*value, error) {
	f, idx, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	if len(args) != 2 {
		return nil, nodeErr(n, ErrUnsupported, "%d inputs", len(args))
	}
	c, err := constArg(n, args, 1-idx)
	if err != nil {
		return nil, err
	}
	op := n.GetOpType()
	if !b.started() {
		if op == "Div" && idx == 1 {
			return nil, nodeErr(n, ErrUnsupported, "a constant divided by the input is not a standardisation")
		}
		b.pend = append(b.pend, affine{node: n.GetName(), op: op, c: c, axes: slices.Clone(f.axes), cFirst: idx == 1})
		return out(f.axes), nil
	}
	if op == "Add" && b.biasOpen && !b.actSet {
		l := &b.layers[len(b.layers)-1]
		bias, err := vectorOn(c, f.axes, len(f.axes)-1, l.Out)
		if err != nil {
			return nil, nodeErr(n, ErrShape, "bias: %v", err)
		}
		for j := range l.Bias {
			l.Bias[j] = float32(float64(l.Bias[j]) + bias[j])
		}
		return out(f.axes), nil
	}
	return nil, nodeErr(n, ErrUnsupported, "%s after the first layer: only a standardisation before it, or a bias added to a MatMul, can be expressed", op)
}

// vectorOn reads a constant broadcast against a tensor with the given axes
// as a vector along axis at (of size n); it must be constant along every
// other axis.
func vectorOn(c *tensor, axes []axis, at, n int) ([]float64, error) {
	if len(c.dims) > len(axes) {
		return nil, fmt.Errorf("constant of shape %v broadcasts to a higher rank than %d", c.dims, len(axes))
	}
	off := len(axes) - len(c.dims)
	along := 1
	for j, d := range c.dims {
		switch {
		case j+off == at:
			along = int(d)
		case d != 1:
			return nil, fmt.Errorf("constant of shape %v varies along an axis other than the features", c.dims)
		}
	}
	if along != 1 && along != n {
		return nil, fmt.Errorf("constant of shape %v has %d values along the features, want %d", c.dims, along, n)
	}
	if len(c.v) == 0 {
		return nil, fmt.Errorf("constant of shape %v has no values", c.dims)
	}
	out := make([]float64, n)
	for i := range out {
		if along == 1 {
			out[i] = c.v[0]
		} else {
			out[i] = c.v[i]
		}
	}
	return out, nil
}

// resolve gives the rank-3 graph input's axes their meaning, read at the
// first layer from the kinds of the current axes (kinds[i] for axes[i]).
func (b *builder) resolve(n *onnxpb.NodeProto, axes []axis, kinds []int) error {
	if len(axes) != len(kinds) {
		return nodeErr(n, ErrShape, "input of rank %d, want %d", len(axes), len(kinds))
	}
	for i, x := range axes {
		if x.kind == axUnresolved {
			b.origKind[x.orig] = kinds[i]
			continue
		}
		if x.kind != kinds[i] {
			return nodeErr(n, ErrShape, "input axes do not match the layout the operator reads")
		}
	}
	for i, x := range axes {
		if kinds[i] == axFeat && x.size != 0 && x.size != b.n {
			return nodeErr(n, ErrShape, "the input has %d features, %d input names given", x.size, b.n)
		}
	}
	return nil
}

// standardisation folds the pending affine steps into (mean, std) per
// input and a sign per input that the first layer's rows absorb.
func (b *builder) standardisation() (mean, std, sign []float64, err error) {
	sc := make([]float64, b.n)
	sh := make([]float64, b.n)
	for i := range sc {
		sc[i] = 1
	}
	for _, p := range b.pend {
		at := -1
		for j, x := range p.axes {
			k := x.kind
			if k == axUnresolved {
				k = b.origKind[x.orig]
			}
			if k == axFeat {
				at = j
			}
		}
		if at < 0 {
			return nil, nil, nil, fmt.Errorf("node %q (%s): no feature axis: %w", p.node, p.op, ErrShape)
		}
		c, err := vectorOn(p.c, p.axes, at, b.n)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("node %q (%s): %v: %w", p.node, p.op, err, ErrShape)
		}
		for i := range sc {
			switch {
			case p.op == "Add":
				sh[i] += c[i]
			case p.op == "Sub" && p.cFirst:
				sc[i], sh[i] = -sc[i], c[i]-sh[i]
			case p.op == "Sub":
				sh[i] -= c[i]
			case p.op == "Mul":
				sc[i], sh[i] = sc[i]*c[i], sh[i]*c[i]
			case p.op == "Div":
				if c[i] == 0 {
					return nil, nil, nil, fmt.Errorf("node %q (Div): division by zero for input %d: %w", p.node, i, ErrUnsupported)
				}
				sc[i], sh[i] = sc[i]/c[i], sh[i]/c[i]
			}
		}
	}
	mean, std, sign = make([]float64, b.n), make([]float64, b.n), make([]float64, b.n)
	for i := range sc {
		if sc[i] == 0 || math.IsNaN(sc[i]) || math.IsInf(sc[i], 0) {
			return nil, nil, nil, fmt.Errorf("input %d is scaled by %v before the first layer: %w", i, sc[i], ErrUnsupported)
		}
		// z = x·a + b = sign·(x − mean)/std with std = 1/|a|, mean = −b/a.
		std[i] = 1 / math.Abs(sc[i])
		mean[i] = -sh[i] / sc[i]
		sign[i] = math.Copysign(1, sc[i])
	}
	return mean, std, sign, nil
}

func (b *builder) dense(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, idx, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	if idx != 0 {
		return nil, nodeErr(n, ErrUnsupported, "the weights must be the second operand")
	}
	if b.softmax {
		return nil, nodeErr(n, ErrUnsupported, "a layer after the softmax head")
	}
	if b.conv != nil && !b.flat {
		return nil, nodeErr(n, ErrUnsupported, "a dense layer on the convolution's output before Flatten")
	}
	if !b.started() {
		if len(f.axes) != 2 {
			return nil, nodeErr(n, ErrUnsupported, "a dense layer on a rank-%d input: sequences need Conv, GRU or LSTM first", len(f.axes))
		}
	}
	last := len(f.axes) - 1
	if f.axes[last].kind != axFeat {
		return nil, nodeErr(n, ErrUnsupported, "the features are not the last axis")
	}
	in := b.width
	if !b.started() && in != b.n {
		return nil, nodeErr(n, ErrUnsupported, "the first dense layer does not read the graph input's %d features", b.n)
	}
	w, err := constArg(n, args, 1)
	if err != nil {
		return nil, err
	}
	if len(w.dims) != 2 {
		return nil, nodeErr(n, ErrShape, "weights of shape %v, want a matrix", w.dims)
	}
	var k, m int
	trans := false
	if n.GetOpType() == "Gemm" {
		if len(f.axes) != 2 {
			return nil, nodeErr(n, ErrUnsupported, "Gemm on a rank-%d tensor", len(f.axes))
		}
		if a.int("transA", 0) != 0 {
			return nil, nodeErr(n, ErrUnsupported, "transA=1")
		}
		trans = a.int("transB", 0) != 0
	}
	k, m = int(w.dims[0]), int(w.dims[1])
	if trans {
		k, m = m, k
	}
	if k != in {
		return nil, nodeErr(n, ErrShape, "weights of shape %v read %d values, the tensor has %d", w.dims, k, in)
	}
	alpha := float64(a.float("alpha", 1))
	l := models.Layer{In: k, Out: m, Activation: "identity", Weights: make([]float32, k*m), Bias: make([]float32, m)}
	for i := 0; i < k; i++ {
		for j := 0; j < m; j++ {
			v := w.v[i*m+j]
			if trans {
				v = w.v[j*k+i]
			}
			l.Weights[i*m+j] = float32(alpha * v)
		}
	}
	b.biasOpen = true // a bias Add may follow (MatMul) or add to Gemm's
	if n.GetOpType() == "Gemm" && len(args) > 2 && args[2] != nil {
		c, err := constArg(n, args, 2)
		if err != nil {
			return nil, err
		}
		bias, err := vectorOn(c, []axis{{kind: axBatch}, {kind: axFeat}}, 1, m)
		if err != nil {
			return nil, nodeErr(n, ErrShape, "bias: %v", err)
		}
		beta := float64(a.float("beta", 1))
		for j := range bias {
			l.Bias[j] = float32(beta * bias[j])
		}
	}
	if !b.started() {
		if err := b.resolve(n, f.axes, []int{axBatch, axFeat}); err != nil {
			return nil, err
		}
	}
	b.layers = append(b.layers, l)
	b.actSet = false
	b.width = m
	axes := slices.Clone(f.axes)
	axes[last] = axis{kind: axFeat, size: m}
	return out(axes), nil
}

func actName(op string) string {
	switch op {
	case "Relu":
		return "relu"
	case "Sigmoid":
		return "sigmoid"
	}
	return "tanh"
}

func (b *builder) activation(n *onnxpb.NodeProto, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	act := actName(n.GetOpType())
	switch {
	case b.softmax:
		return nil, nodeErr(n, ErrUnsupported, "an activation after the softmax head")
	case len(b.layers) > 0:
		if b.actSet {
			return nil, nodeErr(n, ErrUnsupported, "two activations in a row")
		}
		b.layers[len(b.layers)-1].Activation = act
		b.actSet, b.biasOpen = true, false
	case b.conv != nil && !b.convAct && !b.pooled:
		b.conv.Activation = act
		b.convAct = true
	case b.conv != nil:
		return nil, nodeErr(n, ErrUnsupported, "an activation after pooling or a second one after the convolution: put it between Conv and the pooling")
	default:
		return nil, nodeErr(n, ErrUnsupported, "an activation before the first layer or on a recurrent output")
	}
	return out(f.axes), nil
}

// softmaxHead folds a 2-class softmax over the last layer's logits into a
// sigmoid of their difference: softmax(z)[1] = σ(z1 − z0).
func (b *builder) softmaxHead(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	ax := a.int("axis", -1)
	if ax < 0 {
		ax += int64(len(f.axes))
	}
	if len(b.layers) == 0 || b.actSet || b.softmax || int(ax) != len(f.axes)-1 {
		return nil, nodeErr(n, ErrUnsupported, "only a softmax over the features of the last dense layer's logits is supported")
	}
	l := &b.layers[len(b.layers)-1]
	if l.Out != 2 {
		return nil, nodeErr(n, ErrUnsupported, "softmax over %d classes: only 2 classes (converted to σ(z1 − z0)) are supported", l.Out)
	}
	w := make([]float32, l.In)
	for i := range w {
		w[i] = float32(float64(l.Weights[i*2+1]) - float64(l.Weights[i*2]))
	}
	l.Weights, l.Out, l.Activation = w, 1, "sigmoid"
	l.Bias = []float32{float32(float64(l.Bias[1]) - float64(l.Bias[0]))}
	b.actSet, b.biasOpen, b.softmax = true, false, true
	b.width = 1
	axes := slices.Clone(f.axes)
	axes[len(axes)-1] = axis{kind: axFeat, size: 1}
	return out(axes), nil
}

// checkOnes refuses an ints attribute holding anything but want (the
// default: no padding, stride 1, dilation 1).
func checkOnes(n *onnxpb.NodeProto, a attrs, name string, want int64) error {
	if v, ok := a.ints(name); ok {
		for _, x := range v {
			if x != want {
				return nodeErr(n, ErrUnsupported, "%s %v: only %d is supported", name, v, want)
			}
		}
	}
	return nil
}

func checkAutoPad(n *onnxpb.NodeProto, a attrs) error {
	if p := a.str("auto_pad", "NOTSET"); p != "NOTSET" && p != "VALID" && p != "" {
		return nodeErr(n, ErrUnsupported, "auto_pad %s: only no padding is supported", p)
	}
	return nil
}

func (b *builder) convolution(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, idx, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	if idx != 0 || b.started() {
		return nil, nodeErr(n, ErrUnsupported, "only one convolution, as the first layer, is supported")
	}
	for _, c := range []struct {
		name string
		want int64
	}{{"pads", 0}, {"strides", 1}, {"dilations", 1}} {
		if err := checkOnes(n, a, c.name, c.want); err != nil {
			return nil, err
		}
	}
	if g := a.int("group", 1); g != 1 {
		return nil, nodeErr(n, ErrUnsupported, "group %d: only 1 is supported", g)
	}
	if err := checkAutoPad(n, a); err != nil {
		return nil, err
	}
	if err := b.resolve(n, f.axes, []int{axBatch, axFeat, axTime}); err != nil {
		return nil, err
	}
	w, err := constArg(n, args, 1)
	if err != nil {
		return nil, err
	}
	if len(w.dims) != 3 {
		return nil, nodeErr(n, ErrUnsupported, "weights of shape %v: only 1-D convolution (channels, inputs, kernel) is supported", w.dims)
	}
	ch, in, k := int(w.dims[0]), int(w.dims[1]), int(w.dims[2])
	if in != b.n {
		return nil, nodeErr(n, ErrShape, "weights of shape %v read %d inputs, %d input names given", w.dims, in, b.n)
	}
	window := f.axes[2].size
	switch {
	case window == 0 && b.cfg.window == 0:
		return nil, nodeErr(n, ErrShape, "the input's sequence length is dynamic: give the window")
	case window == 0:
		window = b.cfg.window
	case b.cfg.window != 0 && b.cfg.window != window:
		return nil, nodeErr(n, ErrShape, "the graph's input has a window of %d, %d was given", window, b.cfg.window)
	}
	if k > window || window > models.MaxWindow {
		return nil, nodeErr(n, ErrShape, "kernel %d and window %d: want kernel <= window <= %d", k, window, models.MaxWindow)
	}
	c := &models.Conv{Window: window, Kernel: k, Channels: ch, Activation: "identity",
		Weights: make([]float32, k*in*ch), Bias: make([]float32, ch)}
	for cc := 0; cc < ch; cc++ {
		for i := 0; i < in; i++ {
			for kk := 0; kk < k; kk++ {
				c.Weights[(kk*in+i)*ch+cc] = float32(w.v[(cc*in+i)*k+kk])
			}
		}
	}
	if len(args) > 2 && args[2] != nil {
		bt, err := constArg(n, args, 2)
		if err != nil {
			return nil, err
		}
		if len(bt.v) != ch {
			return nil, nodeErr(n, ErrShape, "%d biases for %d channels", len(bt.v), ch)
		}
		for j, v := range bt.v {
			c.Bias[j] = float32(v)
		}
	}
	b.conv = c
	b.convTime = window - k + 1
	return out([]axis{{kind: axBatch, size: f.axes[0].size}, {kind: axFeat, size: ch}, {kind: axTime, size: b.convTime}}), nil
}

func (b *builder) pool(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	f, _, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	if b.conv == nil || b.pooled || b.flat {
		return nil, nodeErr(n, ErrUnsupported, "pooling is supported once, right after the convolution (and its activation)")
	}
	if len(f.axes) != 3 || f.axes[1].kind != axFeat || f.axes[2].kind != axTime {
		return nil, nodeErr(n, ErrUnsupported, "pooling a tensor that is not the convolution's (batch, channel, position) output")
	}
	op := n.GetOpType()
	size, stride := b.convTime, 1
	if op == "MaxPool" || op == "AveragePool" {
		ks, _ := a.ints("kernel_shape")
		if len(ks) != 1 {
			return nil, nodeErr(n, ErrUnsupported, "kernel_shape %v: only 1-D pooling is supported", ks)
		}
		size = int(ks[0])
		if st, ok := a.ints("strides"); ok {
			if len(st) != 1 {
				return nil, nodeErr(n, ErrUnsupported, "strides %v", st)
			}
			stride = int(st[0])
		}
		if err := checkOnes(n, a, "pads", 0); err != nil {
			return nil, err
		}
		if err := checkOnes(n, a, "dilations", 1); err != nil {
			return nil, err
		}
		if err := checkAutoPad(n, a); err != nil {
			return nil, err
		}
		if a.int("ceil_mode", 0) != 0 {
			return nil, nodeErr(n, ErrUnsupported, "ceil_mode 1: only floor (0) is supported")
		}
		if a.int("storage_order", 0) != 0 {
			return nil, nodeErr(n, ErrUnsupported, "storage_order 1")
		}
		if len(n.GetOutput()) > 1 && n.GetOutput()[1] != "" {
			return nil, nodeErr(n, ErrUnsupported, "the Indices output")
		}
	}
	if size < 1 || size > b.convTime || stride < 1 {
		return nil, nodeErr(n, ErrShape, "pool size %d / stride %d over %d positions", size, stride, b.convTime)
	}
	b.conv.Pool = models.PoolMax
	if op == "AveragePool" || op == "GlobalAveragePool" {
		b.conv.Pool = models.PoolAvg
	}
	b.conv.PoolSize, b.conv.PoolStride = size, stride
	b.pooled = true
	b.convTime = (b.convTime-size)/stride + 1
	return out([]axis{f.axes[0], f.axes[1], {kind: axTime, size: b.convTime}}), nil
}

// Gate orders: native block g comes from ONNX block order[g].
var (
	gruOrder  = []int{1, 0, 2}    // native r, z, n ← ONNX z, r, h
	lstmOrder = []int{0, 2, 3, 1} // native i, f, g, o ← ONNX i, o, f, c
)

// reorderGates converts ONNX RNN parameters (W: G·H × in, R: G·H × H, B:
// 2·G·H, gate blocks in ONNX order) into the native Recurrent layout
// (column blocks in native order, Wx in × G·H, Wh H × G·H).
func reorderGates(cell string, h, in int, w, r, bias []float64) *models.Recurrent {
	order := gruOrder
	if cell == models.FamilyLSTM {
		order = lstmOrder
	}
	g := len(order)
	gh := g * h
	rc := &models.Recurrent{Cell: cell, Hidden: h,
		Wx: make([]float32, in*gh), Wh: make([]float32, h*gh),
		Bx: make([]float32, gh), Bh: make([]float32, gh)}
	for ng, og := range order {
		for j := 0; j < h; j++ {
			src, dst := og*h+j, ng*h+j
			for i := 0; i < in; i++ {
				rc.Wx[i*gh+dst] = float32(w[src*in+i])
			}
			for k := 0; k < h; k++ {
				rc.Wh[k*gh+dst] = float32(r[src*h+k])
			}
			if bias != nil {
				rc.Bx[dst] = float32(bias[src])
				rc.Bh[dst] = float32(bias[gh+src])
			}
		}
	}
	return rc
}

func (b *builder) recurrent(n *onnxpb.NodeProto, a attrs, args []*value) ([]*value, error) {
	op := n.GetOpType()
	cell := models.FamilyGRU
	if op == "LSTM" {
		cell = models.FamilyLSTM
	}
	// Optional inputs: sequence_lens (4), initial_h (5), initial_c (6), P (7).
	for i := 4; i < len(args); i++ {
		v := args[i]
		if v == nil {
			continue
		}
		name := n.GetInput()[i]
		switch {
		case i == 4:
			return nil, nodeErr(n, ErrUnsupported, "sequence_lens %q: variable-length batches are not supported", name)
		case i == 7:
			return nil, nodeErr(n, ErrUnsupported, "peephole weights %q are not supported", name)
		case v.kind == vZeros:
		case v.kind == vConst && !slices.ContainsFunc(v.t.v, func(x float64) bool { return x != 0 }):
		default:
			return nil, nodeErr(n, ErrUnsupported, "initial state %q: only a zero initial state (a new card) is supported", name)
		}
		args[i] = nil
	}
	f, idx, err := b.flowArg(n, args)
	if err != nil {
		return nil, err
	}
	if idx != 0 || b.started() {
		return nil, nodeErr(n, ErrUnsupported, "only one recurrent layer, as the first layer, is supported")
	}
	if d := a.str("direction", "forward"); d != "forward" {
		return nil, nodeErr(n, ErrUnsupported, "direction %s: only forward (single direction) is supported", d)
	}
	if _, ok := a["clip"]; ok {
		return nil, nodeErr(n, ErrUnsupported, "clip is not supported")
	}
	if acts := a.strs("activations"); acts != nil {
		want := []string{"Sigmoid", "Tanh"}
		if cell == models.FamilyLSTM {
			want = []string{"Sigmoid", "Tanh", "Tanh"}
		}
		if !slices.Equal(acts, want) {
			return nil, nodeErr(n, ErrUnsupported, "activations %v: only the defaults %v are supported", acts, want)
		}
	}
	if cell == models.FamilyGRU && a.int("linear_before_reset", 0) != 1 {
		return nil, nodeErr(n, ErrUnsupported, "linear_before_reset 0: the native GRU is PyTorch's (linear_before_reset=1)")
	}
	if cell == models.FamilyLSTM && a.int("input_forget", 0) != 0 {
		return nil, nodeErr(n, ErrUnsupported, "input_forget 1 is not supported")
	}
	layout := a.int("layout", 0)
	kinds := []int{axTime, axBatch, axFeat}
	if layout == 1 {
		kinds = []int{axBatch, axTime, axFeat}
	} else if layout != 0 {
		return nil, nodeErr(n, ErrUnsupported, "layout %d", layout)
	}
	if err := b.resolve(n, f.axes, kinds); err != nil {
		return nil, err
	}
	w, err := constArg(n, args, 1)
	if err != nil {
		return nil, err
	}
	r, err := constArg(n, args, 2)
	if err != nil {
		return nil, err
	}
	g := 3
	if cell == models.FamilyLSTM {
		g = 4
	}
	h64 := a.int("hidden_size", 0)
	if len(r.dims) == 3 && h64 == 0 {
		h64 = r.dims[2]
	}
	h := int(min(max(h64, -1), maxHidden+1)) // out of range either way, without wrapping
	if h < 1 || h > maxHidden {
		return nil, nodeErr(n, ErrShape, "hidden_size %d: want 1..%d", h, maxHidden)
	}
	if !slices.Equal(w.dims, []int64{1, int64(g * h), int64(b.n)}) {
		return nil, nodeErr(n, ErrShape, "W of shape %v, want [1 %d %d] (%d gates × hidden %d, %d inputs)", w.dims, g*h, b.n, g, h, b.n)
	}
	if !slices.Equal(r.dims, []int64{1, int64(g * h), int64(h)}) {
		return nil, nodeErr(n, ErrShape, "R of shape %v, want [1 %d %d]", r.dims, g*h, h)
	}
	var bias []float64
	if len(args) > 3 && args[3] != nil {
		bt, err := constArg(n, args, 3)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(bt.dims, []int64{1, int64(2 * g * h)}) {
			return nil, nodeErr(n, ErrShape, "B of shape %v, want [1 %d]", bt.dims, 2*g*h)
		}
		bias = bt.v
	}
	b.rec = reorderGates(cell, h, b.n, w.v, r.v, bias)
	b.width = h
	feat := axis{kind: axFeat, size: h}
	unit := axis{kind: axUnit, size: 1}
	var time, batch axis
	if layout == 0 {
		time, batch = f.axes[0], f.axes[1]
	} else {
		batch, time = f.axes[0], f.axes[1]
	}
	time.kind, batch.kind = axTime, axBatch
	y := []axis{time, unit, batch, feat}
	yh := []axis{unit, batch, feat}
	if layout == 1 {
		y = []axis{batch, time, unit, feat}
		yh = []axis{batch, unit, feat}
	}
	// Y (every step's h) and Y_h (the last step's h) give the same
	// per-event model: the head on h_t at each step. Using both is a
	// branch, refused in finish.
	outs := []*value{{kind: vFlow, f: &flow{axes: y}}, {kind: vFlow, f: &flow{axes: yh}},
		{kind: vDead, why: "the LSTM cell state output Y_c is not supported"}}
	b.recOuts = [2]*flow{outs[0].f, outs[1].f}
	return outs, nil
}

// finish checks the final layer and infers the family.
func (b *builder) finish(outName string) (*models.File, error) {
	if y := b.recOuts; y[0] != nil && y[0].used && y[1].used {
		return nil, fmt.Errorf("both Y and Y_h of the recurrent layer are used (branches are not supported): %w", ErrUnsupported)
	}
	if len(b.layers) == 0 {
		return nil, fmt.Errorf("graph output %q: no dense layer (a model ends with a Gemm or MatMul head): %w", outName, ErrUnsupported)
	}
	last := &b.layers[len(b.layers)-1]
	if last.Out != 1 {
		return nil, fmt.Errorf("graph output %q has %d values per row, want 1 (or a 2-class softmax): %w", outName, last.Out, ErrShape)
	}
	f := &models.File{Conv: b.conv, Recurrent: b.rec, Layers: b.layers}
	switch last.Activation {
	case "sigmoid":
		f.Output = models.OutputProbability
	case "identity":
		f.Output = models.OutputValue
	default:
		return nil, fmt.Errorf("graph output %q: output activation %s: want sigmoid (a probability) or none (a value): %w", outName, last.Activation, ErrUnsupported)
	}
	switch {
	case b.conv != nil:
		f.Family = models.FamilyCNN
	case b.rec != nil:
		f.Family = b.rec.Cell
	case len(b.layers) == 1 && f.Output == models.OutputProbability:
		f.Family = models.FamilyLogistic
	case len(b.layers) == 1:
		f.Family = models.FamilyLinear
	case f.Output == models.OutputProbability:
		f.Family = models.FamilyMLP
	default:
		return nil, fmt.Errorf("graph output %q: %d dense layers with an identity output: the native value family (linear) has one layer: %w", outName, len(b.layers), ErrUnsupported)
	}
	mean, std, sign, err := b.standardisation()
	if err != nil {
		return nil, err
	}
	f.Inputs = make([]models.Input, b.n)
	for i := range f.Inputs {
		f.Inputs[i] = models.Input{Mean: mean[i], Std: std[i]}
		if sign[i] > 0 {
			continue
		}
		switch {
		case b.conv != nil:
			c := b.conv
			for k := 0; k < c.Kernel; k++ {
				for cc := 0; cc < c.Channels; cc++ {
					c.Weights[(k*b.n+i)*c.Channels+cc] *= -1
				}
			}
		case b.rec != nil:
			gh := len(b.rec.Bx)
			for j := 0; j < gh; j++ {
				b.rec.Wx[i*gh+j] *= -1
			}
		default:
			l := &b.layers[0]
			for j := 0; j < l.Out; j++ {
				l.Weights[i*l.Out+j] *= -1
			}
		}
	}
	return f, nil
}
