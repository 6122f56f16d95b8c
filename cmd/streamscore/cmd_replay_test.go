//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/stream/local"
)

func TestReplayConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error; "" = valid
	}{
		{name: "minimal", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e.jsonl"}},
		{name: "as fast as possible", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e.jsonl", "--as-fast-as-possible"}},
		{name: "no brokers", args: []string{"--events", "e.jsonl"}, want: "--brokers is required"},
		{name: "no events", args: []string{"--brokers", "127.0.0.1:9092"}, want: "--events is required"},
		{name: "negative speed", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--speed", "-2"}, want: "must be a positive number"},
		{name: "speed and as fast", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--speed", "60", "--as-fast-as-possible"}, want: "exclusive"},
		{name: "labels without topic", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--labels", "l", "--labels-topic", ""}, want: "needs a --labels-topic"},
		{name: "bad-line policy", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--on-bad-line", "ignore"}, want: `want "stop" or "skip"`},
		{name: "range", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--from", "2026-03-01", "--to", "2026-04-01T00:00:00Z"}},
		{name: "bad from", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--from", "March"}, want: "--from: time"},
		{name: "empty range", args: []string{"--brokers", "127.0.0.1:9092", "--events", "e", "--from", "2026-03-01", "--to", "2026-03-01"}, want: "is not after --from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c replayConfig
			fs := newFlagSetForReplay(&c)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if tc.want == "" && c.speed != map[bool]float64{false: 1, true: 0}[c.asFast] {
				t.Errorf("speed %v with as-fast %v", c.speed, c.asFast)
			}
		})
	}
}

func newFlagSetForReplay(c *replayConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	c.flags(fs)
	return fs
}

// endSum is the number of records in topic (0 on an error: polled).
func endSum(ctx context.Context, brokers []string, topic string) int64 {
	ends, err := local.EndOffsets(ctx, brokers, topic)
	if err != nil {
		return 0
	}
	return sumOffsets(ends)
}

// replayFixture writes an events file: n events 200 ms of event time
// apart, starting at t0, over 5 cards (card c-i%5), and a labels file with
// a label for every 4th event, 300 ms after it (label ts), sorted by ts.
func replayFixture(t *testing.T, dir string, t0 time.Time, n int) (events, labels string) {
	t.Helper()
	var ev, lb strings.Builder
	for i := range n {
		ts := t0.Add(time.Duration(i) * 200 * time.Millisecond)
		fmt.Fprintf(&ev, `{"tx_id":"t-%03d","ts":%q,"card_id":"c-%d","terminal_id":"m-1","amount":%d.5}`+"\n",
			i, ts.Format(time.RFC3339Nano), i%5, i+1)
		if i%4 == 0 {
			fmt.Fprintf(&lb, `{"tx_id":"t-%03d","card_id":"c-%d","terminal_id":"m-1","ts":%q,"fraud":%v}`+"\n",
				i, i%5, ts.Add(300*time.Millisecond).Format(time.RFC3339Nano), i%8 == 0)
		}
	}
	events, labels = filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "labels.jsonl")
	if err := os.WriteFile(events, []byte(ev.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(labels, []byte(lb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return events, labels
}

// readAllPlain reads every message of topic (plaintext connection).
func readAllPlain(t *testing.T, ctx context.Context, brokers []string, topic string) []kafka.Message {
	t.Helper()
	var sec kafkaSecurity
	return secureReadAll(t, ctx, &sec, brokers, topic, secureEndOffsets(t, ctx, &sec, brokers, topic))
}

// TestReplaySpeedOrderKeysLabels replays 30 events spanning 5.8 s of event
// time, with 8 labels, at --speed 2 into a 3-partition topic: the replay
// takes 2.9 s (within 0.1 s early, 0.6 s late), each record's produce
// time is its event time's offset / 2 after the first (±150 ms), every
// event is keyed by its card_id and each card's events keep the file
// order, and the labels are in the labels topic keyed by card, each
// produced after the events before its ts.
func TestReplaySpeedOrderKeysLabels(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 3, "labels": 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	events, labels := replayFixture(t, t.TempDir(), t0, 30)

	c := replayConfig{brokerList: k.Brokers(), topic: "transactions", events: events, labels: labels,
		labelsTopic: "labels", speed: 2, onBadLine: "stop"}
	start := time.Now()
	if err := replay(ctx, &c); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	const want = 2900 * time.Millisecond // 5.8 s of event time at 2x
	if took < want-100*time.Millisecond || took > want+600*time.Millisecond*timeScale {
		t.Errorf("replay took %v, want %v (-0.1 s, +0.6 s)", took, want)
	}

	txs := readAllPlain(t, ctx, k.Brokers(), "transactions")
	lbs := readAllPlain(t, ctx, k.Brokers(), "labels")
	if len(txs) != 30 || len(lbs) != 8 {
		t.Fatalf("%d events and %d labels in Kafka, want 30 and 8", len(txs), len(lbs))
	}
	type rec struct {
		TxID   string `json:"tx_id"`
		CardID string `json:"card_id"`
		TS     time.Time
	}
	parse := func(m kafka.Message) rec {
		var r rec
		var raw struct {
			TS string `json:"ts"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatalf("%s: %v", m.Value, err)
		}
		_ = json.Unmarshal(m.Value, &raw)
		r.TS, _ = time.Parse(time.RFC3339Nano, raw.TS)
		if string(m.Key) != r.CardID {
			t.Errorf("%s/%d@%d: key %q, want the card_id %q", m.Topic, m.Partition, m.Offset, m.Key, r.CardID)
		}
		return r
	}
	var first time.Time
	for _, m := range txs {
		if r := parse(m); r.TxID == "t-000" {
			first = m.Time
		}
	}
	lastByCard := map[string]string{}
	for _, m := range txs { // partition by partition, in offset order
		r := parse(m)
		if prev := lastByCard[r.CardID]; prev >= r.TxID {
			t.Errorf("card %s: %s after %s, want file order", r.CardID, r.TxID, prev)
		}
		lastByCard[r.CardID] = r.TxID
		wantAt := time.Duration(float64(r.TS.Sub(t0)) / 2)
		if d := m.Time.Sub(first) - wantAt; d < -150*time.Millisecond || d > 150*time.Millisecond*timeScale {
			t.Errorf("%s produced %v after the first, want %v (±150 ms)", r.TxID, m.Time.Sub(first), wantAt)
		}
	}
	for _, m := range lbs {
		r := parse(m)
		wantAt := time.Duration(float64(r.TS.Sub(t0)) / 2)
		if d := m.Time.Sub(first) - wantAt; d < -150*time.Millisecond || d > 150*time.Millisecond*timeScale {
			t.Errorf("label of %s produced %v after the first event, want %v (±150 ms)", r.TxID, m.Time.Sub(first), wantAt)
		}
	}
}

// TestReplayAsFastAsPossible: the same file without pacing goes out in
// well under its event-time span, every record produced.
func TestReplayAsFastAsPossible(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 2, "labels": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	events, labels := replayFixture(t, t.TempDir(), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 500) // 100 s of event time
	c := replayConfig{brokerList: k.Brokers(), topic: "transactions", events: events, labels: labels,
		labelsTopic: "labels", onBadLine: "stop"}
	start := time.Now()
	if err := replay(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second*timeScale {
		t.Errorf("as fast as possible took %v", took)
	}
	if n, l := len(readAllPlain(t, ctx, k.Brokers(), "transactions")), len(readAllPlain(t, ctx, k.Brokers(), "labels")); n != 500 || l != 125 {
		t.Errorf("%d events, %d labels, want 500 and 125", n, l)
	}
}

// TestReplayFromTo: --from/--to produce only the events and labels whose
// ts is in [from, to): of 500 events 200 ms apart, the 100 of seconds
// 20-40, and the 25 labels (each 300 ms after its event, one event in four)
// whose own ts falls there.
func TestReplayFromTo(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 2, "labels": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	events, labels := replayFixture(t, t.TempDir(), t0, 500)
	c := replayConfig{brokerList: k.Brokers(), topic: "transactions", events: events, labels: labels,
		labelsTopic: "labels", onBadLine: "stop", fromT: t0.Add(20 * time.Second), toT: t0.Add(40 * time.Second)}
	if err := replay(ctx, &c); err != nil {
		t.Fatal(err)
	}
	evs := readAllPlain(t, ctx, k.Brokers(), "transactions")
	if n, l := len(evs), len(readAllPlain(t, ctx, k.Brokers(), "labels")); n != 100 || l != 25 {
		t.Errorf("%d events, %d labels, want 100 and 25", n, l)
	}
	for _, m := range evs {
		var e struct {
			TS time.Time `json:"ts"`
		}
		if err := json.Unmarshal(m.Value, &e); err != nil {
			t.Fatal(err)
		}
		if e.TS.Before(c.fromT) || !e.TS.Before(c.toT) {
			t.Errorf("event at %v produced, outside [%v, %v)", e.TS, c.fromT, c.toT)
		}
	}

	// A range the files do not reach produces nothing, and says so with
	// the files' own span (it exited 0 with only outside_range=… before).
	var logged bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(prev)
	c.fromT, c.toT = t0.AddDate(1, 0, 0), t0.AddDate(1, 1, 0)
	if err := replay(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "no record is in the range --from/--to") || !strings.Contains(logged.String(), "records_from=2026-03-01T00:00:00Z") {
		t.Errorf("a replay of a range outside the files logged no warning with their span:\n%s", logged.String())
	}
}

// TestReplayBadLines: a file with an invalid event on line 4 and a line
// that is not JSON on line 7 (of 10). "stop" produces lines 1-3 and fails
// naming the file, line 4 and the reason; "skip" produces the 8 valid
// lines and counts 2 bad ones.
func TestReplayBadLines(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 1; i <= 10; i++ {
		switch i {
		case 4:
			b.WriteString(`{"tx_id":"t-4","ts":"2026-03-01T00:00:04Z","card_id":"c-1","terminal_id":"m-1","amount":-3}` + "\n")
		case 7:
			b.WriteString("not json\n")
		default:
			fmt.Fprintf(&b, `{"tx_id":"t-%d","ts":"2026-03-01T00:00:%02dZ","card_id":"c-%d","terminal_id":"m-1","amount":1}`+"\n", i, i, i%3)
		}
	}
	path := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		policy  string
		want    int
		wantErr string
	}{
		{"stop", 3, path + ":4: invalid_amount"},
		{"skip", 8, ""},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			k, err := local.StartKafka(map[string]int{"transactions": 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(k.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
			defer cancel()
			c := replayConfig{brokerList: k.Brokers(), topic: "transactions", events: path, onBadLine: tc.policy}
			err = replay(ctx, &c)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("replay: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errBadLine)):
				t.Fatalf("replay: %v, want an error with %q", err, tc.wantErr)
			}
			if got := len(readAllPlain(t, ctx, k.Brokers(), "transactions")); got != tc.want {
				t.Errorf("%d events produced, want %d", got, tc.want)
			}
		})
	}
}

// TestReplaySIGINT: `streamscore replay` at real time is interrupted after
// about a second: it exits 0 within 5 s with its summary, having produced
// the events whose time had come (not the later ones).
func TestReplaySIGINT(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 1, "labels": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	events, labels := replayFixture(t, t.TempDir(), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 100) // 20 s
	p := startStreamscore(t, nil, "replay", "--brokers", strings.Join(k.Brokers(), ","), "--events", events,
		"--labels", labels, "--speed", "1", "--progress=false")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	poll(t, 20*time.Second*timeScale, "the first events produced", func() bool {
		p.alive()
		return endSum(ctx, k.Brokers(), "transactions") >= 3
	})
	p.signal(syscall.SIGINT)
	if err := p.wait(5 * time.Second * timeScale); err != nil {
		t.Fatalf("replay exited with %v after SIGINT\n%s", err, p.stderr.String())
	}
	out := p.stderr.String()
	if !strings.Contains(out, "replay done") || !strings.Contains(out, "interrupted=true") {
		t.Errorf("no interrupted summary in:\n%s", out)
	}
	n := endSum(ctx, k.Brokers(), "transactions")
	if n < 3 || n > 40 {
		t.Errorf("%d events produced before the interrupt, want the first few seconds' (3..40 of 100)", n)
	}
	if !strings.Contains(out, fmt.Sprintf("events=%d ", n)) {
		t.Errorf("summary does not report the %d events produced:\n%s", n, out)
	}
}

// TestReplaySASL: replay through TLS + SCRAM-SHA-256 with the run's
// security flags (kafka_security.go), the password from a file; a wrong
// password fails the start naming the cause, without the password.
func TestReplaySASL(t *testing.T) {
	sk := startSecureKafka(t, map[string]int{"transactions": 2}, true, false, [3]string{"SCRAM-SHA-256", testKafkaUser, testKafkaPass})
	dir := t.TempDir()
	events, _ := replayFixture(t, dir, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 50)
	good := writeSecret(t, dir, "pass", testKafkaPass+"\n")
	bad := writeSecret(t, dir, "bad", "wrong-"+testKafkaPass+"\n")
	flags := func(pass string) []string {
		return []string{"--kafka-tls-ca", sk.ca.caFile, "--kafka-sasl-mechanism", "scram-sha-256",
			"--kafka-sasl-user", testKafkaUser, "--kafka-sasl-password-file", pass}
	}
	args := []string{"replay", "--brokers", strings.Join(sk.brokers, ","), "--events", events, "--as-fast-as-possible", "--progress=false"}

	p := startStreamscore(t, nil, append(args, flags(good)...)...)
	if err := p.wait(60 * time.Second * timeScale); err != nil {
		t.Fatalf("replay: %v\n%s", err, p.stderr.String())
	}
	noSecret(t, "replay's output", p.stdout.String()+p.stderr.String(), testKafkaPass)
	var sec kafkaSecurity
	if err := newFlagSetFor(&sec).Parse(flags(good)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeScale)
	defer cancel()
	if n := sumOffsets(secureEndOffsets(t, ctx, &sec, sk.brokers, "transactions")); n != 50 {
		t.Errorf("%d events produced over TLS+SASL, want 50", n)
	}

	p = startStreamscore(t, nil, append(args, flags(bad)...)...)
	if err := p.wait(60 * time.Second * timeScale); err == nil {
		t.Fatal("replay with a wrong password succeeded")
	}
	out := p.stderr.String()
	noSecret(t, "replay's output", out, testKafkaPass)
	if !strings.Contains(out, "authentication failed") {
		t.Errorf("the failure does not name the cause:\n%s", out)
	}
}

// TestReplayRunMatchesScore is issue 14's "replay and run give the records
// of score": a month (30 days) of generated traffic (about 12,900 events: the
// 10-day rate of earlier runs, about 110 events/s per partition at --speed
// 86400, so that a partition is rarely quiet for the default 100 ms
// --align-idle-wait; 300 cards
// sharing 40 terminals) replayed by `streamscore replay --speed 86400`
// into a 4-partition topic while `run` consumes it live: every score
// record and audit feature row equals `score`'s and `features`' over the
// events file (exactWorld.check; scored_at and latency_ms aside).
func TestReplayRunMatchesScore(t *testing.T) {
	exactGate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second*timeScale)
	defer cancel()
	w := newExactWorld(t, ctx, 4)
	g, err := synth.New(synth.Config{Seed: 14, Cards: 300, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(-time.Hour).Truncate(time.Second)
	from := to.Add(-30 * 24 * time.Hour)
	var prev time.Time
	if err := g.Simulate(from, to, 12900/to.Sub(from).Seconds(), func(tx synth.Tx) error {
		if !tx.Event.TS.After(prev) { // strictly increasing: no ties
			tx.Event.TS = prev.Add(time.Microsecond)
		}
		prev = tx.Event.TS
		tx.Event.TxID = fmt.Sprintf("r-%07d", w.n) // tx_id order is event-time order
		w.n++
		_, err := w.bw.Write(append(tx.Event.AppendJSON(nil), '\n'))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	events := w.eventsPath()
	p := w.startEngine()
	start := time.Now()
	rp := startStreamscore(t, nil, "replay", "--brokers", strings.Join(w.brokers, ","), "--topic", exactTxTopic,
		"--events", events, "--speed", "86400", "--progress=false")
	if err := rp.wait(60 * time.Second * timeScale); err != nil {
		t.Fatalf("replay: %v\n%s", err, rp.stderr.String())
	}
	took := time.Since(start)
	t.Logf("replayed %d events of 30 days in %v: %s", w.n, took.Round(time.Millisecond), lastLine(rp.stderr.String()))
	if took < 29*time.Second || took > 45*time.Second*timeScale {
		t.Errorf("30 days at 86400x took %v, want about 30 s", took)
	}
	w.waitCommitted(p, 60*time.Second*timeScale)
	w.stop(p)
	w.check()
}

// TestPacedProducerProduceErrors: writes the broker refuses are counted
// per record and returned as errProduce (replay and gen stop there);
// once the broker takes writes again the next flush succeeds.
func TestPacedProducerProduceErrors(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	w := newReplayWriter(k.Brokers(), nil)
	w.MaxAttempts = 1
	t.Cleanup(func() { w.Close() })
	p := newPacedProducer(w, 0)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	add := func(i int) error {
		return p.add(ctx, "transactions", []byte("c-1"), fmt.Appendf(nil, `{"n":%d}`, i), t0.Add(time.Duration(i)*time.Second))
	}
	for i := range 3 {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.flush(ctx); err != nil {
		t.Fatal(err)
	}
	until := make(chan struct{})
	k.FailProduce(until)
	for i := 3; i < 8; i++ {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	err = p.flush(ctx)
	if !errors.Is(err, errProduce) || p.failed != 5 || p.produced["transactions"] != 3 {
		t.Fatalf("flush during the outage: %v; failed %d, produced %d; want errProduce, 5 and 3", err, p.failed, p.produced["transactions"])
	}
	close(until)
	if err := add(8); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(ctx); err != nil {
		t.Fatalf("flush after the outage: %v", err)
	}
	if p.produced["transactions"] != 4 || endSum(ctx, k.Brokers(), "transactions") != 4 {
		t.Errorf("produced %d, topic holds %d; want 4", p.produced["transactions"], endSum(ctx, k.Brokers(), "transactions"))
	}
}
