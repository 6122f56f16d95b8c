package features_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

// testdata/state-v2.bin is a Shared then a Builder snapshot (smallTraffic,
// default options) written by the build before the framing moved to
// internal/frame. The format (version 2) did not change; this build must
// read what users' state directories hold. STREAMSCORE_WRITE_GOLDEN=1
// rewrites it with the running build.
func TestReadStateGoldenV2(t *testing.T) {
	fn := filepath.Join("testdata", "state-v2.bin")
	tr := smallTraffic()
	live := newPipe(nil, nil)
	for _, o := range tr.ops {
		live.do(tr, o)
	}
	if os.Getenv("STREAMSCORE_WRITE_GOLDEN") != "" {
		if err := os.WriteFile(fn, live.snapshot(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := os.ReadFile(fn)
	if err != nil {
		t.Fatal(err)
	}
	got := newPipe(nil, nil)
	got.restore(t, snap)
	if got.b.Cards() != live.b.Cards() || got.b.Cards() == 0 {
		t.Fatalf("restored %d cards, want %d (and some)", got.b.Cards(), live.b.Cards())
	}
	// Every event peeked at the end scores the same on the restored state.
	for i := range tr.evs {
		live.b.Peek(&tr.evs[i], live.row)
		got.b.Peek(&tr.evs[i], got.row)
		for j := range live.row {
			if math.Float32bits(live.row[j]) != math.Float32bits(got.row[j]) {
				t.Fatalf("event %d feature %d: restored %v, live %v", i, j, got.row[j], live.row[j])
			}
		}
	}
}
