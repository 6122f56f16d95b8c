package models

import (
	"fmt"
	"math"
)

// Gradient-boosted trees (FamilyGBDT): the file form, its validation, the
// flat scoring layout and batch scoring. TreeSHAP reasons are in
// treeshap.go.

// Objectives of a FamilyGBDT model: how the sum of the trees' leaves (the
// margin) becomes the output. The names are XGBoost's.
const (
	ObjectiveLogistic = "binary:logistic"  // output sigmoid(margin), a probability
	ObjectiveSquared  = "reg:squarederror" // output the margin, a value
)

// Bounds on a FamilyGBDT model, checked by [Parse] so that a hostile file
// cannot make scoring or reasons run away.
const (
	MaxTrees     = 1 << 14 // trees per model
	MaxTreeNodes = 1 << 16 // nodes per tree
	MaxTreeDepth = 64      // edges from the root to the deepest leaf
)

// Trees is the ensemble of a FamilyGBDT model. The output's margin is
// BaseScore plus one leaf value per tree; Objective maps the margin to the
// output (sigmoid for ObjectiveLogistic, identity for ObjectiveSquared).
// The trees read the model's inputs as they are: Inputs[i].Mean and Std
// are recorded (the training data's statistics) but do not standardise
// anything, and a feature index in a tree is an index into Inputs.
type Trees struct {
	Objective string  `json:"objective"`  // ObjectiveLogistic or ObjectiveSquared
	BaseScore float64 `json:"base_score"` // margin before the first tree (log-odds for ObjectiveLogistic)
	Trees     []Tree  `json:"trees"`      // 1..MaxTrees
}

// Tree is one regression tree stored flat: node j is a split when
// Feature[j] >= 0 and a leaf when Feature[j] == -1; node 0 is the root.
// A split sends a row left when x[Feature[j]] < Threshold[j] (XGBoost's
// rule), right otherwise, and a missing value (NaN) to Left[j] when
// DefaultLeft[j], else to Right[j]. A leaf adds Value[j] to the margin.
// Cover[j] is the sum of the training rows' hessians that reached node j
// (the row count for squared error); TreeSHAP reasons weigh paths by it.
// All arrays have one entry per node; entries a node kind does not use
// (children of a leaf, the value of a split) must be 0 / -1 / false as
// documented per field. Every node is reachable from the root exactly
// once (no cycles, no sharing, no orphans).
type Tree struct {
	Feature     []int32   `json:"feature"`      // input index of the split, -1 for a leaf
	Threshold   []float32 `json:"threshold"`    // split threshold; 0 for a leaf
	Left        []int32   `json:"left"`         // left child; -1 for a leaf
	Right       []int32   `json:"right"`        // right child; -1 for a leaf
	DefaultLeft []bool    `json:"default_left"` // missing goes left; false for a leaf
	Value       []float32 `json:"value"`        // leaf value (margin units); 0 for a split
	Cover       []float32 `json:"cover"`        // >= 0; > 0 for a split
}

// validateTrees checks the Trees of a FamilyGBDT file with in inputs.
func (f *File) validateTrees() error {
	t := f.Trees
	if t == nil {
		return invalid("trees: missing (family gbdt)")
	}
	if len(f.Layers) != 0 || f.Conv != nil || f.Recurrent != nil {
		return invalid("family gbdt has trees only: layers, conv and recurrent must be absent")
	}
	switch {
	case t.Objective == ObjectiveLogistic && f.Output != OutputProbability,
		t.Objective == ObjectiveSquared && f.Output != OutputValue:
		return invalid("trees: objective %q does not give output %q", t.Objective, f.Output)
	case t.Objective != ObjectiveLogistic && t.Objective != ObjectiveSquared:
		return invalid("trees: objective %q: want %q or %q", t.Objective, ObjectiveLogistic, ObjectiveSquared)
	case !finite(t.BaseScore) || !finite(float64(float32(t.BaseScore))):
		return invalid("trees: base_score %v is not a finite float32", t.BaseScore)
	case len(t.Trees) == 0 || len(t.Trees) > MaxTrees:
		return invalid("trees: %d trees, want 1..%d", len(t.Trees), MaxTrees)
	}
	for i := range t.Trees {
		if err := t.Trees[i].validate(len(f.Inputs)); err != nil {
			return invalid("trees[%d]: %v", i, err)
		}
	}
	return nil
}

// validate checks one tree over in inputs; the error does not wrap
// ErrInvalidModel (the caller does).
func (t *Tree) validate(in int) error {
	n := len(t.Feature)
	if n == 0 || n > MaxTreeNodes {
		return fmt.Errorf("%d nodes, want 1..%d", n, MaxTreeNodes)
	}
	if len(t.Threshold) != n || len(t.Left) != n || len(t.Right) != n || len(t.DefaultLeft) != n || len(t.Value) != n || len(t.Cover) != n {
		return fmt.Errorf("node arrays of different lengths (feature %d, threshold %d, left %d, right %d, default_left %d, value %d, cover %d)",
			n, len(t.Threshold), len(t.Left), len(t.Right), len(t.DefaultLeft), len(t.Value), len(t.Cover))
	}
	for j := range n {
		c := float64(t.Cover[j])
		if !finite(c) || c < 0 {
			return fmt.Errorf("node %d: cover %v must be finite and >= 0", j, t.Cover[j])
		}
		if t.Feature[j] == -1 {
			if t.Left[j] != -1 || t.Right[j] != -1 || t.DefaultLeft[j] || t.Threshold[j] != 0 {
				return fmt.Errorf("node %d: a leaf has left = right = -1, default_left false and threshold 0", j)
			}
			if !finite(float64(t.Value[j])) {
				return fmt.Errorf("node %d: leaf value %v is not finite", j, t.Value[j])
			}
			continue
		}
		switch {
		case t.Feature[j] < 0 || int(t.Feature[j]) >= in:
			return fmt.Errorf("node %d: feature %d out of range of the %d inputs", j, t.Feature[j], in)
		case !finite(float64(t.Threshold[j])):
			return fmt.Errorf("node %d: threshold %v is not finite", j, t.Threshold[j])
		case t.Value[j] != 0:
			return fmt.Errorf("node %d: a split has value 0, got %v", j, t.Value[j])
		case c <= 0:
			return fmt.Errorf("node %d: a split has cover > 0, got %v", j, c)
		case t.Left[j] <= 0 || int(t.Left[j]) >= n || t.Right[j] <= 0 || int(t.Right[j]) >= n || t.Left[j] == t.Right[j]:
			return fmt.Errorf("node %d: children %d and %d: want two distinct nodes in 1..%d", j, t.Left[j], t.Right[j], n-1)
		case float64(t.Cover[t.Left[j]])+float64(t.Cover[t.Right[j]]) > float64(c)*(1+1e-3)+1e-6:
			// TreeSHAP takes a child's share of its parent's cover as a
			// probability: more than the parent makes every reason wrong.
			return fmt.Errorf("node %d: children's cover %v + %v exceeds the node's %v", j, t.Cover[t.Left[j]], t.Cover[t.Right[j]], c)
		}
	}
	// Every node reached exactly once from the root, depth bounded: a
	// tree, not a graph.
	seen := make([]bool, n)
	type item struct{ node, depth int32 }
	stack := []item{{0, 0}}
	seen[0] = true
	reached := 1
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if it.depth > MaxTreeDepth {
			return fmt.Errorf("deeper than %d", MaxTreeDepth)
		}
		if t.Feature[it.node] == -1 {
			continue
		}
		for _, c := range [2]int32{t.Left[it.node], t.Right[it.node]} {
			if seen[c] {
				return fmt.Errorf("node %d is reached twice (a cycle or a shared node)", c)
			}
			seen[c] = true
			reached++
			stack = append(stack, item{c, it.depth + 1})
		}
	}
	if reached != n {
		return fmt.Errorf("%d of %d nodes are not reachable from the root", n-reached, n)
	}
	return nil
}

// treeNode is one node of the scoring layout. Nodes are renumbered
// breadth-first so that a split's children are adjacent (right = left+1)
// and the step to a child is one add without a branch: left + (goes
// right) & split. A leaf is its own left child with split = 0, so that a
// row that reached it stays there: every row takes exactly depth steps
// through a tree, and the steps of consecutive rows are independent, which
// lets the CPU overlap them instead of mispredicting a branch per level.
type treeNode struct {
	feat   int32   // input index (0 for a leaf: read, not used)
	thr    float32 // threshold, or the leaf value
	left   int32   // index of the left child (itself for a leaf); the right one is left+1
	split  int32   // 1 for a split, 0 for a leaf
	dRight int32   // 1: missing (NaN) goes right
}

// ensemble is a FamilyGBDT model's trees in scoring layout.
type ensemble struct {
	logistic bool
	base     float32
	nodes    []treeNode // all trees, concatenated
	roots    []int32    // first node of each tree in nodes
	depths   []int32    // depth of each tree (steps from root to its deepest leaf)
	// groupDepth[g] is the largest depth of trees g·block .. g·block+block-1.
	groupDepth []int32
	maxDepth   int

	// TreeSHAP (treeshap.go), in the original node numbering of the file
	// per tree: shap[t].
	shap []shapTree
	// expected is the model's expected margin over the training
	// distribution the covers describe: base + Σ_t mean value of tree t.
	expected float64
}

func newEnsemble(t *Trees) *ensemble {
	e := &ensemble{logistic: t.Objective == ObjectiveLogistic, base: float32(t.BaseScore), expected: float64(float32(t.BaseScore))}
	for i := range t.Trees {
		tr := &t.Trees[i]
		root := int32(len(e.nodes))
		e.roots = append(e.roots, root)
		// Breadth-first: queue holds file node ids; position in the queue
		// is the new id relative to root.
		queue := []int32{0}
		for q := 0; q < len(queue); q++ {
			j := queue[q]
			var nd treeNode
			if tr.Feature[j] < 0 {
				nd = treeNode{thr: tr.Value[j], left: root + int32(q)}
			} else {
				nd = treeNode{feat: tr.Feature[j], thr: tr.Threshold[j], left: root + int32(len(queue)), split: 1}
				if !tr.DefaultLeft[j] {
					nd.dRight = 1
				}
				queue = append(queue, tr.Left[j], tr.Right[j])
			}
			e.nodes = append(e.nodes, nd)
		}
		st := newShapTree(tr)
		e.depths = append(e.depths, int32(st.depth))
		if i%block == 0 {
			e.groupDepth = append(e.groupDepth, 0)
		}
		g := &e.groupDepth[len(e.groupDepth)-1]
		*g = max(*g, int32(st.depth))
		e.maxDepth = max(e.maxDepth, st.depth)
		e.expected += st.mean
		e.shap = append(e.shap, st)
	}
	return e
}

// margins writes into out the margin of each of rows rows of xs (rows ×
// in, the model's inputs). Trees are the outer loop so that one tree's
// nodes stay in cache over the batch; each row's margin accumulates in
// float32 in tree order, as XGBoost's predictor does.
func (e *ensemble) margins(xs []float32, in, rows int, out []float32) {
	out = out[:rows]
	for r := range out {
		out[r] = e.base
	}
	nodes := e.nodes
	full := rows &^ (block - 1)
	for t, root := range e.roots {
		if full == 0 {
			break
		}
		depth := e.depths[t]
		// block rows step through the tree together: block independent
		// chains of loads per level for the CPU to overlap.
		for r0 := 0; r0 < full; r0 += block {
			var n [block]int32
			for k := range n {
				n[k] = root
			}
			for range depth {
				for k := range n {
					nd := &nodes[n[k]]
					v := xs[(r0+k)*in+int(nd.feat)]
					var right int32
					if v >= nd.thr {
						right = 1
					}
					if v != v {
						right = nd.dRight
					}
					n[k] = nd.left + right&nd.split
				}
			}
			for k := range n {
				out[r0+k] += nodes[n[k]].thr
			}
		}
	}
	// The rows left over (all of them at batch 1): block trees step
	// through together for one row, the leaves added in tree order.
	for r := full; r < rows; r++ {
		x := xs[r*in : (r+1)*in]
		sum := out[r]
		for t0 := 0; t0 < len(e.roots); t0 += block {
			k := min(block, len(e.roots)-t0)
			var n [block]int32
			copy(n[:k], e.roots[t0:t0+k])
			for range e.groupDepth[t0/block] {
				for j := range n[:k] {
					nd := &nodes[n[j]]
					v := x[nd.feat]
					var right int32
					if v >= nd.thr {
						right = 1
					}
					if v != v {
						right = nd.dRight
					}
					n[j] = nd.left + right&nd.split
				}
			}
			for j := range n[:k] {
				sum += nodes[n[j]].thr
			}
		}
		out[r] = sum
	}
}

// block is the number of rows that step through a tree together.
const block = 8

// finish maps margins to outputs in place.
func (e *ensemble) finish(out []float32) {
	if !e.logistic {
		return
	}
	for r, v := range out {
		out[r] = float32(1 / (1 + math.Exp(-float64(v))))
	}
}

// scoreTrees gathers the model's inputs of rows rows of x (raw, not
// standardised) into s.xs and scores them.
func (s *Scorer) scoreTrees(x []float32, rows int, out []float32) {
	in := len(s.m.inputs)
	s.xs = grow(s.xs, rows*in)
	s.xsOf = nil // raw values: never the inputs of another scorer
	xs, cols := s.xs, s.cols
	for r := 0; r < rows; r++ {
		src := x[r*s.width : (r+1)*s.width]
		dst := xs[r*in : (r+1)*in]
		for i, c := range cols {
			dst[i] = src[c]
		}
	}
	e := s.m.trees
	e.margins(xs, in, rows, out)
	e.finish(out[:rows])
}

// ExpectedMargin returns, for a FamilyGBDT model, the expected margin over
// the training data the trees' covers describe (the base score plus each
// tree's cover-weighted mean leaf value): the point the TreeSHAP reasons
// are relative to, XGBoost's bias column of pred_contribs. ok is false for
// other families.
func (m *Model) ExpectedMargin() (v float64, ok bool) {
	if m.trees == nil {
		return 0, false
	}
	return m.trees.expected, true
}

// TreeCount returns the number of trees of a FamilyGBDT model (0 for
// other families).
func (m *Model) TreeCount() int {
	if m.trees == nil {
		return 0
	}
	return len(m.trees.roots)
}
