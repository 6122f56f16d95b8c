package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// genConfig is the process configuration of `streamscore gen`.
type genConfig struct {
	seed             int64
	cards, terminals int
	fraudRate        float64
	labelDelay       time.Duration
	genuineLabelRate float64
	txPrefix         string

	// File mode.
	from, to     string
	eventsPerDay float64
	outEvents    string
	outLabels    string
	labelsUntil  string
	progress     bool

	// Kafka mode.
	brokers     listFlag
	topic       string
	labelsTopic string
	txPerDay    float64       // per card, event time
	warmup      time.Duration // of event time, produced as fast as possible

	kafkaSecurity // TLS and SASL (kafka_security.go)

	wireOut genWire // --format avro|protobuf (gen_wire.go)

	// Both.
	rate     float64
	count    int64
	duration time.Duration

	// Derived by Validate.
	kafkaMode      bool
	fromT, toT     time.Time
	labelsUntilT   time.Time // zero: no cut
	brokerList     []string
	perSecond      float64 // events per second of event time
	speed          float64 // Kafka mode: event time per wall-clock time after the warm-up
	effectiveDelay time.Duration
}

const (
	genDefaultEventsPerDay = 100000
	genDefaultKafkaRate    = 200
	genDefaultDays         = 30
	genDefaultKafkaDays    = 90
	// genTrainedTxPerDay is the per-card rate of the data the shipped models
	// were trained on (10,000 cards, 20,000 events a day).
	genTrainedTxPerDay = 2
	genDefaultWarmup   = 30 * 24 * time.Hour
)

func (c *genConfig) flags(fs *flag.FlagSet) {
	fs.Int64Var(&c.seed, "seed", 1, "seed of the synthetic population and traffic (same flags, same output)")
	fs.IntVar(&c.cards, "cards", synth.DefaultCards, "cards in the population")
	fs.IntVar(&c.terminals, "terminals", synth.DefaultTerminals, "terminals in the population (at least 20)")
	fs.Float64Var(&c.fraudRate, "fraud-rate", synth.DefaultFraudRate, "fraction of transactions that are fraud (negative: none)")
	fs.DurationVar(&c.labelDelay, "label-delay", 0, "mean delay (event time) from a transaction to its label, log-normal jitter (default 168h)")
	fs.Float64Var(&c.genuineLabelRate, "genuine-label-rate", synth.DefaultGenuineLabelRate, "fraction of genuine transactions that get a fraud:false label (negative: none)")
	fs.StringVar(&c.txPrefix, "tx-prefix", "", `tx_id prefix (default "t-" in file mode; "t-<start time base 36>-" with --brokers, so reruns into one topic keep ids unique)`)

	fs.StringVar(&c.from, "from", "", "start of simulated event time, YYYY-MM-DD or RFC 3339 (default: --to minus 30 days; with --brokers minus 90 days)")
	fs.StringVar(&c.to, "to", "", "end (exclusive) of simulated event time (default: today 00:00 UTC; with --brokers now, and it may not be later)")
	fs.Float64Var(&c.eventsPerDay, "events-per-day", 0, "file mode: mean events per simulated day (default 100000; or give --rate)")
	fs.StringVar(&c.outEvents, "out-events", "", `file mode: write events as JSONL to this file ("-": stdout)`)
	fs.StringVar(&c.outLabels, "out-labels", "", "file mode: write labels as JSONL to this file, sorted by label ts (all labels, also those after --to)")
	fs.StringVar(&c.labelsUntil, "labels-until", "", `file mode: leave out labels whose ts is at or after this time ("to": --to, i.e. labels known when the range ends; default: all labels)`)
	fs.BoolVar(&c.progress, "progress", true, "show a progress bar on stderr when it is a terminal (Kafka mode: of event time)")

	fs.Var(&c.brokers, "brokers", "Kafka bootstrap brokers, comma-separated or repeated; selects Kafka mode (event time compressed: [--from, --to) at --rate events/s, each card at --tx-per-card-day)")
	fs.StringVar(&c.topic, "topic", "transactions", "Kafka mode: events topic (key = card_id)")
	fs.StringVar(&c.labelsTopic, "labels-topic", "labels", `Kafka mode: labels topic, each label produced when event time reaches its ts ("": no labels)`)
	fs.Float64Var(&c.txPerDay, "tx-per-card-day", 0, "Kafka mode: transactions per card per day of event time (default 2, the rate the shipped models were trained at); with --rate and --cards it sets how fast event time runs")
	fs.DurationVar(&c.warmup, "warmup", genDefaultWarmup, "Kafka mode: the first part of event time, produced as fast as Kafka takes it, so the engine's 30-day windows are full when the paced part starts (0: none)")
	c.kafkaSecurity.register(fs)
	c.wireOut.register(fs)

	fs.Float64Var(&c.rate, "rate", 0, "events per second: of wall-clock time after the warm-up with --brokers (default 200); in file mode the simulated mean rate instead of --events-per-day")
	fs.Int64Var(&c.count, "count", 0, "stop after this many events (0: no limit); Kafka mode then produces their labels due by now")
	fs.DurationVar(&c.duration, "duration", 0, "Kafka mode: stop after this long of wall-clock time (0: until event time reaches --to, or interrupted)")
}

// Validate checks the flags and derives the mode, time range and rates.
func (c *genConfig) Validate(now time.Time) error {
	for _, b := range c.brokers {
		c.brokerList = append(c.brokerList, splitList(b)...)
	}
	c.kafkaMode = len(c.brokerList) > 0
	if err := c.wireOut.Validate(c.kafkaMode); err != nil {
		return err
	}
	switch {
	case c.kafkaMode && (c.outEvents != "" || c.outLabels != ""):
		return errors.New("gen: --brokers and --out-events/--out-labels are exclusive")
	case !c.kafkaMode && c.outEvents == "" && c.outLabels == "":
		return errors.New("gen: give --out-events/--out-labels (file mode) or --brokers (Kafka mode)")
	case c.count < 0 || c.duration < 0 || c.rate < 0 || c.eventsPerDay < 0:
		return errors.New("gen: --count, --duration, --rate and --events-per-day must not be negative")
	case c.labelDelay < 0:
		return errors.New("gen: --label-delay must not be negative")
	}
	c.effectiveDelay = c.labelDelay
	if c.kafkaMode {
		if err := checkBrokerList("gen: --brokers", c.brokerList); err != nil {
			return err
		}
		if err := c.kafkaSecurity.Validate(); err != nil {
			return fmt.Errorf("gen: %w", err)
		}
		if c.eventsPerDay != 0 || c.labelsUntil != "" {
			return errors.New("gen: --events-per-day and --labels-until are for file mode; Kafka mode's event rate is --cards × --tx-per-card-day")
		}
		if c.topic == "" {
			return errors.New("gen: --topic must not be empty")
		}
		if c.txPerDay == 0 {
			c.txPerDay = genTrainedTxPerDay
		}
		if !(c.txPerDay > 0) || math.IsInf(c.txPerDay, 0) || c.warmup < 0 {
			return errors.New("gen: --tx-per-card-day must be positive and --warmup not negative")
		}
		var err error
		c.toT = now.UTC()
		if c.to != "" {
			if c.toT, err = parseTime(c.to, time.Time{}); err != nil {
				return fmt.Errorf("gen: --to: %w", err)
			}
			if c.toT.After(now) {
				return fmt.Errorf("gen: --to %s is in the future: the engine dead-letters events from the future", c.toT.Format(time.RFC3339))
			}
		}
		c.fromT = c.toT.Add(-genDefaultKafkaDays * 24 * time.Hour)
		if c.from != "" {
			if c.fromT, err = parseTime(c.from, time.Time{}); err != nil {
				return fmt.Errorf("gen: --from: %w", err)
			}
		}
		if !c.toT.After(c.fromT) {
			return fmt.Errorf("gen: empty time range [%s, %s)", c.fromT.Format(time.RFC3339), c.toT.Format(time.RFC3339))
		}
		cards := c.cards
		if cards == 0 {
			cards = synth.DefaultCards
		}
		c.perSecond = float64(cards) * c.txPerDay / 86400
		rate := c.rate
		if rate == 0 {
			rate = genDefaultKafkaRate
		}
		c.speed = rate / c.perSecond
		if c.txPrefix == "" {
			c.txPrefix = "t-" + strconv.FormatInt(now.Unix(), 36) + "-"
		}
		return nil
	}
	if c.duration != 0 {
		return errors.New("gen: --duration is for Kafka mode; bound file mode with --to or --count")
	}
	if c.txPerDay != 0 || c.warmup != genDefaultWarmup {
		return errors.New("gen: --tx-per-card-day and --warmup are for Kafka mode; file mode's rate is --events-per-day (or --rate)")
	}
	var err error
	c.toT = now.UTC().Truncate(24 * time.Hour)
	if c.to != "" {
		if c.toT, err = parseTime(c.to, time.Time{}); err != nil {
			return fmt.Errorf("gen: --to: %w", err)
		}
	}
	c.fromT = c.toT.Add(-genDefaultDays * 24 * time.Hour)
	if c.from != "" {
		if c.fromT, err = parseTime(c.from, time.Time{}); err != nil {
			return fmt.Errorf("gen: --from: %w", err)
		}
	}
	switch c.labelsUntil {
	case "":
	case "to":
		c.labelsUntilT = c.toT
	default:
		if c.labelsUntilT, err = parseTime(c.labelsUntil, time.Time{}); err != nil {
			return fmt.Errorf("gen: --labels-until: %w", err)
		}
	}
	if !c.toT.After(c.fromT) {
		return fmt.Errorf("gen: empty time range [%s, %s)", c.fromT.Format(time.RFC3339), c.toT.Format(time.RFC3339))
	}
	switch {
	case c.rate != 0 && c.eventsPerDay != 0:
		return errors.New("gen: give --rate or --events-per-day, not both")
	case c.rate != 0:
		c.perSecond = c.rate
	case c.eventsPerDay != 0:
		c.perSecond = c.eventsPerDay / 86400
	default:
		c.perSecond = genDefaultEventsPerDay / 86400.0
	}
	return nil
}

func (c *genConfig) synthConfig() synth.Config {
	return synth.Config{
		Seed:             c.seed,
		Cards:            c.cards,
		Terminals:        c.terminals,
		FraudRate:        c.fraudRate,
		LabelDelay:       c.effectiveDelay,
		GenuineLabelRate: c.genuineLabelRate,
		TxIDPrefix:       c.txPrefix,
	}
}

// genStats counts what gen produced, for the summary line.
type genStats struct {
	events, fraud, labels int64
	byScenario            map[string]int64
	start                 time.Time
}

func newGenStats() *genStats {
	return &genStats{byScenario: map[string]int64{}, start: time.Now()}
}

func (s *genStats) add(tx *synth.Tx) {
	s.events++
	if tx.Fraud {
		s.fraud++
		s.byScenario[tx.Scenario]++
	}
}

// log logs the run's totals; ended says how it ended ("done", "duration",
// "interrupted", "failed": the events counted were generated, not all
// written, when it failed).
func (s *genStats) log(mode, ended string) {
	el := time.Since(s.start)
	msg := "gen done"
	if ended == "failed" {
		msg = "gen failed"
	}
	attrs := []any{"mode", mode, "ended", ended, "events", s.events, "fraud", s.fraud}
	if s.events > 0 {
		attrs = append(attrs, "fraud_rate", strconv.FormatFloat(float64(s.fraud)/float64(s.events), 'f', 5, 64))
	}
	for _, sc := range synth.Scenarios() {
		attrs = append(attrs, sc, s.byScenario[sc])
	}
	attrs = append(attrs, "labels", s.labels, "elapsed", el.Round(time.Millisecond),
		"events_per_sec", int64(float64(s.events)/max(el.Seconds(), 1e-9)))
	slog.Info(msg, attrs...)
}

func cmdGen(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: streamscore gen [flags]

Synthetic payment transactions with ground-truth fraud scenarios and delayed labels.
File mode (--out-events/--out-labels) simulates [--from, --to) with a daily rhythm.
Kafka mode (--brokers) simulates [--from, --to) the same way, each card at
--tx-per-card-day (the shipped models' training rate by default), and produces
it with event time compressed: the warm-up as fast as Kafka takes it, then
--rate events per second; each label when event time reaches its ts.

flags:
`)
		fs.PrintDefaults()
	}
	var c genConfig
	c.flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := c.Validate(time.Now()); err != nil {
		return err
	}
	t0 := time.Now()
	g, err := synth.New(c.synthConfig())
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	slog.Info("gen population ready", "cards", g.Config().Cards, "terminals", g.Config().Terminals,
		"seed", c.seed, "fraud_rate", g.Config().FraudRate, "label_delay", g.Config().LabelDelay, "took", time.Since(t0).Round(time.Millisecond))
	if c.kafkaMode {
		return genKafka(ctx, &c, g)
	}
	return genFiles(ctx, &c, g)
}

// errGenCount stops a simulation at --count.
var errGenCount = errors.New("gen: count reached")

func genFiles(ctx context.Context, c *genConfig, g *synth.Generator) error {
	events := bufio.NewWriterSize(io.Discard, 1<<20)
	closeEvents := func() error { return nil }
	if c.outEvents != "" {
		f, closeFn, err := createOut(c.outEvents)
		if err != nil {
			return err
		}
		events.Reset(f)
		closeEvents = sync.OnceValue(closeFn)
		defer closeEvents() // error paths; the result is checked below
	}

	expected := int64(c.perSecond * c.toT.Sub(c.fromT).Seconds())
	if c.count > 0 {
		expected = min(expected, c.count)
	}
	bar := progressbar.NewOptions64(expected,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetVisibility(showProgress(c.progress)),
		progressbar.OptionSetDescription("gen"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)

	slog.Info("gen simulating", "from", c.fromT.Format(time.RFC3339), "to", c.toT.Format(time.RFC3339),
		"events_per_day", int64(c.perSecond*86400), "expected_events", expected)
	st := newGenStats()
	var labels []features.Label
	var buf []byte
	var pending int
	err := g.Simulate(c.fromT, c.toT, c.perSecond, func(tx synth.Tx) error {
		st.add(&tx)
		buf = tx.Event.AppendJSON(buf[:0])
		buf = append(buf, '\n')
		if _, err := events.Write(buf); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		if c.outLabels != "" {
			if l, ok := g.LabelFor(tx); ok && (c.labelsUntilT.IsZero() || l.TS.Before(c.labelsUntilT)) {
				labels = append(labels, l)
			}
		}
		if pending++; pending == 1<<15 {
			pending = 0
			_ = bar.Add(1 << 15)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if c.count > 0 && st.events >= c.count {
			return errGenCount
		}
		return nil
	})
	_ = bar.Add(pending)
	if st.events > bar.GetMax64() {
		bar.ChangeMax64(st.events)
	}
	_ = bar.Finish()
	switch {
	case errors.Is(err, errGenCount):
	case err != nil:
		return fmt.Errorf("gen: simulate: %w", err)
	}
	if err := events.Flush(); err != nil {
		return fmt.Errorf("gen: write events: %w", err)
	}
	if err := closeEvents(); err != nil {
		return fmt.Errorf("gen: %w", err)
	}

	if c.outLabels != "" {
		if err := writeLabels(c.outLabels, labels); err != nil {
			return err
		}
		st.labels = int64(len(labels))
	}
	st.log("file", "done")
	return nil
}

// writeLabels writes labels as JSONL sorted by their TS (ties in
// transaction order).
func writeLabels(path string, labels []features.Label) error {
	slices.SortStableFunc(labels, func(a, b features.Label) int { return a.TS.Compare(b.TS) })
	f, closeFn, err := createOut(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	var buf []byte
	for i := range labels {
		buf = labels[i].AppendJSON(buf[:0])
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			closeFn()
			return fmt.Errorf("write labels: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		closeFn()
		return fmt.Errorf("write labels: %w", err)
	}
	return closeFn()
}

// createOut opens path for writing ("-" is stdout). The returned function
// closes it and reports the close error.
func createOut(path string) (io.Writer, func() error, error) {
	if path == "-" {
		return os.Stdout, func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("create output: %w", err)
	}
	return f, func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", path, err)
		}
		return nil
	}, nil
}

// labelQueue holds labels until their TS, earliest first.
type labelQueue []features.Label

func (q labelQueue) Len() int           { return len(q) }
func (q labelQueue) Less(i, j int) bool { return q[i].TS.Before(q[j].TS) }
func (q labelQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *labelQueue) Push(x any)        { *q = append(*q, x.(features.Label)) }
func (q *labelQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
