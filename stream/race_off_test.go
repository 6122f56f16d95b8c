//go:build !race

package stream_test

// timeScale stretches wait budgets under the race detector.
const timeScale = 1
