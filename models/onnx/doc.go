// Package onnx converts ONNX graphs, as exported by PyTorch's
// torch.onnx.export (and graphs of the same shape from other exporters),
// into streamscore native model files ([models.File]). It reads the ONNX
// protobuf with code generated from the ONNX project's onnx.proto
// (internal/onnxpb) and runs nothing but the conversion: the result is
// scored by the models package like any other model file.
//
// # Concepts
//
// [Import] walks the graph's nodes in order, following the one tensor
// computed from the graph input (rows of features, rank 2, or sequences,
// rank 3) and folding each node into the native layers:
//
//   - Sub, Div, Mul, Add by constants before the first layer: a
//     standardisation, folded into each input's mean and std
//     (z = (x − mean)/std; a negative scale flips the sign of the first
//     layer's row for that input).
//   - Gemm (alpha, beta, transB), MatMul then Add of a bias: a dense layer.
//   - Relu, Sigmoid, Tanh: the activation of the layer (or convolution)
//     just before.
//   - Softmax over 2 classes after the last layer: converted to the
//     sigmoid of the logit difference, p1 = softmax(z)[1] = σ(z1 − z0);
//     the model outputs the class-1 probability.
//   - Conv (1-D; no padding, stride 1, dilation 1, group 1), then
//     MaxPool/AveragePool (1-D, no padding, floor) or GlobalMaxPool/
//     GlobalAveragePool, then Flatten or Reshape(batch, −1): the cnn
//     family's Conv. The window is the input's sequence length in the
//     graph (PyTorch's Conv1d input is (batch, features, window)) or
//     [WithWindow] when the graph leaves it dynamic.
//   - GRU, LSTM (one layer, forward only, default activations, no clip, no
//     peepholes, zero or no initial state, layout 0 or 1): the gru/lstm
//     family's Recurrent. Gate blocks are reordered from ONNX's (GRU z, r,
//     h; LSTM i, o, f, c) to the native PyTorch order (GRU r, z, n; LSTM i,
//     f, g, o). A GRU must have linear_before_reset=1 (PyTorch's GRU);
//     0 is refused. The head is applied to every step's hidden output Y
//     (or to Y_h: the same per-event model), one step per event.
//   - Transpose, Squeeze, Unsqueeze, Identity, Dropout (inference), zero
//     Pad, and PyTorch's Shape → Gather → Concat → ConstantOfShape(0)
//     chain that builds a zero initial state: pure layout, tracked and
//     dropped.
//
// Everything else — another operator, an operator of another domain
// (ai.onnx.ml), a non-default attribute (conv padding, dilation, groups,
// a bidirectional RNN, ceil_mode), branches (a value used twice, residual
// additions), a non-zero initial state — is refused with an error naming
// the node and wrapping [ErrUnsupported]. Shapes that disagree (weights vs
// the tensor they read, the input names vs the graph's feature count, an
// output of more than one value) wrap [ErrShape]. The first graph output
// is the score.
//
// Family inference: a Conv makes a cnn, a GRU/LSTM a gru/lstm (output a
// probability if the last activation is a sigmoid, a value if none);
// otherwise one dense layer with a sigmoid is logistic, one without an
// activation is linear, and several ending in a sigmoid are an mlp.
//
// Parity: testdata holds small PyTorch models of every family exported
// with torch.onnx.export (opset 13), with the script that made them
// (make_fixtures.py) and PyTorch's own outputs; the tests import them and
// check the native runtime reproduces those outputs within 1e-5.
//
// # Untrusted files
//
// An ONNX file may come from anywhere (a vendor, a data-science laptop), so
// Import treats it as hostile: every bad file is an error naming the
// problem, never a panic, and a refusal costs about the file's size in
// memory, not what its headers claim. Before the graph is walked:
// at most [MaxFileSize] bytes; protobuf nesting at most 32 deep (the
// decoder's default, 10,000, lets a small file nest graphs in attributes);
// at most 4,096 nodes, 4,096 initializers, 4,096 graph inputs and outputs,
// 16 inputs or outputs per node, 64 attributes per node and 64 values per
// list attribute; names and string attributes at most 4,096 bytes; no
// subgraph, sparse-tensor or tensor-list attribute (control flow is not a
// native family); at most 2^26 initializer values in all. Each tensor: rank
// at most 8, each dimension in [0, 2^24], the element count computed
// without overflow and at most 2^24, and exactly that many values present
// in the file (raw or typed) before anything is allocated. Computed values
// keep rank at most 8 and a recurrent hidden size at most 4,096. A bound
// that is exceeded wraps [ErrLimit]. FuzzImport (seeded with testdata and
// a 37-byte file whose dimensions overflow int64) runs in CI.
//
// # Concurrency
//
// Import is a pure function of its arguments and safe for concurrent use.
//
// # Metrics
//
// None.
package onnx

// README section (for the repository README's "Models" part):
//
// ### Importing ONNX models
//
// `streamscore models import --onnx model.onnx --inputs f1,f2,... --name fraud
// --out fraud.json [--version N] [--window W] [--review X --alert Y]` converts
// a graph exported by PyTorch (`torch.onnx.export`) into a native model file:
// logistic, linear and mlp models from Gemm/MatMul layers, cnn from a 1-D
// Conv1d → pooling → Flatten → dense head over (batch, features, window), gru
// and lstm from a single-layer forward nn.GRU/nn.LSTM whose head reads every
// step's output. A leading `(x - mean) / std` becomes the file's input
// statistics, and a 2-class softmax head becomes σ(z1 − z0), the class-1
// probability. `--inputs` names the graph's feature axis in order, as
// the stream's feature names. Anything the native families cannot express
// is refused with an error naming the node; the result is verified (`models
// inspect`) and scores what PyTorch scores within 1e-5 (see
// models/onnx/testdata).
