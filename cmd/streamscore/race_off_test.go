//go:build !race

package main

// timeScale stretches wait budgets under the race detector; 1 without it.
const timeScale = 1
