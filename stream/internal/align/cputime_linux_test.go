//go:build linux

package align

import (
	"syscall"
	"time"
)

// threadCPU returns the CPU time (user and system) of the calling OS thread,
// for benchmarks on a shared machine: unlike wall time, it does not count
// the time the thread waits for a core.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
