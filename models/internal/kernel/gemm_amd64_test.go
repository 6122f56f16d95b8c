//go:build amd64 && gc && !noasm

package kernel

import (
	"testing"

	"golang.org/x/sys/cpu"
)

// availablePaths lists the paths this CPU can run, generic first.
func availablePaths() []string {
	ps := []string{"generic"}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ps = append(ps, "avx2")
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasBMI2 {
		ps = append(ps, "avx512")
	}
	return ps
}

// forcePath switches the dispatch to path p until the test ends: "avx512"
// as detected, "avx2" with AVX-512 forced off, "generic" with both off.
func forcePath(tb testing.TB, p string) {
	tb.Helper()
	save512, save2 := useAVX512, useAVX2
	tb.Cleanup(func() { useAVX512, useAVX2 = save512, save2 })
	useAVX512, useAVX2 = p == "avx512", p == "avx2"
	if got := Path(); got != p {
		tb.Fatalf("Path() = %q after forcing %q", got, p)
	}
}

// TestFMAPeak checks the peak loop of each path runs and counts its flops:
// 24 Z (16 lanes) or 12 Y (8 lanes) accumulators, two flops per FMA lane.
func TestFMAPeak(t *testing.T) {
	want := map[string]int{"generic": 0, "avx2": 12 * 8 * 2, "avx512": 24 * 16 * 2}
	forEachPath(t, func(t *testing.T) {
		if got := FMAPeak(3); got != 3*want[Path()] {
			t.Errorf("FMAPeak(3) = %d flops, want %d", got, 3*want[Path()])
		}
		if got := FMAPeak(0); got != 0 {
			t.Errorf("FMAPeak(0) = %d flops, want 0", got)
		}
	})
}
