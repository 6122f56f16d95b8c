package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/stream/local"
)

// TestGenKafkaMatchesFileMode is the rate fix of gen's Kafka mode: with
// the same seed, population and range, `gen --brokers` produces exactly
// the events file mode writes at --events-per-day = cards × 2 (the
// per-card rate of the data the shipped models were trained on), so each
// card transacts as in training whatever --rate is, and the fraud
// episodes run their course (fraud rate as asked). The paced part (after
// the 10-day warm-up) takes its event time / speed: 10 days at
// 20,000 events/s for 1,000 cards (speed 864,000) is 1 s. Every label
// with ts before --to is produced, each one from the file.
func TestGenKafkaMatchesFileMode(t *testing.T) {
	k, err := local.StartKafka(map[string]int{"transactions": 3, "labels": 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second*timeScale)
	defer cancel()
	to := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	from := to.Add(-20 * 24 * time.Hour)
	common := []string{"--seed", "5", "--cards", "1000", "--terminals", "200", "--from", from.Format(time.RFC3339),
		"--to", to.Format(time.RFC3339), "--tx-prefix", "t-", "--progress=false"}

	dir := t.TempDir()
	ev, lb := filepath.Join(dir, "ev.jsonl"), filepath.Join(dir, "lab.jsonl")
	file := startStreamscore(t, nil, append([]string{"gen", "--events-per-day", "2000", "--out-events", ev, "--out-labels", lb}, common...)...)
	if err := file.wait(60 * time.Second * timeScale); err != nil {
		t.Fatalf("gen (file): %v\n%s", err, file.stderr.String())
	}
	gen := startStreamscore(t, nil, append([]string{"gen", "--brokers", strings.Join(k.Brokers(), ","), "--rate", "20000",
		"--warmup", "240h"}, common...)...)
	if err := gen.wait(60 * time.Second * timeScale); err != nil {
		t.Fatalf("gen (kafka): %v\n%s", err, gen.stderr.String())
	}
	out := gen.stderr.String()

	lines := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	wantEv := lines(ev)
	txs := readAllPlain(t, ctx, k.Brokers(), "transactions")
	var gotEv []string
	var firstPaced, lastPaced time.Time
	warmEnd := from.Add(240 * time.Hour)
	dec, err := features.NewDecoder(features.WithMaxFutureSkew(-1))
	if err != nil {
		t.Fatal(err)
	}
	var e features.Event
	for _, m := range txs {
		gotEv = append(gotEv, string(m.Value))
		if err := dec.Decode(m.Value, &e); err != nil {
			t.Fatal(err)
		}
		if string(m.Key) != e.CardID {
			t.Errorf("key %q, want card_id %q", m.Key, e.CardID)
		}
		if !e.TS.Before(warmEnd) {
			if firstPaced.IsZero() || m.Time.Before(firstPaced) {
				firstPaced = m.Time
			}
			if m.Time.After(lastPaced) {
				lastPaced = m.Time
			}
		}
	}
	slices.Sort(wantEv)
	slices.Sort(gotEv)
	if len(wantEv) < 30000 || !slices.Equal(gotEv, wantEv) {
		t.Fatalf("Kafka mode produced %d events, file mode wrote %d: want the same events (and about 40,000)", len(gotEv), len(wantEv))
	}
	cards := map[string]bool{}
	for _, l := range wantEv {
		_ = dec.Decode([]byte(l), &e)
		cards[e.CardID] = true
	}
	perCardDay := float64(len(wantEv)) / float64(len(cards)) / 20
	t.Logf("%d events, %d cards: %.2f transactions per card per day", len(wantEv), len(cards), perCardDay)
	if perCardDay < 1.7 || perCardDay > 2.3 {
		t.Errorf("%.2f transactions per card per day, want about 2", perCardDay)
	}
	if d := lastPaced.Sub(firstPaced); d < 700*time.Millisecond || d > 2*time.Second*timeScale {
		t.Errorf("the paced 10 days took %v to produce, want about 1 s", d)
	}

	m := regexp.MustCompile(`msg="gen done".* fraud_rate=([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no fraud rate in gen's log:\n%s", out)
	}
	t.Logf("fraud rate %s (asked 0.0075)", m[1])
	if fr, _ := strconv.ParseFloat(m[1], 64); fr < 0.0075/1.5 || fr > 0.0075*1.5 {
		t.Errorf("fraud rate %v, want 0.0075 (the default) within 1.5x", fr)
	}

	wantLb := map[string]bool{}
	var beforeTo int
	var l features.Label
	for _, s := range lines(lb) {
		wantLb[s] = true
		if err := dec.DecodeLabel([]byte(s), &l); err != nil {
			t.Fatal(err)
		}
		if l.TS.Before(to) {
			beforeTo++
		}
	}
	got := readAllPlain(t, ctx, k.Brokers(), "labels")
	for _, m := range got {
		if !wantLb[string(m.Value)] {
			t.Errorf("label %s is not in file mode's labels", m.Value)
		}
		if err := dec.DecodeLabel(m.Value, &l); err != nil || l.TS.After(time.Now()) {
			t.Errorf("label %s: %v (or from the future)", m.Value, err)
		}
	}
	if len(got) < beforeTo {
		t.Errorf("%d labels produced, want at least the %d with ts before --to", len(got), beforeTo)
	}
}

// TestGenKafkaValidate: Kafka mode's range may not reach the future, its
// per-card rate must be positive, and the file-mode rate flag is refused.
func TestGenKafkaValidate(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		file bool // no --brokers
		args []string
		want string
	}{
		{name: "defaults", args: nil},
		{name: "to in the future", args: []string{"--to", "2026-12-07"}, want: "in the future"},
		{name: "per-card rate", args: []string{"--tx-per-card-day", "-1"}, want: "--tx-per-card-day must be positive"},
		{name: "file mode refuses the per-card rate", file: true, args: []string{"--out-events", "x", "--tx-per-card-day", "3"}, want: "are for Kafka mode"},
		{name: "file mode refuses the warm-up", file: true, args: []string{"--out-events", "x", "--warmup", "1h"}, want: "are for Kafka mode"},
		{name: "events-per-day", args: []string{"--events-per-day", "100"}, want: "for file mode"},
		{name: "empty range", args: []string{"--from", "2026-12-01", "--to", "2026-11-01"}, want: "empty time range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c genConfig
			fs := flag.NewFlagSet("gen", flag.ContinueOnError)
			c.flags(fs)
			args := tc.args
			if !tc.file {
				args = append([]string{"--brokers", "127.0.0.1:9092"}, args...)
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			err := c.Validate(now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if tc.want == "" && !tc.file {
				// 10,000 cards at 2 a day, 200 events/s: 864x.
				if c.speed != 864 || !c.toT.Equal(now) || !c.fromT.Equal(now.Add(-90*24*time.Hour)) {
					t.Errorf("speed %v, range %v..%v", c.speed, c.fromT, c.toT)
				}
			}
		})
	}
}
