package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// cmdScore replays recorded history through the stream's own feature, model
// and decision code and writes the score record of every transaction in
// [from, to): what the stream would have published for it.
func cmdScore(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("score", flag.ContinueOnError)
	var hf historyFlags
	hf.register(fs, "labels JSONL file (feeds the label-derived features at their own time; optional)")
	var modelPaths listFlag
	fs.Var(&modelPaths, "model", "model file (repeatable; default: the shipped models)")
	out := fs.String("out", "-", "output JSONL file of score records (- for stdout)")
	var trust modelTrustConfig
	trust.registerTrust(fs)
	var fc featureCheckConfig
	fc.registerFeatureCheck(fs, false)
	decision := fs.String("decision-models", "", "comma-separated models whose thresholds decide (default: every model; with the shipped models, \"fraud\")")
	fs.Usage = func() {
		fs.Output().Write([]byte("usage: streamscore score --events F [--labels F] [--model M ...] [--from T1] [--to T2] [--out F]\n\n" +
			"Replays the history before T2 through the stream's feature code and writes the score record the\n" +
			"stream would publish for every transaction in [T1, T2). scored_at is the event time, latency_ms 0.\n\n"))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := trust.validateTrust(); err != nil {
		return err
	}
	cfg := engineConfig{Models: modelPaths, modelTrustConfig: trust}
	ms, err := cfg.loadModels()
	if err != nil {
		return fmt.Errorf("load models: %w", err)
	}
	deciders := decisionModels(*decision, len(modelPaths) == 0)
	start := time.Now()
	h, err := hf.load("score")
	if err != nil {
		return err
	}
	events, labels, from, to := h.events, h.labels, h.from, h.to
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
	err = stream.Replay(events, labels, ms, from, to, func(rec *output.ScoreRecord) error {
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
	}, append(fc.streamOptions(false), stream.WithDecisionModels(deciders...), stream.WithFeatureOptions(h.opts...))...)
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
	// The guard of the engine, over the whole range: an alert rate far
	// from the deciding models' validation figures is worth a look.
	if n > 0 {
		rate := float64(alerts) / float64(n)
		if outside, ok, valid := alertRateOutside(ms, deciders, n, rate, 5); ok && outside {
			slog.Warn("alert rate far outside the deciding models' validation alert rate (more than 5x above or below): check the feature spec, the models and the traffic",
				"alert_rate", rate, "alerts", alerts, "scored", n, "validation_alert_rate", valid)
		}
	}
	slog.Info("score finished", "events", len(events), "labels", len(labels), "scored", n, "alerts", alerts,
		"from", from.Format(time.RFC3339), "to", to.Format(time.RFC3339), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
