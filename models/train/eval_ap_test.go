package train_test

import (
	"math"
	"testing"

	"github.com/streamscore/streamscore/models/train"
)

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
			if got := train.AveragePrecision(tc.scores, tc.y, tc.anyPositive); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("AveragePrecision = %v, want %v", got, tc.want)
			}
		})
	}
	if got := train.AveragePrecision([]float32{1, 2}, []float32{0, 0}, false); !math.IsNaN(got) {
		t.Errorf("AveragePrecision(no positives) = %v, want NaN", got)
	}
}
