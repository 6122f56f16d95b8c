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

var _ = kafka.SASLAuthenticationFailed
