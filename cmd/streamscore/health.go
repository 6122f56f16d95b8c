package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/stream"
)

// connHealth is the health of the engine's connections (the Kafka brokers,
// NATS), as the transports report it: a connection is down with a cause
// (TLS, authentication, unreachable) until it reports up again. /readyz
// answers 503 while any connection is down, with the causes in the body.
//
// Every report of a failure is counted in
// streamscore_transport_failures_total{transport, cause}; a transition is
// logged (at error level when a connection goes down or its cause changes, at
// info when it comes back), so a connection that keeps failing for the same
// reason logs once, not once per retry.
//
// Safe for concurrent use.
type connHealth struct {
	log      *slog.Logger
	failures *prometheus.CounterVec

	mu   sync.Mutex
	down map[string]downCause // transport -> why it is down
}

type downCause struct {
	cause string // bounded: a metric label value (tls, auth, connect, ...)
	err   string // the error text, secrets redacted by the reporter
}

func newConnHealth(reg prometheus.Registerer, log *slog.Logger) *connHealth {
	h := &connHealth{
		log: log,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_transport_failures_total",
			Help: "Connection failures reported by a transport (kafka, nats), by cause (tls, auth, connect, ...).",
		}, []string{"transport", "cause"}),
		down: map[string]downCause{},
	}
	if reg != nil {
		reg.MustRegister(h.failures)
	}
	return h
}

// Down records that transport failed for cause (a short, bounded word: it is
// a metric label) with err. It counts every call and logs at error level when
// the transport was up or failed for another cause before.
func (h *connHealth) Down(transport, cause string, err error) {
	h.failures.WithLabelValues(transport, cause).Inc()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	h.mu.Lock()
	prev, wasDown := h.down[transport]
	h.down[transport] = downCause{cause: cause, err: msg}
	h.mu.Unlock()
	if !wasDown || prev.cause != cause {
		h.log.Error("connection down", "transport", transport, "cause", cause, "err", msg)
	}
}

// Up records that transport works again; it logs the recovery once.
func (h *connHealth) Up(transport string) {
	h.mu.Lock()
	prev, wasDown := h.down[transport]
	delete(h.down, transport)
	h.mu.Unlock()
	if wasDown {
		h.log.Info("connection back", "transport", transport, "was", prev.cause)
	}
}

// Problems returns one line per transport that is down, sorted:
// "kafka down (tls)". It names the cause, not the error text: /readyz is
// usually unauthenticated (--http-open probes) and an error names hosts,
// files and brokers; the error itself is in the log line of the transition.
func (h *connHealth) Problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.down))
	for t, d := range h.down {
		out = append(out, fmt.Sprintf("%s down (%s)", t, d.cause))
	}
	sort.Strings(out)
	return out
}

// Details is Problems with each error's text, for the log.
func (h *connHealth) Details() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.down))
	for t, d := range h.down {
		out = append(out, fmt.Sprintf("%s down (%s): %s", t, d.cause, d.err))
	}
	sort.Strings(out)
	return out
}

// readyHandler is GET /readyz: 200 and "running" while p consumes and every
// connection h knows of is up, else 503 with the phase (new, starting — e.g.
// restoring a state snapshot —, draining, stopped), a line saying how many
// partitions are being restored from their checkpoints (after an
// assignment) and one line per connection that is down, so that a rolling update waits for a new
// instance's restore and a load balancer stops sending to an instance that
// lost its broker. /healthz, the liveness probe, answers ok whatever the
// phase. h may be nil.
func readyHandler(p *stream.Pipeline, h *connHealth) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ph := p.Phase()
		var problems []string
		if n := p.Restoring(); n > 0 {
			problems = append(problems, fmt.Sprintf("restoring %d partitions from their checkpoints", n))
		}
		if h != nil {
			problems = append(problems, h.Problems()...)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ph != stream.PhaseRunning || len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, ph)
		for _, s := range problems {
			fmt.Fprintln(w, s)
		}
	})
}
