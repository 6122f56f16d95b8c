package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamscore/streamscore/features"
)

// State snapshots (WithStateDir).
//
// A snapshot is the pipeline's whole feature and model state at one cut:
// the Shared terminal state, and per worker its Builder's card state and
// its sequential models' per-card state, together with the highest offset
// of every partition applied to that state. It is written while no worker
// runs (at shutdown, and at every state interval with all workers paused
// between batches), so the cut is consistent: the state is exactly the
// events at or below those offsets.
//
// On disk, in the state directory:
//
//	CURRENT                 name of the newest complete snapshot
//	snap-<unix ns>/         one snapshot:
//	    manifest.json       what it is (snapshotManifest), files' SHA-256
//	    shared.state        features.Shared.WriteState
//	    worker-<i>.cards    features.Builder.WriteState of worker i
//	    worker-<i>.seq      seqStates.writeState of worker i
//
// A snapshot is written into snap-<unix ns>.tmp, every file synced, the
// directory renamed, and only then CURRENT replaced (write, sync, rename):
// a crash at any point leaves the previous snapshot current. Older
// snapshot directories are removed after CURRENT moved.
//
// Restoring (Run, before the first fetch) reads CURRENT's snapshot into
// fresh state and installs it only if every file reads back whole, matches
// its SHA-256 and fits this pipeline (topic, worker count, feature names,
// TTL and windows; the features package checks its own part). Otherwise
// the pipeline starts with empty state and says why at error level; the
// refused snapshot is renamed refused-snap-<unix ns> and left alone. After
// a restore, events at or below a partition's restored offset are scored
// against the state without being applied again (as after a rebalance);
// if the first event of a partition lies beyond its restored offset + 1
// (events committed after the snapshot, e.g. after a crash), the missing
// offsets are logged and counted: the state does not contain them.

const (
	snapFormat  = 1
	currentName = "CURRENT"
	manifestFn  = "manifest.json"
	sharedFn    = "shared.state"
)

// snapshotManifest describes one snapshot directory.
type snapshotManifest struct {
	Format    int       `json:"format"`
	WrittenAt time.Time `json:"written_at"`
	Reason    string    `json:"reason"` // "shutdown" or "interval"
	Topic     string    `json:"topic"`
	Group     string    `json:"group"`
	Workers   int       `json:"workers"`
	Features  []string  `json:"features"`
	// Applied maps a partition (decimal) to the highest offset applied to
	// the state.
	Applied map[string]int64 `json:"applied"`
	Cards   []int            `json:"cards"`     // per worker: cards with feature state
	SeqCard []int            `json:"seq_cards"` // per worker: cards with sequential-model state
	Files   []snapshotFile   `json:"files"`
}

type snapshotFile struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func cardsFile(i int) string { return fmt.Sprintf("worker-%d.cards", i) }
func seqFile(i int) string   { return fmt.Sprintf("worker-%d.seq", i) }

// writeSnapshot writes the state of p.shared and workers to the state
// directory. No worker may run while it does.
func (p *Pipeline) writeSnapshot(workers []*worker, reason string) (err error) {
	t0 := time.Now()
	dir := p.cfg.stateDir
	name := "snap-" + strconv.FormatInt(t0.UnixNano(), 10)
	tmp := filepath.Join(dir, name+".tmp")
	defer func() {
		outcome := "ok"
		if err != nil {
			outcome = "error"
			os.RemoveAll(tmp)
		}
		p.met.snapshots.WithLabelValues(outcome).Inc()
	}()
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	man := snapshotManifest{
		Format: snapFormat, WrittenAt: t0.UTC(), Reason: reason,
		Topic: p.topic, Group: p.group, Workers: len(workers), Features: p.names,
		Applied: map[string]int64{},
	}
	var total int64
	write := func(fn string, f func(io.Writer) error) error {
		sf, err := writeSnapFile(filepath.Join(tmp, fn), f)
		if err != nil {
			return fmt.Errorf("write %s: %w", fn, err)
		}
		sf.Name = fn
		man.Files = append(man.Files, sf)
		total += sf.Bytes
		return nil
	}
	if err := write(sharedFn, p.shared.WriteState); err != nil {
		return err
	}
	for _, w := range workers {
		if err := write(cardsFile(w.id), w.build.WriteState); err != nil {
			return err
		}
		if err := write(seqFile(w.id), w.seq.writeState); err != nil {
			return err
		}
		man.Cards = append(man.Cards, w.build.Cards())
		man.SeqCard = append(man.SeqCard, len(w.seq.cards))
		for pi, off := range w.applied {
			if off >= 0 {
				man.Applied[strconv.Itoa(pi*len(workers)+w.id)] = off
			}
		}
	}
	mb, err := json.MarshalIndent(&man, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(tmp, manifestFn), mb); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	// CURRENT moves last: until then the previous snapshot stays current.
	if err := writeFileSync(filepath.Join(dir, currentName+".tmp"), []byte(name+"\n")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, currentName+".tmp"), filepath.Join(dir, currentName)); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	removeOldSnapshots(dir, name)
	d := time.Since(t0)
	p.met.snapshotSeconds.Set(d.Seconds())
	p.met.snapshotBytes.Set(float64(total + int64(len(mb))))
	p.log.Info("state snapshot written", "reason", reason, "dir", final, "bytes", total+int64(len(mb)),
		"cards", sum(man.Cards), "partitions", len(man.Applied), "took", d.Round(time.Millisecond))
	return nil
}

func sum(v []int) (s int) {
	for _, x := range v {
		s += x
	}
	return s
}

// writeSnapFile writes path with f, syncs it and returns its size and
// SHA-256.
func writeSnapFile(path string, f func(io.Writer) error) (snapshotFile, error) {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return snapshotFile{}, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(fh, h)}
	err = f(cw)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return snapshotFile{}, err
	}
	return snapshotFile{Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeOldSnapshots removes every snapshot directory of dir but keep
// (complete or left half-written by a crash).
func removeOldSnapshots(dir, keep string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); e.IsDir() && strings.HasPrefix(n, "snap-") && n != keep {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
}

// errNoSnapshot means the state directory holds no snapshot yet.
var errNoSnapshot = errors.New("no snapshot")

// restored is state read from a snapshot, not yet installed.
type restored struct {
	name    string
	man     snapshotManifest
	shared  *features.Shared
	builds  []*features.Builder
	seqs    []*seqStates
	applied [][]int64 // per worker, indexed by partition/workers
}

// restoreSnapshot reads the current snapshot of the state directory into
// fresh state for workers (which have not started) and installs it. It
// returns errNoSnapshot when there is none; on any other error nothing is
// installed.
func (p *Pipeline) restoreSnapshot(workers []*worker) (*restored, error) {
	dir := p.cfg.stateDir
	cur, err := os.ReadFile(filepath.Join(dir, currentName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoSnapshot
	}
	if err != nil {
		return nil, err
	}
	name := strings.TrimSpace(string(cur))
	if !strings.HasPrefix(name, "snap-") || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("CURRENT names %q, not a snapshot directory", name)
	}
	sdir := filepath.Join(dir, name)
	mb, err := os.ReadFile(filepath.Join(sdir, manifestFn))
	if err != nil {
		return nil, err
	}
	r := &restored{name: sdir}
	if err := json.Unmarshal(mb, &r.man); err != nil {
		return nil, fmt.Errorf("%s: %w", manifestFn, err)
	}
	man := &r.man
	switch {
	case man.Format != snapFormat:
		return nil, fmt.Errorf("snapshot format %d, this build reads %d", man.Format, snapFormat)
	case man.Topic != p.topic:
		return nil, fmt.Errorf("snapshot of topic %q, this pipeline reads %q", man.Topic, p.topic)
	case man.Workers != len(workers):
		return nil, fmt.Errorf("snapshot written by %d workers, this pipeline has %d (card state lives with the worker of its partition: keep --workers to restore)", man.Workers, len(workers))
	case !slices.Equal(man.Features, p.names):
		return nil, fmt.Errorf("snapshot has %d features %v, this pipeline %d", len(man.Features), man.Features, len(p.names))
	}
	files := map[string]snapshotFile{}
	for _, f := range man.Files {
		files[f.Name] = f
	}
	read := func(fn string, f func(io.Reader) error) error {
		sf, ok := files[fn]
		if !ok {
			return fmt.Errorf("manifest lists no %s", fn)
		}
		fh, err := os.Open(filepath.Join(sdir, fn))
		if err != nil {
			return err
		}
		defer fh.Close()
		h := sha256.New()
		cr := &countReader{r: io.TeeReader(fh, h)}
		if err := f(cr); err != nil {
			return fmt.Errorf("%s: %w", fn, err)
		}
		// Hash what the reader left unread too: a file longer than its
		// content is as corrupt as a shorter one.
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return fmt.Errorf("%s: %w", fn, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); cr.n != sf.Bytes || got != sf.SHA256 {
			return fmt.Errorf("%s: %d bytes with SHA-256 %s, the manifest says %d bytes, %s", fn, cr.n, got, sf.Bytes, sf.SHA256)
		}
		return nil
	}
	r.shared = features.NewShared(p.cfg.featureOpts...)
	if err := read(sharedFn, r.shared.ReadState); err != nil {
		return nil, err
	}
	for _, w := range workers {
		b := features.NewBuilder(r.shared, p.cfg.featureOpts...)
		if err := read(cardsFile(w.id), b.ReadState); err != nil {
			return nil, err
		}
		ss := newSeqStates(time.Duration(w.seq.ttl), p.met.stateResets, p.log)
		ss.layout = w.seq.layout
		if err := read(seqFile(w.id), func(rd io.Reader) error { _, err := ss.readState(rd); return err }); err != nil {
			return nil, err
		}
		r.builds = append(r.builds, b)
		r.seqs = append(r.seqs, ss)
		r.applied = append(r.applied, nil)
	}
	for ps, off := range man.Applied {
		part, err := strconv.Atoi(ps)
		if err != nil || part < 0 || off < 0 {
			return nil, fmt.Errorf("applied offset %q: %d", ps, off)
		}
		wi, pi := part%len(workers), part/len(workers)
		a := r.applied[wi]
		for len(a) <= pi {
			a = append(a, -1)
		}
		a[pi] = off
		r.applied[wi] = a
	}
	// Everything read back whole: install it.
	p.shared = r.shared
	for i, w := range workers {
		w.build = r.builds[i]
		w.seq = r.seqs[i]
		w.applied = r.applied[i]
		w.restoredFrom = slices.Clone(r.applied[i])
	}
	return r, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// restoreState restores the state directory's snapshot, if any, into
// workers before they start, logging and counting the outcome. A snapshot
// that cannot be used leaves the state empty.
func (p *Pipeline) restoreState(workers []*worker) {
	t0 := time.Now()
	r, err := p.restoreSnapshot(workers)
	switch {
	case errors.Is(err, errNoSnapshot):
		p.met.restores.WithLabelValues("none").Inc()
		p.log.Info("no state snapshot to restore: starting with empty state", "dir", p.cfg.stateDir)
	case err != nil:
		p.met.restores.WithLabelValues("failed").Inc()
		// Keep the refused snapshot out of the way of the next one (which
		// would remove it) and of the next start: a wrong flag fixed
		// later can still use it, by hand.
		kept := ""
		if cur, rerr := os.ReadFile(filepath.Join(p.cfg.stateDir, currentName)); rerr == nil {
			name := strings.TrimSpace(string(cur))
			if strings.HasPrefix(name, "snap-") && !strings.ContainsAny(name, `/\`) {
				kept = filepath.Join(p.cfg.stateDir, "refused-"+name)
				if os.Rename(filepath.Join(p.cfg.stateDir, name), kept) != nil {
					kept = ""
				}
			}
			os.Remove(filepath.Join(p.cfg.stateDir, currentName))
		}
		p.log.Error("state snapshot not restored: starting with empty state", "dir", p.cfg.stateDir, "err", err, "kept_as", kept)
	default:
		p.met.restores.WithLabelValues("ok").Inc()
		p.log.Info("state snapshot restored", "snapshot", r.name, "written_at", r.man.WrittenAt, "reason", r.man.Reason,
			"cards", sum(r.man.Cards), "partitions", len(r.man.Applied), "took", time.Since(t0).Round(time.Millisecond))
	}
}

// checkGap is called for the first event of each partition after a
// restore: events between the restored offset and this one are not in the
// state.
func (w *worker) checkGap(pi int, part int, offset int64) {
	if pi >= len(w.restoredFrom) || w.restoredFrom[pi] < 0 {
		return
	}
	from := w.restoredFrom[pi]
	w.restoredFrom[pi] = -1
	if gap := offset - from - 1; gap > 0 {
		w.p.met.stateGap.Add(float64(gap))
		w.p.log.Warn("partition resumes past the restored state: the offsets between are not in it (events committed after the snapshot was written, or transaction markers)",
			"partition", part, "restored_offset", from, "first_offset", offset, "offsets_skipped", gap)
	}
}

// snapshotLoop writes a snapshot every state interval until stop is
// closed: it pauses every worker between batches, writes, and resumes them.
func (p *Pipeline) snapshotLoop(workers []*worker, stop <-chan struct{}) {
	t := time.NewTicker(p.cfg.stateInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		case <-p.hard.Done():
			return
		}
		if !p.pauseAndSnapshot(workers, stop) {
			return
		}
	}
}

// pauseAndSnapshot pauses every worker, writes a snapshot and resumes them.
// It returns false if stop or the hard stop came first (the workers paused
// so far are resumed).
func (p *Pipeline) pauseAndSnapshot(workers []*worker, stop <-chan struct{}) bool {
	resume := make(chan struct{})
	defer close(resume)
	t0 := time.Now()
	for _, w := range workers {
		req := &pauseReq{paused: make(chan struct{}), resume: resume}
		select {
		case w.pause <- req:
		case <-stop:
			return false
		case <-p.hard.Done():
			return false
		}
		select {
		case <-req.paused:
		case <-p.hard.Done():
			return false
		}
	}
	waited := time.Since(t0)
	if err := p.writeSnapshot(workers, "interval"); err != nil {
		p.log.Error("state snapshot failed; the previous one stays current", "dir", p.cfg.stateDir, "err", err)
	}
	p.log.Debug("workers paused for a state snapshot", "pause_wait", waited, "paused", time.Since(t0))
	return true
}
