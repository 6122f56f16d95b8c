package stream

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// MemBroker is an in-memory broker for tests without Kafka: topics of
// partitions you append records to, consumer groups whose members
// (MemSource, a Source) get generations by range assignment with Kafka's
// eager protocol, commits fenced by generation, and hooks to end a
// generation on demand (Rebalance) or drop a member as the broker does after
// the rebalance timeout (Expire). It is declared in a test file of package
// stream, so the package's internal and external tests can both use it.
//
// Eager protocol, as KafkaSource sees it from Kafka: a member that calls
// Next while others hold a generation closes their Done; the next
// generation forms once every member of the group has ended its generation
// (End rejoins by itself, as kafka-go does: the member's next Next returns
// the generation formed meanwhile), has left (Close) or been expired. Commits of
// a generation that is Done but not ended are accepted; after End they are
// refused locally, after Expire by the "broker" (kafka.UnknownMemberId).
//
// The repartition mode's seams, as KafkaSource has them: MemSource writes
// records (RecordWriter: the records of one call are appended under one
// lock, so a partition's records of a call are contiguous, in order, and
// nothing of a call with a bad record is stored), commits side topics'
// offsets with its input's, all or nothing (SideCommitter: a side partition
// must be claimed, as an input partition, in the generation), and reads its
// group's committed offsets of any topic (CommittedReader: partitions
// without a commit absent). Committed offsets are kept per group and
// topic, whatever topics the group consumes.
//
// All methods are safe for concurrent use.
type MemBroker struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	logs    map[string][][]Record
	groups  map[string]*memGroup
	nextID  int
}

type memGroup struct {
	gen       int32
	members   map[*MemSource]*memMember
	committed map[string]map[int]int64 // topic -> partition -> next offset
}

type memMember struct {
	id      string
	joining bool           // waiting in Next
	pending *memGeneration // formed for the member, not yet returned by Next
	cur     *memGeneration // the last generation returned by Next
}

// NewMemBroker returns a broker with topics (name -> partitions).
func NewMemBroker(topics map[string]int) *MemBroker {
	b := &MemBroker{changed: make(chan struct{}), logs: map[string][][]Record{}, groups: map[string]*memGroup{}}
	for t, n := range topics {
		b.logs[t] = make([][]Record, n)
	}
	return b
}

// broadcast wakes every waiter; b.mu is held.
func (b *MemBroker) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Append appends a record to topic/partition, stamped with the current
// time, and returns its offset.
func (b *MemBroker) Append(topic string, partition int, key, value []byte) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	parts, ok := b.logs[topic]
	if !ok || partition < 0 || partition >= len(parts) {
		return 0, fmt.Errorf("mem broker: no partition %s/%d", topic, partition)
	}
	off := int64(len(parts[partition]))
	parts[partition] = append(parts[partition], Record{Partition: partition, Offset: off,
		Key: slices.Clone(key), Value: slices.Clone(value), Time: time.Now().UTC()})
	b.broadcast()
	return off, nil
}

// Committed returns group's committed offsets of topic (partition -> next
// offset); partitions without a commit are absent.
func (b *MemBroker) Committed(group, topic string) map[int]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[int]int64{}
	if g, ok := b.groups[group]; ok {
		for p, o := range g.committed[topic] {
			out[p] = o
		}
	}
	return out
}

// NewSource returns a new member of group on topic; partitions without a
// committed offset start at startOffset (kafka.FirstOffset or
// kafka.LastOffset). It joins at its first Next.
func (b *MemBroker) NewSource(group, topic string, startOffset int64) (*MemSource, error) {
	if startOffset != kafka.FirstOffset && startOffset != kafka.LastOffset {
		return nil, fmt.Errorf("mem broker: start offset %d", startOffset)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.logs[topic]; !ok {
		return nil, fmt.Errorf("mem broker: no topic %q", topic)
	}
	g, ok := b.groups[group]
	if !ok {
		g = &memGroup{members: map[*MemSource]*memMember{}, committed: map[string]map[int]int64{}}
		b.groups[group] = g
	}
	return &MemSource{b: b, g: g, group: group, topic: topic, start: startOffset, readers: map[*memReader]struct{}{}}, nil
}

// Rebalance ends the running generation of every member of group (their
// Done closes), as a joining member or a lost session does at Kafka.
func (b *MemBroker) Rebalance(group string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if g, ok := b.groups[group]; ok {
		for _, m := range g.members {
			if m.cur != nil {
				m.cur.finish()
			}
		}
		b.broadcast()
	}
}

// Expire drops s from its group as Kafka does with a member that did not
// rejoin within the rebalance timeout: its generation ends, its commits are
// refused (kafka.UnknownMemberId), the others may form the next generation
// without it. Its next Next joins again as a new member.
func (b *MemBroker) Expire(s *MemSource) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := s.g.members[s]; ok {
		b.leave(s, m, kafka.UnknownMemberId)
	}
}

// leave removes member s; b.mu is held.
func (b *MemBroker) leave(s *MemSource, m *memMember, cause error) {
	delete(s.g.members, s)
	if m.cur != nil {
		m.cur.fenced = cause
		m.cur.finish()
	}
	for _, o := range s.g.members {
		if o.cur != nil {
			o.cur.finish()
		}
	}
	b.tryForm(s.g, s.topic)
	b.broadcast()
}

// tryForm forms the next generation of g if every member waits in Next;
// b.mu is held.
func (b *MemBroker) tryForm(g *memGroup, topic string) {
	if len(g.members) == 0 {
		return
	}
	srcs := make([]*MemSource, 0, len(g.members))
	for s, m := range g.members {
		if !m.joining || m.pending != nil {
			return
		}
		srcs = append(srcs, s)
	}
	slices.SortFunc(srcs, func(x, y *MemSource) int {
		return g.members[x].idNum() - g.members[y].idNum()
	})
	g.gen++
	parts := len(b.logs[topic])
	n := len(srcs)
	for i, s := range srcs {
		// Range assignment: the first parts%n members get one more.
		lo := i*(parts/n) + min(i, parts%n)
		hi := lo + parts/n
		if i < parts%n {
			hi++
		}
		gen := &memGeneration{b: b, s: s, m: g.members[s], id: g.gen, done: make(chan struct{}), byPart: map[int]*memClaim{}}
		for p := lo; p < hi; p++ {
			start, ok := g.committed[topic][p]
			if !ok {
				start = 0
				if s.start == kafka.LastOffset {
					start = int64(len(b.logs[topic][p]))
				}
			}
			c := &memClaim{gen: gen, p: p, start: start, next: start, hw: int64(len(b.logs[topic][p]))}
			gen.byPart[p] = c
			gen.claims = append(gen.claims, c)
		}
		g.members[s].pending = gen
	}
}

func (m *memMember) idNum() int {
	n, _ := strconv.Atoi(m.id[len("member-"):])
	return n
}

// MemSource is a member of a MemBroker group: a Source.
type MemSource struct {
	b       *MemBroker
	g       *memGroup
	group   string
	topic   string
	start   int64
	closed  bool
	readers map[*memReader]struct{}
}

var (
	_ Source          = (*MemSource)(nil)
	_ RecordWriter    = (*MemSource)(nil)
	_ CommittedReader = (*MemSource)(nil)
	_ SideCommitter   = (*memGeneration)(nil)
)

// WriteRecords implements RecordWriter: every record is checked (topic and
// partition exist) before any is appended, and all are appended under one
// lock, stamped with the current time.
func (s *MemSource) WriteRecords(ctx context.Context, topic string, recs []OutRecord) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return ErrSourceClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parts, ok := b.logs[topic]
	if !ok {
		return fmt.Errorf("mem source: write %q: %w", topic, kafka.UnknownTopicOrPartition)
	}
	for i, r := range recs {
		if r.Partition < 0 || r.Partition >= len(parts) {
			return fmt.Errorf("mem source: write %s/%d: record %d: %w", topic, r.Partition, i, kafka.UnknownTopicOrPartition)
		}
	}
	now := time.Now().UTC()
	for _, r := range recs {
		l := parts[r.Partition]
		parts[r.Partition] = append(l, Record{Partition: r.Partition, Offset: int64(len(l)),
			Key: slices.Clone(r.Key), Value: slices.Clone(r.Value), Time: now})
	}
	if len(recs) > 0 {
		b.broadcast()
	}
	return nil
}

// Committed implements CommittedReader (MemBroker.Committed, for the
// member's group; an unknown topic is an error).
func (s *MemSource) Committed(_ context.Context, topic string) (map[int]int64, error) {
	s.b.mu.Lock()
	closed := s.closed
	_, ok := s.b.logs[topic]
	s.b.mu.Unlock()
	switch {
	case closed:
		return nil, ErrSourceClosed
	case !ok:
		return nil, fmt.Errorf("mem source: committed offsets of %q: %w", topic, kafka.UnknownTopicOrPartition)
	}
	return s.b.Committed(s.group, topic), nil
}

// Claimed returns the partitions of the member's current generation
// (none before it has joined, or once the generation ended).
func (s *MemSource) Claimed() []int {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	m := s.g.members[s]
	if m == nil || m.cur == nil || m.cur.ended || m.cur.finished {
		return nil
	}
	parts := make([]int, 0, len(m.cur.byPart))
	for p := range m.cur.byPart {
		parts = append(parts, p)
	}
	return parts
}

// Next implements Source.
func (s *MemSource) Next(ctx context.Context) (Generation, error) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return nil, ErrSourceClosed
	}
	m, ok := s.g.members[s]
	if !ok {
		b.nextID++
		m = &memMember{id: "member-" + strconv.Itoa(b.nextID)}
		s.g.members[s] = m
	}
	if m.cur != nil && !m.cur.ended {
		return nil, fmt.Errorf("mem source: next generation asked before generation %d was ended", m.cur.id)
	}
	if !m.joining && m.pending == nil {
		m.joining = true
		for _, o := range s.g.members {
			if o.cur != nil {
				o.cur.finish() // a member joins: everyone rebalances
			}
		}
	}
	b.tryForm(s.g, s.topic)
	b.broadcast()
	for m.pending == nil {
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			b.mu.Lock()
			m.joining = false
			return nil, ctx.Err()
		case <-ch:
		}
		b.mu.Lock()
		if s.closed {
			return nil, ErrSourceClosed
		}
		if _, ok := s.g.members[s]; !ok { // expired while waiting: join again
			s.g.members[s] = m
			b.tryForm(s.g, s.topic)
			b.broadcast()
		}
	}
	gen := m.pending
	m.pending, m.joining, m.cur = nil, false, gen
	return gen, nil
}

// Partitions implements Source.
func (s *MemSource) Partitions(_ context.Context, topic string) ([]int, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return nil, ErrSourceClosed
	}
	parts, ok := s.b.logs[topic]
	if !ok {
		return nil, fmt.Errorf("mem source: no topic %q", topic)
	}
	ids := make([]int, len(parts))
	for i := range ids {
		ids[i] = i
	}
	return ids, nil
}

// Positions implements Source.
func (s *MemSource) Positions(_ context.Context) (map[int]Position, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return nil, ErrSourceClosed
	}
	out := map[int]Position{}
	for p, l := range s.b.logs[s.topic] {
		pos := Position{Committed: -1, HighWater: int64(len(l))}
		if c, ok := s.g.committed[s.topic][p]; ok {
			pos.Committed = c
		}
		out[p] = pos
	}
	return out, nil
}

// Read implements Source.
func (s *MemSource) Read(topic string, partition int, offset int64) (PartitionReader, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return nil, ErrSourceClosed
	}
	parts, ok := s.b.logs[topic]
	if !ok || partition < 0 || partition >= len(parts) {
		return nil, fmt.Errorf("mem source: read %s/%d: no such partition", topic, partition)
	}
	switch {
	case offset == kafka.FirstOffset:
		offset = 0
	case offset == kafka.LastOffset:
		offset = int64(len(parts[partition]))
	case offset < 0:
		return nil, fmt.Errorf("mem source: read %s/%d: bad offset %d", topic, partition, offset)
	}
	r := &memReader{s: s, topic: topic, p: partition, next: offset}
	s.readers[r] = struct{}{}
	return r, nil
}

// Close implements Source.
func (s *MemSource) Close() error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for r := range s.readers {
		r.closed = true
	}
	if m, ok := s.g.members[s]; ok {
		if m.cur != nil {
			m.cur.ended = true
		}
		b.leave(s, m, ErrGenerationEnded)
	}
	b.broadcast()
	return nil
}

// memGeneration is a Generation of a MemSource.
type memGeneration struct {
	b        *MemBroker
	s        *MemSource
	m        *memMember
	id       int32
	claims   []Claim
	byPart   map[int]*memClaim
	done     chan struct{}
	finished bool
	ended    bool
	fenced   error // set when the member was dropped: the broker's refusal
}

// finish closes Done; b.mu is held.
func (g *memGeneration) finish() {
	if !g.finished {
		g.finished = true
		close(g.done)
	}
}

func (g *memGeneration) ID() int32             { return g.id }
func (g *memGeneration) Claims() []Claim       { return g.claims }
func (g *memGeneration) Done() <-chan struct{} { return g.done }

func (g *memGeneration) Commit(ctx context.Context, next map[int]int64) error {
	return g.CommitWith(ctx, next, nil)
}

// CommitWith implements SideCommitter, fenced as KafkaSource's: after End,
// or with a partition (input or side) not claimed in the generation,
// nothing is stored.
func (g *memGeneration) CommitWith(ctx context.Context, next map[int]int64, side map[string]map[int]int64) error {
	n := len(next)
	for _, parts := range side {
		n += len(parts)
	}
	if n == 0 {
		return nil
	}
	b := g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if g.ended {
		return fmt.Errorf("%w: generation %d: %w", ErrFenced, g.id, ErrGenerationEnded)
	}
	check := func(topic string, offsets map[int]int64) error {
		for p, off := range offsets {
			if _, ok := g.byPart[p]; !ok {
				return fmt.Errorf("%w: %s partition %d is not claimed in generation %d", ErrFenced, topic, p, g.id)
			}
			if off < 0 {
				return fmt.Errorf("stream: commit %s partition %d: negative offset %d", topic, p, off)
			}
		}
		return nil
	}
	if err := check(g.s.topic, next); err != nil {
		return err
	}
	for topic, parts := range side {
		if topic == "" || topic == g.s.topic {
			return fmt.Errorf("stream: commit: side topic %q is empty or the input topic", topic)
		}
		if err := check(topic, parts); err != nil {
			return err
		}
		for p := range parts {
			if p >= len(b.logs[topic]) {
				return fmt.Errorf("mem source: commit %s/%d: %w", topic, p, kafka.UnknownTopicOrPartition)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if g.fenced != nil {
		return fmt.Errorf("%w: generation %d: %w", ErrFenced, g.id, g.fenced)
	}
	if g.s.g.gen != g.id {
		return fmt.Errorf("%w: generation %d: %w", ErrFenced, g.id, kafka.IllegalGeneration)
	}
	store := func(topic string, offsets map[int]int64) {
		if len(offsets) == 0 {
			return
		}
		c := g.s.g.committed[topic]
		if c == nil {
			c = map[int]int64{}
			g.s.g.committed[topic] = c
		}
		for p, off := range offsets {
			c[p] = off
		}
	}
	store(g.s.topic, next)
	for topic, parts := range side {
		store(topic, parts)
	}
	return nil
}

func (g *memGeneration) End() {
	b := g.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if g.ended {
		return
	}
	g.ended = true
	voluntary := !g.finished
	g.finish()
	// As kafka-go, the member rejoins by itself once it has ended its
	// generation; ending a running generation rebalances the others.
	if m, ok := g.s.g.members[g.s]; ok && m == g.m && !g.s.closed {
		m.joining = true
		if voluntary {
			for _, o := range g.s.g.members {
				if o.cur != nil {
					o.cur.finish()
				}
			}
		}
	}
	b.tryForm(g.s.g, g.s.topic)
	b.broadcast()
}

// memClaim is a Claim of a memGeneration.
type memClaim struct {
	gen   *memGeneration
	p     int
	start int64
	hw    int64
	next  int64 // guarded by b.mu
}

func (c *memClaim) Partition() int   { return c.p }
func (c *memClaim) Start() int64     { return c.start }
func (c *memClaim) HighWater() int64 { return c.hw }

func (c *memClaim) Fetch(ctx context.Context) (Record, error) {
	b := c.gen.b
	b.mu.Lock()
	for {
		if c.gen.finished {
			b.mu.Unlock()
			return Record{}, ErrGenerationEnded
		}
		log := b.logs[c.gen.s.topic][c.p]
		if c.next < int64(len(log)) {
			r := log[c.next]
			c.next++
			b.mu.Unlock()
			return memRecord(r, int64(len(log))), nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-ch:
		}
		b.mu.Lock()
	}
}

// FetchBatch implements BatchFetcher: every record of the log past next,
// up to dst's capacity.
func (c *memClaim) FetchBatch(ctx context.Context, dst []Record) ([]Record, error) {
	r, err := c.Fetch(ctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, r)
	b := c.gen.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.gen.finished {
		return dst, nil // the next Fetch says so
	}
	log := b.logs[c.gen.s.topic][c.p]
	for len(dst) < cap(dst) && c.next < int64(len(log)) {
		dst = append(dst, memRecord(log[c.next], int64(len(log))))
		c.next++
	}
	return dst, nil
}

func memRecord(r Record, hw int64) Record {
	r.Key, r.Value, r.HighWater = slices.Clone(r.Key), slices.Clone(r.Value), hw
	return r
}

// memReader is a PartitionReader of a MemSource.
type memReader struct {
	s      *MemSource
	topic  string
	p      int
	next   int64
	closed bool
}

func (r *memReader) Fetch(ctx context.Context) (Record, error) {
	b := r.s.b
	b.mu.Lock()
	for {
		if r.closed {
			b.mu.Unlock()
			return Record{}, ErrSourceClosed
		}
		log := b.logs[r.topic][r.p]
		if r.next < int64(len(log)) {
			rec := log[r.next]
			r.next++
			b.mu.Unlock()
			return memRecord(rec, int64(len(log))), nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-ch:
		}
		b.mu.Lock()
	}
}

// FetchBatch implements BatchFetcher.
func (r *memReader) FetchBatch(ctx context.Context, dst []Record) ([]Record, error) {
	rec, err := r.Fetch(ctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, rec)
	b := r.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.closed {
		return dst, nil
	}
	log := b.logs[r.topic][r.p]
	for len(dst) < cap(dst) && r.next < int64(len(log)) {
		dst = append(dst, memRecord(log[r.next], int64(len(log))))
		r.next++
	}
	return dst, nil
}

func (r *memReader) Close() error {
	b := r.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if !r.closed {
		r.closed = true
		delete(r.s.readers, r)
		b.broadcast()
	}
	return nil
}
