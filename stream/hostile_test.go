package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// hostileEvents is the hostile-input catalogue: every dead-letter reason of
// the decoder, and the inputs that have stopped engines elsewhere (huge
// keys and values, deep nesting, very wide objects, huge numbers, NUL
// bytes, invalid UTF-8, duplicate keys). Each must end as exactly one dead
// letter with its reason; none may stop the engine or delay the valid
// events around it.
func hostileEvents(now time.Time) []struct {
	name, reason string
	msg          kafka.Message
} {
	ts := now.Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	ev := func(body string) []byte {
		return []byte(`{"tx_id":"h","ts":"` + ts + `","card_id":"c","terminal_id":"m"` + body + `}`)
	}
	wide := new(bytes.Buffer)
	wide.WriteString(`{"tx_id":"w","ts":"` + ts + `","card_id":"c","terminal_id":"m","amount":1`)
	// As wide as a message the broker takes (1 MB): 100,000 fields.
	for i := range 100_000 {
		fmt.Fprintf(wide, `,"_%s":0`, strconv.FormatInt(int64(i), 36))
	}
	wide.WriteString("}")
	type h = struct {
		name, reason string
		msg          kafka.Message
	}
	return []h{
		{"empty", features.ReasonEmpty, kafka.Message{}},
		{"invalid utf-8", features.ReasonInvalidUTF8, kafka.Message{Value: append(ev(`,"amount":1`), 0xff, 0xfe)}},
		{"malformed", features.ReasonMalformedJSON, kafka.Message{Value: []byte(`{"tx_id":`)}},
		{"not an object", features.ReasonMalformedJSON, kafka.Message{Value: []byte(`[1,2,3]`)}},
		{"trailing data", features.ReasonTrailingData, kafka.Message{Value: append(ev(`,"amount":1`), []byte(` {}`)...)}},
		{"wrong type", features.ReasonWrongType, kafka.Message{Value: ev(`,"amount":"12"`)}},
		{"missing field", features.ReasonMissingField, kafka.Message{Value: []byte(`{"tx_id":"h","ts":"` + ts + `","card_id":"c","amount":1}`)}},
		{"empty field", features.ReasonEmptyField, kafka.Message{Value: []byte(`{"tx_id":"","ts":"` + ts + `","card_id":"c","terminal_id":"m","amount":1}`)}},
		{"duplicate key", features.ReasonDuplicateField, kafka.Message{Value: ev(`,"amount":1,"amount":2`)}},
		{"negative amount", features.ReasonInvalidAmount, kafka.Message{Value: ev(`,"amount":-1`)}},
		{"huge number", features.ReasonInvalidAmount, kafka.Message{Value: ev(`,"amount":1e400`)}},
		{"bad timestamp", features.ReasonInvalidTime, kafka.Message{Value: []byte(`{"tx_id":"h","ts":"yesterday","card_id":"c","terminal_id":"m","amount":1}`)}},
		{"future", features.ReasonFutureTime, kafka.Message{Value: []byte(`{"tx_id":"h","ts":"` + now.Add(24*time.Hour).UTC().Format(time.RFC3339) + `","card_id":"c","terminal_id":"m","amount":1}`)}},
		{"bad geo", features.ReasonInvalidGeo, kafka.Message{Value: ev(`,"amount":1,"lat":123,"lon":0`)}},
		{"card number in clear", features.ReasonClearPAN, kafka.Message{Value: ev(`,"amount":1,"mcc":"4111111111111111"`)}},
		{"id too long", features.ReasonFieldTooLong, kafka.Message{Value: []byte(`{"tx_id":"` + strings.Repeat("x", 100_000) + `","ts":"` + ts + `","card_id":"c","terminal_id":"m","amount":1}`)}},
		{"NUL byte", features.ReasonMalformedJSON, kafka.Message{Value: append([]byte{0}, ev(`,"amount":1`)...)}},
		{"deep nesting", features.ReasonMalformedJSON, kafka.Message{Value: []byte(strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000))}},
		{"deep nesting in a field", features.ReasonMalformedJSON, kafka.Message{Value: ev(`,"amount":1,"mcc":` + strings.Repeat("[", 50_000) + strings.Repeat("]", 50_000))}},
		{"100,000 fields", "", kafka.Message{Value: wide.Bytes()}}, // unknown fields are ignored: scored
		{"huge key, bad value", features.ReasonMalformedJSON, kafka.Message{Key: bytes.Repeat([]byte{1}, 200_000), Value: []byte("{")}},
		{"invalid UTF-8 key", features.ReasonMalformedJSON, kafka.Message{Key: []byte{0xff, 0x00, 0xfe}, Value: []byte("{")}},
	}
}

// TestHostileInputs runs the hostile-input catalogue, mixed with valid
// events, through a pipeline and checks the end-to-end invariant: every
// input offset has exactly one record (a score record or a dead letter,
// ids deduplicated) with the expected reason, every offset is committed,
// and the engine never stops. Labels get their own poison: malformed and
// wrong-typed labels are dead-lettered, the good ones applied.
func TestHostileInputs(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, labelsTopic: 1, scoresTopic: 1, deadTopic: 1})
	now := time.Now().UTC()
	cat := hostileEvents(now)
	var msgs []kafka.Message
	want := map[int64]string{}  // offset -> dead-letter reason ("" = scored)
	offOf := map[string]int64{} // tx_id of a valid event -> its offset
	for i, h := range cat {
		want[int64(len(msgs))] = ""
		offOf[fmt.Sprintf("ok-%d", i)] = int64(len(msgs))
		msgs = append(msgs, txEvent(fmt.Sprintf("ok-%d", i), fmt.Sprintf("c%d", i%4), now.Add(time.Duration(i-60)*time.Second)))
		if h.reason == "" {
			offOf["w"] = int64(len(msgs))
		}
		want[int64(len(msgs))] = h.reason
		msgs = append(msgs, h.msg)
	}
	w := newWriter(t, brokers, txTopic)
	w.BatchBytes = 64 << 20
	w.BatchSize = 1
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	ts := now.Add(-time.Hour).Format(time.RFC3339)
	produce(t, brokers, labelsTopic,
		kafka.Message{Value: []byte(`{"tx_id":"ok-1","card_id":"c1","terminal_id":"m1","ts":"` + ts + `","fraud":true}`)},
		kafka.Message{Value: []byte(`{"tx_id":"x","card_id":"c1","terminal_id":"m1","ts":"` + ts + `","fraud":"yes"}`)},
		kafka.Message{Value: []byte(`not json`)},
		kafka.Message{Key: bytes.Repeat([]byte{2}, 100_000), Value: []byte(`{"tx_id":`)},
	)

	sink := kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic, output.KindDeadLetter: deadTopic})
	p := newPipeline(t, brokers, "hostile", shippedModels(t), sink, stream.WithLabelsTopic(labelsTopic),
		stream.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		stream.WithDecoderOptions(features.WithMaxFieldBytes(256)))
	r := runPipeline(t, p)
	waitHandled(t, p, len(msgs))
	waitFor(t, waitBudget, "the label dead letters", func() bool { return len(readAll(t, brokers, deadTopic)) >= len(cat)-1+3 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	got := map[int64][]string{} // input offset -> reasons ("" for a score record)
	for _, topic := range []string{scoresTopic, deadTopic} {
		for _, m := range readAll(t, brokers, topic) {
			var rec struct {
				Topic  string `json:"topic"`
				Offset int64  `json:"offset"`
				Reason string `json:"reason"`
				TxID   string `json:"tx_id"`
			}
			if err := json.Unmarshal(m.Value, &rec); err != nil {
				t.Fatalf("%s record %.200s: %v", topic, m.Value, err)
			}
			off := rec.Offset
			if topic == scoresTopic {
				o, ok := offOf[rec.TxID]
				if !ok {
					t.Fatalf("score record of an unknown event %q", rec.TxID)
				}
				off = o
			} else if rec.Topic == labelsTopic {
				continue
			}
			got[off] = append(got[off], rec.Reason)
		}
	}
	losses, mismatches := 0, 0
	for off, reason := range want {
		rs := got[off]
		switch {
		case len(rs) == 0:
			losses++
			t.Errorf("offset %d (%q): no record", off, reason)
		case len(rs) > 1:
			mismatches++
			t.Errorf("offset %d: %d records %q, want one", off, len(rs), rs)
		case rs[0] != reason:
			mismatches++
			t.Errorf("offset %d: reason %q, want %q", off, rs[0], reason)
		}
	}
	if c := committedOffset(t, brokers, "hostile"); c != int64(len(msgs)) {
		t.Errorf("committed offset %d, want %d", c, len(msgs))
	}
	labelDead := 0
	for _, m := range readAll(t, brokers, deadTopic) {
		if bytes.Contains(m.Value, []byte(`"topic":"`+labelsTopic+`"`)) {
			labelDead++
		}
	}
	if labelDead != 3 {
		t.Errorf("%d label dead letters, want 3", labelDead)
	}
	t.Logf("hostile inputs: %d injected (%d label poison), %d events in all, losses %d, mismatches %d", len(cat), 3, len(msgs), losses, mismatches)
}
