package ranking

import (
	"math"
	"testing"
)

// positives returns y > 0.5, or y > 0 if anyPositive: the positives
// training derives from its targets.
func positives(y []float32, anyPositive bool) []bool {
	out := make([]bool, len(y))
	for i, v := range y {
		out[i] = v > 0.5 || anyPositive && v > 0
	}
	return out
}

func TestAUC(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		y      []float32
		want   float64
	}{
		{"perfect", []float32{0.1, 0.2, 0.8, 0.9}, []float32{0, 0, 1, 1}, 1},
		{"inverted", []float32{0.9, 0.8, 0.2, 0.1}, []float32{0, 0, 1, 1}, 0},
		{"ties", []float32{0.5, 0.5, 0.5, 0.5}, []float32{0, 1, 0, 1}, 0.5},
		{"mixed", []float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, 0.75},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AUC(tc.scores, positives(tc.y, false)); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("AUC = %v, want %v", got, tc.want)
			}
		})
	}
	if got := AUC([]float32{1, 2}, []bool{false, false}); !math.IsNaN(got) {
		t.Errorf("AUC(one class) = %v, want NaN", got)
	}
}

func TestAveragePrecision(t *testing.T) {
	tests := []struct {
		name        string
		scores, y   []float32
		anyPositive bool
		want        float64
	}{
		// 0.8 (pos): P 1, R ½; 0.4 (neg); 0.35 (pos): P ⅔, R 1 → ½ + ½·⅔.
		{"mixed", []float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, false, 5.0 / 6},
		{"perfect", []float32{0.1, 0.2, 0.8, 0.9}, []float32{0, 0, 1, 1}, false, 1},
		{"inverted", []float32{0.9, 0.8, 0.2, 0.1}, []float32{0, 0, 1, 1}, false, 0.5*1.0/3 + 0.5*2.0/4},
		// 0.9 (neg); the tie at 0.5 is one threshold: P ⅓, R ½; 0.1 (pos): P ½, R 1.
		{"tie", []float32{0.5, 0.5, 0.9, 0.1}, []float32{1, 0, 0, 1}, false, 0.5/3 + 0.5*0.5},
		{"all tied", []float32{0.5, 0.5, 0.5, 0.5}, []float32{0, 1, 0, 1}, false, 0.5},
		// Value outputs: positives are y > 0.
		{"value", []float32{0.1, 0.9, 0.2, 0.3}, []float32{0, 2.5, -1, 0.3}, true, 1},
		{"value as probability", []float32{0.1, 0.9, 0.2, 0.3}, []float32{0, 2.5, -1, 0.3}, false, 1},
		{"value low", []float32{0.1, 0.9, 0.2, 0.3}, []float32{0.3, 0, -1, 0}, true, 0.25},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AveragePrecision(tc.scores, positives(tc.y, tc.anyPositive)); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("AveragePrecision = %v, want %v", got, tc.want)
			}
		})
	}
	if got := AveragePrecision([]float32{1, 2}, []bool{false, false}); !math.IsNaN(got) {
		t.Errorf("AveragePrecision(no positives) = %v, want NaN", got)
	}
}

func TestLengthMismatchPanics(t *testing.T) {
	for name, fn := range map[string]func([]float32, []bool) float64{"AUC": AUC, "AveragePrecision": AveragePrecision} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s with 2 scores and 1 truth did not panic", name)
				}
			}()
			fn([]float32{1, 2}, []bool{true})
		})
	}
}
