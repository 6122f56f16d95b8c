package models

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// FormatName is the value of the "format" field of every native model file.
const FormatName = "streamscore-model"

// FormatVersion is the newest model file format version this package reads
// and the one [File.Encode] writes.
const FormatVersion = 1

// Model families.
const (
	FamilyLogistic = "logistic" // one sigmoid layer; output "probability"
	FamilyMLP      = "mlp"      // hidden layers, sigmoid output; output "probability"
	FamilyLinear   = "linear"   // one identity layer; output "value"
)

// Outputs.
const (
	OutputProbability = "probability" // in [0, 1], logit = pre-activation of the last layer
	OutputValue       = "value"       // unbounded, e.g. an expected loss in currency units
)

// Errors returned (wrapped) by [Parse], [Load], [File.Encode] and
// [Model.Bind]; branch on them with errors.Is.
var (
	ErrFormat       = errors.New("models: unsupported model format")
	ErrDigest       = errors.New("models: digest mismatch")
	ErrInvalidModel = errors.New("models: invalid model")
	ErrMissingInput = errors.New("models: missing input feature")
)

// File is the serializable form of a model: the JSON document stored in a
// model file. Build one (as the train package does), call [File.Encode] to
// get the bytes with the digest filled in, and [Parse] them to get a
// [Model].
//
// The digest is "sha256:<hex>" of the canonical encoding of the file: the
// compact encoding/json encoding of File, with Digest set to "", after one
// decode/encode round trip (so float formatting and the key order of the
// free Training map are canonical). Whitespace and indentation of the stored
// file do not matter; any change of a value does.
type File struct {
	Format        string         `json:"format"`         // always FormatName
	FormatVersion int            `json:"format_version"` // 1
	Name          string         `json:"name"`           // key in score records, e.g. "fraud"
	Family        string         `json:"family"`         // FamilyLogistic, FamilyMLP or FamilyLinear
	Version       int            `json:"version"`        // >= 1
	Output        string         `json:"output"`         // OutputProbability or OutputValue
	Inputs        []Input        `json:"inputs"`         // standardisation, in the order of layer 0's rows
	Layers        []Layer        `json:"layers"`         // applied in order
	Thresholds    Thresholds     `json:"thresholds"`     // decision cut-offs on the output
	Training      map[string]any `json:"training,omitempty"`
	Digest        string         `json:"digest"` // "sha256:<64 hex>"
}

// Input is one model input: a feature name and its standardisation,
// z = (x - Mean) / Std.
type Input struct {
	Name string  `json:"name"`
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"` // > 0
}

// Layer is a dense layer y = act(x·W + b) with W stored row-major In×Out.
type Layer struct {
	In         int       `json:"in"`
	Out        int       `json:"out"`
	Activation string    `json:"activation"` // "identity", "relu", "sigmoid", "tanh"
	Weights    []float32 `json:"weights"`    // len In*Out, row-major (row = input)
	Bias       []float32 `json:"bias"`       // len Out
}

// Thresholds are the decision cut-offs on the model output:
// output >= Alert is an alert, output >= Review a review, else allow.
type Thresholds struct {
	Review float64 `json:"review"`
	Alert  float64 `json:"alert"`
}

// Encode fills an empty Format and FormatVersion with the current ones,
// validates f (the checks of [Parse]), sets f.Digest and returns the
// indented JSON of the file, ending with a newline. The result parses with
// [Parse]. Encoding the same File twice gives the same bytes.
func (f *File) Encode() ([]byte, error) {
	if f.Format == "" {
		f.Format = FormatName
	}
	if f.FormatVersion == 0 {
		f.FormatVersion = FormatVersion
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("encode model %q: %w", f.Name, err)
	}
	f.Digest = ""
	raw, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode model %q: %w", f.Name, err)
	}
	var canon File
	if err := decodeStrict(raw, &canon); err != nil {
		return nil, fmt.Errorf("encode model %q: %w", f.Name, err)
	}
	d, err := canon.digest()
	if err != nil {
		return nil, fmt.Errorf("encode model %q: %w", f.Name, err)
	}
	f.Digest = d
	canon.Digest = d
	out, err := json.MarshalIndent(&canon, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode model %q: %w", f.Name, err)
	}
	return append(out, '\n'), nil
}

// digest returns "sha256:<hex>" of the canonical encoding of f (with the
// digest field empty). f must come from a decode so that the Training map
// holds only JSON values.
func (f *File) digest() (string, error) {
	c := *f
	c.Digest = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode canonical form: %w", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// decodeStrict decodes exactly one JSON object into f, refusing unknown
// fields and trailing data.
func decodeStrict(b []byte, f *File) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		return fmt.Errorf("decode json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode json: trailing data after the model object")
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// invalid wraps ErrInvalidModel with a message naming the field.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidModel)
}

// validate checks everything but the digest.
func (f *File) validate() error {
	if f.Format != FormatName {
		return fmt.Errorf("format %q, want %q: %w", f.Format, FormatName, ErrFormat)
	}
	if f.FormatVersion != FormatVersion {
		return fmt.Errorf("format_version %d, this build reads %d: %w", f.FormatVersion, FormatVersion, ErrFormat)
	}
	if f.Name == "" || strings.ContainsAny(f.Name, " \t\n\"@") {
		return invalid("name %q: empty or contains space, quote or '@'", f.Name)
	}
	if f.Version < 1 {
		return invalid("version %d: must be >= 1", f.Version)
	}
	var wantOut, lastAct string
	switch f.Family {
	case FamilyLogistic, FamilyMLP:
		wantOut, lastAct = OutputProbability, "sigmoid"
	case FamilyLinear:
		wantOut, lastAct = OutputValue, "identity"
	default:
		return invalid("family %q: unknown (want logistic, mlp or linear)", f.Family)
	}
	if f.Output != wantOut {
		return invalid("output %q: family %s has output %q", f.Output, f.Family, wantOut)
	}
	if len(f.Inputs) == 0 {
		return invalid("inputs: empty")
	}
	seen := make(map[string]bool, len(f.Inputs))
	for i, in := range f.Inputs {
		switch {
		case in.Name == "":
			return invalid("inputs[%d]: empty name", i)
		case seen[in.Name]:
			return invalid("inputs[%d] %q: duplicate name", i, in.Name)
		case !finite(in.Mean):
			return invalid("inputs[%d] %q: mean %v is not finite", i, in.Name, in.Mean)
		case !finite(in.Std) || in.Std <= 0:
			return invalid("inputs[%d] %q: std %v must be finite and > 0", i, in.Name, in.Std)
		case !finite(float64(float32(in.Mean))) || !finite(float64(float32(in.Std))) || float32(in.Std) == 0:
			return invalid("inputs[%d] %q: mean/std out of float32 range", i, in.Name)
		}
		seen[in.Name] = true
	}
	if len(f.Layers) == 0 {
		return invalid("layers: empty")
	}
	if (f.Family == FamilyLogistic || f.Family == FamilyLinear) && len(f.Layers) != 1 {
		return invalid("layers: family %s has exactly 1 layer, got %d", f.Family, len(f.Layers))
	}
	for i, l := range f.Layers {
		wantIn := len(f.Inputs)
		from := fmt.Sprintf("%d inputs", wantIn)
		if i > 0 {
			wantIn = f.Layers[i-1].Out
			from = fmt.Sprintf("layer %d out", i-1)
		}
		if l.In != wantIn {
			return invalid("layer %d: in %d does not match %s (%d)", i, l.In, from, wantIn)
		}
		if l.Out < 1 {
			return invalid("layer %d: out %d must be >= 1", i, l.Out)
		}
		if l.In > 1<<20 || l.Out > 1<<20 {
			return invalid("layer %d: %d×%d is too large", i, l.In, l.Out)
		}
		if _, ok := parseActivation(l.Activation); !ok {
			return invalid("layer %d: activation %q: unknown (want identity, relu, sigmoid or tanh)", i, l.Activation)
		}
		if len(l.Weights) != l.In*l.Out {
			return invalid("layer %d: %d weights, want in×out = %d×%d = %d", i, len(l.Weights), l.In, l.Out, l.In*l.Out)
		}
		if len(l.Bias) != l.Out {
			return invalid("layer %d: %d biases, want out = %d", i, len(l.Bias), l.Out)
		}
		for j, w := range l.Weights {
			if !finite(float64(w)) {
				return invalid("layer %d: weights[%d] = %v is not finite", i, j, w)
			}
		}
		for j, b := range l.Bias {
			if !finite(float64(b)) {
				return invalid("layer %d: bias[%d] = %v is not finite", i, j, b)
			}
		}
	}
	last := f.Layers[len(f.Layers)-1]
	if last.Out != 1 {
		return invalid("layer %d: the output layer has out %d, want 1", len(f.Layers)-1, last.Out)
	}
	if last.Activation != lastAct {
		return invalid("layer %d: output activation %q, family %s wants %q", len(f.Layers)-1, last.Activation, f.Family, lastAct)
	}
	t := f.Thresholds
	if !finite(t.Review) || !finite(t.Alert) {
		return invalid("thresholds: review %v / alert %v must be finite", t.Review, t.Alert)
	}
	if t.Review > t.Alert {
		return invalid("thresholds: review %v > alert %v", t.Review, t.Alert)
	}
	if f.Output == OutputProbability && (t.Review < 0 || t.Alert > 1) {
		return invalid("thresholds: review %v / alert %v outside [0, 1] for a probability", t.Review, t.Alert)
	}
	return nil
}
