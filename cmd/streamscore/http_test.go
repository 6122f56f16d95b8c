package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type testToken struct{ file, value string }

// writeToken writes a bearer token file into a test directory.
func writeToken(t *testing.T) testToken {
	t.Helper()
	v := "tok-" + strings.Repeat("x7", 12)
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testToken{file: f, value: v}
}

// serveTest serves h with a reload route that answers 200 and returns the
// base URL.
func serveTest(t *testing.T, h *httpSurface, reg *prometheus.Registry) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("reloaded\n")) })
	addr, wait, err := h.serve(ctx, "127.0.0.1:0", reg, quietLog(), route{"/-/reload", ok, classReload},
		route{"/readyz", ok, classProbes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); wait() })
	return h.scheme() + "://" + addr
}

func status(t *testing.T, c *http.Client, method, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHTTPAccess: /metrics and the probes are open by default, /-/reload
// needs the bearer token (off without a token file), a token is rotated by
// listing both, --http-open "" closes everything, pprof is only there when
// asked for, and oversized headers are refused.
func TestHTTPAccess(t *testing.T) {
	tok := writeToken(t)
	c := http.DefaultClient

	t.Run("no token file", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		base := serveTest(t, &httpSurface{Open: "metrics,probes"}, reg)
		if got := status(t, c, "GET", base+"/metrics", ""); got != 200 {
			t.Errorf("GET /metrics: %d, want 200", got)
		}
		if got := status(t, c, "POST", base+"/-/reload", "anything-long-enough"); got != http.StatusForbidden {
			t.Errorf("POST /-/reload without --http-token-file: %d, want 403 (off)", got)
		}
		if got := status(t, c, "GET", base+"/debug/pprof/", ""); got != http.StatusNotFound {
			t.Errorf("GET /debug/pprof/ without --pprof: %d, want 404", got)
		}
		if got := deniedCount(t, reg, "reload", "off"); got != 1 {
			t.Errorf("denied{reload,off} = %v, want 1", got)
		}
	})

	t.Run("token", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		base := serveTest(t, &httpSurface{TokenFile: tok.file, Open: "metrics,probes", Pprof: true}, reg)
		for _, tc := range []struct {
			name, method, path, token string
			want                      int
		}{
			{"metrics open", "GET", "/metrics", "", 200},
			{"probe open", "GET", "/readyz", "", 200},
			{"reload without token", "POST", "/-/reload", "", 401},
			{"reload wrong token", "POST", "/-/reload", tok.value + "x", 401},
			{"reload", "POST", "/-/reload", tok.value, 200},
			{"pprof without token", "GET", "/debug/pprof/", "", 401},
			{"pprof", "GET", "/debug/pprof/", tok.value, 200},
		} {
			if got := status(t, c, tc.method, base+tc.path, tc.token); got != tc.want {
				t.Errorf("%s: %s %s: got %d, want %d", tc.name, tc.method, tc.path, got, tc.want)
			}
		}
		// Rotation: both tokens, then only the new one.
		next := "next-" + strings.Repeat("y8", 12)
		writeFile(t, tok.file, []byte(tok.value+"\n"+next+"\n"))
		if a, b := status(t, c, "POST", base+"/-/reload", tok.value), status(t, c, "POST", base+"/-/reload", next); a != 200 || b != 200 {
			t.Errorf("during the rotation: old %d, new %d; want 200, 200", a, b)
		}
		writeFile(t, tok.file, []byte(next+"\n"))
		if a, b := status(t, c, "POST", base+"/-/reload", tok.value), status(t, c, "POST", base+"/-/reload", next); a != 401 || b != 200 {
			t.Errorf("after the rotation: old %d, new %d; want 401, 200", a, b)
		}
		writeFile(t, tok.file, []byte(tok.value+"\n"))

		// Header limit.
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 2*httpMaxHeaderBytes))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized header: %d, want 431", resp.StatusCode)
		}
	})

	t.Run("closed", func(t *testing.T) {
		base := serveTest(t, &httpSurface{TokenFile: tok.file, Open: ""}, prometheus.NewRegistry())
		for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
			if got := status(t, c, "GET", base+p, ""); got != 401 {
				t.Errorf("GET %s without token, --http-open '': %d, want 401", p, got)
			}
			if got := status(t, c, "GET", base+p, tok.value); got != 200 {
				t.Errorf("GET %s with token: %d, want 200", p, got)
			}
		}
	})
}

// deniedCount returns streamscore_http_requests_denied_total{class, reason}.
func deniedCount(t *testing.T, reg *prometheus.Registry, class, reason string) float64 {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, "streamscore_http_requests_denied_total")
	if err != nil || n == 0 {
		t.Fatalf("no streamscore_http_requests_denied_total series (%v)", err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			lv := map[string]string{}
			for _, l := range m.GetLabel() {
				lv[l.GetName()] = l.GetValue()
			}
			if mf.GetName() == "streamscore_http_requests_denied_total" && lv["class"] == class && lv["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no streamscore_http_requests_denied_total{class=%q,reason=%q}", class, reason)
	return 0
}

// TestHTTPValidate: flag combinations that would weaken the surface are
// refused at start.
func TestHTTPValidate(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	writeFile(t, short, []byte("abc\n"))
	for _, tc := range []struct {
		name string
		h    httpSurface
		want string
	}{
		{"pprof without token", httpSurface{Pprof: true}, "--pprof needs --http-token-file"},
		{"reload opened", httpSurface{Open: "metrics,reload"}, "reload always needs the bearer token"},
		{"unknown class", httpSurface{Open: "admin"}, `unknown endpoint class "admin"`},
		{"cert without key", httpSurface{TLSCert: "c.pem"}, "go together"},
		{"client CA without cert", httpSurface{TLSClientCA: "ca.pem"}, "needs --http-tls-cert"},
		{"short token", httpSurface{TokenFile: short}, "shorter than 16 bytes"},
		{"missing token file", httpSurface{TokenFile: short + "-none"}, "no such file"},
	} {
		err := tc.h.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if err := (&httpSurface{Open: "metrics,probes"}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// TestHTTPTLS: with --http-tls-cert the server speaks only TLS; with
// --http-tls-client-ca a client without a certificate is refused.
func TestHTTPTLS(t *testing.T) {
	ca := newTestCA(t, "http-ca")
	_, certFile, keyFile := ca.issue(t, "server", false)
	pair, _, _ := ca.issue(t, "client", true)

	base := serveTest(t, &httpSurface{Open: "metrics,probes", TLSCert: certFile, TLSKey: keyFile, TLSClientCA: ca.caFile}, prometheus.NewRegistry())
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %s", base)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{pair}}}}
	if got := status(t, withCert, "GET", base+"/metrics", ""); got != 200 {
		t.Errorf("mTLS client: %d, want 200", got)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	if _, err := noCert.Get(base + "/metrics"); err == nil {
		t.Errorf("a client without a certificate was served")
	}
	// Plain HTTP on the TLS port gets Go's 400 "client sent an HTTP request
	// to an HTTPS server", never the metrics.
	if resp, err := http.Get("http://" + strings.TrimPrefix(base, "https://") + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener: %d, want 400", resp.StatusCode)
		}
	}
}
