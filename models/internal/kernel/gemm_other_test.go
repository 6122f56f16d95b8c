//go:build !amd64 || !gc || noasm

package kernel

import "testing"

func availablePaths() []string { return []string{"generic"} }

func forcePath(tb testing.TB, p string) {
	tb.Helper()
	if p != "generic" {
		tb.Fatalf("path %q is not built", p)
	}
}
