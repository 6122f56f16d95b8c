package onnx

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/models"
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

func loadFixture(t *testing.T, name string) ([]byte, fixture) {
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
					check(out[r], refScore(f, [][]float64{row})[0], fx.Want[r])
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
				ref := refScore(f, seq.X)
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

// refScore evaluates a File in float64 exactly as its documentation
// states (models/file.go), independent of the runtime: the rows are one
// entity's sequence for the sequence families, independent rows otherwise.
func refScore(f *models.File, rows [][]float64) []float64 {
	n := len(f.Inputs)
	z := make([][]float64, len(rows))
	for r, row := range rows {
		z[r] = make([]float64, n)
		for i := range n {
			z[r][i] = (float64(float32(row[i])) - f.Inputs[i].Mean) / f.Inputs[i].Std
		}
	}
	head := func(x []float64) float64 {
		for _, l := range f.Layers {
			y := make([]float64, l.Out)
			for j := range l.Out {
				s := float64(l.Bias[j])
				for i := range l.In {
					s += x[i] * float64(l.Weights[i*l.Out+j])
				}
				y[j] = act(l.Activation, s)
			}
			x = y
		}
		return x[0]
	}
	out := make([]float64, len(rows))
	switch f.Family {
	case models.FamilyCNN:
		c := f.Conv
		for t := range rows {
			win := make([][]float64, c.Window)
			for w := range win {
				src := t - (c.Window - 1) + w
				win[w] = make([]float64, n)
				if src >= 0 {
					copy(win[w], z[src])
				}
			}
			l := c.Window - c.Kernel + 1
			conv := make([][]float64, c.Channels) // [c][pos]
			for cc := range c.Channels {
				conv[cc] = make([]float64, l)
				for p := range l {
					s := float64(c.Bias[cc])
					for k := range c.Kernel {
						for i := range n {
							s += win[p+k][i] * float64(c.Weights[(k*n+i)*c.Channels+cc])
						}
					}
					conv[cc][p] = act(c.Activation, s)
				}
			}
			np := (l-c.PoolSize)/c.PoolStride + 1
			var x []float64
			for cc := range c.Channels {
				for p := range np {
					w := conv[cc][p*c.PoolStride : p*c.PoolStride+c.PoolSize]
					v := w[0]
					if c.Pool == models.PoolAvg {
						v = 0
						for _, e := range w {
							v += e
						}
						v /= float64(len(w))
					} else {
						for _, e := range w {
							v = max(v, e)
						}
					}
					x = append(x, v)
				}
			}
			out[t] = head(x)
		}
	case models.FamilyGRU, models.FamilyLSTM:
		rc := f.Recurrent
		h := rc.Hidden
		g := 3
		if rc.Cell == models.FamilyLSTM {
			g = 4
		}
		gh := g * h
		hs, cs := make([]float64, h), make([]float64, h)
		for t := range rows {
			a, bb := make([]float64, gh), make([]float64, gh)
			for j := range gh {
				a[j], bb[j] = float64(rc.Bx[j]), float64(rc.Bh[j])
				for i := range n {
					a[j] += z[t][i] * float64(rc.Wx[i*gh+j])
				}
				for k := range h {
					bb[j] += hs[k] * float64(rc.Wh[k*gh+j])
				}
			}
			nh := make([]float64, h)
			for j := range h {
				if rc.Cell == models.FamilyGRU {
					r := sigmoid(a[j] + bb[j])
					zz := sigmoid(a[h+j] + bb[h+j])
					nn := math.Tanh(a[2*h+j] + r*bb[2*h+j])
					nh[j] = (1-zz)*nn + zz*hs[j]
					continue
				}
				i := sigmoid(a[j] + bb[j])
				fg := sigmoid(a[h+j] + bb[h+j])
				gg := math.Tanh(a[2*h+j] + bb[2*h+j])
				o := sigmoid(a[3*h+j] + bb[3*h+j])
				cs[j] = fg*cs[j] + i*gg
				nh[j] = o * math.Tanh(cs[j])
			}
			hs = nh
			out[t] = head(hs)
		}
	default:
		for r := range rows {
			out[r] = head(z[r])
		}
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func act(name string, x float64) float64 {
	switch name {
	case "relu":
		return max(x, 0)
	case "sigmoid":
		return sigmoid(x)
	case "tanh":
		return math.Tanh(x)
	}
	return x
}

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
