//go:build race

package stream_test

// timeScale stretches wait budgets under the race detector, which slows the
// pipeline several times.
const timeScale = 4
