//go:build race

package kernel

import (
	"runtime"
	"unsafe"
)

// raceReadSlice tells the race detector that assembly reads s.
func raceReadSlice(s []float32) {
	if len(s) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&s[0]), len(s)*4)
	}
}

// raceWriteSlice tells the race detector that assembly writes s.
func raceWriteSlice(s []float32) {
	if len(s) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&s[0]), len(s)*4)
	}
}

// raceRead64 tells the race detector that assembly reads s.
func raceRead64(s []float64) {
	if len(s) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&s[0]), len(s)*8)
	}
}

// raceWrite64 tells the race detector that assembly writes s.
func raceWrite64(s []float64) {
	if len(s) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&s[0]), len(s)*8)
	}
}
