package stream

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/streamscore/streamscore/stream/internal/statedir"
)

// The public check of a state directory (CheckState), for `streamscore
// state`: the snapshot is read exactly as Run restores it (snapshot.go),
// nothing is installed or changed.

// ErrSnapshotRefused is wrapped by CheckState's error when the state
// directory's snapshot is corrupt or does not fit the pipeline: Run would
// set it aside and start with empty state.
var ErrSnapshotRefused = errors.New("stream: the state snapshot would be refused")

// ErrNoSnapshot is CheckState's error when the state directory holds no
// snapshot: Run would start with empty state.
var ErrNoSnapshot = errors.New("stream: no state snapshot")

// StateInfo describes a state snapshot (CheckState).
type StateInfo struct {
	Dir       string    // the snapshot's directory
	WrittenAt time.Time // when it was written
	Reason    string    // "shutdown" or "interval"
	Topic     string
	Group     string
	Workers   int
	Features  int
	Cards     int // cards with window state, all partitions
	SeqCards  int // cards with sequential-model state, all partitions
	Bytes     int64
	// Applied is, per partition, the highest offset in the state.
	Applied map[int]int64
	// LabelsTopic and LabelsNext: per labels partition, the next label
	// offset to read.
	LabelsTopic string
	LabelsNext  map[int]int64
	// Refused lists the refused-snap-* directories kept in the state
	// directory.
	Refused []string
}

// CheckState reads the snapshot of the pipeline's state directory exactly
// as Run would restore it — the manifest against CURRENT, every file's
// SHA-256, every byte decoded into fresh state, and whether it fits this
// pipeline's topic, features, TTL and lateness — without taking the
// directory's lock, contacting Kafka or changing anything, so that a
// configuration can be checked against a snapshot before a deploy. It
// returns ErrNoSnapshot when there is none, an error wrapping
// ErrSnapshotRefused when Run would refuse it (the info is then nil), and
// another error when it cannot be read. A snapshot replaced by a running
// engine while it is being checked shows as missing files: check again.
func (p *Pipeline) CheckState() (*StateInfo, error) {
	if p.cfg.stateDir == "" {
		return nil, errors.New("stream: no state directory (WithStateDir)")
	}
	workers := make([]*worker, p.cfg.workers)
	for i := range workers {
		workers[i] = newWorker(p, i)
	}
	r, err := p.readSnapshot(newStage(p, workers))
	switch {
	case errors.Is(err, errNoSnapshot):
		return nil, ErrNoSnapshot
	case errors.As(err, new(*unusableError)):
		return nil, fmt.Errorf("%w: %w", ErrSnapshotRefused, err)
	case err != nil:
		return nil, err
	}
	m := &r.man
	info := &StateInfo{
		Dir: r.name, WrittenAt: m.WrittenAt, Reason: m.Reason, Topic: m.Topic, Group: m.Group,
		Workers: m.Workers, Features: len(m.Features), Cards: sumMap(m.Cards), SeqCards: sumMap(m.SeqCard),
		Applied: map[int]int64{}, LabelsTopic: m.LabelsTopic,
	}
	for _, f := range m.Files {
		info.Bytes += f.Bytes
	}
	for part, ps := range r.parts {
		info.Applied[part] = ps.applied
	}
	for ps, off := range m.LabelsNext {
		if part, err := strconv.Atoi(ps); err == nil {
			if info.LabelsNext == nil {
				info.LabelsNext = map[int]int64{}
			}
			info.LabelsNext[part] = off
		}
	}
	if info.Refused, err = statedir.Refused(p.cfg.stateDir); err != nil {
		return nil, err
	}
	return info, nil
}
