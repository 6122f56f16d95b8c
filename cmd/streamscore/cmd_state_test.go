package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// TestStateCheck writes a real snapshot with run's engine (in process,
// no sinks) and checks it with `streamscore state`: the same flags
// restore it; another --workers or TTL would be refused; an empty
// directory has none; --json carries the same facts.
func TestStateCheck(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 2, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	g, err := synth.New(synth.Config{Seed: 3, Cards: 50, Terminals: 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: "transactions", Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	t.Cleanup(func() { w.Close() })
	const n = 200
	start := time.Now().Add(-2 * time.Hour)
	var msgs []kafka.Message
	for i := range n {
		tx := g.Next(start.Add(time.Duration(i) * time.Second))
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "state")
	base := []string{"--brokers", k.Brokers()[0], "--nats", "", "--scores-topic", "scores", "--alerts-topic", "",
		"--audit-topic", "", "--deadletter-topic", "", "--labels-topic", "", "--state-dir", dir}
	clearEnv(t)
	fs, cfg := newRunFlags()
	if err := parseFlags(fs, base); err != nil {
		t.Fatal(err)
	}
	e, err := buildEngine(cfg, newRegistry(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	check := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := stateCheck(&out, quietLog(), args)
		return out.String(), err
	}
	if _, err := check(base...); err == nil || !strings.Contains(err.Error(), "holds no snapshot") {
		t.Fatalf("state on an empty directory: %v, want 'holds no snapshot'", err)
	}

	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.pipeline.Run(rctx) }()
	poll(t, 30*time.Second*timeScale, "every event scored", func() bool { return e.pipeline.Stats().Scored.Load() == n })
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	out, err := check(base...)
	if err != nil {
		t.Fatalf("state with run's flags: %v", err)
	}
	t.Logf("streamscore state:\n%s", out)
	for _, want := range []string{"topic transactions, group streamscore, written by 2 workers, 39 features", "cards with windows", "check      ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = check(append(base, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var info stream.StateInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	applied := int64(0)
	for _, off := range info.Applied {
		applied += off + 1
	}
	if info.Workers != 2 || info.Cards == 0 || info.Cards > 50 || applied != n || info.Reason != "shutdown" {
		t.Errorf("--json: %+v, want 2 workers, 1-50 cards, %d events applied, reason shutdown", info, n)
	}

	// State is per partition: another worker count restores it.
	if _, err := check(append(slices.Clone(base), "--workers", "3")...); err != nil {
		t.Errorf("state --workers 3 on a 2-worker snapshot: %v, want it restorable", err)
	}
	for _, tc := range []struct {
		args []string
		why  string
	}{
		{[]string{"--ttl", "240h"}, "TTL"},
		{[]string{"--topic", "payments"}, `snapshot of topic "transactions"`},
	} {
		_, err := check(append(slices.Clone(base), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), "would refuse") || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("state %v: %v, want a refusal naming %q", tc.args, err, tc.why)
		}
	}
}
