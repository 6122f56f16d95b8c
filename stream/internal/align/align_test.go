package align

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// clock is a manual clock for the wait bounds.
type clock struct{ t time.Time }

func newClock() *clock                   { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

const (
	testIdle = 100 * time.Millisecond
	testLag  = time.Second
)

func newTest[T any](t testing.TB, c *clock, opts ...Option) *Aligner[T] {
	t.Helper()
	a, err := New[T](append([]Option{WithClock(c.now), WithIdleWait(testIdle), WithLagWait(testLag)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// item is a test item: what Push got, and its index in its partition.
type item struct {
	ts   int64
	key  string
	part int
	idx  int
}

// less is the documented release order.
func less(a, b item) int {
	if a.ts != b.ts {
		return cmpInt(a.ts, b.ts)
	}
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	if a.part != b.part {
		return cmpInt(int64(a.part), int64(b.part))
	}
	return a.idx - b.idx
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type popped struct {
	it  item
	why Reason
}

func drain(a *Aligner[item]) []popped {
	var out []popped
	for {
		v, why, ok := a.Pop()
		if !ok {
			return out
		}
		out = append(out, popped{v, why})
	}
}

func mustPush(t testing.TB, a *Aligner[item], it item, caughtUp bool) {
	t.Helper()
	if err := a.Push(it.part, it.ts, it.key, it, caughtUp); err != nil {
		t.Fatal(err)
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string // error substring; "" for success
	}{
		{"defaults", nil, ""},
		{"zero idle wait", []Option{WithIdleWait(0)}, ""},
		{"negative idle wait", []Option{WithIdleWait(-time.Second)}, "idle wait -1s is negative"},
		{"zero lag wait", []Option{WithLagWait(0)}, "lag wait 0s is not positive"},
		{"lag below idle", []Option{WithIdleWait(time.Second), WithLagWait(time.Millisecond)}, "lag wait 1ms is below idle wait 1s"},
		{"zero max", []Option{WithMaxPerPartition(0)}, "max per partition 0 is below 1"},
		{"nil clock", []Option{WithClock(nil)}, "nil clock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New[int](tc.opts...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPartitionErrors(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	if err := a.Add(0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"add twice", a.Add(0), ErrPartitionExists},
		{"add negative", a.Add(-1), ErrPartitionRange},
		{"add too large", a.Add(MaxPartition + 1), ErrPartitionRange},
		{"push unknown", a.Push(3, 1, "k", item{}, false), ErrUnknownPartition},
		{"push negative", a.Push(-2, 1, "k", item{}, false), ErrPartitionRange},
		{"mark unknown", a.MarkCaughtUp(7), ErrUnknownPartition},
		{"remove unknown", func() error { _, err := a.Remove(9, nil); return err }(), ErrUnknownPartition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("got %v, want %v", tc.err, tc.want)
			}
		})
	}
	if a.Full(5) || a.Full(-1) {
		t.Fatal("an unknown partition reported full")
	}
}

// genPartitions returns per-partition sequences in event-time order, with
// many equal event times (within and across partitions), tie keys not
// sorted within an equal event time, and duplicated (ts, key) pairs.
func genPartitions(r *rand.Rand, parts, maxLen int) [][]item {
	seqs := make([][]item, parts)
	for p := range seqs {
		n := r.IntN(maxLen + 1)
		ts := int64(r.IntN(5))
		for i := 0; i < n; i++ {
			ts += int64(r.IntN(3)) // 0: same event time as the previous item
			seqs[p] = append(seqs[p], item{ts: ts, key: fmt.Sprintf("k%d", r.IntN(4)), part: p, idx: i})
		}
	}
	return seqs
}

// TestRandomInterleavingSorted pushes random per-partition sequences in a
// random interleaving, every item but each partition's last one not caught
// up, pops after every push, and checks the output is exactly the global
// sort and that nothing that may go is held back.
func TestRandomInterleavingSorted(t *testing.T) {
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 7))
		parts := 1 + r.IntN(6)
		seqs := genPartitions(r, parts, 40)
		c := newClock()
		a := newTest[item](t, c)
		for p := range parts {
			if err := a.Add(p); err != nil {
				t.Fatal(err)
			}
			if len(seqs[p]) == 0 { // Kafka has nothing for it
				if err := a.MarkCaughtUp(p); err != nil {
					t.Fatal(err)
				}
			}
		}
		var want []item
		for _, s := range seqs {
			want = append(want, s...)
		}
		slices.SortFunc(want, less)

		pos := make([]int, parts)
		wm := make([]int64, parts)
		for p := range wm {
			wm[p] = -1 << 62
		}
		var got []popped
		buffered := map[item]bool{}
		for {
			var open []int
			for p := range parts {
				if pos[p] < len(seqs[p]) {
					open = append(open, p)
				}
			}
			if len(open) == 0 {
				break
			}
			p := open[r.IntN(len(open))]
			it := seqs[p][pos[p]]
			pos[p]++
			mustPush(t, a, it, pos[p] == len(seqs[p]))
			wm[p] = max(wm[p], it.ts)
			buffered[it] = true
			if r.IntN(4) == 0 {
				continue // let items pile up sometimes
			}
			for _, o := range drain(a) {
				got = append(got, o)
				delete(buffered, o.it)
			}
			// Liveness: what stays buffered is held back by a partition
			// whose watermark is not above the smallest buffered item.
			if len(buffered) > 0 {
				head := slices.MinFunc(mapsKeys(buffered), less)
				held := false
				for q := range parts {
					held = held || wm[q] <= head.ts
				}
				if !held {
					t.Fatalf("seed %d: %v buffered though every partition is past it (wm %v)", seed, head, wm)
				}
			}
		}
		got = append(got, drain(a)...)
		for _, o := range got {
			if o.why != Ordered {
				t.Fatalf("seed %d: %v released as %v before the clock moved", seed, o.it, o.why)
			}
		}
		// Every partition is caught up at its end: after IdleWait the rest
		// goes. The owner calls Deadline before it waits.
		if _, ok := a.Deadline(); ok != (a.Len() > 0) {
			t.Fatalf("seed %d: deadline ok %v with %d buffered", seed, ok, a.Len())
		}
		c.advance(testIdle - 1)
		if v, _, ok := a.Pop(); ok {
			t.Fatalf("seed %d: %v released before the idle wait", seed, v)
		}
		c.advance(1)
		for _, o := range drain(a) {
			if o.why == OutOfOrder || o.why == LagBound {
				t.Fatalf("seed %d: drained %v as %v", seed, o.it, o.why)
			}
			got = append(got, o)
		}
		if a.Len() != 0 {
			t.Fatalf("seed %d: %d items left after the idle wait", seed, a.Len())
		}
		gotItems := make([]item, len(got))
		for i, o := range got {
			gotItems[i] = o.it
		}
		if !slices.Equal(gotItems, want) {
			t.Fatalf("seed %d: order differs\n got %v\nwant %v", seed, gotItems, want)
		}
		st := a.Stats()
		if n := st.Ordered + st.IdleBound + st.LagBound + st.OutOfOrder; n != uint64(len(want)) {
			t.Fatalf("seed %d: stats count %d releases, want %d", seed, n, len(want))
		}
	}
}

func mapsKeys(m map[item]bool) []item {
	out := make([]item, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestOwnPartitionTie: an item is not released while its own partition may
// still deliver the same event time with a smaller tie key.
func TestOwnPartitionTie(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, a, item{ts: 50, key: "z", part: 1}, false)
	mustPush(t, a, item{ts: 10, key: "m", part: 0}, false)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("got %v released while partition 0 may still deliver ts 10 with a smaller key", out)
	}
	mustPush(t, a, item{ts: 10, key: "a", part: 0, idx: 1}, false)
	mustPush(t, a, item{ts: 11, key: "b", part: 0, idx: 2}, false)
	out := drain(a)
	if len(out) != 2 || out[0].it.key != "a" || out[1].it.key != "m" {
		t.Fatalf("got %v, want ts 10 keys a then m", out)
	}
}

// TestIdleWait: a caught-up silent partition holds the others back for
// exactly IdleWait, then not at all until it delivers again; waking up
// with an older event gives an out-of-order release.
func TestIdleWait(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	p0At := c.t
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, false)
	mustPush(t, a, item{ts: 11, key: "b", part: 0, idx: 1}, true)
	a.Deadline() // the owner's loop, before it waits
	c.advance(time.Millisecond)
	pushAt := c.t
	mustPush(t, a, item{ts: 20, key: "c", part: 1}, true)

	if out := drain(a); len(out) != 1 || out[0].it.ts != 10 || out[0].why != Ordered {
		t.Fatalf("got %v, want ts 10 ordered", out)
	}
	// Head 11 is held by partition 0 (watermark 11) until it is idle.
	if d, ok := a.Deadline(); !ok || !d.Equal(p0At.Add(testIdle)) {
		t.Fatalf("deadline %v %v, want %v", d, ok, p0At.Add(testIdle))
	}
	c.t = p0At.Add(testIdle - 1)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v before the idle wait", out)
	}
	c.advance(1)
	out := drain(a)
	if len(out) != 1 || out[0].it.ts != 11 || out[0].why != IdleBound {
		t.Fatalf("got %v, want ts 11 by the idle bound", out)
	}
	// Head 20 is held by its own partition 1 (caught up at 20) until it too
	// is idle; the exact deadline is partition 1's push + IdleWait.
	if d, ok := a.Deadline(); !ok || !d.Equal(pushAt.Add(testIdle)) {
		t.Fatalf("deadline %v %v, want %v", d, ok, pushAt.Add(testIdle))
	}
	c.t = pushAt.Add(testIdle)
	out = drain(a)
	if len(out) != 1 || out[0].it.ts != 20 || out[0].why != IdleBound {
		t.Fatalf("got %v, want ts 20 by the idle bound", out)
	}
	st := a.Stats()
	if st.IdlePartitions != 2 || st.HasWatermark {
		t.Fatalf("stats %+v, want 2 idle partitions and no watermark", st)
	}
	// Partition 0 wakes up with an event older than what was released.
	mustPush(t, a, item{ts: 15, key: "d", part: 0, idx: 2}, true)
	out = drain(a)
	if len(out) != 1 || out[0].it.ts != 15 || out[0].why != OutOfOrder {
		t.Fatalf("got %v, want ts 15 out of order", out)
	}
	// ... and is active again: it holds back a later item of partition 1.
	mustPush(t, a, item{ts: 30, key: "e", part: 1, idx: 1}, true)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v while partition 0 (awake, watermark 15) holds it", out)
	}
	st = a.Stats()
	if st.Ordered != 1 || st.IdleBound != 2 || st.OutOfOrder != 1 || st.LagBound != 0 || st.Buffered != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !st.HasWatermark || st.Watermark != 15 {
		t.Fatalf("watermark %d %v, want 15", st.Watermark, st.HasWatermark)
	}
}

// TestLagWait: a partition Kafka has more for holds the others back for
// LagWait; MarkCaughtUp turns an empty partition into an idle one.
func TestLagWait(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 3 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	start := c.t
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, false)
	c.advance(10 * time.Millisecond)
	mustPush(t, a, item{ts: 99, key: "b", part: 0, idx: 1}, false)
	if err := a.MarkCaughtUp(2); err != nil { // empty partition: nothing in Kafka
		t.Fatal(err)
	}
	if err := a.MarkCaughtUp(2); err != nil { // again: the idle clock does not restart
		t.Fatal(err)
	}
	// Partition 1 never delivers: it holds ts 10 back for LagWait from Add.
	if d, ok := a.Deadline(); !ok || !d.Equal(start.Add(testLag)) {
		t.Fatalf("deadline %v %v, want %v", d, ok, start.Add(testLag))
	}
	c.t = start.Add(testLag - 1)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v before the lag wait", out)
	}
	c.t = start.Add(testLag)
	out := drain(a)
	if len(out) != 1 || out[0].it.ts != 10 || out[0].why != LagBound {
		t.Fatalf("got %v, want ts 10 by the lag bound", out)
	}
	if st := a.Stats(); st.LaggingPartitions != 1 || st.IdlePartitions != 1 {
		t.Fatalf("stats %+v, want one lagging and one idle partition", st)
	}
	// Partition 1 delivers: active again, it holds 99 until past it.
	mustPush(t, a, item{ts: 50, key: "c", part: 1}, false)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v", out)
	}
	mustPush(t, a, item{ts: 120, key: "d", part: 1, idx: 1}, false)
	out = drain(a)
	// 50 goes in order (idle partition 2 has no watermark: idle bound);
	// 99 is then held by its own partition 0.
	if len(out) != 1 || out[0].it.ts != 50 || out[0].why != IdleBound {
		t.Fatalf("got %v, want ts 50 by the idle bound", out)
	}
}

// TestMarkCaughtUpLagging: a lagging partition past its bound, then marked
// caught up, stays ignored (as idle) and does not stall the others again.
func TestMarkCaughtUpLagging(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, a, item{ts: 1, key: "a", part: 0}, false)
	mustPush(t, a, item{ts: 2, key: "a", part: 0, idx: 1}, false)
	c.advance(testLag)
	mustPush(t, a, item{ts: 3, key: "a", part: 0, idx: 2}, false)
	if out := drain(a); len(out) != 2 || out[0].why != LagBound {
		t.Fatalf("got %v, want ts 1 and 2 by the lag bound", out)
	}
	if err := a.MarkCaughtUp(1); err != nil {
		t.Fatal(err)
	}
	mustPush(t, a, item{ts: 4, key: "a", part: 0, idx: 3}, false)
	out := drain(a)
	if len(out) != 1 || out[0].it.ts != 3 || out[0].why != IdleBound {
		t.Fatalf("got %v, want ts 3 by the idle bound", out)
	}
	if st := a.Stats(); st.IdlePartitions != 1 || st.LaggingPartitions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPartitionOutOfOrder: a partition whose event times go backwards
// gets its late items released at once and flagged.
func TestPartitionOutOfOrder(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, false)
	mustPush(t, a, item{ts: 30, key: "a", part: 0, idx: 1}, false)
	mustPush(t, a, item{ts: 20, key: "a", part: 1}, false)
	mustPush(t, a, item{ts: 40, key: "a", part: 1, idx: 1}, false)
	out := drain(a)
	if len(out) != 2 || out[1].it.ts != 20 {
		t.Fatalf("got %v, want 10 and 20", out)
	}
	mustPush(t, a, item{ts: 15, key: "a", part: 0, idx: 2}, false) // below 20: late
	mustPush(t, a, item{ts: 20, key: "a", part: 0, idx: 3}, false) // (20,a,0) < (20,a,1): late
	mustPush(t, a, item{ts: 25, key: "a", part: 0, idx: 4}, false) // above 20: in order
	out = drain(a)
	want := []popped{
		{item{ts: 15, key: "a", part: 0, idx: 2}, OutOfOrder},
		{item{ts: 20, key: "a", part: 0, idx: 3}, OutOfOrder},
		{item{ts: 25, key: "a", part: 0, idx: 4}, Ordered},
	}
	if !slices.Equal(out, want) {
		t.Fatalf("got %v, want %v", out, want)
	}
	if st := a.Stats(); st.OutOfOrder != 2 || st.Buffered != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRemove: a removed partition's items are dropped, never released,
// and it no longer holds the others back.
func TestRemove(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 3 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		mustPush(t, a, item{ts: int64(10 * i), key: "a", part: 0, idx: i}, false)
		mustPush(t, a, item{ts: int64(10*i + 5), key: "b", part: 1, idx: i}, false)
	}
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v while partition 2 never delivered", out)
	}
	if n, err := a.Remove(2, nil); err != nil || n != 0 {
		t.Fatalf("remove empty partition: %d %v", n, err)
	}
	out := drain(a)
	if len(out) != 8 { // all but the last of each partition (own-partition hold)
		t.Fatalf("released %d items after removing the empty partition, want 8: %v", len(out), out)
	}
	mustPush(t, a, item{ts: 1, key: "z", part: 1, idx: 5}, false) // late, queued
	var dropped []item
	n, err := a.Remove(1, func(v item) { dropped = append(dropped, v) })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || len(dropped) != 2 {
		t.Fatalf("dropped %d %v, want partition 1's buffered 45 and its late 1", n, dropped)
	}
	for _, d := range dropped {
		if d.part != 1 {
			t.Fatalf("dropped %v of another partition", d)
		}
	}
	if err := a.Push(1, 100, "x", item{}, false); !errors.Is(err, ErrUnknownPartition) {
		t.Fatalf("push to a removed partition: %v", err)
	}
	c.advance(testLag)
	out = drain(a)
	if len(out) != 1 || out[0].it.part != 0 || out[0].it.ts != 40 {
		t.Fatalf("got %v, want only partition 0's ts 40", out)
	}
	st := a.Stats()
	if st.Dropped != 2 || st.Buffered != 0 || st.Partitions != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Re-adding starts the partition afresh.
	if err := a.Add(1); err != nil {
		t.Fatal(err)
	}
}

// TestBackpressureNoDeadlock simulates a driver that reads only partitions
// that are not Full, some with runs of equal event times longer than
// MaxPerPartition, and advances the clock only when it cannot read
// anything: it must always make progress, never need the lag bound, and
// produce the global sort.
func TestBackpressureNoDeadlock(t *testing.T) {
	const maxPer = 4
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 11))
		parts := 1 + r.IntN(5)
		seqs := make([][]item, parts)
		for p := range seqs {
			ts := int64(r.IntN(3))
			for i := range r.IntN(60) {
				if r.IntN(8) != 0 { // runs of equal ts, up to ~3*maxPer long
					ts += int64(r.IntN(2))
				}
				seqs[p] = append(seqs[p], item{ts: ts, key: fmt.Sprintf("k%d", r.IntN(3)), part: p, idx: i})
			}
		}
		var want []item
		for _, s := range seqs {
			want = append(want, s...)
		}
		slices.SortFunc(want, less)

		c := newClock()
		a := newTest[item](t, c, WithMaxPerPartition(maxPer))
		for p := range parts {
			if err := a.Add(p); err != nil {
				t.Fatal(err)
			}
		}
		pos := make([]int, parts)
		for p := range parts {
			if len(seqs[p]) == 0 {
				if err := a.MarkCaughtUp(p); err != nil {
					t.Fatal(err)
				}
			}
		}
		var got []item
		for steps := 0; ; steps++ {
			if steps > 100000 {
				t.Fatalf("seed %d: no end after %d steps", seed, steps)
			}
			for _, o := range drain(a) {
				if o.why == LagBound || o.why == OutOfOrder {
					t.Fatalf("seed %d: %v released as %v", seed, o.it, o.why)
				}
				got = append(got, o.it)
			}
			var readable []int
			for p := range parts {
				if pos[p] < len(seqs[p]) && !a.Full(p) {
					readable = append(readable, p)
				}
			}
			if len(readable) > 0 {
				p := readable[r.IntN(len(readable))]
				pos[p]++
				mustPush(t, a, seqs[p][pos[p]-1], pos[p] == len(seqs[p]))
				c.advance(time.Duration(r.IntN(3)) * time.Millisecond)
				continue
			}
			if a.Len() == 0 {
				break
			}
			// Nothing readable and items held: the holders are finished
			// partitions, released when the deadline passes.
			d, ok := a.Deadline()
			if !ok {
				t.Fatalf("seed %d: %d buffered and no deadline", seed, a.Len())
			}
			if d.After(c.t) {
				c.t = d
			}
			v, why, ok := a.Pop()
			if !ok {
				t.Fatalf("seed %d: no progress at the deadline with %d buffered (deadlock)", seed, a.Len())
			}
			if why != IdleBound {
				t.Fatalf("seed %d: %v released at the deadline as %v, want idle bound", seed, v, why)
			}
			got = append(got, v)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: order differs\n got %v\nwant %v", seed, got, want)
		}
	}
}

// TestQuietFromFirstRead: Push does not read the clock; a partition's wait
// bound counts from the first clock read after its push. An owner that
// never calls Deadline (a ticker) still gets every item out, at most one
// loop iteration later than one that does.
func TestQuietFromFirstRead(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	if err := a.Add(0); err != nil {
		t.Fatal(err)
	}
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, true)
	if out := drain(a); len(out) != 0 { // held by partition 0 itself
		t.Fatalf("released %v", out)
	}
	c.advance(testIdle)
	if out := drain(a); len(out) != 0 { // first read: partition 0's quiet starts now
		t.Fatalf("released %v at the first clock read after the push", out)
	}
	c.advance(testIdle - 1)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v before the idle wait from the first read", out)
	}
	c.advance(1)
	if out := drain(a); len(out) != 1 || out[0].why != IdleBound {
		t.Fatalf("got %v, want ts 10 by the idle bound", out)
	}

	// A silent holder does not stall a busy partition for ever when the
	// owner pops after every push and never calls Deadline.
	if err := a.Add(1); err != nil {
		t.Fatal(err)
	}
	mustPush(t, a, item{ts: 20, key: "a", part: 0, idx: 1}, true) // then silent
	for i := range 50 {
		c.advance(10 * time.Millisecond)
		mustPush(t, a, item{ts: int64(30 + i), key: "b", part: 1, idx: i}, false)
		drain(a)
	}
	if a.Len() > 2 {
		t.Fatalf("%d items held after 500ms behind a partition silent since its push", a.Len())
	}
}

// TestHugeLagWait: a lag wait near the largest Duration means "wait for
// ever": the deadline is far in the future, not overflowed into the past.
func TestHugeLagWait(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c, WithLagWait(time.Duration(1<<63-1)))
	if err := a.Add(0); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Hour)
	mustPush(t, a, item{ts: 1, key: "a", part: 0}, false)
	d, ok := a.Deadline()
	if !ok || !d.After(c.t.Add(100*365*24*time.Hour)) {
		t.Fatalf("deadline %v %v, want centuries ahead of %v", d, ok, c.t)
	}
	c.advance(1000 * time.Hour)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v", out)
	}
}

// TestFull: a partition is full at MaxPerPartition buffered items, except
// while it holds the head back (then reading it is the way forward).
func TestFull(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c, WithMaxPerPartition(2))
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, false)
	mustPush(t, a, item{ts: 20, key: "a", part: 0, idx: 1}, false)
	mustPush(t, a, item{ts: 5, key: "a", part: 1}, false)
	mustPush(t, a, item{ts: 5, key: "b", part: 1, idx: 1}, false)
	tests := []struct {
		name string
		p    int
		want bool
	}{
		{"ahead of the head, at the bound", 0, true},
		{"holds the head (watermark 5 = head ts), at the bound", 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Full(tc.p); got != tc.want {
				t.Fatalf("Full(%d) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
	mustPush(t, a, item{ts: 5, key: "c", part: 1, idx: 2}, false) // beyond the bound: allowed
	mustPush(t, a, item{ts: 6, key: "a", part: 1, idx: 3}, false)
	if out := drain(a); len(out) != 3 {
		t.Fatalf("got %v, want the three items at ts 5", out)
	}
	if !a.Full(0) || a.Full(1) { // 0 still has its two, 1 has one left
		t.Fatalf("full after the release: %v %v, want true false", a.Full(0), a.Full(1))
	}
}

// TestRealClock: with the default monotonic clock, an idle partition
// holds the head for IdleWait, and Deadline says when it stops.
func TestRealClock(t *testing.T) {
	const idle = 20 * time.Millisecond
	a, err := New[item](WithIdleWait(idle))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Add(0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustPush(t, a, item{ts: 1, key: "a", part: 0}, true)
	for {
		if v, why, ok := a.Pop(); ok {
			if el := time.Since(start); el < idle || why != IdleBound {
				t.Fatalf("%v released as %v after %v, want the idle bound after %v", v, why, el, idle)
			}
			return
		}
		d, ok := a.Deadline()
		if !ok {
			t.Fatal("no deadline with an item buffered")
		}
		if time.Until(d) > idle {
			t.Fatalf("deadline %v ahead, beyond the idle wait %v", time.Until(d), idle)
		}
		time.Sleep(time.Until(d))
		if time.Since(start) > 5*time.Second {
			t.Fatal("not released after 5s")
		}
	}
}

// TestDrain: Drain releases everything buffered in (ts, key) order, the
// out-of-order items first, without waiting for a silent partition.
func TestDrain(t *testing.T) {
	a, err := New[int]()
	if err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	for i, ts := range []int64{5, 3, 9} {
		if err := a.Push(0, ts, "k", i, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, ok := a.Pop(); ok {
		t.Fatal("Pop released an item while partition 1 is silent and behind")
	}
	var got []int
	for {
		v, ok := a.Drain()
		if !ok {
			break
		}
		got = append(got, v)
	}
	if want := []int{1, 0, 2}; !slices.Equal(got, want) {
		t.Fatalf("Drain released %v, want %v", got, want)
	}
	if st := a.Stats(); st.Drained != 3 || st.Buffered != 0 {
		t.Fatalf("stats %+v, want 3 drained, none buffered", st)
	}
}

// TestPopExactAndResume: PopExact never releases on a wait bound; Resume
// gives the active partitions a fresh wait after the owner stopped reading.
func TestPopExactAndResume(t *testing.T) {
	now := time.Unix(0, 0)
	a, err := New[int](WithIdleWait(100*time.Millisecond), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	a.Push(0, 10, "a", 1, true)
	a.Push(1, 5, "b", 2, false)
	a.Push(1, 7, "c", 3, true)
	if v, _, ok := a.PopExact(); !ok || v != 2 {
		t.Fatalf("PopExact = %v, %v; want 2 (both partitions are past 5)", v, ok)
	}
	if _, _, ok := a.PopExact(); ok {
		t.Fatal("PopExact released 7 while partition 1 may still deliver 7")
	}
	a.Deadline() // the quiet times start
	now = now.Add(time.Second)
	if _, _, ok := a.PopExact(); ok {
		t.Fatal("PopExact released on the idle bound")
	}
	a.Resume(time.Second) // blocked for the whole second
	if _, _, ok := a.Pop(); ok {
		t.Fatal("Pop released right after Resume: the silence did not restart")
	}
	now = now.Add(200 * time.Millisecond)
	if v, _, ok := a.Pop(); !ok || v != 3 {
		t.Fatalf("Pop = %v, %v after the idle wait; want 3", v, ok)
	}
}

// TestResumeTakesOutOnlyTheBlockedTime: short, frequent blocks (a state
// snapshot every second) do not keep a quiet partition's wait bound from
// expiring.
func TestResumeTakesOutOnlyTheBlockedTime(t *testing.T) {
	now := time.Unix(0, 0)
	a, err := New[int](WithIdleWait(2*time.Second), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	a.Push(0, 10, "a", 1, true)
	a.Push(1, 5, "b", 2, false)
	a.Push(1, 6, "c", 3, true)
	if v, _, ok := a.Pop(); !ok || v != 2 {
		t.Fatalf("Pop = %v, %v; want 2", v, ok)
	}
	a.Deadline() // partition 1's silence starts
	now = now.Add(time.Second)
	a.Resume(time.Second) // blocked all along: not silent yet
	if _, _, ok := a.Pop(); ok {
		t.Fatal("Pop released after a second in which the owner was blocked throughout")
	}
	for range 4 {
		now = now.Add(time.Second)
		a.Resume(50 * time.Millisecond) // a 50 ms pause every second
	}
	if v, _, ok := a.Pop(); !ok || v != 3 {
		t.Fatalf("Pop = %v, %v after 4 s with 200 ms blocked; want 3 (partition 1 quiet for 3.8 s > 2 s)", v, ok)
	}
}

// TestBurstAfterIdleWakesQuietPartitions: a partition that wakes from idle
// with a backlog — an item that is not the last Kafka has, or one older
// than the clock by more than backlogAge — makes the other quiet, caught-up
// partitions hold the others back again for another IdleWait, or until
// they deliver: a backlog written to every partition at once is merged in
// order although the partitions were idle. A fresh item alone (live
// traffic) wakes no one.
func TestBurstAfterIdleWakesQuietPartitions(t *testing.T) {
	c := newClock()
	a := newTest[string](t, c)
	for p := range 3 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	// Event times on the clock's scale: fresh ones are the clock's now.
	fresh := func() int64 { return c.now().UnixNano() }
	pop := func() (string, Reason, bool) {
		a.Deadline() // the owner's clock read before each wait
		return a.Pop()
	}
	must := func(want string, why Reason) {
		t.Helper()
		v, r, ok := pop()
		if !ok || v != want || r != why {
			t.Fatalf("Pop = %q %v %v, want %q %v", v, r, ok, want, why)
		}
	}
	none := func() {
		t.Helper()
		if v, r, ok := pop(); ok {
			t.Fatalf("Pop = %q %v, want nothing released", v, r)
		}
	}
	push := func(p int, ts int64, v string, caughtUp bool) {
		t.Helper()
		if err := a.Push(p, ts, v, v, caughtUp); err != nil {
			t.Fatal(err)
		}
	}
	for p := range 3 {
		push(p, fresh()+int64(p), fmt.Sprint("first", p), true)
	}
	a.Deadline()
	c.advance(testIdle)
	must("first0", IdleBound)
	must("first1", IdleBound)
	must("first2", IdleBound)
	c.advance(10 * testIdle) // every partition silent, caught up

	// A fresh item alone wakes no one: it goes at once past the idle others.
	push(0, fresh(), "single", true)
	a.Deadline()
	c.advance(testIdle)
	must("single", IdleBound)
	c.advance(10 * testIdle)
	if w := a.Stats().Woken; w != 0 {
		t.Fatalf("Woken = %d after a fresh single item, want 0", w)
	}

	// A burst on partition 0: partitions 1 and 2 hold it back again.
	base := fresh()
	for i := range 3 {
		push(0, base+int64(i+1)*100, fmt.Sprint("burst0-", i), i == 2)
	}
	if w := a.Stats().Woken; w != 2 {
		t.Errorf("Woken = %d after a burst, want 2", w)
	}
	none()
	c.advance(testIdle / 2)
	none()
	// Partition 1 delivers its burst: its older item goes first, in order.
	push(1, base+150, "burst1", true)
	none() // partition 2 still holds everything back
	c.advance(testIdle/2 - time.Millisecond)
	none() // its new wait started at the wake-up, not at its last item
	c.advance(time.Millisecond)
	must("burst0-0", IdleBound) // partition 2 silent for another IdleWait: passed
	c.advance(testIdle)
	must("burst1", IdleBound)
	must("burst0-1", IdleBound)
	must("burst0-2", IdleBound)
}

// TestGradualBacklogWakesQuietPartitions: a backlog written gradually (the
// waking partition's fetch finds only its first item, caught up) is
// recognised by its event time, more than backlogAge behind the clock.
func TestGradualBacklogWakesQuietPartitions(t *testing.T) {
	c := newClock()
	a := newTest[string](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	old := c.now().Add(-time.Hour).UnixNano() // a backlog an hour old
	push := func(p int, ts int64, v string) {
		t.Helper()
		if err := a.Push(p, ts, v, v, true); err != nil {
			t.Fatal(err)
		}
	}
	pop := func() (string, Reason, bool) {
		a.Deadline()
		return a.Pop()
	}
	push(0, old, "a0")
	push(1, old+1, "b0")
	a.Deadline()
	c.advance(testIdle)
	for _, want := range []string{"a0", "b0"} {
		if v, _, ok := pop(); !ok || v != want {
			t.Fatalf("Pop = %q %v, want %q", v, ok, want)
		}
	}
	c.advance(10 * testIdle) // both idle
	push(1, old+100, "b1")   // caught up, but an hour old: a backlog
	if w := a.Stats().Woken; w != 1 {
		t.Errorf("Woken = %d, want 1", w)
	}
	if v, r, ok := pop(); ok {
		t.Fatalf("Pop = %q %v, want partition 0 to hold it back", v, r)
	}
	push(0, old+50, "a1") // partition 0's part of the backlog: older, first
	a.Deadline()
	c.advance(testIdle)
	for _, want := range []string{"a1", "b1"} {
		if v, r, ok := pop(); !ok || v != want {
			t.Fatalf("Pop = %q %v %v, want %q", v, r, ok, want)
		}
	}
}

// TestWakeIdleSparseIDs: the wake-up walks the partitions added, not the
// id space: with a labels-style id near MaxPartition/2 it wakes exactly the
// idle ones, and the sleeper with the highest id too.
func TestWakeIdleSparseIDs(t *testing.T) {
	c := newClock()
	a := newTest[string](t, c)
	high := MaxPartition/2 + 1
	for _, p := range []int{0, 1, high} {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	old := c.now().Add(-time.Hour).UnixNano()
	for i, p := range []int{0, 1, high} {
		if err := a.Push(p, old+int64(i), fmt.Sprint(i), "first", true); err != nil {
			t.Fatal(err)
		}
	}
	a.Deadline()
	c.advance(testIdle)
	for range 3 {
		a.Deadline()
		if _, _, ok := a.Pop(); !ok {
			t.Fatal("the first items were not released past the idle bound")
		}
	}
	c.advance(10 * testIdle)
	if err := a.Push(0, old+10, "a", "burst", false); err != nil {
		t.Fatal(err)
	}
	if w := a.Stats().Woken; w != 2 {
		t.Fatalf("Woken = %d, want 2 (partition 1 and the high id)", w)
	}
	a.Deadline()
	if v, r, ok := a.Pop(); ok {
		t.Fatalf("Pop = %q %v: the woken partitions did not hold it back", v, r)
	}
}

// TestAdvance: a watermark report without an item releases what the
// source's watermark held back, counts as a delivery (an idle source is
// active again and holds later items), and an unknown partition is an
// error.
func TestAdvance(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	for p := range 2 {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, a, item{ts: 10, key: "a", part: 0}, false)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v while partition 1 has no watermark", out)
	}
	// Source 1's items went elsewhere; it reports it is past ts 12.
	if err := a.Advance(1, 12, false); err != nil {
		t.Fatal(err)
	}
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v while partition 0's own watermark (10) holds its head", out)
	}
	mustPush(t, a, item{ts: 11, key: "b", part: 0, idx: 1}, false)
	out := drain(a)
	if len(out) != 1 || out[0].it.ts != 10 || out[0].why != Ordered {
		t.Fatalf("got %v, want ts 10 ordered", out)
	}
	// Partition 1 turns idle: caught up and silent past the idle wait.
	if err := a.Advance(1, 12, true); err != nil {
		t.Fatal(err)
	}
	a.Deadline()
	c.advance(testIdle)
	mustPush(t, a, item{ts: 20, key: "c", part: 0, idx: 2}, false)
	mustPush(t, a, item{ts: 21, key: "c", part: 0, idx: 3}, false)
	out = drain(a)
	if len(out) != 2 || out[0].it.ts != 11 || out[0].why != Ordered || out[1].it.ts != 20 || out[1].why != IdleBound {
		t.Fatalf("got %v, want 11 ordered and 20 by the idle bound", out)
	}
	if st := a.Stats(); st.IdlePartitions != 1 {
		t.Fatalf("stats %+v, want partition 1 idle", st)
	}
	// An advance makes it active: it holds back partition 0's next item
	// until its watermark passes it.
	if err := a.Advance(1, 25, false); err != nil {
		t.Fatal(err)
	}
	mustPush(t, a, item{ts: 30, key: "d", part: 0, idx: 4}, false)
	if out := drain(a); len(out) != 1 || out[0].it.ts != 21 || out[0].why != Ordered {
		t.Fatalf("got %v, want ts 21 ordered (partition 1 active at 25)", out)
	}
	mustPush(t, a, item{ts: 32, key: "e", part: 0, idx: 5}, false)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v past partition 1's watermark 25", out)
	}
	if err := a.Advance(1, 31, false); err != nil {
		t.Fatal(err)
	}
	if out := drain(a); len(out) != 1 || out[0].it.ts != 30 || out[0].why != Ordered {
		t.Fatalf("got %v, want ts 30 ordered", out)
	}
	if err := a.Advance(7, 1, false); err == nil {
		t.Fatal("advance of a partition never added: no error")
	}
}

// addParts adds partitions ps to a.
func addParts(t *testing.T, a *Aligner[item], ps ...int) {
	t.Helper()
	for _, p := range ps {
		if err := a.Add(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSetIdleWait: a partition with an idle wait of its own (a sparse
// source: labels) holds the others back, once caught up and silent, for
// its own wait, not the Aligner's: 0 releases the others' later items at
// once, and its next item, older than what was released, comes out of
// order; a lagging partition (a backlog) still holds them for the lag
// wait. Out of range values are refused.
func TestSetIdleWait(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	const events, labels = 0, 1
	addParts(t, a, events, labels)
	if err := a.SetIdleWait(labels, 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{-1, testLag + 1} {
		if err := a.SetIdleWait(labels, d); err == nil {
			t.Errorf("SetIdleWait(%v) accepted with a lag wait of %v", d, testLag)
		}
	}
	if err := a.SetIdleWait(7, 0); !errors.Is(err, ErrUnknownPartition) {
		t.Errorf("SetIdleWait of an unknown partition: %v", err)
	}
	mustPush(t, a, item{ts: 10, key: "l", part: labels}, true)
	mustPush(t, a, item{ts: 20, key: "a", part: events}, false)
	mustPush(t, a, item{ts: 30, key: "b", part: events, idx: 1}, true)
	a.Deadline()
	// The label (10) and the event at 20 go without any wait: the labels
	// partition, caught up at 10, holds nothing back; 30 is the events
	// partition's own last (held by its own idle wait, 100 ms).
	out := drain(a)
	if len(out) != 2 || out[0].it.ts != 10 || out[1].it.ts != 20 {
		t.Fatalf("got %v, want ts 10 and 20 at once", out)
	}
	// A label older than what was released: out of order, at once.
	mustPush(t, a, item{ts: 15, key: "l2", part: labels, idx: 1}, true)
	out = drain(a)
	if len(out) != 1 || out[0].it.ts != 15 || out[0].why != OutOfOrder {
		t.Fatalf("got %v, want the label at 15 out of order", out)
	}
	// A labels backlog (not caught up) holds the events back: ordered.
	mustPush(t, a, item{ts: 25, key: "l3", part: labels, idx: 2}, false)
	mustPush(t, a, item{ts: 40, key: "c", part: events, idx: 2}, true)
	a.Deadline()
	c.advance(testIdle) // past any idle wait, short of the lag wait
	if out := drain(a); len(out) != 0 {
		t.Fatalf("got %v, want nothing: the labels partition, lagging at 25, holds everything from 25 on", out)
	}
	mustPush(t, a, item{ts: 50, key: "l4", part: labels, idx: 3}, true)
	out = drain(a)
	// (40 is its own partition's last: released past that partition's
	// idle wait, which has passed.)
	if len(out) < 3 || out[0].it.ts != 25 || out[1].it.ts != 30 || out[2].it.ts != 40 ||
		out[0].why != Ordered || out[1].why != Ordered {
		t.Fatalf("got %v, want 25 and 30 in order, then 40, once the labels partition passed them", out)
	}
	// Without SetIdleWait the same label holds the events for the
	// Aligner's idle wait.
	b := newTest[item](t, c)
	addParts(t, b, events, labels)
	mustPush(t, b, item{ts: 10, key: "l", part: labels}, true)
	mustPush(t, b, item{ts: 20, key: "a", part: events}, false)
	mustPush(t, b, item{ts: 30, key: "b", part: events, idx: 1}, true)
	b.Deadline()
	if out := drain(b); len(out) != 0 {
		t.Fatalf("aligner's idle wait: got %v before the labels partition's wait, want nothing", out)
	}
	c.advance(testIdle)
	// (Both partitions are past it: 30 goes too.)
	if out := drain(b); len(out) != 3 || out[0].it.ts != 10 || out[1].it.ts != 20 {
		t.Fatalf("aligner's idle wait: got %v after it, want ts 10, 20 and 30", out)
	}
}

// TestSetIdleWaitWoken: a partition with an own idle wait of 0 (labels)
// woken by another partition's backlog holds the others back for the
// Aligner's idle wait, as any woken partition does: after an outage the
// events' backlog, fetched first, does not run past the labels written in
// the same outage; once it delivers, its own wait applies again. And its
// own items, each the last its partition has, do not wake the others.
func TestSetIdleWaitWoken(t *testing.T) {
	c := newClock()
	a := newTest[item](t, c)
	const events, labels = 0, 1
	addParts(t, a, events, labels)
	for _, p := range []int{events, labels} {
		if err := a.MarkCaughtUp(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetIdleWait(labels, 0); err != nil {
		t.Fatal(err)
	}
	a.Deadline()
	c.advance(10 * time.Second) // both quiet: an outage
	a.Deadline()                // the owner's loop reads the clock
	// The events' backlog comes first.
	for i, ts := range []int64{1000, 2000, 3000, 4000} {
		mustPush(t, a, item{ts: ts, key: "e", part: events, idx: i}, i == 3)
	}
	a.Deadline()
	c.advance(10 * time.Millisecond)
	if out := drain(a); len(out) != 0 {
		t.Fatalf("released %v while the woken labels partition may still deliver its backlog", out)
	}
	mustPush(t, a, item{ts: 2500, key: "\x00l", part: labels}, true)
	out := drain(a)
	var got []int64
	for _, o := range out {
		if o.why == OutOfOrder {
			t.Errorf("%v out of order", o.it)
		}
		got = append(got, o.it.ts)
	}
	// 4000 is the events partition's own last: held by its own wait.
	if !slices.Equal(got, []int64{1000, 2000, 2500, 3000}) {
		t.Fatalf("released %v, want 1000 2000 2500 3000 (the label in its place)", got)
	}
	if st := a.Stats(); st.Woken != 1 {
		t.Errorf("woken %d, want 1 (the labels partition)", st.Woken)
	}
	// The labels partition's own wait again: a later label, caught up,
	// holds nothing back, and wakes nobody.
	mustPush(t, a, item{ts: 5000, key: "e", part: events, idx: 4}, true)
	mustPush(t, a, item{ts: 4500, key: "\x00l2", part: labels, idx: 1}, true)
	a.Deadline()
	out = drain(a)
	if len(out) != 2 || out[0].it.ts != 4000 || out[1].it.ts != 4500 {
		t.Fatalf("got %v, want 4000 and 4500 at once", out)
	}
	if st := a.Stats(); st.Woken != 1 {
		t.Errorf("woken %d after a live label, want still 1", st.Woken)
	}
}
