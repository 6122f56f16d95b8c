package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// gatedDecoder reads "X|" + a JSON event (or label); its Prepare holds
// every message until gate is closed, as a schema registry that is down.
type gatedDecoder struct {
	json     *features.Decoder
	gate     chan struct{}
	prepared atomic.Int64
	decoded  atomic.Int64
}

func (d *gatedDecoder) Prepare(ctx context.Context, _ []byte) error {
	select {
	case <-d.gate:
		d.prepared.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *gatedDecoder) Decode(v []byte, ev *features.Event) error {
	d.decoded.Add(1)
	rest, ok := bytes.CutPrefix(v, []byte("X|"))
	if !ok {
		return &features.DecodeError{Reason: features.ReasonMalformedRecord, Err: errors.New("no X| prefix")}
	}
	return d.json.Decode(rest, ev)
}

func (d *gatedDecoder) DecodeLabel(v []byte, l *features.Label) error {
	d.decoded.Add(1)
	rest, ok := bytes.CutPrefix(v, []byte("X|"))
	if !ok {
		return &features.DecodeError{Reason: features.ReasonMalformedRecord, Err: errors.New("no X| prefix")}
	}
	return d.json.DecodeLabel(rest, l)
}

// TestEventDecoder: the pipeline decodes events and labels with the
// decoders given (WithEventDecoder, WithLabelDecoder), prepares every
// message in its fetcher first, and while Prepare holds nothing is scored,
// dead-lettered or committed; once it lets go, every message is handled,
// the decoder's reasons in the dead letters.
func TestEventDecoder(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 2, labelsTopic: 1, scoresTopic: 1, deadTopic: 1})
	start := time.Now().Add(-time.Hour)
	var msgs []kafka.Message
	for i := range 40 {
		m := txEvent(fmt.Sprintf("t-%d", i), fmt.Sprintf("c%d", i%5), start.Add(time.Duration(i)*time.Second))
		m.Value = append([]byte("X|"), m.Value...)
		msgs = append(msgs, m)
	}
	msgs = append(msgs, txEvent("plain-json", "c1", start)) // not X|: the decoder's dead letter
	produce(t, brokers, txTopic, msgs...)
	produce(t, brokers, labelsTopic, kafka.Message{Key: []byte("c1"), Value: fmt.Appendf(nil,
		`X|{"tx_id":"t-1","card_id":"c1","terminal_id":"m1","ts":%q,"tx_ts":%q,"fraud":true}`,
		start.Add(time.Minute).Format(time.RFC3339Nano), start.Add(time.Second).Format(time.RFC3339Nano))})

	json, err := features.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	ev := &gatedDecoder{json: json, gate: make(chan struct{})}
	lb := &gatedDecoder{json: json, gate: make(chan struct{})}
	close(lb.gate)
	sink := kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic, output.KindDeadLetter: deadTopic})
	p := newPipeline(t, brokers, "g-decoder", shippedModels(t), sink, stream.WithLabelsTopic(labelsTopic),
		stream.WithEventDecoder(ev), stream.WithLabelDecoder(lb))
	r := runPipeline(t, p)
	time.Sleep(2 * time.Second)
	if s, d, n := p.Stats().Scored.Load(), p.Stats().DeadLettered.Load(), ev.decoded.Load(); s+d+n != 0 {
		t.Fatalf("while Prepare holds: %d scored, %d dead-lettered, %d decoded; want none", s, d, n)
	}
	close(ev.gate)
	waitHandled(t, p, len(msgs))
	if s, d := p.Stats().Scored.Load(), p.Stats().DeadLettered.Load(); s != 40 || d != 1 {
		t.Fatalf("scored %d, dead-lettered %d; want 40 and 1", s, d)
	}
	if got := ev.prepared.Load(); got != int64(len(msgs)) {
		t.Fatalf("prepared %d messages, want %d", got, len(msgs))
	}
	waitFor(t, waitBudget, "the label decoded by the label decoder", func() bool { return lb.decoded.Load() == 1 && lb.prepared.Load() == 1 })
	dead := readAll(t, brokers, deadTopic)
	if len(dead) != 1 || !bytes.Contains(dead[0].Value, []byte(`"reason":"malformed_record"`)) {
		t.Fatalf("%d dead letters, want one malformed_record", len(dead))
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// vetoDecoder is the JSON decoder (embedded: its methods are promoted,
// DecodeAt and Now among them) with a Decode of its own that refuses
// transactions whose id starts with "veto".
type vetoDecoder struct {
	*features.Decoder
	calls atomic.Int64
}

func (d *vetoDecoder) Decode(v []byte, ev *features.Event) error {
	d.calls.Add(1)
	if err := d.Decoder.Decode(v, ev); err != nil {
		return err
	}
	if strings.HasPrefix(ev.TxID, "veto") {
		return &features.DecodeError{Reason: features.ReasonMalformedRecord, Field: "tx_id", Err: errors.New("vetoed")}
	}
	return nil
}

// TestEventDecoderEmbeddingJSON: a WithEventDecoder type that embeds the
// JSON decoder and overrides Decode is called for every message; the
// fetchers' per-slice path (the JSON decoder's DecodeAt, promoted to the
// wrapper) must not bypass it.
func TestEventDecoderEmbeddingJSON(t *testing.T) {
	b := stream.NewMemBroker(map[string]int{txTopic: 2})
	start := time.Now().Add(-time.Hour)
	var msgs []kafka.Message
	for i := range 30 {
		id := fmt.Sprintf("t-%d", i)
		if i%3 == 0 {
			id = fmt.Sprintf("veto-%d", i)
		}
		msgs = append(msgs, txEvent(id, fmt.Sprintf("c%d", i%4), start.Add(time.Duration(i)*time.Second)))
	}
	appendAll(t, b, 2, msgs)
	json, err := features.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	dec := &vetoDecoder{Decoder: json}
	p := memMember(t, b, "g-veto", &memSink{}, stream.WithEventDecoder(dec))
	r := runPipeline(t, p)
	waitHandled(t, p, len(msgs))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if s, d, n := p.Stats().Scored.Load(), p.Stats().DeadLettered.Load(), dec.calls.Load(); s != 20 || d != 10 || n != 30 {
		t.Fatalf("scored %d, dead-lettered %d, the decoder's Decode called %d times; want 20, 10, 30", s, d, n)
	}
}
