package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// errProduce marks a write that Kafka did not accept after kafka-go's own
// retries: replay and gen stop there rather than leave a gap in the topic.
var errProduce = errors.New("produce")

// pacedProducer writes records to Kafka at the wall-clock moments of their
// event times, compressed by a speed: a record whose event time is d after
// the first record's goes out d/speed after it (speed 1 = real time, 3600 =
// an hour of event time per second). Records are given in the order they
// should be produced; the event-time clock is the running maximum of their
// times, so a record older than one before it (late in the original log)
// goes out at once, behind it, as it came. Speed 0 produces as fast as
// Kafka takes the batches.
//
// Records due within pacedSlack of each other are written together, up to
// pacedBatch a write; a record waits at most pacedSlack (plus the write of
// its batch) for its moment. Memory is bounded by one batch. Not safe for
// concurrent use.
type pacedProducer struct {
	w     *kafka.Writer
	speed float64

	started bool
	origin  time.Time // event time at wall0
	wall0   time.Time
	clock   time.Time // running maximum of the records' event times
	first   time.Time // event time of the first record
	start   time.Time // wall clock of the first record

	msgs  []kafka.Message
	arena []byte
	spans [][4]int // key and value of msgs[i] in arena (arena grows, so kept as offsets)

	produced map[string]int64 // records acknowledged, per topic
	failed   int64            // records Kafka did not accept
	late     int64            // records older than the clock when given
	future   int64            // records whose event time was after the wall clock when given
	wallEnd  time.Time        // when the last write returned
}

const (
	pacedSlack = 2 * time.Millisecond
	pacedBatch = 1000
)

func newPacedProducer(w *kafka.Writer, speed float64) *pacedProducer {
	return &pacedProducer{w: w, speed: speed, produced: map[string]int64{}}
}

// setSpeed changes the speed from the current event time on (gen's paced
// phase after its warm-up). The records given so far are not delayed.
func (p *pacedProducer) setSpeed(speed float64) {
	p.speed = speed
	p.origin, p.wall0 = p.clock, time.Now()
}

// due returns the wall-clock moment of event time t.
func (p *pacedProducer) due(t time.Time) time.Time {
	return p.wall0.Add(time.Duration(float64(t.Sub(p.origin)) / p.speed))
}

// add schedules one record: it waits for the record's moment (writing the
// records before it first), then queues it. key and value are copied. It
// returns ctx's error when ctx ends while waiting, and an errProduce error
// when a write fails.
func (p *pacedProducer) add(ctx context.Context, topic string, key, value []byte, ts time.Time) error {
	switch {
	case !p.started:
		p.started = true
		p.start = time.Now()
		p.origin, p.wall0, p.clock, p.first = ts, p.start, ts, ts
	case ts.After(p.clock):
		p.clock = ts
	case ts.Before(p.clock):
		p.late++
	}
	if ts.After(time.Now()) {
		p.future++
	}
	if p.speed > 0 {
		if wait := time.Until(p.due(p.clock)); wait > pacedSlack {
			if err := p.flush(ctx); err != nil {
				return err
			}
			if wait = time.Until(p.due(p.clock)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
	}
	off := len(p.arena)
	p.arena = append(p.arena, key...)
	p.arena = append(p.arena, value...)
	p.spans = append(p.spans, [4]int{off, off + len(key), off + len(key), len(p.arena)})
	p.msgs = append(p.msgs, kafka.Message{Topic: topic})
	if len(p.msgs) >= pacedBatch {
		return p.flush(ctx)
	}
	return nil
}

// flush writes the queued records and waits for Kafka's acknowledgements
// (acks=all). A record Kafka did not accept is counted in failed and the
// returned error wraps errProduce. When ctx ends during the write, flush
// returns ctx's error and keeps the records queued.
func (p *pacedProducer) flush(ctx context.Context) error {
	if len(p.msgs) == 0 {
		return nil
	}
	for i, s := range p.spans {
		p.msgs[i].Key = p.arena[s[0]:s[1]:s[1]]
		p.msgs[i].Value = p.arena[s[2]:s[3]:s[3]]
	}
	err := p.w.WriteMessages(ctx, p.msgs...)
	p.wallEnd = time.Now()
	if err != nil && ctx.Err() != nil {
		// Interrupted, not refused: the records stay queued for a flush
		// with a fresh context (some may then be written twice; the
		// consumers deduplicate by tx_id, as for any kafka-go retry).
		return ctx.Err()
	}
	var werrs kafka.WriteErrors
	switch {
	case err == nil:
		for i := range p.msgs {
			p.produced[p.msgs[i].Topic]++
		}
	case errors.As(err, &werrs) && len(werrs) == len(p.msgs):
		for i := range p.msgs {
			if werrs[i] == nil {
				p.produced[p.msgs[i].Topic]++
			} else {
				p.failed++
			}
		}
	default:
		p.failed += int64(len(p.msgs))
	}
	n := len(p.msgs)
	p.msgs, p.arena, p.spans = p.msgs[:0], p.arena[:0], p.spans[:0]
	if err != nil {
		return fmt.Errorf("%w: write %d records to kafka: %w", errProduce, n, err)
	}
	return nil
}

// span returns the event time covered so far and the wall time it took,
// from the first record to the last write.
func (p *pacedProducer) span() (event, wall time.Duration) {
	if !p.started {
		return 0, 0
	}
	end := p.wallEnd
	if end.IsZero() {
		end = time.Now()
	}
	return p.clock.Sub(p.first), end.Sub(p.start)
}
