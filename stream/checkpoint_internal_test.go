package stream

import "testing"

// TestCkptChoice: of a partition's two checkpoint slots, the restore takes
// the one at the committed offset (a crash between the next one's store and
// its commit leaves the other ahead of it), else the newest before it,
// else the oldest after it.
func TestCkptChoice(t *testing.T) {
	for _, tc := range []struct {
		name  string
		found [2]bool
		off   [2]int64
		start int64
		want  int
	}{
		{"none", [2]bool{}, [2]int64{}, 10, -1},
		{"one, at the commit", [2]bool{true, false}, [2]int64{10, 0}, 10, 0},
		{"crash between store and commit: the older slot matches", [2]bool{true, true}, [2]int64{10, 15}, 10, 0},
		{"the newer slot matches", [2]bool{true, true}, [2]int64{15, 10}, 10, 1},
		{"both before: the newest", [2]bool{true, true}, [2]int64{5, 8}, 10, 1},
		{"one before, one after: the one before", [2]bool{true, true}, [2]int64{12, 8}, 10, 1},
		{"both after: the oldest", [2]bool{true, true}, [2]int64{14, 12}, 10, 1},
		{"only one, after", [2]bool{false, true}, [2]int64{0, 12}, 10, 1},
	} {
		if got := ckptChoice(tc.found, tc.off, tc.start); got != tc.want {
			t.Errorf("%s: slot %d, want %d", tc.name, got, tc.want)
		}
	}
}

// BenchmarkOffTrail: a partition with 4,096 events waiting in the aligner
// (a backlog), released in offset order: the cost per event of tracking
// how far the partition is applied.
//
//	go test -run '^$' -bench BenchmarkOffTrail ./stream/
func BenchmarkOffTrail(b *testing.B) {
	const waiting = 4096
	tr := newOffTrail(-1)
	next := int64(0)
	for ; next < waiting; next++ {
		tr.fetched(next, false)
	}
	applied := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		tr.markApplied(applied)
		applied++
		tr.fetched(next, false)
		next++
	}
}
