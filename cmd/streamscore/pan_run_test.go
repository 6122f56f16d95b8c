package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/local"
)

// luhnPAN returns a Luhn-valid 16-digit card number for card n.
func luhnPAN(n int) string {
	body := fmt.Sprintf("4%014d", 970000000+n*7919)
	sum := 0
	for i := len(body) - 1; i >= 0; i-- {
		d := int(body[i] - '0')
		if (len(body)-1-i)%2 == 0 { // doubled: they are every second digit from the check digit
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return body + strconv.Itoa((10-sum%10)%10)
}

const runPANKey = "k7 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"

// TestRunPANSubprocess runs `streamscore run --pan-key-file` on generated
// traffic whose card ids and message keys are card numbers (and whose labels
// carry them too), with a state directory, then searches everything it
// wrote — Kafka records and keys, JetStream, its log, /metrics, the snapshot
// files — for the card numbers and a CVV. It then checks that `score` and
// `features` with the same key file give the same pseudonyms as the stream,
// that without the key they refuse the file, and that a key file others may
// read is refused.
func TestRunPANSubprocess(t *testing.T) {
	const (
		scores, alerts, audit, dead = "scores", "alerts", "audit", "deadletter"
		scoresSubj, alertsSubj      = "pan.scores", "pan.alerts"
		cvv                         = "cvv-4242"
	)
	k, err := local.StartKafka(map[string]int{runTxTopic: 2, runLabelsTopic: 1, scores: 1, alerts: 1, audit: 1, dead: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	ns, err := local.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	nc, err := local.Connect(ns.URL(), "pan-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second*timeScale)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PAN", Subjects: []string{scoresSubj, alertsSubj}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	keyPath := filepath.Join(dir, "pan.key")
	if err := os.WriteFile(keyPath, []byte(runPANKey), 0o400); err != nil {
		t.Fatal(err)
	}
	// Generated traffic over the last two hours; each synthetic card is a
	// card number, in card_id, in the key, and in an unknown field with a CVV.
	g, err := synth.New(synth.Config{Seed: 5, Cards: 60, Terminals: 20})
	if err != nil {
		t.Fatal(err)
	}
	pans := map[string]string{} // synthetic card id -> card number
	var msgs, labels []kafka.Message
	var file bytes.Buffer
	now := time.Now()
	const n = 600
	for i := range n {
		tx := g.Next(now.Add(-2*time.Hour + time.Duration(i)*time.Hour/n))
		pan, ok := pans[tx.Event.CardID]
		if !ok {
			pan = luhnPAN(len(pans))
			pans[tx.Event.CardID] = pan
		}
		tx.Event.CardID = pan
		line := tx.Event.AppendJSON(nil)
		file.Write(append(line, '\n'))
		line = append(line[:len(line)-1], fmt.Sprintf(`,"pan":%q,"cvv":%q}`, pan, cvv)...)
		msgs = append(msgs, kafka.Message{Key: []byte(pan), Value: line})
		if i%50 == 0 {
			l := features.Label{TxID: tx.Event.TxID, CardID: pan, TerminalID: tx.Event.TerminalID, TS: tx.Event.TS.Add(time.Minute), Fraud: true}
			labels = append(labels, kafka.Message{Key: []byte(pan), Value: l.AppendJSON(nil)})
		}
	}
	// One event with a card number in terminal_id: dead-lettered.
	msgs = append(msgs, kafka.Message{Key: []byte(luhnPAN(0)), Value: fmt.Appendf(nil,
		`{"tx_id":"bad-pan","ts":%q,"card_id":%q,"terminal_id":%q,"amount":1,"cvv":%q}`,
		now.Add(-time.Minute).UTC().Format(time.RFC3339Nano), luhnPAN(0), luhnPAN(1), cvv)})
	for topic, ms := range map[string][]kafka.Message{runTxTopic: msgs, runLabelsTopic: labels} {
		w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		if err := w.WriteMessages(ctx, ms...); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}

	stateDir := filepath.Join(dir, "state")
	sub := startStreamscore(t, []string{"STREAMSCORE_PAN_KEY_FILE=" + keyPath}, "run",
		"--brokers", strings.Join(brokers, ","), "--nats", ns.URL(), "--group", "pan",
		"--topic", runTxTopic, "--labels-topic", runLabelsTopic,
		"--scores-topic", scores, "--alerts-topic", alerts, "--audit-topic", audit, "--deadletter-topic", dead,
		"--scores-subject", scoresSubj, "--alerts-subject", alertsSubj,
		"--state-dir", stateDir, "--metrics-addr", "127.0.0.1:0", "--max-delay", "5ms")
	metricsURL := sub.metricsURL()
	ends, err := local.EndOffsets(ctx, brokers, runTxTopic)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second*timeScale, "every event committed", func() bool {
		sub.alive()
		c, err := local.CommittedOffsets(ctx, brokers, "pan", runTxTopic)
		if err != nil {
			t.Fatal(err)
		}
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
	var metrics string
	poll(t, 30*time.Second*timeScale, "every label applied", func() bool {
		metrics = fetch(t, ctx, metricsURL)
		return strings.Contains(metrics, fmt.Sprintf(`streamscore_stream_labels_total{outcome="applied"} %d`, len(labels)))
	})
	sub.signal(syscall.SIGTERM)
	if err := sub.wait(30 * time.Second * timeScale); err != nil {
		t.Fatalf("run exited with %v", err)
	}

	// Everything run wrote.
	type output struct{ where, text string }
	var outs []output
	streamCards := map[string]string{} // tx_id -> card_id of the stream's score record
	for _, topic := range []string{scores, alerts, audit, dead} {
		recs, err := local.ReadAll(ctx, brokers, topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			outs = append(outs, output{topic + " key", string(r.Key)}, output{topic, string(r.Value)})
			if topic == scores {
				var rec map[string]any
				if err := json.Unmarshal(r.Value, &rec); err != nil {
					t.Fatal(err)
				}
				tx, _ := rec["tx_id"].(string)
				card, _ := rec["card_id"].(string)
				if rec["card_key_id"] != "k7" || string(r.Key) != card {
					t.Errorf("score record %s with key %q: want card_key_id k7 and the card_id as key", r.Value, r.Key)
				}
				streamCards[tx] = card
			}
			if topic == dead && !strings.Contains(string(r.Value), `"reason":"clear_pan"`) {
				t.Errorf("dead letter %s: want reason clear_pan", r.Value)
			}
		}
	}
	if len(streamCards) != n {
		t.Errorf("%d score records, want %d", len(streamCards), n)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, output{"nats " + m.Subject, string(m.Data)})
	}
	outs = append(outs, output{"stderr", sub.stderr.String()}, output{"stdout", sub.stdout.String()}, output{"metrics", metrics})
	snapFiles := 0
	filepath.WalkDir(stateDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, output{"snapshot " + path, string(b)})
			snapFiles++
		}
		return err
	})
	if snapFiles == 0 {
		t.Fatal("no snapshot written")
	}
	secrets := []string{cvv, luhnPAN(1)}
	for _, pan := range pans {
		secrets = append(secrets, pan)
	}
	for _, o := range outs {
		for _, s := range secrets {
			if i := strings.Index(o.text, s); i >= 0 {
				t.Errorf("%s holds %q: …%s…", o.where, s, o.text[max(0, i-80):min(len(o.text), i+80)])
			}
		}
	}
	if strings.Contains(sub.stderr.String(), "AAECAwQF") {
		t.Errorf("the log shows the key")
	}

	// Offline: score and features with the same key file name the cards as
	// the stream did.
	evPath := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(evPath, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	scorePath := filepath.Join(dir, "scores.jsonl")
	if err := cmdScore(ctx, []string{"--events", evPath, "--pan-key-file", keyPath, "--out", scorePath}); err != nil {
		t.Fatal(err)
	}
	checkCards := func(what string, got map[string]string) {
		t.Helper()
		if len(got) != n {
			t.Errorf("%s: %d rows, want %d", what, len(got), n)
		}
		for tx, card := range got {
			if card != streamCards[tx] {
				t.Fatalf("%s: tx %s card %q, the stream's %q", what, tx, card, streamCards[tx])
			}
		}
	}
	offline := map[string]string{}
	forLines(t, scorePath, func(line string) {
		var r struct {
			TxID   string `json:"tx_id"`
			CardID string `json:"card_id"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		offline[r.TxID] = r.CardID
	})
	checkCards("score", offline)
	rowsPath := filepath.Join(dir, "rows.csv")
	if err := cmdFeatures(ctx, []string{"--events", evPath, "--pan-key-file", keyPath, "--out", rowsPath}); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	forLines(t, rowsPath, func(line string) {
		f := strings.Split(line, ",")
		if f[0] != "tx_id" {
			rows[f[0]] = f[3]
		}
	})
	checkCards("features", rows)

	// Without the key, the offline commands refuse card numbers in clear,
	// without printing them.
	err = cmdScore(ctx, []string{"--events", evPath, "--out", filepath.Join(dir, "none.jsonl")})
	if err == nil || !strings.Contains(err.Error(), "card_id") || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("score without a key on card numbers: %v, want a card_id error at line 1", err)
	}
	for _, s := range secrets {
		if err != nil && strings.Contains(err.Error(), s) {
			t.Errorf("the error shows a card number: %v", err)
		}
	}
	// A key file others may read is refused.
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte(runPANKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	err = cmdScore(ctx, []string{"--events", evPath, "--pan-key-file", open, "--out", filepath.Join(dir, "open.jsonl")})
	if err == nil || !strings.Contains(err.Error(), "others may access it") {
		t.Errorf("score with a world-readable key file: %v", err)
	}
}

// forLines calls fn with each line of the file at path.
func forLines(t *testing.T, path string, fn func(string)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}
