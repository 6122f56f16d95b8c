package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/features/wire"
	"github.com/streamscore/streamscore/stream/local"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/encoding/protowire"
)

// Older writer schemas of the end-to-end test: what the producers wrote
// before the current ones (wire.AvroEventSchema, wire.ProtoSchema): no
// optional fields, time as epoch milliseconds.
const (
	e2eAvroOld = `{"type":"record","name":"Transaction","namespace":"streamscore","fields":[
		{"name":"tx_id","type":"string"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"card_id","type":"string"},
		{"name":"terminal_id","type":"string"},
		{"name":"amount","type":"double"}]}`
	e2eAvroNoTerminal = `{"type":"record","name":"Transaction","namespace":"streamscore","fields":[
		{"name":"tx_id","type":"string"},{"name":"ts","type":"long"},{"name":"card_id","type":"string"},{"name":"amount","type":"double"}]}`
	e2eProtoOld = `syntax = "proto3";
message Transaction { string tx_id = 1; int64 ts = 2; string card_id = 3; string terminal_id = 4; double amount = 5; }`
	e2eProtoNoTerminal = `syntax = "proto3";
message Transaction { string tx_id = 1; int64 ts = 2; string card_id = 3; double amount = 5; }`
)

// Schema ids in the test registry.
const (
	e2eOldID, e2eCurID, e2eLabelID, e2eBadID, e2eUnknownID = 11, 12, 13, 14, 99
)

// e2eOld encodes e with the older writer schema of format.
func e2eOld(t *testing.T, format string, e *features.Event) []byte {
	t.Helper()
	hdr := []byte{0, 0, 0, 0, e2eOldID}
	if format == "avro" {
		s, err := avro.ParseWithCache(e2eAvroOld, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := avro.Marshal(s, map[string]any{"tx_id": e.TxID, "ts": e.TS, "card_id": e.CardID, "terminal_id": e.TerminalID, "amount": e.Amount})
		if err != nil {
			t.Fatal(err)
		}
		return append(hdr, b...)
	}
	b := append(hdr, 0)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, e.TxID)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.TS.UnixMilli()))
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, e.CardID)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, e.TerminalID)
	b = protowire.AppendTag(b, 5, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(e.Amount))
}

// e2eRegistry serves a fake schema registry with the test's schemas over
// mutual TLS with basic auth; down makes it answer 503.
func e2eRegistry(t *testing.T, format string, ca *testCA, user, pass string, down *atomic.Bool) string {
	t.Helper()
	reg := srfake.NewRegistry(srfake.WithAuth("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))))
	typ := sr.TypeAvro
	cur, label, old, bad := wire.AvroEventSchema, wire.AvroLabelSchema, e2eAvroOld, e2eAvroNoTerminal
	if format == "protobuf" {
		typ = sr.TypeProtobuf
		cur, label, old, bad = wire.ProtoSchema, wire.ProtoSchema, e2eProtoOld, e2eProtoNoTerminal
	}
	reg.SeedSchema("transactions-value", 1, e2eOldID, sr.Schema{Schema: old, Type: typ})
	reg.SeedSchema("transactions-value", 2, e2eCurID, sr.Schema{Schema: cur, Type: typ})
	reg.SeedSchema("labels-value", 1, e2eLabelID, sr.Schema{Schema: label, Type: typ})
	reg.SeedSchema("other-value", 1, e2eBadID, sr.Schema{Schema: bad, Type: typ})
	pair, _, _ := ca.issue(t, "registry", false)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, `{"error_code":50301,"message":"registry restarting"}`, http.StatusServiceUnavailable)
			return
		}
		reg.Handler().ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRunAvroProtobuf runs the engine on Avro, then Protobuf, input in the
// Confluent wire format, its writer schemas in a fake registry reached by
// mutual TLS and basic auth: events written with an older and the current
// writer schema are scored, every bad record is dead-lettered with its
// reason, labels in the same format are applied; while the registry is
// down nothing is dead-lettered, the partitions wait and /readyz says why.
func TestRunAvroProtobuf(t *testing.T) {
	for _, format := range []string{"avro", "protobuf"} {
		t.Run(format, func(t *testing.T) { testRunWire(t, format) })
	}
}

func testRunWire(t *testing.T, format string) {
	k, err := local.StartKafka(map[string]int{"transactions": 2, "labels": 1, "scores": 1, "deadletter": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second*timeScale)
	defer cancel()
	ca := newTestCA(t, "sr-ca")
	_, certFile, keyFile := ca.issue(t, "streamscore", true)
	var down atomic.Bool
	down.Store(true)
	const user, pass = "scorer", "s3cret-sr"
	url := e2eRegistry(t, format, ca, user, pass, &down)

	appendEvent, appendLabel := wire.AppendAvroEvent, wire.AppendAvroLabel
	if format == "protobuf" {
		appendEvent, appendLabel = wire.AppendProtoEvent, wire.AppendProtoLabel
	}
	g, err := synth.New(synth.Config{Seed: 5, Cards: 80, Terminals: 20, FraudRate: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-3 * time.Hour).Truncate(time.Millisecond)
	const n = 400
	var events, labels []kafka.Message
	good := map[string]bool{}
	goodLabels := 0
	for i := range n {
		tx := g.Next(start.Add(time.Duration(i) * 2 * time.Hour / n))
		ev := tx.Event
		ev.TS = ev.TS.Truncate(time.Millisecond)
		var v []byte
		if i%2 == 0 {
			v = appendEvent(nil, e2eCurID, &ev)
		} else {
			v = e2eOld(t, format, &ev) // schema evolution: the older writer
		}
		events = append(events, kafka.Message{Key: []byte(ev.CardID), Value: v})
		good[ev.TxID] = true
		if lb, ok := g.LabelFor(tx); ok && lb.TS.Before(time.Now()) {
			labels = append(labels, kafka.Message{Key: []byte(lb.CardID), Value: appendLabel(nil, e2eLabelID, &lb)})
			goodLabels++
		}
	}
	bad := func(ev features.Event, mutate func(*features.Event)) features.Event {
		mutate(&ev)
		return ev
	}
	base := features.Event{TxID: "bad", TS: start, CardID: "c-bad", TerminalID: "m-bad", Amount: 1}
	wantReasons := map[string]int{}
	nBad := 0
	for _, b := range []struct {
		value  []byte
		reason string
	}{
		{appendEvent(nil, e2eUnknownID, &base), features.ReasonUnknownSchema},
		{appendEvent(nil, e2eBadID, &base), features.ReasonSchemaMismatch},
		{[]byte(`{"tx_id":"json-by-mistake"}`), features.ReasonMalformedRecord},
		{appendEvent(nil, e2eCurID, &base)[:9], features.ReasonMalformedRecord},
		{appendEvent(nil, e2eCurID, ptr(bad(base, func(e *features.Event) { e.Amount = -5 }))), features.ReasonInvalidAmount},
		{appendEvent(nil, e2eCurID, ptr(bad(base, func(e *features.Event) { e.CardID = "" }))), features.ReasonEmptyField},
		{appendEvent(nil, e2eCurID, ptr(bad(base, func(e *features.Event) { e.TerminalID = "4111111111111111" }))), features.ReasonClearPAN},
		{nil, features.ReasonEmpty},
	} {
		events = append(events, kafka.Message{Key: []byte("bad"), Value: b.value})
		wantReasons[b.reason]++
		nBad++
	}
	badLabel := features.Label{TxID: "bad", CardID: "c", TerminalID: "m", TS: start}
	labels = append(labels, kafka.Message{Key: []byte("bad"), Value: appendLabel(nil, e2eUnknownID, &badLabel)})
	for topic, msgs := range map[string][]kafka.Message{"transactions": events, "labels": labels} {
		w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}

	passFile := writeSecret(t, t.TempDir(), "sr-pass", pass+"\n")
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--brokers", strings.Join(k.Brokers(), ","), "--nats", "", "--labels-topic", "labels",
		"--scores-topic", "scores", "--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", "deadletter",
		"--input-format", format, "--schema-registry", url, "--schema-registry-tls-ca", ca.caFile,
		"--schema-registry-tls-cert", certFile, "--schema-registry-tls-key", keyFile,
		"--schema-registry-user", user, "--schema-registry-password-file", passFile}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := buildEngine(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.pipeline.Run(rctx) }()
	defer func() { rcancel(); <-done }()
	ready := func() (int, string) {
		rec := httptest.NewRecorder()
		readyHandler(e.pipeline, e.health).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}

	// Registry down: /readyz names it, and no record is dead-lettered
	// meanwhile (the non-registry bad records may be: they need no schema).
	poll(t, 30*time.Second*timeScale, "/readyz to report the registry down", func() bool {
		code, body := ready()
		return code == http.StatusServiceUnavailable && strings.Contains(body, registryTransport+" down (unavailable)")
	})
	time.Sleep(500 * time.Millisecond)
	st := e.pipeline.Stats()
	if got := st.Scored.Load(); got != 0 {
		t.Fatalf("%d events scored while the registry is down", got)
	}
	if got := st.DeadLettered.Load(); got > 2 {
		t.Fatalf("%d dead letters while the registry is down; only the 2 records without a schema id may be", got)
	}

	down.Store(false)
	poll(t, 60*time.Second*timeScale, "every event scored or dead-lettered", func() bool {
		return st.Scored.Load() == int64(len(good)) && st.DeadLettered.Load() == int64(nBad)
	})
	poll(t, 30*time.Second*timeScale, "the labels applied", func() bool {
		return wireMetric(t, reg, "streamscore_stream_labels_total", "applied") == float64(goodLabels) &&
			wireMetric(t, reg, "streamscore_stream_labels_total", "deadlettered") == 1
	})
	if code, body := ready(); strings.Contains(body, registryTransport) {
		t.Errorf("/readyz still names the registry: %d %q", code, body)
	}

	scored := map[string]bool{}
	for _, m := range readAllPlain(t, ctx, k.Brokers(), "scores") {
		var r struct {
			TxID string `json:"tx_id"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		scored[r.TxID] = true
	}
	if len(scored) != len(good) {
		t.Fatalf("%d distinct events scored, want %d", len(scored), len(good))
	}
	for id := range good {
		if !scored[id] {
			t.Fatalf("event %s not scored", id)
		}
	}
	gotReasons := map[string]int{}
	for _, m := range readAllPlain(t, ctx, k.Brokers(), "deadletter") {
		var r struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if r.Topic == "labels" {
			if r.Reason != features.ReasonUnknownSchema {
				t.Errorf("label dead letter reason %q, want unknown_schema", r.Reason)
			}
			continue
		}
		gotReasons[r.Reason]++
	}
	if fmt.Sprint(sorted(gotReasons)) != fmt.Sprint(sorted(wantReasons)) {
		t.Fatalf("dead-letter reasons %v, want %v", gotReasons, wantReasons)
	}
	if v := wireMetric(t, reg, "streamscore_features_schema_fetches_total", "ok"); v < 3 {
		t.Errorf("schema fetches ok: %v, want >= 3", v)
	}
	if v := wireMetric(t, reg, "streamscore_features_schema_fetches_total", "error"); v == 0 {
		t.Error("no failed schema fetch counted while the registry was down")
	}
}

func ptr[T any](v T) *T { return &v }

func sorted(m map[string]int) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

// wireMetric returns the value of the series of name whose only label has
// value label.
func wireMetric(t *testing.T, g prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestWireInputValidate: bad combinations of the input format flags are
// refused with a message naming the flag.
func TestWireInputValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    wireInput
		env  string // STREAMSCORE_SCHEMA_REGISTRY_PASSWORD
		want string // "" for valid
	}{
		{name: "json default", w: wireInput{}},
		{name: "avro", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr:8081"}},
		{name: "protobuf events, json labels", w: wireInput{InputFormat: "protobuf", LabelsFormat: "json", SchemaRegistry: "http://sr"}},
		{name: "user with env password", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", SchemaRegistryUser: "u"}, env: "p"},
		{name: "unknown format", w: wireInput{InputFormat: "xml"}, want: "--input-format"},
		{name: "unknown labels format", w: wireInput{LabelsFormat: "csv", SchemaRegistry: "http://sr"}, want: "--labels-format"},
		{name: "avro without registry", w: wireInput{InputFormat: "avro"}, want: "need --schema-registry"},
		{name: "registry without binary format", w: wireInput{SchemaRegistry: "http://sr"}, want: "--schema-registry is set but"},
		{name: "mapping with json", w: wireInput{InputMapping: "card_id=card"}, want: "--input-mapping is set but"},
		{name: "bad URL", w: wireInput{InputFormat: "avro", SchemaRegistry: "sr:8081"}, want: "want http(s)"},
		{name: "password in URL", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://u:secret@sr"}, want: "credentials in the URL"},
		{name: "cert without key", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", SchemaRegistryTLSCert: "c.pem"}, want: "go together"},
		{name: "user without password", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", SchemaRegistryUser: "u"}, want: "needs a password"},
		{name: "password without user", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", SchemaRegistryPassFile: "f"}, want: "--schema-registry-user is empty"},
		{name: "file and env", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", SchemaRegistryUser: "u", SchemaRegistryPassFile: "f"}, env: "p", want: "use one"},
		{name: "bad mapping pair", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", InputMapping: "card_id"}, want: "contract=path"},
		{name: "mapping of a non-contract field", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", InputMapping: "pan=card.pan"}, want: "not a field of the event"},
		{name: "required field unread", w: wireInput{InputFormat: "avro", SchemaRegistry: "https://sr", InputMapping: "amount=-"}, want: "required field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			if tc.env != "" {
				t.Setenv(envRegistryPassword, tc.env)
			}
			if tc.w.SchemaRegistryMaxSchema == 0 {
				tc.w.SchemaRegistryMaxSchema = wire.DefaultMaxSchemas
			}
			err := tc.w.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestGenFormat: gen --format avro|protobuf registers its schemas and
// writes every event and label in the wire format, which the input
// decoders read back.
func TestGenFormat(t *testing.T) {
	for _, format := range []string{"avro", "protobuf"} {
		t.Run(format, func(t *testing.T) {
			k, err := local.StartKafka(map[string]int{"transactions": 2, "labels": 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(k.Close)
			reg := srfake.New()
			t.Cleanup(reg.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
			defer cancel()
			to := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
			clearEnv(t)
			if err := cmdGen(ctx, []string{"--brokers", strings.Join(k.Brokers(), ","), "--format", format, "--schema-registry", reg.URL(),
				"--seed", "5", "--cards", "200", "--terminals", "40", "--from", to.Add(-20 * 24 * time.Hour).Format(time.RFC3339),
				"--to", to.Format(time.RFC3339), "--warmup", "480h", "--progress=false", "--count", "1500"}); err != nil {
				t.Fatal(err)
			}
			f, _ := wire.ParseFormat(format)
			cl, _ := sr.NewClient(sr.URLs(reg.URL()))
			r, _ := wire.NewRegistry(cl)
			jd, err := features.NewDecoder()
			if err != nil {
				t.Fatal(err)
			}
			d, err := wire.New(f, r, jd)
			if err != nil {
				t.Fatal(err)
			}
			txs := readAllPlain(t, ctx, k.Brokers(), "transactions")
			if len(txs) != 1500 {
				t.Fatalf("%d events produced, want 1500", len(txs))
			}
			for _, m := range txs {
				var e features.Event
				if err := d.Decode(m.Value, &e); err != nil {
					t.Fatalf("event at offset %d: %v", m.Offset, err)
				}
				if string(m.Key) != e.CardID {
					t.Fatalf("key %q, card %q", m.Key, e.CardID)
				}
			}
			lbs := readAllPlain(t, ctx, k.Brokers(), "labels")
			if len(lbs) == 0 {
				t.Fatal("no label produced")
			}
			for _, m := range lbs {
				var l features.Label
				if err := d.DecodeLabel(m.Value, &l); err != nil {
					t.Fatalf("label at offset %d: %v", m.Offset, err)
				}
			}
			if !reg.SubjectExists("transactions-value") || !reg.SubjectExists("labels-value") {
				t.Fatal("schemas not registered under <topic>-value")
			}
		})
	}
}

// TestSchemaRegistryCheckAtStart: a registry that refuses the credentials
// or the TLS handshake fails the start naming the cause (never the
// password); one that is down is reported in /readyz and waited for.
func TestSchemaRegistryCheckAtStart(t *testing.T) {
	ca := newTestCA(t, "sr-ca")
	_, certFile, keyFile := ca.issue(t, "streamscore", true)
	var down atomic.Bool
	url := e2eRegistry(t, "avro", ca, "scorer", "right-password", &down)
	dir := t.TempDir()
	good, wrong := writeSecret(t, dir, "good", "right-password"), writeSecret(t, dir, "wrong", "wrong-password")
	for _, tc := range []struct {
		name string
		args []string
		down bool
		want string // "" for a start
	}{
		{name: "ok", args: []string{"--schema-registry-tls-cert", certFile, "--schema-registry-tls-key", keyFile, "--schema-registry-password-file", good}},
		{name: "wrong password", args: []string{"--schema-registry-tls-cert", certFile, "--schema-registry-tls-key", keyFile, "--schema-registry-password-file", wrong}, want: "refused the credentials"},
		{name: "no client certificate", args: []string{"--schema-registry-password-file", good}, want: "TLS"},
		{name: "down", args: []string{"--schema-registry-tls-cert", certFile, "--schema-registry-tls-key", keyFile, "--schema-registry-password-file", good}, down: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down.Store(tc.down)
			fs, cfg := newRunFlags()
			clearEnv(t)
			args := append([]string{"--brokers", "127.0.0.1:1", "--nats", "", "--input-format", "avro", "--schema-registry", url,
				"--schema-registry-tls-ca", ca.caFile, "--schema-registry-user", "scorer"}, tc.args...)
			if err := parseFlags(fs, args); err != nil {
				t.Fatal(err)
			}
			e, err := buildEngine(cfg, prometheus.NewRegistry(), quietLog())
			if err == nil {
				defer e.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("start: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("start: %v, want an error with %q", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), "right-password") || strings.Contains(err.Error(), "wrong-password")):
				t.Fatalf("the error shows the password: %v", err)
			}
			if err == nil {
				problems := strings.Join(e.health.Problems(), ";")
				if tc.down != strings.Contains(problems, registryTransport) {
					t.Fatalf("registry down %v, /readyz problems %q", tc.down, problems)
				}
			}
		})
	}
}
