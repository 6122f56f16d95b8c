package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Environment variables that hold a NATS secret themselves (not a file
// name). They are read directly, not through a flag, so that no flag value or
// YAML key can carry the secret.
const (
	envNATSPassword = envPrefix + "NATS_PASSWORD"
	envNATSToken    = envPrefix + "NATS_TOKEN"
)

// natsReconnectWait is the pause after every server of --nats was tried
// in vain, plus a random jitter of up to as much again.
const natsReconnectWait = 250 * time.Millisecond

// natsTransport is the transport name of the NATS connection in connHealth
// (and in streamscore_transport_failures_total).
const natsTransport = "nats"

// natsSecurity is the TLS and authentication configuration of the NATS
// connection. Secrets are never flag values: a password or token comes from a
// file (re-read at every reconnect, so a rotated file is picked up without a
// restart) or from STREAMSCORE_NATS_PASSWORD / STREAMSCORE_NATS_TOKEN; an
// NKey seed and a .creds file are always files, re-read by nats.go at every
// connect. A password inside the --nats URL works but is warned about and
// redacted in every log line and error.
type natsSecurity struct {
	NATSTLSCA        string
	NATSTLSCert      string
	NATSTLSKey       string
	NATSUser         string
	NATSPasswordFile string
	NATSTokenFile    string
	NATSNKeySeedFile string
	NATSCreds        string
}

// register defines the NATS TLS and authentication flags on fs.
func (s *natsSecurity) register(fs *flag.FlagSet) {
	fs.StringVar(&s.NATSTLSCA, "nats-tls-ca", "", "PEM file of the CA(s) that sign the NATS server's certificate; turns TLS on (default with a tls:// URL: the system roots). Re-read at every reconnect")
	fs.StringVar(&s.NATSTLSCert, "nats-tls-cert", "", "PEM client certificate for NATS mutual TLS (with --nats-tls-key); turns TLS on. Re-read at every reconnect")
	fs.StringVar(&s.NATSTLSKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	fs.StringVar(&s.NATSUser, "nats-user", "", "NATS user name; its password comes from --nats-password-file or env "+envNATSPassword+", never from a flag")
	fs.StringVar(&s.NATSPasswordFile, "nats-password-file", "", "file holding the password of --nats-user (trailing newline ignored); re-read at every reconnect, so rotating it needs no restart")
	fs.StringVar(&s.NATSTokenFile, "nats-token-file", "", "file holding a NATS authentication token (or env "+envNATSToken+"); re-read at every reconnect")
	fs.StringVar(&s.NATSNKeySeedFile, "nats-nkey-seed-file", "", "file holding a NATS user NKey seed (SU...); the server must list its public key")
	fs.StringVar(&s.NATSCreds, "nats-creds", "", "NATS .creds file (user JWT and NKey seed, decentralized auth); re-read at every reconnect")
}

// Validate checks the combination of the NATS security settings with the
// --nats URL(s). It reads no file (`streamscore state` validates run's
// configuration on hosts that may lack the secrets); the files are read and
// checked when the connection is made.
func (s *natsSecurity) Validate(natsURL string) error {
	var errs []error
	_, envPass := os.LookupEnv(envNATSPassword)
	_, envToken := os.LookupEnv(envNATSToken)
	if natsURL == "" {
		for _, f := range []struct{ name, v string }{
			{"--nats-tls-ca", s.NATSTLSCA}, {"--nats-tls-cert", s.NATSTLSCert}, {"--nats-tls-key", s.NATSTLSKey},
			{"--nats-user", s.NATSUser}, {"--nats-password-file", s.NATSPasswordFile}, {"--nats-token-file", s.NATSTokenFile},
			{"--nats-nkey-seed-file", s.NATSNKeySeedFile}, {"--nats-creds", s.NATSCreds},
		} {
			if f.v != "" {
				errs = append(errs, fmt.Errorf("%s is set but --nats is empty (the NATS sink is disabled)", f.name))
			}
		}
		return errors.Join(errs...)
	}
	if (s.NATSTLSCert == "") != (s.NATSTLSKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	if s.NATSPasswordFile != "" && envPass {
		errs = append(errs, fmt.Errorf("both --nats-password-file and %s are set: use one", envNATSPassword))
	}
	if s.NATSTokenFile != "" && envToken {
		errs = append(errs, fmt.Errorf("both --nats-token-file and %s are set: use one", envNATSToken))
	}
	hasPass := s.NATSPasswordFile != "" || envPass
	if s.NATSUser != "" && !hasPass {
		errs = append(errs, fmt.Errorf("--nats-user needs a password: --nats-password-file or %s", envNATSPassword))
	}
	if s.NATSUser == "" && hasPass {
		errs = append(errs, errors.New("a NATS password is set but --nats-user is empty"))
	}
	var methods []string
	if s.NATSUser != "" || hasPass {
		methods = append(methods, "user/password")
	}
	if s.NATSTokenFile != "" || envToken {
		methods = append(methods, "token")
	}
	if s.NATSNKeySeedFile != "" {
		methods = append(methods, "--nats-nkey-seed-file")
	}
	if s.NATSCreds != "" {
		methods = append(methods, "--nats-creds")
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("NATS authentication: %s are exclusive: use one", strings.Join(methods, ", ")))
	}
	if len(methods) > 0 && urlsHaveUserInfo(natsURL) {
		errs = append(errs, fmt.Errorf("--nats %s carries credentials and %s is set too: use one", redactNATSURL(natsURL), methods[0]))
	}
	return errors.Join(errs...)
}

// method describes the authentication in use, for logs and errors. It names
// files and the user, never a secret.
func (s *natsSecurity) method(natsURL string) string {
	switch {
	case s.NATSCreds != "":
		return "credentials of --nats-creds " + s.NATSCreds
	case s.NATSNKeySeedFile != "":
		return "NKey seed of --nats-nkey-seed-file " + s.NATSNKeySeedFile
	case s.NATSTokenFile != "":
		return "token of --nats-token-file " + s.NATSTokenFile
	case os.Getenv(envNATSToken) != "":
		return "token of " + envNATSToken
	case s.NATSUser != "" && s.NATSPasswordFile != "":
		return fmt.Sprintf("user %q with the password of --nats-password-file %s", s.NATSUser, s.NATSPasswordFile)
	case s.NATSUser != "":
		return fmt.Sprintf("user %q with the password of %s", s.NATSUser, envNATSPassword)
	case urlsHaveUserInfo(natsURL):
		return "credentials in the --nats URL"
	}
	return "none"
}

// sendsSecret reports whether the authentication sends the secret itself
// to the server (password, token), rather than a signature (NKey, JWT).
func (s *natsSecurity) sendsSecret(natsURL string) bool {
	return s.NATSUser != "" || s.NATSTokenFile != "" || os.Getenv(envNATSToken) != "" || urlsHaveUserInfo(natsURL)
}

// wantsTLS reports whether TLS is asked for by a flag or a tls:// URL. (A
// server that requires TLS gets it anyway: nats.go upgrades.)
func (s *natsSecurity) wantsTLS(natsURL string) bool {
	if s.NATSTLSCA != "" || s.NATSTLSCert != "" {
		return true
	}
	for _, u := range splitList(natsURL) {
		if strings.HasPrefix(strings.ToLower(u), "tls://") || strings.HasPrefix(strings.ToLower(u), "wss://") {
			return true
		}
	}
	return false
}

// options returns the nats.go options for TLS and authentication. It reads
// and checks every file now, so that a missing or malformed file is an error
// naming its flag, not a failed handshake. Secrets read here are added to red.
func (s *natsSecurity) options(log *slog.Logger, red *redactor) ([]nats.Option, error) {
	var opts []nats.Option
	if s.NATSTLSCA != "" {
		if _, err := loadCAPool("--nats-tls-ca", s.NATSTLSCA); err != nil { // named here, not as a failed handshake
			return nil, err
		}
		opts = append(opts, nats.RootCAs(s.NATSTLSCA))
	}
	if s.NATSTLSCert != "" {
		if _, err := tls.LoadX509KeyPair(s.NATSTLSCert, s.NATSTLSKey); err != nil {
			return nil, fmt.Errorf("load --nats-tls-cert %s and --nats-tls-key %s: %w", s.NATSTLSCert, s.NATSTLSKey, err)
		}
		opts = append(opts, nats.ClientCert(s.NATSTLSCert, s.NATSTLSKey))
	}
	if s.NATSTLSCA != "" || s.NATSTLSCert != "" {
		// RootCAs and ClientCert turn TLS on; this states the floor.
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}

	switch {
	case s.NATSUser != "" && s.NATSPasswordFile != "":
		f, err := newNATSSecret("--nats-password-file", s.NATSPasswordFile, log, red)
		if err != nil {
			return nil, err
		}
		user := s.NATSUser
		opts = append(opts, nats.UserInfoHandler(func() (string, string) { return user, f.get() }))
	case s.NATSUser != "":
		pass := os.Getenv(envNATSPassword)
		if pass == "" {
			return nil, fmt.Errorf("%s is empty", envNATSPassword)
		}
		red.add(pass)
		opts = append(opts, nats.UserInfo(s.NATSUser, pass))
	case s.NATSTokenFile != "":
		f, err := newNATSSecret("--nats-token-file", s.NATSTokenFile, log, red)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.TokenHandler(f.get))
	case os.Getenv(envNATSToken) != "":
		tok := os.Getenv(envNATSToken)
		red.add(tok)
		opts = append(opts, nats.Token(tok))
	case s.NATSNKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(s.NATSNKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("read --nats-nkey-seed-file %s: %w", s.NATSNKeySeedFile, err)
		}
		opts = append(opts, o)
	case s.NATSCreds != "":
		if err := checkCreds(s.NATSCreds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(s.NATSCreds))
	}
	return opts, nil
}

// checkCreds reads a .creds file and checks that it holds a user JWT and a
// user NKey seed, so that a wrong file is reported at start with its flag.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read --nats-creds: %w", err)
	}
	defer clear(b)
	tok, err := nkeys.ParseDecoratedJWT(b)
	if err == nil {
		_, err = jwt.DecodeUserClaims(tok)
	}
	if err != nil {
		return fmt.Errorf("--nats-creds %s: no user JWT: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return fmt.Errorf("--nats-creds %s: no user NKey seed: %w", path, err)
	}
	kp.Wipe()
	return nil
}

// natsSecret is a secret read from a file (a secretFile, as for Kafka),
// re-read whenever nats.go asks for it (at every connect and reconnect) if
// the file changed, so that replacing the file rotates the secret. A failed
// re-read keeps the last value and is logged once per distinct error. Every
// value read is added to the redactor.
type natsSecret struct {
	file *secretFile
	log  *slog.Logger
	red  *redactor

	mu      sync.Mutex
	last    string
	lastErr string
}

func newNATSSecret(flagName, path string, log *slog.Logger, red *redactor) (*natsSecret, error) {
	f := &natsSecret{file: &secretFile{path: path, what: flagName, trim: trimNewline}, log: log, red: red}
	v, err := f.read()
	if err != nil {
		return nil, err
	}
	f.last = v
	return f, nil
}

func (f *natsSecret) read() (string, error) {
	v, err := f.file.get()
	if err != nil {
		return "", err
	}
	f.red.add(v)
	return v, nil
}

// get returns the file's current content, or the last good one.
func (f *natsSecret) get() string {
	v, err := f.read()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			f.log.Error("nats: cannot re-read secret file; using the previous value", "err", msg)
		}
		return f.last
	}
	f.last, f.lastErr = v, ""
	return v
}

// connectNATS connects to c.NATS with c's TLS and authentication settings,
// reporting the connection's health to h while it runs. It fails at once
// (nats.go does not retry a failed first connect) with an error that names
// the cause: TLS, authentication, or reaching the server. Once connected,
// it reconnects forever, including after authentication errors (so a rotated
// credential is picked up), and every loss, failed reconnect and async
// authentication error marks NATS down in h.
func connectNATS(c *engineConfig, h *connHealth, log *slog.Logger) (*nats.Conn, error) {
	s := &c.natsSecurity
	red := newRedactor(c.NATS)
	shown := redactNATSURL(c.NATS)
	if urlsHaveUserInfo(c.NATS) { // a password, or a token (user without password)
		log.Warn("the --nats URL carries a secret (redacted in logs); prefer --nats-user with --nats-password-file, --nats-token-file or --nats-creds", "nats", shown)
	}
	if s.sendsSecret(c.NATS) && !s.wantsTLS(c.NATS) {
		log.Warn("a NATS password or token without TLS (--nats-tls-ca or a tls:// URL): it travels in clear unless the server requires TLS", "nats", shown)
	}
	opts, err := s.options(log, red)
	if err != nil {
		return nil, fmt.Errorf("configure nats: %w", red.err(err))
	}
	var conn atomic.Pointer[nats.Conn] // set once connected
	var lastServer atomic.Value        // redacted URL of the server last connected to
	lastServer.Store(shown)
	opts = append(opts,
		nats.Name("streamscore"),
		nats.MaxReconnects(-1),
		// The delay callback runs in the reconnect loop after every server
		// was tried, outside the connection's lock: the one place where a
		// failed TLS handshake or authentication of a reconnect is visible
		// (nats.go calls ReconnectErrHandler only when the dial fails).
		nats.CustomReconnectDelay(func(int) time.Duration {
			if nc := conn.Load(); nc != nil {
				if err := nc.LastError(); err != nil {
					h.Down(natsTransport, natsCause(err), red.err(describeNATSErr(err, s, c.NATS)))
				}
			}
			return natsReconnectWait + rand.N(natsReconnectWait)
		}),
		nats.ReconnectBufSize(64<<20),
		// nats.go gives up after the same authentication error twice in a
		// row; a daemon keeps trying (and stays not ready), so that fixing
		// the credentials on either side needs no restart.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && nc.IsClosed() {
				return // Close at shutdown, not a failure
			}
			server := lastServer.Load().(string)
			cause := "disconnected"
			if err == nil {
				err = fmt.Errorf("nats: connection to %s lost", server)
			} else {
				if c := natsCause(err); c != "connect" {
					cause = c
				}
				err = fmt.Errorf("nats: connection to %s lost: %w", server, err)
			}
			h.Down(natsTransport, cause, red.err(err))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				h.Down(natsTransport, natsCause(err), red.err(describeNATSErr(err, s, c.NATS)))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			server := red.text(redactNATSURL(nc.ConnectedUrl()))
			lastServer.Store(server)
			h.Up(natsTransport)
			log.Info("nats reconnected", "server", server)
		}),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			switch {
			case err == nil:
			case natsCause(err) == "auth" || natsCause(err) == "tls":
				if nc.IsReconnecting() {
					return // reported by the reconnect delay callback
				}
				h.Down(natsTransport, natsCause(err), red.err(describeNATSErr(err, s, c.NATS)))
			case errors.Is(err, nats.ErrPermissionViolation):
				// The connection stays up; publishes to the subject fail
				// and the sink applies backpressure, so this is counted and
				// logged, not a down connection.
				h.failures.WithLabelValues(natsTransport, "permission").Inc()
				log.Error("nats: permission denied by the server", "err", red.text(err.Error()))
			default:
				log.Error("nats: asynchronous error", "err", red.text(err.Error()))
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			// Closed only by Close (reconnects are unlimited); report it
			// when the connection had failed before.
			if err := nc.LastError(); err != nil {
				h.Down(natsTransport, natsCause(err), red.err(err))
			}
		}),
	)
	nc, err := nats.Connect(c.NATS, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", shown, red.err(describeNATSErr(err, s, c.NATS)))
	}
	conn.Store(nc)
	server := red.text(redactNATSURL(nc.ConnectedUrl()))
	lastServer.Store(server)
	_, tlsErr := nc.TLSConnectionState()
	log.Info("nats connected", "server", server, "tls", tlsErr == nil, "auth", s.method(c.NATS))
	return nc, nil
}

// natsCause classifies a nats.go error into a bounded cause: "tls", "auth"
// or "connect".
func natsCause(err error) string {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		header     tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return "auth"
	case errors.Is(err, nats.ErrTLS), errors.Is(err, nats.ErrSecureConnWanted), errors.Is(err, nats.ErrSecureConnRequired),
		errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidErr), errors.As(err, &verifyErr),
		errors.As(err, &header), isRemoteTLSAlert(err):
		return "tls"
	}
	// Server -ERR texts that nats.go does not map to a sentinel.
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "authorization violation"), strings.Contains(msg, "authentication"):
		return "auth"
	case strings.Contains(msg, "tls: "), strings.Contains(msg, "x509: "), strings.Contains(msg, "secure connection"):
		return "tls"
	}
	return "connect"
}

// describeNATSErr wraps a connection error with its cause and what to check,
// keeping err in the chain: "nats: TLS: <hint>: <err>",
// "nats: authentication failed (<method>): <err>".
func describeNATSErr(err error, s *natsSecurity, natsURL string) error {
	switch natsCause(err) {
	case "auth":
		return fmt.Errorf("nats: authentication failed (%s): %w", s.method(natsURL), err)
	case "tls":
		return fmt.Errorf("nats: TLS: %s: %w", tlsHint(err, s), err)
	}
	return err
}

func tlsHint(err error, s *natsSecurity) string {
	var (
		unknownCA  x509.UnknownAuthorityError
		verifyErr  *tls.CertificateVerificationError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
	)
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "TLS is configured (--nats-tls-*, tls://) but the server offers no TLS"
	case errors.As(err, &unknownCA), errors.As(err, &verifyErr) && strings.Contains(verifyErr.Error(), "unknown authority"):
		if s.NATSTLSCA == "" {
			return "the server's certificate is not signed by a trusted CA (the server requires TLS; give its CA with --nats-tls-ca)"
		}
		return "the server's certificate is not signed by the CA of --nats-tls-ca " + s.NATSTLSCA
	case errors.As(err, &hostErr):
		return "the server's certificate does not match the host of --nats"
	case errors.As(err, &invalidErr):
		return "the server's certificate is not valid (expired, not yet valid or not for TLS servers)"
	case isRemoteTLSAlert(err), strings.Contains(msg, "closed by remote after TLS handshake"):
		// The server sent an alert (TLS 1.2, or 1.3 "certificate
		// required") or hung up once the client had sent its certificate
		// (TLS 1.3 rejecting it).
		if s.NATSTLSCert == "" {
			return "the server refused the handshake (does it require a client certificate? --nats-tls-cert, --nats-tls-key)"
		}
		return "the server refused the handshake or the client certificate of --nats-tls-cert " + s.NATSTLSCert
	}
	return "handshake failed"
}

// isRemoteTLSAlert reports whether err is a TLS alert sent by the server
// ("remote error: tls: bad certificate"); crypto/tls does not export the
// alert type for TCP connections.
func isRemoteTLSAlert(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		return true
	}
	return strings.Contains(err.Error(), "remote error: tls:")
}

// redactor replaces known secrets in text with "***". Safe for concurrent
// use: secrets read from files at reconnects are added while handlers run.
type redactor struct {
	mu      sync.Mutex
	secrets []string
}

// newRedactor returns a redactor that knows the secrets of the --nats URLs,
// both as written (percent-encoded) and decoded.
func newRedactor(natsURLs string) *redactor {
	r := &redactor{}
	for _, u := range splitList(natsURLs) {
		user, pass, hasUser, hasPass := rawUserInfo(u)
		if !hasUser {
			continue
		}
		secret := pass
		if !hasPass {
			secret = user // nats://TOKEN@host
		}
		r.add(secret)
		if dec, err := url.PathUnescape(secret); err == nil {
			r.add(dec)
		}
	}
	return r
}

func (r *redactor) add(secret string) {
	if secret == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.secrets {
		if s == secret {
			return
		}
	}
	r.secrets = append(r.secrets, secret)
}

// text returns s with every known secret and every URL password replaced.
func (r *redactor) text(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "***")
	}
	return s
}

// err returns err with a redacted text, or err itself when nothing needed
// redacting. The chain is kept for errors.Is.
func (r *redactor) err(err error) error {
	if err == nil {
		return nil
	}
	if msg := r.text(err.Error()); msg != err.Error() {
		return &redactedError{msg: msg, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// rawUserInfo splits the user information of one NATS URL as written
// (nats://user:pass@host, nats://token@host, user:pass@host).
func rawUserInfo(u string) (user, pass string, hasUser, hasPass bool) {
	rest := u
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", "", false, false
	}
	info := rest[:at]
	user, pass, hasPass = strings.Cut(info, ":")
	return user, pass, true, hasPass
}

// redactNATSURL returns the comma-separated NATS URLs with passwords and
// tokens replaced: nats://user:***@host:4222, nats://***@host:4222.
func redactNATSURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		user, _, hasUser, hasPass := rawUserInfo(u)
		if !hasUser {
			continue
		}
		scheme := ""
		if j := strings.Index(u, "://"); j >= 0 {
			scheme = u[:j+3]
		}
		host := u[strings.LastIndex(u, "@")+1:]
		if hasPass {
			parts[i] = scheme + user + ":***@" + host
		} else {
			parts[i] = scheme + "***@" + host
		}
	}
	return strings.Join(parts, ",")
}

// urlsHaveUserInfo reports whether any --nats URL carries a user and
// password or a token: a secret either way.
func urlsHaveUserInfo(urls string) bool {
	for _, u := range splitList(urls) {
		if _, _, hasUser, _ := rawUserInfo(u); hasUser {
			return true
		}
	}
	return false
}
