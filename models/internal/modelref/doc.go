// Package modelref is the float64 reference of a model file's scoring math,
// for tests only: the runtime (package models), the trainer (models/train)
// and the ONNX importer (models/onnx) check their results against it. It is
// written from the doc comments of models.File, Layer, Conv and Recurrent
// (models/file.go), shares no code with the runtime, and computes with plain
// loops in float64 from the file's float32 weights. Only _test.go files may
// import it; nothing in the binary does.
//
// # Concepts
//
// [New] reads a model file through its JSON encoding (package models cannot
// be imported here, since its own tests use this package). It refuses
// fields it does not know, so a new field of the format, which may change
// the math, fails the tests until the reference implements it.
//
// A [Model] scores one standardised row z of an entity (a card) at a time:
// [Model.Step] takes the entity's state and returns the output, the logit
// (the pre-activation of the last layer) and the entity's next state. The
// state has the runtime's layout ([Model.StateLen] values, zero for a new
// entity): the CNN's previous Window−1 rows (oldest first, zero rows before
// the entity's first), the GRU's h, the LSTM's h then c. Dense families
// have no state. [Model.Standardize] gives z with the runtime's float32
// arithmetic, [Model.StandardizeExact] in float64.
//
// # Concurrency
//
// A Model is read-only after New and safe for concurrent use. Step does not
// modify its arguments.
//
// # Metrics
//
// None.
package modelref
