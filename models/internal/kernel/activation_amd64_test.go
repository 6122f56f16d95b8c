//go:build amd64 && gc && !noasm

package kernel

import (
	"fmt"
	"testing"

	"golang.org/x/sys/cpu"
)

// BenchmarkActTile measures the vectorised sigmoid and tanh passes over one
// 12×32 tile (its size inside Gemm) and over a whole 256×128 output, beside
// the generic epilogue (float64 math.Exp or math.Tanh per element).
func BenchmarkActTile(b *testing.B) {
	for _, act := range []Activation{Sigmoid, Tanh} {
		for _, s := range [][2]int{{12, 32}, {256, 128}} {
			rows, cols := s[0], s[1]
			c := make([]float32, rows*cols)
			fill := func() {
				for i := range c {
					c[i] = float32(i%200-100) * 0.05
				}
			}
			name := fmt.Sprintf("%v_%dx%d", act, rows, cols)
			run := func(b *testing.B, f func()) {
				fill()
				b.ReportAllocs()
				b.SetBytes(int64(4 * len(c)))
				for b.Loop() {
					f()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(c)), "ns/elem")
			}
			b.Run("generic_"+name, func(b *testing.B) {
				run(b, func() { epilogue(rows, cols, nil, act, c, cols) })
			})
			if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
				b.Run("avx2_"+name, func(b *testing.B) {
					run(b, func() { actTile(false, act, &c[0], cols, rows, cols) })
				})
			}
			if cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasBMI2 {
				b.Run("avx512_"+name, func(b *testing.B) {
					run(b, func() { actTile(true, act, &c[0], cols, rows, cols) })
				})
			}
		}
	}
}
