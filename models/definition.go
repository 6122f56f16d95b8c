package models

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of [Model.CheckFeatures]; branch on them with errors.Is.
var (
	// ErrFeatureMismatch: a feature the model reads is defined otherwise
	// by the pipeline than when the model was trained.
	ErrFeatureMismatch = errors.New("models: feature definition mismatch")
	// ErrUnpinned: the model file records no feature definitions (written
	// before they existed, or imported without a spec), so nothing says
	// which features it was trained on.
	ErrUnpinned = errors.New("models: model records no feature definitions")
)

// FeatureDef is the definition of one feature as a model file records it
// and a pipeline computes it (the features package's Definition, which this
// package does not import): its name, its canonical definition's hash
// ("sha256:<64 hex>") and the same in words.
type FeatureDef struct {
	Name string
	Text string
	Hash string
}

// validateDefinitions checks the inputs' definition fields: all inputs or
// none have a hash, hashes are "sha256:<64 hex>", a Definition only beside
// a hash.
func (f *File) validateDefinitions() error {
	pinned := 0
	for i, in := range f.Inputs {
		switch {
		case in.DefinitionHash == "" && in.Definition != "":
			return invalid("inputs[%d] %q: definition without definition_hash", i, in.Name)
		case in.DefinitionHash == "":
			continue
		case !validHash(in.DefinitionHash):
			return invalid("inputs[%d] %q: definition_hash %q: want sha256:<64 lower-case hex>", i, in.Name, in.DefinitionHash)
		}
		pinned++
	}
	if pinned != 0 && pinned != len(f.Inputs) {
		return invalid("inputs: %d of %d have a definition_hash: all or none", pinned, len(f.Inputs))
	}
	return nil
}

func validHash(h string) bool {
	hex, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// PinFeatures records in f the definition of every input, taken from defs
// (the features the model was trained on, e.g. from
// features.Spec.Definitions), replacing any recorded before. An input not in
// defs, or a def without a valid hash, is an error naming it; defs may hold
// more features than f reads. Call it before [File.Encode].
func (f *File) PinFeatures(defs []FeatureDef) error {
	by := make(map[string]FeatureDef, len(defs))
	for _, d := range defs {
		by[d.Name] = d
	}
	for i := range f.Inputs {
		in := &f.Inputs[i]
		d, ok := by[in.Name]
		switch {
		case !ok:
			return fmt.Errorf("pin features of model %q: input %q is not among the %d defined features: %w", f.Name, in.Name, len(defs), ErrInvalidModel)
		case !validHash(d.Hash):
			return fmt.Errorf("pin features of model %q: input %q: hash %q: want sha256:<64 hex>: %w", f.Name, in.Name, d.Hash, ErrInvalidModel)
		}
		in.DefinitionHash, in.Definition = d.Hash, d.Text
	}
	return nil
}

// Pinned reports whether the model file records the definition of its
// inputs.
func (m *Model) Pinned() bool { return len(m.defs) > 0 && m.defs[0].Hash != "" }

// Definitions returns the recorded definition of every input, in input
// order (Hash and Text empty when the file records none). The slice is a
// copy.
func (m *Model) Definitions() []FeatureDef { return append([]FeatureDef(nil), m.defs...) }

// CheckFeatures compares the definition the model recorded for each of its
// inputs with defs, the definitions of the features the caller computes
// (a pipeline's). It returns nil when every input is defined by defs as
// the model recorded; an error wrapping [ErrFeatureMismatch] naming every
// differing feature, with both definitions in words ("card_amount_sum_1h:
// model trained on sum of amount per card_id over 1h, pipeline computes sum
// of amount per card_id over 1d"); or, when the file records no
// definitions, an error wrapping [ErrUnpinned] (the caller decides whether
// to accept such a model). An input missing from defs is left to
// [Model.Bind], which names it.
func (m *Model) CheckFeatures(defs []FeatureDef) error {
	if !m.Pinned() {
		return fmt.Errorf("model %s: %w: it was written before models recorded them, or imported without a feature spec; retrain it, or re-import it with --features",
			m.ident, ErrUnpinned)
	}
	by := make(map[string]FeatureDef, len(defs))
	for _, d := range defs {
		by[d.Name] = d
	}
	var diffs []string
	for _, want := range m.defs {
		got, ok := by[want.Name]
		if !ok || got.Hash == want.Hash {
			continue
		}
		diffs = append(diffs, fmt.Sprintf("%s: model trained on %s, pipeline computes %s",
			want.Name, describeDef(want), describeDef(got)))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("model %s: %w: %d of its %d inputs are defined otherwise than when it was trained: %s",
			m.ident, ErrFeatureMismatch, len(diffs), len(m.defs), strings.Join(diffs, "; "))
	}
	return nil
}

// describeDef returns d in words, with its short hash, or its hash alone.
func describeDef(d FeatureDef) string {
	short := d.Hash
	if len(short) > len("sha256:")+12 {
		short = short[:len("sha256:")+12]
	}
	switch {
	case d.Hash == "":
		return "an undefined feature"
	case d.Text == "":
		return "definition " + short
	default:
		return d.Text + " (" + short + ")"
	}
}

// ValidationAlertRate returns the share of validation rows at or above the
// alert threshold that the training recorded (training.validation.alert_rate,
// written by streamscore train), and whether the file has one (> 0).
func (m *Model) ValidationAlertRate() (float64, bool) {
	v, ok := m.training["validation"].(map[string]any)
	if !ok {
		return 0, false
	}
	r, ok := v["alert_rate"].(float64)
	if !ok || !(r > 0 && r <= 1) {
		return 0, false
	}
	return r, true
}
