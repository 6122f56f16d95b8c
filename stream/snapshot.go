package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/internal/statedir"
)

// State snapshots (WithStateDir).
//
// A snapshot is the pipeline's whole feature and model state at one cut:
// the Shared terminal state, and per partition its cards' feature windows
// (a features.Builder) and sequential models' per-card state, together with
// the highest offset of every partition applied to that state and, per
// labels partition, the next label offset. It is written while neither the
// feature stage nor any worker runs (at shutdown, and at every state
// interval with the stage paused and every batch it handed out scored) and
// while the label consumer waits, so the cut
// is consistent: the state is exactly the events at or below those offsets
// and the labels before those label offsets. A hard stop (drain timeout,
// sink failure) that catches a worker with an open batch writes no
// snapshot: that batch's events are in the windows but have not stepped the
// sequential models.
//
// On disk, the state directory follows the crash-safe protocol of
// stream/internal/statedir (LOCK, CURRENT naming a snap-<unix ns>/ and its
// manifest's SHA-256, refused-snap-<unix ns>/ for a snapshot a start
// refused, kept for a person; a crash at any point leaves the previous
// snapshot current). A snapshot directory holds:
//
//	manifest.json       what it is (snapshotManifest), files' SHA-256
//	shared.state        features.Shared.WriteState
//	part-<p>.cards      features.Builder.WriteState of partition p
//	part-<p>.seq        seqStates.writeState of partition p
//
// Older snapshot directories are removed after CURRENT moved, but for
// those whose offsets may still be committed (see below); a failed write
// removes its own.
//
// Restoring (Run, before the first fetch) reads CURRENT's snapshot into
// fresh state and installs it only if the manifest matches CURRENT's
// SHA-256, every file reads back whole and matches the manifest's, and it
// fits this pipeline (topic, feature names, TTL and windows; the features
// package checks its own part). The state is per partition, so any worker
// count restores it. Snapshots of format 1 (before 0.x: state per worker)
// are refused: the state restarts empty. A snapshot that is corrupt or
// does not fit is renamed refused-snap-<unix ns> and the pipeline starts
// with empty state, saying why at error level; one that cannot be read (an
// I/O error) fails Run. After a restore, events at or below a partition's
// restored offset are scored against the state without being applied again
// (as after a rebalance); if the first message of a partition lies beyond
// its restored offset + 1 (events committed after the snapshot, e.g. after
// a crash without a state interval; or transaction markers), the missing
// offsets are logged and counted: the state does not contain them.
//
// With a state interval, a commit is always exactly one snapshot's
// offsets (Pipeline.caps, set by the restore and by every snapshot
// written): the committer commits the applied offsets + 1 of the newest
// snapshot all of whose offsets are acked, never an acked prefix between
// two snapshots. The snapshots from the last one committed on are kept on
// disk (CURRENT names the newest; at most maxSnapCaps wait to be
// committed), so after a crash — even between a snapshot and the commit
// of its offsets — the restore finds the group's committed offsets
// (OffsetFetch, before the first fetch) and installs the snapshot that
// matches them exactly: Kafka re-delivers exactly what that state lacks,
// and every event is applied once. Only when no retained snapshot matches
// (the committed offsets unknown, or committed by a run without a state
// interval) is CURRENT's restored and the overlap scored against it, as
// after a rebalance. The shutdown snapshot is written before the final
// commit for the same reason. A dead-lettered message counts as applied
// (it changes no state), so that the snapshot covers it.

const (
	snapFormat = 2
	manifestFn = statedir.ManifestName
	sharedFn   = "shared.state"
)

// snapshotManifest describes one snapshot directory.
type snapshotManifest struct {
	Format    int       `json:"format"`
	WrittenAt time.Time `json:"written_at"`
	Reason    string    `json:"reason"` // "shutdown" or "interval"
	Topic     string    `json:"topic"`
	Group     string    `json:"group"`
	Workers   int       `json:"workers"` // informational: any worker count restores a snapshot
	Features  []string  `json:"features"`
	// Applied maps a partition (decimal) to the highest offset up to which
	// every offset is applied to the state; Ahead, to the offsets above it
	// applied too (events applied in event-time order before an earlier
	// offset of theirs).
	Applied map[string]int64   `json:"applied"`
	Ahead   map[string][]int64 `json:"ahead,omitempty"`
	// SharedApplied and SharedAhead: the same for the shared half (the
	// shared entities' state), per partition whose shared half stands
	// elsewhere than its cards (a shared-state replica: WithSharedReplicas).
	// A partition of Applied absent here has both halves there.
	SharedApplied map[string]int64   `json:"shared_applied,omitempty"`
	SharedAhead   map[string][]int64 `json:"shared_ahead,omitempty"`
	// LabelsTopic and LabelsNext: the labels topic and, per partition, the
	// next offset to read; every label before it is in the Shared state.
	LabelsTopic string           `json:"labels_topic,omitempty"`
	LabelsNext  map[string]int64 `json:"labels_next,omitempty"`
	// LabelsAhead: per labels partition, the offsets above LabelsNext
	// whose labels are in the Shared state too (applied before an earlier
	// offset's label of a later event time).
	LabelsAhead map[string][]int64 `json:"labels_ahead,omitempty"`
	Cards       map[string]int     `json:"cards"`     // per partition: cards with feature state
	SeqCard     map[string]int     `json:"seq_cards"` // per partition: cards with sequential-model state
	Files       []snapshotFile     `json:"files"`
}

// snapshotFile is a file of the manifest, with its size and SHA-256.
type snapshotFile = statedir.File

func cardsFile(part int) string { return fmt.Sprintf("part-%d.cards", part) }
func seqFile(part int) string   { return fmt.Sprintf("part-%d.seq", part) }

// writeSnapshot writes the state of p.shared and of every partition of st
// to the state directory. Neither the stage nor a worker may run while it
// does; the label consumer waits
// (labelMu) until it is done, so the labels in the state are exactly those
// before the recorded label offsets.
func (p *Pipeline) writeSnapshot(st *stage, reason string) (err error) {
	t0 := time.Now()
	dir := p.cfg.stateDir
	outcome := "error"
	defer func() { p.met.snapshots.WithLabelValues(outcome).Inc() }()
	sw, err := statedir.Create(dir, t0)
	if err != nil {
		return err
	}
	// Removes what was written unless CURRENT names it (then it is the
	// one in use, whatever failed after).
	defer sw.Abort()
	name := sw.Name()
	p.labelMu.Lock()
	defer p.labelMu.Unlock()
	man := snapshotManifest{
		Format: snapFormat, WrittenAt: t0.UTC(), Reason: reason,
		Topic: p.topic, Group: p.group, Workers: len(st.workers), Features: p.names,
		Applied: map[string]int64{}, Cards: map[string]int{}, SeqCard: map[string]int{},
	}
	applied := map[int]int64{}
	if p.cfg.labelsTopic != "" {
		man.LabelsTopic = p.cfg.labelsTopic
		man.LabelsNext = map[string]int64{}
		for part, next := range p.labelNext {
			man.LabelsNext[strconv.Itoa(part)] = next
		}
		for part, ahead := range p.labelsAhead(st) {
			if man.LabelsAhead == nil {
				man.LabelsAhead = map[string][]int64{}
			}
			man.LabelsAhead[strconv.Itoa(part)] = slices.Clone(ahead)
		}
	}
	// The files are written in parallel (one per core at a time): nothing
	// runs and the labels wait, so the state is only read — except that a
	// partition's sequential states move cards still in an older layout,
	// which only that partition's file touches.
	type task struct {
		fn string
		f  func(io.Writer) error
	}
	tasks := []task{{sharedFn, p.shared.WriteState}}
	for _, part := range slices.Sorted(maps.Keys(st.parts)) {
		ps := st.parts[part]
		if ps.shrKnown && ps.shr.applied >= 0 && (ps.shr.applied != ps.applied || !slices.Equal(ps.shr.ahead(), ps.ahead())) {
			if man.SharedApplied == nil {
				man.SharedApplied = map[string]int64{}
			}
			man.SharedApplied[strconv.Itoa(part)] = ps.shr.applied
			if a := ps.shr.ahead(); len(a) > 0 {
				if man.SharedAhead == nil {
					man.SharedAhead = map[string][]int64{}
				}
				man.SharedAhead[strconv.Itoa(part)] = a
			}
		}
		if ps.applied < 0 {
			continue // created, never applied: nothing to keep
		}
		tasks = append(tasks, task{cardsFile(part), ps.build.WriteState}, task{seqFile(part), ps.seq.writeState})
		key := strconv.Itoa(part)
		man.Cards[key] = ps.build.Cards()
		man.SeqCard[key] = len(ps.seq.cards)
		man.Applied[key] = ps.applied
		if a := ps.ahead(); len(a) > 0 {
			if man.Ahead == nil {
				man.Ahead = map[string][]int64{}
			}
			man.Ahead[key] = a
		}
		applied[part] = ps.applied
	}
	man.Files = make([]snapshotFile, len(tasks))
	errs := parallel(len(tasks), func(i int) error {
		sf, err := sw.WriteFile(tasks[i].fn, tasks[i].f)
		man.Files[i] = sf
		return err
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var total int64
	for _, f := range man.Files {
		total += f.Bytes
	}
	mb, err := json.MarshalIndent(&man, "", "  ")
	if err != nil {
		return err
	}
	err = sw.Commit(mb)
	if !sw.Current() {
		return err
	}
	if p.cfg.ckpt == nil {
		// With checkpoints, they set the commit cap.
		p.setCommitCap(name, applied)
	}
	if err != nil {
		return err
	}
	outcome = "ok"
	if err := statedir.RemoveExcept(dir, p.retainedSnapshots(name)); err != nil {
		p.log.Warn("remove old state snapshots", "dir", dir, "err", err)
	}
	d := time.Since(t0)
	p.met.snapshotSeconds.Set(d.Seconds())
	p.met.snapshotBytes.Set(float64(total + int64(len(mb))))
	p.log.Info("state snapshot written", "reason", reason, "dir", sw.Path(), "bytes", total+int64(len(mb)),
		"cards", sumMap(man.Cards), "partitions", len(man.Applied), "took", d.Round(time.Millisecond))
	return nil
}

// parallel runs f(0) … f(n-1), at most one per core at a time, and returns
// their errors.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errs
}

func sumMap(m map[string]int) (s int) {
	for _, x := range m {
		s += x
	}
	return s
}

// retainedSnapshots returns the snapshots to keep on disk beside current:
// those whose offsets may be (or become) the group's committed offsets,
// so that after a crash the one matching them can be restored.
func (p *Pipeline) retainedSnapshots(current string) []string {
	keep := []string{current}
	p.capMu.Lock()
	for _, c := range p.caps {
		keep = append(keep, c.name)
	}
	p.capMu.Unlock()
	return keep
}

// errNoSnapshot means the state directory holds no snapshot yet.
var errNoSnapshot = statedir.ErrNoSnapshot

// maxSnapPartition bounds the partition numbers a manifest may name
// (Kafka allows far fewer in practice): a corrupt number must not become a
// huge allocation.
const maxSnapPartition = 1 << 20

// maxSnapAhead bounds the offsets applied ahead of a partition's applied
// one that a manifest may list (the aligner's buffer bounds them).
const maxSnapAhead = 1 << 20

// unusableError marks a snapshot that is there but cannot be used
// (corrupt, truncated, or written for another configuration), as opposed to
// an I/O failure reading it.
type unusableError = statedir.UnusableError

func unusable(format string, args ...any) error { return statedir.Unusable(format, args...) }

// lockStateDir creates the state directory if needed and locks it for the
// life of the pipeline (statedir.Lock).
func lockStateDir(dir string) (unlock func(), err error) {
	unlock, err = statedir.Lock(dir)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	return unlock, nil
}

// restored is state read from a snapshot, not yet installed.
type restored struct {
	name       string
	man        snapshotManifest
	shared     *features.Shared
	parts      map[int]*partState
	labelNext  map[int]int64
	labelAhead map[int][]int64
}

// restoreSnapshot reads a snapshot of the state directory into fresh state
// for the stage and workers (which have not started) and installs it. It returns
// errNoSnapshot when there is none, an *unusableError when it is corrupt or
// does not fit, another error when it could not be read; in every error
// case nothing is installed.
//
// The snapshot is CURRENT's unless committed (the group's committed
// offsets, nil when unknown) says a crash came between a newer snapshot and
// the commit of its offsets: then the retained snapshot whose offsets are
// exactly the committed ones is restored, so that what Kafka re-delivers is
// exactly what that state lacks.
func (p *Pipeline) restoreSnapshot(st *stage, committed map[int]int64) (*restored, error) {
	dir := p.cfg.stateDir
	name, sha, err := statedir.Current(dir)
	if err != nil {
		return nil, err
	}
	chosen, chosenSHA := name, sha
	if committed != nil {
		if man, err := readManifest(dir, name); err == nil && !manifestAt(man, committed) {
			if alt := p.snapshotAt(committed, name); alt != "" {
				chosen, chosenSHA = alt, ""
				p.log.Info("restoring the snapshot that matches the committed offsets (the newer one's offsets were not committed before the stop)",
					"snapshot", alt, "current", name)
			} else if ahead := manifestAhead(man, committed); ahead > 0 {
				p.log.Warn("no retained state snapshot matches the committed offsets: events re-delivered up to the snapshot's offsets are scored against a state that already holds them",
					"snapshot", name, "events", ahead)
			}
		}
	}
	r, err := p.readSnapshotDir(st, chosen, chosenSHA)
	if err != nil && chosen != name {
		p.log.Warn("the snapshot matching the committed offsets cannot be restored; restoring the current one", "snapshot", chosen, "err", err)
		r, err = p.readSnapshotDir(st, name, sha)
	}
	if err != nil {
		return nil, err
	}
	p.shared = r.shared
	p.counts.shared.Store(r.shared)
	capped := map[int]int64{}
	st.parts, st.lastPart = r.parts, nil
	for part, ps := range r.parts {
		// Cut to a smaller --max-cards than the snapshot's.
		for _, id := range ps.build.EvictedCards() {
			ps.seq.drop(id)
		}
		ps.restoredFrom = ps.applied
		p.stateRestored.Store(true)
		capped[part] = ps.applied
	}
	p.setCommitCap(filepath.Base(r.name), capped)
	if r.labelNext != nil {
		p.labelMu.Lock()
		p.labelNext, p.labelAhead = r.labelNext, r.labelAhead
		p.labelMu.Unlock()
	}
	return r, nil
}

// readManifest reads and parses the manifest of snapshot name in dir,
// without checking it against CURRENT.
func readManifest(dir, name string) (*snapshotManifest, error) {
	mb, err := statedir.ReadManifest(dir, name, "")
	if err != nil {
		return nil, err
	}
	var man snapshotManifest
	if err := json.Unmarshal(mb, &man); err != nil {
		return nil, err
	}
	return &man, nil
}

// manifestAt reports whether the committed offsets are exactly those after
// man's applied ones: Kafka re-delivers exactly what the state lacks.
func manifestAt(man *snapshotManifest, committed map[int]int64) bool {
	for ps, off := range man.Applied {
		part, err := strconv.Atoi(ps)
		if err != nil || committed[part] != off+1 {
			return false
		}
	}
	return true
}

// manifestAhead returns how many offsets man's state holds beyond the
// committed ones (summed over partitions): events that will be re-delivered
// though the state has them.
func manifestAhead(man *snapshotManifest, committed map[int]int64) int64 {
	var n int64
	for ps, off := range man.Applied {
		part, err := strconv.Atoi(ps)
		if err != nil {
			continue
		}
		c, ok := committed[part]
		if !ok || c < 0 {
			c = 0
		}
		n += max(off+1-c, 0)
	}
	return n
}

// snapshotAt returns the newest complete snapshot of the state directory
// other than current whose applied offsets match committed (manifestAt),
// or "".
func (p *Pipeline) snapshotAt(committed map[int]int64, current string) string {
	names, err := statedir.Snapshots(p.cfg.stateDir)
	if err != nil {
		return ""
	}
	for _, n := range names {
		if n == current {
			continue
		}
		man, err := readManifest(p.cfg.stateDir, n)
		if err == nil && man.Topic == p.topic && manifestAt(man, committed) {
			return n
		}
	}
	return ""
}

// readSnapshot reads the current snapshot of the state directory into
// fresh state for st, without installing it (restoreSnapshot's errors).
func (p *Pipeline) readSnapshot(st *stage) (*restored, error) {
	name, manifestSHA, err := statedir.Current(p.cfg.stateDir)
	if err != nil {
		return nil, err
	}
	return p.readSnapshotDir(st, name, manifestSHA)
}

// readSnapshotDir reads snapshot name into fresh state for st; its
// manifest must have the SHA-256 manifestSHA unless that is "" (a retained
// snapshot other than CURRENT's, checked by its files' SHA-256 alone).
func (p *Pipeline) readSnapshotDir(stg *stage, name, manifestSHA string) (*restored, error) {
	dir := p.cfg.stateDir
	sdir := filepath.Join(dir, name)
	mb, err := statedir.ReadManifest(dir, name, manifestSHA)
	if err != nil {
		return nil, err
	}
	r := &restored{name: sdir}
	var format struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(mb, &format); err != nil {
		return nil, unusable("%s: %w", manifestFn, err)
	}
	if format.Format != snapFormat {
		why := ""
		if format.Format == 1 {
			why = " (format 1 kept card state per worker; this build keeps it per partition, and cannot tell which of a worker's cards belong to which partition)"
		}
		return nil, unusable("snapshot format %d, this build reads %d%s", format.Format, snapFormat, why)
	}
	if err := json.Unmarshal(mb, &r.man); err != nil {
		return nil, unusable("%s: %w", manifestFn, err)
	}
	man := &r.man
	switch {
	case man.Topic != p.topic:
		return nil, unusable("snapshot of topic %q, this pipeline reads %q", man.Topic, p.topic)
	case !slices.Equal(man.Features, p.names):
		return nil, unusable("snapshot has %d features %v, this pipeline %d", len(man.Features), man.Features, len(p.names))
	}
	partition := func(what, ps string, off int64) (int, error) {
		part, err := strconv.Atoi(ps)
		if err != nil || part < 0 || part > maxSnapPartition || off < 0 {
			return 0, unusable("%s: partition %q, offset %d", what, ps, off)
		}
		return part, nil
	}
	files := map[string]snapshotFile{}
	for _, f := range man.Files {
		files[f.Name] = f
	}
	read := func(fn string, f func(io.Reader) error) error {
		sf, ok := files[fn]
		if !ok {
			return unusable("manifest lists no %s", fn)
		}
		return statedir.ReadFile(dir, name, sf, func(rd io.Reader) error {
			err := f(rd)
			if errors.Is(err, features.ErrState) || errors.Is(err, errSeqState) || errors.Is(err, io.ErrUnexpectedEOF) {
				return unusable("%w", err)
			}
			return err
		})
	}
	if r.shared, err = features.NewShared(p.cfg.featureOpts...); err != nil {
		return nil, fmt.Errorf("stream: feature options: %w", err)
	}
	if err := read(sharedFn, r.shared.ReadState); err != nil {
		return nil, err
	}
	// The partitions' files are read in parallel, each into its own fresh
	// state (Builder.ReadState does not touch the Shared).
	r.parts = map[int]*partState{}
	var parts []*partState
	for ps, off := range man.Applied {
		part, err := partition("applied", ps, off)
		if err != nil {
			return nil, err
		}
		st := &partState{
			part:         part,
			build:        p.partBuilder(r.shared),
			seq:          newSeqStates(p.shared.TTL(), p.met.stateResets, p.log),
			offTrail:     newOffTrail(off),
			restoredFrom: -1,
			ckptApplied:  -1,
			ckptOff:      [2]int64{-1, -1},
			startOff:     -1,
			cols:         colLog{width: len(p.sharedCols)},
		}
		var err2 error
		if st.offTrail, err2 = restoredTrail(ps, off, man.Ahead[ps]); err2 != nil {
			return nil, err2
		}
		st.shr, st.shrKnown = st.offTrail, true
		st.shr.trail = slices.Clone(st.offTrail.trail)
		st.seq.layout = stageLayout(stg, part)
		r.parts[part] = st
		parts = append(parts, st)
	}
	for key, off := range man.SharedApplied {
		part, err := partition("shared_applied", key, off)
		if err != nil {
			return nil, err
		}
		st, ok := r.parts[part]
		if !ok {
			// Read as a replica only: no cards.
			st = p.newPartState(part)
			st.build = p.partBuilder(r.shared)
			st.seq.layout = stageLayout(stg, part)
			r.parts[part] = st
		}
		if st.shr, err = restoredTrail(key, off, man.SharedAhead[key]); err != nil {
			return nil, err
		}
		st.shrKnown = true
	}
	errs := parallel(2*len(parts), func(i int) error {
		ps := parts[i/2]
		if i%2 == 0 {
			return read(cardsFile(ps.part), ps.build.ReadState)
		}
		return read(seqFile(ps.part), func(rd io.Reader) error { _, err := ps.seq.readState(rd); return err })
	})
	// An I/O error fails the start even when another file is corrupt.
	var first error
	for _, err := range errs {
		if err != nil && !errors.As(err, new(*unusableError)) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	// The label offsets are used only for the same labels topic: with
	// another one, every label is read from the start.
	if p.cfg.labelsTopic != "" && man.LabelsTopic == p.cfg.labelsTopic {
		r.labelNext = map[int]int64{}
		for ps, off := range man.LabelsNext {
			part, err := partition("labels_next", ps, off)
			if err != nil {
				return nil, err
			}
			r.labelNext[part] = off
		}
		var err error
		if r.labelAhead, err = restoredLabels(r.labelNext, man.LabelsAhead); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// restoredTrail is the trail of a manifest's applied offset and the
// offsets applied ahead of it (of partition key).
func restoredTrail(key string, off int64, ahead []int64) (offTrail, error) {
	t := newOffTrail(off)
	for _, a := range ahead {
		if a <= t.seen || len(t.trail) > maxSnapAhead {
			return t, unusable("ahead of partition %s: offset %d not above %d, or more than %d", key, a, t.seen, maxSnapAhead)
		}
		t.trail = append(t.trail, trailEntry{off: a, done: true})
		t.seen = a
	}
	return t, nil
}

// restoredLabels checks the label offsets applied ahead of each labels
// partition's next offset (keyed by partition, decimal) and returns them
// by partition: in increasing order above next-1, at most maxSnapAhead,
// of a partition with a next offset.
func restoredLabels(next map[int]int64, ahead map[string][]int64) (map[int][]int64, error) {
	var out map[int][]int64
	for ps, offs := range ahead {
		part, err := strconv.Atoi(ps)
		n, ok := next[part]
		if err != nil {
			return nil, unusable("labels_ahead: partition %q", ps)
		}
		if !ok {
			return nil, unusable("labels_ahead of partition %s without its labels_next", ps)
		}
		if _, err := restoredTrail("labels "+ps, n-1, offs); err != nil {
			return nil, err
		}
		if out == nil {
			out = map[int][]int64{}
		}
		out[part] = offs
	}
	return out, nil
}

// restoreState restores the state directory's snapshot, if any, into
// the stage before it starts, logging and counting the outcome. A snapshot
// that is corrupt or does not fit is set aside and the state starts empty;
// one that cannot be read (an I/O error: permissions, a failing disk) is
// an error, so that the pipeline does not start without the state it
// should have.
func (p *Pipeline) restoreState(st *stage, committed map[int]int64) error {
	t0 := time.Now()
	r, err := p.restoreSnapshot(st, committed)
	var bad *unusableError
	switch {
	case errors.Is(err, errNoSnapshot):
		p.met.restores.WithLabelValues("none").Inc()
		p.log.Info("no state snapshot to restore: starting with empty state", "dir", p.cfg.stateDir)
	case errors.As(err, &bad):
		p.met.restores.WithLabelValues("failed").Inc()
		// Keep the refused snapshot out of the way of the next one (which
		// would remove it) and of the next start: a wrong flag fixed
		// later can still use it, by hand.
		kept, aerr := p.setAside()
		if aerr != nil {
			p.log.Warn("set the refused state snapshot aside", "dir", p.cfg.stateDir, "err", aerr)
		}
		p.log.Error("state snapshot not restored: starting with empty state", "dir", p.cfg.stateDir, "err", err, "kept_as", kept)
	case err != nil:
		p.met.restores.WithLabelValues("error").Inc()
		return fmt.Errorf("stream: restore state from %s: %w", p.cfg.stateDir, err)
	default:
		p.restoredSnapshot = true
		p.met.restores.WithLabelValues("ok").Inc()
		p.log.Info("state snapshot restored", "snapshot", r.name, "written_at", r.man.WrittenAt, "reason", r.man.Reason,
			"cards", sumMap(r.man.Cards), "partitions", len(r.man.Applied), "label_partitions", len(r.labelNext),
			"took", time.Since(t0).Round(time.Millisecond))
	}
	return nil
}

// topicOffsets returns, for every partition of the topic, the group's
// committed offset (-1 where none) and the first and next offsets Kafka
// holds, through a client with the dialer's TLS and SASL settings. The
// restore uses the committed offsets to pick the snapshot that matches;
// the aligner, the others to tell a partition with nothing to read.
func (p *Pipeline) topicOffsets(ctx context.Context, d *kafka.Dialer) (committed, first, next map[int]int64, err error) {
	return p.offsetsOf(ctx, d, p.topic, p.group)
}

// offsetsOf is topicOffsets for any topic; with group "" the committed
// offsets are all -1.
func (p *Pipeline) offsetsOf(ctx context.Context, d *kafka.Dialer, topic, group string) (committed, first, next map[int]int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(p.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{
		Dial: d.DialFunc, DialTimeout: d.Timeout, ClientID: d.ClientID, TLS: d.TLS, SASL: d.SASLMechanism,
	}}
	defer cl.Transport.(*kafka.Transport).CloseIdleConnections()
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("metadata: %w", err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, nil, nil, fmt.Errorf("metadata of %q: %v", topic, md.Topics)
	}
	var parts []int
	for _, pt := range md.Topics[0].Partitions {
		parts = append(parts, pt.ID)
	}
	committed = make(map[int]int64, len(parts))
	for _, pt := range parts {
		committed[pt] = -1
	}
	res := &kafka.OffsetFetchResponse{Error: kafka.GroupIdNotFound}
	if group != "" {
		if res, err = cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}}); err != nil {
			return nil, nil, nil, fmt.Errorf("offset fetch: %w", err)
		}
	}
	if res.Error != nil && !errors.Is(res.Error, kafka.GroupIdNotFound) {
		return nil, nil, nil, fmt.Errorf("offset fetch: %w", res.Error)
	}
	if res.Error == nil {
		for _, po := range res.Topics[topic] {
			if po.Error != nil {
				return nil, nil, nil, fmt.Errorf("offset fetch of partition %d: %w", po.Partition, po.Error)
			}
			committed[po.Partition] = po.CommittedOffset
		}
	}
	var reqs []kafka.OffsetRequest
	for _, pt := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(pt), kafka.LastOffsetOf(pt))
	}
	lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list offsets: %w", err)
	}
	first, next = map[int]int64{}, map[int]int64{}
	for _, po := range lo.Topics[topic] {
		if po.Error != nil {
			return nil, nil, nil, fmt.Errorf("list offsets of partition %d: %w", po.Partition, po.Error)
		}
		first[po.Partition], next[po.Partition] = po.FirstOffset, po.LastOffset
	}
	return committed, first, next, nil
}

// setAside sets the snapshot CURRENT names aside (statedir.SetAside); it
// returns its new path ("" when there was nothing to move).
func (p *Pipeline) setAside() (string, error) { return statedir.SetAside(p.cfg.stateDir) }

// shutdownSnapshot writes the snapshot at shutdown, once every worker has
// returned: the state is the events applied, unless a hard stop (drain
// timeout, sink failure) caught a worker with an open batch, whose events
// are in the windows but have not stepped the sequential models yet; then
// none is written. Events applied but not committed are re-delivered and
// scored against the restored state.
func (p *Pipeline) shutdownSnapshot(st *stage) {
	torn := 0
	if st.torn {
		torn++
	}
	for _, w := range st.workers {
		if w.torn {
			torn++
		}
	}
	if torn > 0 {
		p.log.Warn("no state snapshot at shutdown: a hard stop left batches unscored; the last interval snapshot, if any, stays current",
			"dir", p.cfg.stateDir, "stages", torn)
		return
	}
	if err := p.writeSnapshot(st, "shutdown"); err != nil {
		p.log.Error("state snapshot at shutdown failed: the next start begins with the current snapshot, if any, or empty state", "dir", p.cfg.stateDir, "err", err)
	}
}

// snapshotLoop writes a snapshot a state interval after the previous one
// finished, until stop is closed: it pauses every worker between batches,
// writes, and resumes them.
func (p *Pipeline) snapshotLoop(st *stage, stop <-chan struct{}) {
	t := time.NewTimer(p.cfg.stateInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		case <-p.hard.Done():
			return
		}
		if !p.pauseAndSnapshot(st, stop) {
			return
		}
		t.Reset(p.cfg.stateInterval)
	}
}

// pauseAndSnapshot pauses the feature stage (which closes its open
// batches and waits until every worker has scored what it was handed),
// writes a snapshot and resumes. It returns false if stop or the hard stop
// came first.
func (p *Pipeline) pauseAndSnapshot(st *stage, stop <-chan struct{}) bool {
	// One checkpoint round at a time: a revoke's waits for this one's
	// store and record (ckptRound).
	p.ckptRound.Lock()
	defer p.ckptRound.Unlock()
	resume := make(chan struct{})
	resumed := false
	defer func() {
		if !resumed {
			close(resume)
		}
	}()
	t0 := time.Now()
	req := &pauseReq{paused: make(chan struct{}), resume: resume}
	select {
	case st.pause <- req:
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
	waited := time.Since(t0)
	var blobs []ckptBlob
	if p.cfg.ckpt != nil {
		blobs = p.encodeClaimed(st)
	}
	if p.cfg.stateDir != "" {
		if err := p.writeSnapshot(st, "interval"); err != nil {
			p.log.Error("state snapshot failed; the current one, if any, stays current", "dir", p.cfg.stateDir, "err", err)
		}
	}
	paused := time.Since(t0)
	resumed = true
	close(resume)
	p.met.snapshotPause.Set(paused.Seconds())
	p.log.Debug("stage paused for a state snapshot", "pause_wait", waited, "paused", paused)
	// Stored while the stage runs again: the serialised state is a copy.
	// A revoke cuts the store short (its own round stores what this one
	// did not).
	ctx, cut := context.WithCancel(p.hard)
	p.cutMu.Lock()
	p.cutInterval = cut
	p.cutMu.Unlock()
	p.putCheckpoints(ctx, st, blobs, true, "interval")
	p.cutMu.Lock()
	p.cutInterval = nil
	p.cutMu.Unlock()
	cut()
	return true
}
