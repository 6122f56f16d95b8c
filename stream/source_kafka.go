package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// SourceOption configures a KafkaSource.
type SourceOption func(*sourceConfig) error

type sourceConfig struct {
	dialer           *kafka.Dialer
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	startOffset      int64
	maxBytes         int
	maxWait          time.Duration
	writeBytes       int
	log              *slog.Logger
	reg              prometheus.Registerer
}

func defaultSourceConfig() sourceConfig {
	return sourceConfig{
		dialer:           &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true},
		sessionTimeout:   30 * time.Second,
		rebalanceTimeout: 30 * time.Second,
		startOffset:      kafka.FirstOffset,
		maxBytes:         1 << 20,
		maxWait:          500 * time.Millisecond,
		writeBytes:       1_000_000,
		log:              slog.New(slog.DiscardHandler),
	}
}

// WithSourceDialer sets the dialer of every connection of the source (group
// coordinator, fetches, metadata): TLS, SASL, timeouts. Default: plaintext,
// no authentication, 10 s dial timeout. The trap: the dialer's Timeout is
// also the bound of metadata and offset requests.
func WithSourceDialer(d *kafka.Dialer) SourceOption {
	return func(c *sourceConfig) error {
		if d == nil {
			return errors.New("stream: nil source dialer")
		}
		c.dialer = d
		return nil
	}
}

// WithSourceSessionTimeout sets the group session timeout: a member whose
// heartbeats stop for this long is dropped and its partitions reassigned.
// Heartbeats are sent every tenth of it. Default 30 s (as WithSessionTimeout).
// The trap: the broker bounds it (group.min/max.session.timeout.ms).
func WithSourceSessionTimeout(d time.Duration) SourceOption {
	return func(c *sourceConfig) error {
		if d < time.Second || d > 30*time.Minute {
			return fmt.Errorf("stream: source session timeout %v out of range [1s, 30m]", d)
		}
		c.sessionTimeout = d
		return nil
	}
}

// WithSourceRebalanceTimeout sets how long the group waits, once a rebalance
// began, for every member to rejoin, that is for this member to drain its
// in-flight work, commit and call Generation.End. Default 30 s. The trap: a
// member that ends later is dropped from the group and its commits are
// fenced (ErrFenced); a long value delays every rebalance by a member that
// died without leaving.
func WithSourceRebalanceTimeout(d time.Duration) SourceOption {
	return func(c *sourceConfig) error {
		if d < 100*time.Millisecond || d > 30*time.Minute {
			return fmt.Errorf("stream: source rebalance timeout %v out of range [100ms, 30m]", d)
		}
		c.rebalanceTimeout = d
		return nil
	}
}

// WithSourceStartOffset sets where a partition without a committed offset
// starts: kafka.FirstOffset (the default: the whole retained partition) or
// kafka.LastOffset (only new records). Claim.Start reports it resolved.
func WithSourceStartOffset(off int64) SourceOption {
	return func(c *sourceConfig) error {
		if off != kafka.FirstOffset && off != kafka.LastOffset {
			return errors.New("stream: source start offset must be kafka.FirstOffset or kafka.LastOffset")
		}
		c.startOffset = off
		return nil
	}
}

// WithSourceMaxBytes sets the most bytes one fetch of one partition asks
// for. Default 1 MiB (Kafka's max.partition.fetch.bytes). It also bounds the
// read-ahead: a partition being fetched holds at most three fetch responses
// (one being handed out, one queued, one in flight), so about 3×n bytes of
// records; a partition nobody fetches holds none. The trap: a record larger
// than n is still returned, alone, and memory is per claimed partition.
func WithSourceMaxBytes(n int) SourceOption {
	return func(c *sourceConfig) error {
		if n < 1<<10 || n > 256<<20 {
			return fmt.Errorf("stream: source max bytes %d out of range [1 KiB, 256 MiB]", n)
		}
		c.maxBytes = n
		return nil
	}
}

// WithSourceMaxWait sets how long a fetch of an idle partition waits at the
// broker for data. Default 500 ms. Fetch returns as soon as a record comes,
// whatever it is; shorter only means more empty fetches of idle partitions.
func WithSourceMaxWait(d time.Duration) SourceOption {
	return func(c *sourceConfig) error {
		if d < 10*time.Millisecond || d > 30*time.Second {
			return fmt.Errorf("stream: source max wait %v out of range [10ms, 30s]", d)
		}
		c.maxWait = d
		return nil
	}
}

// WithSourceRegisterer registers the source's metrics with reg:
// streamscore_stream_source_generations_total,
// streamscore_stream_source_partitions_claimed,
// streamscore_stream_source_commits_fenced_total,
// streamscore_stream_source_fetch_errors_total{partition},
// streamscore_stream_source_records_skipped_total{partition} (records
// deleted by retention before this member read them),
// streamscore_stream_source_records_written_total{topic} and
// streamscore_stream_source_write_errors_total{topic} (WriteRecords).
// Default: none. The
// trap: two sources on one registry fail to register.
func WithSourceRegisterer(reg prometheus.Registerer) SourceOption {
	return func(c *sourceConfig) error {
		if reg == nil {
			return errors.New("stream: nil source registerer")
		}
		c.reg = reg
		return nil
	}
}

// WithSourceLogger sets the logger of the source (kafka-go's errors, group
// changes). Default: discard.
func WithSourceLogger(l *slog.Logger) SourceOption {
	return func(c *sourceConfig) error {
		if l == nil {
			return errors.New("stream: nil source logger")
		}
		c.log = l
		return nil
	}
}

// KafkaSource is the Source of a Kafka consumer group, on kafka-go's
// consumer-group API (kafka.ConsumerGroup generations). Each claimed
// partition is read by its own connection to the partition's leader
// (kafka.Conn fetches, read-committed) in a goroutine started by the claim's
// first Fetch, one fetch response ahead of the caller; commits go through
// the generation, so the broker fences them.
type KafkaSource struct {
	brokers []string
	group   string
	topic   string
	cfg     sourceConfig
	tr      *kafka.Transport
	cl      *kafka.Client
	met     *sourceMetrics

	writeScratch sync.Pool // *writeScratch, per WriteRecords call

	mu      sync.Mutex
	cg      *kafka.ConsumerGroup // made by the first Next
	gen     *kafkaGeneration     // the last generation handed out
	readers map[*kafkaPartitionReader]struct{}
	closed  bool
}

var _ Source = (*KafkaSource)(nil)

// NewKafkaSource returns a member of consumer group group reading topic on
// brokers. It connects nothing: the first Next joins the group.
func NewKafkaSource(brokers []string, group, topic string, opts ...SourceOption) (*KafkaSource, error) {
	if len(brokers) == 0 {
		return nil, errors.New("stream: source without brokers")
	}
	if group == "" || topic == "" {
		return nil, errors.New("stream: source needs a group and a topic")
	}
	cfg := defaultSourceConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	d := cfg.dialer
	tr := &kafka.Transport{Dial: d.DialFunc, DialTimeout: d.Timeout, ClientID: d.ClientID, TLS: d.TLS, SASL: d.SASLMechanism}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	met, err := newSourceMetrics(cfg.reg)
	if err != nil {
		return nil, err
	}
	return &KafkaSource{
		brokers: slices.Clone(brokers), group: group, topic: topic, cfg: cfg, tr: tr, met: met,
		cl:      &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout, Transport: tr},
		readers: map[*kafkaPartitionReader]struct{}{},
	}, nil
}

// sourceOptions translates the pipeline's configuration into the options
// of its KafkaSource: the same dialer, session timeout, start offset,
// logger and registerer.
func (c *config) sourceOptions() []SourceOption {
	opts := []SourceOption{WithSourceSessionTimeout(c.sessionTimeout), WithSourceStartOffset(c.startOffset)}
	if c.reg != nil {
		opts = append(opts, WithSourceRegisterer(c.reg))
	}
	if c.dialer != nil {
		opts = append(opts, WithSourceDialer(c.dialer))
	}
	if c.log != nil {
		opts = append(opts, WithSourceLogger(c.log))
	}
	return opts
}

func (s *KafkaSource) kafkaLogger(prefix string) kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) {
		if s.isClosed() {
			// The teardown's own errors: a join or leave refused because
			// Close left the group first.
			s.cfg.log.Debug(prefix + fmt.Sprintf(msg, args...))
			return
		}
		s.cfg.log.Warn(prefix + fmt.Sprintf(msg, args...))
	})
}

// Next implements Source.
func (s *KafkaSource) Next(ctx context.Context) (Generation, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrSourceClosed
	}
	if s.gen != nil && !s.gen.isEnded() {
		id := s.gen.kg.ID
		s.mu.Unlock()
		return nil, fmt.Errorf("stream: next generation asked before generation %d was ended", id)
	}
	if s.cg == nil {
		cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
			ID:                s.group,
			Brokers:           s.brokers,
			Dialer:            s.cfg.dialer,
			Topics:            []string{s.topic},
			HeartbeatInterval: s.cfg.sessionTimeout / 10,
			SessionTimeout:    s.cfg.sessionTimeout,
			RebalanceTimeout:  s.cfg.rebalanceTimeout,
			JoinGroupBackoff:  time.Second,
			StartOffset:       s.cfg.startOffset,
			Timeout:           s.cl.Timeout,
			ErrorLogger:       s.kafkaLogger("kafka source group: "),
		})
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("stream: make consumer group: %w", err)
		}
		s.cg = cg
	}
	cg := s.cg
	s.mu.Unlock()

	kg, err := cg.Next(ctx)
	if err != nil {
		switch {
		case errors.Is(err, kafka.ErrGroupClosed):
			return nil, ErrSourceClosed
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("stream: join group %q: %w", s.group, err)
	}
	g := s.newGeneration(kg)
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.gen = g
	}
	s.mu.Unlock()
	if closed {
		g.End()
		return nil, ErrSourceClosed
	}
	// A failed ListOffsets (a broker hiccup, a credential being rotated)
	// is retried within the generation: ending it would make the whole
	// group rebalance, and a member that cannot leave cleanly would hold
	// the next join back for a session timeout.
	backoff := 100 * time.Millisecond
	for {
		err := g.resolve(ctx)
		if err == nil {
			break
		}
		s.cfg.log.Warn("kafka source: resolve the claimed partitions' offsets, retrying", "group", s.group, "generation", kg.ID, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			g.End()
			return nil, ctx.Err()
		case <-g.done:
			g.End()
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	s.met.generations.Inc()
	s.met.claimed.Set(float64(len(g.claims)))
	s.cfg.log.Info("kafka source: generation", "group", s.group, "generation", kg.ID, "partitions", g.partitions())
	return g, nil
}

// Partitions implements Source.
func (s *KafkaSource) Partitions(ctx context.Context, topic string) ([]int, error) {
	if s.isClosed() {
		return nil, ErrSourceClosed
	}
	md, err := s.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("stream: metadata of %q: %w", topic, err)
	}
	if len(md.Topics) != 1 {
		return nil, fmt.Errorf("stream: metadata of %q: %d topics in the answer", topic, len(md.Topics))
	}
	if err := md.Topics[0].Error; err != nil {
		return nil, fmt.Errorf("stream: metadata of %q: %w", topic, err)
	}
	ids := make([]int, 0, len(md.Topics[0].Partitions))
	for _, p := range md.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids, nil
}

// Positions implements Source: one OffsetFetch and one ListOffsets
// request.
func (s *KafkaSource) Positions(ctx context.Context) (map[int]Position, error) {
	if s.isClosed() {
		return nil, ErrSourceClosed
	}
	parts, err := s.Partitions(ctx, s.topic)
	if err != nil {
		return nil, err
	}
	committed, err := s.committed(ctx, s.topic, parts)
	if err != nil {
		return nil, err
	}
	out := make(map[int]Position, len(parts))
	for _, p := range parts {
		out[p] = Position{Committed: -1}
		if off, ok := committed[p]; ok {
			out[p] = Position{Committed: off}
		}
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	lo, err := s.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{s.topic: reqs}, IsolationLevel: kafka.ReadCommitted,
	})
	if err != nil {
		return nil, fmt.Errorf("stream: list offsets of %q: %w", s.topic, err)
	}
	for _, po := range lo.Topics[s.topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("stream: list offsets of %s/%d: %w", s.topic, po.Partition, po.Error)
		}
		if pos, ok := out[po.Partition]; ok {
			pos.First, pos.HighWater = po.FirstOffset, po.LastOffset
			out[po.Partition] = pos
		}
	}
	return out, nil
}

// Read implements Source.
func (s *KafkaSource) Read(topic string, partition int, offset int64) (PartitionReader, error) {
	if topic == "" || partition < 0 {
		return nil, fmt.Errorf("stream: read topic %q partition %d: bad topic or partition", topic, partition)
	}
	if offset < 0 && offset != kafka.FirstOffset && offset != kafka.LastOffset {
		return nil, fmt.Errorf("stream: read %s/%d: bad offset %d", topic, partition, offset)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSourceClosed
	}
	pr := &kafkaPartitionReader{s: s, f: s.newFetcher(topic, partition, offset, ErrSourceClosed)}
	s.readers[pr] = struct{}{}
	return pr, nil
}

// Close implements Source.
//
// The group is closed before the generation is ended. Ended first (as a
// member between generations does), kafka-go would rejoin at once: the
// closing member takes part in a rebalance, its Close waits in that join
// for every other member (up to the rebalance timeout), and a join or sync
// refused with RebalanceInProgress while the group closes makes kafka-go
// return without leaving, so that the others wait for the closed member
// until its rebalance or session timeout (CI: a member stopped in a
// rolling change held the group's next generation for 40 s). Closed
// first, kafka-go sees the close while it waits on the live generation,
// and leaves once the generation's goroutine returns. A member whose
// generation already ended (at the group, or by End: kafka-go rejoins
// without looking at the close) leaves by a LeaveGroup of its own first,
// so that kafka-go's join fails at once.
func (s *KafkaSource) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	g, cg := s.gen, s.cg
	readers := make([]*kafkaPartitionReader, 0, len(s.readers))
	for r := range s.readers {
		readers = append(readers, r)
	}
	s.mu.Unlock()
	var cgDone chan error
	if cg != nil {
		cgDone = make(chan error, 1)
		go func() { cgDone <- cg.Close() }()
		// Decided once, before the close: kafka-go ends the generation
		// itself once it sees the close, which would read as "ended" below.
		switch {
		case g == nil:
		case !g.isEnded() && !g.endedAtGroup():
			// kafka-go waits on the live generation: once it sees the
			// close, it ends it and leaves.
			awaitGroupClosed(cg)
		default:
			// kafka-go rejoins, or is about to (the generation ended at
			// the group, or between generations): it does not look at the
			// close first. Leaving now makes that join fail at once
			// (unknown member), and the others need not wait for it.
			s.leave(g.kg.MemberID)
		}
	}
	if g != nil {
		g.End() // kafka-go's group waits for it before leaving
	}
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Go(func() { r.Close() })
	}
	wg.Wait()
	var err error
	if cg != nil {
		err = <-cgDone
	}
	s.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("stream: close consumer group: %w", err)
	}
	return nil
}

// endedAtGroup reports whether the group ended g (a rebalance, the session
// lost) — kafka-go then rejoins as soon as g's goroutine returns.
func (g *kafkaGeneration) endedAtGroup() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// awaitGroupClosed returns once cg's Close has closed it (its Next says
// so), or after closeWait. Next hands out nothing else meanwhile but an
// error or a generation formed just then, which kafka-go ends and leaves
// itself once closed.
func awaitGroupClosed(cg *kafka.ConsumerGroup) {
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	for {
		if _, err := cg.Next(ctx); errors.Is(err, kafka.ErrGroupClosed) || ctx.Err() != nil {
			return
		}
	}
}

// closeWait bounds each wait of Close on kafka-go.
const closeWait = 5 * time.Second

// leave removes member from the group at the broker, whether or not
// kafka-go left already (then the broker answers that it does not know the
// member: nothing to do). Best effort: a failure is logged, and the broker
// drops the member after its session timeout.
func (s *KafkaSource) leave(member string) {
	if member == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	res, err := s.cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: s.group, Members: []kafka.LeaveGroupRequestMember{{ID: member}}})
	if err == nil {
		err = res.Error
		for _, m := range res.Members {
			if err == nil {
				err = m.Error
			}
		}
	}
	if err != nil && !errors.Is(err, kafka.UnknownMemberId) {
		s.cfg.log.Warn("kafka source: leave the group; the broker drops this member after its session timeout", "group", s.group, "member", member, "err", err)
	}
}

func (s *KafkaSource) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// kafkaGeneration is a Generation on a kafka-go Generation. A holder
// function started with kafka-go's Generation.Start keeps the group from
// rejoining until End releases it; when the generation ends at the group
// (kafka-go closes its context), the holder stops the claims' fetching.
type kafkaGeneration struct {
	s      *KafkaSource
	kg     *kafka.Generation
	done   <-chan struct{} // kafka-go's: closed when the generation ends
	claims []Claim
	byPart map[int]*kafkaClaim

	release chan struct{} // closed by End: lets the holder return
	holder  sync.WaitGroup

	mu      sync.RWMutex // held shared by Commit, exclusively by End
	ended   bool
	endOnce sync.Once
}

func (s *KafkaSource) newGeneration(kg *kafka.Generation) *kafkaGeneration {
	g := &kafkaGeneration{s: s, kg: kg, release: make(chan struct{}), byPart: map[int]*kafkaClaim{}}
	for _, a := range kg.Assignments[s.topic] {
		f := s.newFetcher(s.topic, a.ID, a.Offset, ErrGenerationEnded)
		f.counted = true
		g.byPart[a.ID] = &kafkaClaim{g: g, p: a.ID, start: a.Offset, f: f}
	}
	ids := make([]int, 0, len(g.byPart))
	for id := range g.byPart {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		g.claims = append(g.claims, g.byPart[id])
	}
	doneCh := make(chan (<-chan struct{}), 1)
	g.holder.Add(1)
	kg.Start(func(ctx context.Context) {
		defer g.holder.Done()
		doneCh <- ctx.Done()
		select {
		case <-ctx.Done():
			g.stopFetching() // Fetch returns ErrGenerationEnded from now on
			<-g.release
		case <-g.release:
		}
	})
	g.done = <-doneCh
	return g
}

// stopFetching stops every claim's fetching and joins its goroutine.
func (g *kafkaGeneration) stopFetching() {
	var wg sync.WaitGroup
	for _, c := range g.byPart {
		wg.Go(c.f.close)
	}
	wg.Wait()
}

// resolve turns the claims' start policies (FirstOffset, LastOffset) into
// absolute offsets and reads every claimed partition's high-water mark, in
// one ListOffsets request. It runs before the generation is handed out.
func (g *kafkaGeneration) resolve(ctx context.Context) error {
	if len(g.claims) == 0 {
		return nil
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(g.claims))
	for _, c := range g.claims {
		p := c.Partition()
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := g.s.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{g.s.topic: reqs}, IsolationLevel: kafka.ReadCommitted,
	})
	if err != nil {
		return fmt.Errorf("stream: list offsets of %q: %w", g.s.topic, err)
	}
	seen := 0
	for _, po := range res.Topics[g.s.topic] {
		c, ok := g.byPart[po.Partition]
		if !ok {
			continue
		}
		if po.Error != nil {
			return fmt.Errorf("stream: list offsets of %s/%d: %w", g.s.topic, po.Partition, po.Error)
		}
		seen++
		c.hw = po.LastOffset
		switch c.start {
		case kafka.FirstOffset:
			c.start = po.FirstOffset
		case kafka.LastOffset:
			c.start = po.LastOffset
		}
		c.f.start = c.start
	}
	if seen != len(g.claims) {
		return fmt.Errorf("stream: list offsets of %q: %d of %d partitions answered", g.s.topic, seen, len(g.claims))
	}
	return nil
}

func (g *kafkaGeneration) partitions() []int {
	ids := make([]int, len(g.claims))
	for i, c := range g.claims {
		ids[i] = c.Partition()
	}
	return ids
}

func (g *kafkaGeneration) isEnded() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.ended
}

// ID implements Generation.
func (g *kafkaGeneration) ID() int32 { return g.kg.ID }

// Claims implements Generation.
func (g *kafkaGeneration) Claims() []Claim { return g.claims }

// Done implements Generation.
func (g *kafkaGeneration) Done() <-chan struct{} { return g.done }

// Commit implements Generation: CommitWith without side offsets.
func (g *kafkaGeneration) Commit(ctx context.Context, next map[int]int64) error {
	return g.CommitWith(ctx, next, nil)
}

// CommitWith implements SideCommitter: next (the input topic) and side
// (topic -> partition -> offset) in one OffsetCommit request, as this
// generation, fenced as Commit is. Every partition id of side must be
// claimed in the generation (as an input partition: side topics are
// co-partitioned with the input), or the whole commit is refused with
// ErrFenced without contacting the broker; the input topic, or an empty
// topic name, as a side topic is an error. The broker stores the request's
// offsets together (one append to its offsets log); a side partition the
// topic does not have is refused by the broker
// (kafka.UnknownTopicOrPartition, returned wrapped, not ErrFenced) while
// the request's other offsets are stored. Empty next and side: a no-op.
func (g *kafkaGeneration) CommitWith(ctx context.Context, next map[int]int64, side map[string]map[int]int64) error {
	n := len(next)
	for _, parts := range side {
		n += len(parts)
	}
	if n == 0 {
		return nil
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.ended {
		g.s.met.fenced.Inc()
		return fmt.Errorf("%w: generation %d: %w", ErrFenced, g.kg.ID, ErrGenerationEnded)
	}
	if err := g.checkClaimed(g.s.topic, next); err != nil {
		return err
	}
	for topic, parts := range side {
		if topic == "" || topic == g.s.topic {
			return fmt.Errorf("stream: commit: side topic %q is empty or the input topic", topic)
		}
		if err := g.checkClaimed(topic, parts); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	offsets := make(map[string]map[int]int64, 1+len(side))
	if len(next) > 0 {
		offsets[g.s.topic] = next
	}
	for topic, parts := range side {
		if len(parts) > 0 {
			offsets[topic] = parts
		}
	}
	err := g.kg.CommitOffsets(offsets)
	var ke kafka.Error
	if err != nil && !errors.As(err, &ke) {
		// kafka-go commits through the generation's coordinator
		// connection, which a broker restart or a coordinator move closes
		// for good ("use of closed network connection" until the
		// generation ends): commit again on a fresh connection to the
		// coordinator, as the same member and generation. The broker
		// accepts it if the generation still stands, fences it otherwise.
		err = g.commitDirect(ctx, offsets)
	}
	if err != nil {
		if fenceCode(err) {
			g.s.met.fenced.Inc()
			return fmt.Errorf("%w: generation %d: %w", ErrFenced, g.kg.ID, err)
		}
		return fmt.Errorf("stream: commit offsets of generation %d: %w", g.kg.ID, err)
	}
	return nil
}

// checkClaimed refuses (ErrFenced) a partition of offsets that is not
// claimed in g, and a negative offset (a plain error).
func (g *kafkaGeneration) checkClaimed(topic string, offsets map[int]int64) error {
	for p, off := range offsets {
		if _, ok := g.byPart[p]; !ok {
			g.s.met.fenced.Inc()
			return fmt.Errorf("%w: %s partition %d is not claimed in generation %d", ErrFenced, topic, p, g.kg.ID)
		}
		if off < 0 {
			return fmt.Errorf("stream: commit %s partition %d: negative offset %d", topic, p, off)
		}
	}
	return nil
}

// commitDirect commits offsets as g's member and generation through the
// source's client (a connection of its own to the group's coordinator).
func (g *kafkaGeneration) commitDirect(ctx context.Context, offsets map[string]map[int]int64) error {
	topics := make(map[string][]kafka.OffsetCommit, len(offsets))
	for topic, parts := range offsets {
		oc := make([]kafka.OffsetCommit, 0, len(parts))
		for p, off := range parts {
			oc = append(oc, kafka.OffsetCommit{Partition: p, Offset: off})
		}
		topics[topic] = oc
	}
	req := &kafka.OffsetCommitRequest{GroupID: g.kg.GroupID, GenerationID: int(g.kg.ID),
		MemberID: g.kg.MemberID, Topics: topics}
	res, err := g.s.cl.OffsetCommit(ctx, req)
	if tr, ok := g.s.cl.Transport.(*kafka.Transport); err != nil && ok {
		// The transport's pooled connections outlive a broker restart and
		// fail (unexpected EOF) for about a second after it: drop them and
		// dial again.
		tr.CloseIdleConnections()
		res, err = g.s.cl.OffsetCommit(ctx, req)
	}
	if err != nil {
		return fmt.Errorf("commit on a new connection: %w", err)
	}
	for topic, prs := range res.Topics {
		for _, pr := range prs {
			if pr.Error != nil {
				return fmt.Errorf("commit %s partition %d on a new connection: %w", topic, pr.Partition, pr.Error)
			}
		}
	}
	return nil
}

// End implements Generation.
func (g *kafkaGeneration) End() {
	g.endOnce.Do(func() {
		g.mu.Lock() // waits for commits in flight
		g.ended = true
		g.mu.Unlock()
		g.s.met.claimed.Set(0)
		g.stopFetching()
		close(g.release)
		g.holder.Wait()
		<-g.done // kafka-go closes it as the holder returns
	})
}

// kafkaClaim is a Claim of a kafkaGeneration.
type kafkaClaim struct {
	g     *kafkaGeneration
	p     int
	start int64
	hw    int64
	f     *partitionFetcher
}

// Partition implements Claim.
func (c *kafkaClaim) Partition() int { return c.p }

// Start implements Claim.
func (c *kafkaClaim) Start() int64 { return c.start }

// HighWater implements Claim.
func (c *kafkaClaim) HighWater() int64 { return c.hw }

// Fetch implements Claim.
func (c *kafkaClaim) Fetch(ctx context.Context) (Record, error) {
	return c.f.fetch(ctx, c.g.done)
}

// FetchBatch implements BatchFetcher: the rest of the fetch response in
// hand.
func (c *kafkaClaim) FetchBatch(ctx context.Context, dst []Record) ([]Record, error) {
	return c.f.fetchBatch(ctx, c.g.done, dst)
}

// kafkaPartitionReader is a PartitionReader of a KafkaSource.
type kafkaPartitionReader struct {
	s    *KafkaSource
	f    *partitionFetcher
	once sync.Once
}

// Fetch implements PartitionReader.
func (pr *kafkaPartitionReader) Fetch(ctx context.Context) (Record, error) {
	return pr.f.fetch(ctx, nil)
}

// FetchBatch implements BatchFetcher.
func (pr *kafkaPartitionReader) FetchBatch(ctx context.Context, dst []Record) ([]Record, error) {
	return pr.f.fetchBatch(ctx, nil, dst)
}

// Close implements PartitionReader.
func (pr *kafkaPartitionReader) Close() error {
	pr.once.Do(func() {
		pr.f.close()
		pr.s.mu.Lock()
		delete(pr.s.readers, pr)
		pr.s.mu.Unlock()
	})
	return nil
}

// sourceMetrics are a KafkaSource's metrics, registered if a registerer was
// given.
type sourceMetrics struct {
	generations prometheus.Counter
	claimed     prometheus.Gauge
	fenced      prometheus.Counter
	fetchErrors *prometheus.CounterVec // partition
	skipped     *prometheus.CounterVec // partition
	written     *prometheus.CounterVec // topic
	writeErrors *prometheus.CounterVec // topic
}

func newSourceMetrics(reg prometheus.Registerer) (*sourceMetrics, error) {
	m := &sourceMetrics{
		generations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_source_generations_total",
			Help: "Consumer-group generations this member joined (each one follows a rebalance).",
		}),
		claimed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_stream_source_partitions_claimed",
			Help: "Partitions of the input topic claimed in the current generation (0 between generations).",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamscore_stream_source_commits_fenced_total",
			Help: "Commits refused because the member's generation had ended or did not claim the partition; nothing of them was stored.",
		}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_source_fetch_errors_total",
			Help: "Errors fetching a partition of the input topic (the source reconnects and goes on at the same offset).",
		}, []string{"partition"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_source_records_skipped_total",
			Help: "Records of a partition deleted by retention before this member read them: a gap in the input.",
		}, []string{"partition"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_source_records_written_total",
			Help: "Records WriteRecords stored (acks=all) in a topic (the repartition and enriched topics).",
		}, []string{"topic"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_stream_source_write_errors_total",
			Help: "Produce requests of WriteRecords that failed, retried ones included.",
		}, []string{"topic"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.generations, m.claimed, m.fenced, m.fetchErrors, m.skipped, m.written, m.writeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("stream: register source metrics: %w", err)
		}
	}
	return m, nil
}
