package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream/local"
)

// testCA is a certificate authority made in the test, with its
// certificate written to caFile.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
	pool   *x509.CertPool
}

var testSerial = big.NewInt(100)

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          testSerial.Add(testSerial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.caFile = filepath.Join(t.TempDir(), name+".pem")
	writePEM(t, ca.caFile, "CERTIFICATE", der)
	return ca
}

// issue returns a certificate signed by ca for 127.0.0.1 and localhost
// (server) or for a client, and its PEM files.
func (ca *testCA) issue(t *testing.T, cn string, client bool) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: testSerial.Add(testSerial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses, tmpl.DNSNames = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeSecret writes v into a 0600 file of dir.
func writeSecret(t *testing.T, dir, name, v string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// secureKafka is an embedded cluster with TLS (server certificate from ca;
// client certificates required when mutual) and SASL users, as given.
type secureKafka struct {
	brokers []string
	ca      *testCA
}

func startSecureKafka(t *testing.T, topics map[string]int, tlsOn, mutual bool, users ...[3]string) *secureKafka {
	t.Helper()
	sk := &secureKafka{}
	var opts []local.KafkaOption
	if tlsOn {
		sk.ca = newTestCA(t, "kafka-ca")
		pair, _, _ := sk.ca.issue(t, "broker", false)
		cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		if mutual {
			cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, sk.ca.pool
		}
		opts = append(opts, local.WithTLS(cfg))
	}
	for _, u := range users {
		opts = append(opts, local.WithSASLUser(u[0], u[1], u[2]))
	}
	k, err := local.StartKafka(topics, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	sk.brokers = k.Brokers()
	return sk
}

const (
	testKafkaUser = "scorer"
	// testKafkaPass is the secret that must never appear in any output.
	testKafkaPass = "Pw-7f3a9c1e-never-logged"
)

// TestKafkaCheck connects to brokers set up in every way the engine meets
// (TLS, mutual TLS, SASL PLAIN and SCRAM) with right and wrong settings,
// and checks the cause and the hint of each failure.
func TestKafkaCheck(t *testing.T) {
	topics := map[string]int{"transactions": 1}
	tlsScram := startSecureKafka(t, topics, true, false, [3]string{"SCRAM-SHA-256", testKafkaUser, testKafkaPass})
	mtlsPlain := startSecureKafka(t, topics, true, true, [3]string{"PLAIN", testKafkaUser, testKafkaPass})
	plainScram := startSecureKafka(t, topics, false, false, [3]string{"SCRAM-SHA-512", testKafkaUser, testKafkaPass})
	open := startSecureKafka(t, topics, false, false)
	otherCA := newTestCA(t, "other-ca")
	_, clientCert, clientKey := mtlsPlain.ca.issue(t, "streamscore", true)
	_, strangerCert, strangerKey := otherCA.issue(t, "stranger", true)
	dir := t.TempDir()
	good := writeSecret(t, dir, "good", testKafkaPass+"\n")
	bad := writeSecret(t, dir, "bad", "wrong-"+testKafkaPass)

	for _, tc := range []struct {
		name    string
		brokers []string
		sec     kafkaSecurity
		cause   string // "" = success
		hint    string
	}{
		{name: "tls+scram", brokers: tlsScram.brokers, sec: kafkaSecurity{KafkaTLSCA: tlsScram.ca.caFile,
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good}},
		{name: "mtls+plain", brokers: mtlsPlain.brokers, sec: kafkaSecurity{KafkaTLSCA: mtlsPlain.ca.caFile,
			KafkaTLSCert: clientCert, KafkaTLSKey: clientKey,
			KafkaSASLMechanism: "plain", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good}},
		{name: "scram-512 plaintext", brokers: plainScram.brokers, sec: kafkaSecurity{
			KafkaSASLMechanism: "scram-sha-512", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good}},
		{name: "wrong CA", brokers: tlsScram.brokers, sec: kafkaSecurity{KafkaTLSCA: otherCA.caFile,
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "not signed by a trusted CA"},
		{name: "system roots", brokers: tlsScram.brokers, sec: kafkaSecurity{KafkaTLS: onOffOn,
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "not signed by a trusted CA"},
		{name: "wrong server name", brokers: tlsScram.brokers, sec: kafkaSecurity{KafkaTLSCA: tlsScram.ca.caFile,
			KafkaTLSServerName: "kafka.bank.example",
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "not valid for this name"},
		{name: "wrong scram password", brokers: tlsScram.brokers, sec: kafkaSecurity{KafkaTLSCA: tlsScram.ca.caFile,
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: bad},
			cause: "auth", hint: `SASL SCRAM-SHA-256 authentication failed for user "scorer"`},
		{name: "wrong plain password", brokers: mtlsPlain.brokers, sec: kafkaSecurity{KafkaTLSCA: mtlsPlain.ca.caFile,
			KafkaTLSCert: clientCert, KafkaTLSKey: clientKey,
			KafkaSASLMechanism: "plain", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: bad},
			cause: "auth", hint: "SASL PLAIN authentication failed"},
		{name: "unknown user", brokers: plainScram.brokers, sec: kafkaSecurity{
			KafkaSASLMechanism: "scram-sha-512", KafkaSASLUser: "nobody", KafkaSASLPassFile: good},
			cause: "auth", hint: `authentication failed for user "nobody"`},
		{name: "no client certificate", brokers: mtlsPlain.brokers, sec: kafkaSecurity{KafkaTLSCA: mtlsPlain.ca.caFile,
			KafkaSASLMechanism: "plain", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "require a client certificate"},
		{name: "client certificate of another CA", brokers: mtlsPlain.brokers, sec: kafkaSecurity{KafkaTLSCA: mtlsPlain.ca.caFile,
			KafkaTLSCert: strangerCert, KafkaTLSKey: strangerKey,
			KafkaSASLMechanism: "plain", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "refused the TLS handshake"},
		{name: "plaintext to a TLS listener", brokers: tlsScram.brokers, sec: kafkaSecurity{
			KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: testKafkaUser, KafkaSASLPassFile: good},
			cause: "tls", hint: "is the listener TLS? (--kafka-tls)"},
		{name: "plaintext without sasl to a TLS listener", brokers: tlsScram.brokers,
			cause: "tls", hint: "is the listener TLS? (--kafka-tls)"},
		{name: "TLS to a plaintext listener", brokers: open.brokers, sec: kafkaSecurity{KafkaTLS: onOffOn},
			cause: "tls", hint: "is the listener plaintext?"},
		{name: "no sasl to a sasl listener", brokers: plainScram.brokers,
			cause: "auth", hint: "does the listener require SASL?"},
		{name: "unreachable", brokers: []string{"127.0.0.1:1"}, cause: "connect", hint: "cannot reach the broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeScale)
			defer cancel()
			start := time.Now()
			_, err := kafkaCheck(ctx, &tc.sec, tc.brokers, []string{"transactions"})
			if tc.cause == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			var ce *kafkaCheckError
			if !errors.As(err, &ce) {
				t.Fatalf("check: got %v (%T), want a *kafkaCheckError", err, err)
			}
			if ce.cause != tc.cause || !strings.Contains(ce.Error(), tc.hint) {
				t.Errorf("check: cause %q, error %q; want cause %q and %q", ce.cause, ce.Error(), tc.cause, tc.hint)
			}
			if strings.Contains(ce.Error(), testKafkaPass) {
				t.Errorf("the error holds the password: %s", ce.Error())
			}
			if d := time.Since(start); d > 10*time.Second*timeScale {
				t.Errorf("check took %v", d)
			}
			t.Logf("%v (in %v)", err, time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestKafkaSecurityValidate(t *testing.T) {
	dir := t.TempDir()
	pass := writeSecret(t, dir, "pass", "x")
	for _, tc := range []struct {
		name string
		sec  kafkaSecurity
		env  string // STREAMSCORE_KAFKA_SASL_PASSWORD, when not empty
		want string // "" = valid
		tls  bool
	}{
		{name: "plaintext"},
		{name: "tls on", sec: kafkaSecurity{KafkaTLS: onOffOn}, tls: true},
		{name: "tls implied by ca", sec: kafkaSecurity{KafkaTLSCA: "ca.pem"}, tls: true},
		{name: "tls implied by server name", sec: kafkaSecurity{KafkaTLSServerName: "kafka"}, tls: true},
		{name: "tls off with a ca", sec: kafkaSecurity{KafkaTLS: onOffOff, KafkaTLSCA: "ca.pem"}, want: "--kafka-tls-ca is set but --kafka-tls is off"},
		{name: "cert without key", sec: kafkaSecurity{KafkaTLSCert: "c.pem"}, want: "--kafka-tls-cert and --kafka-tls-key go together", tls: true},
		{name: "min version 1.3", sec: kafkaSecurity{KafkaTLS: onOffOn, KafkaTLSMinVersion: "1.3"}, tls: true},
		{name: "min version 1.1", sec: kafkaSecurity{KafkaTLSMinVersion: "1.1"}, want: `--kafka-tls-min-version "1.1": want 1.2 or 1.3`},
		{name: "scram", sec: kafkaSecurity{KafkaSASLMechanism: "scram-sha-512", KafkaSASLUser: "u", KafkaSASLPassFile: pass}},
		{name: "upper-case mechanism", sec: kafkaSecurity{KafkaSASLMechanism: "SCRAM-SHA-256", KafkaSASLUser: "u", KafkaSASLPassFile: pass}},
		{name: "plain, password from env", sec: kafkaSecurity{KafkaSASLMechanism: "plain", KafkaSASLUser: "u"}, env: "x"},
		{name: "plain without password", sec: kafkaSecurity{KafkaSASLMechanism: "plain", KafkaSASLUser: "u"},
			want: "needs a password: --kafka-sasl-password-file or $STREAMSCORE_KAFKA_SASL_PASSWORD"},
		{name: "password in file and env", sec: kafkaSecurity{KafkaSASLMechanism: "plain", KafkaSASLUser: "u", KafkaSASLPassFile: pass}, env: "x",
			want: "both --kafka-sasl-password-file and $STREAMSCORE_KAFKA_SASL_PASSWORD are set"},
		{name: "scram without user", sec: kafkaSecurity{KafkaSASLMechanism: "scram-sha-256", KafkaSASLPassFile: pass},
			want: "--kafka-sasl-mechanism scram-sha-256 needs --kafka-sasl-user"},
		{name: "scram with a token", sec: kafkaSecurity{KafkaSASLMechanism: "scram-sha-256", KafkaSASLUser: "u", KafkaSASLPassFile: pass, KafkaSASLTokenFile: "t"},
			want: "--kafka-sasl-token-file is for oauthbearer"},
		{name: "oauthbearer", sec: kafkaSecurity{KafkaSASLMechanism: "oauthbearer", KafkaSASLTokenFile: "t"}},
		{name: "oauthbearer without token", sec: kafkaSecurity{KafkaSASLMechanism: "oauthbearer"}, want: "needs --kafka-sasl-token-file"},
		{name: "oauthbearer with a user", sec: kafkaSecurity{KafkaSASLMechanism: "oauthbearer", KafkaSASLTokenFile: "t", KafkaSASLUser: "u"},
			want: "are for plain and scram-*, not oauthbearer"},
		{name: "unknown mechanism", sec: kafkaSecurity{KafkaSASLMechanism: "gssapi"}, want: `--kafka-sasl-mechanism "gssapi": want plain`},
		{name: "user without mechanism", sec: kafkaSecurity{KafkaSASLUser: "u"}, want: "need --kafka-sasl-mechanism"},
		{name: "check interval too short", sec: kafkaSecurity{KafkaCheckInterval: 100 * time.Millisecond}, want: "--kafka-check-interval 100ms must be at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(envKafkaSASLPassword, tc.env)
			} else {
				t.Setenv(envKafkaSASLPassword, "")
				os.Unsetenv(envKafkaSASLPassword)
			}
			err := tc.sec.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
			if got := tc.sec.tlsOn(); tc.want == "" && got != tc.tls {
				t.Errorf("tlsOn: %v, want %v", got, tc.tls)
			}
		})
	}
}

// TestKafkaSecurityFlags sets the flags from the command line, the
// environment and YAML, as run does, and checks that no password flag or
// key exists.
func TestKafkaSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeSecret(t, dir, "c.yaml", "kafka-tls: on\nkafka-sasl-mechanism: scram-sha-512\nkafka-sasl-user: yaml-user\n")
	t.Setenv(envPrefix+"KAFKA_TLS_CA", "/etc/ca.pem")
	var c engineConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.register(fs)
	if err := parseFlags(fs, []string{"--config", cfgPath, "--kafka-tls-server-name", "kafka.internal"}); err != nil {
		t.Fatal(err)
	}
	if c.KafkaTLS != onOffOn || c.KafkaTLSCA != "/etc/ca.pem" || c.KafkaTLSServerName != "kafka.internal" ||
		c.KafkaSASLMechanism != "scram-sha-512" || c.KafkaSASLUser != "yaml-user" || c.KafkaTLSMinVersion != "1.2" ||
		c.KafkaCheckInterval != 10*time.Second {
		t.Errorf("parsed %+v", c.kafkaSecurity)
	}
	var off engineConfig
	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	off.register(fs)
	if err := parseFlags(fs, []string{"--kafka-tls", "off", "--group", "g2"}); err != nil || off.KafkaTLS != onOffOff || off.Group != "g2" {
		t.Errorf("--kafka-tls off --group g2: %v, %v, %q", err, off.KafkaTLS, off.Group)
	}
	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	(&engineConfig{}).register(fs)
	if err := parseFlags(fs, []string{"--kafka-tls", "maybe"}); err == nil {
		t.Errorf("--kafka-tls maybe: no error")
	}
	for _, name := range []string{"kafka-sasl-password", "kafka-password", "kafka-sasl-token"} {
		if fs.Lookup(name) != nil {
			t.Errorf("flag --%s exists: secrets must not come from flags", name)
		}
	}
	bad := writeSecret(t, dir, "bad.yaml", "kafka-sasl-password: hunter2\n")
	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	(&engineConfig{}).register(fs)
	if err := parseFlags(fs, []string{"--config", bad}); err == nil || !strings.Contains(err.Error(), `unknown key "kafka-sasl-password"`) {
		t.Errorf("a password in YAML: %v, want an unknown key error", err)
	}
	c = engineConfig{Brokers: "kafka-1:9093,user:hunter2@kafka-2:9093", Group: "g", Topic: "t", ScoresTopic: "s",
		MaxBatch: 1, MaxDelay: time.Millisecond, Workers: 1, InFlight: 1, DrainTimeout: time.Second, TTL: time.Hour}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--brokers: entry 2 holds credentials") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("credentials in --brokers: %v", err)
	}
}

func TestRedactBroker(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"kafka-1:9093", "kafka-1:9093"},
		{"user:secret@kafka-1:9093", "REDACTED@kafka-1:9093"},
		{"sasl_ssl://user:secret@kafka-1:9093", "sasl_ssl://REDACTED@kafka-1:9093"},
	} {
		if got := redactBroker(tc.in); got != tc.want {
			t.Errorf("redactBroker(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// rewrite replaces the file at path with v and moves its mtime, so that
// a rewrite within the file system's timestamp granularity is still seen.
func rewrite(t *testing.T, path, v string, age time.Duration) {
	t.Helper()
	if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	f := &secretFile{path: p, what: "--kafka-sasl-password-file", trim: trimNewline}
	if _, err := f.get(); err == nil || !strings.Contains(err.Error(), "read --kafka-sasl-password-file") {
		t.Errorf("missing file: %v", err)
	}
	rewrite(t, p, "first\n", time.Hour)
	if v, err := f.get(); err != nil || v != "first" {
		t.Errorf("get: %q, %v; want first", v, err)
	}
	rewrite(t, p, " second \r\n", 30*time.Minute) // inner spaces are the password's
	if v, err := f.get(); err != nil || v != " second " {
		t.Errorf("after a change: %q, %v; want \" second \"", v, err)
	}
	rewrite(t, p, "\n", time.Minute)
	if _, err := f.get(); err == nil || !strings.Contains(err.Error(), "the file is empty") {
		t.Errorf("empty file: %v, want an error", err)
	}
}

func TestUserPassMechanismReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	rewrite(t, p, "old-pass", time.Hour)
	f := &secretFile{path: p, what: "--kafka-sasl-password-file", trim: trimNewline}
	m := &userPassMechanism{name: "plain", user: "u", password: f.get}
	ctx := context.Background()
	_, ir, err := m.Start(ctx)
	if err != nil || string(ir) != "\x00u\x00old-pass" || m.Name() != "PLAIN" {
		t.Fatalf("Start: %q, %v (%s)", ir, err, m.Name())
	}
	rewrite(t, p, "new-pass\n", time.Minute)
	if _, ir, err = m.Start(ctx); err != nil || string(ir) != "\x00u\x00new-pass" {
		t.Errorf("Start after rotation: %q, %v", ir, err)
	}
	s := &userPassMechanism{name: "scram-sha-512", user: "u", password: f.get}
	if _, ir, err = s.Start(ctx); err != nil || !strings.HasPrefix(string(ir), "n,,n=u,r=") || s.Name() != "SCRAM-SHA-512" {
		t.Errorf("scram Start: %q, %v (%s)", ir, err, s.Name())
	}
	// A password SASLprep refuses: the error must not quote it (the SCRAM
	// library's own error does).
	const bad = "ctl-\x07-secret-pass"
	rewrite(t, p, bad+"\n\n", time.Second)
	if _, _, err = s.Start(ctx); err == nil || strings.Contains(err.Error(), "secret-pass") {
		t.Errorf("scram Start with a control character: %v; want an error that does not quote the password", err)
	}
}

func TestOAuthBearer(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	ob := newOAuthBearer(p)
	ctx := context.Background()
	if ob.Name() != "OAUTHBEARER" {
		t.Errorf("Name: %q", ob.Name())
	}
	rewrite(t, p, "eyJhbGciOi.eyJzdWIi.c2ln==\n", time.Hour)
	sm, ir, err := ob.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "n,,\x01auth=Bearer eyJhbGciOi.eyJzdWIi.c2ln==\x01\x01"; string(ir) != want {
		t.Errorf("client first message %q, want %q", ir, want)
	}
	if done, resp, err := sm.Next(ctx, nil); !done || resp != nil || err != nil {
		t.Errorf("Next(empty): %v %q %v, want done", done, resp, err)
	}
	_, err = func() (bool, error) {
		done, _, err := sm.Next(ctx, []byte(`{"status":"invalid_token","scope":"kafka"}`))
		return done, err
	}()
	if !errors.Is(err, ErrOAuthBearerRejected) || !errors.Is(err, kafka.SASLAuthenticationFailed) || !strings.Contains(err.Error(), `status "invalid_token"`) {
		t.Errorf("Next(error): %v", err)
	}

	// The token file changes: the next connection sends the new token.
	rewrite(t, p, "bmV3LXRva2Vu", time.Minute)
	if _, ir, err = ob.Start(ctx); err != nil || string(ir) != "n,,\x01auth=Bearer bmV3LXRva2Vu\x01\x01" {
		t.Errorf("after refresh: %q, %v", ir, err)
	}
	rewrite(t, p, "  \n", 30*time.Second)
	if _, _, err = ob.Start(ctx); err == nil || !strings.Contains(err.Error(), "the file is empty") {
		t.Errorf("empty token: %v, want an error", err)
	}
	rewrite(t, p, "abc\x01def", 10*time.Second)
	if _, _, err = ob.Start(ctx); err == nil || !strings.Contains(err.Error(), "b64token") || strings.Contains(err.Error(), "abc") {
		t.Errorf("bad token: %v, want an error without the token", err)
	}
}

func TestKeyPairReload(t *testing.T) {
	ca := newTestCA(t, "ca")
	first, c1, k1 := ca.issue(t, "first", true)
	second, c2, k2 := ca.issue(t, "second", true)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	copyFile := func(dst, src string, age time.Duration) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		rewrite(t, dst, string(b), age)
	}
	copyFile(cert, c1, time.Hour)
	copyFile(key, k1, time.Hour)
	kp := &keyPairFiles{cert: cert, key: key, flag: "--kafka-tls"}
	got, err := kp.get()
	if err != nil || !got.Leaf.Equal(first.Leaf) {
		t.Fatalf("get: %v", err)
	}
	copyFile(cert, c2, time.Minute) // half rotated: cert and key do not match
	if _, err := kp.get(); err == nil {
		t.Errorf("mismatched pair: no error")
	}
	copyFile(key, k2, time.Minute)
	if got, err = kp.get(); err != nil || !got.Leaf.Equal(second.Leaf) {
		t.Errorf("after rotation: %v", err)
	}
}

// TestClassifyKafkaErr covers the answers of a real broker that kfake does
// not give.
func TestClassifyKafkaErr(t *testing.T) {
	sec := &kafkaSecurity{KafkaSASLMechanism: "scram-sha-512", KafkaSASLUser: "u"}
	for _, tc := range []struct {
		err         error
		cause, hint string
	}{
		{fmt.Errorf("handshake: %w", kafka.UnsupportedSASLMechanism), "auth", "does not enable SASL mechanism SCRAM-SHA-512"},
		{fmt.Errorf("authenticate: %w", kafka.SASLAuthenticationFailed), "auth", `SASL SCRAM-SHA-512 authentication failed for user "u"`},
		{fmt.Errorf("metadata: %w", kafka.ClusterAuthorizationFailed), "auth", "not authorized"},
		{fmt.Errorf("start: %w", ErrOAuthBearerRejected), "auth", "OAUTHBEARER authentication failed"},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "tls", "is the listener plaintext?"},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, "tls", "expired"},
		{errors.New("dial tcp: i/o timeout"), "connect", "cannot reach the broker"},
	} {
		err := classifyKafkaErr(context.Background(), sec, "b:9093", tc.err)
		var ce *kafkaCheckError
		if !errors.As(err, &ce) || ce.cause != tc.cause || !strings.Contains(ce.Error(), tc.hint) {
			t.Errorf("classify(%v) = %v, want cause %s and %q", tc.err, err, tc.cause, tc.hint)
		}
	}
}
