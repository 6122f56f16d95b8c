//go:build !race

package features

// raceEnabled reports whether the tests run under the race detector, which
// slows them ~10x: heavy tests shrink their sizes accordingly.
const raceEnabled = false
