package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The HTTP server of --metrics-addr is the engine's only listening surface.
// Its limits: a request's headers must arrive within httpReadHeaderTimeout
// and fit in httpMaxHeaderBytes, the whole request within httpReadTimeout,
// the response within httpWriteTimeout (longer with --pprof, whose CPU
// profile streams for up to 60 s), and an idle keep-alive connection is
// closed after httpIdleTimeout. No request body is read by any endpoint.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpPprofWriteTimeout = 75 * time.Second
	httpIdleTimeout       = 60 * time.Second
	httpMaxHeaderBytes    = 16 << 10
	maxTokenFileBytes     = 64 << 10
)

// Endpoint classes: who may call an endpoint is decided per class.
const (
	classMetrics = "metrics" // GET /metrics
	classProbes  = "probes"  // GET /healthz, /readyz
	classReload  = "reload"  // POST /-/reload: always needs the token
	classPprof   = "pprof"   // /debug/pprof/ with --pprof: always needs the token
)

// httpSurface is the configuration of the HTTP server of run: TLS, the
// bearer token and which endpoint classes are open without it, pprof.
type httpSurface struct {
	TokenFile   string
	Open        string
	TLSCert     string
	TLSKey      string
	TLSClientCA string
	Pprof       bool
}

func (h *httpSurface) register(fs *flag.FlagSet) {
	fs.StringVar(&h.TokenFile, "http-token-file", "", "file holding the bearer token(s) of the HTTP endpoints, one per line (two during a rotation); re-read on every request. Without it POST /-/reload and /debug/pprof/ are off")
	fs.StringVar(&h.Open, "http-open", "metrics,probes", "endpoint classes served without the bearer token: any of metrics (/metrics), probes (/healthz, /readyz); empty = every endpoint needs the token. /-/reload and pprof always need it")
	fs.StringVar(&h.TLSCert, "http-tls-cert", "", "serve HTTPS with this certificate (PEM; re-read when the file changes); needs --http-tls-key")
	fs.StringVar(&h.TLSKey, "http-tls-key", "", "private key (PEM) of --http-tls-cert")
	fs.StringVar(&h.TLSClientCA, "http-tls-client-ca", "", "with --http-tls-cert, require client certificates signed by these CAs (PEM): mutual TLS")
	fs.BoolVar(&h.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ (needs --http-token-file: profiles reveal memory contents)")
}

// Validate checks the HTTP surface's flags.
func (h *httpSurface) Validate() error {
	var errs []error
	for _, c := range splitList(h.Open) {
		switch c {
		case classMetrics, classProbes:
		case classReload, classPprof:
			errs = append(errs, fmt.Errorf("--http-open %s: %s always needs the bearer token", c, c))
		default:
			errs = append(errs, fmt.Errorf("--http-open: unknown endpoint class %q (metrics, probes)", c))
		}
	}
	if (h.TLSCert == "") != (h.TLSKey == "") {
		errs = append(errs, errors.New("--http-tls-cert and --http-tls-key go together"))
	}
	if h.TLSClientCA != "" && h.TLSCert == "" {
		errs = append(errs, errors.New("--http-tls-client-ca needs --http-tls-cert"))
	}
	if h.Pprof && h.TokenFile == "" {
		errs = append(errs, errors.New("--pprof needs --http-token-file"))
	}
	if h.TokenFile != "" {
		if _, err := readTokens(h.TokenFile); err != nil {
			errs = append(errs, fmt.Errorf("--http-token-file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// route is an extra handler of the HTTP server and its endpoint class.
type route struct {
	pattern string
	handler http.Handler
	class   string
}

// httpMetrics counts refused requests by endpoint class.
type httpMetrics struct {
	denied *prometheus.CounterVec
}

// serve serves /metrics, /healthz, pprof (when asked for) and routes on addr
// until ctx is done, each behind the access rule of its class. It returns
// the bound address and a function that stops the server and waits for it.
func (h *httpSurface) serve(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger, routes ...route) (string, func(), error) {
	if err := h.Validate(); err != nil {
		return "", nil, err
	}
	var tlsCfg *tls.Config
	if h.TLSCert != "" {
		var err error
		if tlsCfg, err = h.tlsConfig(); err != nil {
			return "", nil, err
		}
	}
	m := httpMetrics{denied: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamscore_http_requests_denied_total",
		Help: "HTTP requests refused for a missing or wrong bearer token, or to an endpoint that is off, by endpoint class.",
	}, []string{"class", "reason"})}
	if err := reg.Register(m.denied); err != nil {
		return "", nil, fmt.Errorf("register http metrics: %w", err)
	}
	open := splitList(h.Open)
	gate := func(class string, next http.Handler) http.Handler {
		if slices.Contains(open, class) {
			return next
		}
		return tokenGate(h.TokenFile, class, m, log, next)
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", gate(classMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	mux.Handle("/healthz", gate(classProbes, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })))
	for _, r := range routes {
		mux.Handle(r.pattern, gate(r.class, r.handler))
	}
	write := httpWriteTimeout
	if h.Pprof {
		write = httpPprofWriteTimeout
		pp := http.NewServeMux()
		pp.HandleFunc("/debug/pprof/", pprof.Index)
		pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", gate(classPprof, pp))
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      write,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}
	stop := context.AfterFunc(ctx, shutdown)
	wait := func() {
		stop()
		shutdown()
		<-done
	}
	return ln.Addr().String(), wait, nil
}

// scheme is the URL scheme of the server: http or https.
func (h *httpSurface) scheme() string {
	if h.TLSCert != "" {
		return "https"
	}
	return "http"
}

// serveMetrics serves /metrics, /healthz and routes over plain HTTP with the
// default access rules (metrics and probes open, every other class behind
// --http-token-file, which is unset here: off). For demo and tests.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger, routes ...route) (string, func(), error) {
	h := &httpSurface{Open: classMetrics + "," + classProbes}
	return h.serve(ctx, addr, reg, log, routes...)
}

// tlsConfig returns the listener's TLS configuration: TLS 1.2 or newer, the
// certificate re-read when its files change (so a renewed certificate is
// served without a restart), client certificates required and verified with
// --http-tls-client-ca.
func (h *httpSurface) tlsConfig() (*tls.Config, error) {
	kp := &keyPairFiles{cert: h.TLSCert, key: h.TLSKey, flag: "--http-tls", keepOld: true}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	if h.TLSClientCA != "" {
		pool, err := loadCAPool("--http-tls-client-ca", h.TLSClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// tokenGate serves next only to requests with "Authorization: Bearer <t>"
// where t is one of the tokens in file (re-read on every request, so a
// token is rotated by writing the new one beside the old, then removing the
// old). Without a file the endpoint is off (403). Refusals are counted and
// answered without saying whether a token was close.
func tokenGate(file, class string, m httpMetrics, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if file == "" {
			m.denied.WithLabelValues(class, "off").Inc()
			http.Error(w, class+" over HTTP is off: start with --http-token-file", http.StatusForbidden)
			return
		}
		tokens, err := readTokens(file)
		if err != nil {
			m.denied.WithLabelValues(class, "token_file").Inc()
			log.Error("http bearer token file unreadable", "class", class, "err", err)
			http.Error(w, "token file unreadable", http.StatusServiceUnavailable)
			return
		}
		got, ok := bearer(r)
		if !ok || !tokenMatch(tokens, got) {
			m.denied.WithLabelValues(class, "token").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="streamscore"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) ([]byte, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return nil, false
	}
	return []byte(strings.TrimSpace(h[len(p):])), true
}

// tokenMatch compares got with every token in constant time per token.
func tokenMatch(tokens [][]byte, got []byte) bool {
	ok := 0
	for _, t := range tokens {
		ok |= subtle.ConstantTimeCompare(t, got)
	}
	return ok == 1
}

// readTokens reads a token file: one token per non-empty line, surrounding
// blanks ignored; tokens shorter than 16 bytes are refused (a guessable
// token is worse than none, which at least keeps the endpoint off).
func readTokens(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTokenFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxTokenFileBytes)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		t := bytes.TrimSpace(sc.Bytes())
		if len(t) == 0 {
			continue
		}
		if len(t) < 16 {
			return nil, fmt.Errorf("%s line %d: token shorter than 16 bytes", path, n)
		}
		out = append(out, bytes.Clone(t))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return out, nil
}
