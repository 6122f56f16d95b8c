//go:build race && amd64 && gc && !noasm

package kernel

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRaceSeesAssembly checks that -race sees the memory the assembly
// writes: a child process writes C from a goroutine with no
// synchronisation against a Gemm on the assembly path, and must be
// reported as a data race.
func TestRaceSeesAssembly(t *testing.T) {
	if os.Getenv("KERNEL_RACE_CHILD") != "" {
		c := make([]float32, 64)
		a := make([]float32, 64)
		w := Pack(8, 8, make([]float32, 64))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			c[5] = 1 // unsynchronised with the Gemm below
			wg.Done()
		}()
		time.Sleep(20 * time.Millisecond)
		Gemm(8, 8, 8, a, 8, w, nil, Identity, c, 8, false)
		wg.Wait()
		return
	}
	if Path() == "generic" {
		t.Skip("no assembly path on this CPU")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRaceSeesAssembly$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KERNEL_RACE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "WARNING: DATA RACE") {
		t.Fatalf("race not reported (err %v):\n%s", err, out)
	}
}
