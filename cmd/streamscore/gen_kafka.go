package main

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// genKafka is gen's Kafka mode: the simulation of file mode over
// [from, to) — the same Poisson arrivals with the daily rhythm, each card
// at --tx-per-card-day, so that every card behaves as in the data the
// models were trained on — produced with event time compressed. The
// warm-up goes out as fast as Kafka takes it, the rest at --rate events per
// second of wall-clock time (speed = rate / event rate); each label when
// event time reaches its ts. Wall-clock event times (the former Kafka
// mode) made every card transact thousands of times a day at --rate 500
// and left the weeks-long fraud episodes unfinished: the shipped model
// alerted on half the events, and fraud came out at 0.0003 of 0.0075.
func genKafka(ctx context.Context, c *genConfig, g *synth.Generator) error {
	transport, err := c.transport()
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	// A TLS or authentication failure stops gen here, naming the cause;
	// missing topics are created by the first write.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = kafkaCheck(cctx, &c.kafkaSecurity, c.brokerList, nil)
	cancel()
	var ce *kafkaCheckError
	if err != nil && (!errors.As(err, &ce) || ce.fatal()) {
		return fmt.Errorf("gen: check kafka: %w", err)
	}
	if err := c.wireOut.setup(ctx, c.topic, c.labelsTopic); err != nil {
		return err
	}
	w := newReplayWriter(c.brokerList, transport)
	defer func() {
		if err := w.Close(); err != nil {
			slog.Error("gen: close kafka writer", "err", err)
		}
	}()

	runCtx := ctx
	if c.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	warmEnd := c.fromT.Add(c.warmup)
	paced := time.Duration(float64(max(c.toT.Sub(warmEnd), 0)) / c.speed)
	slog.Info("gen producing", "brokers", redactBrokers(c.brokerList), "topic", c.topic, "labels_topic", c.labelsTopic,
		"from", c.fromT.Format(time.RFC3339), "to", c.toT.Format(time.RFC3339), "warmup_until", warmEnd.Format(time.RFC3339),
		"events_per_day", int64(c.perSecond*86400), "tx_per_card_day", c.txPerDay, "rate", c.perSecond*c.speed,
		"speed", strconv.FormatFloat(c.speed, 'f', 0, 64)+"x", "paced_part_lasts", paced.Round(time.Second),
		"count", c.count, "duration", c.duration, "tx_prefix", c.txPrefix)

	p := newPacedProducer(w, 0)
	if c.warmup == 0 {
		p.speed = c.speed
	}
	bar := progressbar.NewOptions64(int64(c.toT.Sub(c.fromT)/time.Second),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetVisibility(showProgress(c.progress)),
		progressbar.OptionSetDescription("gen (event time)"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	st := newGenStats()
	var (
		queue   labelQueue
		buf     []byte
		nextLog = time.Now().Add(10 * time.Second)
	)
	label := func(ctx context.Context, l features.Label) error {
		buf = c.wireOut.appendLabel(buf[:0], &l)
		if err := p.add(ctx, c.labelsTopic, []byte(l.CardID), buf, l.TS); err != nil {
			return err
		}
		st.labels++
		return nil
	}
	err = g.Simulate(c.fromT, c.toT, c.perSecond, func(tx synth.Tx) error {
		ts := tx.Event.TS
		for len(queue) > 0 && !queue[0].TS.After(ts) {
			if err := label(runCtx, heap.Pop(&queue).(features.Label)); err != nil {
				return err
			}
		}
		if p.speed == 0 && !ts.Before(warmEnd) {
			if err := p.flush(runCtx); err != nil {
				return err
			}
			p.setSpeed(c.speed)
			slog.Info("gen: warm-up produced, pacing", "events", st.events, "labels", st.labels,
				"took", time.Since(st.start).Round(time.Millisecond))
		}
		buf = c.wireOut.appendEvent(buf[:0], &tx.Event)
		if err := p.add(runCtx, c.topic, []byte(tx.Event.CardID), buf, ts); err != nil {
			return err
		}
		st.add(&tx)
		if c.labelsTopic != "" {
			if l, ok := g.LabelFor(tx); ok {
				heap.Push(&queue, l)
			}
		}
		if st.events%1024 == 0 {
			_ = bar.Set64(int64(ts.Sub(c.fromT) / time.Second))
			if now := time.Now(); now.After(nextLog) {
				nextLog = now.Add(10 * time.Second)
				slog.Info("gen progress", "event_time", ts.Format(time.RFC3339), "events", st.events, "fraud", st.fraud,
					"labels", st.labels, "labels_pending", len(queue))
			}
		}
		if c.count > 0 && st.events >= c.count {
			return errGenCount
		}
		return nil
	})
	interrupted := runCtx.Err() != nil
	if err == nil || errors.Is(err, errGenCount) || interrupted {
		err = nil
		// The labels that fell due by now (event time may not pass the
		// wall clock: the engine dead-letters the future), paced as well.
		for now := time.Now(); !interrupted && len(queue) > 0 && !queue[0].TS.After(now); {
			if err = label(runCtx, heap.Pop(&queue).(features.Label)); err != nil {
				if interrupted = runCtx.Err() != nil; interrupted {
					err = nil
				}
				break
			}
		}
		if err == nil { // what was queued is produced, also after an interruption
			fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = p.flush(fctx)
			cancel()
		}
	}
	_ = bar.Finish()
	event, wall := p.span()
	// How the run ended: --duration's end is not an interruption.
	ended := "done"
	switch {
	case err != nil:
		ended = "failed"
	case ctx.Err() != nil:
		ended = "interrupted"
	case interrupted:
		ended = "duration"
	}
	st.log("kafka", ended)
	slog.Info("gen kafka", "produced_events", p.produced[c.topic], "produced_labels", p.produced[c.labelsTopic],
		"labels_not_due", len(queue), "produce_errors", p.failed, "event_time_span", event.Round(time.Second),
		"wall_time", wall.Round(time.Millisecond), "ended", ended)
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	return nil
}
