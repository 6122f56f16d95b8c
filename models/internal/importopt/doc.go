// Package importopt holds what the model importers (models/gbdt,
// models/onnx) share of their options: the model version, the decision
// thresholds and the training metadata, with one validation and one rule
// for the default thresholds. Each importer keeps its own exported With*
// options (documented where users read them) over a Config.
//
// # Concepts
//
// A Config starts as Default (version 1, no thresholds, no metadata); the
// setters validate and return an error for a value out of range, which the
// importer's Import returns wrapped. Thresholds gives the cut-offs of the
// imported file: those set, or 0.5 and 0.9 for a probability output, or
// the largest float32 for a value output (an imported value has no natural
// scale, so the model never reviews or alerts until real cut-offs are
// given).
//
// # Concurrency
//
// A Config is a plain value, owned by one Import call.
//
// # Metrics
//
// None.
package importopt
