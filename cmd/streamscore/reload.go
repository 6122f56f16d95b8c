package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
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
//
// scanned is the directory's last scan (models.ScanDir), whose bytes the
// load uses instead of reading the changed files again; nil reads them all.
func (s modelSource) load(scanned models.DirState) (ms, shadows []*models.Model, st models.DirState, err error) {
	switch {
	case s.dir != "":
		return models.LoadDir(s.dir, scanned, s.verify.check)
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

	state   models.DirState // last loaded (or attempted) directory state; owned by Run
	scanErr string          // last directory scan error, logged once
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
func newReloader(target modelTarget, src modelSource, state models.DirState, poll time.Duration, hup <-chan os.Signal, log *slog.Logger) *reloader {
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
	st, err := models.ScanDir(r.src.dir, r.state)
	if err != nil {
		if err.Error() != r.scanErr {
			r.log.Warn("scan models dir; will retry", "dir", r.src.dir, "err", err)
			r.scanErr = err.Error()
		}
		return
	}
	r.scanErr = ""
	if st.SameContent(r.state) {
		r.state = st // new stamps, same content: no rehash next time
		return
	}
	// Remember the scan, so that content that fails is not retried every
	// poll; the load replaces it with the state of the bytes it parsed.
	r.state = st
	r.reloadScanned("models-dir", st)
}

// reload loads the source's models and hands them to the target.
func (r *reloader) reload(trigger string) reloadResult { return r.reloadScanned(trigger, nil) }

// reloadScanned is reload with the directory's scan (nil: none).
func (r *reloader) reloadScanned(trigger string, scanned models.DirState) reloadResult {
	var idents []string
	err := r.target.ReloadSets(func() ([]*models.Model, []*models.Model, error) {
		ms, shadows, st, err := r.src.load(scanned)
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
