package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/streamscore/streamscore/models"
)

// GBDT options' defaults (see the With* options).
const (
	defaultTrees          = 500
	defaultMaxDepth       = 6
	defaultMinChildWeight = 1.0
	defaultGBDTLambda     = 1.0
	defaultGBDTRate       = 0.1
	defaultGBDTPatience   = 30
	defaultSubsample      = 0.8
	defaultColsample      = 0.8
	gbdtBins              = 256
	// gbdtParts is the fixed number of row parts a histogram is built in
	// (one goroutine each) and summed in order: the result does not depend
	// on the machine's core count.
	gbdtParts = 2
	// gbdtCutSample bounds the rows whose values set the bin cut points.
	gbdtCutSample = 200_000
)

// WithTrees sets the maximum number of boosting rounds (trees) of GBDT.
// Default 500; early stopping (WithPatience, default 30 rounds for GBDT)
// usually ends sooner and keeps the best round's trees.
func WithTrees(n int) Option {
	return func(c *config) error {
		if n < 1 || n > models.MaxTrees {
			return fmt.Errorf("train: trees %d outside [1, %d]", n, models.MaxTrees)
		}
		c.trees = n
		return nil
	}
}

// WithMaxDepth sets the depth limit of GBDT's trees (growth is
// depth-wise, level by level). Default 6: at most 64 leaves per tree.
func WithMaxDepth(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 16 {
			return fmt.Errorf("train: max depth %d outside [1, 16]", n)
		}
		c.maxDepth = n
		return nil
	}
}

// WithMaxLeaves bounds the leaves of each GBDT tree (0, the default: only
// the depth limit). When set, a level's candidate splits are taken in
// decreasing gain until the tree has n leaves.
func WithMaxLeaves(n int) Option {
	return func(c *config) error {
		if n < 0 || n == 1 || n > 1<<16 {
			return fmt.Errorf("train: max leaves %d: want 0 (no limit) or 2..%d", n, 1<<16)
		}
		c.maxLeaves = n
		return nil
	}
}

// WithMinChildWeight sets GBDT's minimum sum of hessians (weighted
// p(1−p)) in a child of a split. Default 1. Larger values refuse splits
// that isolate a few rows; the trap: with strong class weighting the
// hessians of positives are larger, so the same value allows smaller
// fraud-only leaves.
func WithMinChildWeight(w float64) Option {
	return func(c *config) error {
		if !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("train: min child weight %v must be finite and >= 0", w)
		}
		c.minChildWeight = w
		return nil
	}
}

// WithSubsample sets the fractions of GBDT's training rows drawn (per tree)
// and of its features drawn (per tree), both seeded. Defaults 0.8 and 0.8.
// Both must be in (0, 1].
func WithSubsample(rows, cols float64) Option {
	return func(c *config) error {
		if !(rows > 0 && rows <= 1) || !(cols > 0 && cols <= 1) {
			return fmt.Errorf("train: subsample rows %v / columns %v: want (0, 1]", rows, cols)
		}
		c.subsample, c.colsample = rows, cols
		return nil
	}
}

// GBDT fits gradient-boosted regression trees (family gbdt, objective
// binary:logistic) on the head of d by second-order boosting on
// histogram-binned features, as XGBoost's "hist" and LightGBM do:
//
//   - each feature is cut into at most 256 bins at quantiles of (up to
//     200,000 evenly spaced) training rows; a split "x < cut" is a bin
//     boundary, and its threshold is the cut itself, so the model file
//     scores raw values exactly as training saw their bins;
//   - per round, the gradient g = w(p−y) and hessian h = w·p(1−p) of the
//     class-weighted log loss (positives weighted as the MLP's,
//     WithClassWeight, default sqrt(neg/pos)); a tree grown level by level
//     to WithMaxDepth (and WithMaxLeaves) on a WithSubsample draw of rows
//     and features; the split maximising
//     G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ) with H_L, H_R >=
//     WithMinChildWeight; leaf values −G/(H+λ) times the learning rate
//     (WithLearningRate, default 0.1; λ = WithL2, default 1);
//   - early stopping on the weighted log loss of the held-out tail
//     (WithHoldout, the latest rows) after WithPatience rounds without
//     improvement (default 30), keeping the best round's trees;
//   - the margin's prior shift by the class weight is undone in the base
//     score (−log w), so scores stay calibrated probabilities.
//
// Histograms are built over gbdtParts fixed row parts on as many
// goroutines and summed in order, the smaller child's by a pass over its
// rows and its sibling's by subtraction from the parent: the result is
// the same bytes for a seed on any machine. Targets are 0/1. Cancelling
// ctx stops the fit between trees.
func GBDT(ctx context.Context, name string, version int, d *Dataset, opts ...Option) (*models.File, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !c.l2Set {
		c.l2 = defaultGBDTLambda
	}
	if !c.lrSet {
		c.lr = defaultGBDTRate
	}
	if !c.patienceSet {
		c.patience = defaultGBDTPatience
	}
	if err := d.check(true); err != nil {
		return nil, fmt.Errorf("train gbdt: %w", err)
	}
	nt, err := split(d, &c)
	if err != nil {
		return nil, fmt.Errorf("train gbdt: %w", err)
	}
	pos := countPositives(d.Y[:nt])
	if pos == 0 || pos == nt {
		return nil, fmt.Errorf("train gbdt: %d positives in %d training rows, need both classes: %w", pos, nt, ErrData)
	}
	cw := c.classWeight
	if cw == 0 {
		cw = math.Sqrt(float64(nt-pos) / float64(pos))
	}
	nf := len(d.Names)
	n := d.Rows()
	cuts := binCuts(d.X[:nt*nf], nf)
	bins := binRows(d.X, nf, cuts)

	base := float64(pos) / float64(nt)
	init := math.Log(base * cw / (1 - base))
	logCW := math.Log(cw)
	margin := make([]float64, n)
	for i := range margin {
		margin[i] = init
	}
	weight := func(r int) float64 {
		if d.Y[r] > 0.5 {
			return cw
		}
		return 1
	}
	g := &grower{c: &c, nf: nf, bins: bins, cuts: cuts,
		grad: make([]float64, nt), hess: make([]float64, nt)}
	rng := rand.New(rand.NewPCG(uint64(c.seed), 0x6bd7))
	var trees []models.Tree
	bestLoss, bestRound := math.Inf(1), 0
	rows := make([]int32, 0, nt)
	for round := 1; round <= c.trees; round++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train gbdt: %w", err)
		}
		for r := range nt {
			p := 1 / (1 + math.Exp(-margin[r]))
			w := weight(r)
			g.grad[r] = w * (p - float64(d.Y[r]))
			g.hess[r] = max(w*p*(1-p), 1e-16)
		}
		rows = rows[:0]
		for r := range nt {
			if c.subsample >= 1 || rng.Float64() < c.subsample {
				rows = append(rows, int32(r))
			}
		}
		feats := rng.Perm(nf)[:max(1, int(math.Ceil(c.colsample*float64(nf))))]
		slices.Sort(feats)
		t, cutAt := g.grow(rows, feats)
		trees = append(trees, t)
		// Every row's margin, the held-out tail's included, through the
		// bins (x < cut ⟺ bin < cut's index). Early stopping watches the
		// held-out log loss of the probabilities the file will give (the
		// class weight's shift undone), unweighted.
		var loss float64
		for r := range n {
			margin[r] += float64(binLeaf(&t, bins[r*nf:(r+1)*nf], cutAt))
			if r >= nt {
				y := float64(d.Y[r])
				p := 1 / (1 + math.Exp(-(margin[r] - logCW)))
				p = min(max(p, 1e-15), 1-1e-15)
				loss -= y*math.Log(p) + (1-y)*math.Log(1-p)
			}
		}
		loss /= float64(n - nt)
		c.report(round, c.trees)
		if loss < bestLoss-1e-7 {
			bestLoss, bestRound = loss, round
		} else if round-bestRound >= c.patience {
			break
		}
	}
	rounds := len(trees)
	trees = trees[:bestRound]
	f := &models.File{
		Name: name, Family: models.FamilyGBDT, Version: version, Output: models.OutputProbability,
		Inputs: standardize(d.Names, d.X[:nt*nf], nil),
		Trees:  &models.Trees{Objective: models.ObjectiveLogistic, BaseScore: float64(float32(init - math.Log(cw))), Trees: trees},
	}
	leaves := 0
	for _, t := range trees {
		for _, ft := range t.Feature {
			if ft < 0 {
				leaves++
			}
		}
	}
	md := map[string]any{
		"algorithm":             "gbdt: second-order gradient boosting, histogram bins (<= 256 per feature, quantile cuts), depth-wise trees, early stopping",
		"trees":                 len(trees),
		"rounds_run":            rounds,
		"leaves":                leaves,
		"max_trees":             c.trees,
		"max_depth":             c.maxDepth,
		"max_leaves":            c.maxLeaves,
		"learning_rate":         c.lr,
		"lambda":                c.l2,
		"min_child_weight":      c.minChildWeight,
		"subsample":             c.subsample,
		"colsample":             c.colsample,
		"patience":              c.patience,
		"class_weight":          cw,
		"validation_loss":       bestLoss,
		"class_ratio":           base,
		"class_weight_bias_fix": "base score shifted by -log(class_weight) after training",
		"note":                  "input mean/std are recorded, not applied: trees read raw feature values",
	}
	return finishDense(f, d, nt, &c, md)
}

// binCuts returns, per feature, the increasing cut points of its bins
// (at most gbdtBins-1): quantiles of up to gbdtCutSample evenly spaced
// rows of x (row-major, nf columns). Bin b of a feature holds the values
// in [cuts[b-1], cuts[b]). The features are split between gbdtParts
// goroutines.
func binCuts(x []float32, nf int) [][]float32 {
	rows := len(x) / nf
	step := max(1, rows/gbdtCutSample)
	cuts := make([][]float32, nf)
	var wg sync.WaitGroup
	for p := range gbdtParts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals := make([]float32, 0, rows/step+1)
			for f := p; f < nf; f += gbdtParts {
				vals = vals[:0]
				for r := 0; r < rows; r += step {
					vals = append(vals, x[r*nf+f])
				}
				slices.Sort(vals)
				var cs []float32
				for q := 1; q < gbdtBins; q++ {
					v := vals[q*len(vals)/gbdtBins]
					// A cut at v sends v right; cuts above the minimum only.
					if v > vals[0] && (len(cs) == 0 || v > cs[len(cs)-1]) {
						cs = append(cs, v)
					}
				}
				cuts[f] = cs
			}
		}()
	}
	wg.Wait()
	return cuts
}

// binRows maps every value of x to its bin (row-major, nf columns), the
// features split between gbdtParts goroutines.
func binRows(x []float32, nf int, cuts [][]float32) []uint8 {
	rows := len(x) / nf
	bins := make([]uint8, rows*nf)
	var wg sync.WaitGroup
	for p := range gbdtParts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := p; f < nf; f += gbdtParts {
				cs := cuts[f]
				for r := range rows {
					v := x[r*nf+f]
					b, _ := slices.BinarySearch(cs, v)
					if b < len(cs) && cs[b] == v {
						b++ // v == cut goes right of it
					}
					bins[r*nf+f] = uint8(b)
				}
			}
		}()
	}
	wg.Wait()
	return bins
}

// binLeaf walks a tree grown by grower with a row's bins; cutAt[j] is the
// bin boundary of split j (x < threshold ⟺ bin < cutAt[j]).
func binLeaf(t *models.Tree, bins []uint8, cutAt []int32) float32 {
	n := int32(0)
	for t.Feature[n] >= 0 {
		f := t.Feature[n]
		if int32(bins[f]) < cutAt[n] {
			n = t.Left[n]
		} else {
			n = t.Right[n]
		}
	}
	return t.Value[n]
}

// grower grows one tree from gradients.
type grower struct {
	c          *config
	nf         int
	bins       []uint8 // rows × nf
	cuts       [][]float32
	grad, hess []float64
	parts      [gbdtParts][]gh // per-part histogram scratch
	pool       [][]gh          // free histograms
	scratch    []int32         // partition scratch
}

// gh is one bin's gradient and hessian sums.
type gh struct{ g, h float64 }

// node is a node being grown.
type growNode struct {
	id   int32   // index in the tree
	rows []int32 // training rows in the node
	hist []gh    // nf × gbdtBins
	g, h float64
}

func (g *grower) newHist() []gh {
	if n := len(g.pool); n > 0 {
		h := g.pool[n-1]
		g.pool = g.pool[:n-1]
		clear(h)
		return h
	}
	return make([]gh, g.nf*gbdtBins)
}

// build fills hist with the sums of rows over feats: gbdtParts parts of
// the rows on as many goroutines, summed in part order.
func (g *grower) build(rows []int32, feats []int, hist []gh) {
	if len(rows) < 4096 {
		g.buildPart(rows, feats, hist)
		return
	}
	var wg sync.WaitGroup
	per := (len(rows) + gbdtParts - 1) / gbdtParts
	for p := range gbdtParts {
		if g.parts[p] == nil {
			g.parts[p] = make([]gh, g.nf*gbdtBins)
		}
		part := rows[min(p*per, len(rows)):min((p+1)*per, len(rows))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := g.parts[p]
			for _, f := range feats {
				clear(h[f*gbdtBins : (f+1)*gbdtBins])
			}
			g.buildPart(part, feats, h)
		}()
	}
	wg.Wait()
	for _, f := range feats {
		dst := hist[f*gbdtBins : (f+1)*gbdtBins]
		for p := range gbdtParts {
			src := g.parts[p][f*gbdtBins : (f+1)*gbdtBins]
			for b := range dst {
				dst[b].g += src[b].g
				dst[b].h += src[b].h
			}
		}
	}
}

func (g *grower) buildPart(rows []int32, feats []int, hist []gh) {
	nf := g.nf
	for _, r := range rows {
		b := g.bins[int(r)*nf : int(r)*nf+nf]
		gr, he := g.grad[r], g.hess[r]
		for _, f := range feats {
			e := &hist[f*gbdtBins+int(b[f])]
			e.g += gr
			e.h += he
		}
	}
}

// candidate is the best split of a node.
type candidate struct {
	node   *growNode
	gain   float64
	feat   int
	cut    int // split "bin < cut"
	gl, hl float64
}

// best finds the best split of n over feats, or gain <= 0.
func (g *grower) best(n *growNode, feats []int) candidate {
	lambda, mcw := g.c.l2, g.c.minChildWeight
	best := candidate{node: n}
	parent := n.g * n.g / (n.h + lambda)
	for _, f := range feats {
		hist := n.hist[f*gbdtBins : (f+1)*gbdtBins]
		var gl, hl float64
		for k := 1; k <= len(g.cuts[f]); k++ {
			gl += hist[k-1].g
			hl += hist[k-1].h
			gr, hr := n.g-gl, n.h-hl
			if hl < mcw || hr < mcw {
				continue
			}
			gain := gl*gl/(hl+lambda) + gr*gr/(hr+lambda) - parent
			if gain > best.gain+1e-12 {
				best = candidate{node: n, gain: gain, feat: f, cut: k, gl: gl, hl: hl}
			}
		}
	}
	return best
}

// grow grows a tree on rows over feats, level by level, and returns it
// with each split's bin boundary (see binLeaf).
func (g *grower) grow(rows []int32, feats []int) (models.Tree, []int32) {
	var t models.Tree
	var cutAt []int32
	add := func() int32 {
		cutAt = append(cutAt, 0)
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, -1)
		t.Right = append(t.Right, -1)
		t.DefaultLeft = append(t.DefaultLeft, false)
		t.Value = append(t.Value, 0)
		t.Cover = append(t.Cover, 0)
		return int32(len(t.Feature) - 1)
	}
	root := &growNode{id: add(), rows: rows, hist: g.newHist()}
	g.build(rows, feats, root.hist)
	for _, r := range rows {
		root.g += g.grad[r]
		root.h += g.hess[r]
	}
	lambda, lr := g.c.l2, g.c.lr
	leaf := func(n *growNode) {
		t.Value[n.id] = float32(-n.g / (n.h + lambda) * lr)
		t.Cover[n.id] = float32(n.h)
		g.pool = append(g.pool, n.hist)
	}
	level := []*growNode{root}
	leaves := 1
	for depth := 0; len(level) > 0; depth++ {
		var cands []candidate
		for _, n := range level {
			if depth < g.c.maxDepth {
				if cd := g.best(n, feats); cd.gain > 0 {
					cands = append(cands, cd)
					continue
				}
			}
			leaf(n)
		}
		if g.c.maxLeaves > 0 {
			// Largest gains first; ties by node order (stable).
			slices.SortStableFunc(cands, func(a, b candidate) int {
				switch {
				case a.gain > b.gain:
					return -1
				case a.gain < b.gain:
					return 1
				}
				return 0
			})
		}
		var next []*growNode
		for _, cd := range cands {
			n := cd.node
			if g.c.maxLeaves > 0 && leaves >= g.c.maxLeaves {
				leaf(n)
				continue
			}
			leaves++
			f := cd.feat
			// Partition in place, order kept on both sides: left rows
			// compacted to the front, right rows through the scratch.
			nl := 0
			g.scratch = g.scratch[:0]
			for _, r := range n.rows {
				if int(g.bins[int(r)*g.nf+f]) < cd.cut {
					n.rows[nl] = r
					nl++
				} else {
					g.scratch = append(g.scratch, r)
				}
			}
			copy(n.rows[nl:], g.scratch)
			left, right := n.rows[:nl], n.rows[nl:]
			l := &growNode{id: add(), rows: left, g: cd.gl, h: cd.hl}
			rt := &growNode{id: add(), rows: right, g: n.g - cd.gl, h: n.h - cd.hl}
			// The smaller child by a pass over its rows, the other by
			// subtraction from the parent.
			small, large := l, rt
			if len(right) < len(left) {
				small, large = rt, l
			}
			small.hist = g.newHist()
			g.build(small.rows, feats, small.hist)
			large.hist = n.hist
			for _, ff := range feats {
				lh := large.hist[ff*gbdtBins : (ff+1)*gbdtBins]
				sh := small.hist[ff*gbdtBins : (ff+1)*gbdtBins]
				for b := range lh {
					lh[b].g -= sh[b].g
					lh[b].h -= sh[b].h
				}
			}
			t.Feature[n.id] = int32(f)
			t.Threshold[n.id] = g.cuts[f][cd.cut-1]
			cutAt[n.id] = int32(cd.cut)
			t.Left[n.id], t.Right[n.id] = l.id, rt.id
			t.Cover[n.id] = float32(n.h)
			// Missing values (none in training) follow the heavier child.
			t.DefaultLeft[n.id] = cd.hl >= n.h-cd.hl
			next = append(next, l, rt)
		}
		level = next
	}
	return t, cutAt
}
