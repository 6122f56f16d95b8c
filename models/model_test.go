package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/models/internal/modelref"
)

// testFile builds a valid model of the family with nIn inputs and the
// hidden layer widths (mlp only), random weights from seed.
func testFile(family string, nIn int, hidden []int, seed uint64) *File {
	r := rand.New(rand.NewPCG(seed, 99))
	f := &File{Format: FormatName, FormatVersion: FormatVersion, Name: "t", Family: family, Version: 2, Output: OutputProbability,
		Thresholds: Thresholds{Review: 0.3, Alert: 0.8},
		Training:   map[string]any{"rows": 1000, "seed": 7, "note": "test"}}
	if family == FamilyLinear {
		f.Output = OutputValue
		f.Thresholds = Thresholds{Review: 1, Alert: 5}
	}
	for i := 0; i < nIn; i++ {
		f.Inputs = append(f.Inputs, Input{Name: fmt.Sprintf("f%02d", i), Mean: r.NormFloat64(), Std: 0.5 + r.Float64()})
	}
	widths := append([]int{nIn}, hidden...)
	widths = append(widths, 1)
	for i := 0; i+1 < len(widths); i++ {
		l := Layer{In: widths[i], Out: widths[i+1], Activation: "relu"}
		for j := 0; j < l.In*l.Out; j++ {
			l.Weights = append(l.Weights, float32(r.NormFloat64()/math.Sqrt(float64(l.In))))
		}
		for j := 0; j < l.Out; j++ {
			l.Bias = append(l.Bias, float32(r.NormFloat64()*0.1))
		}
		f.Layers = append(f.Layers, l)
	}
	last := &f.Layers[len(f.Layers)-1]
	last.Activation = "sigmoid"
	if family == FamilyLinear {
		last.Activation = "identity"
	}
	return f
}

// encodeUnchecked encodes f with a correct digest but without validation,
// to build invalid files.
// mustRef returns the float64 reference of f (package modelref).
func mustRef(t testing.TB, f *File) *modelref.Model {
	t.Helper()
	ref, err := modelref.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func encodeUnchecked(t *testing.T, f *File) []byte {
	t.Helper()
	f.Digest = ""
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var c File
	if err := decodeStrict(raw, &c); err != nil {
		t.Fatal(err)
	}
	d, err := c.digest()
	if err != nil {
		t.Fatal(err)
	}
	c.Digest = d
	b, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, f *File) *Model {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEncodeParseRoundTrip(t *testing.T) {
	f := testFile(FamilyMLP, 5, []int{7, 3}, 1)
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Digest(), f.Digest; got != want {
		t.Errorf("Digest() = %q, want %q", got, want)
	}
	if got, want := m.Ident(), "t-mlp@2 "+f.Digest[:19]; got != want {
		t.Errorf("Ident() = %q, want %q", got, want)
	}
	if got := m.Inputs(); len(got) != 5 || got[0] != "f00" {
		t.Errorf("Inputs() = %q", got)
	}
	// Whitespace does not change the digest.
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(buf.Bytes()); err != nil {
		t.Errorf("Parse(compacted) = %v, want nil", err)
	}
	// Encoding twice is stable.
	b2, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("Encode is not deterministic")
	}
}

func TestDigestTamper(t *testing.T) {
	f := testFile(FamilyLogistic, 4, nil, 2)
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(string) string
	}{
		{"threshold", func(s string) string { return strings.Replace(s, `"alert": 0.8`, `"alert": 0.9`, 1) }},
		{"version", func(s string) string { return strings.Replace(s, `"version": 2`, `"version": 3`, 1) }},
		{"training", func(s string) string { return strings.Replace(s, `"note": "test"`, `"note": "tesT"`, 1) }},
		{"digest", func(s string) string { return strings.Replace(s, "sha256:", "sha256:0", 1) }},
		{"missing digest", func(s string) string { return strings.Replace(s, f.Digest, "", 1) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.edit(string(b))
			if s == string(b) {
				t.Fatal("edit did not change the file")
			}
			_, err := Parse([]byte(s))
			if !errors.Is(err, ErrDigest) {
				t.Errorf("Parse(tampered) = %v, want ErrDigest", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(f *File)
		want error
		msg  string // substring of the error
	}{
		{"unknown format", func(f *File) { f.Format = "onnx" }, ErrFormat, `format "onnx"`},
		{"future version", func(f *File) { f.FormatVersion = 2 }, ErrFormat, "format_version 2"},
		{"unknown family", func(f *File) { f.Family = "forest" }, ErrInvalidModel, `family "forest"`},
		{"wrong output", func(f *File) { f.Output = OutputValue }, ErrInvalidModel, `output "value"`},
		{"empty name", func(f *File) { f.Name = "" }, ErrInvalidModel, "name"},
		{"version 0", func(f *File) { f.Version = 0 }, ErrInvalidModel, "version 0"},
		{"no inputs", func(f *File) { f.Inputs = nil }, ErrInvalidModel, "inputs: empty"},
		{"duplicate input", func(f *File) { f.Inputs[1].Name = f.Inputs[0].Name }, ErrInvalidModel, `inputs[1] "f00": duplicate`},
		{"zero std", func(f *File) { f.Inputs[2].Std = 0 }, ErrInvalidModel, `inputs[2] "f02": std 0`},
		{"negative std", func(f *File) { f.Inputs[2].Std = -1 }, ErrInvalidModel, `inputs[2] "f02": std -1`},
		{"huge mean", func(f *File) { f.Inputs[0].Mean = 1e300 }, ErrInvalidModel, `inputs[0] "f00"`},
		{"first layer in", func(f *File) { f.Layers[0].In = 3 }, ErrInvalidModel, "layer 0: in 3 does not match 4 inputs"},
		{"hidden mismatch", func(f *File) { f.Layers[1].In = 5 }, ErrInvalidModel, "layer 1: in 5 does not match layer 0 out (6)"},
		{"weights length", func(f *File) { f.Layers[1].Weights = f.Layers[1].Weights[1:] }, ErrInvalidModel, "layer 1: 11 weights, want in×out = 6×2 = 12"},
		{"bias length", func(f *File) { f.Layers[0].Bias = nil }, ErrInvalidModel, "layer 0: 0 biases"},
		{"unknown activation", func(f *File) { f.Layers[0].Activation = "gelu" }, ErrInvalidModel, `layer 0: activation "gelu"`},
		{"output width", func(f *File) {
			f.Layers[2] = Layer{In: 2, Out: 2, Activation: "sigmoid", Weights: make([]float32, 4), Bias: make([]float32, 2)}
		}, ErrInvalidModel, "layer 2: the output layer has out 2"},
		{"output activation", func(f *File) { f.Layers[2].Activation = "relu" }, ErrInvalidModel, `layer 2: output activation "relu"`},
		{"review above alert", func(f *File) { f.Thresholds = Thresholds{Review: 0.9, Alert: 0.5} }, ErrInvalidModel, "review 0.9 > alert 0.5"},
		{"alert above 1", func(f *File) { f.Thresholds.Alert = 1.5 }, ErrInvalidModel, "outside [0, 1]"},
		{"logistic two layers", func(f *File) { f.Family = FamilyLogistic }, ErrInvalidModel, "exactly 1 layer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := testFile(FamilyMLP, 4, []int{6, 2}, 3)
			tc.edit(f)
			_, err := Parse(encodeUnchecked(t, f))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Parse() = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if _, err := f.Encode(); err == nil {
				t.Errorf("Encode() = nil, want an error")
			}
		})
	}
	raw := []struct {
		name, in, msg string
	}{
		{"not json", `{"format":`, "decode json"},
		{"trailing", string(encodeUnchecked(t, testFile(FamilyLinear, 2, nil, 1))) + `{}`, "trailing data"},
		{"unknown field", `{"format":"streamscore-model","format_version":1,"wieghts":[]}`, "wieghts"},
		{"nan weight", strings.Replace(string(encodeUnchecked(t, testFile(FamilyLinear, 2, nil, 1))), `"weights":[`, `"weights":[NaN,`, 1), "decode json"},
		{"float32 overflow", strings.Replace(string(encodeUnchecked(t, testFile(FamilyLinear, 2, nil, 1))), `"weights":[`, `"weights":[1e39,`, 1), "decode json"},
	}
	for _, tc := range raw {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Parse() = %v, want error containing %q", err, tc.msg)
			}
		})
	}
}

// streamLayout returns a feature layout with the model's inputs shuffled
// among extra columns, and rows of random values in that layout.
func streamLayout(f *File, rows int, seed uint64) (names []string, x []float32, z [][]float64) {
	r := rand.New(rand.NewPCG(seed, 5))
	names = []string{"extra_a"}
	for i := len(f.Inputs) - 1; i >= 0; i-- {
		names = append(names, f.Inputs[i].Name, fmt.Sprintf("extra_%d", i))
	}
	for row := 0; row < rows; row++ {
		vals := make(map[string]float32)
		zr := make([]float64, len(f.Inputs))
		for i, in := range f.Inputs {
			v := float32(in.Mean + in.Std*r.NormFloat64()*1.5)
			vals[in.Name] = v
			zr[i] = float64((v - float32(in.Mean)) * float32(1/in.Std))
		}
		for _, n := range names {
			v, ok := vals[n]
			if !ok {
				v = float32(r.NormFloat64() * 100)
			}
			x = append(x, v)
		}
		z = append(z, zr)
	}
	return names, x, z
}

func TestScoreMatchesReference(t *testing.T) {
	tests := []struct {
		name   string
		family string
		hidden []int
	}{
		{"logistic", FamilyLogistic, nil},
		{"linear", FamilyLinear, nil},
		{"mlp", FamilyMLP, []int{17, 9}},
		{"mlp wide", FamilyMLP, []int{64}},
	}
	for _, tc := range tests {
		for _, rows := range []int{1, 3, 4, 5, 17, 300} {
			t.Run(fmt.Sprintf("%s/rows=%d", tc.name, rows), func(t *testing.T) {
				f := testFile(tc.family, 13, tc.hidden, 4)
				m := mustParse(t, f)
				names, x, z := streamLayout(f, rows, uint64(rows))
				s, err := m.Bind(names)
				if err != nil {
					t.Fatal(err)
				}
				out := make([]float32, rows+1)
				out[rows] = -42
				s.Score(x, rows, out)
				if out[rows] != -42 {
					t.Fatalf("Score wrote past rows")
				}
				ref := mustRef(t, f)
				for r := 0; r < rows; r++ {
					want, _, _ := ref.Step(nil, z[r])
					if d := math.Abs(float64(out[r]) - want); d > 1e-4*math.Max(1, math.Abs(want)) {
						t.Errorf("row %d: got %v, want %v", r, out[r], want)
					}
				}
			})
		}
	}
}

func TestScoreNoAlloc(t *testing.T) {
	f := testFile(FamilyMLP, 20, []int{32, 16}, 5)
	m := mustParse(t, f)
	names, x, _ := streamLayout(f, 64, 1)
	s, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, 64)
	s.Score(x, 64, out)
	dst := make([]Reason, 0, 8)
	if n := testing.AllocsPerRun(20, func() {
		s.Score(x, 64, out)
		dst = s.Reasons(x, 3, 5, dst[:0])
	}); n != 0 {
		t.Errorf("allocs per Score+Reasons = %v, want 0", n)
	}
}

func TestLogisticReasonsSumToLogit(t *testing.T) {
	for _, family := range []string{FamilyLogistic, FamilyLinear} {
		t.Run(family, func(t *testing.T) {
			f := testFile(family, 9, nil, 6)
			m := mustParse(t, f)
			names, x, z := streamLayout(f, 10, 7)
			s, err := m.Bind(names)
			if err != nil {
				t.Fatal(err)
			}
			ref := mustRef(t, f)
			for r := 0; r < 10; r++ {
				rs := s.Reasons(x, r, 100, nil)
				if len(rs) != 9 {
					t.Fatalf("got %d reasons, want 9", len(rs))
				}
				var sum float64
				for i, rr := range rs {
					sum += float64(rr.Contribution)
					if i > 0 && math.Abs(float64(rr.Contribution)) > math.Abs(float64(rs[i-1].Contribution)) {
						t.Errorf("reasons not sorted by |contribution|: %v", rs)
					}
				}
				_, logit, _ := ref.Step(nil, z[r])
				base := float64(f.Layers[0].Bias[0])
				if d := math.Abs(sum - (logit - base)); d > 1e-4 {
					t.Errorf("row %d: Σ contributions = %v, want logit − base = %v", r, sum, logit-base)
				}
				// Closed form of one contribution.
				for i, in := range f.Inputs {
					if in.Name == rs[0].Feature {
						want := float64(f.Layers[0].Weights[i]) * z[r][i]
						if math.Abs(float64(rs[0].Contribution)-want) > 1e-5 {
							t.Errorf("%s: got %v, want w·z = %v", in.Name, rs[0].Contribution, want)
						}
					}
				}
			}
			if got := s.Reasons(x, 0, 3, nil); len(got) != 3 {
				t.Errorf("k=3: got %d reasons", len(got))
			}
			if got := s.Reasons(x, 0, 0, nil); len(got) != 0 {
				t.Errorf("k=0: got %d reasons", len(got))
			}
		})
	}
}

// TestMLPReasonsIntegratedGradients checks the MLP attributions against
// integrated gradients computed independently with central finite
// differences of the float64 reference along the same path, and their
// completeness: they sum to logit(z) − logit(0).
func TestMLPReasonsIntegratedGradients(t *testing.T) {
	f := testFile(FamilyMLP, 8, []int{12, 6}, 8)
	f.Layers[1].Activation = "tanh"
	m := mustParse(t, f)
	names, x, z := streamLayout(f, 20, 9)
	s, err := m.Bind(names)
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, f)
	logit := func(z []float64) float64 {
		_, l, _ := ref.Step(nil, z)
		return l
	}
	const h = 1e-5
	base := logit(make([]float64, len(f.Inputs)))
	for r := 0; r < 20; r++ {
		rs := s.Reasons(x, r, len(f.Inputs), nil)
		got := make(map[string]float64)
		var sum float64
		for _, rr := range rs {
			got[rr.Feature] = float64(rr.Contribution)
			sum += float64(rr.Contribution)
		}
		for i, in := range f.Inputs {
			var avg float64
			for st := range igSteps {
				a := (float64(st) + 0.5) / igSteps
				zp, zm := make([]float64, len(z[r])), make([]float64, len(z[r]))
				for j := range z[r] {
					zp[j], zm[j] = a*z[r][j], a*z[r][j]
				}
				zp[i] += h
				zm[i] -= h
				avg += (logit(zp) - logit(zm)) / (2 * h)
			}
			want := z[r][i] * avg / igSteps
			if d := math.Abs(got[in.Name] - want); d > 1e-3*math.Max(1, math.Abs(want)) {
				t.Errorf("row %d %s: integrated gradients %v, by finite differences %v", r, in.Name, got[in.Name], want)
			}
		}
		lz := logit(z[r])
		// Completeness up to the midpoint rule's error at ReLU kinks.
		if d := math.Abs(sum - (lz - base)); d > 0.05*math.Max(1, math.Abs(lz-base)) {
			t.Errorf("row %d: Σ contributions %v, logit(z) − logit(0) = %v", r, sum, lz-base)
		}
	}
}

func TestBindErrors(t *testing.T) {
	f := testFile(FamilyLogistic, 3, nil, 10) // inputs f00 f01 f02
	m := mustParse(t, f)
	tests := []struct {
		name     string
		features []string
		missing  string
	}{
		{"empty layout", nil, `["f00" "f01" "f02"]`},
		{"one missing", []string{"f02", "x", "f00"}, `["f01"]`},
		{"case differs", []string{"F00", "f01", "f02"}, `["f00"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Bind(tc.features)
			if !errors.Is(err, ErrMissingInput) || !strings.Contains(err.Error(), tc.missing) {
				t.Errorf("Bind() = %v, want ErrMissingInput naming %s", err, tc.missing)
			}
		})
	}
	if _, err := m.Bind([]string{"a", "f02", "f01", "f00"}); err != nil {
		t.Errorf("Bind(superset) = %v, want nil", err)
	}
}

func TestDecide(t *testing.T) {
	m := mustParse(t, testFile(FamilyLogistic, 2, nil, 11)) // review 0.3, alert 0.8
	s, err := m.Bind(m.Inputs())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		score float32
		want  Decision
	}{
		{0, DecisionAllow}, {0.2999, DecisionAllow}, {0.3, DecisionReview}, {0.79, DecisionReview},
		{0.8, DecisionAlert}, {1, DecisionAlert}, {float32(math.NaN()), DecisionReview},
	}
	for _, tc := range tests {
		if got := s.Decide(tc.score); got != tc.want {
			t.Errorf("Decide(%v) = %v, want %v", tc.score, got, tc.want)
		}
	}
	if r, a := s.Thresholds(); r != 0.3 || a != 0.8 {
		t.Errorf("Thresholds() = %v, %v", r, a)
	}
	for d, want := range map[Decision]string{DecisionAllow: "allow", DecisionReview: "review", DecisionAlert: "alert"} {
		if got := d.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func BenchmarkScore(b *testing.B) {
	tests := []struct {
		name   string
		family string
		hidden []int
	}{
		{"logistic", FamilyLogistic, nil},
		{"mlp_32x16", FamilyMLP, []int{32, 16}},
		{"mlp_128x64", FamilyMLP, []int{128, 64}},
	}
	for _, tc := range tests {
		for _, rows := range []int{1, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", tc.name, rows), func(b *testing.B) {
				f := testFile(tc.family, 24, tc.hidden, 12)
				m := mustParse(b, f)
				names, x, _ := streamLayout(f, rows, 13)
				s, err := m.Bind(names)
				if err != nil {
					b.Fatal(err)
				}
				out := make([]float32, rows)
				b.ReportAllocs()
				for b.Loop() {
					s.Score(x, rows, out)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/event")
			})
		}
	}
	b.Run("reasons/mlp_32x16", func(b *testing.B) {
		f := testFile(FamilyMLP, 24, []int{32, 16}, 12)
		m := mustParse(b, f)
		names, x, _ := streamLayout(f, 1, 13)
		s, _ := m.Bind(names)
		dst := make([]Reason, 0, 5)
		b.ReportAllocs()
		for b.Loop() {
			dst = s.Reasons(x, 0, 5, dst[:0])
		}
	})
}
