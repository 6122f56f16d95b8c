package models

// Exact TreeSHAP (Lundberg, Erion, Lee 2018, "Consistent individualized
// feature attribution for tree ensembles", Algorithm 2): the Shapley values
// of the margin of each tree for one row, in O(leaves · depth²) per tree,
// with the conditional expectations taken over the training distribution
// the nodes' covers describe. The recursion follows XGBoost's
// RegTree::CalculateContributions (its pred_contribs), so that the values
// agree with XGBoost's; they are computed in float64.

// shapTree is one tree in the file's node numbering, with its node means.
type shapTree struct {
	feat  []int32
	thr   []float32
	left  []int32
	right []int32
	dLeft []bool
	value []float32
	cover []float32
	depth int     // edges from the root to the deepest leaf
	mean  float64 // expected leaf value under the covers
}

func newShapTree(t *Tree) shapTree {
	st := shapTree{feat: t.Feature, thr: t.Threshold, left: t.Left, right: t.Right, dLeft: t.DefaultLeft, value: t.Value, cover: t.Cover}
	st.depth = st.depthOf(0)
	st.mean = st.meanOf(0)
	return st
}

func (t *shapTree) depthOf(n int32) int {
	if t.feat[n] < 0 {
		return 0
	}
	return 1 + max(t.depthOf(t.left[n]), t.depthOf(t.right[n]))
}

// meanOf is the cover-weighted mean leaf value below n (XGBoost's
// FillNodeMeanValue: children weighted by their covers over the node's).
func (t *shapTree) meanOf(n int32) float64 {
	if t.feat[n] < 0 {
		return float64(t.value[n])
	}
	l, r := t.left[n], t.right[n]
	return (t.meanOf(l)*float64(t.cover[l]) + t.meanOf(r)*float64(t.cover[r])) / float64(t.cover[n])
}

// next is the child of split n that x goes to.
func (t *shapTree) next(n int32, x []float32) int32 {
	v := x[t.feat[n]]
	switch {
	case v != v:
		if t.dLeft[n] {
			return t.left[n]
		}
		return t.right[n]
	case v < t.thr[n]:
		return t.left[n]
	}
	return t.right[n]
}

// pathElem is one element of the unique path of features split on.
type pathElem struct {
	feature      int32 // -1 for the root's element
	zeroFraction float64
	oneFraction  float64
	pweight      float64
}

// treeSHAP holds the scratch of the recursion: the unique paths of all
// depths, one stacked above the other.
type treeSHAP struct {
	path []pathElem
}

// contributions adds to phi (one per input) the SHAP values of every tree
// of e for the row x (the model's inputs, raw).
func (ts *treeSHAP) contributions(e *ensemble, x []float32, phi []float64) {
	d := e.maxDepth + 2
	if n := d * (d + 1) / 2; len(ts.path) < n {
		ts.path = make([]pathElem, n)
	}
	for i := range e.shap {
		t := &e.shap[i]
		ts.recurse(t, x, phi, 0, 0, 0, 1, 1, -1)
	}
}

// recurse is TreeShap of XGBoost without conditioning: node n, the unique
// path of depth `depth` starting at ts.path[at], and the fractions of the
// edge into n (split on parentFeature).
func (ts *treeSHAP) recurse(t *shapTree, x []float32, phi []float64, n int32, depth, parentAt int, zeroFraction, oneFraction float64, parentFeature int32) {
	// As XGBoost: this node's path starts depth+1 elements above its
	// parent's and begins as a copy of it (the last element is then
	// overwritten by the extension).
	at := parentAt + depth + 1
	up := ts.path[at : at+depth+1]
	copy(up, ts.path[parentAt:parentAt+depth+1])
	extendPath(up, depth, zeroFraction, oneFraction, parentFeature)
	if t.feat[n] < 0 {
		v := float64(t.value[n])
		for i := 1; i <= depth; i++ {
			w := unwoundPathSum(up, depth, i)
			el := &up[i]
			phi[el.feature] += w * (el.oneFraction - el.zeroFraction) * v
		}
		return
	}
	split := t.feat[n]
	hot := t.next(n, x)
	cold := t.left[n]
	if hot == cold {
		cold = t.right[n]
	}
	w := float64(t.cover[n])
	hotZero := float64(t.cover[hot]) / w
	coldZero := float64(t.cover[cold]) / w
	inZero, inOne := 1.0, 1.0
	k := 0
	for ; k <= depth; k++ {
		if up[k].feature == split {
			break
		}
	}
	if k != depth+1 {
		inZero, inOne = up[k].zeroFraction, up[k].oneFraction
		unwindPath(up, depth, k)
		depth--
	}
	ts.recurse(t, x, phi, hot, depth+1, at, hotZero*inZero, inOne, split)
	ts.recurse(t, x, phi, cold, depth+1, at, coldZero*inZero, 0, split)
}

func extendPath(up []pathElem, depth int, zeroFraction, oneFraction float64, feature int32) {
	up[depth] = pathElem{feature: feature, zeroFraction: zeroFraction, oneFraction: oneFraction}
	if depth == 0 {
		up[depth].pweight = 1
	}
	d1 := float64(depth + 1)
	for i := depth - 1; i >= 0; i-- {
		up[i+1].pweight += oneFraction * up[i].pweight * float64(i+1) / d1
		up[i].pweight = zeroFraction * up[i].pweight * float64(depth-i) / d1
	}
}

func unwindPath(up []pathElem, depth, k int) {
	one, zero := up[k].oneFraction, up[k].zeroFraction
	next := up[depth].pweight
	d1 := float64(depth + 1)
	for i := depth - 1; i >= 0; i-- {
		if one != 0 {
			tmp := up[i].pweight
			up[i].pweight = next * d1 / (float64(i+1) * one)
			next = tmp - up[i].pweight*zero*float64(depth-i)/d1
		} else if zero != 0 {
			up[i].pweight = up[i].pweight * d1 / (zero * float64(depth-i))
		}
	}
	for i := k; i < depth; i++ {
		up[i].feature, up[i].zeroFraction, up[i].oneFraction = up[i+1].feature, up[i+1].zeroFraction, up[i+1].oneFraction
	}
}

func unwoundPathSum(up []pathElem, depth, k int) float64 {
	one, zero := up[k].oneFraction, up[k].zeroFraction
	next := up[depth].pweight
	d1 := float64(depth + 1)
	var total float64
	for i := depth - 1; i >= 0; i-- {
		if one != 0 {
			tmp := next * d1 / (float64(i+1) * one)
			total += tmp
			next = up[i].pweight - tmp*zero*(float64(depth-i)/d1)
		} else if zero != 0 { // a child of zero cover (XGBoost guards it the same way)
			total += up[i].pweight / zero / (float64(depth-i) / d1)
		}
	}
	return total
}
