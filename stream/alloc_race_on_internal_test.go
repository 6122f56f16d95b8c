//go:build race

package stream

// raceBuild: the race detector is on (sync.Pool then drops items at
// random, so pooled paths allocate).
const raceBuild = true
