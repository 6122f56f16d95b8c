package stream

import (
	"testing"
	"unsafe"
)

// TestPendingLayout keeps pending's layout as its doc says: the fields
// the stage reads first in the first cache line, and a size that is a
// multiple of 64 (a size class whose objects start on a line).
func TestPendingLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("pending is laid out for 64-bit platforms")
	}
	var p pending
	const line = 64
	if got := unsafe.Sizeof(p); got%line != 0 {
		t.Errorf("unsafe.Sizeof(pending{}) = %d, want a multiple of %d", got, line)
	}
	for _, f := range []struct {
		name      string
		off, size uintptr
	}{
		{"ps", unsafe.Offsetof(p.ps), unsafe.Sizeof(p.ps)},
		{"label", unsafe.Offsetof(p.label), unsafe.Sizeof(p.label)},
		{"replica", unsafe.Offsetof(p.replica), unsafe.Sizeof(p.replica)},
		{"needLocal", unsafe.Offsetof(p.needLocal), unsafe.Sizeof(p.needLocal)},
		{"m.Partition", unsafe.Offsetof(p.m) + unsafe.Offsetof(p.m.Partition), unsafe.Sizeof(p.m.Partition)},
		{"m.Offset", unsafe.Offsetof(p.m) + unsafe.Offsetof(p.m.Offset), unsafe.Sizeof(p.m.Offset)},
		{"m.HighWaterMark", unsafe.Offsetof(p.m) + unsafe.Offsetof(p.m.HighWaterMark), unsafe.Sizeof(p.m.HighWaterMark)},
	} {
		if end := f.off + f.size; end > line {
			t.Errorf("pending.%s ends at byte %d, want within the first %d", f.name, end, line)
		}
	}
	for range 16 {
		pd := new(pending)
		pendingSink = pd
		if a := uintptr(unsafe.Pointer(pd)) % line; a != 0 {
			t.Fatalf("a new pending starts %d bytes into a cache line, want 0", a)
		}
	}
}

// pendingSink makes TestPendingLayout's items escape to the heap.
var pendingSink *pending

// TestStagePartReplaced: with alignment off (part's shortcut does not
// depend on the aligned flag), a partition whose state a checkpoint
// restore replaced is served the new state, not the one part returned
// last.
func TestStagePartReplaced(t *testing.T) {
	p := shippedPipeline(t, "part-replaced", WithWorkers(1), WithAlignIdleWait(-1))
	st := newStage(p, []*worker{newWorker(p, 0)})
	old := st.part(3)
	if st.part(3) != old {
		t.Fatal("part(3) changed between two calls")
	}
	restored := p.newPartState(3)
	st.setPart(3, restored)
	if got := st.part(3); got != restored {
		t.Fatalf("part(3) after the restore: the replaced state (%p), want the restored one (%p)", got, restored)
	}
}
