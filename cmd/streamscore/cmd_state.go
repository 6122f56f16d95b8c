package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/stream"
)

func cmdState(_ context.Context, args []string) error {
	return stateCheck(os.Stdout, slog.Default(), args)
}

// stateCheck is `streamscore state`: it takes run's flags (and environment
// and YAML), builds the pipeline run would build — without connecting to
// NATS or Kafka — and reads the --state-dir snapshot as run would restore
// it, so a configuration change (features, models, TTL) can be
// checked against the state before a deploy. It prints what the snapshot
// holds and fails if run would start with empty state.
func stateCheck(w io.Writer, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	var cfg engineConfig
	cfg.register(fs)
	asJSON := fs.Bool("json", false, "print what the snapshot holds as JSON")
	fs.Usage = func() {
		fs.Output().Write([]byte("usage: streamscore state --state-dir DIR [run's flags]\n\n" +
			"Checks the state snapshot in --state-dir against the configuration `streamscore run` would\n" +
			"start with (the same flags, STREAMSCORE_<FLAG> environment and --config YAML): every file's\n" +
			"SHA-256, every byte decoded, and the fit with the topic, features and models. It\n" +
			"contacts neither Kafka nor NATS and changes nothing. Exit status 1 when run would start\n" +
			"with empty state (no snapshot, or one it would refuse) or could not read it.\n\n"))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.StateDir == "" {
		return errors.New("state: --state-dir is required")
	}
	// The sinks play no part in the state: none is built (no connection).
	cfg.noSinks = true
	e, err := buildEngine(&cfg, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer e.Close()
	info, err := e.pipeline.CheckState()
	switch {
	case errors.Is(err, stream.ErrNoSnapshot):
		return fmt.Errorf("state: %s holds no snapshot: run would start with empty state", cfg.StateDir)
	case errors.Is(err, stream.ErrSnapshotRefused):
		return fmt.Errorf("state: run would refuse the snapshot in %s and start with empty state: %w", cfg.StateDir, err)
	case err != nil:
		return fmt.Errorf("state: %w", err)
	}
	log.Debug("state snapshot checked", "dir", info.Dir)
	if *asJSON {
		b, err := json.MarshalIndent(info, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	return printStateInfo(w, info, time.Now())
}

func printStateInfo(w io.Writer, info *stream.StateInfo, now time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot   %s\n", info.Dir)
	fmt.Fprintf(&b, "written    %s (%s ago, at %s)\n", info.WrittenAt.Format(time.RFC3339), now.Sub(info.WrittenAt).Round(time.Second), info.Reason)
	fmt.Fprintf(&b, "input      topic %s, group %s, written by %d workers, %d features\n", info.Topic, info.Group, info.Workers, info.Features)
	size := fmt.Sprintf("%.1f MB", float64(info.Bytes)/(1<<20))
	if info.Bytes < 1<<20 {
		size = fmt.Sprintf("%.1f KB", float64(info.Bytes)/(1<<10))
	}
	fmt.Fprintf(&b, "state      %d cards with windows, %d with sequence-model state, %s\n", info.Cards, info.SeqCards, size)
	fmt.Fprintf(&b, "applied    %s\n", offsets(info.Applied))
	if info.LabelsTopic != "" {
		fmt.Fprintf(&b, "labels     topic %s, next %s\n", info.LabelsTopic, offsets(info.LabelsNext))
	}
	for _, r := range info.Refused {
		fmt.Fprintf(&b, "refused    %s (a snapshot an earlier start refused, kept for inspection)\n", r)
	}
	b.WriteString("check      ok: run with this configuration restores it\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// offsets formats a partition -> offset map as "p0@12 p1@40", by partition.
func offsets(m map[int]int64) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]int, 0, len(m))
	for p := range m {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "p%d@%d", p, m[p])
	}
	return b.String()
}
