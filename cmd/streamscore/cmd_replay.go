package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/features"
)

// replayConfig is the process configuration of `streamscore replay`.
type replayConfig struct {
	brokers     listFlag
	topic       string
	events      string
	labels      string
	labelsTopic string
	speed       float64
	asFast      bool
	onBadLine   string
	progress    bool
	from, to    string

	kafkaSecurity // TLS and SASL (kafka_security.go)

	// Derived by Validate.
	brokerList []string
	fromT, toT time.Time // zero: unbounded
}

// replayMaxLine is the longest line replay accepts (a longer one is a bad
// line). The engine's events are a few hundred bytes.
const replayMaxLine = 1 << 20

func (c *replayConfig) flags(fs *flag.FlagSet) {
	fs.Var(&c.brokers, "brokers", "Kafka bootstrap brokers, comma-separated or repeated (required)")
	fs.StringVar(&c.topic, "topic", "transactions", "topic of the events (key = card_id, as run expects)")
	fs.StringVar(&c.events, "events", "", "JSONL file of events to produce, in the order of the original log (required)")
	fs.StringVar(&c.labels, "labels", "", "JSONL file of labels, produced at their own ts into --labels-topic (default: none)")
	fs.StringVar(&c.labelsTopic, "labels-topic", "labels", "topic of the labels (key = card_id)")
	fs.Float64Var(&c.speed, "speed", 0, "event time per wall-clock time: 1 = real time, 3600 = an hour of event time per second, 86400 = a day per second (default 1)")
	fs.BoolVar(&c.asFast, "as-fast-as-possible", false, "ignore event time: produce as fast as Kafka takes it (excludes --speed)")
	fs.StringVar(&c.onBadLine, "on-bad-line", "stop", `a line that is not a valid event (or label): "stop" (exit 1 naming file and line, after producing the lines before it) or "skip" (count it, log the first 10 with their line numbers, go on)`)
	fs.BoolVar(&c.progress, "progress", true, "show a progress bar on stderr when it is a terminal")
	fs.StringVar(&c.from, "from", "", "produce only the events and labels whose ts is at or after this, RFC 3339 or YYYY-MM-DD (default: from the first)")
	fs.StringVar(&c.to, "to", "", "produce only the events and labels whose ts is before this, RFC 3339 or YYYY-MM-DD (default: to the last)")
	c.kafkaSecurity.register(fs)
}

// Validate checks the flags.
func (c *replayConfig) Validate() error {
	for _, b := range c.brokers {
		c.brokerList = append(c.brokerList, splitList(b)...)
	}
	if len(c.brokerList) == 0 {
		return errors.New("replay: --brokers is required")
	}
	if err := checkBrokerList("replay: --brokers", c.brokerList); err != nil {
		return err
	}
	if err := c.kafkaSecurity.Validate(); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	switch {
	case c.events == "":
		return errors.New("replay: --events is required")
	case c.topic == "":
		return errors.New("replay: --topic must not be empty")
	case c.labels != "" && c.labelsTopic == "":
		return errors.New("replay: --labels needs a --labels-topic")
	case c.asFast && c.speed != 0:
		return errors.New("replay: --speed and --as-fast-as-possible are exclusive")
	case c.speed < 0 || math.IsInf(c.speed, 0) || math.IsNaN(c.speed):
		return fmt.Errorf("replay: --speed %v must be a positive number (or give --as-fast-as-possible)", c.speed)
	case c.onBadLine != "stop" && c.onBadLine != "skip":
		return fmt.Errorf(`replay: --on-bad-line %q: want "stop" or "skip"`, c.onBadLine)
	}
	var err error
	if c.fromT, err = parseTime(c.from, time.Time{}); err != nil {
		return fmt.Errorf("replay: --from: %w", err)
	}
	if c.toT, err = parseTime(c.to, time.Time{}); err != nil {
		return fmt.Errorf("replay: --to: %w", err)
	}
	if !c.fromT.IsZero() && !c.toT.IsZero() && !c.toT.After(c.fromT) {
		return fmt.Errorf("replay: --to %s is not after --from %s", c.to, c.from)
	}
	if !c.asFast && c.speed == 0 {
		c.speed = 1
	}
	return nil
}

// inRange reports whether ts is in [--from, --to).
func (c *replayConfig) inRange(ts time.Time) bool {
	return (c.fromT.IsZero() || !ts.Before(c.fromT)) && (c.toT.IsZero() || ts.Before(c.toT))
}

// errBadLine is wrapped by the error of a line that is not a valid record.
var errBadLine = errors.New("bad line")

// jsonlRecords reads one JSONL file of events or labels, line by line,
// decoding each line as the engine would (no future check: a recorded or
// generated file has its own clock). Memory: one line.
type jsonlRecords struct {
	path  string
	label bool
	r     *bufio.Reader
	dec   *features.Decoder
	line  int64
	bytes int64 // read so far

	// The current record, valid until the next call of next.
	raw []byte
	key string
	ts  time.Time
	ev  features.Event
	lb  features.Label
}

// newJSONLRecords reads the records of r with dec (a Decoder is safe to
// share).
func newJSONLRecords(path string, r io.Reader, label bool, dec *features.Decoder) *jsonlRecords {
	return &jsonlRecords{path: path, label: label, r: bufio.NewReaderSize(r, replayMaxLine), dec: dec}
}

// next reads the next line. It returns io.EOF at the end, an error
// wrapping errBadLine (naming file, line and reason) for a line that is not
// a valid record, or the read error.
func (s *jsonlRecords) next() error {
	b, err := s.r.ReadSlice('\n')
	s.bytes += int64(len(b))
	switch {
	case err == io.EOF && len(b) == 0:
		return io.EOF
	case errors.Is(err, bufio.ErrBufferFull):
		s.line++
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of the line
			b, err = s.r.ReadSlice('\n')
			s.bytes += int64(len(b))
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s: %w", s.path, err)
		}
		return fmt.Errorf("%w: %s:%d: longer than %d bytes", errBadLine, s.path, s.line, replayMaxLine)
	case err != nil && err != io.EOF:
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	s.line++
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if s.label {
		err = s.dec.DecodeLabel(b, &s.lb)
		s.key, s.ts = s.lb.CardID, s.lb.TS
	} else {
		err = s.dec.Decode(b, &s.ev)
		s.key, s.ts = s.ev.CardID, s.ev.TS
	}
	if err != nil {
		var de *features.DecodeError
		if errors.As(err, &de) {
			return fmt.Errorf("%w: %s:%d: %s: %w", errBadLine, s.path, s.line, de.Reason, err)
		}
		return fmt.Errorf("%w: %s:%d: %w", errBadLine, s.path, s.line, err)
	}
	s.raw = b
	return nil
}

// replayStats is what replay did, for its summary.
type replayStats struct {
	events, labels, bad int64
	outside             int64     // records outside --from/--to, not produced
	first, last         time.Time // the event times of the records read
	interrupted         bool
}

func cmdReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: streamscore replay --brokers B --events events.jsonl [--labels labels.jsonl] [--speed N | --as-fast-as-possible] [--from T] [--to T] [flags]

Produces a JSONL file of events into Kafka at its own event time, compressed
by --speed, keyed by card_id; labels go to their topic at their own ts. The
file order is kept: a line older than one before it goes out at once.
SIGINT stops after producing what was read, with the summary.

flags:
`)
		fs.PrintDefaults()
	}
	var c replayConfig
	c.flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	return replay(ctx, &c)
}

func replay(ctx context.Context, c *replayConfig) error {
	ev, err := os.Open(c.events)
	if err != nil {
		return fmt.Errorf("replay: open events: %w", err)
	}
	defer ev.Close()
	total := fileSize(ev)
	// Generated files run on a simulated clock: no future check.
	dec, err := features.NewDecoder(features.WithMaxFutureSkew(-1))
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	srcs := []*jsonlRecords{newJSONLRecords(c.events, ev, false, dec)}
	topics := []string{c.topic}
	if c.labels != "" {
		lf, err := os.Open(c.labels)
		if err != nil {
			return fmt.Errorf("replay: open labels: %w", err)
		}
		defer lf.Close()
		if total >= 0 {
			if n := fileSize(lf); n >= 0 {
				total += n
			} else {
				total = -1
			}
		}
		// Labels first: on a tie the label is known when the event happens.
		srcs = []*jsonlRecords{newJSONLRecords(c.labels, lf, true, dec), srcs[0]}
		topics = []string{c.labelsTopic, c.topic}
	}

	transport, err := c.transport()
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	// A TLS or authentication failure stops replay here, naming the cause;
	// missing topics are created by the first write.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = kafkaCheck(cctx, &c.kafkaSecurity, c.brokerList, nil)
	cancel()
	var ce *kafkaCheckError
	if err != nil && (!errors.As(err, &ce) || ce.fatal()) {
		return fmt.Errorf("replay: check kafka: %w", err)
	}
	w := newReplayWriter(c.brokerList, transport)
	defer func() {
		if err := w.Close(); err != nil {
			slog.Error("replay: close kafka writer", "err", err)
		}
	}()

	speed := "as fast as possible"
	if c.speed > 0 {
		speed = strconv.FormatFloat(c.speed, 'g', -1, 64) + "x"
	}
	slog.Info("replay starting", append([]any{"brokers", redactBrokers(c.brokerList), "events", c.events, "topic", c.topic,
		"labels", c.labels, "labels_topic", c.labelsTopic, "speed", speed}, c.kafkaSecurity.describe()...)...)

	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetVisibility(showProgress(c.progress)),
		progressbar.OptionSetDescription("replay"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	p := newPacedProducer(w, c.speed)
	st := &replayStats{}
	runErr := replayLoop(ctx, c, p, srcs, topics, st, bar)
	_ = bar.Finish()
	if ctx.Err() != nil && (errors.Is(runErr, context.Canceled) || errors.Is(runErr, context.DeadlineExceeded)) {
		st.interrupted, runErr = true, nil
	}
	// What was read is produced, also after an interruption or a bad line.
	if !errors.Is(runErr, errProduce) {
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := p.flush(fctx); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("replay: %w", err))
		}
		cancel()
	}
	st.events, st.labels = p.produced[c.topic], 0
	if c.labels != "" {
		st.labels = p.produced[c.labelsTopic]
	}
	replaySummary(p, st)
	if runErr != nil {
		return fmt.Errorf("replay: %w", runErr)
	}
	return nil
}

// replayLoop merges the sources by event time (each in file order) into p.
func replayLoop(ctx context.Context, c *replayConfig, p *pacedProducer, srcs []*jsonlRecords, topics []string,
	st *replayStats, bar *progressbar.ProgressBar) error {
	live := make([]bool, len(srcs))
	advance := func(i int) error {
		for {
			err := srcs[i].next()
			switch {
			case err == nil:
				live[i] = true
				return nil
			case err == io.EOF:
				live[i] = false
				return nil
			case errors.Is(err, errBadLine) && c.onBadLine == "skip":
				st.bad++
				if st.bad <= 10 {
					slog.Warn("replay: skipping a bad line", "err", err)
				}
			default:
				return err
			}
		}
	}
	for i := range srcs {
		if err := advance(i); err != nil {
			return err
		}
	}
	var n int
	for {
		pick := -1
		for i := range srcs {
			if live[i] && (pick < 0 || srcs[i].ts.Before(srcs[pick].ts)) {
				pick = i
			}
		}
		if pick < 0 {
			return nil
		}
		s := srcs[pick]
		if st.first.IsZero() || s.ts.Before(st.first) {
			st.first = s.ts
		}
		if s.ts.After(st.last) {
			st.last = s.ts
		}
		if !c.inRange(s.ts) {
			st.outside++
		} else if err := p.add(ctx, topics[pick], []byte(s.key), s.raw, s.ts); err != nil {
			return err
		}
		if n++; n%1024 == 0 {
			var read int64
			for _, s := range srcs {
				read += s.bytes
			}
			_ = bar.Set64(read)
		}
		if err := advance(pick); err != nil {
			return err
		}
	}
}

// replaySummary logs what replay did.
func replaySummary(p *pacedProducer, st *replayStats) {
	event, wall := p.span()
	eff := "-"
	if wall > 0 && event > 0 {
		eff = strconv.FormatFloat(event.Seconds()/wall.Seconds(), 'f', 1, 64) + "x"
	}
	attrs := []any{"events", st.events, "labels", st.labels, "bad_lines", st.bad, "outside_range", st.outside, "produce_errors", p.failed,
		"out_of_order", p.late, "future", p.future}
	if p.started {
		attrs = append(attrs, "event_time_from", p.first.UTC().Format(time.RFC3339), "event_time_to", p.clock.UTC().Format(time.RFC3339))
	}
	attrs = append(attrs, "event_time_span", event.Round(time.Second), "wall_time", wall.Round(time.Millisecond),
		"effective_speed", eff, "interrupted", st.interrupted)
	slog.Info("replay done", attrs...)
	if st.events == 0 && st.labels == 0 && st.outside > 0 {
		slog.Warn("replay: no record is in the range --from/--to: nothing was produced",
			"records_from", st.first.UTC().Format(time.RFC3339), "records_to", st.last.UTC().Format(time.RFC3339), "outside_range", st.outside)
	}
	if p.future > 0 {
		slog.Warn("replay: records with a ts after the wall clock were produced: run dead-letters those beyond its --max-future-skew (future_timestamp); cut them off with gen --labels-until, or replay older history",
			"records", p.future)
	}
}

// newReplayWriter is the producer of replay and gen's Kafka mode: keyed by
// card with the Java client's default partitioner (co-partitioned with
// other producers of the same keys), acks=all, short batch timeout.
func newReplayWriter(brokers []string, transport *kafka.Transport) *kafka.Writer {
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Balancer:               &kafka.Murmur2Balancer{},
		BatchTimeout:           time.Millisecond,
		BatchSize:              pacedBatch,
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
	}
	if transport != nil {
		w.Transport = transport
	}
	return w
}

// fileSize returns the size of a regular file, or -1.
func fileSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	return fi.Size()
}
