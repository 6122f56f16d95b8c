package stream

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
)

type nopSink struct{}

func (nopSink) Name() string                                       { return "nop" }
func (nopSink) WriteBatch(context.Context, []output.Message) error { return nil }
func (nopSink) Close() error                                       { return nil }

// TestSharedCheckpointRoundTrip: the shared checkpoint the member claiming
// partition 0 writes — the terminal state, each partition's shared trail
// (with offsets applied ahead) and kept columns, the labels' offsets —
// reads back whole into a fresh member, with many kept columns and a small
// terminal state (the column count's bound must not refuse it), and a
// truncated blob is refused.
func TestSharedCheckpointRoundTrip(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	member := func() (*Pipeline, *stage) {
		p, err := New([]string{"127.0.0.1:1"}, "g", "tx", ms, nopSink{}, WithLabelsTopic("labels"),
			WithCheckpoints(NewMemoryCheckpoints()), WithStateInterval(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		p.nParts = 2
		return p, newStage(p, []*worker{newWorker(p, 0)})
	}
	p, st := member()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	row := make([]float32, len(p.names))
	for part := range 2 {
		ps := p.newPartState(part)
		ps.shr, ps.shrKnown = newOffTrail(-1), true
		for off := int64(0); off < 3000; off++ {
			e := features.Event{TxID: fmt.Sprint("t-", part, "-", off), TS: t0.Add(time.Duration(off) * time.Minute),
				CardID: "c", TerminalID: fmt.Sprint("m-", off%3), Amount: float64(off)}
			late := false
			if off < 20 { // a small terminal state beside many kept columns
				late = p.shared.Apply(&e, row)
			}
			if off == 2998 { // 2999 applied before 2998: ahead
				continue
			}
			ps.shr.fetched(off, true)
			ps.cols.add(off, late, row, p.sharedCols)
		}
		st.parts[part] = ps
	}
	p.labelNext = map[int]int64{0: 17}
	p.labelAhead = map[int][]int64{0: {19, 23}} // labels applied ahead of 17 (out of event-time order)
	p.gen.Store(&genRef{claimed: []int{0}})
	blob, ok := p.encodeShared(st)
	if !ok {
		t.Fatal("no shared checkpoint from the member claiming partition 0")
	}

	q, qst := member()
	parts, labels, labelsAhead, err := q.decodeShared(qst, blob.blob)
	if err != nil {
		t.Fatal(err)
	}
	if labels[0] != 17 || len(labels) != 1 || !slices.Equal(labelsAhead[0], []int64{19, 23}) || len(labelsAhead) != 1 {
		t.Errorf("labels %v ahead %v, want partition 0 at 17 with 19 and 23 ahead", labels, labelsAhead)
	}
	// Without labels applied ahead it is written as version 1, which the
	// previous build reads (a rolling upgrade); with them, version 2.
	version := func(blob []byte) uint32 {
		raw, err := openCkpt(ckptFrameShared, blob)
		if err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(raw[len(sharedCkptMagic):])
	}
	if v := version(blob.blob); v != 2 {
		t.Errorf("with labels ahead: version %d, want 2", v)
	}
	p.labelAhead = nil
	blob1, ok := p.encodeShared(st)
	if !ok {
		t.Fatal("no shared checkpoint without labels ahead")
	}
	if v := version(blob1.blob); v != 1 {
		t.Errorf("without labels ahead: version %d, want 1", v)
	}
	if _, labels1, ahead1, err := q.decodeShared(qst, blob1.blob); err != nil || labels1[0] != 17 || len(ahead1) != 0 {
		t.Errorf("version 1: labels %v ahead %v err %v, want partition 0 at 17, none ahead", labels1, ahead1, err)
	}
	for part, want := range st.parts {
		got := parts[part]
		if got == nil || got.shr.applied != want.shr.applied || !slices.Equal(got.shr.ahead(), want.shr.ahead()) {
			t.Fatalf("partition %d: trail %+v, want %+v", part, got, want.shr)
		}
		if !slices.Equal(got.cols.offs, want.cols.offs) || !slices.Equal(got.cols.vals, want.cols.vals) || !slices.Equal(got.cols.late, want.cols.late) {
			t.Errorf("partition %d: kept columns differ", part)
		}
	}
	e := features.Event{TxID: "probe", TS: t0.Add(30 * time.Minute), CardID: "c", TerminalID: "m-1", Amount: 5}
	a, b := make([]float32, len(row)), make([]float32, len(row))
	p.shared.Peek(&e, a)
	q.shared.Peek(&e, b)
	if !slices.Equal(a, b) {
		t.Errorf("the restored terminal state scores a probe differently")
	}

	if _, _, _, err := q.decodeShared(qst, blob.blob[:len(blob.blob)/2]); err == nil {
		t.Error("a truncated shared checkpoint was accepted")
	}
}

// TestColLogSteadyAllocs: a partition applied and committed at a steady
// pace (add, then trim below the commit) reuses the log's slices: no
// allocation once they have grown, and what is kept is intact.
func TestColLogSteadyAllocs(t *testing.T) {
	cols := []int{0, 2}
	l := colLog{width: len(cols)}
	row := []float32{0, 0, 0}
	off := int64(0)
	cycle := func() {
		for range 100 {
			row[0], row[2] = float32(off), float32(-off)
			l.add(off, off%3 == 0, row, cols)
			off++
		}
		l.trim(off - 50) // the commit trails the applied offsets
	}
	for range 20 {
		cycle()
	}
	if !raceBuild {
		if n := testing.AllocsPerRun(50, cycle); n != 0 {
			t.Errorf("%v allocations per cycle of 100 events, want 0", n)
		}
	}
	if l.len() != 50 {
		t.Fatalf("%d kept, want 50", l.len())
	}
	for o := off - 50; o < off; o++ {
		late, ok := l.get(o, row, cols)
		if !ok || late != (o%3 == 0) || row[0] != float32(o) || row[2] != float32(-o) {
			t.Fatalf("offset %d: ok %v late %v row %v", o, ok, late, row)
		}
	}
	if _, ok := l.get(off-51, row, cols); ok {
		t.Fatal("an offset below the trim is still kept")
	}
}

// TestColLogSteadyBusy: a busy partition (more entries per interval than
// colLogShrinkMin) trimmed back to a few entries at every interval keeps
// its slices: no allocation per interval once they have grown (sized by
// what was left, they regrew from there every interval); a burst after it
// (commits stalled) gives its memory back at the next trim, down to what
// an interval needs, and what is kept is intact.
func TestColLogSteadyBusy(t *testing.T) {
	cols := []int{0, 1}
	l := colLog{width: len(cols)}
	row := []float32{0, 0}
	off := int64(0)
	fill := func(n int) {
		for range n {
			row[0], row[1] = float32(off), float32(-off)
			l.add(off, off%5 == 0, row, cols)
			off++
		}
	}
	const perInterval = 4 * colLogShrinkMin
	interval := func() {
		fill(perInterval)
		l.trim(off - 100) // the commit trails the applied offsets
	}
	for range 5 {
		interval()
	}
	if !raceBuild {
		if n := testing.AllocsPerRun(5, interval); n != 0 {
			t.Errorf("%v allocations per interval of %d events, want 0", n, perInterval)
		}
	}
	steady := cap(l.offs)
	fill(8 * perInterval) // a burst: no trim finds anything to drop
	l.trim(off - 100)
	if c := cap(l.offs); c > steady {
		t.Errorf("capacity %d after the burst's trim, want at most the steady %d", c, steady)
	}
	if l.len() != 100 {
		t.Fatalf("%d kept, want 100", l.len())
	}
	for o := off - 100; o < off; o++ {
		late, ok := l.get(o, row, cols)
		if !ok || late != (o%5 == 0) || row[0] != float32(o) || row[1] != float32(-o) {
			t.Fatalf("offset %d: ok %v late %v row %v", o, ok, late, row)
		}
	}
}

// TestColLogShrinks: after a burst (commits stalled), a trim that leaves a
// small part of a large log gives the memory back.
func TestColLogShrinks(t *testing.T) {
	cols := []int{0}
	l := colLog{width: 1}
	row := []float32{0}
	const burst = 1 << 16
	for off := range int64(burst) {
		row[0] = float32(off)
		l.add(off, false, row, cols)
	}
	l.trim(burst - 100)
	for off := int64(burst); off < burst+10; off++ {
		row[0] = float32(off)
		l.add(off, false, row, cols)
	}
	if c := cap(l.offs); c >= colLogShrinkMin {
		t.Errorf("capacity %d after trimming a burst of %d to 110 entries, want < %d", c, burst, colLogShrinkMin)
	}
	if l.len() != 110 {
		t.Fatalf("%d kept, want 110", l.len())
	}
	for off := int64(burst - 100); off < burst+10; off++ {
		if _, ok := l.get(off, row, cols); !ok || row[0] != float32(off) {
			t.Fatalf("offset %d: ok %v, value %v", off, ok, row[0])
		}
	}
}

// BenchmarkColLogBusy: the cost per event of keeping a busy partition's
// shared columns (add, with a trim to the commit every 16,384 events),
// the default features' 17 columns.
func BenchmarkColLogBusy(b *testing.B) {
	cols := make([]int, 17)
	for i := range cols {
		cols[i] = i
	}
	l := colLog{width: len(cols)}
	row := make([]float32, len(cols))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		l.add(off, false, row, cols)
		off++
		if off%(4*colLogShrinkMin) == 0 {
			l.trim(off - 100)
		}
	}
}
