package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// secureTopics are the topics of the secure run tests.
var secureTopics = map[string]int{"transactions": 2, "labels": 1, "scores": 1}

// runSecureArgs are `streamscore run`'s flags for the secure tests: Kafka
// in and out (scores only), no NATS.
func runSecureArgs(brokers []string, sec ...string) []string {
	return append([]string{"run",
		"--brokers", strings.Join(brokers, ","),
		"--nats", "",
		"--group", "secure",
		"--topic", "transactions", "--labels-topic", "labels", "--scores-topic", "scores",
		"--alerts-topic", "", "--audit-topic", "", "--deadletter-topic", "",
		"--max-delay", "5ms",
		"--metrics-addr", "127.0.0.1:0",
		"--kafka-check-interval", "1s",
	}, sec...)
}

// noSecret fails the test if out holds any of the secrets.
func noSecret(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s holds a secret (%q)", what, s)
		}
	}
}

// secureEndOffsets is local.EndOffsets over the secured connection.
func secureEndOffsets(t *testing.T, ctx context.Context, sec *kafkaSecurity, brokers []string, topic string) map[int]int64 {
	t.Helper()
	tr, err := sec.transport()
	if err != nil {
		t.Fatal(err)
	}
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	if tr != nil {
		cl.Transport = tr
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		t.Fatalf("metadata of %s: %v %v", topic, err, md)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, po := range res.Topics[topic] {
		out[po.Partition] = po.LastOffset
	}
	return out
}

// secureReadAll reads every message of topic up to the end offsets in ends,
// over the secured connection.
func secureReadAll(t *testing.T, ctx context.Context, sec *kafkaSecurity, brokers []string, topic string, ends map[int]int64) []kafka.Message {
	t.Helper()
	d, err := sec.dialer()
	if err != nil {
		t.Fatal(err)
	}
	var out []kafka.Message
	for p, end := range ends {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, Dialer: d,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: time.Second})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out
}

// newFlagSetFor returns a flag set with sec's flags.
func newFlagSetFor(sec *kafkaSecurity) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	sec.register(fs)
	return fs
}

func sumOffsets(m map[int]int64) (s int64) {
	for _, v := range m {
		s += v
	}
	return s
}

// getStatus GETs url and returns the status code and body.
func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the sample of metrics whose name and
// labels (as printed) start with series, or -1.
func metricValue(metrics, series string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(line, series); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
					return v
				}
			}
		}
	}
	return -1
}

// TestRunKafkaSecure runs `streamscore gen` and `streamscore run` end to
// end against embedded brokers with TLS, mutual TLS, SASL PLAIN and SCRAM:
// gen produces transactions and labels, run scores every transaction to
// the scores topic and reads every label, through the secured
// connections. The password never shows in either's output.
func TestRunKafkaSecure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		mutual bool
		user   [3]string // mechanism, user, password for the cluster; empty: no SASL
		env    bool      // password from the environment rather than a file
		flags  func(sk *secureKafka, cert, key, passFile string) []string
		want   string   // the "kafka connection checked" log line's security
		extra  []string // more run flags
	}{
		{name: "tls+scram-sha-512", tls: true, user: [3]string{"SCRAM-SHA-512", testKafkaUser, testKafkaPass},
			flags: func(sk *secureKafka, _, _, pass string) []string {
				return []string{"--kafka-tls-ca", sk.ca.caFile, "--kafka-sasl-mechanism", "scram-sha-512",
					"--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", pass}
			}, want: "tls=on sasl=scram-sha-512"},
		{name: "mutual-tls+plain, password from env", tls: true, mutual: true, env: true,
			user: [3]string{"PLAIN", testKafkaUser, testKafkaPass},
			flags: func(sk *secureKafka, cert, key, _ string) []string {
				return []string{"--kafka-tls", "on", "--kafka-tls-ca", sk.ca.caFile, "--kafka-tls-cert", cert, "--kafka-tls-key", key,
					"--kafka-tls-server-name", "localhost", "--kafka-tls-min-version", "1.3",
					"--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", testKafkaUser}
			}, want: "tls=mutual sasl=plain"},
		{name: "tls+scram-sha-512, repartition mode (R, E, checkpoints and side commits over the secured connection)",
			tls: true, user: [3]string{"SCRAM-SHA-512", testKafkaUser, testKafkaPass},
			flags: func(sk *secureKafka, _, _, pass string) []string {
				return []string{"--kafka-tls-ca", sk.ca.caFile, "--kafka-sasl-mechanism", "scram-sha-512",
					"--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", pass}
			}, want: "tls=on sasl=scram-sha-512",
			extra: []string{"--terminal-stage", "repartition", "--checkpoint-store", "kafka", "--state-interval", "1s"}},
		{name: "scram-sha-256 without tls", user: [3]string{"SCRAM-SHA-256", testKafkaUser, testKafkaPass},
			flags: func(_ *secureKafka, _, _, pass string) []string {
				return []string{"--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", pass}
			}, want: "tls=off sasl=scram-sha-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var users [][3]string
			if tc.user[0] != "" {
				users = append(users, tc.user)
			}
			sk := startSecureKafka(t, secureTopics, tc.tls, tc.mutual, users...)
			var cert, key string
			if tc.mutual {
				_, cert, key = sk.ca.issue(t, "streamscore", true)
			}
			passFile := writeSecret(t, t.TempDir(), "kafka-password", testKafkaPass+"\n")
			flags := tc.flags(sk, cert, key, passFile)
			var env []string
			if tc.env {
				env = append(env, envKafkaSASLPassword+"="+testKafkaPass)
			}
			// The test's own client, configured like the subprocesses.
			var sec kafkaSecurity
			fs := newFlagSetFor(&sec)
			if err := fs.Parse(flags); err != nil {
				t.Fatal(err)
			}
			if tc.env {
				t.Setenv(envKafkaSASLPassword, testKafkaPass)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second*timeScale)
			defer cancel()

			gen := startStreamscore(t, env, append([]string{"gen", "--brokers", strings.Join(sk.brokers, ","),
				"--count", "300", "--rate", "3000", "--label-delay", "50ms", "--genuine-label-rate", "0.1", "--cards", "200"}, flags...)...)
			if err := gen.wait(60 * time.Second * timeScale); err != nil {
				t.Fatalf("gen: %v\n%s", err, gen.stderr.String())
			}
			noSecret(t, "gen's output", gen.stdout.String()+gen.stderr.String(), testKafkaPass)
			txEnds := secureEndOffsets(t, ctx, &sec, sk.brokers, "transactions")
			labelEnds := secureEndOffsets(t, ctx, &sec, sk.brokers, "labels")
			if sumOffsets(txEnds) != 300 || sumOffsets(labelEnds) == 0 {
				t.Fatalf("gen produced %v transactions and %v labels, want 300 and some", txEnds, labelEnds)
			}

			run := startStreamscore(t, env, runSecureArgs(sk.brokers, append(slices.Clone(flags), tc.extra...)...)...)
			metricsURL := run.metricsURL()
			poll(t, 60*time.Second*timeScale, "every transaction scored", func() bool {
				run.alive()
				return sumOffsets(secureEndOffsets(t, ctx, &sec, sk.brokers, "scores")) >= 300
			})
			poll(t, 30*time.Second*timeScale, "every label read", func() bool {
				_, m := getStatus(t, metricsURL)
				return metricValue(m, `streamscore_stream_events_consumed_total{topic="labels"}`) == float64(sumOffsets(labelEnds))
			})
			if code, body := getStatus(t, strings.TrimSuffix(metricsURL, "/metrics")+"/readyz"); code != http.StatusOK {
				t.Errorf("GET /readyz: %d %q, want 200", code, body)
			}
			run.signal(syscall.SIGTERM)
			if err := run.wait(30 * time.Second * timeScale); err != nil {
				t.Fatalf("run exited with %v", err)
			}
			out := run.stdout.String() + run.stderr.String()
			noSecret(t, "run's output", out, testKafkaPass)
			if !strings.Contains(out, tc.want) {
				t.Errorf("run's log has no %q", tc.want)
			}
			if slices.Contains(tc.extra, "repartition") && (!strings.Contains(out, `msg="repartition mode: shared state through the repartition topic"`) ||
				!strings.Contains(out, `msg="terminal partitions released"`)) {
				t.Errorf("run's log shows no repartition mode with a terminal stage")
			}

			// Every transaction has exactly one score record (the run
			// stopped softly, so nothing was re-delivered).
			txs := map[string]bool{}
			for _, m := range secureReadAll(t, ctx, &sec, sk.brokers, "transactions", txEnds) {
				var e struct {
					TxID string `json:"tx_id"`
				}
				if err := json.Unmarshal(m.Value, &e); err != nil || e.TxID == "" {
					t.Fatalf("transaction %q: %v", m.Value, err)
				}
				txs[e.TxID] = true
			}
			scored := map[string]int{}
			for _, m := range secureReadAll(t, ctx, &sec, sk.brokers, "scores", secureEndOffsets(t, ctx, &sec, sk.brokers, "scores")) {
				var r struct {
					TxID   string             `json:"tx_id"`
					Scores map[string]float64 `json:"scores"`
				}
				if err := json.Unmarshal(m.Value, &r); err != nil || len(r.Scores) == 0 {
					t.Fatalf("score record %q: %v", m.Value, err)
				}
				scored[r.TxID]++
			}
			if len(scored) != len(txs) {
				t.Errorf("%d transactions scored, want %d", len(scored), len(txs))
			}
			for id := range txs {
				if scored[id] != 1 {
					t.Errorf("transaction %s scored %d times, want 1", id, scored[id])
				}
			}
		})
	}
}

// TestRunKafkaFailClosed starts `streamscore run` (and gen) with a wrong
// CA, a wrong password (from a file and from the environment), plaintext
// to a TLS listener and a missing CA file: each exits 1 within a bounded
// time, with a message that names the cause, and without the password.
func TestRunKafkaFailClosed(t *testing.T) {
	sk := startSecureKafka(t, secureTopics, true, false, [3]string{"SCRAM-SHA-256", testKafkaUser, testKafkaPass})
	otherCA := newTestCA(t, "other-ca")
	dir := t.TempDir()
	const wrongPass = "Wrong-0d9e2b-never-logged"
	good := writeSecret(t, dir, "good", testKafkaPass)
	bad := writeSecret(t, dir, "bad", wrongPass+"\n")
	scram := func(pass string) []string {
		return []string{"--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", pass}
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{name: "wrong CA", args: runSecureArgs(sk.brokers, append([]string{"--kafka-tls-ca", otherCA.caFile}, scram(good)...)...),
			want: "tls: the broker's certificate is not signed by a trusted CA (check --kafka-tls-ca)"},
		{name: "wrong password", args: runSecureArgs(sk.brokers, append([]string{"--kafka-tls-ca", sk.ca.caFile}, scram(bad)...)...),
			want: `auth: SASL SCRAM-SHA-256 authentication failed for user \"scorer\"`},
		{name: "wrong password from env", env: []string{envKafkaSASLPassword + "=" + wrongPass},
			args: runSecureArgs(sk.brokers, "--kafka-tls-ca", sk.ca.caFile, "--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", testKafkaUser),
			want: `auth: SASL SCRAM-SHA-256 authentication failed for user \"scorer\"`},
		{name: "plaintext to a TLS listener", args: runSecureArgs(sk.brokers, scram(good)...),
			want: "tls: connection closed during handshake: is the listener TLS? (--kafka-tls)"},
		{name: "missing CA file", args: runSecureArgs(sk.brokers, append([]string{"--kafka-tls-ca", dir + "/nope.pem"}, scram(good)...)...),
			want: "read --kafka-tls-ca"},
		{name: "gen, wrong password", args: append([]string{"gen", "--brokers", strings.Join(sk.brokers, ","), "--count", "10",
			"--kafka-tls-ca", sk.ca.caFile}, scram(bad)...),
			want: `auth: SASL SCRAM-SHA-256 authentication failed for user \"scorer\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			p := startStreamscore(t, tc.env, tc.args...)
			err := p.wait(20 * time.Second * timeScale)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want exit status 1", err)
			}
			out := p.stdout.String() + p.stderr.String()
			if !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			if !regexp.MustCompile(`level=ERROR msg="(run|gen) failed"`).MatchString(out) {
				t.Errorf("no error log line:\n%s", out)
			}
			noSecret(t, "the output", out, testKafkaPass, wrongPass)
			t.Logf("exit 1 in %v: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestRunKafkaAuthLostAndBack runs the engine against TLS + SCRAM, then
// replaces the password file with a wrong password: the next check fails
// authentication, /readyz answers 503 naming Kafka and the cause, the
// failure is logged at error level and counted; with the right password
// back, /readyz answers 200 again. The rotation needs no restart, and
// neither password is ever logged.
func TestRunKafkaAuthLostAndBack(t *testing.T) {
	sk := startSecureKafka(t, secureTopics, true, false, [3]string{"SCRAM-SHA-256", testKafkaUser, testKafkaPass})
	const wrongPass = "Rotated-5c1d77-never-logged"
	passFile := writeSecret(t, t.TempDir(), "kafka-password", testKafkaPass)
	run := startStreamscore(t, nil, runSecureArgs(sk.brokers, "--kafka-tls-ca", sk.ca.caFile,
		"--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", passFile)...)
	metricsURL := run.metricsURL()
	readyURL := strings.TrimSuffix(metricsURL, "/metrics") + "/readyz"
	poll(t, 30*time.Second*timeScale, "/readyz 200", func() bool {
		run.alive()
		code, _ := getStatus(t, readyURL)
		return code == http.StatusOK
	})

	// Rotate to a password the broker does not know (write and rename, as
	// a secret manager does).
	tmp := passFile + ".new"
	if err := os.WriteFile(tmp, []byte(wrongPass), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, passFile); err != nil {
		t.Fatal(err)
	}
	var body string
	poll(t, 20*time.Second*timeScale, "/readyz 503 with kafka down (auth)", func() bool {
		run.alive()
		var code int
		code, body = getStatus(t, readyURL)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "kafka down (auth)")
	})
	if strings.Contains(body, "SASL") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/readyz body %q holds the error text (hosts, mechanisms): only the cause belongs there", body)
	}
	// /readyz turns before the log line is written (health first): the
	// line gets a moment (under CI's load it came just after the check).
	poll(t, 10*time.Second*timeScale, "the log to name the cause", func() bool {
		return strings.Contains(run.stderr.String(), "SASL SCRAM-SHA-256 authentication failed")
	})
	_, m := getStatus(t, metricsURL)
	if v := metricValue(m, `streamscore_transport_failures_total{cause="auth",transport="kafka"}`); v < 1 {
		t.Errorf("streamscore_transport_failures_total{cause=auth,transport=kafka} = %v, want >= 1", v)
	}
	if !regexp.MustCompile(`level=ERROR msg="connection down" transport=kafka cause=auth`).MatchString(run.stderr.String()) {
		t.Errorf("no error log line for the failure:\n%s", run.stderr.String())
	}

	// The right password back: ready again, without a restart.
	if err := os.WriteFile(tmp, []byte(testKafkaPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, passFile); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second*timeScale, "/readyz 200 again", func() bool {
		run.alive()
		code, _ := getStatus(t, readyURL)
		return code == http.StatusOK
	})
	if !strings.Contains(run.stderr.String(), `msg="connection back" transport=kafka was=auth`) {
		t.Errorf("no log line for the recovery")
	}
	run.signal(syscall.SIGTERM)
	if err := run.wait(30 * time.Second * timeScale); err != nil {
		t.Fatalf("run exited with %v", err)
	}
	noSecret(t, "run's output", run.stdout.String()+run.stderr.String(), testKafkaPass, wrongPass)
}
