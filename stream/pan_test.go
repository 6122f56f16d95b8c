package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream"
)

// Luhn-valid card numbers (test numbers of the card schemes) and a CVV that
// the tests send and then search every output for.
var testPANs = []string{"4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"}

const (
	testCVV    = "cvv-9731"
	testPANKey = "k2 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n" +
		"k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
)

// TestPANNeverInClear sends events and labels whose card_id (and key, and in
// some events another field) is a card number through the whole pipeline —
// Kafka in, NATS and Kafka out, labels, a state snapshot — with and without
// a PAN key, and searches every output for the digits: score, alert and
// audit records and their keys, dead letters, the log, the snapshot files
// and the metrics.
func TestPANNeverInClear(t *testing.T) {
	for _, withKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("key=%v", withKey), func(t *testing.T) { testPANNeverInClear(t, withKey) })
	}
}

func testPANNeverInClear(t *testing.T, withKey bool) {
	e := newEnv(t)
	now := time.Now().UTC()
	var key *features.PANKey
	var opts []stream.Option
	if withKey {
		var err error
		if key, err = features.ParsePANKey([]byte(testPANKey)); err != nil {
			t.Fatal(err)
		}
		opts = append(opts, stream.WithDecoderOptions(features.WithPANKey(key)))
	}
	// Events: 10 per card, keyed by the card number; each card's events
	// carry an unknown field with the card number again and a CVV.
	var msgs []kafka.Message
	good := 0
	for i := range 10 {
		for c, pan := range testPANs {
			ts := now.Add(-time.Hour + time.Duration(i*len(testPANs)+c)*time.Second).Format(time.RFC3339Nano)
			msgs = append(msgs, kafka.Message{Key: []byte(pan), Value: fmt.Appendf(nil,
				`{"tx_id":"pan-%d-%d","ts":%q,"card_id":%q,"terminal_id":"m%d","amount":%d.5,"pan":%q,"cvv":%q}`,
				c, i, ts, pan, i%3, 10+i*c, pan, testCVV)})
			good++
		}
	}
	ts := now.Add(-time.Minute).Format(time.RFC3339Nano)
	type bad struct{ value, reason string }
	bads := []bad{
		// A card number in another field: refused with or without a key.
		{fmt.Sprintf(`{"tx_id":"b1","ts":%q,"card_id":"c-1","terminal_id":"4111 1111 1111 1111","amount":1,"cvv":%q}`, ts, testCVV), features.ReasonClearPAN},
		{fmt.Sprintf(`{"tx_id":"%s","ts":%q,"card_id":"c-1","terminal_id":"m1","amount":1}`, testPANs[2], ts), features.ReasonClearPAN},
		// Invalid for other reasons, with the card number in card_id.
		{fmt.Sprintf(`{"tx_id":"b3","ts":%q,"card_id":%q,"terminal_id":"m1","amount":-3,"cvv":%q}`, ts, testPANs[0], testCVV), features.ReasonInvalidAmount},
		{fmt.Sprintf(`{"tx_id":"b4","ts":%q,"card_id":%s,"terminal_id":"m1","amount":1}`, ts, testPANs[1]), features.ReasonWrongType},
		{fmt.Sprintf(`{"tx_id":"b5","ts":%q,"card_id":%q,"terminal_id":"m1","amount":1,"cvv":%q`, ts, testPANs[3], testCVV), features.ReasonMalformedJSON},
	}
	for _, b := range bads {
		msgs = append(msgs, kafka.Message{Key: []byte(testPANs[0]), Value: []byte(b.value)})
	}
	if !withKey {
		good = 0 // every event has a card number as card_id
	}
	produce(t, e.brokers, txTopic, msgs...)
	// Labels keyed and identified by the card number.
	var labels []kafka.Message
	for c, pan := range testPANs {
		labels = append(labels, kafka.Message{Key: []byte(pan), Value: fmt.Appendf(nil,
			`{"tx_id":"pan-%d-0","card_id":%q,"terminal_id":"m0","ts":%q,"fraud":true,"cvv":%q}`, c, pan, ts, testCVV)})
	}
	produce(t, e.brokers, labelsTopic, labels...)

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	opts = append(opts, stream.WithStateDir(dir), stream.WithLogger(log))
	p := e.newPipeline(t, "pan", reg, opts...)
	r := runPipeline(t, p)
	waitHandled(t, p, len(msgs))
	waitFor(t, waitBudget, "labels handled", func() bool {
		return testutilSum(t, reg, "streamscore_stream_labels_total") >= float64(len(labels))
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := p.Stats().Scored.Load(); got != int64(good) {
		t.Errorf("scored %d events, want %d", got, good)
	}
	labelsOutcome := func(outcome string) float64 {
		return metricValue(t, reg, "streamscore_stream_labels_total", "outcome", outcome)
	}
	if withKey && labelsOutcome("applied") != float64(len(labels)) {
		t.Errorf("labels applied %v, want %d: the labels of pseudonymised cards must reach them", labelsOutcome("applied"), len(labels))
	}
	if !withKey && labelsOutcome("deadlettered") != float64(len(labels)) {
		t.Errorf("labels dead-lettered %v, want %d (clear card numbers without a key)", labelsOutcome("deadlettered"), len(labels))
	}

	// Everything the engine wrote, in one place.
	var out []struct{ where, text string }
	add := func(where string, b []byte) { out = append(out, struct{ where, text string }{where, string(b)}) }
	reasons := map[string]int{}
	for _, topic := range []string{scoresTopic, alertsTopic, auditTopic, deadTopic} {
		for _, m := range readAll(t, e.brokers, topic) {
			add(topic+" key", m.Key)
			add(topic+" value", m.Value)
			for _, h := range m.Headers {
				add(topic+" header", h.Value)
			}
			var rec struct {
				CardID    string          `json:"card_id"`
				CardKeyID string          `json:"card_key_id"`
				Reason    string          `json:"reason"`
				Redacted  json.RawMessage `json:"value_redacted"`
				HMACKey   string          `json:"value_hmac_key_id"`
			}
			if err := json.Unmarshal(m.Value, &rec); err != nil {
				t.Fatalf("%s record %s: %v", topic, m.Value, err)
			}
			switch topic {
			case deadTopic:
				reasons[rec.Reason]++
				if withKey && rec.HMACKey != "k2" {
					t.Errorf("dead letter %s: want an HMAC digest under k2", m.Value)
				}
				if strings.Contains(string(m.Value), "value_b64") {
					t.Errorf("dead letter keeps the raw message: %s", m.Value)
				}
			default:
				// With a key the card is its pseudonym under the active key,
				// which the record names, and so is the record's key.
				if !strings.HasPrefix(rec.CardID, "p1:k2:") || rec.CardKeyID != "k2" || string(m.Key) != rec.CardID {
					t.Errorf("%s record key %q card_id %q card_key_id %q: want the k2 pseudonym", topic, m.Key, rec.CardID, rec.CardKeyID)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioBudget)
	defer cancel()
	st, err := e.js.Stream(ctx, jsStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		add("nats "+m.Subject, m.Data)
		for k, v := range m.Header {
			add("nats header", []byte(k+"="+strings.Join(v, ",")))
		}
	}
	add("log", []byte(logs.String()))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "streamscore_stream_events_deadlettered_total") {
		t.Fatalf("/metrics: %d %.200s", rec.Code, rec.Body.String())
	}
	add("metrics", rec.Body.Bytes())
	files := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			add("snapshot "+path, b)
			files++
		}
		return nil
	})
	if files == 0 {
		t.Fatal("no snapshot file written")
	}

	for _, o := range out {
		for _, secret := range append([]string{testCVV}, testPANs...) {
			if i := strings.Index(o.text, secret); i >= 0 {
				t.Errorf("%s holds %q: …%s…", o.where, secret, o.text[max(0, i-80):min(len(o.text), i+80)])
			}
		}
		// (No generic PANIn check here: snapshot names, digests and float
		// metrics hold 13-19 digit runs that pass the Luhn check by chance.)
	}

	// Every bad message is dead-lettered with its reason; without a key the
	// good ones are too (clear_pan), as are the labels.
	want := map[string]int{}
	for _, b := range bads {
		want[b.reason]++
	}
	if !withKey {
		want[features.ReasonClearPAN] += len(testPANs)*10 + len(labels)
	}
	for reason, n := range want {
		if reasons[reason] != n {
			t.Errorf("%d dead letters with reason %s, want %d (all: %v)", reasons[reason], reason, n, reasons)
		}
	}
	if withKey {
		// The snapshot holds each card under its pseudonym.
		var snap strings.Builder
		for _, o := range out {
			if strings.HasPrefix(o.where, "snapshot") {
				snap.WriteString(o.text)
			}
		}
		for _, pan := range testPANs {
			if ps := key.Pseudonym(pan); !strings.Contains(snap.String(), ps) {
				t.Errorf("the snapshot has no state for the pseudonym %s", ps)
			}
		}
	}
}

// testutilSum is the sum of a counter vector's values, 0 before any.
func testutilSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var s float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				s += m.GetCounter().GetValue()
			}
		}
	}
	return s
}
