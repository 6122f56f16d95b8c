package models

import (
	"embed"
	"fmt"
	"os"
	"path"
	"sort"

	"github.com/streamscore/streamscore/models/internal/kernel"
)

// Model is a parsed, validated model with its weights packed for the GEMM
// kernel. It is immutable after [Parse] and safe for concurrent use; score
// with a [Scorer] per goroutine ([Model.Bind]).
type Model struct {
	name, family, output string
	version              int
	digest, ident        string
	inputs               []string
	defs                 []FeatureDef // per input; Hash "" when the file records none
	mean, invStd         []float32
	layers               []layer
	conv                 *convLayer // FamilyCNN
	rec                  *recLayer  // FamilyGRU, FamilyLSTM
	trees                *ensemble  // FamilyGBDT
	review, alert        float32
	training             map[string]any
}

// layer is one dense layer: packed for scoring, raw (float64) for reasons.
type layer struct {
	in, out int
	act     kernel.Activation
	exp     bool // ActivationExp: the GEMM runs identity, then exp
	sigAmt  bool // ActivationSigmoidAmount: the GEMM runs identity, then the scorer applies sigmoid × amount
	packed  *kernel.Packed
	bias    []float32
	w64     []float64 // row-major in×out
	w64T    []float64 // w64 transposed: row-major out×in
	b64     []float64
}

func parseActivation(s string) (kernel.Activation, bool) {
	switch s {
	case "identity":
		return kernel.Identity, true
	case "relu":
		return kernel.ReLU, true
	case "sigmoid":
		return kernel.Sigmoid, true
	case "tanh":
		return kernel.Tanh, true
	}
	return 0, false
}

// Parse decodes a native model file, verifies its format, version and
// digest, validates shapes and values, and packs the weights. Errors name the
// offending field or layer and wrap [ErrFormat], [ErrDigest] or
// [ErrInvalidModel].
func Parse(b []byte) (*Model, error) {
	var f File
	if err := decodeStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse model: %w: %w", ErrInvalidModel, err)
	}
	if f.Format != FormatName {
		return nil, fmt.Errorf("parse model: format %q, want %q: %w", f.Format, FormatName, ErrFormat)
	}
	if f.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("parse model %q: format_version %d, this build reads %d: %w", f.Name, f.FormatVersion, FormatVersion, ErrFormat)
	}
	if f.Digest == "" {
		return nil, fmt.Errorf("parse model %q: digest: missing: %w", f.Name, ErrDigest)
	}
	want, err := f.digest()
	if err != nil {
		return nil, fmt.Errorf("parse model %q: %w", f.Name, err)
	}
	if f.Digest != want {
		return nil, fmt.Errorf("parse model %q: digest %s, content hashes to %s: %w", f.Name, f.Digest, want, ErrDigest)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("parse model %q: %w", f.Name, err)
	}
	return newModel(&f), nil
}

// Load reads and parses the model file at path.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return m, nil
}

//go:embed shipped/*.json shipped/*.json.sig shipped/release.pub
var shipped embed.FS

// ShippedDecisionModel is the name of the shipped model whose thresholds make
// decisions when the shipped set is used as a whole: the MLP. The logistic
// baseline (fraud_lr) and the expected-loss model (risk) are scored, published
// and audited beside it.
const ShippedDecisionModel = "fraud"

// shippedKey is the release public key (models/shipped/release.pub).
var shippedKey = func() PublicKey {
	b, err := shipped.ReadFile("shipped/release.pub")
	if err != nil {
		panic("models: the release key is not built in: " + err.Error())
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		panic("models: the built-in release key: " + err.Error())
	}
	return k
}()

// ShippedKey returns the release public key built into the binary
// (models/shipped/release.pub): the key that signs the shipped models, and
// the one cmd/streamscore trusts when no other is configured.
func ShippedKey() PublicKey { return shippedKey }

// Shipped parses and returns the models embedded in the binary
// (models/shipped/*.json), sorted by file name, each verified against its
// signature (shipped/*.json.sig) by the release key ([ShippedKey]). Each
// call parses afresh.
func Shipped() ([]*Model, error) {
	ents, err := shipped.ReadDir("shipped")
	if err != nil {
		return nil, fmt.Errorf("read shipped models: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if !e.IsDir() && path.Ext(e.Name()) == ".json" {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	trust, err := NewTrust(shippedKey)
	if err != nil {
		return nil, fmt.Errorf("shipped models: %w", err)
	}
	out := make([]*Model, 0, len(names))
	for _, n := range names {
		b, err := shipped.ReadFile("shipped/" + n)
		if err != nil {
			return nil, fmt.Errorf("read shipped model %s: %w", n, err)
		}
		m, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("shipped model %s: %w", n, err)
		}
		sig, err := shipped.ReadFile("shipped/" + n + SignatureExt)
		if err != nil {
			sig = nil // Verify says: unsigned
		}
		if _, err := trust.Verify(m, sig); err != nil {
			return nil, fmt.Errorf("shipped model %s: %w", n, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func newModel(f *File) *Model {
	m := &Model{
		name:     f.Name,
		family:   f.Family,
		output:   f.Output,
		version:  f.Version,
		digest:   f.Digest,
		review:   float32(f.Thresholds.Review),
		alert:    float32(f.Thresholds.Alert),
		training: f.Training,
	}
	m.ident = fmt.Sprintf("%s-%s@%d %s", f.Name, f.Family, f.Version, f.Digest[:len("sha256:")+12])
	for _, in := range f.Inputs {
		m.inputs = append(m.inputs, in.Name)
		m.defs = append(m.defs, FeatureDef{Name: in.Name, Text: in.Definition, Hash: in.DefinitionHash})
		m.mean = append(m.mean, float32(in.Mean))
		m.invStd = append(m.invStd, float32(1/in.Std))
	}
	if f.Conv != nil {
		m.conv = newConvLayer(f.Conv, len(f.Inputs))
	}
	if f.Recurrent != nil {
		m.rec = newRecLayer(f.Recurrent, len(f.Inputs))
	}
	if f.Trees != nil {
		m.trees = newEnsemble(f.Trees)
	}
	for _, l := range f.Layers {
		act, _ := parseActivation(l.Activation)
		ly := layer{
			in: l.In, out: l.Out, act: act, exp: l.Activation == ActivationExp, sigAmt: l.Activation == ActivationSigmoidAmount,
			packed: kernel.Pack(l.In, l.Out, l.Weights),
			bias:   append([]float32(nil), l.Bias...),
			w64:    make([]float64, len(l.Weights)),
			w64T:   make([]float64, len(l.Weights)),
			b64:    make([]float64, len(l.Bias)),
		}
		for i, w := range l.Weights {
			ly.w64[i] = float64(w)
			ly.w64T[i%l.Out*l.In+i/l.Out] = float64(w)
		}
		for i, b := range l.Bias {
			ly.b64[i] = float64(b)
		}
		m.layers = append(m.layers, ly)
	}
	return m
}

// Name returns the model name, the key in score records ("fraud", "risk").
func (m *Model) Name() string { return m.name }

// Family returns the model family (FamilyLogistic, FamilyMLP, FamilyLinear,
// FamilyCNN, FamilyGRU, FamilyLSTM or FamilyGBDT).
func (m *Model) Family() string { return m.family }

// Version returns the model version.
func (m *Model) Version() int { return m.version }

// Output returns OutputProbability or OutputValue.
func (m *Model) Output() string { return m.output }

// Ident returns "<name>-<family>@<version> sha256:<first 12 hex of digest>",
// e.g. "fraud-mlp@3 sha256:ab12cd34ef56".
func (m *Model) Ident() string { return m.ident }

// Digest returns "sha256:<64 hex>", the digest of the model file.
func (m *Model) Digest() string { return m.digest }

// Inputs returns the names of the features the model reads, in its order.
// The slice is a copy.
func (m *Model) Inputs() []string { return append([]string(nil), m.inputs...) }

// Thresholds returns the review and alert cut-offs on the output.
func (m *Model) Thresholds() (review, alert float32) { return m.review, m.alert }

// Training returns the free training metadata of the model file (data
// range, rows, metrics, seed, command). The caller must not modify it.
func (m *Model) Training() map[string]any { return m.training }
