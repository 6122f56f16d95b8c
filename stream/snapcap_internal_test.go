package stream

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/stream/internal/commit"
)

func capTestPipeline(t *testing.T) *Pipeline {
	t.Helper()
	met, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &Pipeline{tracker: commit.New(), met: met, topic: "tx", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// ack tracks and acks offsets [from, to) of partition part.
func ackRange(p *Pipeline, part int, from, to int64) {
	for o := from; o < to; o++ {
		p.tracker.Track(part, o)
		p.tracker.Ack(part, o)
	}
}

// TestCommitsAtSnapshots: with a state interval a commit is always the
// offsets of one whole snapshot — the newest whose every partition is
// acked — never an acked prefix between two snapshots, so that after a
// crash one retained snapshot matches the committed offsets exactly.
func TestCommitsAtSnapshots(t *testing.T) {
	p := capTestPipeline(t)
	commits := func() map[int]int64 {
		out := map[int]int64{}
		cs := p.capToSnapshot(p.tracker.Committable())
		for _, c := range cs {
			out[c.Partition] = c.Next
			p.tracker.MarkCommitted(c)
		}
		return out
	}
	ackRange(p, 0, 0, 10)
	ackRange(p, 1, 0, 5)
	if got := commits(); len(got) != 0 {
		t.Fatalf("commits before any snapshot: %v", got)
	}
	p.setCommitCap("snap-1", map[int]int64{0: 7, 1: 4}) // next 8, 5
	if got, want := commits(), map[int]int64{0: 8, 1: 5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("commits at snap-1: %v, want %v", got, want)
	}
	// snap-2 covers offsets not yet acked on partition 1: nothing moves,
	// though partition 0 is acked past it.
	p.setCommitCap("snap-2", map[int]int64{0: 9, 1: 8})
	if got := commits(); len(got) != 0 {
		t.Fatalf("commits while snap-2 is not acked everywhere: %v", got)
	}
	if got := p.committedSnapshot(); got != "snap-1" {
		t.Fatalf("committed snapshot %q, want snap-1 (kept on disk)", got)
	}
	ackRange(p, 1, 5, 12)
	p.setCommitCap("snap-3", map[int]int64{0: 20, 1: 11})
	if got, want := commits(), map[int]int64{0: 10, 1: 9}; !reflect.DeepEqual(got, want) {
		t.Fatalf("commits at snap-2: %v, want %v", got, want)
	}
	if got := p.committedSnapshot(); got != "snap-2" {
		t.Fatalf("committed snapshot %q, want snap-2", got)
	}
	if got := p.retainedSnapshots("snap-3"); !reflect.DeepEqual(got, []string{"snap-3", "snap-2", "snap-3"}) {
		t.Fatalf("retained %v", got)
	}
	// More snapshots than maxSnapCaps while nothing is acked: the oldest
	// are dropped.
	for i := range maxSnapCaps + 2 {
		p.setCommitCap("snap-x"+strconv.Itoa(i), map[int]int64{0: 100})
	}
	if n := len(p.caps); n != maxSnapCaps {
		t.Fatalf("%d caps kept, want %d", n, maxSnapCaps)
	}
}

// TestSnapshotAt: the retained snapshot whose applied offsets are exactly
// the committed offsets minus one is found, newest first; none when no
// snapshot matches.
func TestSnapshotAt(t *testing.T) {
	dir := t.TempDir()
	p := capTestPipeline(t)
	p.cfg.stateDir = dir
	write := func(name string, applied map[string]int64) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(snapshotManifest{Format: snapFormat, Topic: "tx", Applied: applied})
		if err := os.WriteFile(filepath.Join(dir, name, manifestFn), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("snap-100", map[string]int64{"0": 9})
	write("snap-200", map[string]int64{"0": 19, "1": 4})
	write("snap-300", map[string]int64{"0": 29, "1": 9})
	for _, tc := range []struct {
		name      string
		committed map[int]int64
		want      string
	}{
		{"previous", map[int]int64{0: 20, 1: 5}, "snap-200"},
		{"older (partitions it has no state for do not matter)", map[int]int64{0: 10, 1: -1}, "snap-100"},
		{"none", map[int]int64{0: 15, 1: 5}, ""},
		{"current excluded", map[int]int64{0: 30, 1: 10}, ""},
	} {
		if got := p.snapshotAt(tc.committed, "snap-300"); got != tc.want {
			t.Errorf("%s: snapshotAt(%v) = %q, want %q", tc.name, tc.committed, got, tc.want)
		}
	}
	man, err := readManifest(dir, "snap-300")
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestAhead(man, map[int]int64{0: 20, 1: 5}); got != 10+5 {
		t.Errorf("manifestAhead = %d, want 15", got)
	}
}
