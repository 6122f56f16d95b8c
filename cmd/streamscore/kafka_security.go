package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// envKafkaSASLPassword is the environment variable that may hold the SASL
// password instead of --kafka-sasl-password-file. There is deliberately no
// --kafka-sasl-password flag (nor YAML key): a secret never comes from a
// flag value, which shows in `ps` and in shell history.
const envKafkaSASLPassword = envPrefix + "KAFKA_SASL_PASSWORD"

// kafkaSecurity is the TLS and SASL configuration of every Kafka connection
// a command makes: the consumer-group reader, the label reader, the sinks'
// writers, the start-time check and its monitor, and `gen`'s producer. It is
// embedded in engineConfig and genConfig; its flags are also
// STREAMSCORE_KAFKA_* variables and YAML keys, like every flag.
//
// Secrets (the SASL password, the OAUTHBEARER token, the client key) come
// from files, or the password from $STREAMSCORE_KAFKA_SASL_PASSWORD; they
// are never logged. The password and token files are read again, when they
// change, for every new connection, and so is the client certificate pair:
// rotating them needs no restart. The CA file is read once at start.
type kafkaSecurity struct {
	KafkaTLS           onOff
	KafkaTLSCA         string
	KafkaTLSCert       string
	KafkaTLSKey        string
	KafkaTLSServerName string
	KafkaTLSMinVersion string
	KafkaSASLMechanism string
	KafkaSASLUser      string
	KafkaSASLPassFile  string
	KafkaSASLTokenFile string
	// KafkaCheckInterval is run's --kafka-check-interval; zero where the
	// flag is not registered (gen, demo).
	KafkaCheckInterval time.Duration

	// Loaded by load, once.
	loaded   bool
	tlsCfg   *tls.Config
	mech     sasl.Mechanism
	password string // from the environment, when there is no password file
}

// register defines the Kafka security flags on fs.
func (k *kafkaSecurity) register(fs *flag.FlagSet) {
	fs.Var(&k.KafkaTLS, "kafka-tls", "TLS to the Kafka brokers: on or off (default off; on when any other --kafka-tls-* flag is set)")
	fs.StringVar(&k.KafkaTLSCA, "kafka-tls-ca", "", "PEM file of the CA certificates that sign the brokers' certificates (default: the system roots); read at start")
	fs.StringVar(&k.KafkaTLSCert, "kafka-tls-cert", "", "PEM client certificate for mutual TLS (with --kafka-tls-key); re-read for new connections when it changes")
	fs.StringVar(&k.KafkaTLSKey, "kafka-tls-key", "", "PEM private key of --kafka-tls-cert; re-read with it")
	fs.StringVar(&k.KafkaTLSServerName, "kafka-tls-server-name", "", "name the brokers' certificates must carry (default: the host of each broker address)")
	fs.StringVar(&k.KafkaTLSMinVersion, "kafka-tls-min-version", "1.2", "lowest TLS version accepted: 1.2 or 1.3")
	fs.StringVar(&k.KafkaSASLMechanism, "kafka-sasl-mechanism", "", "SASL authentication to the brokers: plain, scram-sha-256, scram-sha-512 or oauthbearer (default: none)")
	fs.StringVar(&k.KafkaSASLUser, "kafka-sasl-user", "", "SASL user (plain, scram-*)")
	fs.StringVar(&k.KafkaSASLPassFile, "kafka-sasl-password-file", "", "file holding the SASL password (plain, scram-*; one trailing newline is ignored), re-read for new connections when it changes; or set $"+envKafkaSASLPassword)
	fs.StringVar(&k.KafkaSASLTokenFile, "kafka-sasl-token-file", "", "file holding the OAUTHBEARER token (oauthbearer), re-read for new connections when it changes")
}

// registerCheck defines --kafka-check-interval (run only).
func (k *kafkaSecurity) registerCheck(fs *flag.FlagSet) {
	fs.DurationVar(&k.KafkaCheckInterval, "kafka-check-interval", 10*time.Second, "how often a new connection to the brokers is made and checked (TLS, SASL, topic metadata) while running; a failure turns /readyz to 503 until a check passes again (at least 1s)")
}

// tlsOn reports whether connections use TLS: --kafka-tls on, or any other
// TLS flag given without --kafka-tls off.
func (k *kafkaSecurity) tlsOn() bool {
	switch k.KafkaTLS {
	case onOffOn:
		return true
	case onOffOff:
		return false
	}
	return k.KafkaTLSCA != "" || k.KafkaTLSCert != "" || k.KafkaTLSKey != "" || k.KafkaTLSServerName != ""
}

func (k *kafkaSecurity) mechanism() string { return strings.ToLower(k.KafkaSASLMechanism) }

// Validate checks the flags as a whole, without reading any file.
func (k *kafkaSecurity) Validate() error {
	var errs []error
	if k.KafkaTLS == onOffOff {
		for _, f := range []struct{ name, v string }{
			{"--kafka-tls-ca", k.KafkaTLSCA}, {"--kafka-tls-cert", k.KafkaTLSCert},
			{"--kafka-tls-key", k.KafkaTLSKey}, {"--kafka-tls-server-name", k.KafkaTLSServerName},
		} {
			if f.v != "" {
				errs = append(errs, fmt.Errorf("%s is set but --kafka-tls is off", f.name))
			}
		}
	}
	if (k.KafkaTLSCert == "") != (k.KafkaTLSKey == "") {
		errs = append(errs, errors.New("--kafka-tls-cert and --kafka-tls-key go together: give both for mutual TLS, or neither"))
	}
	if _, err := tlsVersion(k.KafkaTLSMinVersion); err != nil {
		errs = append(errs, err)
	}
	switch m := k.mechanism(); m {
	case "":
		if k.KafkaSASLUser != "" || k.KafkaSASLPassFile != "" || k.KafkaSASLTokenFile != "" {
			errs = append(errs, errors.New("--kafka-sasl-user, --kafka-sasl-password-file and --kafka-sasl-token-file need --kafka-sasl-mechanism"))
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if k.KafkaSASLUser == "" {
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-user", m))
		}
		_, inEnv := os.LookupEnv(envKafkaSASLPassword)
		switch {
		case k.KafkaSASLPassFile == "" && !inEnv:
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %s needs a password: --kafka-sasl-password-file or $%s", m, envKafkaSASLPassword))
		case k.KafkaSASLPassFile != "" && inEnv:
			errs = append(errs, fmt.Errorf("both --kafka-sasl-password-file and $%s are set: use one", envKafkaSASLPassword))
		}
		if k.KafkaSASLTokenFile != "" {
			errs = append(errs, fmt.Errorf("--kafka-sasl-token-file is for oauthbearer, not %s", m))
		}
	case "oauthbearer":
		if k.KafkaSASLTokenFile == "" {
			errs = append(errs, errors.New("--kafka-sasl-mechanism oauthbearer needs --kafka-sasl-token-file"))
		}
		if k.KafkaSASLUser != "" || k.KafkaSASLPassFile != "" {
			errs = append(errs, errors.New("--kafka-sasl-user and --kafka-sasl-password-file are for plain and scram-*, not oauthbearer"))
		}
	default:
		errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %q: want plain, scram-sha-256, scram-sha-512 or oauthbearer", k.KafkaSASLMechanism))
	}
	if k.KafkaCheckInterval < 0 || (k.KafkaCheckInterval > 0 && k.KafkaCheckInterval < time.Second) {
		errs = append(errs, fmt.Errorf("--kafka-check-interval %v must be at least 1s", k.KafkaCheckInterval))
	}
	return errors.Join(errs...)
}

// tlsVersion parses --kafka-tls-min-version ("" is the default, 1.2).
func tlsVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("--kafka-tls-min-version %q: want 1.2 or 1.3", s)
}

// load reads the CA, the client key pair, the password and the token once,
// so that a missing or bad file fails the start, and builds the TLS config
// and the SASL mechanism every connection shares. It is called by dialer and
// transport; later calls return the first result.
func (k *kafkaSecurity) load() error {
	if k.loaded {
		return nil
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if k.tlsOn() {
		minV, _ := tlsVersion(k.KafkaTLSMinVersion)
		cfg := &tls.Config{MinVersion: minV, ServerName: k.KafkaTLSServerName}
		if k.KafkaTLSCA != "" {
			pool, err := loadCAPool("--kafka-tls-ca", k.KafkaTLSCA)
			if err != nil {
				return err
			}
			cfg.RootCAs = pool
		}
		if k.KafkaTLSCert != "" {
			kp := &keyPairFiles{cert: k.KafkaTLSCert, key: k.KafkaTLSKey, flag: "--kafka-tls"}
			if _, err := kp.get(); err != nil {
				return err
			}
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
		}
		k.tlsCfg = cfg
	}
	var pass func() (string, error)
	if k.KafkaSASLPassFile != "" {
		f := &secretFile{path: k.KafkaSASLPassFile, what: "--kafka-sasl-password-file", trim: trimNewline}
		pass = f.get
	} else if v, ok := os.LookupEnv(envKafkaSASLPassword); ok {
		if v == "" {
			return fmt.Errorf("$%s is empty", envKafkaSASLPassword)
		}
		k.password = v
		pass = func() (string, error) { return k.password, nil }
	}
	switch m := k.mechanism(); m {
	case "plain", "scram-sha-256", "scram-sha-512":
		mech := &userPassMechanism{name: m, user: k.KafkaSASLUser, password: pass}
		if _, err := mech.build(); err != nil {
			return err
		}
		k.mech = mech
	case "oauthbearer":
		ob := newOAuthBearer(k.KafkaSASLTokenFile)
		if _, err := ob.token.get(); err != nil {
			return err
		}
		k.mech = ob
	}
	k.loaded = true
	return nil
}

// dialer returns the kafka-go dialer of the consumers (the group reader and
// the label readers), with the TLS config and SASL mechanism.
func (k *kafkaSecurity) dialer() (*kafka.Dialer, error) {
	if err := k.load(); err != nil {
		return nil, err
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: k.tlsCfg, SASLMechanism: k.mech}, nil
}

// transport returns the kafka-go transport of the writers and the checks,
// or nil (kafka-go's default transport) when neither TLS nor SASL is set.
func (k *kafkaSecurity) transport() (*kafka.Transport, error) {
	if err := k.load(); err != nil {
		return nil, err
	}
	if k.tlsCfg == nil && k.mech == nil {
		return nil, nil
	}
	return k.newTransport(), nil
}

func (k *kafkaSecurity) newTransport() *kafka.Transport {
	return &kafka.Transport{
		Dial:        (&net.Dialer{Timeout: 5 * time.Second, DualStack: true}).DialContext,
		DialTimeout: 10 * time.Second,
		TLS:         k.tlsCfg,
		SASL:        k.mech,
	}
}

// describe returns the security of the connections for the log: no secret,
// no file content.
func (k *kafkaSecurity) describe() []any {
	tlsDesc := "off"
	if k.tlsOn() {
		tlsDesc = "on"
		if k.KafkaTLSCert != "" {
			tlsDesc = "mutual"
		}
	}
	sasl := k.mechanism()
	if sasl == "" {
		sasl = "none"
	}
	return []any{"tls", tlsDesc, "sasl", sasl}
}

// onOff is a boolean flag that remembers whether it was set:
// --kafka-tls on|off (or true|false). It always takes a value: as a
// stand-alone boolean flag, "--kafka-tls off" would set it on and end the
// flag parsing at "off", silently dropping every flag after it.
type onOff int8

const (
	onOffUnset onOff = iota
	onOffOn
	onOffOff
)

func (o *onOff) String() string {
	switch *o {
	case onOffOn:
		return "on"
	case onOffOff:
		return "off"
	}
	return ""
}

func (o *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "1", "yes":
		*o = onOffOn
	case "off", "false", "0", "no":
		*o = onOffOff
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

// secretFile is a file holding a secret (a password, a token), read again
// when its size, modification time or identity (a symlink swapped by a
// secret mount) changes. An unreadable or empty file is an error, never an
// empty secret. Safe for concurrent use.
type secretFile struct {
	path string
	what string // the flag, for errors
	trim func(string) string

	mu    sync.Mutex
	stamp fileVersion
	val   string
}

// fileVersion identifies a version of a file.
type fileVersion struct {
	info os.FileInfo
}

func (s fileVersion) same(fi os.FileInfo) bool {
	return s.info != nil && os.SameFile(s.info, fi) && s.info.Size() == fi.Size() && s.info.ModTime().Equal(fi.ModTime())
}

// trimNewline drops the line ends editors leave at the end of a file.
func trimNewline(s string) string { return strings.TrimRight(s, "\r\n") }

// get returns the secret, reading the file if it changed since last time.
func (f *secretFile) get() (string, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", f.what, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stamp.same(fi) {
		return f.val, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", f.what, err)
	}
	v := string(b)
	if f.trim != nil {
		v = f.trim(v)
	}
	if v == "" {
		return "", fmt.Errorf("read %s %s: the file is empty", f.what, f.path)
	}
	f.stamp, f.val = fileVersion{fi}, v
	return v, nil
}

// loadCAPool reads a PEM bundle of CA certificates named by flag: an error
// names the flag and the file, or says the file holds no certificate. For
// Kafka's, NATS's and the HTTP listener's CA flags alike.
func loadCAPool(flag, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", flag, path)
	}
	return pool, nil
}

// keyPairFiles is a certificate and its key (the client's of mutual TLS to
// Kafka, the HTTP listener's), loaded again when either file changes. flag
// names the pair's flags in errors (--kafka-tls: --kafka-tls-cert and
// --kafka-tls-key). With keepOld, a pair that fails to load while a good one
// is loaded (a renewal half written: new certificate, old key) leaves the
// good one in use until the files match again. Safe for concurrent use.
type keyPairFiles struct {
	cert, key string
	flag      string
	keepOld   bool

	mu                  sync.Mutex
	certStamp, keyStamp fileVersion
	pair                *tls.Certificate
}

func (kp *keyPairFiles) get() (*tls.Certificate, error) {
	ci, err := os.Stat(kp.cert)
	if err != nil {
		return nil, fmt.Errorf("read %s-cert: %w", kp.flag, err)
	}
	ki, err := os.Stat(kp.key)
	if err != nil {
		return nil, fmt.Errorf("read %s-key: %w", kp.flag, err)
	}
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if kp.pair != nil && kp.certStamp.same(ci) && kp.keyStamp.same(ki) {
		return kp.pair, nil
	}
	pair, err := tls.LoadX509KeyPair(kp.cert, kp.key)
	if err != nil {
		if kp.keepOld && kp.pair != nil {
			return kp.pair, nil
		}
		// The error names the files and the problem, never key bytes.
		return nil, fmt.Errorf("load %s-cert and %s-key: %w", kp.flag, kp.flag, err)
	}
	kp.pair, kp.certStamp, kp.keyStamp = &pair, fileVersion{ci}, fileVersion{ki}
	return kp.pair, nil
}

// userPassMechanism is SASL PLAIN or SCRAM with the password read for each
// new connection (from the file if it changed), so a rotated password is
// used without a restart.
type userPassMechanism struct {
	name     string // plain, scram-sha-256, scram-sha-512
	user     string
	password func() (string, error)
}

func (m *userPassMechanism) Name() string { return strings.ToUpper(m.name) }

func (m *userPassMechanism) build() (sasl.Mechanism, error) {
	pass, err := m.password()
	if err != nil {
		return nil, err
	}
	switch m.name {
	case "plain":
		return plain.Mechanism{Username: m.user, Password: pass}, nil
	case "scram-sha-256":
		return scramMechanism(scram.SHA256, m.user, pass)
	default:
		return scramMechanism(scram.SHA512, m.user, pass)
	}
}

func scramMechanism(algo scram.Algorithm, user, pass string) (sasl.Mechanism, error) {
	mech, err := scram.Mechanism(algo, user, pass)
	if err != nil {
		// SASLprep rejects some characters (controls, unassigned code
		// points). Its error quotes the offending string, the password
		// included: never pass it on.
		return nil, errors.New("sasl scram: the user name or password holds a character SCRAM does not allow (SASLprep, RFC 4013: e.g. a control character)")
	}
	return mech, nil
}

func (m *userPassMechanism) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	mech, err := m.build()
	if err != nil {
		return nil, nil, err
	}
	return mech.Start(ctx)
}

// ErrOAuthBearerRejected is returned by the OAUTHBEARER mechanism when the
// broker answers the token with an error (RFC 7628 §3.2.2); it wraps
// kafka.SASLAuthenticationFailed.
var ErrOAuthBearerRejected = fmt.Errorf("sasl oauthbearer: broker rejected the token: %w", kafka.SASLAuthenticationFailed)

// oauthBearer is the SASL OAUTHBEARER mechanism (RFC 7628, KIP-255) with
// the bearer token read from a file, again whenever the file changes: an
// external agent refreshes the token, each new connection sends the current
// one. kafka-go does not re-authenticate open connections (KIP-368); a
// broker that limits session lifetimes closes them, and the new connection
// authenticates with the new token.
type oauthBearer struct {
	token *secretFile
}

func newOAuthBearer(path string) *oauthBearer {
	return &oauthBearer{token: &secretFile{path: path, what: "--kafka-sasl-token-file", trim: strings.TrimSpace}}
}

func (*oauthBearer) Name() string { return "OAUTHBEARER" }

// Start sends the client's first message, gs2 header without authzid and
// the auth key: "n,,\x01auth=Bearer <token>\x01\x01".
func (o *oauthBearer) Start(context.Context) (sasl.StateMachine, []byte, error) {
	tok, err := o.token.get()
	if err != nil {
		return nil, nil, err
	}
	if !validBearerToken(tok) {
		// Never echo the token, even a malformed one.
		return nil, nil, fmt.Errorf("read --kafka-sasl-token-file: the token has characters outside RFC 6750's b64token (A-Z a-z 0-9 - . _ ~ + / and trailing =)")
	}
	return oauthSession{}, []byte("n,,\x01auth=Bearer " + tok + "\x01\x01"), nil
}

// validBearerToken reports whether tok is an RFC 6750 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func validBearerToken(tok string) bool {
	body := strings.TrimRight(tok, "=")
	if body == "" {
		return false
	}
	for _, c := range body {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

type oauthSession struct{}

// Next: an empty server message is success; anything else is the broker's
// error (a JSON object with a status), reported with its status only.
func (oauthSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	if len(challenge) == 0 {
		return true, nil, nil
	}
	var e struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(challenge, &e); err == nil && e.Status != "" && len(e.Status) <= 64 {
		return false, nil, fmt.Errorf("%w (status %q)", ErrOAuthBearerRejected, e.Status)
	}
	return false, nil, ErrOAuthBearerRejected
}

// kafkaCheckError is a failed connection check: the broker, a bounded
// cause (tls, auth, connect) for metrics and /readyz, and a hint naming
// what to fix.
type kafkaCheckError struct {
	broker string
	cause  string
	hint   string
	err    error
}

func (e *kafkaCheckError) Error() string {
	return fmt.Sprintf("kafka broker %s: %s: %s: %v", e.broker, e.cause, e.hint, e.err)
}

func (e *kafkaCheckError) Unwrap() error { return e.err }

// fatal reports whether the failure is one of configuration or identity
// (TLS, authentication, authorization), which fails the start, rather than
// reachability, which is retried.
func (e *kafkaCheckError) fatal() bool { return e.cause != "connect" }

// kafkaCheck connects to the brokers the way every reader and writer does
// (TCP, TLS handshake, SASL) and asks for the metadata of topics: the check
// at start and the monitor's probe. It returns the topics the cluster does
// not know (they are not created), or a *kafkaCheckError.
func kafkaCheck(ctx context.Context, k *kafkaSecurity, brokers []string, topics []string) (missing []string, err error) {
	if err := k.load(); err != nil {
		return nil, err
	}
	var last *kafkaCheckError
	for _, b := range brokers {
		missing, err := kafkaCheckBroker(ctx, k, b, topics)
		if err == nil {
			return missing, nil
		}
		var ce *kafkaCheckError
		if !errors.As(err, &ce) {
			return nil, err
		}
		if ce.fatal() || ctx.Err() != nil {
			return nil, ce
		}
		last = ce
	}
	return nil, last
}

// tlsHandshakeTimeout bounds the check's TLS handshake. A TLS listener
// answers a ClientHello at once; a plaintext Kafka listener reads it as the
// start of a (huge) request and waits for the rest.
const tlsHandshakeTimeout = 5 * time.Second

func kafkaCheckBroker(ctx context.Context, k *kafkaSecurity, broker string, topics []string) ([]string, error) {
	if k.tlsCfg != nil {
		if err := checkTLSHandshake(ctx, k, broker); err != nil {
			return nil, err
		}
	}
	// A fresh transport: the check makes a new connection every time, so
	// it sees a rotated password or an expired certificate as a new reader
	// or writer connection would.
	t := k.newTransport()
	var trace *saslTrace
	if k.mech != nil {
		trace = &saslTrace{inner: k.mech}
		t.SASL = trace
	}
	defer t.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(broker), Transport: t, Timeout: 10 * time.Second}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		if trace != nil && trace.unfinished() && closedEarly(err) {
			// The broker closed the connection in the middle of the SASL
			// exchange: that is how kfake (and a SaslAuthenticate v0
			// broker) says no.
			err = fmt.Errorf("%w: %w", kafka.SASLAuthenticationFailed, err)
		}
		return nil, classifyKafkaErr(ctx, k, broker, err)
	}
	var missing []string
	for _, tp := range md.Topics {
		switch {
		case tp.Error == nil:
		case errors.Is(tp.Error, kafka.UnknownTopicOrPartition):
			missing = append(missing, tp.Name)
		case errors.Is(tp.Error, kafka.TopicAuthorizationFailed):
			return nil, &kafkaCheckError{broker: broker, cause: "auth",
				hint: fmt.Sprintf("not authorized for topic %q: the broker's ACLs must allow this principal", tp.Name), err: tp.Error}
		default:
			return nil, &kafkaCheckError{broker: broker, cause: "connect", hint: fmt.Sprintf("metadata of topic %q", tp.Name), err: tp.Error}
		}
	}
	return missing, nil
}

// checkTLSHandshake makes one TLS handshake with the connections' config,
// so that a listener that is not TLS is told apart from one that refuses us.
func checkTLSHandshake(ctx context.Context, k *kafkaSecurity, broker string) error {
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(hctx, "tcp", broker)
	if err != nil {
		return classifyKafkaErr(ctx, k, broker, err)
	}
	defer c.Close()
	cfg := k.tlsCfg
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(broker)
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	err = tc.HandshakeContext(hctx)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && (hctx.Err() != nil || closedEarly(err)) {
		return &kafkaCheckError{broker: broker, cause: "tls", err: err, hint: fmt.Sprintf(
			"the broker accepted the connection but did not complete the TLS handshake (closed, or silent for %v): is the listener plaintext? (--kafka-tls off)", tlsHandshakeTimeout)}
	}
	return classifyKafkaErr(ctx, k, broker, err)
}

// saslTrace wraps the check's SASL mechanism to tell whether a connection
// closed in the middle of the exchange.
type saslTrace struct {
	inner             sasl.Mechanism
	started, finished atomic.Int32
}

func (s *saslTrace) Name() string { return s.inner.Name() }

func (s *saslTrace) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	sm, ir, err := s.inner.Start(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.started.Add(1)
	return &saslTraceSession{sm: sm, t: s}, ir, nil
}

func (s *saslTrace) unfinished() bool { return s.started.Load() > s.finished.Load() }

type saslTraceSession struct {
	sm sasl.StateMachine
	t  *saslTrace
}

func (s *saslTraceSession) Next(ctx context.Context, challenge []byte) (bool, []byte, error) {
	done, resp, err := s.sm.Next(ctx, challenge)
	if done && err == nil {
		s.t.finished.Add(1)
	}
	return done, resp, err
}

// classifyKafkaErr turns a failed connection into a *kafkaCheckError with
// a cause and a hint, from the error's types: x509 and TLS errors, SASL
// errors, and (for a connection closed without a word) a TLS probe of the
// listener.
func classifyKafkaErr(ctx context.Context, k *kafkaSecurity, broker string, err error) error {
	ce := &kafkaCheckError{broker: broker, err: err}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		recordHdr  tls.RecordHeaderError
		opErr      *net.OpError
		kafkaError kafka.Error
	)
	switch {
	case errors.As(err, &unknownCA):
		ce.cause, ce.hint = "tls", "the broker's certificate is not signed by a trusted CA (check --kafka-tls-ca)"
	case errors.As(err, &hostname):
		ce.cause, ce.hint = "tls", "the broker's certificate is not valid for this name (check the broker address or --kafka-tls-server-name)"
	case errors.As(err, &invalid):
		ce.cause, ce.hint = "tls", "the broker's certificate is not valid (expired or not yet valid, or not for server use)"
	case errors.As(err, &verify):
		ce.cause, ce.hint = "tls", "the broker's certificate was refused"
	case errors.As(err, &recordHdr):
		ce.cause, ce.hint = "tls", "the broker did not answer the TLS handshake with TLS: is the listener plaintext? (--kafka-tls off)"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the broker, e.g. "certificate required" or
		// "bad certificate" when it wants our client certificate.
		ce.cause, ce.hint = "tls", "the broker refused the TLS handshake (does it require a client certificate? --kafka-tls-cert, --kafka-tls-key)"
	case errors.Is(err, ErrOAuthBearerRejected):
		ce.cause, ce.hint = "auth", "SASL OAUTHBEARER authentication failed (check the token in --kafka-sasl-token-file)"
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		ce.cause, ce.hint = "auth", fmt.Sprintf("SASL %s authentication failed for user %q (check --kafka-sasl-user and the password)",
			strings.ToUpper(k.mechanism()), k.KafkaSASLUser)
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		ce.cause, ce.hint = "auth", fmt.Sprintf("the broker does not enable SASL mechanism %s", strings.ToUpper(k.mechanism()))
	case errors.Is(err, kafka.IllegalSASLState):
		ce.cause, ce.hint = "auth", "the broker refused the SASL exchange"
	case errors.As(err, &kafkaError) && (kafkaError == kafka.ClusterAuthorizationFailed || kafkaError == kafka.TopicAuthorizationFailed):
		ce.cause, ce.hint = "auth", "not authorized by the broker's ACLs"
	case closedEarly(err):
		ce.cause, ce.hint = "connect", "the broker closed the connection"
		if !k.tlsOn() {
			if speaksTLS(ctx, broker) {
				ce.cause, ce.hint = "tls", "connection closed during handshake: is the listener TLS? (--kafka-tls)"
			} else if k.mech == nil {
				ce.cause, ce.hint = "auth", "the broker closed the connection: does the listener require SASL? (--kafka-sasl-mechanism)"
			}
		} else if k.mech == nil {
			ce.cause, ce.hint = "auth", "the broker closed the connection after the TLS handshake: does the listener require SASL (--kafka-sasl-mechanism) or a client certificate (--kafka-tls-cert)?"
		}
	default:
		ce.cause, ce.hint = "connect", "cannot reach the broker"
	}
	return ce
}

// closedEarly reports whether err is the peer closing or resetting the
// connection, as a broker does to a client that speaks the wrong protocol.
func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// speaksTLS reports whether the listener at addr answers a TLS ClientHello
// with a TLS handshake. It is a diagnosis only, for a plaintext client whose
// connection was closed: the certificate is not verified because no data is
// ever sent over this connection.
func speaksTLS(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, &tls.Config{ServerName: host, InsecureSkipVerify: true}) //nolint:gosec // diagnosis, no data sent
	err = tc.HandshakeContext(ctx)
	var opErr *net.OpError
	return err == nil || (errors.As(err, &opErr) && opErr.Op == "remote error")
}

// redactBrokers returns the broker list for a log line with any userinfo
// (user:password@) removed. Validate refuses such brokers; this is the
// second line of defence for lists that bypass it.
func redactBrokers(brokers []string) []string {
	out := make([]string, len(brokers))
	for i, b := range brokers {
		out[i] = redactBroker(b)
	}
	return out
}

func redactBroker(b string) string {
	at := strings.LastIndexByte(b, '@')
	if at < 0 {
		return b
	}
	scheme := ""
	if i := strings.Index(b[:at], "://"); i >= 0 {
		scheme = b[:i+3]
	}
	return scheme + "REDACTED@" + b[at+1:]
}

// checkBrokerList refuses broker addresses that carry credentials.
func checkBrokerList(flagName string, brokers []string) error {
	for i, b := range brokers {
		if strings.Contains(b, "@") {
			return fmt.Errorf("%s: entry %d holds credentials (user@host): give them with --kafka-sasl-user and --kafka-sasl-password-file", flagName, i+1)
		}
	}
	return nil
}

// checkKafkaAtStart is run's check before the pipeline starts: a TLS,
// authentication or authorization failure is returned (the process exits
// non-zero naming the cause); an unreachable cluster is reported down to
// health and left to the monitor and the readers, which keep retrying.
// A topic the cluster does not have fails the start too (a configuration
// error: see the robustness contract in the README's Operations section).
func checkKafkaAtStart(ctx context.Context, k *kafkaSecurity, brokers, topics []string, health *connHealth, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	missing, err := kafkaCheck(cctx, k, brokers, topics)
	var ce *kafkaCheckError
	switch {
	case errors.As(err, &ce) && !ce.fatal():
		health.Down("kafka", ce.cause, ce)
		return nil
	case err != nil:
		return fmt.Errorf("check kafka: %w", err)
	}
	if len(missing) > 0 {
		// A misnamed topic is a configuration error: the input would wait
		// for ever, an output would be retried without end.
		return fmt.Errorf("check kafka: the cluster has no topic %s (create it, or fix the flag that names it)", strings.Join(missing, ", "))
	}
	if k.mechanism() == "plain" && !k.tlsOn() {
		log.Warn("SASL PLAIN without TLS: the password crosses the network in clear; set --kafka-tls on")
	}
	log.Info("kafka connection checked", append([]any{"brokers", redactBrokers(brokers)}, k.describe()...)...)
	return nil
}

// kafkaMonitor checks the connection to the brokers every interval (a new
// connection each time: TCP, TLS, SASL, metadata) and reports it down, with
// the cause, or up to health, so that /readyz answers 503 while the engine
// cannot reach or authenticate to Kafka. Run blocks until ctx is done.
type kafkaMonitor struct {
	sec     *kafkaSecurity
	brokers []string
	topics  []string
	every   time.Duration
	health  *connHealth
}

func (m *kafkaMonitor) Run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.check(ctx)
	}
}

func (m *kafkaMonitor) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, m.every+10*time.Second)
	_, err := kafkaCheck(cctx, m.sec, m.brokers, m.topics)
	cancel()
	if ctx.Err() != nil {
		return
	}
	var ce *kafkaCheckError
	switch {
	case errors.As(err, &ce):
		m.health.Down("kafka", ce.cause, ce)
	case err != nil:
		m.health.Down("kafka", "connect", err)
	default:
		m.health.Up("kafka")
	}
}

// kafkaTopics returns the topics the engine reads and writes, for the
// connection checks.
func (c *engineConfig) kafkaTopics() []string {
	var ts []string
	for _, t := range []string{c.Topic, c.LabelsTopic, c.ScoresTopic, c.AlertsTopic, c.AuditTopic, c.DeadLetterTopic} {
		if t != "" && !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts
}
