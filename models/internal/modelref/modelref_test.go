package modelref

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// gru is a GRU file with one input, H = 1 and a sigmoid output (weights exact in float32), as the
// decoded JSON of a models.File.
func gru() map[string]any {
	return map[string]any{
		"family": "gru",
		"inputs": []map[string]any{{"name": "a", "mean": 1, "std": 2}},
		"recurrent": map[string]any{"cell": "gru", "hidden": 1,
			"wx": []float32{0.5, -1, 2}, "wh": []float32{1, 0.25, -0.5}, "bx": []float32{0, 0.125, 0}, "bh": []float32{0.1875, 0, 0.375}},
		"layers": []map[string]any{{"in": 1, "out": 1, "activation": "sigmoid", "weights": []float32{2}, "bias": []float32{-1}}},
	}
}

func TestNewRefusesUnknownFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f map[string]any)
	}{
		{"top level", func(f map[string]any) { f["dropout"] = 0.5 }},
		{"recurrent", func(f map[string]any) { f["recurrent"].(map[string]any)["bias_hh_first"] = true }},
		{"layer", func(f map[string]any) { f["layers"].([]map[string]any)[0]["scale"] = 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := gru()
			tc.edit(f)
			if _, err := New(f); err == nil || !strings.Contains(err.Error(), "unknown field") {
				t.Fatalf("New() = %v, want an unknown field error", err)
			}
		})
	}
}

// TestStepGRU checks one GRU step against the documented formulas worked
// out by hand, and that Step leaves its arguments alone.
func TestStepGRU(t *testing.T) {
	m, err := New(gru())
	if err != nil {
		t.Fatal(err)
	}
	if m.StateLen() != 1 {
		t.Fatalf("StateLen() = %d, want 1", m.StateLen())
	}
	z := m.Standardize([]float32{3}) // (3−1)/2 = 1
	if !slices.Equal(z, []float64{1}) {
		t.Fatalf("Standardize = %v, want [1]", z)
	}
	state := []float64{0.5}
	out, logit, next := m.Step(state, z)
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	r := sig(0.5 + (0.5 + 0.1875))
	zg := sig(-1 + 0.125 + 0.25*0.5)
	n := math.Tanh(2 + r*(-0.5*0.5+0.375))
	h := (1-zg)*n + zg*0.5
	if math.Abs(next[0]-h) > 1e-12 || math.Abs(logit-(2*h-1)) > 1e-12 || math.Abs(out-sig(2*h-1)) > 1e-12 {
		t.Fatalf("Step = %v, %v, %v; want %v, %v, %v", out, logit, next, sig(2*h-1), 2*h-1, []float64{h})
	}
	if state[0] != 0.5 || z[0] != 1 {
		t.Fatalf("Step modified its arguments: state %v, z %v", state, z)
	}
}
