package synth

import "math/rand/v2"

// alias samples an index in [0, n) with probability proportional to the
// weights it was built from, in O(1) per draw (Vose's alias method).
type alias struct {
	prob  []float64
	alias []int32
	items []int32 // optional mapping from slot to item (nil: identity)
}

// newAlias builds a sampler over weights (non-negative, not all zero). items,
// when not nil, maps each slot to the value sample returns. It returns nil
// when there is nothing to sample.
func newAlias(weights []float64, items []int32) *alias {
	n := len(weights)
	if n == 0 {
		return nil
	}
	var sum float64
	for _, w := range weights {
		sum += w
	}
	if sum <= 0 {
		return nil
	}
	a := &alias{prob: make([]float64, n), alias: make([]int32, n), items: items}
	scaled := make([]float64, n)
	small := make([]int32, 0, n)
	large := make([]int32, 0, n)
	for i, w := range weights {
		scaled[i] = w * float64(n) / sum
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		a.prob[s] = scaled[s]
		a.alias[s] = l
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, l := range large {
		a.prob[l] = 1
	}
	for _, s := range small { // rounding leftovers
		a.prob[s] = 1
	}
	return a
}

func (a *alias) sample(r *rand.Rand) int32 {
	i := r.IntN(len(a.prob))
	if r.Float64() >= a.prob[i] {
		i = int(a.alias[i])
	}
	if a.items != nil {
		return a.items[i]
	}
	return int32(i)
}
