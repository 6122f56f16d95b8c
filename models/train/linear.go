package train

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/streamscore/streamscore/models"
)

// Linear fits a ridge regression (normal equations (ZᵀZ/n + λI)β = Zᵀy/n in
// standardised units, intercept not penalised, solved with gonum mat) on
// the head of d and returns the model file (family "linear", output
// "value"). The thresholds are quantiles of the validation predictions (see
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
	md := map[string]any{"algorithm": "ridge regression, normal equations", "l2": c.l2}
	return finishDense(f, d, nt, &c, md)
}
