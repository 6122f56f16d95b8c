package train

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// wide returns a logistic problem with cols features (every fifth on a
// shifted, scaled axis) drawn from a known logistic model, about 6%
// positives.
func wide(rows, cols int, seed uint64) *Dataset {
	r := rand.New(rand.NewPCG(seed, 3))
	d := &Dataset{Names: make([]string, cols)}
	for j := range d.Names {
		d.Names[j] = "f" + strconv.Itoa(j)
	}
	coef := make([]float64, cols)
	for j := range coef {
		coef[j] = r.NormFloat64() * 0.5
	}
	d.X = make([]float32, 0, rows*cols)
	d.Y = make([]float32, 0, rows)
	row := make([]float32, cols)
	for i := 0; i < rows; i++ {
		s := -3.0
		for j := range row {
			v := r.NormFloat64()
			s += coef[j] * v
			if j%5 == 0 {
				v = v*30 + 100
			}
			row[j] = float32(v)
		}
		var y float32
		if r.Float64() < sigmoid(s) {
			y = 1
		}
		d.Append(row, y)
	}
	return d
}

// TestLogisticObjective checks the loss against penalisedLoss and the
// gradient and Hessian against central differences.
func TestLogisticObjective(t *testing.T) {
	d := separable(300, 4)
	in := standardize(d.Names, d.X, nil)
	w := len(d.Names)
	p := w + 1
	z := zRows(d, in, 0, d.Rows(), true)
	const l2 = 0.01
	o := newLogisticObjective(z, d.Y, w, l2)
	r := rand.New(rand.NewPCG(5, 5))
	x := make([]float64, p)
	for j := range x {
		x[j] = r.NormFloat64()
	}
	if got, want := o.Func(x), penalisedLoss(z, d.Y, x, p, w, l2); math.Abs(got-want) > 1e-12*math.Abs(want) {
		t.Errorf("Func = %v, penalisedLoss = %v", got, want)
	}
	grad := make([]float64, p)
	o.Grad(grad, x)
	var hess mat.SymDense
	hess.ReuseAsSym(p)
	o.Hess(&hess, x)
	const h = 1e-5
	xp, xm := make([]float64, p), make([]float64, p)
	gp, gm := make([]float64, p), make([]float64, p)
	for j := 0; j < p; j++ {
		copy(xp, x)
		copy(xm, x)
		xp[j] += h
		xm[j] -= h
		if fd := (o.Func(xp) - o.Func(xm)) / (2 * h); math.Abs(fd-grad[j]) > 1e-6 {
			t.Errorf("grad[%d] = %v, central difference %v", j, grad[j], fd)
		}
		o.Grad(gp, xp)
		o.Grad(gm, xm)
		for i := 0; i < p; i++ {
			if fd := (gp[i] - gm[i]) / (2 * h); math.Abs(fd-hess.At(i, j)) > 1e-6 {
				t.Errorf("hess[%d,%d] = %v, central difference %v", i, j, hess.At(i, j), fd)
			}
		}
	}
}

// TestLogisticOptimum checks that the fitted coefficients are the minimum
// of the penalised loss: its gradient vanishes up to the float32 rounding
// of the stored weights.
func TestLogisticOptimum(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *Dataset
	}{
		{"separable", separable(4000, 6)},
		{"xor", xor(4000, 3)},
		{"wide", wide(5000, 34, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Logistic(context.Background(), "lr", 1, tc.d)
			if err != nil {
				t.Fatal(err)
			}
			nt := f.Training["rows_train"].(int)
			w := len(tc.d.Names)
			beta := make([]float64, w+1)
			for j, v := range f.Layers[0].Weights {
				beta[j] = float64(v)
			}
			beta[w] = float64(f.Layers[0].Bias[0])
			o := newLogisticObjective(zRows(tc.d, f.Inputs, 0, nt, true), tc.d.Y[:nt], w, f.Training["l2"].(float64))
			grad := make([]float64, w+1)
			o.Grad(grad, beta)
			for j, g := range grad {
				if math.Abs(g) > 1e-5 {
					t.Errorf("gradient[%d] = %g at the fitted coefficients", j, g)
				}
			}
			if got, want := f.Training["termination"], "GradientThreshold"; got != want {
				t.Errorf("termination = %v, want %v", got, want)
			}
			if it := f.Training["iterations"].(int); it < 1 || it > 30 {
				t.Errorf("iterations = %d", it)
			}
		})
	}
}

func TestLogisticIterationCap(t *testing.T) {
	var steps []int
	cap2 := func(c *config) error { c.maxIter = 2; return nil }
	f, err := Logistic(context.Background(), "lr", 1, separable(4000, 6), cap2,
		WithProgress(func(done, total int) { steps = append(steps, done, total) }))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Training["iterations"], 2; got != want {
		t.Errorf("iterations = %v, want %v", got, want)
	}
	if got, want := f.Training["termination"], "IterationLimit"; got != want {
		t.Errorf("termination = %v, want %v", got, want)
	}
	if got, want := steps, []int{1, 2, 2, 2}; !slices.Equal(got, want) {
		t.Errorf("progress = %v, want %v", got, want)
	}
}

func TestLogisticCancelDuringFit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err := Logistic(ctx, "lr", 1, separable(4000, 6), WithProgress(func(done, total int) {
		calls++
		if done == 1 {
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Errorf("progress called %d times, want 1 (stop after the cancelling step)", calls)
	}
}

func TestMetricsAP(t *testing.T) {
	m := metrics([]float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, 0.3, 0.5, true)
	if math.Abs(m.AP-5.0/6) > 1e-12 {
		t.Errorf("AP = %v, want 5/6", m.AP)
	}
	if got, want := m.Map()["ap"], round(5.0/6); got != want {
		t.Errorf(`Map()["ap"] = %v, want %v`, got, want)
	}
	v := metrics([]float32{0.1, 0.9, 0.2, 0.3}, []float32{0.3, 0, -1, 0}, 0.2, 0.5, false)
	if math.Abs(v.AP-0.25) > 1e-12 {
		t.Errorf("value AP = %v, want 0.25", v.AP)
	}
}

// penalisedLoss is the mean log loss of the rows of z (stride p, intercept
// last) plus l2/2·|w|² over the first nw coefficients.
func penalisedLoss(z []float64, y []float32, beta []float64, p, nw int, l2 float64) float64 {
	var sum float64
	for r := range y {
		row := z[r*p : (r+1)*p]
		var s float64
		for j, v := range row {
			s += v * beta[j]
		}
		if y[r] > 0.5 {
			sum += softplus(-s)
		} else {
			sum += softplus(s)
		}
	}
	var reg float64
	for _, b := range beta[:nw] {
		reg += b * b
	}
	return sum/float64(len(y)) + l2/2*reg
}

func BenchmarkLogistic(b *testing.B) {
	ctx := context.Background()
	for _, size := range []struct{ rows, cols int }{{20000, 6}, {300000, 34}} {
		d := wide(size.rows, size.cols, 11)
		b.Run(strconv.Itoa(size.rows)+"x"+strconv.Itoa(size.cols), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Logistic(ctx, "lr", 1, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
