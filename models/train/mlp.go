package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/streamscore/streamscore/models"
)

// MLP fits a multi-layer perceptron (ReLU hidden layers of WithHidden
// widths, sigmoid output) with mini-batch Adam on the class-weighted log
// loss of the head of d, stopping early when the loss on the held-out tail
// has not improved for WithPatience epochs and keeping the best epoch's
// weights. Weights start from He initialisation. Everything random comes from
// WithSeed and runs on one goroutine, so the result is deterministic.
// Targets are 0/1. Cancelling ctx stops the fit within 64 mini-batches.
func MLP(ctx context.Context, name string, version int, d *Dataset, opts ...Option) (*models.File, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !c.l2Set {
		c.l2 = 1e-5
	}
	if err := d.check(true); err != nil {
		return nil, fmt.Errorf("train mlp: %w", err)
	}
	nt, err := split(d, &c)
	if err != nil {
		return nil, fmt.Errorf("train mlp: %w", err)
	}
	pos := countPositives(d.Y[:nt])
	if pos == 0 || pos == nt {
		return nil, fmt.Errorf("train mlp: %d positives in %d training rows, need both classes: %w", pos, nt, ErrData)
	}
	cw := c.classWeight
	if cw == 0 {
		cw = math.Sqrt(float64(nt-pos) / float64(pos))
	}
	in := standardize(d.Names, d.X[:nt*len(d.Names)], nil)
	w := len(d.Names)
	zt := zRows(d, in, 0, nt, false)
	zv := zRows(d, in, nt, d.Rows(), false)

	rng := rand.New(rand.NewPCG(uint64(c.seed), 0x5eed))
	widths := append([]int{w}, c.hidden...)
	widths = append(widths, 1)
	net := newNet(widths, rng)
	base := float64(pos) / float64(nt)
	// Start the output at the weighted base rate's logit.
	net.b[len(net.b)-1][0] = math.Log(base * cw / (1 - base))

	best := net.clone()
	bestLoss, bestEpoch := math.Inf(1), 0
	perm := make([]int, nt)
	for i := range perm {
		perm[i] = i
	}
	opt := newAdam(len(net.flat), c.lr)
	g := net.zeroLike()
	sc := net.scratch()
	epochs := 0
	for epoch := 1; epoch <= c.epochs; epoch++ {
		epochs = epoch
		rng.Shuffle(nt, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for s := 0; s < nt; s += c.batch {
			if (s/c.batch)%64 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, fmt.Errorf("train mlp: %w", err)
				}
			}
			e := min(s+c.batch, nt)
			g.zero()
			var wsum float64
			for _, r := range perm[s:e] {
				y := float64(d.Y[r])
				sw := 1.0
				if y > 0.5 {
					sw = cw
				}
				wsum += sw
				net.backprop(zt[r*w:(r+1)*w], y, sw, sc, g)
			}
			opt.step(net.flat, g.flat, net.decay, 1/wsum, c.l2)
		}
		loss := net.loss(zv, w, d.Y[nt:], cw, sc)
		c.report(epoch, c.epochs)
		if loss < bestLoss-1e-6 {
			bestLoss, bestEpoch = loss, epoch
			best.copyFrom(net)
		} else if epoch-bestEpoch >= c.patience {
			break
		}
	}
	// Undo the prior shift of the class weight: logit_true = logit_weighted − log(cw).
	best.b[len(best.b)-1][0] -= math.Log(cw)

	f := &models.File{
		Name: name, Family: models.FamilyMLP, Version: version, Output: models.OutputProbability,
		Inputs: in,
	}
	for l := range best.w {
		act := "relu"
		if l == len(best.w)-1 {
			act = "sigmoid"
		}
		ly := models.Layer{In: widths[l], Out: widths[l+1], Activation: act}
		for _, v := range best.w[l] {
			ly.Weights = append(ly.Weights, float32(v))
		}
		for _, v := range best.b[l] {
			ly.Bias = append(ly.Bias, float32(v))
		}
		f.Layers = append(f.Layers, ly)
	}
	md := map[string]any{
		"algorithm":             "mlp, relu hidden layers, sigmoid output, mini-batch adam, early stopping",
		"hidden":                c.hidden,
		"l2":                    c.l2,
		"learning_rate":         c.lr,
		"batch_size":            c.batch,
		"epochs_run":            epochs,
		"best_epoch":            bestEpoch,
		"patience":              c.patience,
		"class_weight":          cw,
		"validation_loss_wtd":   bestLoss,
		"class_ratio":           base,
		"class_weight_bias_fix": "output bias shifted by -log(class_weight) after training",
	}
	return finishDense(f, d, nt, &c, md)
}

// net is a dense ReLU network with a single sigmoid output, float64. Its
// parameters are one flat vector, layer by layer the weights then the
// biases, with w and b views into it.
type net struct {
	widths []int
	flat   []float64
	decay  []float64   // per value of flat: 1 on weights (L2), 0 on biases
	w, b   [][]float64 // w[l] row-major widths[l]×widths[l+1]
}

// netSize returns the number of parameters of a net of widths.
func netSize(widths []int) int {
	n := 0
	for l := 0; l+1 < len(widths); l++ {
		n += widths[l]*widths[l+1] + widths[l+1]
	}
	return n
}

// layout hands out consecutive views of a flat parameter vector and marks
// the weights (L2) in its decay mask.
type layout struct {
	flat, decay []float64
	off         int
}

// take returns the next n parameters, weights if weight.
func (l *layout) take(n int, weight bool) []float64 {
	v := l.flat[l.off : l.off+n : l.off+n]
	if weight {
		for i := l.off; i < l.off+n; i++ {
			l.decay[i] = 1
		}
	}
	l.off += n
	return v
}

// netIn returns the net of widths whose parameters are the next
// netSize(widths) values of l.
func netIn(widths []int, l *layout) *net {
	start := l.off
	n := &net{widths: widths}
	for i := 0; i+1 < len(widths); i++ {
		n.w = append(n.w, l.take(widths[i]*widths[i+1], true))
		n.b = append(n.b, l.take(widths[i+1], false))
	}
	n.flat, n.decay = l.flat[start:l.off:l.off], l.decay[start:l.off:l.off]
	return n
}

// newNet returns a net of widths with He-initialised weights and zero
// biases.
func newNet(widths []int, rng *rand.Rand) *net {
	n := newZeroNet(widths)
	n.initHe(rng)
	return n
}

func newZeroNet(widths []int) *net {
	size := netSize(widths)
	return netIn(widths, &layout{flat: make([]float64, size), decay: make([]float64, size)})
}

// initHe draws the weights from He's normal distribution, N(0, 2/fan-in).
func (n *net) initHe(rng *rand.Rand) {
	for l, w := range n.w {
		s := math.Sqrt(2 / float64(n.widths[l]))
		for i := range w {
			w[i] = rng.NormFloat64() * s
		}
	}
}

func (n *net) zeroLike() *net { return newZeroNet(n.widths) }

func (n *net) clone() *net { c := n.zeroLike(); c.copyFrom(n); return c }

func (n *net) copyFrom(o *net) { copy(n.flat, o.flat) }

func (n *net) zero() { clear(n.flat) }

// scratch holds per-row activations and deltas.
type scratch struct{ h, delta [][]float64 }

func (n *net) scratch() *scratch {
	s := &scratch{}
	for _, w := range n.widths {
		s.h = append(s.h, make([]float64, w))
		s.delta = append(s.delta, make([]float64, w))
	}
	return s
}

// forward returns the output logit for z, leaving activations in s.h.
func (n *net) forward(z []float64, s *scratch) float64 {
	copy(s.h[0], z)
	last := len(n.w) - 1
	for l := range n.w {
		out := s.h[l+1]
		copy(out, n.b[l])
		no := len(out)
		for i, v := range s.h[l] {
			if v == 0 {
				continue
			}
			w := n.w[l][i*no : (i+1)*no]
			for j := range out {
				out[j] += v * w[j]
			}
		}
		if l < last {
			for j, v := range out {
				if v < 0 {
					out[j] = 0
				}
			}
		}
	}
	return s.h[len(s.h)-1][0]
}

// backprop adds the gradient of sw·logloss(y, sigmoid(logit)) to g.
func (n *net) backprop(z []float64, y, sw float64, s *scratch, g *net) {
	logit := n.forward(z, s)
	L := len(n.w)
	s.delta[L][0] = sw * (sigmoid(logit) - y)
	for l := L - 1; l >= 0; l-- {
		dout := s.delta[l+1]
		no := len(dout)
		hin := s.h[l]
		for j, dv := range dout {
			g.b[l][j] += dv
		}
		din := s.delta[l]
		for i, v := range hin {
			w := n.w[l][i*no : (i+1)*no]
			gw := g.w[l][i*no : (i+1)*no]
			var sum float64
			for j, dv := range dout {
				gw[j] += v * dv
				sum += w[j] * dv
			}
			if l > 0 && v <= 0 { // ReLU: zero output, zero gradient
				sum = 0
			}
			din[i] = sum
		}
	}
}

// loss returns the class-weighted mean log loss over the rows of z.
func (n *net) loss(z []float64, w int, y []float32, cw float64, s *scratch) float64 {
	var sum, wsum float64
	for r := range y {
		logit := n.forward(z[r*w:(r+1)*w], s)
		sw := 1.0
		var l float64
		if y[r] > 0.5 {
			sw = cw
			l = softplus(-logit)
		} else {
			l = softplus(logit)
		}
		sum += sw * l
		wsum += sw
	}
	return sum / wsum
}

// softplus(x) = log(1 + e^x), stable.
func softplus(x float64) float64 {
	if x > 30 {
		return x
	}
	return math.Log1p(math.Exp(x))
}

// adam is Adam over a flat parameter vector.
type adam struct {
	lr, b1, b2 float64
	t          int
	m, v       []float64
}

func newAdam(size int, lr float64) *adam {
	return &adam{lr: lr, b1: 0.9, b2: 0.999, m: make([]float64, size), v: make([]float64, size)}
}

// step applies one update with gradient g·scale plus l2·decay[i]·p[i].
func (a *adam) step(p, g, decay []float64, scale, l2 float64) {
	a.t++
	c1 := 1 - math.Pow(a.b1, float64(a.t))
	c2 := 1 - math.Pow(a.b2, float64(a.t))
	for i := range p {
		gi := g[i]*scale + l2*decay[i]*p[i]
		a.m[i] = a.b1*a.m[i] + (1-a.b1)*gi
		a.v[i] = a.b2*a.v[i] + (1-a.b2)*gi*gi
		p[i] -= a.lr * (a.m[i] / c1) / (math.Sqrt(a.v[i]/c2) + 1e-8)
	}
}
