package commit

import (
	"math/rand/v2"
	"sync"
	"testing"
)

func TestTrackerContiguousPrefix(t *testing.T) {
	tr := New()
	for _, o := range []int64{10, 11, 13, 14} { // 12 absent: offsets need not be contiguous
		tr.Track(0, o)
	}
	if got := tr.Committable(); len(got) != 0 {
		t.Fatalf("committable before any ack: got %v, want none", got)
	}
	tr.Ack(0, 13)
	if got := tr.Committable(); len(got) != 0 {
		t.Fatalf("ack of 13 with 10 pending: got %v, want none", got)
	}
	tr.Ack(0, 10)
	want := Commit{0, 11}
	if got := tr.Committable(); len(got) != 1 || got[0] != want {
		t.Fatalf("got %v, want [%v]", got, want)
	}
	tr.MarkCommitted(want)
	if got := tr.Committable(); len(got) != 0 {
		t.Fatalf("after MarkCommitted: got %v, want none", got)
	}
	tr.Ack(0, 11)
	if got := tr.Committable(); len(got) != 1 || got[0].Next != 14 {
		t.Fatalf("got %v, want next 14 (11 and 13 acked)", got)
	}
	if tr.Idle() {
		t.Fatal("Idle with 14 pending")
	}
	tr.Ack(0, 14)
	if got := tr.Committable(); got[0].Next != 15 {
		t.Fatalf("got %v, want next 15", got)
	}
	if !tr.Idle() {
		t.Fatal("not Idle after every ack")
	}
	if tr.Ack(0, 14) {
		t.Fatal("double ack accepted")
	}
	if tr.Ack(0, 99) {
		t.Fatal("ack of untracked offset accepted")
	}
}

func TestTrackerReset(t *testing.T) {
	tr := New()
	tr.Track(1, 5)
	tr.Track(1, 6)
	tr.Ack(1, 5)
	if !tr.Track(1, 6) {
		t.Fatal("re-delivery of 6 did not reset")
	}
	if tr.Ack(1, 5) {
		t.Fatal("ack from abandoned state accepted")
	}
	tr.Ack(1, 6)
	if got := tr.Committable(); len(got) != 1 || got[0].Next != 7 {
		t.Fatalf("got %v, want p1@7", got)
	}
}

// TestTrackerRandom acks offsets in random order from several goroutines and
// checks that the committable offset never passes an unacked offset.
func TestTrackerRandom(t *testing.T) {
	const n = 20000
	tr := New()
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = int64(i * 2)
		tr.Track(3, offs[i])
	}
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	acked := make([]bool, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				idx := perm[i]
				mu.Lock()
				acked[idx] = true
				mu.Unlock()
				tr.Ack(3, offs[idx])
				for _, c := range tr.Committable() {
					mu.Lock()
					for j := 0; j < n && offs[j] < c.Next; j++ {
						if !acked[j] {
							mu.Unlock()
							t.Errorf("committable %v passes unacked offset %d", c, offs[j])
							return
						}
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if got := tr.Committable(); len(got) != 1 || got[0].Next != offs[n-1]+1 {
		t.Fatalf("final: got %v, want next %d", got, offs[n-1]+1)
	}
}

func TestTrackerAckAll(t *testing.T) {
	tr := New()
	for o := int64(0); o < 5; o++ {
		tr.Track(0, o)
		tr.Track(1, o)
	}
	tr.AckAll([]Ack{{0, 1}, {0, 0}, {1, 0}, {0, 3}, {7, 0}})
	got := tr.Committable()
	if len(got) != 2 || got[0] != (Commit{0, 2}) || got[1] != (Commit{1, 1}) {
		t.Fatalf("got %v, want [p0@2 p1@1]", got)
	}
}

func TestForget(t *testing.T) {
	tr := New()
	tr.Track(0, 5)
	tr.Track(1, 7)
	tr.Ack(0, 5)
	tr.Forget(0)
	if got := tr.Partitions(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("partitions after Forget(0): %v, want [1]", got)
	}
	if cs := tr.Committable(); len(cs) != 0 {
		t.Fatalf("committable after Forget: %v, want none", cs)
	}
	if n, c := tr.Pending(0); n != 0 || c != -1 {
		t.Fatalf("Pending(0) after Forget: %d, %d; want 0, -1", n, c)
	}
}
