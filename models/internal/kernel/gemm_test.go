package kernel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

const guard = float32(-7777) // sentinel written around every output

// naive is the reference loop from the Gemm doc, in float64.
func naive(m, k, n int, a []float32, lda int, w []float32, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			if accumulate {
				s = float64(c[i*ldc+j])
			}
			for l := 0; l < k; l++ {
				s += float64(a[i*lda+l]) * float64(w[l*n+j])
			}
			if bias != nil {
				s += float64(bias[j])
			}
			c[i*ldc+j] = float32(apply64(act, s))
		}
	}
}

func apply64(act Activation, s float64) float64 {
	switch act {
	case ReLU:
		return math.Max(s, 0)
	case Sigmoid:
		return 1 / (1 + math.Exp(-s))
	case Tanh:
		return math.Tanh(s)
	}
	return s
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// checkShape runs Gemm on an m×k×n problem with padded strides, an unaligned
// offset and guard values, and compares against the naive loop and (for the
// identity activation without accumulation) gonum's blas32.Gemm.
func checkShape(t *testing.T, r *rand.Rand, m, k, n int, act Activation, accumulate, withBias bool) {
	t.Helper()
	checkShapeLd(t, r, m, k, n, act, accumulate, withBias, k+2, n+5)
}

// checkShapeLd is checkShape with the given leading dimensions.
func checkShapeLd(t *testing.T, r *rand.Rand, m, k, n int, act Activation, accumulate, withBias bool, lda, ldc int) {
	t.Helper()
	const off = 3 // unaligned start of A and C
	a := randSlice(r, off+m*lda+1)
	w := randSlice(r, k*n)
	var bias []float32
	if withBias {
		bias = randSlice(r, n)
	}
	cInit := randSlice(r, off+m*ldc+1)
	for i := range cInit {
		if i < off || i >= off+m*ldc || (i-off)%ldc >= n {
			cInit[i] = guard
		}
	}
	got := append([]float32(nil), cInit...)
	want := append([]float32(nil), cInit...)
	Gemm(m, k, n, a[off:], lda, Pack(k, n, w), bias, act, got[off:], ldc, accumulate)
	naive(m, k, n, a[off:], lda, w, bias, act, want[off:], ldc, accumulate)
	tol := 1e-5 * float64(k+2)
	for i := range got {
		if cInit[i] == guard {
			if got[i] != guard {
				t.Fatalf("m=%d k=%d n=%d: guard at %d overwritten: %v", m, k, n, i, got[i])
			}
			continue
		}
		if d := math.Abs(float64(got[i] - want[i])); d > tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("m=%d k=%d n=%d act=%v acc=%v bias=%v: c[%d] got %v, want %v",
				m, k, n, act, accumulate, withBias, i, got[i], want[i])
		}
	}
	if act != Identity || accumulate || withBias || m == 0 || n == 0 || k == 0 {
		return
	}
	ref := append([]float32(nil), cInit...)
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas32.General{Rows: m, Cols: k, Stride: lda, Data: a[off : off+(m-1)*lda+k]},
		blas32.General{Rows: k, Cols: n, Stride: n, Data: w},
		0, blas32.General{Rows: m, Cols: n, Stride: ldc, Data: ref[off : off+(m-1)*ldc+n]})
	for i := range got {
		if d := math.Abs(float64(got[i] - ref[i])); d > tol*math.Max(1, math.Abs(float64(ref[i]))) {
			t.Fatalf("m=%d k=%d n=%d: c[%d] got %v, gonum %v", m, k, n, i, got[i], ref[i])
		}
	}
}

// forEachPath runs f once per path this CPU can run, with the dispatch
// forced to it (the others forced off).
func forEachPath(t *testing.T, f func(t *testing.T)) {
	for _, p := range availablePaths() {
		t.Run(p, func(t *testing.T) {
			forcePath(t, p)
			f(t)
		})
	}
}

func TestGemmAllSmallShapes(t *testing.T) {
	maxDim := 40 // every M, K, N in 0..40
	if raceEnabled || testing.Short() {
		maxDim = 20
	}
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for m := 0; m <= maxDim; m++ {
			for k := 0; k <= maxDim; k++ {
				for n := 0; n <= maxDim; n++ {
					checkShape(t, r, m, k, n, Identity, false, false)
					if (m+k+n)%3 == 0 || max(m, k, n) <= 17 {
						checkShape(t, r, m, k, n, Activation((m+k+n)%4), (m+n)%2 == 0, (k+n)%3 != 0)
					}
				}
			}
		}
	})
}

func TestGemmRandomShapes(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		sizes := []int{1, 2, 3, 5, 7, 8, 9, 11, 13, 15, 16, 17, 23, 31, 32, 33, 47, 63, 64, 65, 97, 127, 128, 129, 130, 257}
		for it := 0; it < 300; it++ {
			m := sizes[r.IntN(len(sizes))] + r.IntN(3)
			k := sizes[r.IntN(len(sizes))]
			n := sizes[r.IntN(len(sizes))]
			checkShape(t, r, m, k, n, Activation(r.IntN(4)), r.IntN(2) == 0, r.IntN(2) == 0)
		}
		// Tight leading dimensions (lda = k, ldc = n): narrow outputs are
		// then contiguous, and the activation pass runs over them flat.
		for _, n := range []int{1, 2, 3, 7, 15, 16, 17, 33} {
			for _, m := range []int{1, 5, 12, 13, 25, 40, 256} {
				for act := Identity; act <= Tanh; act++ {
					checkShapeLd(t, r, m, 34, n, act, m%2 == 0, true, 34, n)
				}
			}
		}
		// The benchmark shapes.
		for _, s := range [][3]int{{1, 64, 128}, {16, 64, 128}, {64, 64, 128}, {256, 64, 128}, {1024, 64, 128}, {256, 32, 64}, {256, 256, 256}, {256, 128, 512}} {
			for act := Identity; act <= Tanh; act++ {
				checkShape(t, r, s[0], s[1], s[2], act, act == Tanh, act != Identity)
			}
		}
	})
}

// actMaxErr is the documented bound on |act(x) - exact| for the vectorised
// sigmoid and tanh (measured maximum: see TestActivationAccuracy).
const actMaxErr = 1e-6

// activationSpecials are the inputs every activation test includes: both
// zeros, ±Inf, NaN, the extremes of float32, denormals, the clamp points of
// the exponential and of tanh's 2x, and ordinary values.
var activationSpecials = []float32{
	0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
	-1e30, -100, -88.7, -88.3, -87.3, -44.15, -43.65, -20, -9, -5, -1, -0.5, -1e-7,
	1e-7, 0.5, 1, 5, 9, 20, 43.65, 44.15, 87.3, 88.3, 88.7, 100, 1e30,
}

// TestActivationAccuracy runs every activation through Gemm on every path
// (C = act(0·1 + bias) with bias = x, which is exactly act(x)) over the
// specials and a sweep of the float32 bit patterns (every 997th: 4.3 M
// values of both signs, denormals, huge magnitudes, Inf and NaN patterns),
// and checks the error against float64 math: at most actMaxErr absolute for
// sigmoid and tanh, exact for identity and ReLU, NaN in gives NaN out. Set
// STREAMSCORE_EXHAUSTIVE=1 to sweep all 2^32 inputs (minutes per path).
func TestActivationAccuracy(t *testing.T) {
	stride := uint64(997)
	if raceEnabled || testing.Short() {
		stride = 100003
	}
	if os.Getenv("STREAMSCORE_EXHAUSTIVE") != "" {
		stride = 1
	}
	forEachPath(t, func(t *testing.T) {
		const chunk = 1 << 16
		xs := make([]float32, 0, chunk)
		c := make([]float32, chunk)
		packs := map[int]*Packed{}
		zero := []float32{0}
		for act := Identity; act <= Tanh; act++ {
			var worst float64
			var worstX float32
			count := 0
			check := func(part []float32) {
				w := packs[len(part)]
				if w == nil {
					w = Pack(1, len(part), ones(len(part)))
					packs[len(part)] = w
				}
				Gemm(1, 1, len(part), zero, 1, w, part, act, c, len(part), false)
				count += len(part)
				for i, x := range part {
					got := c[i]
					want := apply64(act, float64(x))
					if math.IsNaN(want) {
						if !math.IsNaN(float64(got)) {
							t.Fatalf("%v(%v) = %v, want NaN", act, x, got)
						}
						continue
					}
					if act == Identity || act == ReLU {
						if float32(want) != got {
							t.Fatalf("%v(%v) = %v, want %v", act, x, got, want)
						}
						continue
					}
					if d := math.Abs(float64(got) - want); d > worst || math.IsNaN(d) {
						worst, worstX = d, x
					}
				}
			}
			check(activationSpecials)
			for b := uint64(0); b < 1<<32; b += stride {
				xs = append(xs, math.Float32frombits(uint32(b)))
				if len(xs) == chunk {
					check(xs)
					xs = xs[:0]
				}
			}
			if len(xs) > 0 {
				check(xs)
				xs = xs[:0]
			}
			if worst > actMaxErr || math.IsNaN(worst) {
				t.Errorf("%v: max |error| %.3g at x = %v, want <= %g", act, worst, worstX, actMaxErr)
			}
			t.Logf("%v: max |error| %.3g at x = %v over %d inputs", act, worst, worstX, count)
		}
	})
	if s := sigmoid32(-1e30); s != 0 {
		t.Errorf("sigmoid(-1e30) = %v, want 0", s)
	}
}

func ones(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func TestPackLayout(t *testing.T) {
	k, n := 3, 18
	w := make([]float32, k*n)
	for i := range w {
		w[i] = float32(i + 1)
	}
	p := Pack(k, n, w)
	if got, want := len(p.data), 2*k*PanelWidth; got != want {
		t.Fatalf("len(data) = %d, want %d", got, want)
	}
	for l := 0; l < k; l++ {
		for j := 0; j < 2*PanelWidth; j++ {
			got := p.data[(j/PanelWidth)*k*PanelWidth+l*PanelWidth+j%PanelWidth]
			var want float32
			if j < n {
				want = w[l*n+j]
			}
			if got != want {
				t.Fatalf("(%d,%d) = %v, want %v", l, j, got, want)
			}
		}
	}
}

func TestGemmPanics(t *testing.T) {
	p := Pack(2, 3, make([]float32, 6))
	a := make([]float32, 8)
	c := make([]float32, 12)
	tests := []struct {
		name string
		f    func()
	}{
		{"shape mismatch", func() { Gemm(2, 3, 3, a, 3, p, nil, Identity, c, 3, false) }},
		{"lda too small", func() { Gemm(2, 2, 3, a, 1, p, nil, Identity, c, 3, false) }},
		{"ldc too small", func() { Gemm(2, 2, 3, a, 2, p, nil, Identity, c, 2, false) }},
		{"a too short", func() { Gemm(5, 2, 3, a, 2, p, nil, Identity, c, 3, false) }},
		{"c too short", func() { Gemm(4, 2, 3, a, 2, p, nil, Identity, c[:5], 3, false) }},
		{"bias too short", func() { Gemm(2, 2, 3, a, 2, p, []float32{1}, Identity, c, 3, false) }},
		{"bad activation", func() { Gemm(2, 2, 3, a, 2, p, nil, Activation(9), c, 3, false) }},
		{"nil packed", func() { Gemm(2, 2, 3, a, 2, nil, nil, Identity, c, 3, false) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("got no panic, want one")
				}
			}()
			tc.f()
		})
	}
}

func TestGemmNoAlloc(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	a, w, c := randSlice(r, 64*32), Pack(32, 48, randSlice(r, 32*48)), make([]float32, 64*48)
	bias := randSlice(r, 48)
	if n := testing.AllocsPerRun(10, func() { Gemm(64, 32, 48, a, 32, w, bias, ReLU, c, 48, false) }); n != 0 {
		t.Errorf("allocs per call = %v, want 0", n)
	}
}

// BenchmarkGemm reports GFLOP/s (2·M·K·N per call) for each path this CPU
// runs and, beside them, gonum's blas32.Gemm on the same shape. The GEMM
// contract benchmark (BenchmarkGEMM in bench/) runs the shapes of the issue
// through the exported API; this one covers the paths and activations.
func BenchmarkGemm(b *testing.B) {
	shapes := []struct{ m, k, n int }{
		{1, 64, 128}, {16, 64, 128}, {256, 24, 32}, {256, 32, 16}, {256, 64, 128}, {256, 32, 64}, {256, 128, 128}, {1024, 256, 256},
	}
	for _, s := range shapes {
		r := rand.New(rand.NewPCG(7, 8))
		a, wRaw, c := randSlice(r, s.m*s.k), randSlice(r, s.k*s.n), make([]float32, s.m*s.n)
		bias := randSlice(r, s.n)
		w := Pack(s.k, s.n, wRaw)
		flops := 2 * float64(s.m*s.k*s.n)
		name := fmt.Sprintf("%dx%dx%d", s.m, s.k, s.n)
		for _, p := range availablePaths() {
			for _, act := range []Activation{Identity, Sigmoid, Tanh} {
				b.Run(p+"_"+act.String()+"_"+name, func(b *testing.B) {
					forcePath(b, p)
					b.ReportAllocs()
					b.SetBytes(int64(4 * (s.m*s.k + s.m*s.n)))
					for b.Loop() {
						Gemm(s.m, s.k, s.n, a, s.k, w, bias, act, c, s.n, false)
					}
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
		b.Run("gonum_"+name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(4 * (s.m*s.k + s.m*s.n)))
			ga := blas32.General{Rows: s.m, Cols: s.k, Stride: s.k, Data: a}
			gw := blas32.General{Rows: s.k, Cols: s.n, Stride: s.n, Data: wRaw}
			gc := blas32.General{Rows: s.m, Cols: s.n, Stride: s.n, Data: c}
			for b.Loop() {
				blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, ga, gw, 0, gc)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkActivationCost measures what sigmoid and tanh add to a GEMM, as
// a fraction of the identity GEMM on the same shape and path. Each round
// times a batch of identity, sigmoid and tanh calls back to back (rotating
// the order); the metrics sigmoid_extra and tanh_extra are the medians over
// the rounds of act/identity − 1. Neighbours on a shared machine slow whole
// seconds at a time, so separate benchmarks of each activation disagree by
// more than the effect; adjacent batches see the same conditions.
func BenchmarkActivationCost(b *testing.B) {
	for _, s := range []struct{ m, k, n int }{{256, 64, 128}, {1, 64, 128}} {
		r := rand.New(rand.NewPCG(7, 8))
		a, wRaw, c := randSlice(r, s.m*s.k), randSlice(r, s.k*s.n), make([]float32, s.m*s.n)
		bias := randSlice(r, s.n)
		w := Pack(s.k, s.n, wRaw)
		reps := max(1, 32768/(s.m*s.n)) // ≥ 32768 outputs per batch
		for _, p := range availablePaths() {
			b.Run(fmt.Sprintf("%s_%dx%dx%d", p, s.m, s.k, s.n), func(b *testing.B) {
				forcePath(b, p)
				acts := [3]Activation{Identity, Sigmoid, Tanh}
				var extra [2][]float64
				for round := 0; b.Loop(); round++ {
					var ns [3]time.Duration
					for j := range acts {
						v := (j + round) % 3
						t0 := time.Now()
						for range reps {
							Gemm(s.m, s.k, s.n, a, s.k, w, bias, acts[v], c, s.n, false)
						}
						ns[v] = time.Since(t0)
					}
					extra[0] = append(extra[0], float64(ns[1])/float64(ns[0])-1)
					extra[1] = append(extra[1], float64(ns[2])/float64(ns[0])-1)
				}
				for i, unit := range []string{"sigmoid_extra", "tanh_extra"} {
					slices.Sort(extra[i])
					b.ReportMetric(extra[i][len(extra[i])/2], unit)
				}
			})
		}
	}
}

// TestActivate: Activate on every path matches the float64 functions within
// the SIMD bound, touches only the m×n block, and leaves NaN as NaN.
func TestActivate(t *testing.T) {
	forEachPath(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, act := range []Activation{ReLU, Sigmoid, Tanh} {
			for _, sh := range [][3]int{{1, 1, 1}, {1, 17, 17}, {3, 16, 20}, {7, 33, 40}, {12, 128, 130}} {
				m, n, ldc := sh[0], sh[1], sh[2]
				c := make([]float32, m*ldc+5)
				for i := range c {
					c[i] = float32(r.NormFloat64() * 6)
				}
				c[0] = float32(math.NaN())
				orig := append([]float32(nil), c...)
				Activate(act, m, n, c, ldc)
				for idx, v := range c {
					i, j := idx/ldc, idx%ldc
					if i >= m || j >= n {
						if v != orig[idx] && !(v != v && orig[idx] != orig[idx]) {
							t.Fatalf("%v %v: element %d outside the block changed", act, sh, idx)
						}
						continue
					}
					x := float64(orig[idx])
					var want float64
					switch act {
					case ReLU:
						want = math.Max(x, 0)
					case Sigmoid:
						want = 1 / (1 + math.Exp(-x))
					case Tanh:
						want = math.Tanh(x)
					}
					if x != x {
						if v == v {
							t.Fatalf("%v: NaN in, %v out", act, v)
						}
						continue
					}
					if d := math.Abs(float64(v) - want); d > 1e-6 {
						t.Fatalf("%v %v [%d,%d]: %v, want %v", act, sh, i, j, v, want)
					}
				}
			}
		}
	})
}
