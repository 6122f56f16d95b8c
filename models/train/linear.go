package train

import (
	"context"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"

	"github.com/streamscore/streamscore/models"
)

// Linear fits a linear model on the head of d and returns the model file
// (family "linear", output "value"). With the identity link (the default,
// WithLink) it is a ridge regression (normal equations (ZᵀZ/n + λI)β =
// Zᵀy/n in standardised units, intercept not penalised, solved with gonum
// mat), whose value can go negative; with the log link the value is
// exp(z·w + b), fitted as linearLog says, and is never negative. The thresholds are quantiles of the validation predictions (see
// WithValueQuantiles). For the shipped "risk" model the target is the loss
// of the transaction (its amount if fraud, else 0), so the score is an
// expected loss in currency units.
func Linear(ctx context.Context, name string, version int, d *Dataset, opts ...Option) (*models.File, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !c.l2Set {
		c.l2 = 1e-4
	}
	if err := d.check(false); err != nil {
		return nil, fmt.Errorf("train linear: %w", err)
	}
	nt, err := split(d, &c)
	if err != nil {
		return nil, fmt.Errorf("train linear: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("train linear: %w", err)
	}
	in := standardize(d.Names, d.X[:nt*len(d.Names)], nil)
	if c.link == LinkLog || c.link == LinkProbAmount {
		return linearLog(ctx, name, version, d, &c, nt, in)
	}
	w := len(d.Names)
	p := w + 1
	z := zRows(d, in, 0, nt, true)
	Z := mat.NewDense(nt, p, z)
	y := make([]float64, nt)
	for i := range y {
		y[i] = float64(d.Y[i])
	}
	var A mat.Dense
	A.Mul(Z.T(), Z)
	inv := 1 / float64(nt)
	A.Scale(inv, &A)
	for j := 0; j < w; j++ {
		A.Set(j, j, A.At(j, j)+c.l2)
	}
	var b mat.VecDense
	b.MulVec(Z.T(), mat.NewVecDense(nt, y))
	b.ScaleVec(inv, &b)
	var beta mat.VecDense
	if err := beta.SolveVec(&A, &b); err != nil {
		return nil, fmt.Errorf("train linear: solve normal equations: %w", err)
	}
	c.report(1, 1)
	layer := models.Layer{In: w, Out: 1, Activation: "identity", Weights: make([]float32, w), Bias: []float32{float32(beta.AtVec(w))}}
	for j := 0; j < w; j++ {
		layer.Weights[j] = float32(beta.AtVec(j))
	}
	f := &models.File{
		Name: name, Family: models.FamilyLinear, Version: version, Output: models.OutputValue,
		Inputs: in, Layers: []models.Layer{layer},
	}
	md := map[string]any{"algorithm": "ridge regression, normal equations", "l2": c.l2, "link": LinkIdentity}
	return finishDense(f, d, nt, &c, md)
}

// linearLog fits the log-link model E[y|x] = exp(z·w + b) by Newton's
// method on the Poisson quasi-likelihood, mean(μ − y·η) + λ/2·|w|² with
// η = z·w + b and μ = exp(η) (the intercept not penalised), which needs
// only y >= 0 and E[y|x] right, not a Poisson y: for a loss (the amount if
// fraud, else 0) μ is the expected loss, and it is never negative. Starts
// at w = 0, b = log(mean y); each step is halved until the objective
// falls; stops when it falls by less than 1e-10 relatively, or after
// WithMaxIter steps.
//
// With LinkProbAmount the same Newton method fits a logistic regression of
// target > 0 (the Bernoulli likelihood: mean(log(1+e^η) − y·η), weights
// μ(1−μ) with μ = sigmoid(η)), started at b = logit(share of positives);
// the model's value is then sigmoid(η) × the row's amount
// (models.ActivationSigmoidAmount).
func linearLog(ctx context.Context, name string, version int, d *Dataset, c *config, nt int, in []models.Input) (*models.File, error) {
	w := len(d.Names)
	p := w + 1
	z := zRows(d, in, 0, nt, true)
	bern := c.link == LinkProbAmount
	what := "train linear (log link)"
	if bern {
		what = "train linear (probability × amount)"
		if !slices.Contains(d.Names, models.AmountInput) {
			return nil, fmt.Errorf("%s: no feature %q to multiply by: %w", what, models.AmountInput, ErrData)
		}
	}
	var ysum float64
	ys := make([]float64, nt) // the fitted target: y, or 1 if y > 0 (Bernoulli)
	for i := 0; i < nt; i++ {
		if d.Y[i] < 0 {
			return nil, fmt.Errorf("%s: row %d target %v < 0: it fits non-negative targets: %w", what, i, d.Y[i], ErrData)
		}
		ys[i] = float64(d.Y[i])
		if bern && ys[i] > 0 {
			ys[i] = 1
		}
		ysum += ys[i]
	}
	if ysum <= 0 {
		return nil, fmt.Errorf("%s: every target is 0: %w", what, ErrData)
	}
	inv := 1 / float64(nt)
	beta := make([]float64, p)
	beta[w] = math.Log(ysum * inv)
	if bern {
		if ysum >= float64(nt) {
			return nil, fmt.Errorf("%s: every target is positive: %w", what, ErrData)
		}
		beta[w] = math.Log(ysum / (float64(nt) - ysum))
	}
	// mean and weight of η, and the loss term of a row with target y.
	mean := func(e float64) float64 {
		if bern {
			return 1 / (1 + math.Exp(-e))
		}
		return math.Exp(e)
	}
	weight := func(mu float64) float64 {
		if bern {
			return mu * (1 - mu)
		}
		return mu
	}
	loss := func(e, y float64) float64 {
		if bern {
			// log(1 + e^η) − y·η, without overflow.
			return max(e, 0) + math.Log1p(math.Exp(-math.Abs(e))) - y*e
		}
		return math.Exp(e) - y*e
	}
	eta := func(b []float64, r int) float64 {
		row := z[r*p : (r+1)*p]
		var e float64
		for j, v := range row {
			e += v * b[j]
		}
		return min(e, 60) // exp(60) ≈ 1e26: far above any loss, never Inf
	}
	objective := func(b []float64) float64 {
		var o float64
		for r := 0; r < nt; r++ {
			o += loss(eta(b, r), ys[r])
		}
		o *= inv
		for j := 0; j < w; j++ {
			o += c.l2 / 2 * b[j] * b[j]
		}
		return o
	}
	cur := objective(beta)
	wz := make([]float64, nt*p)
	grad := make([]float64, p)
	steps := 0
	for it := 0; it < c.maxIter; it++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		clear(grad)
		for r := 0; r < nt; r++ {
			mu := mean(eta(beta, r))
			res := (mu - ys[r]) * inv
			sq := math.Sqrt(weight(mu) * inv)
			row := z[r*p : (r+1)*p]
			for j, v := range row {
				grad[j] += res * v
				wz[r*p+j] = sq * v
			}
		}
		for j := 0; j < w; j++ {
			grad[j] += c.l2 * beta[j]
		}
		WZ := mat.NewDense(nt, p, wz)
		var H mat.SymDense
		H.SymOuterK(1, WZ.T())
		for j := 0; j < w; j++ {
			H.SetSym(j, j, H.At(j, j)+c.l2)
		}
		var step mat.VecDense
		if err := step.SolveVec(&H, mat.NewVecDense(p, grad)); err != nil {
			return nil, fmt.Errorf("%s: solve newton step: %w", what, err)
		}
		next := make([]float64, p)
		t, improved := 1.0, false
		for k := 0; k < 30; k++ {
			for j := range next {
				next[j] = beta[j] - t*step.AtVec(j)
			}
			if o := objective(next); o < cur {
				improved = true
				gain := (cur - o) / math.Max(math.Abs(cur), 1e-300)
				beta, cur = next, o
				steps++
				c.report(it+1, c.maxIter)
				if gain < 1e-10 {
					it = c.maxIter
				}
				break
			}
			t /= 2
		}
		if !improved {
			break
		}
	}
	act := models.ActivationExp
	if bern {
		act = models.ActivationSigmoidAmount
	}
	layer := models.Layer{In: w, Out: 1, Activation: act, Weights: make([]float32, w), Bias: []float32{float32(beta[w])}}
	for j := 0; j < w; j++ {
		layer.Weights[j] = float32(beta[j])
	}
	f := &models.File{
		Name: name, Family: models.FamilyLinear, Version: version, Output: models.OutputValue,
		Inputs: in, Layers: []models.Layer{layer},
	}
	md := map[string]any{"algorithm": "log-link regression: Newton on the Poisson quasi-likelihood, step halving", "l2": c.l2,
		"link": LinkLog, "newton_steps": steps}
	if bern {
		md["algorithm"] = "probability × amount: logistic regression of target > 0 by Newton on the Bernoulli likelihood, step halving; value = sigmoid × amount"
		md["link"] = LinkProbAmount
	}
	return finishDense(f, d, nt, c, md)
}
