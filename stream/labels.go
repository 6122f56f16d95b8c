package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/sinks"
)

// labelConsumer feeds delayed fraud labels (chargebacks, analyst verdicts)
// into the shared feature state. Labels are few, so it works one message at a
// time: decode, apply (or dead-letter), commit.
type labelConsumer struct {
	p      *Pipeline
	reader *kafka.Reader
	dec    *features.Decoder
}

func newLabelConsumer(p *Pipeline, dialer *kafka.Dialer) *labelConsumer {
	return &labelConsumer{
		p:   p,
		dec: features.NewDecoder(p.cfg.decoderOpts...),
		reader: kafka.NewReader(kafka.ReaderConfig{
			Brokers:         p.brokers,
			GroupID:         p.group + ".labels",
			Topic:           p.cfg.labelsTopic,
			Dialer:          dialer,
			MinBytes:        1,
			MaxBytes:        4 << 20,
			MaxWait:         2 * time.Second,
			CommitInterval:  0,
			StartOffset:     kafka.FirstOffset,
			ReadLagInterval: -1,
			ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
				p.log.Warn("kafka labels reader: " + fmt.Sprintf(msg, args...))
			}),
		}),
	}
}

// run consumes labels until ctx or the pipeline's hard context is done.
func (lc *labelConsumer) run(ctx context.Context) {
	defer lc.reader.Close()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(lc.p.hard, cancel)
	defer stop()
	applied := lc.p.met.labels.WithLabelValues("applied")
	dead := lc.p.met.labels.WithLabelValues("deadlettered")
	consumed := lc.p.met.consumed.WithLabelValues(lc.p.cfg.labelsTopic)
	var l features.Label
	for {
		m, err := lc.reader.FetchMessage(fctx)
		if err != nil {
			if fctx.Err() != nil {
				return
			}
			lc.p.log.Warn("fetch label failed, retrying", "err", err)
			select {
			case <-fctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		consumed.Inc()
		if err := lc.dec.DecodeLabel(m.Value, &l); err != nil {
			reason := reasonUndecodable
			var de *features.DecodeError
			if errors.As(err, &de) {
				reason = de.Reason
			}
			rec := sinks.DeadLetterRecord{
				Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
				Key: m.Key, Value: m.Value, Reason: reason, Error: err.Error(), At: time.Now(),
			}
			msg := sinks.Message{Kind: sinks.KindDeadLetter, Key: m.Key, Value: rec.AppendJSON(nil), ID: messageID(sinks.KindDeadLetter, &m)}
			// Publish under the hard context: a soft stop still finishes this one.
			if err := lc.p.sink.WriteBatch(lc.p.hard, []sinks.Message{msg}); err != nil {
				return // stopped hard: the label is re-delivered on restart
			}
			lc.p.met.deadLettered.WithLabelValues(reason).Inc()
			dead.Inc()
		} else {
			lc.p.shared.ApplyLabel(&l)
			applied.Inc()
		}
		cctx, ccancel := context.WithTimeout(lc.p.hard, 10*time.Second)
		if err := lc.reader.CommitMessages(cctx, m); err != nil && lc.p.hard.Err() == nil {
			lc.p.log.Warn("commit label offset", "err", err)
		}
		ccancel()
	}
}
