package stream

import (
	"context"
	"errors"

	"github.com/streamscore/streamscore/features"
)

// EventDecoder decodes the value of a message of the transactions topic.
// Bad input is a *features.DecodeError, whose Reason is the dead letter's
// reason; any other error is dead-lettered as "undecodable".
// *features.Decoder (JSON) is one; features/wire's Decoder (Avro,
// Protobuf) another. The trap: Decode is called concurrently, from the
// fetching goroutine of each partition (decoding runs in parallel, not in
// the feature stage's one goroutine), so it must be safe for concurrent
// use — a change from builds before 2026-12-06, which called it from one
// goroutine. The JSON decoder itself (*features.Decoder, not a type
// embedding it) is called through Now and DecodeAt instead: Now once per
// slice of fetched messages, DecodeAt per message with that reading. A
// type that embeds it and overrides Decode is called through Decode.
type EventDecoder interface {
	Decode(value []byte, ev *features.Event) error
}

// LabelDecoder decodes the value of a message of the labels topic, as
// EventDecoder. DecodeLabel is called from one goroutine per labels
// partition, concurrently.
type LabelDecoder interface {
	DecodeLabel(value []byte, l *features.Label) error
}

// Preparer is implemented by decoders that need something before they can
// decode a message (its writer schema from a registry). Prepare is called
// by the partition's fetcher before the message is handed to the stage, and
// may block (a registry down holds that partition); it returns an error
// only when ctx is done. Safe for concurrent use. A Preparer may also have
// a method Prepared(value []byte) bool reporting, without blocking,
// whether Prepare(value) would return at once (features/wire.Decoder has
// it): then a fetcher hands the stage several messages per slice, cut
// before one that has to wait; without it, one message per slice (the
// messages already read must reach the stage while one waits, or the
// event-time alignment would not see them).
type Preparer interface {
	Prepare(ctx context.Context, value []byte) error
}

// WithEventDecoder sets the decoder of the transactions topic. Default: a
// features.Decoder (JSON) with WithDecoderOptions. d must be safe for
// concurrent use (each partition's fetcher decodes its messages). The
// trap: d applies its own checks (skew, PAN key, field bounds): build it
// with the same
// features.Decoder options, since WithDecoderOptions does not reach it
// (they still govern the dead letters' key and digest). If d is a
// Preparer, each message is prepared in its partition's fetcher.
func WithEventDecoder(d EventDecoder) Option {
	return func(c *config) error {
		if d == nil {
			return errors.New("stream: nil event decoder")
		}
		c.eventDec = d
		return nil
	}
}

// WithLabelDecoder sets the decoder of the labels topic (WithLabelsTopic),
// as WithEventDecoder. Default: JSON.
func WithLabelDecoder(d LabelDecoder) Option {
	return func(c *config) error {
		if d == nil {
			return errors.New("stream: nil label decoder")
		}
		c.labelDec = d
		return nil
	}
}

// eventDecoder returns the configured event decoder, or the JSON one.
func (p *Pipeline) eventDecoder() EventDecoder {
	if p.cfg.eventDec != nil {
		return p.cfg.eventDec
	}
	return p.dec
}

// labelDecoder returns the configured label decoder, or json.
func (c *config) labelDecoder(json *features.Decoder) LabelDecoder {
	if c.labelDec != nil {
		return c.labelDec
	}
	return json
}

// prepare runs d's Prepare when it has one.
func prepare(ctx context.Context, d any, value []byte) error {
	if p, ok := d.(Preparer); ok {
		return p.Prepare(ctx, value)
	}
	return nil
}

// preparedNow reports whether value needs no waiting preparation by d: d
// is no Preparer, or it says so (Prepared). A Preparer without Prepared
// may always wait.
func preparedNow(d any, value []byte) bool {
	if _, ok := d.(Preparer); !ok {
		return true
	}
	if pc, ok := d.(interface{ Prepared(value []byte) bool }); ok {
		return pc.Prepared(value)
	}
	return false
}
