package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/streamscore/streamscore/stream"
)

// cmdRun is the production daemon: it consumes the transactions topic as a
// member of the consumer group until SIGINT/SIGTERM, then drains and commits.
func cmdRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var cfg engineConfig
	cfg.register(fs)
	fs.Usage = func() {
		fs.Output().Write([]byte("usage: streamscore run [flags]\n\nScores the transactions topic against existing Kafka and NATS.\nEvery flag is also STREAMSCORE_<FLAG> in the environment or a key in --config YAML.\n\n"))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := slog.Default()
	reg := newRegistry()
	e, err := buildEngine(&cfg, reg, log)
	if err != nil {
		return err
	}
	defer e.Close()
	if cfg.DeadLetterTopic == "" {
		log.Warn("dead-letter topic disabled: bad events are only counted in streamscore_stream_events_deadlettered_total")
	}

	// Hot reload: --models-dir polling, SIGHUP and POST /-/reload re-read
	// the model files; the pipeline verifies and swaps them between batches.
	// The reloader stops (and is joined) once the pipeline has stopped.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rl := newReloader(e.pipeline, cfg.modelSource(), e.modelState, cfg.ModelsPoll, hup, log)
	rctx, rcancel := context.WithCancel(context.Background())
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() { defer rwg.Done(); rl.Run(rctx) }()
	defer rwg.Wait()
	defer rcancel()

	// Kafka: a TLS or authentication failure fails the start, naming the
	// cause; while running, the monitor turns /readyz to 503 while a new
	// connection fails.
	brokers := splitList(cfg.Brokers)
	if err := checkKafkaAtStart(ctx, &cfg.kafkaSecurity, brokers, cfg.kafkaTopics(), e.health, log); err != nil {
		return err
	}
	mon := &kafkaMonitor{sec: &cfg.kafkaSecurity, brokers: brokers, topics: cfg.kafkaTopics(), every: cfg.KafkaCheckInterval, health: e.health}
	monCtx, monCancel := context.WithCancel(context.Background())
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() { defer monWG.Done(); mon.Run(monCtx) }()
	defer monWG.Wait()
	defer monCancel()

	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	if cfg.MetricsAddr != "" {
		addr, wait, err := cfg.HTTP.serve(mctx, cfg.MetricsAddr, reg, log,
			route{"/-/reload", rl, classReload}, route{"/readyz", readyHandler(e.pipeline, e.health), classProbes})
		if err != nil {
			return err
		}
		defer wait()
		base := cfg.HTTP.scheme() + "://" + addr
		reload := "POST " + base + "/-/reload (bearer token)"
		if cfg.HTTP.TokenFile == "" {
			reload = "off (no --http-token-file)"
		}
		log.Info("metrics listening", "addr", base+"/metrics", "reload", reload, "ready", base+"/readyz",
			"open", cfg.HTTP.Open, "pprof", cfg.HTTP.Pprof)
	}
	start := time.Now()
	err = e.pipeline.Run(ctx)
	if errors.Is(err, stream.ErrDrainTimeout) {
		// Say why: what the connections and sinks report (their causes).
		log.Error("drain timeout: what was still failing", "problems", strings.Join(e.health.Details(), "; "))
	}
	rcancel()
	st := e.pipeline.Stats()
	log.Info("run finished", "uptime", time.Since(start).Round(time.Millisecond), "consumed", st.Consumed.Load(),
		"scored", st.Scored.Load(), "deadlettered", st.DeadLettered.Load(), "alerts", st.Alerts.Load())
	return err
}
