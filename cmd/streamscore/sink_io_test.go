package main

import (
	"strings"
	"testing"

	"github.com/streamscore/streamscore/stream/local"
)

// TestSinkIOFlags: the sink I/O flags parse from the command line and the
// environment, and bad values (or compression with kafka-go's Writer) fail
// the start with an error naming the flag.
func TestSinkIOFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		yaml    string
		wantErr string
		want    sinkIO
	}{
		{name: "defaults", want: defaultSinkIO()},
		{name: "flags", args: []string{"--nats-batch", "atomic", "--kafka-producer", "writer"},
			want: sinkIO{NATSBatch: "atomic", KafkaProducer: "writer", AuditCompression: "none", AuditFormat: "json"}},
		{name: "env", env: map[string]string{"STREAMSCORE_AUDIT_COMPRESSION": "zstd", "STREAMSCORE_NATS_BATCH": "none"},
			want: sinkIO{NATSBatch: "none", KafkaProducer: "direct", AuditCompression: "zstd", AuditFormat: "json"}},
		{name: "yaml", yaml: "audit-compression: lz4\nkafka-producer: direct\naudit-format: protobuf\n",
			want: sinkIO{NATSBatch: "fast", KafkaProducer: "direct", AuditCompression: "lz4", AuditFormat: "protobuf"}},
		{name: "format env", env: map[string]string{"STREAMSCORE_AUDIT_FORMAT": "protobuf"},
			want: sinkIO{NATSBatch: "fast", KafkaProducer: "direct", AuditCompression: "none", AuditFormat: "protobuf"}},
		{name: "bad format", args: []string{"--audit-format", "avro"}, wantErr: "--audit-format"},
		{name: "bad batch", args: []string{"--nats-batch", "yes"}, wantErr: "--nats-batch"},
		{name: "bad producer", args: []string{"--kafka-producer", "franz"}, wantErr: "--kafka-producer"},
		{name: "bad codec", args: []string{"--audit-compression", "brotli"}, wantErr: "--audit-compression"},
		{name: "codec with writer", args: []string{"--audit-compression", "lz4", "--kafka-producer", "writer"}, wantErr: "needs --kafka-producer direct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cfg := newRunFlags()
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.yaml != "" {
				args = append(args, "--config", writeConfig(t, tc.yaml))
			}
			err := parseFlags(fs, args)
			if err == nil {
				err = cfg.sinkIO.Validate()
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.sinkIO != tc.want {
				t.Errorf("got %+v, want %+v", cfg.sinkIO, tc.want)
			}
		})
	}
}

// TestAuditFormatWithoutTopic: --audit-format protobuf with no audit
// topic starts, and says at start that it does nothing.
func TestAuditFormatWithoutTopic(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 1, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	for _, tc := range []struct {
		name  string
		args  []string
		warns bool
	}{
		{"protobuf without topic", []string{"--audit-format", "protobuf", "--audit-topic", ""}, true},
		{"protobuf with topic", []string{"--audit-format", "protobuf", "--audit-topic", "audit"}, false},
		{"json without topic", []string{"--audit-topic", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			fs, cfg := newRunFlags()
			args := append([]string{"--brokers", k.Brokers()[0], "--nats", "", "--scores-topic", "scores", "--alerts-topic", "",
				"--deadletter-topic", "", "--labels-topic", ""}, tc.args...)
			if err := parseFlags(fs, args); err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			e, err := buildEngine(cfg, newRegistry(), logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			e.Close()
			if got := strings.Contains(logs.String(), "--audit-format has no effect"); got != tc.warns {
				t.Errorf("warning logged: %v, want %v; logs:\n%s", got, tc.warns, logs.String())
			}
		})
	}
}
