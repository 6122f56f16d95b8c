package features

import (
	"fmt"
	"testing"
)

type capState struct{ seen int64 }

func (s *capState) lastSeen() int64 { return s.seen }

// TestRenameUnderCap: a state renamed by a PAN-key rotation is still under
// the capacity: it can be evicted, and the map never holds more than max.
func TestRenameUnderCap(t *testing.T) {
	m := newExpiryMap[*capState](1 << 60)
	m.limit(3, true)
	m.tick(1)
	for i := range 3 {
		m.put(fmt.Sprintf("old-%d", i), &capState{seen: int64(10 + i)})
	}
	m.tick(20)
	if _, ok := m.get("old-0"); !ok {
		t.Fatal("old-0 missing")
	}
	m.rename("old-0", "new-0") // the least recently seen
	for i := range 5 {
		m.put(fmt.Sprintf("more-%d", i), &capState{seen: int64(30 + i)})
		if n := m.len(); n > 3 {
			t.Fatalf("after put %d: %d states held under a cap of 3", i, n)
		}
	}
	if _, ok := m.peek("new-0", 40); ok {
		t.Errorf("the renamed state, the least recently seen, was never evicted")
	}
	if m.droppedCap != 5 {
		t.Errorf("%d cap evictions, want 5", m.droppedCap)
	}
}
