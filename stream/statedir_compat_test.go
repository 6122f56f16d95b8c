package stream

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamscore/streamscore/features"
)

// compatDirFixture returns a pipeline on stateDir with the shipped models
// and a stage of two workers holding, in two partitions, 60 cards (two
// events each, a day apart) and their sequential-model states: the same
// state every time.
func compatDirFixture(tb testing.TB, stateDir string) (*Pipeline, *stage) {
	tb.Helper()
	return stateFixture(tb, "compat", stateDir, stateFill{cards: 60, terminals: 7, seed: 3, t0: compatT0, step: time.Second})
}

// TestStateDirGoldenV2: a state directory written by the build before
// internal/statedir and internal/frame (snapshot format 2, sequential-model
// files of format 1; testdata/statedir-v2) restores into the state it was
// written from: cards, offsets, sequential states, and every card's row.
// STREAMSCORE_WRITE_GOLDEN=1 rewrites it with the running build.
func TestStateDirGoldenV2(t *testing.T) {
	golden := filepath.Join("testdata", "statedir-v2")
	if os.Getenv("STREAMSCORE_WRITE_GOLDEN") != "" {
		p, st := compatDirFixture(t, t.TempDir())
		if err := p.writeSnapshot(st, "golden"); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(golden)
		if err := os.CopyFS(golden, os.DirFS(p.cfg.stateDir)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(golden)); err != nil {
		t.Fatal(err)
	}
	_, wst := compatDirFixture(t, t.TempDir())
	p, _ := compatDirFixture(t, dir)
	r, err := p.readSnapshot(newStage(p, []*worker{newWorker(p, 0), newWorker(p, 1)}))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.parts) != 2 {
		t.Fatalf("%d partitions restored, want 2", len(r.parts))
	}
	for part, w := range wst.parts {
		g := r.parts[part]
		if g.applied != w.applied || g.build.Cards() != w.build.Cards() || len(g.seq.cards) != len(w.seq.cards) {
			t.Fatalf("partition %d: applied %d, %d cards, %d sequential; want %d, %d, %d", part,
				g.applied, g.build.Cards(), len(g.seq.cards), w.applied, w.build.Cards(), len(w.seq.cards))
		}
		for id, wc := range w.seq.cards {
			gc := g.seq.cards[id]
			if gc == nil || gc.last != wc.last || !slices.EqualFunc(gc.data, wc.data, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
				t.Fatalf("partition %d card %s: sequential state differs", part, id)
			}
		}
		a, b := make([]float32, wst.width), make([]float32, wst.width)
		for i := part; i < 60; i += 2 {
			ev := features.Event{TxID: "probe", CardID: "c-" + strconv.Itoa(i), TerminalID: "m-3",
				TS: compatT0.Add(36 * time.Hour), Amount: 12.5, Currency: "EUR", MCC: "5411", Channel: "pos", Country: "FR"}
			w.build.Peek(&ev, a)
			g.build.Peek(&ev, b)
			if !slices.Equal(a, b) {
				t.Fatalf("partition %d card %d: row %v, want %v", part, i, b, a)
			}
		}
	}
}

// TestRestoreOutcomes runs the restore of Run (restoreState) on copies of
// the golden state directory as a crash or a person leaves them, without a
// broker: an intact snapshot is installed; a corrupt one is set aside as
// refused-snap-… and the state starts empty; an unreadable one fails the
// start and stays current; none starts empty.
func TestRestoreOutcomes(t *testing.T) {
	golden := filepath.Join("testdata", "statedir-v2")
	ents, err := os.ReadDir(golden)
	if err != nil {
		t.Fatal(err)
	}
	var snap string
	for _, e := range ents {
		if e.IsDir() {
			snap = e.Name()
		}
	}
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string)
		outcome string
		wantErr bool
	}{
		{"intact", func(*testing.T, string) {}, "ok", false},
		{"no CURRENT", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "CURRENT")) }, "none", false},
		{"flipped byte", func(t *testing.T, dir string) {
			fn := filepath.Join(dir, snap, "part-1.seq")
			b, _ := os.ReadFile(fn)
			b[len(b)/2] ^= 1
			os.WriteFile(fn, b, 0o600)
		}, "failed", false},
		{"torn manifest", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, snap, "manifest.json"), 100) }, "failed", false},
		{"unreadable file", func(t *testing.T, dir string) {
			fn := filepath.Join(dir, snap, "part-0.cards")
			os.Remove(fn)
			os.Mkdir(fn, 0o700)
		}, "error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(golden)); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir)
			p, _ := compatDirFixture(t, dir)
			st := newStage(p, []*worker{newWorker(p, 0), newWorker(p, 1)})
			err := p.restoreState(st, nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("restoreState: %v, want an error: %v", err, tc.wantErr)
			}
			if v := testutil.ToFloat64(p.met.restores.WithLabelValues(tc.outcome)); v != 1 {
				t.Errorf("restores{%s} = %v, want 1", tc.outcome, v)
			}
			_, refusedErr := os.Stat(filepath.Join(dir, "refused-"+snap))
			_, currentErr := os.Stat(filepath.Join(dir, "CURRENT"))
			switch tc.outcome {
			case "ok":
				if len(st.parts) != 2 || st.parts[0].build.Cards() != 30 || !p.restoredSnapshot {
					t.Errorf("installed %d partitions, restored %v", len(st.parts), p.restoredSnapshot)
				}
			case "failed":
				if refusedErr != nil || currentErr == nil || len(st.parts) != 0 {
					t.Errorf("set aside: %v, CURRENT removed: %v, %d partitions installed", refusedErr, currentErr, len(st.parts))
				}
			case "error":
				if refusedErr == nil || currentErr != nil || len(st.parts) != 0 {
					t.Errorf("an unreadable snapshot was set aside (%v) or CURRENT removed (%v), or %d partitions installed", refusedErr, currentErr, len(st.parts))
				}
			}
		})
	}
}
