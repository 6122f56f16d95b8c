package models

import (
	"fmt"
	"math"
	"slices"

	"github.com/streamscore/streamscore/models/internal/kernel"
)

// Scorer scores batches of feature rows laid out as one stream's feature
// vector. It owns scratch memory (the standardised input matrix, layer
// outputs, attribution buffers), so it is NOT safe for concurrent use: make
// one per worker with [Model.Bind]. After its buffers have grown to the
// largest batch, Score, Decide and Reasons do not allocate.
type Scorer struct {
	m     *Model
	width int   // len of the stream's feature vector
	cols  []int // cols[i] = column of model input i in the stream's row
	// first is cols[0] when the inputs are consecutive columns
	// (cols[i] = first+i: the engine's case, the model trained on the
	// spec's features in order), else -1.
	first int
	// amtCol is the row's amount_log1p column when the output is
	// probability × amount (sigmoid_amount), else -1.
	amtCol int

	xs []float32 // rows × len(inputs), standardised
	// xsOf and xsRows are the x (its first element) and rows that xs was
	// standardised from, for ScoreFrom's check.
	xsOf   *float32
	xsRows int
	bufs   [2][]float32 // ping-pong outputs of hidden layers

	// Reasons scratch, one row at a time, float64.
	acts    [][]float64 // acts[0] = z, acts[l+1] = output of layer l
	pres    [][]float64 // pre-activation of layer l
	z       []float64   // the row's standardised input
	grad    []float64
	grad2   []float64
	contrib []float64
	order   []int
	u, usum []float64    // MLP reasons: z·W of the first layer, summed gradients at its pre-activation
	pwl     []pwlScratch // exact integrated gradients (reasons_exact.go), nil unless m.exactIG()

	// Sequence families (seq.go).
	prev     []float32 // rows × StateSize: each row's state before its step
	prevRows int
	col      []float32 // CNN im2col: rows·L × Kernel·In
	convOut  []float32 // rows·L × C
	headIn   []float32 // rows × head input
	gx       []float32 // rows × G·H: input part of the gates
	g        []float32 // wave rows × G·H
	hp       []float32 // wave rows × StateSize
	bn       []float32 // wave rows × H
	tc       []float32 // wave rows × H
	wave     map[*float32]int
	waveOf   []int
	idx      []int
	seq      *seqGrad

	// FamilyGBDT (trees.go, treeshap.go).
	xrow []float32 // one row's inputs, raw
	shap treeSHAP
}

// Bind maps the model's inputs to the columns of a stream's feature layout
// (features[j] is the name of column j) and returns a Scorer for rows of
// len(features) values. The error names every model input missing from
// features and wraps [ErrMissingInput].
func (m *Model) Bind(features []string) (*Scorer, error) {
	pos := make(map[string]int, len(features))
	for j, f := range features {
		if _, dup := pos[f]; !dup {
			pos[f] = j
		}
	}
	s := &Scorer{m: m, width: len(features), cols: make([]int, len(m.inputs))}
	var missing []string
	for i, in := range m.inputs {
		j, ok := pos[in]
		if !ok {
			missing = append(missing, in)
			continue
		}
		s.cols[i] = j
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("bind model %s: inputs %q not in the %d stream features: %w", m.ident, missing, len(features), ErrMissingInput)
	}
	s.first = -1
	if len(s.cols) > 0 {
		s.first = s.cols[0]
		for i, c := range s.cols {
			if c != s.first+i {
				s.first = -1
				break
			}
		}
	}
	s.amtCol = -1
	if m.trees == nil && m.layers[len(m.layers)-1].sigAmt {
		s.amtCol = s.cols[slices.Index(m.inputs, AmountInput)]
	}
	if m.trees != nil {
		s.z = make([]float64, len(m.inputs))
		s.contrib = make([]float64, len(m.inputs))
		s.order = make([]int, len(m.inputs))
		s.xrow = make([]float32, len(m.inputs))
		return s, nil
	}
	n := max(len(m.inputs), m.layers[0].in)
	if m.rec != nil {
		n = max(n, m.rec.gates*m.rec.hidden)
	}
	s.acts = append(s.acts, make([]float64, n))
	for _, l := range m.layers {
		s.pres = append(s.pres, make([]float64, l.out))
		s.acts = append(s.acts, make([]float64, l.out))
		n = max(n, l.out)
	}
	s.grad = make([]float64, n)
	s.grad2 = make([]float64, n)
	s.u = make([]float64, m.layers[0].out)
	s.usum = make([]float64, m.layers[0].out)
	if m.exactIG() {
		s.pwl = newPWLScratch(m)
	}
	s.z = make([]float64, len(m.inputs))
	s.contrib = make([]float64, len(m.inputs))
	s.order = make([]int, len(m.inputs))
	return s, nil
}

// Model returns the model the scorer runs.
func (s *Scorer) Model() *Model { return s.m }

// Thresholds returns the model's review and alert cut-offs.
func (s *Scorer) Thresholds() (review, alert float32) { return s.m.review, s.m.alert }

// Decide maps a score to a decision: score >= alert is DecisionAlert,
// score >= review DecisionReview, anything lower DecisionAllow. A NaN score
// (a non-finite feature reached the model) is DecisionReview, so that it is
// looked at rather than silently allowed.
func (s *Scorer) Decide(score float32) Decision {
	switch {
	case score >= s.m.alert:
		return DecisionAlert
	case score >= s.m.review:
		return DecisionReview
	case score != score:
		return DecisionReview
	}
	return DecisionAllow
}

// grow returns buf with length n, reallocating only when it is too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n, n+n/4)
	}
	return buf[:n]
}

// Score scores rows feature rows: x is rows × width row-major (width =
// len(features) given to Bind), out receives one score per row. It gathers
// and standardises the model's inputs into a contiguous rows × inputs
// matrix, then runs each layer through the GEMM kernel with its activation
// fused; the last layer writes out directly. A gbdt model gathers the raw
// inputs and walks its trees instead (trees.go). It panics if x or out is too
// short (a programmer error).
func (s *Scorer) Score(x []float32, rows int, out []float32) {
	s.ScoreFrom(nil, x, rows, out)
}

// ScoreFrom is [Scorer.Score] taking the standardised inputs from src, a
// scorer with the same inputs ([Scorer.SameInputs]) whose last call was a
// Score, ScoreSeq, ScoreFrom or ScoreSeqFrom of the same x and rows, with x
// unchanged since: they are copied, not computed again (the results are the
// same bit for bit). The trap: x rewritten in place between the two calls
// is not noticed. A nil src is Score. It panics if src does not have the
// same inputs or its last call was on another x or number of rows.
func (s *Scorer) ScoreFrom(src *Scorer, x []float32, rows int, out []float32) {
	if rows < 0 || len(x) < rows*s.width || len(out) < rows {
		panic(fmt.Sprintf("models: Score: %d rows need len(x) >= %d and len(out) >= %d, got %d and %d",
			rows, rows*s.width, rows, len(x), len(out)))
	}
	if s.m.Sequential() {
		panic(fmt.Sprintf("models: Score: model %s is sequential (family %s): use ScoreSeq with the entities' states", s.m.ident, s.m.family))
	}
	if rows == 0 {
		return
	}
	if s.m.trees != nil {
		s.scoreTrees(x, rows, out)
		return
	}
	s.inputsFrom(src, x, rows)
	s.runLayers(s.xs, rows, out)
	if col := s.amtCol; col >= 0 {
		// Probability × amount (linear models only): the row's raw
		// amount_log1p, not the standardised input.
		for r, v := range out[:rows] {
			amt := math.Expm1(float64(x[r*s.width+col]))
			out[r] = float32(amt / (1 + math.Exp(-float64(v))))
		}
	}
}

// SameInputs reports whether s and o gather and standardise a row the
// same way, bit for bit: the same columns of the same row width, the same
// means and scales (float32), and neither a gbdt model (whose inputs are
// raw). Models trained on one feature spec and training set (the shipped
// ones) have the same inputs; a worker then standardises each batch once
// ([Scorer.ScoreFrom]).
func (s *Scorer) SameInputs(o *Scorer) bool {
	if s == o || s.m.trees != nil || o.m.trees != nil || s.width != o.width || !slices.Equal(s.cols, o.cols) {
		return false
	}
	in := len(s.cols)
	return bitsEqual(s.m.mean[:in], o.m.mean[:in]) && bitsEqual(s.m.invStd[:in], o.m.invStd[:in])
}

// bitsEqual reports whether a and b hold the same float32 bit patterns.
func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i, v := range a {
		if math.Float32bits(v) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// inputsFrom sets s.xs to the standardised inputs of rows rows of x:
// computed, or copied from src (see ScoreFrom).
func (s *Scorer) inputsFrom(src *Scorer, x []float32, rows int) {
	if src == nil {
		s.standardise(x, rows)
		return
	}
	if !s.SameInputs(src) {
		panic(fmt.Sprintf("models: ScoreFrom: model %s does not have the inputs of model %s", s.m.ident, src.m.ident))
	}
	if src.xsOf != &x[0] || src.xsRows != rows {
		panic(fmt.Sprintf("models: ScoreFrom: model %s did not standardise these %d rows last", src.m.ident, rows))
	}
	n := rows * len(s.cols)
	s.xs = grow(s.xs, n)
	copy(s.xs, src.xs[:n])
	s.xsOf, s.xsRows = &x[0], rows
}

// standardise gathers and standardises the model's inputs of rows rows of x
// into s.xs (rows × inputs).
func (s *Scorer) standardise(x []float32, rows int) {
	m := s.m
	in := len(m.inputs)
	s.xs = grow(s.xs, rows*in)
	s.xsOf, s.xsRows = &x[0], rows
	xs, cols, mean, inv := s.xs, s.cols, m.mean[:in], m.invStd[:in]
	if s.first >= 0 {
		// Consecutive columns: the same arithmetic without the gather,
		// its bounds checks hoisted out of the loop (18 against 38–48 ns
		// per row of 39 inputs: BenchmarkStandardise).
		for r := 0; r < rows; r++ {
			src := x[r*s.width+s.first:][:in]
			dst := xs[r*in:][:in]
			for i := range dst {
				dst[i] = (src[i] - mean[i]) * inv[i]
			}
		}
		return
	}
	for r := 0; r < rows; r++ {
		src := x[r*s.width : (r+1)*s.width]
		dst := xs[r*in : (r+1)*in]
		for i, c := range cols {
			dst[i] = (src[c] - mean[i]) * inv[i]
		}
	}
}

// runLayers runs the dense layers on a (rows × layers[0].in) through the
// GEMM kernel, each with its activation fused; the last writes out.
func (s *Scorer) runLayers(a []float32, rows int, out []float32) {
	m := s.m
	lda := m.layers[0].in
	for li := range m.layers {
		l := &m.layers[li]
		var c []float32
		if li == len(m.layers)-1 {
			c = out[:rows] // out == 1
		} else {
			b := &s.bufs[li%2]
			*b = grow(*b, rows*l.out)
			c = *b
		}
		kernel.Gemm(rows, l.in, l.out, a, lda, l.packed, l.bias, l.act, c, l.out, false)
		if l.exp { // log link (linear models only, out == 1)
			for i, v := range c[:rows] {
				c[i] = float32(math.Exp(float64(v)))
			}
		}
		a, lda = c, l.out
	}
}

// Reasons appends to dst the k inputs with the largest |contribution| to the
// score of row row of x (laid out as for Score), largest first, and returns
// the extended slice. Contributions are attributions of the model's
// pre-activation output, relative to the input means (z = 0):
//
//   - linear: w_i·(x_i−mean_i)/std_i, in output units; they sum exactly to
//     value − bias. With the log link (ActivationExp) the same in log
//     units: they sum to log(value) − bias; with probability × amount
//     (ActivationSigmoidAmount) in logit units of the fraud probability:
//     they sum to logit(value/amount) − bias (the amount itself is the
//     other factor, not attributed).
//   - logistic: the same, in logit units (log-odds); they sum exactly to
//     logit(score) − bias, the base logit of an average transaction.
//   - mlp: integrated gradients in logit units from the baseline z = 0 (an
//     average transaction): z_i times the mean of ∂logit/∂z_i along the
//     straight path from 0 to z. When every hidden layer is ReLU or
//     identity (the shipped fraud model) the network is piecewise linear
//     along the path and the integral is computed exactly, piece by piece
//     between the kinks the path crosses (reasons_exact.go): the
//     contributions sum to logit(score) − logit(baseline) up to rounding,
//     at about a tenth of the cost of the 32-point quadrature they replace
//     (BenchmarkShippedReasons against BenchmarkShippedReasonsMidpoint:
//     about 3 against 30 µs per row on an AVX2 core; the quadrature's error
//     was a few percent of that sum where the path crosses ReLU kinks). Other hidden activations use the midpoint rule over 32
//     points: the sum then holds up to the quadrature error. Either way
//     they satisfy symmetry and implementation invariance; the stream only
//     asks for the reasons of review and alert decisions.
//   - gbdt: exact TreeSHAP values (Lundberg et al. 2018) of the margin
//     (log-odds for a probability, the value for squared error), the same
//     as XGBoost's pred_contribs: relative to the expected margin over the
//     training data the trees' covers describe, and summing exactly (up to
//     rounding) to margin − that expectation. A missing (NaN) input takes
//     each split's default direction, as in scoring.
//   - cnn, gru, lstm: integrated gradients of the same kind over the
//     current transaction's inputs, with the entity's history held fixed
//     (the state before this row's step, kept by the last [Scorer.ScoreSeq]):
//     the baseline is this card with an average transaction now. They
//     attribute what this transaction changes given the card's past, sum
//     to logit(score) − logit(baseline) up to the quadrature error, and need
//     Reasons to be called for rows of the batch that ScoreSeq scored last.
//
// k <= 0 appends nothing; k > inputs appends all. It panics if row is out of
// range of x.
func (s *Scorer) Reasons(x []float32, row, k int, dst []Reason) []Reason {
	if row < 0 || len(x) < (row+1)*s.width {
		panic(fmt.Sprintf("models: Reasons: row %d out of range of x (len %d, width %d)", row, len(x), s.width))
	}
	if k <= 0 {
		return dst
	}
	m := s.m
	src := x[row*s.width : (row+1)*s.width]
	z := s.z
	if m.trees == nil { // trees read raw values: no standardisation
		for i, c := range s.cols {
			z[i] = float64((src[c] - m.mean[i]) * m.invStd[i])
		}
	}
	if m.trees != nil {
		for i, c := range s.cols {
			s.xrow[i] = src[c]
		}
		clear(s.contrib)
		s.shap.contributions(m.trees, s.xrow, s.contrib)
		for i := range s.order {
			s.order[i] = i
		}
	} else if m.Sequential() {
		if row >= s.prevRows {
			panic(fmt.Sprintf("models: Reasons: row %d of a sequential model was not scored by the last ScoreSeq (%d rows)", row, s.prevRows))
		}
		ss := m.StateSize()
		prev := s.prev[row*ss : (row+1)*ss]
		g := s.seqGradSum(z, prev)
		for i := range s.contrib {
			s.contrib[i] = g[i]
		}
		for i := range s.contrib {
			s.contrib[i] *= z[i] / igSteps
			s.order[i] = i
		}
	} else if len(m.layers) == 1 {
		// Linear in z: the gradient is the weights, and w·z is exact.
		g := s.gradAt(z, 1)
		for i := range s.contrib {
			s.contrib[i] = g[i] * z[i]
			s.order[i] = i
		}
	} else {
		// Integrated gradients from the baseline z = 0 (every input at its
		// training mean): the average gradient along the straight path to z,
		// by the midpoint rule over igSteps points, times z. The
		// contributions sum to logit(z) − logit(0) up to the quadrature error.
		//
		// The first layer's pre-activation is linear in alpha, b + alpha·(z·W),
		// and the gradient's last step (back through W) is linear in the
		// gradient at that pre-activation: z·W is computed once, the layers
		// above it run per point, and their gradients are summed before one
		// product with W (the same sum as per-point gradients, ~4x less work).
		l0 := &m.layers[0]
		u, sum := s.u[:l0.out], s.usum[:l0.out]
		clear(u)
		clear(sum)
		zw(u, z, l0.w64)
		scale := 1.0
		if s.pwl != nil {
			// Piecewise linear along the path: the exact integral.
			s.pwlGrad(0, 0, 1, l0.b64, u, sum)
		} else {
			pre0, h1 := s.pres[0], s.acts[1]
			for st := range igSteps {
				alpha := (float64(st) + 0.5) / igSteps
				for j := range pre0 {
					pre0[j] = l0.b64[j] + alpha*u[j]
					h1[j] = act64(l0.act, pre0[j])
				}
				g := s.headGradFrom(1)
				for j := range sum {
					sum[j] += g[j] * dact64(l0.act, pre0[j], h1[j])
				}
			}
			scale = 1.0 / igSteps
		}
		wDot(s.contrib, l0.w64T, sum)
		for i := range s.contrib {
			s.contrib[i] *= z[i] * scale
			s.order[i] = i
		}
	}
	for _, i := range topAbs(s.order, s.contrib, k) {
		dst = append(dst, Reason{Feature: m.inputs[i], Contribution: float32(s.contrib[i])})
	}
	return dst
}

// zw adds to u (len out) the product z·W of the row z with W (len(z) ×
// out, row-major), row by row in increasing order, skipping the rows whose
// z is 0 — the sums of the plain loop
//
//	for i, v := range z { if v != 0 { for j := range u { u[j] += v*W[i,j] } } }
//
// bit for bit (kernel.MulAddRows64 is that loop, vectorised over j).
func zw(u, z, w []float64) { kernel.MulAddRows64(u, w, z) }

// wDot sets c[i] to the dot product of row i of W (len(c) × len(d),
// row-major) with d, each summed in order from j = 0 — the plain loop's
// rounding — from W's transpose wT (len(d) × len(c)): c += d[j]·wT[j,:] for
// j in increasing order, every c[i] its own sum (kernel.MulAddRows64
// vectorises over i). It skips the j whose d[j] is 0, which changes no
// bit: the weights are finite, so the skipped term is ±0, and a sum that
// starts at +0 is never -0 (x + -0 = x for every other x).
func wDot(c, wT, d []float64) {
	clear(c)
	kernel.MulAddRows64(c, wT, d)
}

// topAbs reorders order (the indices 0..len(c)-1 in increasing order) so
// that its first min(k, len) entries are the indices of the k largest |c[i]|,
// largest first, ties in index order — the prefix a stable sort by
// decreasing |c| gives — and returns that prefix. For k much smaller than
// len(c) it is an insertion into a k-long list, not a sort of all inputs.
func topAbs(order []int, c []float64, k int) []int {
	n := len(order)
	if k >= n {
		slices.SortStableFunc(order, func(a, b int) int {
			ca, cb := math.Abs(c[a]), math.Abs(c[b])
			switch {
			case ca > cb:
				return -1
			case ca < cb:
				return 1
			}
			return 0
		})
		return order
	}
	top := 0 // order[:top] holds the best so far, best first
	for i := range n {
		ci := math.Abs(c[i])
		p := top
		for p > 0 && ci > math.Abs(c[order[p-1]]) {
			p--
		}
		if p >= k {
			continue
		}
		if top < k {
			top++
		}
		copy(order[p+1:top], order[p:top-1])
		order[p] = i
	}
	return order[:top]
}

// igSteps is the number of points of the integrated-gradients quadrature
// for multi-layer models.
const igSteps = 32

// gradAt returns ∂(output pre-activation)/∂z at the point alpha·z (in
// float64), in a scratch slice valid until the next call.
func (s *Scorer) gradAt(z []float64, alpha float64) []float64 {
	in := s.acts[0]
	for i, v := range z {
		in[i] = alpha * v
	}
	return s.headGrad()
}

// headGrad runs the dense layers forward from s.acts[0][:layers[0].in] and
// returns ∂(output pre-activation)/∂(that input), in a scratch slice valid
// until the next call.
func (s *Scorer) headGrad() []float64 { return s.headGradFrom(0) }

// headGradFrom runs the dense layers from layer first on, forward from
// s.acts[first], and returns ∂(output pre-activation)/∂s.acts[first], in a
// scratch slice valid until the next call.
func (s *Scorer) headGradFrom(first int) []float64 {
	m := s.m
	for li := first; li < len(m.layers); li++ {
		l := &m.layers[li]
		h, pre, next := s.acts[li], s.pres[li], s.acts[li+1]
		copy(pre, l.b64)
		for i, v := range h[:l.in] {
			if v == 0 {
				continue
			}
			w := l.w64[i*l.out : (i+1)*l.out]
			for j := range pre {
				pre[j] += v * w[j]
			}
		}
		for j, p := range pre {
			next[j] = act64(l.act, p)
		}
	}
	g := s.grad[:1]
	g[0] = 1
	for li := len(m.layers) - 1; li >= first; li-- {
		l := &m.layers[li]
		if li < len(m.layers)-1 { // through the activation of layer li
			for j := range g {
				g[j] *= dact64(l.act, s.pres[li][j], s.acts[li+1][j])
			}
		}
		gi := s.grad2[:l.in]
		for i := range gi {
			w := l.w64[i*l.out : (i+1)*l.out]
			var sum float64
			for j, gj := range g {
				sum += w[j] * gj
			}
			gi[i] = sum
		}
		s.grad, s.grad2 = s.grad2, s.grad
		g = gi
	}
	return g
}

func act64(a kernel.Activation, x float64) float64 {
	switch a {
	case kernel.ReLU:
		return math.Max(x, 0)
	case kernel.Sigmoid:
		return 1 / (1 + math.Exp(-x))
	case kernel.Tanh:
		return math.Tanh(x)
	}
	return x
}

// dact64 is the derivative of the activation at pre-activation x with
// output y.
func dact64(a kernel.Activation, x, y float64) float64 {
	switch a {
	case kernel.ReLU:
		if x > 0 {
			return 1
		}
		return 0
	case kernel.Sigmoid:
		return y * (1 - y)
	case kernel.Tanh:
		return 1 - y*y
	}
	return 1
}
