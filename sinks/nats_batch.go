package sinks

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/streamscore/streamscore/sinks/output"
)

// NATSBatch is how the JetStream messages of one WriteBatch are
// acknowledged: see WithNATSBatch.
type NATSBatch int

const (
	// NATSBatchNone: async publish, one PubAck per message, a sliding window
	// of WithNATSMaxInFlight publishes awaiting theirs.
	NATSBatchNone NATSBatch = iota
	// NATSBatchFast: nats-server's fast batch publish (2.14+, stream option
	// allow_batched): messages are stored as they arrive, the server sends a
	// flow acknowledgement every 100 and one PubAck at the commit, which
	// says every message of the batch up to it is stored (gaps fail the
	// batch). The default.
	NATSBatchFast
	// NATSBatchAtomic: nats-server's atomic batch publish (2.12+, stream
	// option allow_atomic): the batch is staged and stored all or nothing
	// at its commit, one PubAck; at most 1000 messages per batch (larger
	// groups are split into batches of that size).
	NATSBatchAtomic
)

// ParseNATSBatch parses "none", "fast" or "atomic".
func ParseNATSBatch(s string) (NATSBatch, error) {
	switch s {
	case "none":
		return NATSBatchNone, nil
	case "fast":
		return NATSBatchFast, nil
	case "atomic":
		return NATSBatchAtomic, nil
	}
	return 0, fmt.Errorf("sinks: nats batch %q: want none, fast or atomic", s)
}

func (b NATSBatch) String() string {
	switch b {
	case NATSBatchNone:
		return "none"
	case NATSBatchFast:
		return "fast"
	case NATSBatchAtomic:
		return "atomic"
	}
	return fmt.Sprintf("NATSBatch(%d)", int(b))
}

// maxAtomicBatch is nats-server's default limit on the messages of one
// atomic batch (jetstream max_batch_size).
const maxAtomicBatch = 1000

// WithNATSBatch sets how the JetStream messages of one WriteBatch are
// acknowledged (default NATSBatchFast). With NATSBatchFast or
// NATSBatchAtomic, the messages of one WriteBatch bound
// for one stream go out as one batch with one acknowledgement, when the
// stream allows it (NewNATS reads the stream's configuration once: allow_batched
// for fast, allow_atomic for atomic; Batch tells what each kind got); a stream
// that does not allow it gets NATSBatchNone. Nats-Msg-Id is kept on every
// message, so the stream still drops replays.
//
// The trap: a batch that fails in any way (an atomic batch holding a
// message the stream already has, which the server refuses whole; a gap; a
// timeout; a stream changed since NewNATS) is republished message by message
// with NATSBatchNone, which drops what the batch did store by Msg-Id:
// correct, but a replay after a restart costs atomic batches one failed
// batch per WriteBatch. A fast batch skips the duplicates and goes on.
// The fallbacks are counted in streamscore_sinks_nats_batch_fallbacks_total.
func WithNATSBatch(b NATSBatch) NATSOption {
	return func(c *natsConfig) error {
		if b < NATSBatchNone || b > NATSBatchAtomic {
			return fmt.Errorf("sinks: unknown nats batch mode %d", int(b))
		}
		c.batch = b
		return nil
	}
}

// Batch returns how kind k's JetStream messages are acknowledged (see
// WithNATSBatch): NATSBatchNone when k is core-published, unrouted, or its
// stream does not allow the configured batch mode.
func (n *NATS) Batch(k output.Kind) NATSBatch {
	if int(k) < output.NumKinds {
		return n.batch[k]
	}
	return NATSBatchNone
}

// streamAllows reads stream's configuration and tells whether it allows
// batch mode b.
func streamAllows(js jetstream.JetStream, stream string, b NATSBatch, cfg *natsConfig) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.lookupTimeout)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, fmt.Errorf("sinks: read stream %q: %w", stream, err)
	}
	c := s.CachedInfo().Config
	switch b {
	case NATSBatchFast:
		return c.AllowBatchPublish, nil
	case NATSBatchAtomic:
		return c.AllowAtomicPublish, nil
	}
	return false, nil
}

// jsGroup is the JetStream messages of one WriteBatch bound for one stream.
type jsGroup struct {
	stream string
	batch  NATSBatch
	idx    []int
}

// groupByStream splits idx (JetStream messages) by stream, in order.
func (n *NATS) groupByStream(msgs []output.Message, idx []int) []jsGroup {
	var groups []jsGroup
	for _, i := range idx {
		k := msgs[i].Kind
		g := -1
		for j := range groups {
			if groups[j].stream == n.stream[k] {
				g = j
				break
			}
		}
		if g < 0 {
			groups = append(groups, jsGroup{stream: n.stream[k], batch: n.batch[k], idx: make([]int, 0, len(idx))})
			g = len(groups) - 1
		}
		groups[g].idx = append(groups[g].idx, i)
	}
	return groups
}

// publishBatches publishes the groups that have a batch mode as batches
// (one goroutine per stream when there are several, joined before it
// returns, so that their round trips overlap) and returns the indices left
// to publish one by one: the groups without a batch mode and those whose
// batch failed.
func (n *NATS) publishBatches(ctx context.Context, msgs []output.Message, idx []int) []int {
	groups := n.groupByStream(msgs, idx)
	errs := make([]error, len(groups))
	publish := func(g *jsGroup, errp *error) {
		switch g.batch {
		case NATSBatchFast:
			*errp = n.publishFast(ctx, msgs, g.idx)
		case NATSBatchAtomic:
			for start := 0; start < len(g.idx); start += maxAtomicBatch {
				chunk := g.idx[start:min(len(g.idx), start+maxAtomicBatch)]
				if err := n.publishAtomic(ctx, msgs, chunk); err != nil {
					g.idx, *errp = g.idx[start:], err // the chunks before are stored
					return
				}
			}
		}
	}
	batched := 0
	for i := range groups {
		if groups[i].batch != NATSBatchNone {
			batched++
		}
	}
	if batched > 1 {
		var wg sync.WaitGroup
		for i := range groups {
			if groups[i].batch != NATSBatchNone {
				wg.Go(func() { publish(&groups[i], &errs[i]) })
			}
		}
		wg.Wait()
	} else {
		for i := range groups {
			publish(&groups[i], &errs[i])
		}
	}
	var rest []int
	for i, g := range groups {
		switch {
		case g.batch == NATSBatchNone:
			rest = append(rest, g.idx...)
		case errs[i] != nil:
			if n.m != nil {
				n.m.batchFallbacks.Inc()
			}
			rest = append(rest, g.idx...)
		}
	}
	return rest
}

// errBatchAck is a batch's PubAck that does not count the batch's messages.
var errBatchAck = errors.New("sinks: batch ack does not cover the batch")

// publishFast sends msgs[idx] as one fast batch and waits for its commit.
func (n *NATS) publishFast(ctx context.Context, msgs []output.Message, idx []int) error {
	if len(idx) == 1 {
		return n.publishOne(ctx, &msgs[idx[0]])
	}
	fp, err := jetstreamext.NewFastPublisher(n.js, jetstreamext.FastPublishFlowControl{AckTimeout: n.cfg.ackTimeout, MaxOutstandingAcks: fastMaxOutstandingAcks})
	if err != nil {
		return fmt.Errorf("new fast publisher: %w", err)
	}
	// One message and header map for the whole batch: the publisher
	// serialises each message before AddMsg returns and keeps none.
	id := []string{""}
	reused := &nats.Msg{Header: nats.Header{jetstream.MsgIDHeader: id, output.HeaderID: id}}
	msgFor := func(m *output.Message) *nats.Msg {
		if m.ID == "" {
			return n.jsMsg(m)
		}
		reused.Subject, reused.Data, reused.Reply, id[0] = n.cfg.route.get(m.Kind), m.Value, "", m.ID
		return reused
	}
	last := len(idx) - 1
	for _, i := range idx[:last] {
		if _, err := fp.AddMsg(msgFor(&msgs[i])); err != nil {
			if !fp.IsClosed() {
				fp.Close(ctx) // ends the batch on the server and drops the subscription
			}
			return fmt.Errorf("add to fast batch: %w", err)
		}
	}
	ack, err := fp.CommitMsg(ctx, msgFor(&msgs[idx[last]]))
	if err != nil {
		return fmt.Errorf("commit fast batch: %w", err)
	}
	if ack.BatchSize != uint64(len(idx)) {
		return fmt.Errorf("%w: %d of %d", errBatchAck, ack.BatchSize, len(idx))
	}
	return nil
}

// publishAtomic sends msgs[idx] (at most maxAtomicBatch) as one atomic batch.
func (n *NATS) publishAtomic(ctx context.Context, msgs []output.Message, idx []int) error {
	if len(idx) == 1 {
		return n.publishOne(ctx, &msgs[idx[0]])
	}
	batch := make([]*nats.Msg, len(idx))
	for j, i := range idx {
		batch[j] = n.jsMsg(&msgs[i])
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ackTimeout)
		defer cancel()
	}
	if _, err := jetstreamext.PublishMsgBatch(ctx, n.js, batch,
		jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: n.cfg.ackTimeout}); err != nil {
		return fmt.Errorf("publish atomic batch: %w", err)
	}
	return nil
}

// publishOne publishes one message and waits for its PubAck.
func (n *NATS) publishOne(ctx context.Context, m *output.Message) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ackTimeout)
		defer cancel()
	}
	if _, err := n.js.PublishMsg(ctx, n.jsMsg(m)); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// jsMsg is natsMsg for a JetStream message, with a header map even without
// an ID (the batch protocols add theirs).
func (n *NATS) jsMsg(m *output.Message) *nats.Msg {
	msg := natsMsg(n.cfg.route.get(m.Kind), m)
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	return msg
}

// fastMaxOutstandingAcks is the flow acknowledgements (one per 100 messages
// by default) a fast batch may await before it stalls: 10 lets a
// micro-batch of up to 1,000 records go out without waiting mid-batch (the
// library's default, 2, stalls every 200).
const fastMaxOutstandingAcks = 10
