package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/streamscore/streamscore/models"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// gemmShapes are the micro-batch shapes of the GEMM contract (M, K, N).
var gemmShapes = [][3]int{
	{1, 64, 128}, {16, 64, 128}, {64, 64, 128}, {256, 64, 128}, {1024, 64, 128},
	{256, 32, 64}, {256, 256, 256}, {256, 128, 512},
}

// BenchmarkGEMM measures C = A·W (identity, no bias) in GFLOP/s (2·M·K·N
// per call) for the streamscore kernel, weights packed before the timer,
// and for gonum's blas32.Gemm on the same data, in the same run.
//
// Both run on one core: the GEMM targets are per core, the streamscore
// kernel is single-threaded (a scoring worker owns its core), and gonum's
// Gemm splits larger shapes over runtime.GOMAXPROCS(0) goroutines. So the
// benchmark sets GOMAXPROCS to 1 for its duration and restores it after,
// whatever -cpu says (the -N suffix of the names still shows the -cpu
// value). See bench/README.md, "GEMM core".
func BenchmarkGEMM(b *testing.B) {
	prev := runtime.GOMAXPROCS(1)
	b.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	b.Logf("kernel path: %s; GOMAXPROCS 1 for both implementations (was %d)", models.KernelPath(), prev)
	// The ceiling: register-only FMAs of the active path, no loads, no
	// epilogue. streamscore/FMA-peak says how close each shape gets;
	// FMA-peak/gonum is the largest ratio to gonum any fp32 GEMM can reach
	// on this core in this run.
	b.Run("FMA-peak", func(b *testing.B) {
		const iters = 4096
		if models.KernelFMAPeak(1) == 0 {
			b.Skipf("kernel path %s has no FMA loop", models.KernelPath())
		}
		flops := 0
		for b.Loop() {
			flops += models.KernelFMAPeak(iters)
		}
		b.ReportMetric(float64(flops)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	for _, s := range gemmShapes {
		m, k, n := s[0], s[1], s[2]
		r := rand.New(rand.NewPCG(uint64(m), uint64(k*n)))
		a, w, c := randFloats(r, m*k), randFloats(r, k*n), make([]float32, m*n)
		flops := 2 * float64(m) * float64(k) * float64(n)
		name := fmt.Sprintf("M=%d,K=%d,N=%d", m, k, n)
		b.Run(name+"/impl=streamscore", func(b *testing.B) {
			d := models.PackDense(k, n, w)
			b.SetBytes(int64(4 * (m*k + m*n)))
			b.ReportAllocs()
			for b.Loop() {
				d.Gemm(m, a, k, nil, models.ActIdentity, c, n, false)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"/impl=gonum", func(b *testing.B) {
			ga := blas32.General{Rows: m, Cols: k, Stride: k, Data: a}
			gw := blas32.General{Rows: k, Cols: n, Stride: n, Data: w}
			gc := blas32.General{Rows: m, Cols: n, Stride: n, Data: c}
			b.SetBytes(int64(4 * (m*k + m*n)))
			b.ReportAllocs()
			for b.Loop() {
				blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, ga, gw, 0, gc)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func randFloats(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}
