package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/sinks/output"
)

// labelConsumer feeds delayed fraud labels (chargebacks, analyst verdicts)
// to the feature stage, which applies each among the events in event-time
// order (after every event before its time, before every event at or after
// it, as Replay does): a label without tx_ts is placed by finding its
// transaction in its terminal's history, which must hold it by then.
//
// The feature state is per process, so every process needs every label,
// and needs them again after a restart: the consumer reads all partitions
// of the labels topic from the start of their retention (or, after a state
// restore, from the offsets the snapshot recorded), without a consumer
// group and without commits. Labels are few, so it works one
// message at a time per partition: decode, then hand to the stage or
// dead-letter (the stage records a dead letter's offset, in order). A bad
// label is dead-lettered again after each restart, with the same record id
// (kind:topic/partition/offset) for consumers to deduplicate. Partitions
// added to the topic while the pipeline runs are read after a restart.
type labelConsumer struct {
	p      *Pipeline
	dialer *kafka.Dialer
	parts  []int // the labels topic's partitions, when known before run

	mu      sync.Mutex
	failing map[int]bool // partitions whose last fetch failed
}

// report records partition part's fetch outcome and tells the reader
// observer when the labels reader as a whole starts or stops failing.
func (lc *labelConsumer) report(part int, err error) {
	obs := lc.p.cfg.connObserve
	if obs == nil {
		return
	}
	lc.mu.Lock()
	if lc.failing == nil {
		lc.failing = map[int]bool{}
	}
	was := len(lc.failing) > 0
	if err != nil {
		lc.failing[part] = true
	} else {
		delete(lc.failing, part)
	}
	now := len(lc.failing) > 0
	lc.mu.Unlock()
	switch {
	case err != nil:
		obs("kafka labels reader", fmt.Errorf("partition %d: %w", part, err))
	case was && !now:
		obs("kafka labels reader", nil)
	}
}

func newLabelConsumer(p *Pipeline, dialer *kafka.Dialer) *labelConsumer {
	return &labelConsumer{p: p, dialer: dialer}
}

// partitions looks the labels topic's partitions up on the first broker that
// answers, retrying until ctx is done.
func (lc *labelConsumer) partitions(ctx context.Context) ([]int, error) {
	topic := lc.p.cfg.labelsTopic
	for {
		var lastErr error
		for _, b := range lc.p.brokers {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ps, err := lc.dialer.LookupPartitions(lctx, "tcp", b, topic)
			cancel()
			if err == nil && len(ps) > 0 {
				out := make([]int, len(ps))
				for i, p := range ps {
					out[i] = p.ID
				}
				return out, nil
			}
			if err == nil {
				err = fmt.Errorf("topic %q has no partitions", topic)
			}
			lastErr = err
		}
		lc.p.log.Warn("look up labels topic, retrying", "topic", topic, "err", lastErr)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// run consumes labels until ctx or the pipeline's hard context is done.
func (lc *labelConsumer) run(ctx context.Context) {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(lc.p.hard, cancel)
	defer stop()
	parts := lc.parts
	if parts == nil {
		var err error
		if parts, err = lc.partitions(fctx); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.runPartition(fctx, part)
		}()
	}
	wg.Wait()
}

func (lc *labelConsumer) runPartition(ctx context.Context, part int) {
	st := lc.p.stage
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:         lc.p.brokers,
		Topic:           lc.p.cfg.labelsTopic,
		Partition:       part,
		Dialer:          lc.dialer,
		MinBytes:        1,
		MaxBytes:        4 << 20,
		MaxWait:         2 * time.Second,
		StartOffset:     kafka.FirstOffset,
		ReadLagInterval: -1,
		IsolationLevel:  kafka.ReadCommitted,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			lc.p.log.Warn("kafka labels reader: " + fmt.Sprintf(msg, args...))
		}),
	})
	defer closeWithin(readerCloseTimeout, r.Close)
	// After a restore, the labels before the snapshot's offset are in the
	// restored state already: applying them again is not exact (a label of
	// an expired terminal would bring it back).
	lc.p.labelMu.Lock()
	next, restored := lc.p.labelNext[part]
	lc.p.labelMu.Unlock()
	if restored {
		if err := r.SetOffset(next); err != nil {
			lc.p.log.Warn("labels: resume at the restored offset failed; reading from the start", "partition", part, "offset", next, "err", err)
		}
	}
	dead := lc.p.met.labels.WithLabelValues("deadlettered")
	consumed := lc.p.met.consumed.WithLabelValues(lc.p.cfg.labelsTopic)
	dec := lc.p.dec // dead letters' key and digest
	ldec := lc.p.cfg.labelDecoder(dec)
	var dlBuf []byte
	// The partition's credits: labels handed to the stage and not yet
	// applied (waiting in the aligner for the events before them).
	credit := make(chan struct{}, labelCredit)
	failing := false // this partition's last fetch failed (reported)
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failing = true
			lc.report(part, err)
			lc.p.log.Warn("fetch label failed, retrying", "partition", part, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		consumed.Inc()
		if failing {
			failing = false
			lc.report(part, nil)
		}
		if prepare(ctx, lc.p.cfg.labelDec, m.Value) != nil {
			return // stopped while the decoder waited (a schema registry down)
		}
		lm := &labelMsg{m: m, credit: credit}
		if err := ldec.DecodeLabel(m.Value, &lm.l); err != nil {
			reason := decodeReason(err)
			var rec output.DeadLetterRecord
			dlBuf = fillDeadLetter(&rec, dec, &m, true, reason, err.Error(), time.Now(), dlBuf)
			msg := output.Message{Kind: output.KindDeadLetter, Key: bytes.Clone(rec.Key), Value: rec.AppendJSON(nil), ID: messageID(output.KindDeadLetter, &m)}
			// Publish under the hard context: a soft stop still finishes this one.
			err := lc.p.sink.WriteBatch(lc.p.hard, []output.Message{msg})
			var rej *output.RejectedError
			switch {
			case errors.As(err, &rej):
				// Bounded, so only a tiny message limit refuses it: the
				// label's offset is recorded here, and read past.
				lc.p.met.rejected.WithLabelValues(output.KindDeadLetter.String(), rej.Rejected[0].Sink).Inc()
				lc.p.log.Error("label dead letter refused for good by a sink: the label is skipped, its offset only in this log",
					"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "reason", reason, "err", err)
			case err != nil:
				if lc.p.hard.Err() == nil {
					// A configuration error (authorization, unknown topic):
					// stop the pipeline with it rather than end this
					// partition's reader without a word.
					lc.p.log.Error("label dead letter cannot be written: stopping", "partition", m.Partition, "offset", m.Offset, "err", err)
					lc.p.cancel(fmt.Errorf("stream: label dead letter: %w", err))
				}
				return // stopped hard: the label is read again on restart
			}
			lc.p.met.deadLettered.WithLabelValues(reason).Inc()
			dead.Inc()
			lm.dead = true
		}
		// The stage applies it in event-time order among the events (a
		// dead letter: records its offset as handled, in order).
		select {
		case credit <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case st.labels <- lm:
		case <-ctx.Done():
			return
		}
	}
}

// labelCredit bounds the labels of one labels partition handed to the
// stage and not yet applied.
const labelCredit = 4096

// setLabelNext records the next label offset of partition part; labelMu
// must be held.
func (p *Pipeline) setLabelNext(part int, next int64) {
	if p.labelNext == nil {
		p.labelNext = map[int]int64{}
	}
	p.labelNext[part] = next
}

// labelsAhead returns, per labels partition, the label offsets above its
// next offset that are applied too, for a snapshot or checkpoint: from the
// stage's trail of the partition, or, for one the stage has no trail of
// yet, as restored. Computed here, when the state is stored, not as each
// label is applied (a labels backlog applied ahead of one waiting label
// made that quadratic). At most maxSnapAhead per partition (what a restore
// accepts): the lowest; the labels above are applied again after a
// restart, as before labels_ahead existed (logged). The stage must be
// paused or stopped; labelMu must be held.
func (p *Pipeline) labelsAhead(st *stage) map[int][]int64 {
	var out map[int][]int64
	for part := range p.labelNext {
		var a []int64
		if tr, ok := st.labelTrail[part]; ok {
			a = tr.ahead()
		} else {
			a = p.labelAhead[part]
		}
		if len(a) == 0 {
			continue
		}
		if len(a) > maxSnapAhead {
			p.log.Warn("more labels applied ahead of a waiting one than a snapshot keeps: the rest are applied again after a restart",
				"labels_partition", part, "ahead", len(a), "kept", maxSnapAhead)
			a = a[:maxSnapAhead]
		}
		if out == nil {
			out = map[int][]int64{}
		}
		out[part] = a
	}
	return out
}
