package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"

	"github.com/streamscore/streamscore/models"
)

// Convergence of the logistic fit: stop when the largest gradient component
// of the penalised mean loss is below logisticGradTol, or when the loss has
// not improved by a relative logisticFuncTol for two Newton steps (the
// optimum at float64 precision).
const (
	logisticGradTol = 1e-9
	logisticFuncTol = 1e-13
)

// Logistic fits an L2-regularised logistic regression by Newton's method
// (gonum optimize.Newton with an exact Hessian and a line search) on the
// head of d and returns the model file (family "logistic"), with thresholds
// and validation metrics from the held-out tail. Targets are 0/1. Rows are
// not class-weighted: maximum likelihood keeps the scores calibrated
// probabilities. The intercept is not penalised. The fit stops after 30
// Newton steps if it has not converged first; the metadata records the
// steps ("iterations"), the final loss and why it stopped ("termination").
// Call File.Encode to get the bytes. Cancelling ctx stops the fit between
// evaluations of the objective (one pass over the rows each).
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
	in := standardize(d.Names, d.X[:nt*len(d.Names)], nil)
	w := len(d.Names)
	p := w + 1 // weights + intercept (last)
	obj := newLogisticObjective(zRows(d, in, 0, nt, true), d.Y[:nt], w, c.l2)
	beta0 := make([]float64, p)
	base := float64(pos) / float64(nt)
	beta0[w] = math.Log(base / (1 - base))

	prob := optimize.Problem{
		Func: obj.Func,
		Grad: obj.Grad,
		Hess: obj.Hess,
		Status: func() (optimize.Status, error) {
			if err := ctx.Err(); err != nil {
				return optimize.Failure, err
			}
			return optimize.NotTerminated, nil
		},
	}
	rec := &progressRecorder{c: &c}
	settings := &optimize.Settings{
		GradientThreshold: logisticGradTol,
		Converger:         &optimize.FunctionConverge{Relative: logisticFuncTol, Iterations: 2},
		// The starting point is major iteration 1, so maxIter steps need
		// maxIter+1.
		MajorIterations: c.maxIter + 1,
		Recorder:        rec,
	}
	// Backtracking halves the Newton step until the loss decreases enough
	// (Armijo): plain Newton diverges on nearly separable data with
	// heavy-tailed features.
	method := &optimize.Newton{Linesearcher: &optimize.Backtracking{}}
	res, err := optimize.Minimize(prob, beta0, settings, method)
	termination := ""
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("train logistic: %w", ctx.Err())
	case err == nil:
		termination = res.Status.String()
	case res != nil && (errors.Is(err, optimize.ErrNoProgress) || errors.Is(err, optimize.ErrLinesearcherFailure)):
		// The line search cannot improve on the best point found: the
		// optimum to float64 precision. Keep it.
		termination = err.Error()
	default:
		return nil, fmt.Errorf("train logistic: minimize: %w", err)
	}
	beta := res.X
	iters := max(res.MajorIterations-1, 0)
	if iters > rec.done {
		// Minimize does not record the step that ends the fit.
		c.report(iters, c.maxIter)
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
		"algorithm":        "logistic regression, Newton (gonum optimize)",
		"l2":               c.l2,
		"iterations":       iters,
		"func_evaluations": res.FuncEvaluations,
		"termination":      termination,
		"loss":             round(res.F),
		"class_ratio":      base,
	}
	return finishDense(f, d, nt, &c, md)
}

// progressRecorder reports each Newton step to WithProgress. Major
// iteration 1 is the starting point, so step k is major iteration k+1.
type progressRecorder struct {
	c    *config
	done int // steps reported
}

func (*progressRecorder) Init() error { return nil }

func (r *progressRecorder) Record(_ *optimize.Location, op optimize.Operation, st *optimize.Stats) error {
	if op == optimize.MajorIteration && st.MajorIterations > 1 {
		r.done = st.MajorIterations - 1
		r.c.report(r.done, r.c.maxIter)
	}
	return nil
}

// logisticObjective is an optimize.Problem: the mean log
// loss of the rows of z (intercept last) plus l2/2·|w|² over the first nw
// coefficients, with its gradient and Hessian. It keeps the scores of the
// last x it saw, since gonum asks for the loss, gradient and Hessian at the
// same point one after another.
type logisticObjective struct {
	z   *mat.Dense // rows × p: standardised rows, intercept column last
	y   []float32
	nw  int
	l2  float64
	inv float64 // 1 / rows

	x  []float64     // point of s and pr; nil before the first call
	s  *mat.VecDense // z·x, the scores
	pr []float64     // sigmoid(s)
	e  *mat.VecDense // pr − y
	bt *mat.Dense    // p × hessBlock scratch: a block of rows, transposed and weighted
}

// hessBlock is the number of rows per SYRK in Hess: a p × hessBlock block
// stays in cache, while one SYRK over all rows streams them once per pair
// of coefficients.
const hessBlock = 512

// newLogisticObjective takes z as zRows returns it: rows × (nw+1), row-major.
func newLogisticObjective(z []float64, y []float32, nw int, l2 float64) *logisticObjective {
	n, p := len(y), nw+1
	return &logisticObjective{
		z: mat.NewDense(n, p, z), y: y, nw: nw, l2: l2, inv: 1 / float64(n),
		s: mat.NewVecDense(n, nil), pr: make([]float64, n), e: mat.NewVecDense(n, nil),
	}
}

// at computes the scores and probabilities at x unless they are cached.
func (o *logisticObjective) at(x []float64) {
	if o.x != nil && slices.Equal(o.x, x) {
		return
	}
	o.x = append(o.x[:0], x...)
	o.s.MulVec(o.z, mat.NewVecDense(len(x), o.x))
	for r := range o.pr {
		o.pr[r] = sigmoid(o.s.AtVec(r))
	}
}

func (o *logisticObjective) Func(x []float64) float64 {
	o.at(x)
	var sum float64
	for r, yr := range o.y {
		s := o.s.AtVec(r)
		if yr > 0.5 {
			sum += softplus(-s)
		} else {
			sum += softplus(s)
		}
	}
	var reg float64
	for _, b := range x[:o.nw] {
		reg += b * b
	}
	return sum*o.inv + o.l2/2*reg
}

func (o *logisticObjective) Grad(grad, x []float64) {
	o.at(x)
	for r, yr := range o.y {
		o.e.SetVec(r, o.pr[r]-float64(yr))
	}
	mat.NewVecDense(len(grad), grad).MulVec(o.z.T(), o.e)
	for j := range grad {
		grad[j] *= o.inv
		if j < o.nw {
			grad[j] += o.l2 * x[j]
		}
	}
}

// Hess sets hess to zᵀ·diag(pr·(1−pr))·z / rows plus l2 on the weights'
// diagonal, one block of rows at a time.
func (o *logisticObjective) Hess(hess *mat.SymDense, x []float64) {
	o.at(x)
	n, p := o.z.Dims()
	if o.bt == nil {
		o.bt = mat.NewDense(p, min(hessBlock, n), nil)
	}
	for c := 0; c < n; c += hessBlock {
		m := min(hessBlock, n-c)
		bt := o.bt.Slice(0, p, 0, m).(*mat.Dense)
		raw := bt.RawMatrix()
		for k := 0; k < m; k++ {
			pr := o.pr[c+k]
			sw := math.Sqrt(math.Max(pr*(1-pr), 1e-10))
			for j, v := range o.z.RawRowView(c + k) {
				raw.Data[j*raw.Stride+k] = v * sw
			}
		}
		if c == 0 {
			hess.SymOuterK(o.inv, bt)
		} else {
			hess.SymRankK(hess, o.inv, bt)
		}
	}
	for j := 0; j < o.nw; j++ {
		hess.SetSym(j, j, hess.At(j, j)+o.l2)
	}
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}
