package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
)

// fakeTarget stands in for the pipeline: it runs the load and records what
// it got, like stream.Pipeline.Reload without the binding.
type fakeTarget struct {
	mu      sync.Mutex
	active  []string // idents of the last good set
	shadows []string // idents of the last good shadow set (nil: kept)
	ok      int
	failed  int
	lastErr error
	refuse  error    // if set, a loaded set is refused with this error (a failed Bind)
	tried   []string // idents of the last set loaded, good or refused
	// changed gets the idents each Reload call loaded (tried), in order:
	// a test reads what that call did from its notice, not from tried,
	// which a later call may already have replaced.
	changed chan []string
}

func newFakeTarget() *fakeTarget { return &fakeTarget{changed: make(chan []string, 100)} }

func (f *fakeTarget) ReloadSets(load func() ([]*models.Model, []*models.Model, error)) error {
	ms, shadows, err := load()
	f.mu.Lock()
	defer func() {
		tried := slices.Clone(f.tried)
		f.mu.Unlock()
		f.changed <- tried
	}()
	f.tried = f.tried[:0]
	for _, m := range ms {
		f.tried = append(f.tried, m.Ident())
	}
	if err == nil {
		err = f.refuse
	}
	if err != nil {
		f.failed++
		f.lastErr = err
		return err
	}
	f.ok++
	f.active = f.active[:0]
	for _, m := range ms {
		f.active = append(f.active, m.Ident())
	}
	if shadows != nil {
		f.shadows = []string{}
		for _, m := range shadows {
			f.shadows = append(f.shadows, m.Ident())
		}
	}
	return nil
}

func (f *fakeTarget) snapshot() (active []string, ok, failed int, lastErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.active...), f.ok, f.failed, f.lastErr
}

// waitReload waits for the next Reload call of f and returns the idents
// that call loaded, good or refused.
func (f *fakeTarget) waitReload(t *testing.T, what string) []string {
	t.Helper()
	select {
	case tried := <-f.changed:
		return tried
	case <-time.After(10 * time.Second * timeScale):
		t.Fatalf("timed out waiting for a reload: %s", what)
		return nil
	}
}

// settle consumes the Reload calls of f until none came for d (reloads
// of intermediate states a test step caused, still queued).
func (f *fakeTarget) settle(d time.Duration) {
	for {
		select {
		case <-f.changed:
		case <-time.After(d):
			return
		}
	}
}

// noReload checks that f sees no Reload call for d.
func (f *fakeTarget) noReload(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case <-f.changed:
		t.Fatalf("unexpected reload: %s", what)
	case <-time.After(d):
	}
}

// writeFile replaces path atomically (a temporary file renamed over it),
// as deployments should: a poll never sees a half-written model.
func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := durable.ReplaceFile(path, b, 0o644); err != nil { // what a deployment tool should do too
		t.Fatal(err)
	}
}

func identOf(t *testing.T, b []byte) string {
	t.Helper()
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m.Ident()
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startReloader runs r until the test ends.
func startReloader(t *testing.T, r *reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestReloaderModelsDir polls a model directory: a new version is handed
// over; a touch without a change is not; a tampered file is refused once
// (not every poll) and the previous set stays; a fixed file and a new file
// are picked up; a signal forces a reload of unchanged files.
func TestReloaderModelsDir(t *testing.T) {
	dir := t.TempDir()
	fraud := filepath.Join(dir, "fraud.json")
	risk := filepath.Join(dir, "risk.json")
	writeModel(t, fraud, shippedFile(t, "fraud.json", nil))
	writeModel(t, risk, shippedFile(t, "risk.json", nil))
	writeFile(t, filepath.Join(dir, "README.md"), []byte("not a model"))

	ms, shadows, state, err := models.LoadDir(dir, nil, testVerifier(t).check)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name() != "fraud" || ms[1].Name() != "risk" || shadows != nil {
		t.Fatalf("loadModelDir: got %d models, shadows %v", len(ms), shadows)
	}
	target := newFakeTarget()
	hup := make(chan os.Signal, 1)
	r := newReloader(target, modelSource{dir: dir, verify: testVerifier(t)}, state, 10*time.Millisecond, hup, quietLog())
	startReloader(t, r)

	target.noReload(t, 100*time.Millisecond, "nothing changed")

	v2 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2; f.Thresholds.Alert = 0.3 })
	writeModel(t, fraud, v2)
	// A poll between the signature's write and the model's may reload the
	// old model with the new signature file first.
	var active []string
	var ok, failed int
	for {
		target.waitReload(t, "fraud v2 written")
		if active, ok, failed, _ = target.snapshot(); len(active) == 2 && active[0] == identOf(t, v2) {
			break
		}
	}
	// Both reloads (signature first, then the model) may have run before
	// the snapshot above, the second's notice still queued: consume it,
	// or the next step's "no reload" sees it.
	target.settle(100 * time.Millisecond)
	active, ok, failed, _ = target.snapshot()
	okV2 := ok
	if ok < 1 || ok > 2 || failed != 0 {
		t.Fatalf("after v2: active %v, ok %d, failed %d", active, ok, failed)
	}

	// Same content, new modification time: no reload.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(fraud, later, later); err != nil {
		t.Fatal(err)
	}
	target.noReload(t, 100*time.Millisecond, "touched, unchanged")

	// A tampered file (a value changed without a new digest) is refused
	// once; the v2 set stays active.
	tampered := []byte(strings.Replace(string(v2), `"version": 2`, `"version": 3`, 1))
	writeFile(t, fraud, tampered)
	target.waitReload(t, "tampered file written")
	active, ok, failed, lastErr := target.snapshot()
	if !errors.Is(lastErr, models.ErrDigest) || failed != 1 || ok != okV2 || active[0] != identOf(t, v2) {
		t.Fatalf("after the tampered file: active %v, ok %d, failed %d, err %v", active, ok, failed, lastErr)
	}
	target.noReload(t, 100*time.Millisecond, "the tampered file did not change again")

	// Fixed, plus a new model file: one set of three.
	v3 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 3 })
	writeModel(t, filepath.Join(dir, "fraud_lr.json"), shippedFile(t, "fraud_lr.json", nil))
	writeModel(t, fraud, v3)
	for {
		target.waitReload(t, "fixed file and new file")
		if active, _, _, _ = target.snapshot(); len(active) == 3 && active[0] == identOf(t, v3) {
			break
		}
	}

	target.settle(150 * time.Millisecond) // the intermediate states' reloads

	// A changed file with a valid digest but the old signature (what anyone
	// who can write the directory can produce) is refused, and v3 keeps
	// serving; its signature arriving afterwards is a change of content,
	// and the file goes in.
	v5 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 5; f.Thresholds.Alert = 0.99 })
	writeFile(t, fraud, v5)
	target.waitReload(t, "v5 without its signature")
	active, _, _, lastErr = target.snapshot()
	if !errors.Is(lastErr, models.ErrBadSignature) || active[0] != identOf(t, v3) {
		t.Fatalf("after an unsigned change: active %v, err %v", active, lastErr)
	}
	target.noReload(t, 100*time.Millisecond, "the refused file did not change again")
	signWith(t, fraud, testKey())
	target.waitReload(t, "v5 signed")
	if active, _, _, lastErr = target.snapshot(); active[0] != identOf(t, v5) {
		t.Fatalf("after signing v5: active %v, err %v", active, lastErr)
	}

	// A signal reloads even though nothing changed.
	_, okBefore, _, _ := target.snapshot()
	hup <- os.Interrupt
	target.waitReload(t, "signal")
	if _, ok, _, _ = target.snapshot(); ok != okBefore+1 {
		t.Fatalf("signal: ok reloads %d, want %d", ok, okBefore+1)
	}

	// The pipeline refuses a set (e.g. a model needs a feature the stream
	// lacks): counted as failed, not retried every poll.
	target.mu.Lock()
	target.refuse = errors.New("stream: invalid model set: bind model: missing input")
	target.mu.Unlock()
	v4 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 4 })
	writeModel(t, fraud, v4)
	// A poll between the signature's write and the model's may reload
	// (and refuse) the old model with the new signature file first.
	// Each notice is read for what its own call loaded: reading
	// target.tried after the first notice could see the second call's set
	// (it replaces tried before it sends its notice), leaving that notice
	// for the check below.
	for {
		if tried := target.waitReload(t, "v4 written"); len(tried) > 0 && tried[0] == identOf(t, v4) {
			break
		}
	}
	target.noReload(t, 100*time.Millisecond, "refused set unchanged")
	if active, _, _, _ = target.snapshot(); active[0] != identOf(t, v5) {
		t.Fatalf("a refused set replaced the active one: %v", active)
	}
}

// TestReloaderShadowDir: the shadow subdirectory of a models dir is the
// shadow set, reloaded with the scoring models when a file in it changes.
func TestReloaderShadowDir(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, filepath.Join(dir, "fraud.json"), shippedFile(t, "fraud.json", nil))
	if err := os.Mkdir(filepath.Join(dir, models.ShadowDir), 0o755); err != nil {
		t.Fatal(err)
	}
	ms, shadows, state, err := models.LoadDir(dir, nil, testVerifier(t).check)
	if err != nil || len(ms) != 1 || shadows == nil || len(shadows) != 0 {
		t.Fatalf("empty shadow dir: %d models, shadows %v, err %v", len(ms), shadows, err)
	}
	target := newFakeTarget()
	r := newReloader(target, modelSource{dir: dir, verify: testVerifier(t)}, state, 10*time.Millisecond, nil, quietLog())
	startReloader(t, r)
	challenger := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 9 })
	writeModel(t, filepath.Join(dir, models.ShadowDir, "fraud.json"), challenger)
	target.waitReload(t, "shadow written")
	target.mu.Lock()
	got := append([]string(nil), target.shadows...)
	target.mu.Unlock()
	if len(got) != 1 || got[0] != identOf(t, challenger) {
		t.Fatalf("shadows after the write: %v, want [%s]", got, identOf(t, challenger))
	}
	if err := os.Remove(filepath.Join(dir, models.ShadowDir, "fraud.json")); err != nil {
		t.Fatal(err)
	}
	target.waitReload(t, "shadow removed")
	target.mu.Lock()
	got = append([]string(nil), target.shadows...)
	target.mu.Unlock()
	if len(got) != 0 {
		t.Fatalf("shadows after the removal: %v, want none", got)
	}
}

// TestReloaderHTTP drives POST /-/reload with --model files: 405 for other
// methods, 200 and the new idents after a good reload, 422 and the error
// after a bad one (the active set stays), 503 once the reloader stopped.
func TestReloaderHTTP(t *testing.T) {
	dir := t.TempDir()
	fraud := filepath.Join(dir, "fraud.json")
	writeModel(t, fraud, shippedFile(t, "fraud.json", nil))
	target := newFakeTarget()
	r := newReloader(target, modelSource{files: []string{fraud}, verify: testVerifier(t)}, nil, time.Hour, nil, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	srv := httptest.NewServer(r)
	defer srv.Close()
	post := func() (int, reloadResult) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res reloadResult
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnprocessableEntity {
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, res
	}

	resp, err := http.Get(srv.URL + "/-/reload")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: status %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
	}

	v2 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2 })
	writeModel(t, fraud, v2)
	code, res := post()
	if code != http.StatusOK || res.Outcome != "ok" || len(res.Models) != 1 || res.Models[0] != identOf(t, v2) {
		t.Fatalf("POST after v2: %d %+v", code, res)
	}

	missing := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 3; f.Inputs[0].Name = "nope" })
	writeFile(t, fraud, missing[:len(missing)/2]) // a half-written file
	code, res = post()
	if code != http.StatusUnprocessableEntity || res.Outcome != "failed" || !strings.Contains(res.Error, "invalid model") {
		t.Fatalf("POST after a truncated file: %d %+v", code, res)
	}
	if active, ok, failed, _ := target.snapshot(); active[0] != identOf(t, v2) || ok != 1 || failed != 1 {
		t.Fatalf("after the failed reload: active %v, ok %d, failed %d", active, ok, failed)
	}

	cancel()
	wg.Wait()
	if code, _ := post(); code != http.StatusServiceUnavailable {
		t.Fatalf("POST after the reloader stopped: %d, want 503", code)
	}
}

// TestEngineConfigModelFlags checks the validation of the model-source
// flags.
func TestEngineConfigModelFlags(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error; "" for none
	}{
		{"defaults", nil, ""},
		{"dir", []string{"--models-dir", "/tmp/m", "--models-poll", "500ms"}, ""},
		{"dir and model", []string{"--models-dir", "/tmp/m", "--model", "a.json"}, "--models-dir and --model"},
		{"zero poll", []string{"--models-dir", "/tmp/m", "--models-poll", "0s"}, "--models-poll"},
		{"zero poll without dir", []string{"--models-poll", "0s"}, ""},
		{"shadows", []string{"--shadow-model", "a.json", "--shadow-model", "b.json"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cfg := newRunFlags()
			if err := parseFlags(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
			if tc.name == "shadows" && len(cfg.ShadowModels) != 2 {
				t.Fatalf("shadow models %v", cfg.ShadowModels)
			}
			if tc.name == "defaults" && cfg.ModelsPoll != 2*time.Second {
				t.Fatalf("default --models-poll %v, want 2s", cfg.ModelsPoll)
			}
		})
	}
}

// TestReloadWiring builds the engine of `run` from a --models-dir with a
// --shadow-model (no broker is contacted before Run) and reloads its real
// pipeline through POST /-/reload on the metrics server: the new version
// becomes active, a bad file is refused, and /metrics shows both.
func TestReloadWiring(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"fraud.json", "fraud_lr.json", "risk.json"} {
		writeModel(t, filepath.Join(dir, name), shippedFile(t, name, nil))
	}
	shadow := filepath.Join(t.TempDir(), "challenger.json")
	writeModel(t, shadow, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 9 }))
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--brokers", "127.0.0.1:1", "--nats", "", "--models-dir", dir,
		"--decision-models", "fraud", "--shadow-model", shadow, "--model-trust", testPub(t)}); err != nil {
		t.Fatal(err)
	}
	reg := newRegistry()
	e, err := buildEngine(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.pipeline.ShadowModels(); len(got) != 1 || got[0].Version() != 9 {
		t.Fatalf("shadow models %v", got)
	}
	r := newReloader(e.pipeline, cfg.modelSource(), e.modelState, time.Hour, nil, quietLog())
	startReloader(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	token := writeToken(t)
	srv := &httpSurface{TokenFile: token.file, Open: "metrics,probes"}
	addr, wait, err := srv.serve(ctx, "127.0.0.1:0", reg, quietLog(), route{"/-/reload", r, classReload})
	if err != nil {
		t.Fatal(err)
	}
	defer wait()
	post := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/-/reload", nil)
		req.Header.Set("Authorization", "Bearer "+token.value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	v2 := shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2 })
	writeModel(t, filepath.Join(dir, "fraud.json"), v2)
	if code := post(); code != http.StatusOK {
		t.Fatalf("reload of v2: status %d", code)
	}
	if got := e.pipeline.Models()[0].Ident(); got != identOf(t, v2) {
		t.Fatalf("active fraud model %s, want %s", got, identOf(t, v2))
	}
	writeModel(t, filepath.Join(dir, "fraud.json"), shippedFile(t, "fraud.json", func(f *models.File) {
		f.Version = 3
		f.Inputs[0].Name = "no_such_feature"
	}))
	if code := post(); code != http.StatusUnprocessableEntity {
		t.Fatalf("reload of a model with a missing input: status %d, want 422", code)
	}
	if got := e.pipeline.Models()[0].Ident(); got != identOf(t, v2) {
		t.Fatalf("a refused reload replaced the active model: %s", got)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`streamscore_stream_model_reloads_total{outcome="ok"} 1`,
		`streamscore_stream_model_reloads_total{outcome="failed"} 1`,
		`streamscore_stream_model_active_info{digest="` + e.pipeline.Models()[0].Digest() + `",model="fraud",model_version="2",role="scoring"} 1`,
		`model="fraud",model_version="9",role="shadow"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if strings.Contains(string(body), `model="fraud",model_version="1",role="scoring"`) {
		t.Errorf("/metrics still shows fraud@1 as active")
	}
}

// TestReadyzBeforeRun: /readyz answers 503 with the phase until the
// pipeline consumes (TestRunSubprocess checks the 200 while it does).
func TestReadyzBeforeRun(t *testing.T) {
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--brokers", "127.0.0.1:1", "--nats", ""}); err != nil {
		t.Fatal(err)
	}
	e, err := buildEngine(cfg, newRegistry(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rec := httptest.NewRecorder()
	readyHandler(e.pipeline, e.health).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "new\n" {
		t.Fatalf("GET /readyz before Run: %d %q, want 503 \"new\"", rec.Code, rec.Body.String())
	}
}
