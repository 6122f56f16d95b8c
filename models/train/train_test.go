package train

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// separable returns a problem where fraud = x0 + 0.5·x1 − x2 > 2.2 (about
// 3% positives), with three noise columns and a column scale spread.
func separable(rows int, seed uint64) *Dataset {
	r := rand.New(rand.NewPCG(seed, 1))
	d := &Dataset{Names: []string{"a", "b", "c", "n1", "n2", "n3"}}
	row := make([]float32, 6)
	for i := 0; i < rows; i++ {
		for j := range row {
			row[j] = float32(r.NormFloat64())
		}
		row[1] *= 100
		row[4] = row[4]*50 + 1000
		s := float64(row[0]) + 0.5*float64(row[1])/100 - float64(row[2])
		var y float32
		if s > 2.2 {
			y = 1
		}
		d.Append(row, y)
	}
	return d
}

// xor returns a problem no linear model can separate: fraud when a and b
// have the same sign and |a|,|b| > 0.5.
func xor(rows int, seed uint64) *Dataset {
	r := rand.New(rand.NewPCG(seed, 2))
	d := &Dataset{Names: []string{"a", "b", "n"}}
	for i := 0; i < rows; i++ {
		a, b := r.NormFloat64(), r.NormFloat64()
		var y float32
		if a*b > 0.25 && math.Abs(a) > 0.5 && math.Abs(b) > 0.5 {
			y = 1
		}
		d.Append([]float32{float32(a), float32(b), float32(r.NormFloat64())}, y)
	}
	return d
}

func encodeParse(t *testing.T, f *models.File) (*models.Model, []byte) {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}

func TestClassifiersLearnSeparable(t *testing.T) {
	ctx := context.Background()
	train, test := separable(20000, 1), separable(5000, 2)
	tests := []struct {
		name string
		fit  func() (*models.File, error)
	}{
		{"logistic", func() (*models.File, error) { return Logistic(ctx, "fraud_lr", 1, train, WithSeed(3)) }},
		{"mlp", func() (*models.File, error) {
			return MLP(ctx, "fraud", 1, train, WithSeed(3), WithHidden(16, 8), WithEpochs(15))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.fit()
			if err != nil {
				t.Fatal(err)
			}
			m, _ := encodeParse(t, f)
			mt, err := Evaluate(m, test)
			if err != nil {
				t.Fatal(err)
			}
			if mt.AUC <= 0.95 {
				t.Errorf("test AUC = %.4f, want > 0.95", mt.AUC)
			}
			if mt.PrecisionAtAlert < 0.5 || mt.RecallAtAlert < 0.5 {
				t.Errorf("at alert: precision %.3f recall %.3f, want both >= 0.5", mt.PrecisionAtAlert, mt.RecallAtAlert)
			}
			review, alert := m.Thresholds()
			if !(review <= alert) {
				t.Errorf("review %v > alert %v", review, alert)
			}
			if _, ok := m.Training()["validation"]; !ok {
				t.Errorf("training metadata lacks validation metrics: %v", m.Training())
			}
			// Calibration: the mean score is close to the base rate.
			scores, _ := Predict(m, test)
			var mean float64
			for _, s := range scores {
				mean += float64(s)
			}
			mean /= float64(len(scores))
			base := float64(countPositives(test.Y)) / float64(test.Rows())
			if math.Abs(mean-base) > 0.5*base {
				t.Errorf("mean score %.4f, base rate %.4f: not calibrated", mean, base)
			}
			t.Logf("%s: %+v", tc.name, mt)
		})
	}
}

func TestMLPLearnsNonLinear(t *testing.T) {
	ctx := context.Background()
	train, test := xor(20000, 3), xor(5000, 4)
	f, err := MLP(ctx, "fraud", 1, train, WithSeed(5), WithHidden(16, 8), WithEpochs(20))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := encodeParse(t, f)
	mt, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := Logistic(ctx, "lr", 1, train)
	if err != nil {
		t.Fatal(err)
	}
	lm, _ := encodeParse(t, lf)
	lmt, _ := Evaluate(lm, test)
	if mt.AUC < 0.95 || mt.AUC < lmt.AUC+0.1 {
		t.Errorf("mlp AUC %.4f, logistic %.4f: want mlp > 0.95 and well above logistic", mt.AUC, lmt.AUC)
	}
}

func TestDeterministic(t *testing.T) {
	ctx := context.Background()
	d := separable(4000, 6)
	fits := []struct {
		name string
		fit  func(seed int64) (*models.File, error)
	}{
		{"mlp", func(seed int64) (*models.File, error) {
			return MLP(ctx, "fraud", 1, d, WithSeed(seed), WithHidden(8), WithEpochs(3))
		}},
		{"logistic", func(seed int64) (*models.File, error) { return Logistic(ctx, "lr", 1, d, WithSeed(seed)) }},
	}
	for _, tc := range fits {
		t.Run(tc.name, func(t *testing.T) {
			var first []byte
			for i := 0; i < 2; i++ {
				f, err := tc.fit(7)
				if err != nil {
					t.Fatal(err)
				}
				_, b := encodeParse(t, f)
				if i == 0 {
					first = b
				} else if !bytes.Equal(first, b) {
					t.Errorf("two fits with seed 7 differ")
				}
			}
			if tc.name == "mlp" {
				f, _ := tc.fit(8)
				_, b := encodeParse(t, f)
				if bytes.Equal(first, b) {
					t.Errorf("seeds 7 and 8 give the same model")
				}
			}
		})
	}
}

func TestLinearRecoversCoefficients(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(9, 9))
	beta := []float64{2, -1.5, 0, 0.25}
	const intercept = 3.0
	d := &Dataset{Names: []string{"x0", "x1", "x2", "x3"}}
	for i := 0; i < 5000; i++ {
		row := []float32{float32(r.NormFloat64()), float32(r.NormFloat64()*10 + 5), float32(r.NormFloat64()), float32(r.Float64() * 100)}
		y := intercept
		for j, b := range beta {
			y += b * float64(row[j])
		}
		d.Append(row, float32(y+r.NormFloat64()*0.01))
	}
	f, err := Linear(ctx, "risk", 1, d, WithL2(0))
	if err != nil {
		t.Fatal(err)
	}
	l := f.Layers[0]
	got0 := float64(l.Bias[0])
	for j, in := range f.Inputs {
		b := float64(l.Weights[j]) / in.Std
		got0 -= b * in.Mean
		if math.Abs(b-beta[j]) > 1e-3 {
			t.Errorf("beta[%d] = %.5f, want %v", j, b, beta[j])
		}
	}
	if math.Abs(got0-intercept) > 1e-2 {
		t.Errorf("intercept = %.5f, want %v", got0, intercept)
	}
	m, _ := encodeParse(t, f)
	mt, err := Evaluate(m, d)
	if err != nil {
		t.Fatal(err)
	}
	if mt.R2 < 0.999 {
		t.Errorf("R² = %v, want > 0.999", mt.R2)
	}
	if rv, al := m.Thresholds(); !(rv < al) {
		t.Errorf("thresholds review %v, alert %v", rv, al)
	}
}

func TestDataErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		d    *Dataset
		fit  func(d *Dataset) error
	}{
		{"one class", &Dataset{Names: []string{"a"}, X: make([]float32, 100), Y: make([]float32, 100)},
			func(d *Dataset) error { _, err := Logistic(ctx, "x", 1, d); return err }},
		{"non binary", &Dataset{Names: []string{"a"}, X: make([]float32, 100), Y: append(make([]float32, 99), 2)},
			func(d *Dataset) error { _, err := MLP(ctx, "x", 1, d); return err }},
		{"ragged", &Dataset{Names: []string{"a", "b"}, X: make([]float32, 99), Y: make([]float32, 50)},
			func(d *Dataset) error { _, err := Linear(ctx, "x", 1, d); return err }},
		{"nan", &Dataset{Names: []string{"a"}, X: append(make([]float32, 99), float32(math.NaN())), Y: make([]float32, 100)},
			func(d *Dataset) error { _, err := Linear(ctx, "x", 1, d); return err }},
		{"too few", &Dataset{Names: []string{"a"}, X: make([]float32, 5), Y: make([]float32, 5)},
			func(d *Dataset) error { _, err := Linear(ctx, "x", 1, d); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.fit(tc.d); !errors.Is(err, ErrData) {
				t.Errorf("got %v, want ErrData", err)
			}
		})
	}
	if _, err := MLP(ctx, "x", 1, separable(100, 1), WithHidden(0)); err == nil {
		t.Errorf("WithHidden(0): got nil error")
	}
}

func BenchmarkMLPEpoch(b *testing.B) {
	ctx := context.Background()
	d := separable(10000, 1)
	for b.Loop() {
		if _, err := MLP(ctx, "fraud", 1, d, WithHidden(32, 16), WithEpochs(1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*8000), "ns/row")
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := separable(2000, 1)
	for name, fit := range map[string]func() error{
		"logistic": func() error { _, err := Logistic(ctx, "x", 1, d); return err },
		"linear":   func() error { _, err := Linear(ctx, "x", 1, d); return err },
		"mlp":      func() error { _, err := MLP(ctx, "x", 1, d); return err },
	} {
		if err := fit(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: got %v, want context.Canceled", name, err)
		}
	}
}
