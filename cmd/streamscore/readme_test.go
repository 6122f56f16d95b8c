package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestREADMESecurityConfig: the README's SASL_SSL + creds configuration
// example is a config file run accepts: every key is a flag of run, with a
// value of the right shape (the files it names need not exist here).
func TestREADMESecurityConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)A SASL_SSL Kafka and a creds-based NATS.*?```yaml\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("README has no SASL_SSL + creds YAML example")
	}
	fs, cfg := newRunFlags()
	clearEnv(t)
	if err := parseFlags(fs, []string{"--config", writeConfig(t, string(m[1]))}); err != nil {
		t.Fatalf("the README example is not a valid run config: %v", err)
	}
	if cfg.KafkaSASLMechanism != "scram-sha-512" || cfg.NATSCreds == "" || cfg.PANKeyFile == "" || cfg.HTTP.Open != "probes" {
		t.Errorf("README example parsed to %+v", cfg)
	}
}
