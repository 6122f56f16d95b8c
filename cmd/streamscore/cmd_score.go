package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
)

// cmdScore replays recorded history through the stream's own feature, model
// and decision code and writes the score record of every transaction in
// [from, to): what the stream would have published for it.
func cmdScore(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("score", flag.ContinueOnError)
	eventsPath := fs.String("events", "", "events JSONL file (required)")
	labelsPath := fs.String("labels", "", "labels JSONL file (feeds the label-derived features at their own time; optional)")
	var modelPaths listFlag
	fs.Var(&modelPaths, "model", "model file (repeatable; default: the shipped models)")
	fromS := fs.String("from", "", "start of the range to score, RFC 3339 or YYYY-MM-DD (default: first event)")
	toS := fs.String("to", "", "end (exclusive) of the range to score (default: after the last event)")
	out := fs.String("out", "-", "output JSONL file of score records (- for stdout)")
	decision := fs.String("decision-models", "", "comma-separated models whose thresholds decide (default: every model; with the shipped models, \"fraud\")")
	maxLateness := fs.Duration("max-lateness", time.Hour, "as the engine's --max-lateness (it only matters for out-of-order input)")
	specPath := fs.String("features", "", "feature spec YAML, as the engine's --features (default: the embedded default spec)")
	fs.Usage = func() {
		fs.Output().Write([]byte("usage: streamscore score --events F [--labels F] [--model M ...] [--from T1] [--to T2] [--out F]\n\n" +
			"Replays the history before T2 through the stream's feature code and writes the score record the\n" +
			"stream would publish for every transaction in [T1, T2). scored_at is the event time, latency_ms 0.\n\n"))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *eventsPath == "" {
		return errors.New("score: --events is required")
	}
	from, err := parseTime(*fromS, time.Unix(0, 0).UTC())
	if err != nil {
		return fmt.Errorf("parse --from: %w", err)
	}
	to, err := parseTime(*toS, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		return fmt.Errorf("parse --to: %w", err)
	}
	if !to.After(from) {
		return errors.New("score: --to must be after --from")
	}
	cfg := engineConfig{Models: modelPaths}
	ms, err := cfg.loadModels()
	if err != nil {
		return fmt.Errorf("load models: %w", err)
	}
	deciders := splitList(*decision)
	if len(deciders) == 0 && len(modelPaths) == 0 {
		deciders = []string{models.ShippedDecisionModel}
	}

	fopts := []features.Option{features.WithMaxLateness(*maxLateness)}
	if *specPath != "" {
		spec, err := loadSpec(*specPath)
		if err != nil {
			return err
		}
		fopts = append(fopts, features.WithSpec(spec))
	}
	start := time.Now()
	dec := features.NewDecoder(features.WithMaxFutureSkew(-1)) // files may run ahead of the wall clock
	events, err := readJSONL(*eventsPath, func(f *os.File) ([]features.Event, error) { return features.ReadEvents(f, dec) })
	if err != nil {
		return err
	}
	var labels []features.Label
	if *labelsPath != "" {
		if labels, err = readJSONL(*labelsPath, func(f *os.File) ([]features.Label, error) { return features.ReadLabels(f, dec) }); err != nil {
			return err
		}
	}
	w, closeOut, err := createOut(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var inRange int64
	for i := range events {
		if !events[i].TS.Before(from) && events[i].TS.Before(to) {
			inRange++
		}
	}
	bar := newBar(inRange, "scoring", *out == "-")
	var n, alerts int64
	var buf []byte
	err = stream.Replay(events, labels, ms, from, to, func(rec *sinks.ScoreRecord) error {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		buf = append(rec.AppendJSON(buf[:0]), '\n')
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write score records: %w", err)
		}
		if rec.Decision == models.DecisionAlert.String() {
			alerts++
		}
		n++
		if n%1024 == 0 {
			bar.Add(1024)
		}
		return nil
	}, stream.WithDecisionModels(deciders...), stream.WithFeatureOptions(fopts...))
	bar.Finish()
	if err == nil {
		err = bw.Flush()
	}
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	slog.Info("score finished", "events", len(events), "labels", len(labels), "scored", n, "alerts", alerts,
		"from", from.Format(time.RFC3339), "to", to.Format(time.RFC3339), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
