package onnx

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/internal/modelref"
)

// parityTol is the bound on |native − PyTorch| per output.
const parityTol = 1e-5

// fixture is the JSON written beside each .onnx by testdata/make_fixtures.py.
type fixture struct {
	Family    string      `json:"family"`
	Inputs    []string    `json:"inputs"`
	Window    int         `json:"window"`
	Column    *int        `json:"column"`
	Rows      [][]float64 `json:"rows"`
	Want      []float64   `json:"want"`
	Sequences []struct {
		X    [][]float64 `json:"x"`
		Want []float64   `json:"want"`
	} `json:"sequences"`
}

func loadFixture(t testing.TB, name string) ([]byte, fixture) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".onnx"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := json.Unmarshal(j, &fx); err != nil {
		t.Fatal(err)
	}
	return b, fx
}

func flat(rows [][]float64) []float32 {
	var x []float32
	for _, r := range rows {
		for _, v := range r {
			x = append(x, float32(v))
		}
	}
	return x
}

// TestParity imports every PyTorch fixture, encodes and parses it, scores
// the fixture's inputs with the native runtime and compares with the
// outputs PyTorch computed (max abs error <= 1e-5).
func TestParity(t *testing.T) {
	for _, tc := range []struct {
		name, family, output string
	}{
		{"logistic_std", models.FamilyLogistic, models.OutputProbability},
		{"linear", models.FamilyLinear, models.OutputValue},
		{"mlp", models.FamilyMLP, models.OutputProbability},
		{"cnn", models.FamilyCNN, models.OutputProbability},
		{"cnn_softmax", models.FamilyCNN, models.OutputProbability},
		{"gru", models.FamilyGRU, models.OutputProbability},
		{"lstm", models.FamilyLSTM, models.OutputProbability},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, fx := loadFixture(t, tc.name)
			f, err := Import(b, tc.name, fx.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			if f.Family != tc.family || f.Output != tc.output {
				t.Fatalf("family %s output %s, want %s %s", f.Family, f.Output, tc.family, tc.output)
			}
			enc, err := f.Encode()
			if err != nil {
				t.Fatal(err)
			}
			m, err := models.Parse(enc)
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.Bind(fx.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			var worst, worstRef float64
			check := func(got float32, ref, want float64) {
				worst = max(worst, math.Abs(float64(got)-want))
				worstRef = max(worstRef, math.Abs(ref-want))
			}
			if len(fx.Rows) > 0 {
				out := make([]float32, len(fx.Rows))
				s.Score(flat(fx.Rows), len(fx.Rows), out)
				for r, row := range fx.Rows {
					check(out[r], refScore(t, f, [][]float64{row})[0], fx.Want[r])
				}
			}
			for _, seq := range fx.Sequences {
				// The whole sequence in one call (rows of one entity
				// apply in order), then step by step, one row per call.
				n := len(seq.X)
				states := make([][]float32, n)
				st := make([]float32, m.StateSize())
				for r := range states {
					states[r] = st
				}
				out := make([]float32, n)
				s.ScoreSeq(flat(seq.X), n, states, nil, out)
				ref := refScore(t, f, seq.X)
				for r := range out {
					check(out[r], ref[r], seq.Want[r])
				}
				st2 := make([]float32, m.StateSize())
				for r := range n {
					s.ScoreSeq(flat(seq.X[r:r+1]), 1, [][]float32{st2}, nil, out[:1])
					check(out[0], ref[r], seq.Want[r])
				}
			}
			t.Logf("%s: max |native − pytorch| = %.3g (float64 reference of the file's math: %.3g)", tc.name, worst, worstRef)
			if worst > parityTol || worstRef > parityTol {
				t.Fatalf("max abs error %.3g (runtime) / %.3g (reference), want <= %g", worst, worstRef, parityTol)
			}
		})
	}
}

// refScore evaluates a File in float64 with the reference of its documented
// math (package modelref), independent of the runtime, standardising in
// float64: the rows are one entity's sequence for the sequence families,
// independent rows otherwise.
func refScore(t *testing.T, f *models.File, rows [][]float64) []float64 {
	t.Helper()
	ref, err := modelref.New(f)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(rows))
	st := make([]float64, ref.StateLen())
	for r, row := range rows {
		out[r], _, st = ref.Step(st, ref.StandardizeExact(flat([][]float64{row})))
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// TestStandardisationFolded: the fixture's (x − mean)/std Sub/Div nodes
// become the file's input statistics, not a layer.
func TestStandardisationFolded(t *testing.T) {
	b, fx := loadFixture(t, "logistic_std")
	f, err := Import(b, "fraud_lr", fx.Inputs)
	if err != nil {
		t.Fatal(err)
	}
	wantMean := []float64{120, 3, 0.5, 1500, -2, 40}
	wantStd := []float64{80, 1.5, 0.25, 900, 3, 12}
	for i, in := range f.Inputs {
		if math.Abs(in.Mean-wantMean[i]) > 1e-9*math.Abs(wantMean[i])+1e-12 || math.Abs(in.Std-wantStd[i]) > 1e-9*wantStd[i] {
			t.Errorf("input %d: mean %v std %v, want %v %v", i, in.Mean, in.Std, wantMean[i], wantStd[i])
		}
	}
	if len(f.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(f.Layers))
	}
}
