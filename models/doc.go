// Package models loads, verifies and runs the scoring models of streamscore:
// the native model file format, the model families (logistic, mlp, linear,
// the sequence families cnn, gru, lstm, and gradient-boosted trees gbdt),
// batch scoring on the GEMM
// kernel, decisions and reason codes. ONNX graphs come in through the onnx
// sub-package; training is in train.
//
// # Concepts
//
// A model file is JSON, versioned and self-verifying:
//
//	{"format":"streamscore-model","format_version":1,"name":"fraud","family":"mlp","version":3,
//	 "output":"probability",
//	 "inputs":[{"name":"card_amount_sum_1h","mean":120.5,"std":88.1,
//	            "definition_hash":"sha256:520b…","definition":"sum of amount per card_id over 1h"}, ...],
//	 "layers":[{"in":30,"out":32,"activation":"relu","weights":[...row-major in×out...],"bias":[...]}, ...],
//	 "thresholds":{"review":0.12,"alert":0.55},
//	 "training":{...free metadata: data range, rows, metrics, seed, command...},
//	 "digest":"sha256:<64 hex>"}
//
// [File] is that document as a Go value; [File.Encode] validates it and fills
// the digest (sha256 of the canonical encoding with an empty digest field, see
// File). [Parse] refuses unknown formats or versions ([ErrFormat]), digest
// mismatches ([ErrDigest]) and malformed content ([ErrInvalidModel]: shape
// mismatches between inputs and layers, non-finite weights or means, std <= 0,
// review > alert, unknown family or activation), with an error naming the
// field or layer.
//
// Feature definitions: each input may record the definition of the feature
// it was trained on ("definition_hash", the sha256 of the features
// package's canonical definition, and "definition", the same in words;
// all inputs or none). [File.PinFeatures] records them (streamscore train
// always does; models import with --features). [Model.CheckFeatures]
// compares them with the definitions a pipeline computes and refuses a
// model whose inputs are defined otherwise ([ErrFeatureMismatch], naming
// each feature and both definitions) or that records none ([ErrUnpinned]:
// the caller decides; the stream refuses unless told otherwise). Files
// without the fields parse as before, with the same digest.
//
// Families: "logistic" (one sigmoid layer) and "mlp" (hidden layers and a
// sigmoid output) output a fraud probability; "linear" (one layer) outputs a
// value: with an "identity" activation x·W + b, with "exp" (a log link,
// [ActivationExp]) exp(x·W + b), which cannot go negative, e.g. the "risk"
// model's expected loss in currency units. The reasons of a log-link model
// are in log units: they sum to log(value) − b.
// Every input is standardised, z = (x − mean)/std, with the statistics stored
// in the file.
//
// Family "gbdt" is an ensemble of gradient-boosted regression trees
// ([Trees], XGBoost's model: a split sends x < threshold left and a
// missing (NaN) value its default way; the leaves' sum plus a base score
// is the margin, mapped by the objective: sigmoid for "binary:logistic",
// identity for "reg:squarederror"). Trees read the inputs as they are (the
// stored mean and std are recorded, not applied). Parse bounds the trees
// (MaxTrees, MaxTreeNodes, MaxTreeDepth) and refuses cycles, shared or
// unreachable nodes and out-of-range features. Scoring steps blocks of 8
// rows through each tree together (or, for the rows left over and at batch
// 1, 8 trees through one row) in a breadth-first layout without
// data-dependent branches; reasons are exact TreeSHAP values
// ([Scorer.Reasons]). models/gbdt imports XGBoost's JSON models; train
// trains them.
//
// Sequence families keep state per entity (card): "cnn" convolves the card's
// last Conv.Window standardised input rows ([Conv]); "gru" and "lstm" advance
// a recurrent cell one step per event from the card's hidden state
// ([Recurrent]); a dense head (Layers) reads the result. [Model.Sequential],
// [Model.StateSize] and [Model.StateShape] describe the state, which the
// caller owns (the stream keeps it beside the card's windows);
// [Scorer.ScoreSeq] scores a batch against the rows' states and advances
// them.
//
// A [Model] is immutable; its weights are packed once at load into the column
// panels the kernel reads. [Model.Bind] maps the model's inputs onto a
// stream's feature layout and returns a [Scorer], which gathers and
// standardises the needed columns of a batch into one contiguous matrix and
// runs each layer as one GEMM with bias and activation fused. [Scorer.Decide]
// turns a score into allow/review/alert; [Scorer.Reasons] explains a row (see
// its doc for the attribution units). [Shipped] returns the models built into
// the binary (models/shipped, re-created as described in its README.md).
//
// Signatures: a model file's digest proves only that the file is whole,
// not who wrote it (anyone can recompute it). A release key signs it:
// ed25519 over "streamscore-model-v1\n" + name + "\n" + version + "\n" +
// digest + "\n", stored in a detached file beside the model (fraud.json →
// fraud.json.sig, one line per signing key) so the model format and its
// digest stay as they are and a rotation can sign with two keys.
// [PrivateKey.Sign] signs, [Trust.Verify] and [LoadVerified] check against
// a set of public keys and refuse with [ErrUnsigned], [ErrBadSignature] or
// [ErrUntrustedKey] ([SignatureReason] gives the metric label). Key files
// are one text line (see signature.go); [LoadPrivateKey] refuses a private
// key file that group or others can access. The shipped models are signed
// by the release key whose public half is built in ([ShippedKey]), and
// [Shipped] verifies them. Verification is the caller's decision for files
// from disk: cmd/streamscore verifies every model it scores with
// (--model-trust).
//
// Hot reload: a Model never changes, so a new version of a model file is
// parsed and verified ([Load], [Parse]: format, digest, shapes) beside the one
// serving, checked against the stream's feature definitions
// ([Model.CheckFeatures]) and bound ([Model.Bind]: every input must be a
// stream feature) before anything switches to it. The stream package swaps whole model sets
// between batches (stream.Pipeline.SetModels); cmd/streamscore watches the
// files (--models-dir, SIGHUP, POST /-/reload).
//
// # Concurrency
//
// Model values are safe for concurrent use. A Scorer is not: it owns scratch
// memory, so each worker binds its own. Parse, Load and Shipped may be called
// concurrently.
//
// # Metrics
//
// None; the stream package observes scoring latency and decisions per model.
package models
