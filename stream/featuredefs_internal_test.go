package stream

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAlertGuard(t *testing.T) {
	reg := prometheus.NewRegistry()
	met, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	clock := time.Unix(1000, 0)
	g := &alertGuard{model: "fraud-mlp@1", valid: 0.01, window: 1000, factor: 5,
		high: met.rateAnomalies.WithLabelValues("fraud", "high"), low: met.rateAnomalies.WithLabelValues("fraud", "low"),
		log: slog.New(slog.NewTextHandler(&logs, nil)), now: func() time.Time { return clock }}
	count := func(dir string) float64 { return testutil.ToFloat64(met.rateAnomalies.WithLabelValues("fraud", dir)) }

	for _, tc := range []struct {
		name          string
		batches       [][2]int // events, alerts
		high, low     float64
		logged        int
		advanceMinute bool
	}{
		{"in range", [][2]int{{500, 5}, {500, 20}}, 0, 0, 0, false},           // 2.5% < 5%
		{"partial window", [][2]int{{999, 900}}, 0, 0, 0, false},              // not judged yet
		{"high", [][2]int{{1, 0}}, 1, 0, 1, false},                            // 900/1000
		{"high again, within a minute", [][2]int{{1000, 60}}, 2, 0, 1, false}, // counted, not logged
		{"low after a minute", [][2]int{{1000, 1}}, 2, 1, 2, true},            // 0.1% < 0.2%
		{"boundary", [][2]int{{1000, 2}, {1000, 50}}, 2, 1, 2, false},         // 0.2% and 5% are inside
	} {
		if tc.advanceMinute {
			clock = clock.Add(time.Minute)
		}
		for _, b := range tc.batches {
			g.add(b[0], b[1])
		}
		if h, l := count("high"), count("low"); h != tc.high || l != tc.low {
			t.Fatalf("%s: high %v low %v, want %v %v", tc.name, h, l, tc.high, tc.low)
		}
		if n := strings.Count(logs.String(), "alert rate far outside"); n != tc.logged {
			t.Fatalf("%s: %d log lines, want %d:\n%s", tc.name, n, tc.logged, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "anomalous_windows_not_logged=1") {
		t.Fatalf("the second log line does not count the window not logged:\n%s", logs.String())
	}
}

// TestAlertGuardColdState: a high alert rate after a start without a
// restored state is reported as what it usually is (every card looks new
// until its windows fill), with the state's origin and the events scored
// since the start; after a restore, or for a low rate, the warning is the
// plain one.
func TestAlertGuardColdState(t *testing.T) {
	reg := prometheus.NewRegistry()
	met, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		restored bool
		alerts   int
		cold     bool
		attrs    string
	}{
		{"empty start, high", false, 900, true, "state_restored=false scored_since_start=4242"},
		{"empty start, low", false, 0, false, "state_restored=false"},
		{"restored, high", true, 900, false, "state_restored=true"},
	} {
		var logs bytes.Buffer
		g := &alertGuard{model: "fraud-mlp@1", valid: 0.01, window: 1000, factor: 5,
			high: met.rateAnomalies.WithLabelValues("fraud", "high"), low: met.rateAnomalies.WithLabelValues("fraud", "low"),
			log: slog.New(slog.NewTextHandler(&logs, nil)), now: time.Now,
			restored: func() bool { return tc.restored }, scored: func() int64 { return 4242 }}
		g.add(1000, tc.alerts)
		out := logs.String()
		if got := strings.Contains(out, "the state started empty"); got != tc.cold {
			t.Errorf("%s: cold-state wording %v, want %v:\n%s", tc.name, got, tc.cold, out)
		}
		if !strings.Contains(out, "alert rate far outside") || !strings.Contains(out, tc.attrs) {
			t.Errorf("%s: want the warning with %q:\n%s", tc.name, tc.attrs, out)
		}
	}
}
