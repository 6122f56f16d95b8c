//go:build race

package main

// timeScale stretches wait budgets under the race detector, which slows the
// in-process broker and NATS server the subprocess tests talk to.
const timeScale = 3
