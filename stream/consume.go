package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream/internal/commit"
)

// partitionCredit bounds the messages of one partition handed to the
// feature stage and not yet applied (queued, or waiting in the aligner for
// the other partitions): a partition that runs ahead in event time stops
// fetching, the others go on.
const partitionCredit = 4096

// revokeTimeout bounds how long a member that lost its partitions in a
// rebalance waits for its batches in flight before it commits what was
// acknowledged and lets the group go on (kafka-go's rebalance timeout is
// 30 s; past it the broker drops the member).
const revokeTimeout = 15 * time.Second

// maxHandOff bounds the messages a fetcher hands to the feature stage in
// one channel operation (handOff): a slice of what its claim has fetched
// already, so that the fetcher, the stage's input channel and the stage's
// select cost one operation per slice instead of one per message.
// Measured against one message per hand-off (BenchmarkFloor, 6 alternating
// rounds at load 5-6, medians): the engine's own work 7.38 -> 6.53 µs per
// event (per-round ratio 0.875), runtime.selectgo 0.65 -> 0.22 µs, the
// fetchers 1.27 -> 0.92, the stage 2.87 -> 2.57 (ratio 0.92).
const maxHandOff = 64

// fetched is a message taken by the feature stage (stage.add), tagged with
// the generation (epoch) it was fetched in: the stage drops messages of a
// generation that ended.
type fetched struct {
	pd    *pending // decoded by the fetching goroutine (stage.decode)
	epoch uint64
	// replica: read outside the claim (replicaRead): not scored.
	replica bool
}

// handoff is a slice of messages of one partition, in offset order, on its
// way from the partition's fetcher to the feature stage, each decoded and
// holding a credit of the partition. Pooled: the stage gives it back once
// it has taken every message (stage.take).
type handoff struct {
	pds     []*pending
	epoch   uint64
	replica bool
}

var handoffPool = sync.Pool{New: func() any { return &handoff{pds: make([]*pending, 0, maxHandOff)} }}

// fetchBatch fetches from r (a Claim or a PartitionReader): everything
// already read ahead, appended to dst up to its capacity, when r is a
// BatchFetcher; else one record.
func fetchBatch(ctx context.Context, r interface {
	Fetch(context.Context) (Record, error)
}, dst []Record) ([]Record, error) {
	if b, ok := r.(BatchFetcher); ok {
		return b.FetchBatch(ctx, dst)
	}
	rec, err := r.Fetch(ctx)
	if err != nil {
		return dst, err
	}
	return append(dst, rec), nil
}

// consume runs the member's generations until ctx is done or the pipeline
// is stopped hard: for each, it hands the claims to the stage, fetches
// every claimed partition in its own goroutine until the generation ends,
// and on a rebalance drains and commits what was in flight (fenced by the
// generation) before it lets the group go on. When ctx ends it returns
// with the last generation still open in p.gen, for the final drain and
// commit. It returns an error only when the source refuses for good.
func (p *Pipeline) consume(ctx context.Context, src Source, st *stage) error {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.hard, cancel)
	defer stop()
	if p.cfg.replicas {
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() { p.positionsLoop(fctx, src, st) })
	}
	backoff := 100 * time.Millisecond
	for {
		gen, err := src.Next(fctx)
		if err != nil {
			if fctx.Err() != nil {
				return nil
			}
			if rebalancing(err) {
				// Another member joined or left while this one rejoined:
				// part of every rebalance, not an outage.
				p.log.Info("consumer group rebalancing, joining again", "err", err)
				select {
				case <-fctx.Done():
					return nil
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			if p.cfg.connObserve != nil {
				p.cfg.connObserve("kafka reader", err)
			}
			if errors.Is(err, ErrSourceClosed) {
				return fmt.Errorf("stream: join group: %w", err)
			}
			// Refusals (authentication, authorization) are retried too: a
			// rotated credential or an ACL fixed by an operator brings the
			// member back; meanwhile /readyz says why it is down.
			level := slog.LevelWarn
			if IsFatalSourceError(err) {
				level = slog.LevelError
			}
			p.log.Log(context.Background(), level, "join consumer group failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-fctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if p.cfg.connObserve != nil {
			p.cfg.connObserve("kafka reader", nil)
		}
		p.runGeneration(fctx, src, gen, st)
		if fctx.Err() != nil {
			// Stopping: Run drains and commits through gen; the source's Close ends it.
			return nil
		}
		p.revoke(gen, st)
		gen.End()
	}
}

// runGeneration hands gen's claims to the stage and fetches them until the
// generation ends or ctx is done.
func (p *Pipeline) runGeneration(ctx context.Context, src Source, gen Generation, st *stage) {
	claims := gen.Claims()
	parts := make([]int, len(claims))
	for i, c := range claims {
		parts[i] = c.Partition()
	}
	p.log.Info("consumer group generation", "generation", gen.ID(), "partitions", fmt.Sprint(parts))
	var epoch uint64
	credits := map[int]*credit{}
	for _, c := range claims {
		credits[c.Partition()] = newCredit(partitionCredit)
	}
	// The partitions other members claim are read as shared-state
	// replicas (WithSharedReplicas).
	var replicas []int
	var pos map[int]Position
	if p.cfg.replicas {
		if pos = p.positions(ctx, src); pos != nil {
			for part := range pos {
				if _, ok := credits[part]; !ok {
					replicas = append(replicas, part)
					credits[part] = newCredit(partitionCredit)
				}
			}
			slices.Sort(replicas)
		}
	}
	// Partitions whose state this member does not hold are restored from
	// their checkpoints before anything is fetched.
	// A restore asks a failing store again until it answers, the member
	// stops or the generation ends.
	rctx, rcancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-gen.Done():
			rcancel()
		case <-rctx.Done():
		}
	}()
	p.restoreClaims(rctx, st, claims)
	rcancel()
	var reads []replicaRead
	if !st.do(func() { epoch, reads = st.assign(claims, replicas, pos, credits) }) {
		return
	}
	prefix := map[int]replicaRead{}
	for _, c := range claims {
		// The group's committed offset is where each claim starts: a
		// partition that delivers nothing this generation (nothing new, or
		// all of it still waiting) is acked up to there, and holds back no
		// snapshot's commit cap of the others (capToSnapshot).
		if c.Start() >= 0 {
			p.tracker.MarkCommitted(commit.Commit{Partition: c.Partition(), Next: c.Start()})
		}
	}
	if p.router != nil {
		p.router.claim(claimStarts(claims))
	}
	if p.joins != nil {
		// The E readers of the generation's claims (the previous ones
		// stop: the revoke dropped what waited for them).
		p.joins.begin(ctx, src, claims)
	}
	p.gen.Store(&genRef{gen: gen, claimed: parts})

	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range reads {
		if r.until >= 0 {
			prefix[r.part] = r
			continue
		}
		wg.Go(func() { p.fetchReplica(gctx, src, r, st, epoch, credits[r.part]) })
	}
	for _, c := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, ok := prefix[c.Partition()]; ok {
				// The shared half first catches up to the committed offset.
				if !p.fetchReplica(gctx, src, r, st, epoch, credits[c.Partition()]) {
					return
				}
			}
			p.fetchClaim(gctx, c, st, epoch, credits[c.Partition()])
		}()
	}
	select {
	case <-gen.Done():
	case <-gctx.Done():
	}
	cancel()
	wg.Wait()
}

// fetchClaim fetches claim c and hands its messages to the stage until ctx
// is done or the generation ends. Errors are retried with a backoff (a
// refusal too: fixed credentials bring it back), and reported to the
// reader observer (/readyz).
func (p *Pipeline) fetchClaim(ctx context.Context, c Claim, st *stage, epoch uint64, cr *credit) {
	failing := false
	b := firstBackoff
	recovered := func() {
		b = firstBackoff
		if failing {
			failing = false
			if p.cfg.connObserve != nil {
				p.cfg.connObserve("kafka reader", nil)
			}
		}
	}
	buf := make([]Record, 0, st.handMax)
	for {
		recs, err := fetchBatch(ctx, c, buf[:0])
		if errors.Is(err, ErrFetchResumed) {
			recovered()
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrGenerationEnded) || errors.Is(err, ErrSourceClosed) {
				return
			}
			if p.cfg.connObserve != nil {
				p.cfg.connObserve("kafka reader", err)
			}
			failing = true
			if !p.retry(ctx, &b, "fetch failed, retrying", err, "partition", c.Partition()) {
				return
			}
			continue
		}
		recovered()
		for len(recs) > 0 {
			n, err := p.handOff(ctx, st, recs, epoch, false, cr)
			if err != nil {
				return // stopped (tracked and never acked: no commit passes it)
			}
			recs = recs[n:]
		}
	}
}

// backoff paces a fetch loop's retries: 100 ms, doubling up to 5 s, back to
// 100 ms after a success.
type backoff time.Duration

const firstBackoff = backoff(100 * time.Millisecond)

// retry logs a failed fetch (at error level when the source refused it:
// retried until fixed, /readyz says why) and waits out the backoff, which
// it then doubles; false if ctx ended meanwhile.
func (p *Pipeline) retry(ctx context.Context, b *backoff, msg string, err error, attrs ...any) bool {
	level := slog.LevelWarn
	if IsFatalSourceError(err) {
		level = slog.LevelError
	}
	p.log.Log(context.Background(), level, msg, append(attrs, "err", err, "backoff", time.Duration(*b))...)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(*b)):
	}
	*b = min(*b*2, backoff(5*time.Second))
	return true
}

// handOff hands the first n of recs (records of one partition in offset
// order, at most st.handMax), decoded, to the stage in one slice, n as
// many as the partition has credits free (at least 1: it waits for one).
// It prepares the decoder for each (a schema lookup may wait; the slice
// is cut before a message whose preparation may wait, which then leads
// the next: preparedNow), takes the credits, tracks a claimed record's offset for the commits, counts the
// slice as in flight (st.inFlight: the stage applies no wait bound while a
// message is being decoded or queued), decodes and, in the repartition
// mode, routes each message, and sends. It fails only when ctx ends (or
// the decoder's preparation does, a schema registry down while stopping).
func (p *Pipeline) handOff(ctx context.Context, st *stage, recs []Record, epoch uint64, replica bool, cr *credit) (int, error) {
	for i := range recs {
		if i > 0 && !preparedNow(p.cfg.eventDec, recs[i].Value) {
			// Its preparation may wait (a schema lookup): the ones
			// before it go now, counted in flight, and it leads the
			// next slice (a slice's messages count only once taken).
			recs = recs[:i]
			break
		}
		if err := prepare(ctx, p.cfg.eventDec, recs[i].Value); err != nil {
			return 0, err
		}
	}
	n, err := cr.take(ctx, len(recs))
	if err != nil {
		return 0, err
	}
	recs = recs[:n]
	if !replica {
		for i := range recs {
			if p.tracker.Track(recs[i].Partition, recs[i].Offset) {
				p.met.resets.Inc()
				p.log.Info("partition re-delivered from an earlier offset", "partition", recs[i].Partition, "offset", recs[i].Offset)
			}
		}
	}
	// Counted from before the first is decoded until the stage has taken
	// the last (stage.take).
	st.inFlight.Add(int64(n))
	h := handoffPool.Get().(*handoff)
	h.epoch, h.replica = epoch, replica
	drop := func() {
		st.inFlight.Add(-int64(n))
		for _, pd := range h.pds {
			st.recycle(pd)
		}
		h.reset()
	}
	now := st.now() // one clock reading for the slice (stage.decode)
	for i := range recs {
		rec := &recs[i]
		pd := st.decode(p.topic, rec, now)
		h.pds = append(h.pds, pd)
		if p.router != nil && !replica {
			if err := p.router.route(ctx, &pd.m, pd); err != nil {
				drop()
				return 0, err
			}
		}
	}
	select {
	case st.in <- h:
		return n, nil
	case <-ctx.Done():
		drop()
		return 0, ctx.Err()
	}
}

// reset empties h and gives it back to the pool.
func (h *handoff) reset() {
	clear(h.pds)
	h.pds = h.pds[:0]
	handoffPool.Put(h)
}

// revoke ends the member's work on gen's partitions after a rebalance:
// the stage drops what waits in the aligner (fetched, never applied: the
// next owner reads it again), hands its open batches to the workers, and
// the batches in flight get revokeTimeout to be acknowledged; then the
// acknowledged offsets are committed as gen (fenced: a member that took
// too long commits nothing) and the tracker forgets the partitions. The
// state of the partitions stays in memory: if one comes back, the events
// another member processed in between are a gap, counted at its first
// message.
func (p *Pipeline) revoke(gen Generation, st *stage) {
	t0 := time.Now()
	dropped := 0
	if p.router != nil {
		// Its fetchers have stopped: what the router knows of its sources
		// (caught up) is stale from now on, so it stops reporting them —
		// the terminal stages hold them as lagging until their next owner
		// routes them (terminalConfig.deadAfter).
		p.router.claim(nil)
	}
	if !st.do(func() { dropped = st.revoke() }) {
		return
	}
	deadline := time.NewTimer(revokeTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	abandoned := false
wait:
	for !st.idle() {
		select {
		case <-tick.C:
		case <-deadline.C:
			abandoned = true
			break wait
		case <-p.hard.Done():
			return
		}
	}
	if !abandoned {
		// The drained state goes to the next owner, and its offsets are
		// committed: it continues exactly where this member stopped. The
		// commit first catches up with the last checkpoint (a checkpoint
		// does not overwrite the one the commit matches: keepsCommitSlot).
		p.commitOnce()
		p.checkpointNow(p.hard, st, true, "revoked")
	}
	ok := p.commitOnce()
	p.gen.Store(nil)
	for _, part := range p.tracker.Partitions() {
		p.tracker.Forget(part)
	}
	p.log.Info("partitions revoked", "generation", gen.ID(), "dropped_unapplied", dropped,
		"batches_abandoned", abandoned, "committed", ok, "took", time.Since(t0).Round(time.Millisecond))
}

// genRef is the generation the committer commits through, and the
// partitions it claims.
type genRef struct {
	gen     Generation
	claimed []int
}

// rebalancing reports whether a join error is the group rebalancing (a
// member joined or left meanwhile, or this one was dropped and joins as a
// new member): the next join goes on.
func rebalancing(err error) bool {
	return errors.Is(err, kafka.RebalanceInProgress) || errors.Is(err, kafka.UnknownMemberId)
}
