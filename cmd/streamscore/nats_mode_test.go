package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream/local"
)

// TestNATSModeFailsWithoutStream: with the default --nats-mode jetstream, a
// subject no JetStream stream captures fails the start naming it (records
// used to go out by core publish, acked on receipt, without a word);
// --nats-mode core is the explicit choice of that weaker guarantee.
func TestNATSModeFailsWithoutStream(t *testing.T) {
	ns, err := local.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	for _, tc := range []struct {
		mode    string
		wantErr string
	}{
		{"", `no JetStream stream captures the subject "streamscore.scores"`},
		{"core", ""},
		{"auto", ""},
		{"fast", "--nats-mode"},
	} {
		fs, cfg := newRunFlags()
		clearEnv(t)
		args := []string{"--brokers", "127.0.0.1:1", "--nats", ns.URL()}
		if tc.mode != "" {
			args = append(args, "--nats-mode", tc.mode)
		}
		if err := parseFlags(fs, args); err != nil {
			t.Fatal(err)
		}
		e, err := buildEngine(cfg, newRegistry(), quietLog())
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("--nats-mode %s: %v", tc.mode, err)
				continue
			}
			e.Close()
			continue
		}
		if err == nil {
			e.Close()
			t.Errorf("--nats-mode %q: started, want an error containing %q", tc.mode, tc.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) || (tc.mode == "" && !errors.Is(err, sinks.ErrNoStream)) {
			t.Errorf("--nats-mode %q: %v, want an error containing %q", tc.mode, err, tc.wantErr)
		}
	}
}
