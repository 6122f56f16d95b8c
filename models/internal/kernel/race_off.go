//go:build !race

package kernel

// raceReadSlice and raceWriteSlice annotate memory touched by assembly for
// the race detector; without -race they compile to nothing.
func raceReadSlice(s []float32) {}

func raceWriteSlice(s []float32) {}

func raceRead64(s []float64) {}

func raceWrite64(s []float64) {}
