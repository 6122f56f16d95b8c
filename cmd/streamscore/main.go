// Command streamscore is the streaming transaction-scoring engine: one binary
// with subcommands. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	run   func(ctx context.Context, args []string) error
	usage string
}

var commands = map[string]command{
	"demo":     {cmdDemo, "embedded Kafka broker + NATS server, generated traffic, the engine, live status"},
	"run":      {cmdRun, "the scoring daemon against an existing Kafka cluster and NATS server"},
	"gen":      {cmdGen, "synthetic transactions and delayed fraud labels, to files or Kafka"},
	"replay":   {cmdReplay, "produce a JSONL file of events (and labels) into Kafka at its own event time, compressed by --speed"},
	"backtest": {cmdBacktest, "compare model kinds and hyper-parameters by prequential backtest: mean ± std of AUC, AP, card precision@k over folds"},
	"train":    {cmdTrain, "fit a model on generated or recorded history with the stream's feature code"},
	"eval":     {cmdEval, "measure a model's scores against labels: AUC, AP, precision/recall at thresholds, card precision@k, plots"},
	"models":   {cmdModels, "model files: import (ONNX to native), inspect (verify and describe), predict (score rows from a CSV)"},
	"features": {cmdFeatures, "replay history and write point-in-time feature rows (training data) as CSV"},
	"score":    {cmdScore, "replay history and write the score records the stream would publish for a time range"},
	"state":    {cmdState, "check a --state-dir snapshot against run's configuration before a deploy: intact, restorable, what it holds"},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: streamscore <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].usage)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'streamscore <command> -h' for its flags. Every flag can also be set as\nSTREAMSCORE_<FLAG> in the environment or as a key of the YAML file given by --config.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "streamscore: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the graceful stop; a second one kills the
	// process (the default action once NotifyContext lets go).
	context.AfterFunc(ctx, stop)
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		slog.Error(name+" failed", "err", err)
		os.Exit(1)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if v := os.Getenv(envPrefix + "LOG_LEVEL"); v != "" {
		if err := l.UnmarshalText([]byte(v)); err == nil {
			return l
		}
	}
	return slog.LevelInfo
}
