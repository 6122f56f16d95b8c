package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/streamscore/streamscore/stream/local"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The source conformance suite: one set of contract tests, run against
// KafkaSource on an embedded kfake broker and against MemBroker.

const (
	srcTopic = "in"
	srcParts = 4
	// srcBudget bounds every wait of the suite; a test that needs it is
	// broken, not slow.
	srcBudget = 60 * time.Second
)

// sourceHarness is one implementation under test, on a fresh broker with
// topic srcTopic of srcParts partitions.
type sourceHarness struct {
	// member returns a new member of group (closed when the test ends).
	// rebalance is the longest wait of the group for a member to end its
	// generation; start the start policy.
	member func(t *testing.T, group string, start int64, rebalance time.Duration) Source
	// produce appends n records to partition p, values "p<p>-<i>" with i
	// counting from the partition's current end.
	produce func(t *testing.T, p, n int)
	// committed is the group's committed offsets at the broker (absent: none).
	committed func(t *testing.T, group string) map[int]int64
	// expire makes the broker drop s (its generation Done, not ended) as it
	// does after the rebalance timeout; it returns at once, the others' Next
	// then forms a generation without s.
	expire func(t *testing.T, s Source)
}

func kafkaHarness(t *testing.T) sourceHarness {
	k, err := local.StartKafka(map[string]int{srcTopic: srcParts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: srcTopic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Transport: tr, Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	t.Cleanup(func() { w.Close() })
	counts := make([]int, srcParts)
	return sourceHarness{
		member: func(t *testing.T, group string, start int64, rebalance time.Duration) Source {
			s, err := NewKafkaSource(brokers, group, srcTopic, WithSourceStartOffset(start),
				WithSourceSessionTimeout(6*time.Second), // kfake's group.min.session.timeout.ms
				WithSourceRebalanceTimeout(rebalance), WithSourceMaxWait(100*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		produce: func(t *testing.T, p, n int) {
			msgs := make([]kafka.Message, n)
			for i := range msgs {
				msgs[i] = kafka.Message{Partition: p, Key: []byte("k"), Value: fmt.Appendf(nil, "p%d-%d", p, counts[p]+i)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), srcBudget)
			defer cancel()
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				t.Fatal(err)
			}
			counts[p] += n
		},
		committed: func(t *testing.T, group string) map[int]int64 {
			ctx, cancel := context.WithTimeout(context.Background(), srcBudget)
			defer cancel()
			parts := []int{0, 1, 2, 3}
			res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{srcTopic: parts}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != nil {
				t.Fatal(res.Error)
			}
			out := map[int]int64{}
			for _, po := range res.Topics[srcTopic] {
				if po.Error != nil {
					t.Fatal(po.Error)
				}
				if po.CommittedOffset >= 0 {
					out[po.Partition] = po.CommittedOffset
				}
			}
			return out
		},
		expire: func(*testing.T, Source) {}, // the member does not rejoin: kfake drops it after the rebalance timeout
	}
}

func memHarness(t *testing.T) sourceHarness {
	b := NewMemBroker(map[string]int{srcTopic: srcParts})
	counts := make([]int, srcParts)
	return sourceHarness{
		member: func(t *testing.T, group string, start int64, _ time.Duration) Source {
			s, err := b.NewSource(group, srcTopic, start)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		produce: func(t *testing.T, p, n int) {
			for i := range n {
				if _, err := b.Append(srcTopic, p, []byte("k"), fmt.Appendf(nil, "p%d-%d", p, counts[p]+i)); err != nil {
					t.Fatal(err)
				}
			}
			counts[p] += n
		},
		committed: func(_ *testing.T, group string) map[int]int64 { return b.Committed(group, srcTopic) },
		expire:    func(_ *testing.T, s Source) { b.Expire(s.(*MemSource)) },
	}
}

var sourceHarnesses = []struct {
	name string
	make func(t *testing.T) sourceHarness
}{
	{"kafka", kafkaHarness},
	{"mem", memHarness},
}

// forEachSource runs test against every implementation.
func forEachSource(t *testing.T, test func(t *testing.T, h sourceHarness)) {
	for _, impl := range sourceHarnesses {
		t.Run(impl.name, func(t *testing.T) { test(t, impl.make(t)) })
	}
}

func budget(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), srcBudget)
	t.Cleanup(cancel)
	return ctx
}

func next(t *testing.T, s Source) Generation {
	t.Helper()
	g, err := s.Next(budget(t))
	if err != nil {
		t.Fatalf("next generation: %v", err)
	}
	return g
}

func claimed(g Generation) map[int]int64 {
	out := map[int]int64{}
	for _, c := range g.Claims() {
		out[c.Partition()] = c.Start()
	}
	return out
}

func claim(t *testing.T, g Generation, p int) Claim {
	t.Helper()
	for _, c := range g.Claims() {
		if c.Partition() == p {
			return c
		}
	}
	t.Fatalf("partition %d not claimed in generation %d (%v)", p, g.ID(), claimed(g))
	return nil
}

func fetch(t *testing.T, f func(context.Context) (Record, error)) Record {
	t.Helper()
	r, err := f(budget(t))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return r
}

func waitDone(t *testing.T, g Generation) {
	t.Helper()
	select {
	case <-g.Done():
	case <-time.After(srcBudget):
		t.Fatalf("generation %d not done after %v", g.ID(), srcBudget)
	}
}

// nextAsync calls s.Next in a goroutine joined by the returned function.
func nextAsync(t *testing.T, s Source) func() Generation {
	var g Generation
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { g, err = s.Next(budget(t)) })
	return func() Generation {
		t.Helper()
		wg.Wait()
		if err != nil {
			t.Fatalf("next generation: %v", err)
		}
		return g
	}
}

func TestSourceOneMemberClaimsAllAtCommitted(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		for p := range srcParts {
			h.produce(t, p, 3)
		}
		a := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		ga := next(t, a)
		if got, want := claimed(ga), map[int]int64{0: 0, 1: 0, 2: 0, 3: 0}; !maps.Equal(got, want) {
			t.Fatalf("first member claims %v, want %v", got, want)
		}
		for _, c := range ga.Claims() {
			if c.HighWater() != 3 {
				t.Errorf("partition %d: high water %d at generation start, want 3", c.Partition(), c.HighWater())
			}
		}
		c0 := claim(t, ga, 0)
		for i := range 2 {
			r := fetch(t, c0.Fetch)
			if r.Partition != 0 || r.Offset != int64(i) || string(r.Value) != fmt.Sprintf("p0-%d", i) || string(r.Key) != "k" {
				t.Fatalf("fetch %d: got %d/%d %q %q", i, r.Partition, r.Offset, r.Key, r.Value)
			}
			if r.Time.IsZero() || time.Since(r.Time) > time.Minute {
				t.Errorf("record time %v, want the append time", r.Time)
			}
		}
		if err := ga.Commit(budget(t), map[int]int64{0: 2, 1: 1}); err != nil {
			t.Fatal(err)
		}
		ga.End()
		a.Close()

		b := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		gb := next(t, b)
		if got, want := claimed(gb), map[int]int64{0: 2, 1: 1, 2: 0, 3: 0}; !maps.Equal(got, want) {
			t.Fatalf("next member claims %v, want the committed offsets %v", got, want)
		}
		if r := fetch(t, claim(t, gb, 0).Fetch); r.Offset != 2 || string(r.Value) != "p0-2" {
			t.Fatalf("first record after the commit: %d %q, want 2 p0-2", r.Offset, r.Value)
		}
		if r := fetch(t, claim(t, gb, 1).Fetch); r.Offset != 1 || string(r.Value) != "p1-1" {
			t.Fatalf("first record after the commit: %d %q, want 1 p1-1", r.Offset, r.Value)
		}

		// Another group starting at the end: Start is the resolved end.
		c := h.member(t, "late", kafka.LastOffset, 10*time.Second)
		gc := next(t, c)
		if got, want := claimed(gc), map[int]int64{0: 3, 1: 3, 2: 3, 3: 3}; !maps.Equal(got, want) {
			t.Fatalf("LastOffset member claims %v, want %v", got, want)
		}
		h.produce(t, 2, 1)
		if r := fetch(t, claim(t, gc, 2).Fetch); r.Offset != 3 || string(r.Value) != "p2-3" {
			t.Fatalf("LastOffset member's first record %d %q, want 3 p2-3", r.Offset, r.Value)
		}
	})
}

// splitGroup makes two members share the group: a alone first, then b
// joins; both generations are returned, with the same id.
func splitGroup(t *testing.T, h sourceHarness) (a, b Source, ga, gb Generation) {
	t.Helper()
	a = h.member(t, "g", kafka.FirstOffset, 10*time.Second)
	ga1 := next(t, a)
	if len(ga1.Claims()) != srcParts {
		t.Fatalf("alone, a claims %v", claimed(ga1))
	}
	b = h.member(t, "g", kafka.FirstOffset, 10*time.Second)
	joinB := nextAsync(t, b)
	waitDone(t, ga1) // b's join ends a's generation
	if _, err := claim(t, ga1, 0).Fetch(budget(t)); !errors.Is(err, ErrGenerationEnded) {
		t.Fatalf("fetch after done: %v, want ErrGenerationEnded", err)
	}
	ga1.End()
	ga = next(t, a)
	gb = joinB()
	if ga.ID() != gb.ID() || ga.ID() <= ga1.ID() {
		t.Fatalf("generations: a %d then %d, b %d", ga1.ID(), ga.ID(), gb.ID())
	}
	return a, b, ga, gb
}

func TestSourceTwoMembersSplit(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		_, _, ga, gb := splitGroup(t, h)
		pa, pb := claimed(ga), claimed(gb)
		if len(pa) != 2 || len(pb) != 2 {
			t.Fatalf("claims a %v, b %v: want two each", pa, pb)
		}
		all := slices.Sorted(maps.Keys(pa))
		all = append(all, slices.Sorted(maps.Keys(pb))...)
		slices.Sort(all)
		if !slices.Equal(all, []int{0, 1, 2, 3}) {
			t.Fatalf("claims a %v, b %v: want a partition of 0..3", pa, pb)
		}
		// Each member commits its own partitions, not the other's.
		mine := slices.Sorted(maps.Keys(pb))[0]
		theirs := slices.Sorted(maps.Keys(pa))[0]
		if err := gb.Commit(budget(t), map[int]int64{theirs: 0}); !errors.Is(err, ErrFenced) {
			t.Fatalf("commit of a partition claimed by the other member: %v, want ErrFenced", err)
		}
		if err := gb.Commit(budget(t), map[int]int64{mine: 0}); err != nil {
			t.Fatal(err)
		}
		if got := h.committed(t, "g"); !maps.Equal(got, map[int]int64{mine: 0}) {
			t.Fatalf("committed %v, want only %d: 0", got, mine)
		}
	})
}

func TestSourceLeaveGivesAllToTheOther(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		h.produce(t, 3, 2)
		a, b, ga, gb := splitGroup(t, h)
		_ = a
		gb.End()
		b.Close()
		waitDone(t, ga)
		ga.End()
		ga2 := next(t, a)
		if len(ga2.Claims()) != srcParts || ga2.ID() <= ga.ID() {
			t.Fatalf("after b left: generation %d claims %v, want all in a generation after %d", ga2.ID(), claimed(ga2), ga.ID())
		}
		if r := fetch(t, claim(t, ga2, 3).Fetch); r.Offset != 0 || string(r.Value) != "p3-0" {
			t.Fatalf("partition 3 after the rebalance: %d %q", r.Offset, r.Value)
		}
	})
}

func TestSourceCommitFenced(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		// Ended generation: refused without the broker.
		a := h.member(t, "g", kafka.FirstOffset, 2*time.Second)
		ga := next(t, a)
		if err := ga.Commit(budget(t), map[int]int64{0: 1}); err != nil {
			t.Fatal(err)
		}
		if err := ga.Commit(budget(t), map[int]int64{0: -3}); err == nil || errors.Is(err, ErrFenced) {
			t.Fatalf("negative offset: %v, want a plain error", err)
		}
		ga.End()
		if err := ga.Commit(budget(t), map[int]int64{0: 2}); !errors.Is(err, ErrFenced) || !errors.Is(err, ErrGenerationEnded) {
			t.Fatalf("commit after End: %v, want ErrFenced wrapping ErrGenerationEnded", err)
		}
		if _, err := claim(t, ga, 0).Fetch(budget(t)); !errors.Is(err, ErrGenerationEnded) {
			t.Fatalf("fetch after End: %v, want ErrGenerationEnded", err)
		}

		// A generation the broker moved on from: a is Done (b joins) but
		// does not end in time; the broker drops it and refuses its commit.
		ga = next(t, a)
		if err := ga.Commit(budget(t), map[int]int64{1: 1}); err != nil {
			t.Fatal(err)
		}
		b := h.member(t, "g", kafka.FirstOffset, 2*time.Second)
		joinB := nextAsync(t, b)
		waitDone(t, ga)
		// Done but not ended: the partitions are still a's, the commit of
		// its drained work goes through.
		if err := ga.Commit(budget(t), map[int]int64{1: 2}); err != nil {
			t.Fatalf("commit between Done and End: %v", err)
		}
		h.expire(t, a)
		gb := joinB()
		if len(gb.Claims()) != srcParts {
			t.Fatalf("b claims %v after a was dropped, want all", claimed(gb))
		}
		err := ga.Commit(budget(t), map[int]int64{0: 7, 1: 7})
		var ke kafka.Error
		if !errors.Is(err, ErrFenced) || !errors.As(err, &ke) {
			t.Fatalf("commit of a dropped member: %v, want ErrFenced wrapping the broker's error", err)
		}
		t.Logf("fenced: %v", err)
		if got, want := h.committed(t, "g"), map[int]int64{0: 1, 1: 2}; !maps.Equal(got, want) {
			t.Fatalf("committed %v after the fenced commit, want %v unchanged", got, want)
		}
		ga.End()
		if err := gb.Commit(budget(t), map[int]int64{0: 3}); err != nil {
			t.Fatalf("commit of the new owner: %v", err)
		}
		if got, want := h.committed(t, "g"), map[int]int64{0: 3, 1: 2}; !maps.Equal(got, want) {
			t.Fatalf("committed %v, want %v", got, want)
		}

		// The dropped member joins again: its first Next may report the
		// broker's refusal of its old member id, which is not fatal.
		var ga2 Generation
		var joinErrs []error
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 5 {
				g, err := a.Next(budget(t))
				if err == nil {
					ga2 = g
					return
				}
				joinErrs = append(joinErrs, err)
				if IsFatalSourceError(err) {
					return
				}
			}
		})
		waitDone(t, gb)
		gb.End()
		gb2 := next(t, b)
		wg.Wait()
		if ga2 == nil {
			t.Fatalf("the dropped member could not join again: %v", joinErrs)
		}
		if len(joinErrs) > 0 {
			t.Logf("rejoin errors: %v", joinErrs)
		}
		if len(ga2.Claims()) != 2 || len(gb2.Claims()) != 2 || ga2.ID() != gb2.ID() {
			t.Fatalf("after the rejoin: a %d %v, b %d %v", ga2.ID(), claimed(ga2), gb2.ID(), claimed(gb2))
		}
	})
}

func TestSourceReadAndHighWater(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		h.produce(t, 1, 5)
		s := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		parts, err := s.Partitions(budget(t), srcTopic)
		if err != nil || !slices.Equal(parts, []int{0, 1, 2, 3}) {
			t.Fatalf("partitions: %v %v", parts, err)
		}
		if _, err := s.Read(srcTopic, 1, -7); err == nil {
			t.Fatal("read from offset -7: no error")
		}
		r, err := s.Read(srcTopic, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var caught bool
		for i := int64(2); i < 5; i++ {
			rec := fetch(t, r.Fetch)
			if rec.Offset != i || string(rec.Value) != fmt.Sprintf("p1-%d", i) {
				t.Fatalf("read: %d %q, want %d", rec.Offset, rec.Value, i)
			}
			if rec.HighWater != 5 {
				t.Fatalf("record %d: high water %d, want 5", rec.Offset, rec.HighWater)
			}
			caught = rec.Offset == rec.HighWater-1
		}
		if !caught {
			t.Fatal("the last record does not show the reader caught up")
		}
		h.produce(t, 1, 2)
		if rec := fetch(t, r.Fetch); rec.Offset != 5 || rec.HighWater != 7 || rec.Offset == rec.HighWater-1 {
			t.Fatalf("after two more: %d high water %d, want 5 of 7 (not caught up)", rec.Offset, rec.HighWater)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		fetch(t, r.Fetch) // offset 6
		if _, err := r.Fetch(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fetch past the end: %v, want the context's error", err)
		}
		r.Close()
		if _, err := r.Fetch(budget(t)); !errors.Is(err, ErrSourceClosed) {
			t.Fatalf("fetch after Close: %v, want ErrSourceClosed", err)
		}
		// Source.Close closes the readers still open.
		r2, err := s.Read(srcTopic, 0, kafka.FirstOffset)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := r2.Fetch(budget(t)); !errors.Is(err, ErrSourceClosed) {
			t.Fatalf("fetch after the source closed: %v, want ErrSourceClosed", err)
		}
		if _, err := s.Next(budget(t)); !errors.Is(err, ErrSourceClosed) {
			t.Fatalf("next after Close: %v, want ErrSourceClosed", err)
		}
	})
}

func TestSourceFetchUnblockedByDone(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		a := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		ga := next(t, a)
		if _, err := a.Next(budget(t)); err == nil {
			t.Fatal("next before End: no error")
		}
		c := claim(t, ga, 2)
		errc := make(chan error, 1)
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := c.Fetch(budget(t))
			errc <- err
		})
		b := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		joinB := nextAsync(t, b)
		waitDone(t, ga)
		select {
		case err := <-errc:
			if !errors.Is(err, ErrGenerationEnded) {
				t.Fatalf("blocked fetch at done: %v, want ErrGenerationEnded", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("blocked fetch still blocked 10s after done")
		}
		wg.Wait()
		ga.End()
		next(t, a)
		joinB()
	})
}

// TestKafkaSourceBackpressure: a claim reads ahead at most three fetch
// responses (and nothing before its first Fetch), however much the
// partition holds.
func TestKafkaSourceBackpressure(t *testing.T) {
	h := kafkaHarness(t)
	for _, p := range []int{0, 1} {
		for range 5 {
			h.produce(t, p, 1000) // in producer batches of 100 records (kafka.Writer's BatchSize)
		}
	}
	k := h.member(t, "g", kafka.FirstOffset, 10*time.Second).(*KafkaSource)
	k.cfg.maxBytes = 1 << 10 // as WithSourceMaxBytes(1 KiB): one producer batch per fetch
	g := next(t, k)
	c0, c1 := claim(t, g, 0).(*kafkaClaim), claim(t, g, 1).(*kafkaClaim)
	if r := fetch(t, c0.Fetch); r.Offset != 0 {
		t.Fatalf("first record: offset %d", r.Offset)
	}
	time.Sleep(time.Second) // room for a fetcher that does not stop
	read0, read1 := c0.f.read.Load(), c1.f.read.Load()
	t.Logf("read from the broker: partition 0 %d records, partition 1 %d", read0, read1)
	// In hand, queued, fetched and waiting: three batches of 100.
	if read0 > 300 {
		t.Errorf("partition 0: %d records read ahead of one Fetch", read0)
	}
	c1.f.mu.Lock()
	conn1 := c1.f.conn
	c1.f.mu.Unlock()
	if read1 != 0 || conn1 != nil {
		t.Errorf("partition 1, never fetched: %d records read, connection %v", read1, conn1)
	}
	// The rest still comes, in order, and a cancelled Fetch loses nothing
	// (it may hand out a record already in hand).
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for i := int64(1); i < 5000; {
		f := c0.Fetch
		if i%500 == 0 {
			f = func(context.Context) (Record, error) { return c0.Fetch(cancelled) }
		}
		r, err := f(budget(t))
		if errors.Is(err, context.Canceled) {
			f = c0.Fetch
			r, err = f(budget(t))
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if r.Offset != i || string(r.Value) != fmt.Sprintf("p0-%d", i) {
			t.Fatalf("record %d: offset %d %q", i, r.Offset, r.Value)
		}
		i++
	}
	t0 := time.Now()
	g.End()
	t.Logf("End with one partition's fetch waiting at the broker: %v", time.Since(t0))
}

// TestKafkaSourceSASL: every connection of the source (group, metadata,
// fetch) authenticates with the dialer's mechanism; a refused one is an
// error IsFatalSourceError reports, from Next and from Fetch.
func TestKafkaSourceSASL(t *testing.T) {
	k, err := local.StartKafka(map[string]int{srcTopic: 2}, local.WithSASLUser("SCRAM-SHA-256", "streamscore", "right"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	source := func(pass string) *KafkaSource {
		mech, err := scram.Mechanism(scram.SHA256, "streamscore", pass)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewKafkaSource(k.Brokers(), "g", srcTopic, WithSourceSessionTimeout(6*time.Second),
			WithSourceDialer(&kafka.Dialer{Timeout: 5 * time.Second, SASLMechanism: mech}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	good := source("right")
	mech, _ := scram.Mechanism(scram.SHA256, "streamscore", "right")
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: srcTopic, BatchTimeout: time.Millisecond,
		Transport: &kafka.Transport{SASL: mech}, Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	defer w.Transport.(*kafka.Transport).CloseIdleConnections()
	defer w.Close()
	if err := w.WriteMessages(budget(t), kafka.Message{Partition: 1, Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	g := next(t, good)
	if r := fetch(t, claim(t, g, 1).Fetch); string(r.Value) != "v" {
		t.Fatalf("fetched %q", r.Value)
	}
	if err := g.Commit(budget(t), map[int]int64{1: 1}); err != nil {
		t.Fatal(err)
	}

	bad := source("wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = bad.Next(ctx)
	if err == nil || !IsFatalSourceError(err) {
		t.Fatalf("next with a wrong password: %v, want a fatal error", err)
	}
	t.Logf("next: %v", err)
	r, err := bad.Read(srcTopic, 1, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Fetch(ctx); err == nil || !IsFatalSourceError(err) {
		t.Fatalf("fetch with a wrong password: %v, want a fatal error", err)
	}
}

func TestIsFatalSourceError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"topic authorization", fmt.Errorf("stream: fetch in/0: %w", kafka.TopicAuthorizationFailed), true},
		{"group authorization", fmt.Errorf("stream: join group: %w", kafka.GroupAuthorizationFailed), true},
		{"sasl", fmt.Errorf("stream: connect: %w", kafka.SASLAuthenticationFailed), true},
		{"closed", ErrSourceClosed, true},
		{"not leader", fmt.Errorf("stream: fetch: %w", kafka.NotLeaderForPartition), false},
		{"rebalance", kafka.RebalanceInProgress, false},
		{"fenced", fmt.Errorf("%w: %w", ErrFenced, kafka.IllegalGeneration), false},
		{"generation ended", ErrGenerationEnded, false},
		{"network", fmt.Errorf("stream: connect: %w", context.DeadlineExceeded), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsFatalSourceError(tc.err); got != tc.want {
				t.Fatalf("IsFatalSourceError(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// member runs the loop the pipeline runs on a Source until stop is closed:
// per generation, a goroutine per claim fetches and processes (seen), the
// processed prefix is committed every 20 ms, and at Done the member drains,
// commits what it processed and ends the generation. It closes s when it
// returns: a member that only ended its generation is still in the group
// (kafka-go rejoins by itself after End) and would be assigned partitions
// nobody reads.
func member(s Source, seen func(Record), stop <-chan struct{}) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watch sync.WaitGroup
	defer watch.Wait()
	defer cancel()
	watch.Go(func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	})
	for {
		g, err := s.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if IsFatalSourceError(err) {
				return err
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var mu sync.Mutex
		next := map[int]int64{}
		var wg sync.WaitGroup
		for _, c := range g.Claims() {
			wg.Go(func() {
				for {
					r, err := c.Fetch(ctx)
					if err != nil {
						return
					}
					seen(r)
					mu.Lock()
					next[r.Partition] = r.Offset + 1
					mu.Unlock()
				}
			})
		}
		commit := func() error {
			mu.Lock()
			n := maps.Clone(next)
			mu.Unlock()
			return g.Commit(context.Background(), n)
		}
		tick := time.NewTicker(20 * time.Millisecond)
	run:
		for {
			select {
			case <-tick.C:
				if err := commit(); err != nil && !errors.Is(err, ErrFenced) {
					tick.Stop()
					return err
				}
			case <-g.Done():
				break run
			case <-ctx.Done():
				break run
			}
		}
		tick.Stop()
		wg.Wait() // the fetches end at Done (ErrGenerationEnded) or at stop
		err = commit()
		g.End()
		if err != nil && !errors.Is(err, ErrFenced) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// TestSourceMemberLoopLosesNothing: members joining and leaving while the
// topic is consumed; at the end every record was processed and the
// committed offsets are the ends of the partitions.
func TestSourceMemberLoopLosesNothing(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		const per = 300
		for p := range srcParts {
			h.produce(t, p, per)
		}
		var mu sync.Mutex
		seen := map[[2]int64]int{}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(seen)
		}
		record := func(r Record) {
			mu.Lock()
			seen[[2]int64{int64(r.Partition), r.Offset}]++
			mu.Unlock()
			time.Sleep(100 * time.Microsecond) // slow enough for the rebalances to fall mid-stream
		}
		waitFor := func(what string, cond func() bool) {
			t.Helper()
			deadline := time.Now().Add(srcBudget)
			for !cond() {
				if time.Now().After(deadline) {
					t.Fatalf("waiting for %s: %d records seen, committed %v", what, count(), h.committed(t, "g"))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		start := func(s Source) chan struct{} {
			stop := make(chan struct{})
			wg.Go(func() { errs <- member(s, record, stop) })
			return stop
		}
		a := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		stopA := start(a)
		waitFor("a to begin", func() bool { return count() >= 100 })
		b := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
		stopB := start(b)
		waitFor("b to share", func() bool { return count() >= 500 })
		for p := range srcParts {
			h.produce(t, p, per)
		}
		close(stopA) // a leaves mid-stream: b takes everything
		waitFor("all committed", func() bool {
			c := h.committed(t, "g")
			for p := range srcParts {
				if c[p] != 2*per {
					return false
				}
			}
			return true
		})
		close(stopB)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		dups := 0
		for p := range srcParts {
			for o := range int64(2 * per) {
				n := seen[[2]int64{int64(p), o}]
				if n == 0 {
					t.Fatalf("record %d/%d never processed", p, o)
				}
				dups += n - 1
			}
		}
		t.Logf("%d records, %d processed twice", srcParts*2*per, dups)
	})
}

// cutter dials TCP and can cut every connection it made.
type cutter struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

func (c *cutter) cut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	n := len(c.conns)
	c.conns = nil
	return n
}

// TestKafkaSourceFetchSurvivesCutConnections: connections cut under a
// reader make Fetch return a retryable error (or nothing at all); the next
// Fetch goes on where it was, with no record lost or repeated.
func TestKafkaSourceFetchSurvivesCutConnections(t *testing.T) {
	h := kafkaHarness(t)
	for range 10 {
		h.produce(t, 2, 100)
	}
	brokers := h.member(t, "x", kafka.FirstOffset, 10*time.Second).(*KafkaSource).brokers
	var c cutter
	s, err := NewKafkaSource(brokers, "g", srcTopic, WithSourceSessionTimeout(6*time.Second), WithSourceMaxBytes(1<<10),
		WithSourceDialer(&kafka.Dialer{Timeout: 5 * time.Second, DialFunc: c.dial}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Read(srcTopic, 2, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var retried []error
	// A cut at 250, 500 and 750, each once a connection is open (after a
	// cut the reader may serve up to three responses read ahead before it
	// needs the network again).
	pending, done := 0, 0
	for want := int64(0); want < 1000; {
		if want == 250 || want == 500 || want == 750 {
			if pending+done < int(want/250) {
				pending++
			}
		}
		if pending > 0 && c.cut() > 0 {
			pending--
			done++
		}
		rec, err := r.Fetch(budget(t))
		if err != nil {
			if IsFatalSourceError(err) {
				t.Fatalf("fetch after a cut: fatal %v", err)
			}
			retried = append(retried, err)
			if len(retried) > 20 {
				t.Fatalf("fetch does not recover: %v", retried)
			}
			continue
		}
		if rec.Offset != want || string(rec.Value) != fmt.Sprintf("p2-%d", want) {
			t.Fatalf("record %d: got %d %q", want, rec.Offset, rec.Value)
		}
		want++
	}
	if done < 2 {
		t.Fatalf("only %d cuts", done)
	}
	t.Logf("errors seen across %d cuts: %d (%v)", done, len(retried), retried)
}

// deleteRecords deletes the records of topic/partition below offset at the
// broker (Kafka's DeleteRecords, as retention does), with a raw request.
func deleteRecords(t *testing.T, broker, topic string, partition int32, offset int64) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", broker, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.Version = 1
	req.TimeoutMillis = 5000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	msg := kmsg.NewRequestFormatter().AppendRequest(nil, req, 1)
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	resp.Version = req.Version
	if err := resp.ReadFrom(body[4:]); err != nil { // after the correlation id
		t.Fatal(err)
	}
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 {
				t.Fatalf("delete records of %s/%d: %v", tp.Topic, p.Partition, kafka.Error(p.ErrorCode))
			}
		}
	}
}

// TestKafkaSourceMetricsAndRetentionGap: the metrics count generations,
// claimed partitions and fenced commits; a committed offset whose records
// retention deleted starts the claim at the first retained record, and the
// gap is counted, visible to the caller as a first Offset above Start.
func TestKafkaSourceMetricsAndRetentionGap(t *testing.T) {
	k, err := local.StartKafka(map[string]int{srcTopic: srcParts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	reg := prometheus.NewPedanticRegistry()
	newSource := func(reg prometheus.Registerer) *KafkaSource {
		opts := []SourceOption{WithSourceSessionTimeout(6 * time.Second)}
		if reg != nil {
			opts = append(opts, WithSourceRegisterer(reg))
		}
		s, err := NewKafkaSource(k.Brokers(), "g", srcTopic, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: srcTopic, BatchTimeout: time.Millisecond, Transport: tr,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	defer w.Close()
	for i := range 10 {
		if err := w.WriteMessages(budget(t), kafka.Message{Partition: 0, Value: fmt.Appendf(nil, "p0-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}

	first := newSource(nil)
	g1 := next(t, first)
	if err := g1.Commit(budget(t), map[int]int64{0: 2}); err != nil {
		t.Fatal(err)
	}
	g1.End()
	first.Close()
	deleteRecords(t, k.Brokers()[0], srcTopic, 0, 6)

	s := newSource(reg)
	g := next(t, s)
	if got := testutil.ToFloat64(s.met.generations); got != 1 {
		t.Errorf("generations %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.met.claimed); got != srcParts {
		t.Errorf("partitions claimed %v, want %d", got, srcParts)
	}
	c := claim(t, g, 0)
	if c.Start() != 2 {
		t.Fatalf("start %d, want the committed 2", c.Start())
	}
	if r := fetch(t, c.Fetch); r.Offset != 6 || string(r.Value) != "p0-6" {
		t.Fatalf("first record %d %q, want the first retained, 6", r.Offset, r.Value)
	}
	if got := testutil.ToFloat64(s.met.skipped.WithLabelValues("0")); got != 4 {
		t.Errorf("records skipped %v, want 4", got)
	}
	if err := g.Commit(budget(t), map[int]int64{7: 1}); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit of partition 7: %v", err)
	}
	g.End()
	if err := g.Commit(budget(t), map[int]int64{0: 7}); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit after End: %v", err)
	}
	if got := testutil.ToFloat64(s.met.fenced); got != 2 {
		t.Errorf("fenced commits %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.met.claimed); got != 0 {
		t.Errorf("partitions claimed after End %v, want 0", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if _, err := NewKafkaSource(k.Brokers(), "g", srcTopic, WithSourceRegisterer(reg)); err == nil {
		t.Error("a second source on the same registry: no error")
	}
}

// TestSourceCloseDuringJoin: closing a member whose Next waits for a
// rebalance (another member has not ended its generation) makes Next
// return ErrSourceClosed; Close returns within the rebalance timeout.
func TestSourceCloseDuringJoin(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		a := h.member(t, "g", kafka.FirstOffset, 2*time.Second)
		ga := next(t, a)
		b := h.member(t, "g", kafka.FirstOffset, 2*time.Second)
		var err error
		var wg sync.WaitGroup
		wg.Go(func() { _, err = b.Next(budget(t)) })
		waitDone(t, ga) // b is joining; a holds on to its generation
		t0 := time.Now()
		b.Close()
		wg.Wait()
		if !errors.Is(err, ErrSourceClosed) {
			t.Fatalf("next of a closed member: %v, want ErrSourceClosed", err)
		}
		t.Logf("close during a join: %v", time.Since(t0))
		if d := time.Since(t0); d > 10*time.Second {
			t.Fatalf("close took %v", d)
		}
		ga.End()
		// a may have been dropped meanwhile (it held its generation past the
		// rebalance timeout): its first Next then reports it, not fatal.
		ga2, err := a.Next(budget(t))
		if err != nil && !IsFatalSourceError(err) {
			t.Logf("rejoin: %v", err)
			ga2, err = a.Next(budget(t))
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ga2.Claims()) != srcParts {
			t.Fatalf("after b closed, a claims %v", claimed(ga2))
		}
	})
}

// TestSourceCloseLeavesAtOnce: a member closed in its generation, as a
// stopping pipeline closes it, leaves the group at once, though the other
// member holds on to its generation (revoking, checkpointing): it does not
// rejoin first — a join in a rebalance waits for every member, and a
// kafka-go group closed while its rejoin is refused (RebalanceInProgress)
// returns without leaving, so that the others wait for the closed member
// until its session or rebalance timeout.
func TestSourceCloseLeavesAtOnce(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		for _, closeA := range []bool{true, false} { // the group's leader, then the other
			name := "close b"
			if closeA {
				name = "close a"
			}
			t.Run(name, func(t *testing.T) {
				a, b, ga, gb := splitGroup(t, h)
				stay, gstay, gone := a, ga, b
				if closeA {
					stay, gstay, gone = b, gb, a
				}
				t0 := time.Now()
				if err := gone.Close(); err != nil {
					t.Fatal(err)
				}
				closed := time.Since(t0)
				waitDone(t, gstay) // the closed member left
				gstay.End()
				g2 := next(t, stay)
				t.Logf("close %v, the other's next generation %v after it", closed, time.Since(t0))
				if len(g2.Claims()) != srcParts {
					t.Fatalf("after the other closed: claims %v, want all", claimed(g2))
				}
				// splitGroup's rebalance timeout is 10 s: a rejoin before
				// leaving waits for it.
				if d := time.Since(t0); d > 5*time.Second {
					t.Fatalf("the group formed again %v after a member closed, want well under the 10 s rebalance timeout", d)
				}
				g2.End()
			})
		}
	})
}

// TestSourceCloseAfterGenerationEnded: a member closed after the group
// ended its generation (a third member joining), before or after it ended
// the generation itself (kafka-go then rejoins without looking at the
// close), leaves at once too: the other two form a generation without it
// well inside the 10 s rebalance timeout, and its Close does not wait for
// that rebalance.
func TestSourceCloseAfterGenerationEnded(t *testing.T) {
	forEachSource(t, func(t *testing.T, h sourceHarness) {
		for _, endFirst := range []bool{false, true} {
			name := "generation open"
			if endFirst {
				name = "generation ended"
			}
			t.Run(name, func(t *testing.T) {
				a, b, ga, gb := splitGroup(t, h)
				c := h.member(t, "g", kafka.FirstOffset, 10*time.Second)
				joinC := nextAsync(t, c)
				waitDone(t, ga) // c's join ends both generations
				waitDone(t, gb)
				if endFirst {
					gb.End()
				}
				t0 := time.Now()
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				closed := time.Since(t0)
				ga.End()
				ga2 := next(t, a)
				gc := joinC()
				t.Logf("close %v, a and c in a generation %v after it", closed, time.Since(t0))
				if n := len(ga2.Claims()) + len(gc.Claims()); n != srcParts || ga2.ID() != gc.ID() {
					t.Fatalf("a claims %v, c %v (generations %d, %d): want every partition between them", claimed(ga2), claimed(gc), ga2.ID(), gc.ID())
				}
				if d := time.Since(t0); d > 5*time.Second {
					t.Fatalf("a and c formed a generation %v after b closed, want well under the 10 s rebalance timeout", d)
				}
				ga2.End()
				gc.End()
			})
		}
	})
}
