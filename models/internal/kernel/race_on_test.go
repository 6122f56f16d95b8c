//go:build race

package kernel

// raceEnabled shrinks the exhaustive shape sweeps, which run ~10× slower
// under the race detector.
const raceEnabled = true
