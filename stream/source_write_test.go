package stream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/streamscore/streamscore/stream/local"
)

// Tests of the repartition mode's source seams (source_kafka_write.go):
// RecordWriter, SideCommitter and CommittedReader, on kfake and MemBroker.

// readValues reads n records of topic/partition from the start through s
// and returns their values; it fails if the partition holds more than n.
func readValues(t *testing.T, s Source, topic string, partition, n int) []string {
	t.Helper()
	r, err := s.Read(topic, partition, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := make([]string, 0, n)
	for len(out) < n {
		rec := fetch(t, r.Fetch)
		if rec.Offset != int64(len(out)) {
			t.Fatalf("%s/%d: record at offset %d, want %d", topic, partition, rec.Offset, len(out))
		}
		out = append(out, string(rec.Value))
		if len(out) == n && rec.HighWater != int64(n) {
			t.Fatalf("%s/%d: high water %d after %d records: more were written", topic, partition, rec.HighWater, n)
		}
	}
	return out
}

func TestKafkaSourceWriteRecordsOrder(t *testing.T) {
	const (
		writers = 3  // goroutines; writer w owns partitions w and w+writers
		calls   = 12 // per writer
		perCall = 40 // records per call, in runs of 4 per partition
	)
	k, err := local.StartKafka(map[string]int{"in": 2, "r1": 2 * writers, "r2": 2 * writers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	for _, tc := range []struct {
		name  string
		topic string
		opts  []SourceOption
	}{
		{"one request per partition", "r1", nil},
		{"split at 1 KiB", "r2", []SourceOption{WithSourceMaxWriteBytes(1 << 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s, err := NewKafkaSource(k.Brokers(), "g", "in", append([]SourceOption{WithSourceRegisterer(reg)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			t0 := time.Now()
			var wg sync.WaitGroup
			errs := make([]error, writers)
			for w := range writers {
				wg.Go(func() {
					seq := [2]int{}
					pad := strings.Repeat("x", 60)
					for range calls {
						recs := make([]OutRecord, perCall)
						for j := range recs {
							h := (j / 4) % 2
							p := w + h*writers
							recs[j] = OutRecord{Partition: p, Key: []byte{byte(p)},
								Value: fmt.Appendf(nil, "%d-%06d-%s", p, seq[h], pad)}
							seq[h]++
						}
						if err := s.WriteRecords(budget(t), tc.topic, recs); err != nil {
							errs[w] = err
							return
						}
					}
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d calls of %d records in %v", writers*calls, perCall, time.Since(t0))
			total := 0
			for p := range 2 * writers {
				n := calls * perCall / 2
				vals := readValues(t, s, tc.topic, p, n)
				for i, v := range vals {
					if want := fmt.Sprintf("%d-%06d-", p, i); !strings.HasPrefix(v, want) {
						t.Fatalf("%s/%d offset %d: %q, want %q…", tc.topic, p, i, v[:min(len(v), 12)], want)
					}
				}
				total += n
			}
			if got := testutil.ToFloat64(s.met.written.WithLabelValues(tc.topic)); got != float64(total) {
				t.Fatalf("records written metric %v, want %d", got, total)
			}
			if got := testutil.ToFloat64(s.met.writeErrors.WithLabelValues(tc.topic)); got != 0 {
				t.Fatalf("write errors metric %v, want 0", got)
			}
		})
	}
}

func TestKafkaSourceWriteRecordsRefused(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"in": 2, "r": 2, "small": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers()...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	t.Cleanup(cl.Transport.(*kafka.Transport).CloseIdleConnections)
	res, err := cl.AlterConfigs(budget(t), &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: "small",
		Configs: []kafka.AlterConfigRequestConfig{{Name: "max.message.bytes", Value: "4000"}},
	}}})
	if err == nil {
		err = errors.Join(slices2(res.Errors)...)
	}
	if err != nil {
		t.Fatalf("set max.message.bytes of topic small: %v", err)
	}
	reg := prometheus.NewRegistry()
	s, err := NewKafkaSource(k.Brokers(), "g", "in", WithSourceRegisterer(reg), WithSourceMaxWriteBytes(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	big := make([]byte, 100<<10)
	value := make([]byte, 200)
	for _, tc := range []struct {
		name     string
		topic    string
		recs     []OutRecord
		is       []error // the error wraps one of them
		requests float64 // failed produce requests (write errors metric)
	}{
		{"missing topic", "nope", []OutRecord{{Partition: 0, Value: value}}, []error{kafka.UnknownTopicOrPartition, protocol.ErrNoTopic}, 1},
		{"missing partition", "r", []OutRecord{{Partition: 0, Value: value}, {Partition: 5, Value: value}},
			[]error{kafka.UnknownTopicOrPartition, protocol.ErrNoPartition}, 1},
		{"negative partition", "r", []OutRecord{{Partition: -1, Value: value}}, nil, 0},
		{"record over the write limit", "r", []OutRecord{{Partition: 0, Value: value}, {Partition: 1, Value: big}},
			[]error{kafka.MessageSizeTooLarge}, 0},
		{"batch over the topic's limit", "small", make20(value), []error{kafka.MessageSizeTooLarge}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errsBefore := testutil.ToFloat64(s.met.writeErrors.WithLabelValues(tc.topic))
			t0 := time.Now()
			err := s.WriteRecords(ctx, tc.topic, tc.recs)
			took := time.Since(t0)
			t.Logf("%v after %v", err, took)
			if err == nil {
				t.Fatal("no error")
			}
			if took > 10*time.Second {
				t.Fatalf("refused after %v: retried a non-retriable error", took)
			}
			if tc.is != nil && !errorsIsAny(err, tc.is...) {
				t.Fatalf("error %v wraps none of %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.topic) {
				t.Fatalf("error %q does not name topic %q", err, tc.topic)
			}
			if got := testutil.ToFloat64(s.met.writeErrors.WithLabelValues(tc.topic)) - errsBefore; got != tc.requests {
				t.Fatalf("%v failed produce requests, want %v", got, tc.requests)
			}
		})
	}
	// Nothing of the refused calls reached r but what the broker accepted:
	// partition 0's record of "missing partition" (the partitions are
	// written independently, as documented).
	if ends, err := local.EndOffsets(budget(t), k.Brokers(), "r"); err != nil || !maps.Equal(ends, map[int]int64{0: 1, 1: 0}) {
		t.Fatalf("end offsets of r: %v, %v; want 1 record in partition 0, none in 1", ends, err)
	}

	// A write that cannot succeed within ctx (the broker refuses every
	// Produce) returns when ctx ends, with the last error.
	outage := make(chan struct{})
	k.FailProduce(outage)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = s.WriteRecords(ctx, "r", []OutRecord{{Partition: 1, Value: value}})
	took := time.Since(t0)
	close(outage)
	t.Logf("during an outage: %v after %v", err, took)
	if !errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
		t.Fatalf("write during an outage: %v after %v, want the deadline after about 1.5 s", err, took)
	}
	if err := s.WriteRecords(budget(t), "r", []OutRecord{{Partition: 1, Value: value}}); err != nil {
		t.Fatalf("write after the outage: %v", err)
	}

	s.Close()
	if err := s.WriteRecords(budget(t), "r", []OutRecord{{Partition: 1, Value: value}}); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("write after Close: %v, want ErrSourceClosed", err)
	}
}

func make20(v []byte) []OutRecord {
	recs := make([]OutRecord, 20) // 20 × 200 B: over 4,000 B
	for i := range recs {
		recs[i] = OutRecord{Value: v}
	}
	return recs
}

func slices2(m map[kafka.AlterConfigsResponseResource]error) []error {
	var out []error
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// TestKafkaSourceCommitWith: the side topic's offsets are stored with the
// input's, in the group, and read back by another member after the first
// left; kfake keeps offsets of a topic the group does not consume.
func TestKafkaSourceCommitWith(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"in": 4, "e": 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	member := func() *KafkaSource {
		s, err := NewKafkaSource(k.Brokers(), "g", "in", WithSourceSessionTimeout(6*time.Second),
			WithSourceRebalanceTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	testCommitWith(t, func() commitWithMember { return member() })

	// The fresh-connection path (after the generation's coordinator
	// connection broke) stores both topics too.
	s := member()
	g := next(t, s).(*kafkaGeneration)
	if err := g.commitDirect(budget(t), map[string]map[int]int64{"in": {3: 30}, "e": {3: 31}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Committed(budget(t), "e"); err != nil || got[3] != 31 {
		t.Fatalf("committed e after commitDirect: %v, %v; want partition 3 at 31", got, err)
	}
	if got, err := s.Committed(budget(t), "in"); err != nil || got[3] != 30 {
		t.Fatalf("committed in after commitDirect: %v, %v; want partition 3 at 30", got, err)
	}
	g.End()
}

func TestMemSourceCommitWith(t *testing.T) {
	b := NewMemBroker(map[string]int{"in": 4, "e": 4})
	testCommitWith(t, func() commitWithMember {
		s, err := b.NewSource("g", "in", kafka.FirstOffset)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

type commitWithMember interface {
	Source
	CommittedReader
}

// testCommitWith is the CommitWith contract on a group of "in" and a side
// topic "e", both of 4 partitions.
func testCommitWith(t *testing.T, member func() commitWithMember) {
	a := member()
	ga := next(t, a)
	sc, ok := ga.(SideCommitter)
	if !ok {
		t.Fatalf("%T is not a SideCommitter", ga)
	}
	if got, err := a.Committed(budget(t), "e"); err != nil || len(got) != 0 {
		t.Fatalf("committed e before any commit: %v, %v; want none", got, err)
	}
	if err := sc.CommitWith(budget(t), map[int]int64{0: 5, 1: 6}, map[string]map[int]int64{"e": {0: 7, 2: 8}}); err != nil {
		t.Fatal(err)
	}
	// Side only, and the input only (Commit is CommitWith without side).
	if err := sc.CommitWith(budget(t), nil, map[string]map[int]int64{"e": {3: 9}}); err != nil {
		t.Fatal(err)
	}
	if err := ga.Commit(budget(t), map[int]int64{2: 4}); err != nil {
		t.Fatal(err)
	}
	wantIn, wantE := map[int]int64{0: 5, 1: 6, 2: 4}, map[int]int64{0: 7, 2: 8, 3: 9}
	check := func(s CommittedReader, when string) {
		t.Helper()
		for topic, want := range map[string]map[int]int64{"in": wantIn, "e": wantE} {
			got, err := s.Committed(budget(t), topic)
			if err != nil {
				t.Fatalf("%s: committed %s: %v", when, topic, err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("%s: committed %s %v, want %v", when, topic, got, want)
			}
		}
	}
	check(a, "after the commits")

	// Refused without the broker, nothing stored: a side partition not
	// claimed, a negative side offset, the input topic as a side topic.
	for _, tc := range []struct {
		name   string
		side   map[string]map[int]int64
		fenced bool
	}{
		{"side partition not claimed", map[string]map[int]int64{"e": {1: 50, 4: 50}}, true},
		{"negative side offset", map[string]map[int]int64{"e": {1: -2}}, false},
		{"input topic as side", map[string]map[int]int64{"in": {1: 50}}, false},
	} {
		err := sc.CommitWith(budget(t), map[int]int64{0: 50}, tc.side)
		if err == nil || errors.Is(err, ErrFenced) != tc.fenced {
			t.Fatalf("%s: %v, want an error (fenced %v)", tc.name, err, tc.fenced)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	check(a, "after the refused commits")

	ga.End()
	if err := sc.CommitWith(budget(t), map[int]int64{0: 60}, map[string]map[int]int64{"e": {0: 60}}); !errors.Is(err, ErrFenced) || !errors.Is(err, ErrGenerationEnded) {
		t.Fatalf("commit after End: %v, want ErrFenced wrapping ErrGenerationEnded", err)
	}
	if err := sc.CommitWith(budget(t), nil, map[string]map[int]int64{"e": {0: 60}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("side-only commit after End: %v, want ErrFenced", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Committed(budget(t), "e"); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("committed after Close: %v, want ErrSourceClosed", err)
	}

	// Another member of the group, after a left: it reads both topics'
	// offsets, and its generation starts the input there.
	b := member()
	check(b, "read by another member")
	gb := next(t, b)
	if got := claimed(gb); !maps.Equal(got, map[int]int64{0: 5, 1: 6, 2: 4, 3: 0}) {
		t.Fatalf("b's claims start at %v", got)
	}
	gb.End()
	if _, err := b.Committed(budget(t), "nope"); err == nil {
		t.Fatal("committed offsets of a missing topic: no error")
	}
}

func TestMemSourceWriteRecords(t *testing.T) {
	b := NewMemBroker(map[string]int{"in": 1, "r": 3})
	s, err := b.NewSource("g", "in", kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	recs := []OutRecord{{Partition: 2, Value: []byte("a")}, {Partition: 0, Value: []byte("b")}, {Partition: 2, Key: []byte("k"), Value: []byte("c")}}
	if err := s.WriteRecords(budget(t), "r", recs); err != nil {
		t.Fatal(err)
	}
	recs[0].Value[0] = 'z' // the broker keeps its own copy
	for _, tc := range []struct {
		name string
		p    int
		want []string
	}{
		{"partition 0", 0, []string{"b"}},
		{"partition 1", 1, []string{}},
		{"partition 2, in order", 2, []string{"a", "c"}},
	} {
		if got := readValues(t, s, "r", tc.p, len(tc.want)); !slicesEqual(got, tc.want) {
			t.Fatalf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name  string
		topic string
		recs  []OutRecord
	}{
		{"missing topic", "nope", []OutRecord{{Partition: 0}}},
		{"missing partition", "r", []OutRecord{{Partition: 0, Value: []byte("x")}, {Partition: 3}}},
		{"negative partition", "r", []OutRecord{{Partition: -1}}},
	} {
		if err := s.WriteRecords(budget(t), tc.topic, tc.recs); !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Fatalf("%s: %v, want UnknownTopicOrPartition", tc.name, err)
		}
	}
	if got := b.logs["r"][0]; len(got) != 1 {
		t.Fatalf("r/0 holds %d records after refused calls, want 1 (nothing of a refused call)", len(got))
	}
	s.Close()
	if err := s.WriteRecords(budget(t), "r", recs); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKafkaSourceWriteRecordsSASL: WriteRecords authenticates with the
// source's dialer; a wrong password is refused at once, as a fatal error.
func TestKafkaSourceWriteRecordsSASL(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"in": 1, "r": 2}, local.WithSASLUser("SCRAM-SHA-256", "streamscore", "right"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	source := func(pass string) *KafkaSource {
		mech, err := scram.Mechanism(scram.SHA256, "streamscore", pass)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewKafkaSource(k.Brokers(), "g", "in", WithSourceSessionTimeout(6*time.Second),
			WithSourceDialer(&kafka.Dialer{Timeout: 5 * time.Second, SASLMechanism: mech}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	good := source("right")
	if err := good.WriteRecords(budget(t), "r", []OutRecord{{Partition: 1, Value: []byte("v1")}, {Partition: 1, Value: []byte("v2")}}); err != nil {
		t.Fatal(err)
	}
	if got := readValues(t, good, "r", 1, 2); !slicesEqual(got, []string{"v1", "v2"}) {
		t.Fatalf("read back %q", got)
	}
	g := next(t, good)
	if err := g.(SideCommitter).CommitWith(budget(t), map[int]int64{0: 0}, map[string]map[int]int64{"r": {0: 0}}); err != nil {
		t.Fatal(err)
	}
	if got, err := good.Committed(budget(t), "r"); err != nil || !maps.Equal(got, map[int]int64{0: 0}) {
		t.Fatalf("committed r: %v, %v", got, err)
	}
	g.End()

	bad := source("wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	err = bad.WriteRecords(ctx, "r", []OutRecord{{Partition: 0, Value: []byte("x")}})
	t.Logf("write with a wrong password: %v after %v", err, time.Since(t0))
	if err == nil || !IsFatalSourceError(err) {
		t.Fatalf("write with a wrong password: %v, want a fatal error", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Fatalf("a wrong password was retried for %v", time.Since(t0))
	}
}

// BenchmarkWriteRecords compares KafkaSource.WriteRecords with kafka-go's
// Writer (one synchronous WriteMessages of the same records, acks=all,
// BatchSize 256 so it sends at once) writing 256 records of 200 bytes to
// one partition. The broker runs in its own process; cpu-ns/op is this
// process's CPU.
//
//	go test ./stream -run '^$' -bench BenchmarkWriteRecords -benchtime 200x -count 3
func BenchmarkWriteRecords(b *testing.B) {
	const n, size = 256, 200
	addr := startBenchBroker(b)
	value := []byte(strings.Repeat("x", size))
	measure := func(b *testing.B, write func() error) {
		b.SetBytes(n * size)
		b.ReportAllocs()
		if err := write(); err != nil { // connections and metadata
			b.Fatal(err)
		}
		c0 := cpuTime()
		b.ResetTimer()
		for range b.N {
			if err := write(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
	b.Run("source", func(b *testing.B) {
		s, err := NewKafkaSource([]string{addr}, "bench", srcTopic)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		recs := make([]OutRecord, n)
		for i := range recs {
			recs[i] = OutRecord{Partition: 0, Key: []byte("card-0000000001"), Value: value}
		}
		measure(b, func() error { return s.WriteRecords(context.Background(), srcTopic, recs) })
	})
	b.Run("writer", func(b *testing.B) {
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: srcTopic, BatchTimeout: time.Millisecond, BatchSize: n,
			Transport: tr, RequiredAcks: kafka.RequireAll,
			Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
		defer w.Close()
		msgs := make([]kafka.Message, n)
		for i := range msgs {
			msgs[i] = kafka.Message{Partition: 0, Key: []byte("card-0000000001"), Value: value}
		}
		measure(b, func() error { return w.WriteMessages(context.Background(), msgs...) })
	})
}
