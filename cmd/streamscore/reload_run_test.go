//go:build unix

package main

import (
	"crypto/rand"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/stream/local"
)

// TestRunReloadSubprocess runs `streamscore run --models-dir` and reloads
// its models the three ways: a changed file in the directory, SIGHUP (which
// must not stop the process) and POST /-/reload; then a tampered file is
// refused and the process still exits 0 on SIGTERM.
func TestRunReloadSubprocess(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 2, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	dir := t.TempDir()
	for _, name := range []string{"fraud.json", "fraud_lr.json", "risk.json"} {
		writeModel(t, filepath.Join(dir, name), shippedFile(t, name, nil))
	}
	token := writeToken(t)
	sub := startStreamscore(t, nil, "run", "--brokers", strings.Join(k.Brokers(), ","), "--nats", "",
		"--labels-topic", "", "--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", "",
		"--models-dir", dir, "--models-poll", "50ms", "--decision-models", "fraud",
		"--metrics-addr", "127.0.0.1:0", "--group", "reload-run", "--http-token-file", token.file,
		"--model-trust", testPub(t))
	metricsURL := sub.metricsURL()
	reloadURL := strings.TrimSuffix(metricsURL, "/metrics") + "/-/reload"
	metrics := func() string {
		resp, err := http.Get(metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitMetric := func(what string, want ...string) {
		t.Helper()
		poll(t, 20*time.Second*timeScale, what, func() bool {
			sub.alive()
			m := metrics()
			for _, w := range want {
				if !strings.Contains(m, w) {
					return false
				}
			}
			return true
		})
	}

	writeModel(t, filepath.Join(dir, "fraud.json"), shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 2 }))
	waitMetric("the directory reload", `streamscore_stream_model_reloads_total{outcome="ok"} 1`,
		`model="fraud",model_version="2",role="scoring"} 1`)

	sub.signal(syscall.SIGHUP)
	waitMetric("the SIGHUP reload", `streamscore_stream_model_reloads_total{outcome="ok"} 2`)

	req, _ := http.NewRequest(http.MethodPost, reloadURL, nil)
	req.Header.Set("Authorization", "Bearer "+token.value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /-/reload: %d", resp.StatusCode)
	}
	waitMetric("the HTTP reload", `streamscore_stream_model_reloads_total{outcome="ok"} 3`)

	v3 := string(shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 3 }))
	writeFile(t, filepath.Join(dir, "fraud.json"), []byte(strings.Replace(v3, `"version": 3`, `"version": 4`, 1)))
	waitMetric("the refused reload", `streamscore_stream_model_reloads_total{outcome="failed"} 1`,
		`model="fraud",model_version="2",role="scoring"} 1`)

	// A valid file signed by an untrusted key: refused, counted by reason.
	fraud := filepath.Join(dir, "fraud.json")
	writeFile(t, fraud, shippedFile(t, "fraud.json", func(f *models.File) { f.Version = 5; f.Thresholds.Review, f.Thresholds.Alert = 0.005, 0.01 }))
	signWith(t, fraud, must(models.GenerateKey(rand.Reader)))
	// (A poll between the model's write and its signature's may refuse
	// it once more first, for the old signature: the failed count is 2 or 3.)
	waitMetric("the untrusted signature", `streamscore_models_signature_failures_total{reason="untrusted_key"} 1`,
		`model="fraud",model_version="2",role="scoring"} 1`)

	sub.signal(syscall.SIGTERM)
	if err := sub.wait(40 * time.Second * timeScale); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
	for _, cause := range []string{"digest mismatch", "signed by no trusted key"} {
		if !strings.Contains(sub.stderr.String(), cause) {
			t.Errorf("the refused reload is not logged with its cause %q", cause)
		}
	}
}
