package train

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/streamscore/streamscore/models"
)

// Logistic fits an L2-regularised logistic regression by Newton's method
// (iteratively reweighted least squares, gonum mat for the Hessian solve)
// on the head of d and returns the model file (family "logistic"), with
// thresholds and validation metrics from the held-out tail. Targets are 0/1.
// Rows are not class-weighted: maximum likelihood keeps the scores
// calibrated probabilities. Call File.Encode to get the bytes. Cancelling
// ctx stops the fit between Newton steps.
func Logistic(ctx context.Context, name string, version int, d *Dataset, opts ...Option) (*models.File, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !c.l2Set {
		c.l2 = 1e-4
	}
	if err := d.check(true); err != nil {
		return nil, fmt.Errorf("train logistic: %w", err)
	}
	nt, err := split(d, &c)
	if err != nil {
		return nil, fmt.Errorf("train logistic: %w", err)
	}
	pos := countPositives(d.Y[:nt])
	if pos == 0 || pos == nt {
		return nil, fmt.Errorf("train logistic: %d positives in %d training rows, need both classes: %w", pos, nt, ErrData)
	}
	in := standardize(d, nt)
	w := len(d.Names)
	p := w + 1 // weights + intercept (last)
	z := zRows(d, in, 0, nt, true)
	Z := mat.NewDense(nt, p, z)
	beta := make([]float64, p)
	base := float64(pos) / float64(nt)
	beta[w] = math.Log(base / (1 - base))

	zw := mat.NewDense(nt, p, nil)
	var H mat.Dense
	grad := make([]float64, p)
	trial := make([]float64, p)
	iters := 0
	for iters < c.maxIter {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train logistic: %w", err)
		}
		iters++
		clear(grad)
		for r := 0; r < nt; r++ {
			row := z[r*p : (r+1)*p]
			var s float64
			for j, v := range row {
				s += v * beta[j]
			}
			pr := sigmoid(s)
			e := pr - float64(d.Y[r])
			wt := math.Max(pr*(1-pr), 1e-10)
			dst := zw.RawRowView(r)
			for j, v := range row {
				grad[j] += e * v
				dst[j] = v * wt
			}
		}
		H.Mul(Z.T(), zw)
		inv := 1 / float64(nt)
		H.Scale(inv, &H)
		for j := 0; j < p; j++ {
			grad[j] *= inv
			if j < w {
				grad[j] += c.l2 * beta[j]
				H.Set(j, j, H.At(j, j)+c.l2)
			}
		}
		var step mat.VecDense
		if err := step.SolveVec(&H, mat.NewVecDense(p, grad)); err != nil {
			// Singular Hessian (e.g. duplicated columns without L2): add a ridge.
			for j := 0; j < p; j++ {
				H.Set(j, j, H.At(j, j)+1e-6)
			}
			if err := step.SolveVec(&H, mat.NewVecDense(p, grad)); err != nil {
				return nil, fmt.Errorf("train logistic: solve newton step: %w", err)
			}
		}
		// Damped Newton: halve the step until the penalised loss does not
		// increase (plain Newton diverges on nearly separable data with
		// heavy-tailed features).
		cur := penalisedLoss(z, d.Y[:nt], beta, p, w, c.l2)
		t := 1.0
		for ; t > 1e-6; t /= 2 {
			for j := range trial {
				trial[j] = beta[j] - t*step.AtVec(j)
			}
			if penalisedLoss(z, d.Y[:nt], trial, p, w, c.l2) <= cur+1e-12 {
				break
			}
		}
		var maxStep float64
		for j := range beta {
			maxStep = math.Max(maxStep, math.Abs(trial[j]-beta[j]))
		}
		copy(beta, trial)
		c.report(iters, c.maxIter)
		if maxStep < 1e-6 {
			break
		}
	}
	layer := models.Layer{In: w, Out: 1, Activation: "sigmoid", Weights: make([]float32, w), Bias: []float32{float32(beta[w])}}
	for j := 0; j < w; j++ {
		layer.Weights[j] = float32(beta[j])
	}
	f := &models.File{
		Name: name, Family: models.FamilyLogistic, Version: version, Output: models.OutputProbability,
		Inputs: in, Layers: []models.Layer{layer},
	}
	md := map[string]any{
		"algorithm":   "logistic regression, Newton/IRLS",
		"l2":          c.l2,
		"iterations":  iters,
		"class_ratio": base,
	}
	return finish(f, d, nt, &c, md)
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

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}
