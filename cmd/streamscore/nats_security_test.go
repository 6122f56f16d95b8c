package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"log/slog"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/local"
)

func TestRedactNATSURL(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://alice:s3cret@host:4222", "nats://alice:***@host:4222"},
		{"token", "nats://t0ken@host:4222", "nats://***@host:4222"},
		{"encoded password with @", "tls://alice:p%40ss@host:4222", "tls://alice:***@host:4222"},
		{"raw @ in password", "nats://alice:p@ss@host:4222", "nats://alice:***@host:4222"},
		{"no scheme", "alice:pw@host:4222", "alice:***@host:4222"},
		{"list", "nats://a:pw1@h1:4222,nats://h2:4222,nats://tok@h3:4222", "nats://a:***@h1:4222,nats://h2:4222,nats://***@h3:4222"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactNATSURL(tc.in); got != tc.want {
				t.Errorf("redactNATSURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	r := newRedactor("nats://alice:p%40ss@h:1,nats://t0k@h:2")
	for _, s := range []string{"p%40ss", "p@ss", "t0k"} {
		if got := r.text("x " + s + " y"); strings.Contains(got, s) {
			t.Errorf("redactor left %q in %q", s, got)
		}
	}
	err := r.err(fmt.Errorf("dial: %w", errors.New(`parse "nats://alice:p%40ss@h:1": bad`)))
	if strings.Contains(err.Error(), "p%40ss") || errors.Unwrap(err) == nil {
		t.Errorf("redacted error %q: secret left or chain lost", err)
	}
}

func TestNATSCause(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"authorization", fmt.Errorf("x: %w", nats.ErrAuthorization), "auth"},
		{"expired", nats.ErrAuthExpired, "auth"},
		{"tls sentinel", fmt.Errorf("%w: %w", nats.ErrTLS, errors.New("handshake")), "tls"},
		{"no tls on server", nats.ErrSecureConnWanted, "tls"},
		{"unknown authority", fmt.Errorf("x: %w", x509.UnknownAuthorityError{}), "tls"},
		{"remote alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, "tls"},
		{"server -ERR text", errors.New("nats: 'Authorization Violation'"), "auth"},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, "connect"},
		{"tls url is not a tls error", errors.New("nats: connection to tls://127.0.0.1:4222 lost: EOF"), "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := natsCause(tc.err); got != tc.want {
				t.Errorf("natsCause(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestNATSSecurityValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string // "" = valid
	}{
		{"none", nil, nil, ""},
		{"tls ca", []string{"--nats-tls-ca", "ca.pem"}, nil, ""},
		{"mtls", []string{"--nats-tls-cert", "c.pem", "--nats-tls-key", "k.pem"}, nil, ""},
		{"cert without key", []string{"--nats-tls-cert", "c.pem"}, nil, "--nats-tls-cert and --nats-tls-key go together"},
		{"user and password file", []string{"--nats-user", "u", "--nats-password-file", "p"}, nil, ""},
		{"user and password env", []string{"--nats-user", "u"}, []string{envNATSPassword + "=pw"}, ""},
		{"user alone", []string{"--nats-user", "u"}, nil, "--nats-user needs a password"},
		{"password alone", []string{"--nats-password-file", "p"}, nil, "--nats-user is empty"},
		{"password file and env", []string{"--nats-user", "u", "--nats-password-file", "p"}, []string{envNATSPassword + "=pw"}, "use one"},
		{"token file and env", []string{"--nats-token-file", "t"}, []string{envNATSToken + "=tok"}, "use one"},
		{"two methods", []string{"--nats-token-file", "t", "--nats-creds", "c"}, nil, "token, --nats-creds are exclusive"},
		{"nkey and creds", []string{"--nats-nkey-seed-file", "s", "--nats-creds", "c"}, nil, "are exclusive"},
		{"url and creds", []string{"--nats", "nats://u:pw@h:4222", "--nats-creds", "c"}, nil, "--nats nats://u:***@h:4222 carries credentials"},
		{"url with password", []string{"--nats", "nats://u:pw@h:4222"}, nil, ""},
		{"no nats", []string{"--nats", "", "--nats-creds", "c", "--scores-topic", "s"}, nil, "--nats-creds is set but --nats is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			fs, cfg := newRunFlags()
			if err := parseFlags(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), ":pw@") {
				t.Errorf("error shows the URL password: %v", err)
			}
		})
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files into a test directory.
type testPKI struct {
	dir                          string
	caFile, certFile, keyFile    string // server
	clientCert, clientKey        string
	otherCA                      string // a CA that signed nothing here
	clientKeyPEM                 string // a secret the logs must not show
	otherClientCert, otherClient string // signed by otherCA
	otherCert, otherKey          string // a server certificate signed by otherCA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serial := int64(1)
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, key, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return der, kb
	}
	ca, caKey, caDER := newCA("streamscore test CA")
	p.caFile = write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	sDER, sKey := leaf(ca, caKey, "nats-server", x509.ExtKeyUsageServerAuth)
	p.certFile = write("server.pem", &pem.Block{Type: "CERTIFICATE", Bytes: sDER})
	p.keyFile = write("server-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: sKey})
	cDER, cKey := leaf(ca, caKey, "streamscore", x509.ExtKeyUsageClientAuth)
	p.clientCert = write("client.pem", &pem.Block{Type: "CERTIFICATE", Bytes: cDER})
	p.clientKey = write("client-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: cKey})
	p.clientKeyPEM = strings.Split(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: cKey})), "\n")[1]
	other, otherKey, otherDER := newCA("some other CA")
	p.otherCA = write("other-ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: otherDER})
	oDER, oKey := leaf(other, otherKey, "intruder", x509.ExtKeyUsageClientAuth)
	p.otherClientCert = write("other-client.pem", &pem.Block{Type: "CERTIFICATE", Bytes: oDER})
	p.otherClient = write("other-client-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: oKey})
	osDER, osKey := leaf(other, otherKey, "impostor", x509.ExtKeyUsageServerAuth)
	p.otherCert = write("other-server.pem", &pem.Block{Type: "CERTIFICATE", Bytes: osDER})
	p.otherKey = write("other-server-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: osKey})
	return p
}

// serverTLS returns the server's TLS configuration; verify requires and
// checks client certificates (mutual TLS).
func (p *testPKI) serverTLS(t *testing.T, verify bool) func(*server.Options) {
	t.Helper()
	return p.serverTLSWith(t, p.certFile, p.keyFile, verify)
}

// serverTLSWith is serverTLS with another server certificate.
func (p *testPKI) serverTLSWith(t *testing.T, certFile, keyFile string, verify bool) func(*server.Options) {
	t.Helper()
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: p.caFile, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	return func(o *server.Options) {
		o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, verify, cfg, 5
	}
}

// startTestNATS starts a nats-server with JetStream on loopback (port -1:
// random) configured by the edits, and returns it with its port.
func startTestNATS(t *testing.T, port int, storeDir string, edits ...func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir, NoSigs: true, NoLog: true}
	for _, e := range edits {
		e(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func natsPort(srv *server.Server) int { return srv.Addr().(*net.TCPAddr).Port }

// randSecret returns a random secret that cannot appear in a log by chance.
func randSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s-%x", prefix, b)
}

// logBuffer collects the engine's slog output (text) for the secret check.
type logBuffer struct{ syncBuffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&b.syncBuffer, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkNoSecrets fails the test if any secret appears in any of texts.
func checkNoSecrets(t *testing.T, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				t.Errorf("a secret (%.6s…) appears in the output:\n%s", s, txt)
			}
		}
	}
}

// natsEngineArgs are run's flags for an engine whose only sink is NATS
// (scores subject "sec.scores"), reading topic "transactions".
func natsEngineArgs(brokers []string, natsURL string, extra ...string) []string {
	return append([]string{"--brokers", strings.Join(brokers, ","), "--nats", natsURL,
		"--scores-subject", "sec.scores", "--alerts-subject", "",
		"--scores-topic", "", "--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", "", "--labels-topic", "",
		"--max-delay", "5ms", "--metrics-addr", ""}, extra...)
}

// produce writes n generated events, starting at the generator's i-th, to
// the transactions topic.
func produce(t *testing.T, ctx context.Context, brokers []string, g *synth.Generator, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "transactions", Balancer: &kafka.Hash{},
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, 0, n)
	start := time.Now().Add(-time.Hour)
	for i := range n {
		tx := g.Next(start.Add(time.Duration(i) * time.Second))
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// runningEngine is an engine built from run's flags and running in the
// test, with its slog output captured.
type runningEngine struct {
	e    *engine
	reg  *prometheus.Registry
	logs *logBuffer
	stop func() error
}

// buildTestEngine parses args (and the environment) like `streamscore run`
// and builds the engine, logging into logs.
func buildTestEngine(t *testing.T, logs *logBuffer, args []string) (*engine, *prometheus.Registry, error) {
	t.Helper()
	fs, cfg := newRunFlags()
	if err := parseFlags(fs, args); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := buildEngine(cfg, reg, logs.logger())
	return e, reg, err
}

func startTestEngine(t *testing.T, args []string) *runningEngine {
	t.Helper()
	logs := &logBuffer{}
	e, reg, err := buildTestEngine(t, logs, args)
	if err != nil {
		t.Fatalf("build engine: %v\nlogs:\n%s", err, logs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.pipeline.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			e.Close()
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return &runningEngine{e: e, reg: reg, logs: logs, stop: stop}
}

// ready returns /readyz's status code and body.
func (r *runningEngine) ready() (int, string) {
	rec := httptest.NewRecorder()
	readyHandler(r.e.pipeline, r.e.health).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// scoresStream creates the JetStream stream capturing sec.scores through
// the test's own (authorised) connection, so that the engine's sink
// publishes with acks.
func scoresStream(t *testing.T, ctx context.Context, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SECSCORES", Subjects: []string{"sec.scores"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return st
}

// waitStored waits until the stream holds n score records.
func waitStored(t *testing.T, ctx context.Context, st jetstream.Stream, n uint64, what string) {
	t.Helper()
	poll(t, 60*time.Second*timeScale, what, func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs >= n
	})
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("%s: stream holds %d records, want %d", what, info.State.Msgs, n)
	}
}

// operatorSetup is a decentralized-auth (JWT) setup: an operator, a system
// account, an account with JetStream and a user whose .creds file is written.
type operatorSetup struct {
	opts      func(*server.Options)
	credsFile string
	secrets   []string // user JWT and seed
	userSeed  []byte
	userJWT   string
}

func newOperatorSetup(t *testing.T, dir string) *operatorSetup {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, err := okp.PublicKey()
	must(err)
	ojwt, err := jwt.NewOperatorClaims(opub).Encode(okp)
	must(err)
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	must(err)

	account := func(js bool) (nkeys.KeyPair, string, string) {
		akp, err := nkeys.CreateAccount()
		must(err)
		apub, err := akp.PublicKey()
		must(err)
		ac := jwt.NewAccountClaims(apub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		ajwt, err := ac.Encode(okp)
		must(err)
		return akp, apub, ajwt
	}
	_, spub, sjwt := account(false)
	akp, apub, ajwt := account(true)
	res := &server.MemAccResolver{}
	must(res.Store(spub, sjwt))
	must(res.Store(apub, ajwt))

	ukp, err := nkeys.CreateUser()
	must(err)
	upub, err := ukp.PublicKey()
	must(err)
	uc := jwt.NewUserClaims(upub)
	uc.Name = "streamscore"
	ujwt, err := uc.Encode(akp)
	must(err)
	useed, err := ukp.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	must(err)
	path := filepath.Join(dir, "streamscore.creds")
	must(os.WriteFile(path, creds, 0o600))
	return &operatorSetup{
		opts: func(o *server.Options) {
			o.TrustedOperators = []*jwt.OperatorClaims{oclaims}
			o.AccountResolver = res
			o.SystemAccount = spub
		},
		credsFile: path,
		secrets:   []string{string(useed), ujwt},
		userSeed:  useed,
		userJWT:   ujwt,
	}
}

// TestNATSSecureEndToEnd scores events end to end through nats-servers that
// require TLS (with and without client certificates) and each kind of
// authentication, configured as an operator would: flags, environment and
// secret files. The records must land on the scores subject, and no log line
// may hold a secret.
func TestNATSSecureEndToEnd(t *testing.T) {
	pki := newTestPKI(t)
	k, err := local.StartKafka(map[string]int{"transactions": 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	g, err := synth.New(synth.Config{Seed: 5, Cards: 50, Terminals: 20})
	if err != nil {
		t.Fatal(err)
	}

	password := randSecret(t, "pw")
	envPassword := randSecret(t, "envpw")
	token := randSecret(t, "tok")
	urlPassword := randSecret(t, "urlpw")
	nkp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	npub, _ := nkp.PublicKey()
	nseed, _ := nkp.Seed()
	dir := t.TempDir()
	nseedFile := writeSecret(t, dir, "user.nk", string(nseed))
	op := newOperatorSetup(t, dir)

	type testCase struct {
		name    string
		server  []func(*server.Options)
		scheme  string
		args    []string
		env     []string
		client  []nats.Option // the test's own connection, to create the stream
		secrets []string
	}
	cases := []testCase{
		{
			name:   "tls ca and password file",
			server: []func(*server.Options){pki.serverTLS(t, false), func(o *server.Options) { o.Username, o.Password = "scorer", password }},
			scheme: "tls",
			args: []string{"--nats-tls-ca", pki.caFile, "--nats-user", "scorer",
				"--nats-password-file", writeSecret(t, dir, "password", password)},
			client:  []nats.Option{nats.RootCAs(pki.caFile), nats.UserInfo("scorer", password)},
			secrets: []string{password},
		},
		{
			name:    "mtls verify and token file",
			server:  []func(*server.Options){pki.serverTLS(t, true), func(o *server.Options) { o.Authorization = token }},
			scheme:  "nats",
			args:    []string{"--nats-tls-ca", pki.caFile, "--nats-tls-cert", pki.clientCert, "--nats-tls-key", pki.clientKey, "--nats-token-file", writeSecret(t, dir, "token", token)},
			client:  []nats.Option{nats.RootCAs(pki.caFile), nats.ClientCert(pki.clientCert, pki.clientKey), nats.Token(token)},
			secrets: []string{token, pki.clientKeyPEM},
		},
		{
			name:    "tls and password from the environment",
			server:  []func(*server.Options){pki.serverTLS(t, false), func(o *server.Options) { o.Username, o.Password = "scorer", envPassword }},
			scheme:  "tls",
			args:    []string{"--nats-tls-ca", pki.caFile, "--nats-user", "scorer"},
			env:     []string{envNATSPassword + "=" + envPassword},
			client:  []nats.Option{nats.RootCAs(pki.caFile), nats.UserInfo("scorer", envPassword)},
			secrets: []string{envPassword},
		},
		{
			name:    "nkey seed file",
			server:  []func(*server.Options){func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: npub}} }},
			scheme:  "nats",
			args:    []string{"--nats-nkey-seed-file", nseedFile},
			client:  []nats.Option{nats.Nkey(npub, func(nonce []byte) ([]byte, error) { return nkp.Sign(nonce) })},
			secrets: []string{string(nseed)},
		},
		{
			name:   "mtls and creds (jwt)",
			server: []func(*server.Options){pki.serverTLS(t, true), op.opts},
			scheme: "tls",
			// As in the README: a YAML file (the URL comes from --nats here).
			args: []string{"--config", writeConfig(t, fmt.Sprintf(`# NATS with mutual TLS and a .creds file (decentralized JWT auth)
nats: tls://nats.example.internal:4222
nats-tls-ca: %s
nats-tls-cert: %s
nats-tls-key: %s
nats-creds: %s
`, pki.caFile, pki.clientCert, pki.clientKey, op.credsFile))},
			client:  []nats.Option{nats.RootCAs(pki.caFile), nats.ClientCert(pki.clientCert, pki.clientKey), nats.UserCredentials(op.credsFile)},
			secrets: append([]string{pki.clientKeyPEM}, op.secrets...),
		},
		{
			name:    "password in the url",
			server:  []func(*server.Options){func(o *server.Options) { o.Username, o.Password = "scorer", urlPassword }},
			scheme:  "nats://scorer:" + urlPassword + "@",
			client:  []nats.Option{nats.UserInfo("scorer", urlPassword)},
			secrets: []string{urlPassword},
		},
	}
	var total uint64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for _, kv := range tc.env {
				name, v, _ := strings.Cut(kv, "=")
				t.Setenv(name, v)
			}
			srv := startTestNATS(t, -1, t.TempDir(), tc.server...)
			url := fmt.Sprintf("%s://127.0.0.1:%d", tc.scheme, natsPort(srv))
			if strings.HasSuffix(tc.scheme, "@") {
				url = fmt.Sprintf("%s127.0.0.1:%d", tc.scheme, natsPort(srv))
			}
			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort(srv)), tc.client...)
			if err != nil {
				t.Fatalf("test client: %v", err)
			}
			defer nc.Close()
			st := scoresStream(t, ctx, nc)

			r := startTestEngine(t, natsEngineArgs(brokers, url, append(tc.args, "--group", "g-"+strings.ReplaceAll(tc.name, " ", "-"))...))
			produce(t, ctx, brokers, g, 40)
			total += 40
			// Each case's group starts at the beginning: every event so far.
			waitStored(t, ctx, st, total, "every event scored onto sec.scores")
			if code, body := r.ready(); code != http.StatusOK {
				t.Errorf("/readyz while scoring: %d %q", code, body)
			}
			if err := r.stop(); err != nil {
				t.Errorf("run: %v", err)
			}
			logs := r.logs.String()
			if !strings.Contains(logs, `msg="nats connected"`) {
				t.Errorf("no 'nats connected' log line:\n%s", logs)
			}
			if strings.Contains(tc.scheme, "@") && !strings.Contains(logs, "scorer:***@127.0.0.1") {
				t.Errorf("logs do not show the URL redacted:\n%s", logs)
			}
			if strings.Contains(tc.scheme, "@") && !strings.Contains(logs, "level=WARN") {
				t.Errorf("no warning about the password in the URL:\n%s", logs)
			}
			checkNoSecrets(t, tc.secrets, logs)
		})
	}
}

// TestNATSFailClosedAtStart: a wrong CA, a wrong password or token, a
// plaintext client to a TLS server, a TLS client to a plaintext server, a
// missing client certificate and an untrusted one each fail the start with
// an error naming the cause; no error or log line holds a secret.
func TestNATSFailClosedAtStart(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	password := randSecret(t, "pw")
	wrongPassword := randSecret(t, "wrongpw")
	token := randSecret(t, "tok")
	wrongToken := randSecret(t, "wrongtok")
	secrets := []string{password, wrongPassword, token, wrongToken, pki.clientKeyPEM}

	tlsPass := startTestNATS(t, -1, t.TempDir(), pki.serverTLS(t, false), func(o *server.Options) { o.Username, o.Password = "scorer", password })
	mtls := startTestNATS(t, -1, t.TempDir(), pki.serverTLS(t, true))
	plainToken := startTestNATS(t, -1, t.TempDir(), func(o *server.Options) { o.Authorization = token })
	at := func(srv *server.Server, scheme string) string {
		return fmt.Sprintf("%s://127.0.0.1:%d", scheme, natsPort(srv))
	}
	op := newOperatorSetup(t, dir)
	jwtSrv := startTestNATS(t, -1, t.TempDir(), op.opts)
	otherOp := newOperatorSetup(t, t.TempDir()) // a user of another operator
	secrets = append(append(secrets, op.secrets...), otherOp.secrets...)

	for _, tc := range []struct {
		name  string
		url   string
		args  []string
		env   []string
		cause string // the failure counted... only at runtime; here the message
		want  []string
	}{
		{"wrong ca", at(tlsPass, "tls"), []string{"--nats-tls-ca", pki.otherCA, "--nats-user", "scorer", "--nats-password-file", writeSecret(t, dir, "p1", password)},
			nil, "tls", []string{"nats: TLS: the server's certificate is not signed by the CA of --nats-tls-ca", "unknown authority"}},
		{"plaintext client to tls server", at(tlsPass, "nats"), []string{"--nats-user", "scorer", "--nats-password-file", writeSecret(t, dir, "p2", password)},
			nil, "tls", []string{"nats: TLS:", "the server requires TLS; give its CA with --nats-tls-ca"}},
		{"tls client to plaintext server", at(plainToken, "nats"), []string{"--nats-tls-ca", pki.caFile, "--nats-token-file", writeSecret(t, dir, "t1", token)},
			nil, "tls", []string{"nats: TLS: TLS is configured", "secure connection not available"}},
		{"wrong password", at(tlsPass, "tls"), []string{"--nats-tls-ca", pki.caFile, "--nats-user", "scorer", "--nats-password-file", writeSecret(t, dir, "p3", wrongPassword)},
			nil, "auth", []string{`nats: authentication failed (user "scorer" with the password of --nats-password-file`, "Authorization Violation"}},
		{"wrong password in env", at(tlsPass, "tls"), []string{"--nats-tls-ca", pki.caFile, "--nats-user", "scorer"},
			[]string{envNATSPassword + "=" + wrongPassword}, "auth", []string{"nats: authentication failed", envNATSPassword}},
		{"wrong password in url", fmt.Sprintf("tls://scorer:%s@127.0.0.1:%d", wrongPassword, natsPort(tlsPass)), []string{"--nats-tls-ca", pki.caFile},
			nil, "auth", []string{"nats: authentication failed (credentials in the --nats URL)", "tls://scorer:***@127.0.0.1"}},
		{"wrong token", at(plainToken, "nats"), []string{"--nats-token-file", writeSecret(t, dir, "t2", wrongToken)},
			nil, "auth", []string{"nats: authentication failed (token of --nats-token-file", "Authorization Violation"}},
		{"no token", at(plainToken, "nats"), nil,
			nil, "auth", []string{"nats: authentication failed (none)"}},
		{"mtls without client cert", at(mtls, "tls"), []string{"--nats-tls-ca", pki.caFile},
			nil, "tls", []string{"nats: TLS: the server refused the handshake (does it require a client certificate?"}},
		{"mtls with untrusted client cert", at(mtls, "tls"), []string{"--nats-tls-ca", pki.caFile, "--nats-tls-cert", pki.otherClientCert, "--nats-tls-key", pki.otherClient},
			nil, "tls", []string{"nats: TLS: the server refused the handshake or the client certificate of --nats-tls-cert"}},
		{"creds of another operator", at(jwtSrv, "nats"), []string{"--nats-creds", otherOp.credsFile},
			nil, "auth", []string{"nats: authentication failed (credentials of --nats-creds"}},
		{"not a creds file", at(jwtSrv, "nats"), []string{"--nats-creds", pki.caFile},
			nil, "", []string{"--nats-creds " + pki.caFile + ": no user JWT"}},
		{"missing ca file", at(tlsPass, "tls"), []string{"--nats-tls-ca", filepath.Join(dir, "nope.pem")},
			nil, "", []string{"read --nats-tls-ca", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for _, kv := range tc.env {
				name, v, _ := strings.Cut(kv, "=")
				t.Setenv(name, v)
			}
			logs := &logBuffer{}
			start := time.Now()
			e, _, err := buildTestEngine(t, logs, natsEngineArgs([]string{"127.0.0.1:1"}, tc.url, tc.args...))
			if err == nil {
				e.Close()
				t.Fatalf("engine built; want a failure")
			}
			if d := time.Since(start); d > 10*time.Second*timeScale {
				t.Errorf("the failure took %v: the start must not retry", d)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if tc.cause != "" {
				if got := natsCause(err); got != tc.cause {
					t.Errorf("cause %q, want %q (error %v)", got, tc.cause, err)
				}
			}
			checkNoSecrets(t, secrets, err.Error(), logs.String())
			t.Logf("%s", err)
		})
	}
}

// TestNATSRuntimeFailures: while running, the server comes back with a
// rotated password. The engine logs the authentication failure at error
// level, counts it, answers 503 on /readyz and keeps retrying; once the
// password file holds the new password, it reconnects without a restart,
// /readyz is 200 again and the events produced meanwhile arrive. Then the
// server comes back with a certificate the engine does not trust: the same,
// with the TLS cause, until the right certificate is back.
func TestNATSRuntimeFailures(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	oldPassword := randSecret(t, "oldpw")
	newPassword := randSecret(t, "newpw")
	pwFile := writeSecret(t, dir, "password", oldPassword)
	store := t.TempDir()
	withPassword := func(pw string) func(*server.Options) {
		return func(o *server.Options) { o.Username, o.Password = "scorer", pw }
	}
	srv := startTestNATS(t, -1, store, pki.serverTLS(t, false), withPassword(oldPassword))
	port := natsPort(srv)
	k, err := local.StartKafka(map[string]int{"transactions": 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	g, err := synth.New(synth.Config{Seed: 9, Cards: 50, Terminals: 20})
	if err != nil {
		t.Fatal(err)
	}
	clearEnv(t)
	url := fmt.Sprintf("tls://127.0.0.1:%d", port)
	client := func(pw string) (*nats.Conn, jetstream.Stream) {
		nc, err := nats.Connect(url, nats.RootCAs(pki.caFile), nats.UserInfo("scorer", pw))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, "SECSCORES")
		if err != nil {
			st = scoresStream(t, ctx, nc)
		}
		return nc, st
	}
	nc, st := client(oldPassword)
	r := startTestEngine(t, natsEngineArgs(brokers, url, "--nats-tls-ca", pki.caFile, "--nats-user", "scorer", "--nats-password-file", pwFile))
	produce(t, ctx, brokers, g, 30)
	waitStored(t, ctx, st, 30, "the first events scored")
	nc.Close()

	// The server restarts on the same port with a new password.
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2 := startTestNATS(t, port, store, pki.serverTLS(t, false), withPassword(newPassword))
	authFailures := func() float64 {
		return testutil.ToFloat64(r.e.health.failures.WithLabelValues(natsTransport, "auth"))
	}
	poll(t, 30*time.Second*timeScale, "the authentication failure reported", func() bool { return authFailures() >= 2 })
	code, body := r.ready()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "nats down (auth)") {
		t.Fatalf("/readyz with a rejected password: %d %q, want 503 with nats down (auth)", code, body)
	}
	produce(t, ctx, brokers, g, 30) // scored, held back until NATS is back
	if !strings.Contains(r.logs.String(), `level=ERROR msg="connection down" transport=nats cause=auth err="nats: authentication failed`) {
		t.Errorf("no error log line for the authentication failure:\n%s", r.logs.String())
	}

	// Rotation: the new password is written to the file; no restart.
	writeSecret(t, dir, "password.new", newPassword)
	if err := os.Rename(filepath.Join(dir, "password.new"), pwFile); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second*timeScale, "/readyz 200 after the rotation", func() bool {
		code, _ := r.ready()
		return code == http.StatusOK
	})
	_, st = client(newPassword)
	waitStored(t, ctx, st, 60, "the events of the outage delivered")

	// The server comes back with a certificate of another CA: TLS fails
	// on every reconnect, with the cause.
	srv2.Shutdown()
	srv2.WaitForShutdown()
	srv3 := startTestNATS(t, port, store, pki.serverTLSWith(t, pki.otherCert, pki.otherKey, false), withPassword(newPassword))
	tlsFailures := func() float64 {
		return testutil.ToFloat64(r.e.health.failures.WithLabelValues(natsTransport, "tls"))
	}
	poll(t, 30*time.Second*timeScale, "the TLS failure reported", func() bool { return tlsFailures() >= 2 })
	if code, body := r.ready(); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "nats down (tls)") {
		t.Fatalf("/readyz with an untrusted server certificate: %d %q, want 503 with nats down (tls)", code, body)
	}
	produce(t, ctx, brokers, g, 20)
	srv3.Shutdown()
	srv3.WaitForShutdown()
	startTestNATS(t, port, store, pki.serverTLS(t, false), withPassword(newPassword))
	poll(t, 30*time.Second*timeScale, "/readyz 200 with the right certificate", func() bool {
		code, _ := r.ready()
		return code == http.StatusOK
	})
	_, st = client(newPassword)
	waitStored(t, ctx, st, 80, "the events of the TLS outage delivered")
	if err := r.stop(); err != nil {
		t.Errorf("run: %v", err)
	}
	logs := r.logs.String()
	for _, want := range []string{`msg="connection back" transport=nats`, `msg="nats reconnected"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if _, after, ok := strings.Cut(logs, `msg="pipeline stopped"`); ok && strings.Contains(after, "connection down") {
		t.Errorf("closing the connection at shutdown was logged as a failure:\n%s", after)
	}
	if !strings.Contains(logs, fmt.Sprintf("connection to tls://127.0.0.1:%d lost", port)) {
		t.Errorf("the disconnection is not logged with the server:\n%s", logs)
	}
	checkNoSecrets(t, []string{oldPassword, newPassword}, logs, body)
	if !strings.Contains(logs, `level=ERROR msg="connection down" transport=nats cause=tls err="nats: TLS:`) {
		t.Errorf("no error log line for the TLS failure:\n%s", logs)
	}
	t.Logf("failures counted while the password was wrong: %v, while the certificate was untrusted: %v", authFailures(), tlsFailures())
}

// TestNATSFailClosedSubprocess: `streamscore run` with a wrong password
// exits non-zero at once, says why, and its output holds no secret, also
// when the password is in the --nats URL.
func TestNATSFailClosedSubprocess(t *testing.T) {
	pki := newTestPKI(t)
	password := randSecret(t, "pw")
	wrong := randSecret(t, "wrongpw")
	srv := startTestNATS(t, -1, t.TempDir(), pki.serverTLS(t, false), func(o *server.Options) { o.Username, o.Password = "scorer", password })
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"password file", []string{"STREAMSCORE_NATS_PASSWORD_FILE=" + writeSecret(t, t.TempDir(), "pw", wrong)},
			[]string{"--nats", fmt.Sprintf("tls://127.0.0.1:%d", natsPort(srv)), "--nats-user", "scorer"},
			[]string{`nats: authentication failed (user \"scorer\" with the password of --nats-password-file`}},
		{"url", nil, []string{"--nats", fmt.Sprintf("tls://scorer:%s@127.0.0.1:%d", wrong, natsPort(srv))},
			[]string{"level=WARN", "tls://scorer:***@127.0.0.1", "nats: authentication failed (credentials in the --nats URL)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startStreamscore(t, append(tc.env, "STREAMSCORE_NATS_TLS_CA="+pki.caFile), append([]string{"run", "--brokers", "127.0.0.1:1",
				"--metrics-addr", "", "--scores-topic", "", "--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", ""}, tc.args...)...)
			err := p.wait(30 * time.Second * timeScale)
			var exit interface{ ExitCode() int }
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit %v, want a non-zero exit status", err)
			}
			out := p.stderr.String() + p.stdout.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			checkNoSecrets(t, []string{password, wrong}, out)
		})
	}
}
