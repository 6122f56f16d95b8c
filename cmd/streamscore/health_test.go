package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream/local"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConnHealth: a transport that is down turns /readyz to 503 with its
// cause, every report is counted, and it is ready again once it is back.
func TestConnHealth(t *testing.T) {
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--brokers", "127.0.0.1:1", "--nats", ""}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := buildEngine(cfg, reg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := e.health
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		readyHandler(e.pipeline, h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	h.Down("kafka", "tls", errors.New("x509: certificate signed by unknown authority"))
	h.Down("kafka", "tls", errors.New("x509: certificate signed by unknown authority"))
	code, body := get()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka down (tls)") || strings.Contains(body, "x509") {
		t.Fatalf("GET /readyz with kafka down: %d %q", code, body)
	}
	if got := testutil.ToFloat64(h.failures.WithLabelValues("kafka", "tls")); got != 2 {
		t.Fatalf("failures counted %v, want 2", got)
	}
	h.Up("kafka")
	if p := h.Problems(); len(p) != 0 {
		t.Fatalf("problems after Up: %q", p)
	}
}

// TestReadyzSinkDown: an output topic that does not exist (a typo) used to
// be retried without end, without a log line, with /readyz 200. Now the
// sink's failures make /readyz 503 with the cause, and are counted.
func TestReadyzSinkDown(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: "transactions", BatchTimeout: time.Millisecond}
	defer w.Close()
	ev := fmt.Sprintf(`{"tx_id":"t-1","ts":%q,"card_id":"c1","terminal_id":"m1","amount":3}`, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano))
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("c1"), Value: []byte(ev)}); err != nil {
		t.Fatal(err)
	}
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--brokers", strings.Join(k.Brokers(), ","), "--nats", "", "--labels-topic", "",
		"--scores-topic", "scores-typo", "--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", "", "--drain-timeout", "1s"}); err != nil {
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
	var body string
	poll(t, 30*time.Second*timeScale, "/readyz to report the sink", func() bool {
		rec := httptest.NewRecorder()
		readyHandler(e.pipeline, e.health).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		body = rec.Body.String()
		return rec.Code == http.StatusServiceUnavailable && strings.Contains(body, "sink kafka down (")
	})
	if !strings.Contains(body, "sink kafka down (unavailable)") {
		t.Errorf("/readyz body %q does not name the cause", body)
	}
	if d := strings.Join(e.health.Details(), "\n"); !strings.Contains(d, "Unknown Topic Or Partition") {
		t.Errorf("the details %q do not hold the error", d)
	}
	if n, err := testutil.GatherAndCount(reg, "streamscore_transport_failures_total"); err != nil || n == 0 {
		t.Errorf("no streamscore_transport_failures_total series (%v)", err)
	}
}
