package align

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// schedule is a cyclic push order: partition, event time and tie key of
// each push; cycle c adds c*span to the event times, so that every
// partition stays in event-time order across cycles.
type schedule struct {
	part []int
	ts   []int64
	key  []string
	span int64
}

// liveSchedule: partitions take turns in a random order, one event each,
// event times rising with jitter (live traffic).
func liveSchedule(parts, n int) schedule {
	r := rand.New(rand.NewPCG(1, 2))
	s := schedule{span: int64(n) * 1000}
	last := make([]int64, parts)
	for i := range n {
		p := r.IntN(parts)
		ts := max(last[p], int64(i)*1000+int64(r.IntN(5000)))
		last[p] = ts
		s.part = append(s.part, p)
		s.ts = append(s.ts, ts)
		s.key = append(s.key, fmt.Sprintf("tx-%08d", r.IntN(1<<30)))
	}
	return s
}

// backlogSchedule: partitions deliver fetch batches of 256 events each, in
// turn, event times interleaved across partitions (a backlog read at full
// speed: the aligner holds about a batch per partition).
func backlogSchedule(parts, n int) schedule {
	r := rand.New(rand.NewPCG(3, 4))
	s := schedule{span: int64(n) * 1000}
	const batch = 256
	next := make([]int64, parts)
	for p := range next {
		next[p] = int64(r.IntN(1000))
	}
	for len(s.part) < n {
		for p := range parts {
			for range batch {
				next[p] += int64(parts) * 1000 / 2 * int64(1+r.IntN(2))
				s.part = append(s.part, p)
				s.ts = append(s.ts, next[p])
				s.key = append(s.key, fmt.Sprintf("tx-%08d", r.IntN(1<<30)))
			}
		}
	}
	s.span = 0
	for p := range parts {
		s.span = max(s.span, next[p])
	}
	s.span += 1000
	return s
}

// run pushes k items following s from position *i and pops all that may
// go after each push; it returns the number popped.
func (s *schedule) run(a *Aligner[int], i *int, k int) int {
	popped := 0
	n := len(s.part)
	for range k {
		j := *i % n
		ts := s.ts[j] + int64(*i/n)*s.span
		if err := a.Push(s.part[j], ts, s.key[j], j, false); err != nil {
			panic(err)
		}
		*i++
		for {
			if _, why, ok := a.Pop(); !ok {
				break
			} else if why != Ordered {
				panic(fmt.Sprintf("released %v in a benchmark", why))
			}
			popped++
		}
	}
	return popped
}

func newBench(tb testing.TB, parts int) *Aligner[int] {
	a, err := New[int](WithMaxPerPartition(1 << 20))
	if err != nil {
		tb.Fatal(err)
	}
	for p := range parts {
		if err := a.Add(p); err != nil {
			tb.Fatal(err)
		}
	}
	return a
}

// TestSteadyStateNoAlloc: Push and Pop allocate nothing once the buffers
// have grown (real clock).
func TestSteadyStateNoAlloc(t *testing.T) {
	for _, parts := range []int{4, 64} {
		for _, mk := range []struct {
			name string
			s    schedule
		}{{"live", liveSchedule(parts, 1<<14)}, {"backlog", backlogSchedule(parts, 1<<14)}} {
			a := newBench(t, parts)
			i := 0
			mk.s.run(a, &i, 1<<15) // warm up: grow the heap
			if got := testing.AllocsPerRun(2000, func() { mk.s.run(a, &i, 1) }); got != 0 {
				t.Errorf("%s/%d partitions: %v allocations per item, want 0", mk.name, parts, got)
			}
		}
	}
}

// BenchmarkAlign reports ns per item (one Push and its share of Pops),
// and the CPU time of the benchmark thread per item (cpu-ns/item: on a
// shared machine the wall time also counts waiting for a core).
func BenchmarkAlign(b *testing.B) {
	for _, mode := range []string{"live", "backlog"} {
		for _, parts := range []int{4, 16, 64} {
			b.Run(fmt.Sprintf("%s/partitions=%d", mode, parts), func(b *testing.B) {
				s := liveSchedule(parts, 1<<16)
				if mode == "backlog" {
					s = backlogSchedule(parts, 1<<16)
				}
				a := newBench(b, parts)
				i := 0
				s.run(a, &i, 1<<16)
				runtime.LockOSThread() // threadCPU measures this thread
				defer runtime.UnlockOSThread()
				cpu0, cpuOK := threadCPU()
				b.ReportAllocs()
				b.ResetTimer()
				s.run(a, &i, b.N)
				b.StopTimer()
				if cpu1, ok := threadCPU(); ok && cpuOK {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/item")
				}
				b.ReportMetric(float64(a.Len()), "buffered")
			})
		}
	}
}
