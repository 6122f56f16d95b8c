package main

import (
	"context"
	"flag"
	"log/slog"
	"time"
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
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	if cfg.MetricsAddr != "" {
		addr, wait, err := serveMetrics(mctx, cfg.MetricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer wait()
		log.Info("metrics listening", "addr", "http://"+addr+"/metrics")
	}
	start := time.Now()
	err = e.pipeline.Run(ctx)
	st := e.pipeline.Stats()
	log.Info("run finished", "uptime", time.Since(start).Round(time.Millisecond), "consumed", st.Consumed.Load(),
		"scored", st.Scored.Load(), "deadlettered", st.DeadLettered.Load(), "alerts", st.Alerts.Load())
	return err
}
