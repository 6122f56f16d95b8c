package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoSubprocess runs a short `streamscore demo` end to end: embedded
// broker and NATS, a one-day warm-up, 20 s of live traffic, and the summary.
func TestDemoSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for 20 s; skipped with -short")
	}
	const duration = 20 * time.Second
	start := time.Now()
	sub := startStreamscore(t, nil, "demo",
		"--duration", duration.String(), "--warmup", "24h", "--history", "240h",
		"--rate", "1000", "--cards", "2000", "--terminals", "200", "--quiet")
	if err := sub.wait(duration + 60*time.Second*timeScale); err != nil {
		t.Fatalf("demo exited with %v, want 0", err)
	}
	out := sub.stdout.String()
	t.Logf("demo ran %v", time.Since(start).Round(time.Millisecond))

	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	summary := regexp.MustCompile(`^demo: scored \d+ events, \d+ alerts, precision [0-9.]+, recall [0-9.]+, p99 latency [0-9.]+ ms$`)
	if !summary.MatchString(last) {
		t.Errorf("last line %q does not match %v", last, summary)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^demo: Kafka broker 127\.0\.0\.1:\d+ \(`),
		regexp.MustCompile(`(?m)^demo: NATS server nats://127\.0\.0\.1:\d+ \(`),
	} {
		if !re.MatchString(out) {
			t.Errorf("stdout has no line matching %v", re)
		}
	}
	if strings.Contains(out, "stopped during the warm-up") {
		t.Errorf("demo never left the warm-up in %v: no live-phase summary", duration)
	}
	t.Logf("%s", last)
}

// TestDemoStoppedInWarmup: a demo stopped before its live phase says so
// and gives no precision, recall or latency (those are of the live phase:
// it once printed zeros for them, as if measured).
func TestDemoStoppedInWarmup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo; skipped with -short")
	}
	sub := startStreamscore(t, nil, "demo",
		"--duration", "3s", "--warmup", "2160h", "--history", "2184h",
		"--rate", "1000", "--cards", "2000", "--terminals", "200", "--quiet")
	if err := sub.wait(60 * time.Second * timeScale); err != nil {
		t.Fatalf("demo exited with %v, want 0", err)
	}
	out := strings.TrimRight(sub.stdout.String(), "\n")
	last := out[strings.LastIndexByte(out, '\n')+1:]
	want := regexp.MustCompile(`^demo: stopped during the warm-up: scored \d+ events; precision, recall and latency are measured in the live phase`)
	if !want.MatchString(last) {
		t.Errorf("last line %q does not match %v", last, want)
	}
	if strings.Contains(out, "precision 0.000") {
		t.Errorf("a warm-up-only run printed a precision:\n%s", out)
	}
}
