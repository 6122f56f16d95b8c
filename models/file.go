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
	"slices"
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
	FamilyLinear   = "linear"   // one identity or exp (log-link) layer; output "value"

	// Sequence families: a per-entity (card) state and a dense head.
	FamilyCNN  = "cnn"  // 1-D convolution over the card's last Conv.Window transactions
	FamilyGRU  = "gru"  // GRU cell, hidden state kept per card, one step per event
	FamilyLSTM = "lstm" // LSTM cell, hidden and cell state kept per card

	// FamilyGBDT is an ensemble of gradient-boosted regression trees
	// ([Trees]); output "probability" (ObjectiveLogistic) or "value"
	// (ObjectiveSquared).
	FamilyGBDT = "gbdt"
)

// Sequence families' constants.
const (
	PoolMax = "max" // Conv.Pool: maximum over each pooling window
	PoolAvg = "avg" // Conv.Pool: mean over each pooling window

	// MaxWindow bounds Conv.Window (the state a CNN keeps per card is
	// (Window-1) standardised input rows).
	MaxWindow = 256
)

// ActivationExp is the output activation of a log-link linear model: the
// value is exp(x·W + b), never negative (the "risk" model's expected loss
// since format 1 files gained it; an "identity" linear model can go
// negative and still loads).
const ActivationExp = "exp"

// ActivationSigmoidAmount is the output activation of a linear model whose
// value is a fraud probability times the transaction's amount:
// sigmoid(x·W + b) × expm1(amount_log1p), an expected loss bounded by
// [0, amount] (WithLink(LinkProbAmount) in models/train). The model must
// have the input AmountInput; the GEMM runs identity and the scorer applies
// the rest with the row's raw amount_log1p.
const ActivationSigmoidAmount = "sigmoid_amount"

// AmountInput is the input ActivationSigmoidAmount reads the amount from
// (log1p of the amount, as the features write it).
const AmountInput = "amount_log1p"

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
	Format        string         `json:"format"`              // always FormatName
	FormatVersion int            `json:"format_version"`      // 1
	Name          string         `json:"name"`                // key in score records, e.g. "fraud"
	Family        string         `json:"family"`              // FamilyLogistic, FamilyMLP, FamilyLinear, FamilyCNN, FamilyGRU, FamilyLSTM or FamilyGBDT
	Version       int            `json:"version"`             // >= 1
	Output        string         `json:"output"`              // OutputProbability or OutputValue
	Inputs        []Input        `json:"inputs"`              // standardisation, in the order of layer 0's rows
	Conv          *Conv          `json:"conv,omitempty"`      // FamilyCNN only: the convolution before Layers
	Recurrent     *Recurrent     `json:"recurrent,omitempty"` // FamilyGRU and FamilyLSTM only: the cell before Layers
	Layers        []Layer        `json:"layers"`              // dense layers applied in order (the head, for sequence families); empty for FamilyGBDT
	Trees         *Trees         `json:"trees,omitempty"`     // FamilyGBDT only: the tree ensemble
	Thresholds    Thresholds     `json:"thresholds"`          // decision cut-offs on the output
	Training      map[string]any `json:"training,omitempty"`
	Digest        string         `json:"digest"` // "sha256:<64 hex>"
}

// Input is one model input: a feature name and its standardisation,
// z = (x - Mean) / Std.
//
// DefinitionHash and Definition record what the feature computed when the
// model was trained (features.Definition: the hash of its canonical
// definition, and the same in words), so that a model is never scored with
// features defined otherwise (see [Model.CheckFeatures]). Both are optional
// so that files written before them still parse (and keep their digest),
// but a file sets a hash on every input or on none, and a Definition only
// beside a hash; see [File.PinFeatures].
type Input struct {
	Name           string  `json:"name"`
	Mean           float64 `json:"mean"`
	Std            float64 `json:"std"`                       // > 0
	DefinitionHash string  `json:"definition_hash,omitempty"` // "sha256:<64 hex>" of the feature's canonical definition
	Definition     string  `json:"definition,omitempty"`      // the same in words, e.g. "sum of amount per card_id over 1h"
}

// Layer is a dense layer y = act(x·W + b) with W stored row-major In×Out.
type Layer struct {
	In         int       `json:"in"`
	Out        int       `json:"out"`
	Activation string    `json:"activation"` // "identity", "relu", "sigmoid", "tanh"; ActivationExp on a linear model's layer
	Weights    []float32 `json:"weights"`    // len In*Out, row-major (row = input)
	Bias       []float32 `json:"bias"`       // len Out
}

// Conv is the 1-D convolution of a FamilyCNN model over the card's last
// Window transactions, oldest first and the current one last, each a row of
// the model's standardised inputs (a card with fewer transactions is padded
// at the front with zero rows, i.e. inputs at their training mean — the
// left zero padding of the training sequences). With In inputs, C = Channels
// and L = Window-Kernel+1 output positions (stride 1, no padding, no
// dilation):
//
//	conv[l][c] = act(Bias[c] + Σ_{k<Kernel} Σ_{i<In} x[l+k][i] · Weights[(k·In+i)·C + c])
//
// then pooling over time with PoolSize and PoolStride gives P =
// (L-PoolSize)/PoolStride+1 positions per channel, flattened channel-major
// (index c·P + p, PyTorch's Flatten of an (C, P) tensor) into the In of
// Layers[0], which must be C·P. PoolSize = L, PoolStride = 1 is global
// pooling.
type Conv struct {
	Window     int       `json:"window"`   // transactions seen, the current one included; Kernel <= Window <= MaxWindow
	Kernel     int       `json:"kernel"`   // taps in time
	Channels   int       `json:"channels"` // output channels C
	Activation string    `json:"activation"`
	Weights    []float32 `json:"weights"` // len Kernel·In·C, row (k·In+i), column c
	Bias       []float32 `json:"bias"`    // len C
	Pool       string    `json:"pool"`    // PoolMax or PoolAvg
	PoolSize   int       `json:"pool_size"`
	PoolStride int       `json:"pool_stride"`
}

// Recurrent is the cell of a FamilyGRU or FamilyLSTM model. It advances one
// step per event of a card, from the card's state (zero for a new card),
// and Layers (the head) read its new hidden state h'. Gates are column
// blocks of H = Hidden in PyTorch's order: GRU r, z, n; LSTM i, f, g, o.
// With a = x·Wx + Bx and b = h·Wh + Bh (G·H columns each):
//
//	GRU:  r = σ(a_r + b_r), z = σ(a_z + b_z), n = tanh(a_n + r ⊙ b_n),
//	      h' = (1−z) ⊙ n + z ⊙ h   (PyTorch; ONNX linear_before_reset=1)
//	LSTM: i = σ(a_i+b_i), f = σ(a_f+b_f), g = tanh(a_g+b_g), o = σ(a_o+b_o),
//	      c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c')
//
// The state per card is h (GRU, H values) or h then c (LSTM, 2H values).
type Recurrent struct {
	Cell   string    `json:"cell"`   // FamilyGRU or FamilyLSTM, as Family
	Hidden int       `json:"hidden"` // H
	Wx     []float32 `json:"wx"`     // In × G·H row-major (G = 3 for GRU, 4 for LSTM)
	Wh     []float32 `json:"wh"`     // H × G·H row-major
	Bx     []float32 `json:"bx"`     // G·H
	Bh     []float32 `json:"bh"`     // G·H
}

// gates returns G for a cell: 3 for GRU, 4 for LSTM.
func gates(cell string) int {
	if cell == FamilyLSTM {
		return 4
	}
	return 3
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

// validateSequence checks Conv and Recurrent against the family and returns
// the width the first dense layer reads and its description.
func (f *File) validateSequence() (int, string, error) {
	in := len(f.Inputs)
	seq := f.Family == FamilyCNN || f.Family == FamilyGRU || f.Family == FamilyLSTM
	if f.Conv != nil && f.Family != FamilyCNN {
		return 0, "", invalid("conv: only family cnn has a convolution, family is %s", f.Family)
	}
	if f.Recurrent != nil && f.Family != FamilyGRU && f.Family != FamilyLSTM {
		return 0, "", invalid("recurrent: only families gru and lstm have a cell, family is %s", f.Family)
	}
	if !seq {
		return in, fmt.Sprintf("%d inputs", in), nil
	}
	if c := f.Conv; f.Family == FamilyCNN {
		if c == nil {
			return 0, "", invalid("conv: missing (family cnn)")
		}
		switch {
		case c.Kernel < 1 || c.Window < c.Kernel || c.Window > MaxWindow:
			return 0, "", invalid("conv: kernel %d and window %d: want 1 <= kernel <= window <= %d", c.Kernel, c.Window, MaxWindow)
		case c.Channels < 1 || c.Channels > 1<<14:
			return 0, "", invalid("conv: channels %d: want 1..%d", c.Channels, 1<<14)
		case c.Pool != PoolMax && c.Pool != PoolAvg:
			return 0, "", invalid("conv: pool %q: want %q or %q", c.Pool, PoolMax, PoolAvg)
		}
		if _, ok := parseActivation(c.Activation); !ok {
			return 0, "", invalid("conv: activation %q: unknown (want identity, relu, sigmoid or tanh)", c.Activation)
		}
		l := c.Window - c.Kernel + 1
		if c.PoolSize < 1 || c.PoolSize > l || c.PoolStride < 1 {
			return 0, "", invalid("conv: pool_size %d / pool_stride %d: want 1 <= pool_size <= %d positions and stride >= 1", c.PoolSize, c.PoolStride, l)
		}
		if err := checkParams("conv: weights", c.Weights, c.Kernel*in*c.Channels, fmt.Sprintf("kernel×inputs×channels = %d×%d×%d", c.Kernel, in, c.Channels)); err != nil {
			return 0, "", err
		}
		if err := checkParams("conv: bias", c.Bias, c.Channels, "channels"); err != nil {
			return 0, "", err
		}
		p := (l-c.PoolSize)/c.PoolStride + 1
		return c.Channels * p, fmt.Sprintf("conv channels×pooled positions (%d×%d)", c.Channels, p), nil
	}
	r := f.Recurrent
	if r == nil {
		return 0, "", invalid("recurrent: missing (family %s)", f.Family)
	}
	if r.Cell != f.Family {
		return 0, "", invalid("recurrent: cell %q, family %s", r.Cell, f.Family)
	}
	if r.Hidden < 1 || r.Hidden > 1<<12 {
		return 0, "", invalid("recurrent: hidden %d: want 1..%d", r.Hidden, 1<<12)
	}
	gh := gates(r.Cell) * r.Hidden
	for _, p := range []struct {
		name string
		v    []float32
		n    int
		what string
	}{
		{"recurrent: wx", r.Wx, in * gh, fmt.Sprintf("inputs×gates·hidden = %d×%d", in, gh)},
		{"recurrent: wh", r.Wh, r.Hidden * gh, fmt.Sprintf("hidden×gates·hidden = %d×%d", r.Hidden, gh)},
		{"recurrent: bx", r.Bx, gh, "gates·hidden"},
		{"recurrent: bh", r.Bh, gh, "gates·hidden"},
	} {
		if err := checkParams(p.name, p.v, p.n, p.what); err != nil {
			return 0, "", err
		}
	}
	return r.Hidden, fmt.Sprintf("recurrent hidden (%d)", r.Hidden), nil
}

// checkParams checks a parameter array's length and that its values are finite.
func checkParams(name string, v []float32, n int, what string) error {
	if len(v) != n {
		return invalid("%s: %d values, want %s = %d", name, len(v), what, n)
	}
	for j, w := range v {
		if !finite(float64(w)) {
			return invalid("%s[%d] = %v is not finite", name, j, w)
		}
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
	case FamilyCNN, FamilyGRU, FamilyLSTM, FamilyGBDT:
		// A sequence or trees model is a fraud probability (sigmoid output) or a
		// value (identity output).
		switch f.Output {
		case OutputProbability:
			wantOut, lastAct = OutputProbability, "sigmoid"
		case OutputValue:
			wantOut, lastAct = OutputValue, "identity"
		default:
			return invalid("output %q: want %q or %q", f.Output, OutputProbability, OutputValue)
		}
	default:
		return invalid("family %q: unknown (want logistic, mlp, linear, cnn, gru, lstm or gbdt)", f.Family)
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
	if err := f.validateDefinitions(); err != nil {
		return err
	}
	if f.Trees != nil && f.Family != FamilyGBDT {
		return invalid("trees: only family gbdt has trees, family is %s", f.Family)
	}
	if f.Family == FamilyGBDT {
		if err := f.validateTrees(); err != nil {
			return err
		}
		return f.validateThresholds()
	}
	if len(f.Layers) == 0 {
		return invalid("layers: empty")
	}
	if (f.Family == FamilyLogistic || f.Family == FamilyLinear) && len(f.Layers) != 1 {
		return invalid("layers: family %s has exactly 1 layer, got %d", f.Family, len(f.Layers))
	}
	headIn, headFrom, err := f.validateSequence()
	if err != nil {
		return err
	}
	for i, l := range f.Layers {
		wantIn := headIn
		from := headFrom
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
		if (l.Activation == ActivationExp || l.Activation == ActivationSigmoidAmount) && f.Family == FamilyLinear {
			// The log link or the probability × amount of a linear model;
			// checked below as its output activation.
		} else if _, ok := parseActivation(l.Activation); !ok {
			return invalid("layer %d: activation %q: unknown (want identity, relu, sigmoid or tanh; exp and sigmoid_amount only on a linear model)", i, l.Activation)
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
	if f.Family == FamilyLinear && last.Activation == ActivationExp {
		lastAct = ActivationExp // log link: exp(x·W + b) >= 0
	}
	if f.Family == FamilyLinear && last.Activation == ActivationSigmoidAmount {
		lastAct = ActivationSigmoidAmount // sigmoid(x·W + b) × amount, in [0, amount]
		if !slices.ContainsFunc(f.Inputs, func(in Input) bool { return in.Name == AmountInput }) {
			return invalid("output activation %q needs the input %q (the amount it multiplies)", ActivationSigmoidAmount, AmountInput)
		}
	}
	if last.Activation != lastAct {
		return invalid("layer %d: output activation %q, family %s wants %q", len(f.Layers)-1, last.Activation, f.Family, lastAct)
	}
	return f.validateThresholds()
}

func (f *File) validateThresholds() error {
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
