package main

import (
	"errors"
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
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka down (tls): x509: certificate signed by unknown authority") {
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
