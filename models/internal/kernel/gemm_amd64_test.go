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
