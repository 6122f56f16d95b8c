package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/stream"
)

// modelTarget receives model sets: *stream.Pipeline. Reload calls load,
// validates and publishes what it returns, and counts and logs a failure
// (the active models keep serving).
type modelTarget interface {
	ReloadSets(load func() (ms, shadows []*models.Model, err error)) error
}

// The pipeline is the target in `run`.
var _ modelTarget = (*stream.Pipeline)(nil)

// modelSource says where the engine's scoring models come from: a watched
// directory (every *.json in it), a list of files, or, with neither, the
// models shipped in the binary. A watched directory may hold a "shadow"
// subdirectory: its *.json files are the shadow (challenger) models, reloaded
// with the scoring models. Every file read from disk must pass verify (its
// signature, MODEL.json.sig); the shipped models are signed by the release
// key and verified by models.Shipped.
type modelSource struct {
	dir    string
	files  []string
	verify *modelVerifier
}

// load reads and verifies the models of the source. For a directory it also
// returns the state of the files it read (nil otherwise), even when a model
// fails to parse, so a bad file is not retried until it changes.
//
// shadows is nil unless the directory has a shadow subdirectory (then it is
// its models, possibly none).
func (s modelSource) load() (ms, shadows []*models.Model, st dirState, err error) {
	switch {
	case s.dir != "":
		return loadModelDir(s.dir, s.verify)
	case len(s.files) == 0:
		ms, err := models.Shipped()
		return ms, nil, nil, err
	}
	ms, err = loadFiles(s.files, s.verify)
	return ms, nil, nil, err
}

// loadFiles loads the model files at paths, in order, and verifies their
// digests and signatures.
func loadFiles(paths []string, v *modelVerifier) ([]*models.Model, error) {
	ms := make([]*models.Model, 0, len(paths))
	for _, path := range paths {
		m, err := v.load(path)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// shadowSubdir is the subdirectory of a models dir that holds the shadow
// models.
const shadowSubdir = "shadow"

// hasShadowDir reports whether dir has a shadow subdirectory.
func hasShadowDir(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, shadowSubdir))
	return err == nil && fi.IsDir()
}

// fileStamp is what the directory poller remembers of one model file.
type fileStamp struct {
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
}

// dirState maps the names of the *.json files of a model directory, and of
// their signature files (*.json.sig) where present, to their stamps.
type dirState map[string]fileStamp

// sameContent reports whether a and b hold the same file names with the
// same contents (sizes and modification times aside).
func (a dirState) sameContent(b dirState) bool {
	if len(a) != len(b) {
		return false
	}
	for name, st := range a {
		if o, ok := b[name]; !ok || o.sum != st.sum {
			return false
		}
	}
	return true
}

// modelFiles returns the sorted names of the regular *.json files in dir.
func modelFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read models dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// scanModelDir stats the model files of dir and hashes those whose size or
// modification time differ from prev (the others keep their sum).
func scanModelDir(dir string, prev dirState) (dirState, error) {
	names, err := modelFiles(dir)
	if err != nil {
		return nil, err
	}
	if hasShadowDir(dir) {
		sh, err := modelFiles(filepath.Join(dir, shadowSubdir))
		if err != nil {
			return nil, err
		}
		for _, n := range sh {
			names = append(names, shadowSubdir+"/"+n)
		}
	}
	st := make(dirState, len(names))
	for _, name := range slices.Clone(names) {
		// A signature file counts as content: signing a refused model
		// (or replacing a signature) triggers a reload.
		sig := name + models.SignatureExt
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(sig))); err == nil {
			names = append(names, sig)
		}
	}
	for _, name := range names {
		path := filepath.Join(dir, filepath.FromSlash(name))
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("stat model file: %w", err)
		}
		if p, ok := prev[name]; ok && p.size == fi.Size() && p.mtime.Equal(fi.ModTime()) {
			st[name] = p
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read model file: %w", err)
		}
		st[name] = fileStamp{size: fi.Size(), mtime: fi.ModTime(), sum: sha256.Sum256(b)}
	}
	return st, nil
}

// loadModelDir parses every *.json file of dir (in name order) as a model:
// the whole directory is the model set; and those of dir/shadow, if it
// exists, as the shadow set. Each model must pass v (its signature file
// beside it). It returns the state of the files as read (the bytes parsed
// and verified are the bytes hashed), also when a model fails.
func loadModelDir(dir string, v *modelVerifier) (ms, shadows []*models.Model, st dirState, err error) {
	names, err := modelFiles(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(names) == 0 {
		return nil, nil, dirState{}, fmt.Errorf("models dir %s: no *.json model files", dir)
	}
	st = make(dirState, len(names))
	var errs []error
	read := func(name string) *models.Model {
		path := filepath.Join(dir, filepath.FromSlash(name))
		fi, err := os.Stat(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("stat model file: %w", err))
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("read model file: %w", err))
			return nil
		}
		st[name] = fileStamp{size: fi.Size(), mtime: fi.ModTime(), sum: sha256.Sum256(b)}
		// The signature file is stamped whether or not the model parses,
		// as scanModelDir stamps it: else the state never matches a scan.
		sigPath := path + models.SignatureExt
		sig, err := os.ReadFile(sigPath)
		switch {
		case errors.Is(err, os.ErrNotExist):
			sig = nil
		case err != nil:
			errs = append(errs, fmt.Errorf("read model signature: %w", err))
			return nil
		default:
			sfi, err := os.Stat(sigPath)
			if err != nil {
				errs = append(errs, fmt.Errorf("stat model signature: %w", err))
				return nil
			}
			st[name+models.SignatureExt] = fileStamp{size: sfi.Size(), mtime: sfi.ModTime(), sum: sha256.Sum256(sig)}
		}
		m, err := models.Parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("load model %s: %w", path, err))
			return nil
		}
		if err := v.check(path, m, sig); err != nil {
			errs = append(errs, err)
			return nil
		}
		return m
	}
	for _, name := range names {
		if m := read(name); m != nil {
			ms = append(ms, m)
		}
	}
	if hasShadowDir(dir) {
		sh, err := modelFiles(filepath.Join(dir, shadowSubdir))
		if err != nil {
			return nil, nil, st, err
		}
		shadows = []*models.Model{}
		for _, name := range sh {
			if m := read(shadowSubdir + "/" + name); m != nil {
				shadows = append(shadows, m)
			}
		}
	}
	if len(errs) > 0 {
		return nil, nil, st, errors.Join(errs...)
	}
	return ms, shadows, st, nil
}

// reloader re-reads the engine's models and hands them to the pipeline,
// which verifies them off the hot path and swaps them in between batches (a
// set that fails to load or verify leaves the active one serving). Triggers:
//
//   - the model directory (--models-dir) changed: polled every --models-poll,
//     by file name, size and modification time, then sha256 of the changed
//     files, so a touch without a change does nothing;
//   - a value on the hup channel (SIGHUP in `run`);
//   - POST /-/reload on the metrics server (ServeHTTP), which answers with
//     the outcome.
//
// Every reload runs on the goroutine of Run, one at a time. Run blocks until
// ctx is done; the caller owns that goroutine.
type reloader struct {
	target modelTarget
	src    modelSource
	poll   time.Duration
	hup    <-chan os.Signal
	log    *slog.Logger

	reqs chan chan reloadResult // HTTP requests, served by Run
	done chan struct{}          // closed when Run returns

	state   dirState // last loaded (or attempted) directory state; owned by Run
	scanErr string   // last directory scan error, logged once
}

// reloadResult is the outcome of one reload, as POST /-/reload returns it.
type reloadResult struct {
	Outcome string   `json:"outcome"` // "ok" or "failed"
	Models  []string `json:"models,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// newReloader returns a reloader of src's models into target. state is the
// directory state the active models were loaded from (nil without a
// directory); hup may be nil.
func newReloader(target modelTarget, src modelSource, state dirState, poll time.Duration, hup <-chan os.Signal, log *slog.Logger) *reloader {
	return &reloader{
		target: target, src: src, poll: poll, hup: hup,
		log:   log.With("component", "reloader"),
		reqs:  make(chan chan reloadResult),
		done:  make(chan struct{}),
		state: state,
	}
}

// Run serves reload triggers until ctx is done, then returns nil.
func (r *reloader) Run(ctx context.Context) error {
	defer close(r.done)
	var tick <-chan time.Time
	if r.src.dir != "" {
		t := time.NewTicker(r.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			r.pollDir()
		case <-r.hup:
			r.reload("signal")
		case reply := <-r.reqs:
			reply <- r.reload("http") // buffered: never blocks
		}
	}
}

// pollDir reloads when the content of the model directory changed since the
// last attempt.
func (r *reloader) pollDir() {
	st, err := scanModelDir(r.src.dir, r.state)
	if err != nil {
		if err.Error() != r.scanErr {
			r.log.Warn("scan models dir; will retry", "dir", r.src.dir, "err", err)
			r.scanErr = err.Error()
		}
		return
	}
	r.scanErr = ""
	if st.sameContent(r.state) {
		r.state = st // new stamps, same content: no rehash next time
		return
	}
	// Remember the scan, so that content that fails is not retried every
	// poll; the load replaces it with the state of the bytes it parsed.
	r.state = st
	r.reload("models-dir")
}

// reload loads the source's models and hands them to the target.
func (r *reloader) reload(trigger string) reloadResult {
	var idents []string
	err := r.target.ReloadSets(func() ([]*models.Model, []*models.Model, error) {
		ms, shadows, st, err := r.src.load()
		if st != nil {
			r.state = st
		}
		for _, m := range ms {
			idents = append(idents, m.Ident())
		}
		for _, m := range shadows {
			idents = append(idents, "shadow "+m.Ident())
		}
		return ms, shadows, err
	})
	if err != nil {
		// The target logged and counted it.
		r.log.Warn("model reload refused; the active models keep serving", "trigger", trigger, "err", err)
		return reloadResult{Outcome: "failed", Error: err.Error()}
	}
	r.log.Info("models reloaded", "trigger", trigger, "models", idents)
	return reloadResult{Outcome: "ok", Models: idents}
}

// ServeHTTP serves POST /-/reload: a reload of the configured model files
// (it takes no input, so it can only re-read what the engine was started
// with). 200 with {"outcome":"ok","models":[idents]} when the new set is
// published, 422 with {"outcome":"failed","error":…} when it was refused,
// 503 when the reloader is not running, 405 for other methods.
func (r *reloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST to reload the models", http.StatusMethodNotAllowed)
		return
	}
	reply := make(chan reloadResult, 1)
	select {
	case r.reqs <- reply:
	case <-r.done:
		http.Error(w, "reloader stopped", http.StatusServiceUnavailable)
		return
	case <-req.Context().Done():
		return
	}
	var res reloadResult
	select {
	case res = <-reply:
	case <-req.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if res.Outcome != "ok" {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	json.NewEncoder(w).Encode(res)
}
