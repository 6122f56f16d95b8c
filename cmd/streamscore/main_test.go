package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/models"
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

// proc is a streamscore subprocess started by startStreamscore. Its
// stdout and stderr are captured; the test's cleanup kills it if it is
// still running and logs its output if the test failed.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	exited chan struct{} // closed once the process has exited and its output is copied
	err    error         // Wait's result, set before exited is closed
}

// startStreamscore builds the binary if needed and starts it with args, in
// the environment without any STREAMSCORE_ variable plus env.
func startStreamscore(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(streamscoreBinary(t), args...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("streamscore %s\nstdout:\n%s\nstderr:\n%s", args[0], p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// alive fails the test if the process has exited.
func (p *proc) alive() {
	p.t.Helper()
	select {
	case <-p.exited:
		p.t.Fatalf("streamscore exited early: %v", p.err)
	default:
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits up to d for the process to exit and returns Wait's result; it
// fails the test (the cleanup kills the process) if it is still running.
func (p *proc) wait(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("streamscore did not exit within %v", d)
		return nil
	}
}

// metricsURL waits for the "metrics listening" log line and returns the
// URL of /metrics from it.
func (p *proc) metricsURL() string {
	p.t.Helper()
	re := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
	var url string
	poll(p.t, 30*time.Second*timeScale, "the metrics listening log line", func() bool {
		p.alive()
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			url = m[1]
			return true
		}
		return false
	})
	return url
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

// shippedPath returns the path of a shipped model file ("fraud.json").
func shippedPath(name string) string {
	return filepath.Join("..", "..", "models", "shipped", name)
}

// shippedFile returns a shipped model file, edited and re-encoded (edit may
// be nil: the file as shipped).
func shippedFile(t *testing.T, name string, edit func(*models.File)) []byte {
	t.Helper()
	b, err := os.ReadFile(shippedPath(name))
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return b
	}
	var f models.File
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	edit(&f)
	out, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fetch GETs url and returns the body; it fails the test on any error or a
// status other than 200.
func fetch(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second*timeScale)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

// poll calls cond every 50ms until it returns true, and fails the test after d.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProgressBarsOnlyOnTerminals: with stderr a file or a pipe (a CI log,
// a service's journal), gen and score draw no progress bar: it was a trail
// of partial renderings there, the last short of 100%.
func TestProgressBarsOnlyOnTerminals(t *testing.T) {
	dir := t.TempDir()
	ev, lab := filepath.Join(dir, "ev.jsonl"), filepath.Join(dir, "lab.jsonl")
	for _, args := range [][]string{
		{"gen", "--seed", "3", "--from", "2026-01-01", "--to", "2026-01-08", "--events-per-day", "3000", "--out-events", ev, "--out-labels", lab},
		{"score", "--events", ev, "--labels", lab, "--out", filepath.Join(dir, "scores.jsonl")},
	} {
		p := startStreamscore(t, nil, args...)
		if err := p.wait(120 * time.Second * timeScale); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, p.stderr.String())
		}
		if s := p.stderr.String(); strings.Contains(s, "█") || strings.Contains(s, "%|") || strings.Contains(s, "% |") {
			t.Errorf("%s drew a progress bar on a stderr that is not a terminal:\n%s", args[0], s)
		}
	}
}
