//go:build amd64 && gc && !noasm

package kernel

import "testing"

// TestF64AVX2Used fails when a CPU with AVX2 does not take the assembly
// path, which would make TestF64MatchesGeneric compare the generic form
// with itself.
func TestF64AVX2Used(t *testing.T) {
	if useF64AVX2 != useAVX2 {
		t.Errorf("useF64AVX2 = %v, useAVX2 = %v", useF64AVX2, useAVX2)
	}
}
