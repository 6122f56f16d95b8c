package gbdt

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// BenchmarkXGBoostModel scores the XGBoost model named by
// $STREAMSCORE_XGB_BENCH_MODEL (written by testdata/bench.py, which also
// times XGBoost's predictor on the same model) at batch 1 and 256; it is
// skipped without it. rows/s is per core when run with GOMAXPROCS=1.
func BenchmarkXGBoostModel(b *testing.B) {
	path := os.Getenv("STREAMSCORE_XGB_BENCH_MODEL")
	if path == "" {
		b.Skip("STREAMSCORE_XGB_BENCH_MODEL not set (run testdata/bench.py)")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	const nf = 39
	var inputs []string
	for i := range nf {
		inputs = append(inputs, fmt.Sprintf("f%d", i))
	}
	f, err := Import(raw, "bench", inputs)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := f.Encode()
	if err != nil {
		b.Fatal(err)
	}
	m, err := models.Parse(enc)
	if err != nil {
		b.Fatal(err)
	}
	s, err := m.Bind(inputs)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	const n = 4096
	x := make([]float32, n*nf)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("trees=%d/batch=%d", m.TreeCount(), batch), func(b *testing.B) {
			out := make([]float32, batch)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Score(x[i*nf:(i+batch)*nf], batch, out)
				i = (i + batch) % n
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	b.Run("reasons", func(b *testing.B) {
		var rs []models.Reason
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			rs = s.Reasons(x, i, 3, rs[:0])
			i = (i + 1) % n
		}
	})
}
