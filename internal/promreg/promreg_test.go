package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamscore/streamscore/internal/promreg"
)

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "streamscore_test_things_total", Help: "Things."}
	first, err := promreg.Register(reg, prometheus.NewCounterVec(opts, []string{"sink"}))
	if err != nil {
		t.Fatalf("first Register: %v", err)
	}
	second, err := promreg.Register(reg, prometheus.NewCounterVec(opts, []string{"sink"}))
	if err != nil {
		t.Fatalf("second Register of the same metric: %v", err)
	}
	if first != second {
		t.Errorf("second Register returned a new collector, want the one already registered")
	}
	second.WithLabelValues("a").Inc()
	if got := testutilValue(t, reg); got != 1 {
		t.Errorf("counter = %v, want 1 (both share one series)", got)
	}
	// The same name with other labels is a wiring bug: an error.
	if _, err := promreg.Register(reg, prometheus.NewCounterVec(opts, []string{"other"})); err == nil {
		t.Errorf("Register of a name already registered with other labels: nil error, want one")
	}
	// The same description under another collector type is an error too.
	if _, err := promreg.Register(reg, prometheus.NewCounter(opts)); err == nil {
		t.Errorf("Register of the same name as a plain Counter: nil error, want one")
	}
}

func testutilValue(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
