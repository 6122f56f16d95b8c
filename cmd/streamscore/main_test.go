package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// binDir holds the streamscore binary built once for the subprocess tests;
// TestMain removes it.
var (
	binDir    string
	binOnce   sync.Once
	binPath   string
	binErr    error
	binOutput []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// streamscoreBinary builds the command (without -race, to keep the
// subprocess fast) on first use and returns its path.
func streamscoreBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "streamscore-bin-")
		if binErr != nil {
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, binErr = exec.LookPath("go"); binErr != nil {
				return
			}
		}
		binPath = filepath.Join(binDir, "streamscore")
		cmd := exec.Command(goBin, "build", "-o", binPath, ".")
		binOutput, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("build streamscore: %v\n%s", binErr, binOutput)
	}
	return binPath
}

// syncBuffer is an io.Writer safe to read while a subprocess writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cleanEnv returns the environment without any STREAMSCORE_ variable, plus
// extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
