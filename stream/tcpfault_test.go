package stream_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// faultProxy is a toxiproxy TCP proxy in front of the embedded broker; every
// Kafka connection of the engine (reader, label reader, writers) is dialled
// to it, whatever address the broker advertises.
type faultProxy struct {
	p *toxiproxy.Proxy
}

func startFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "kafka", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &faultProxy{p: p}
}

// dial connects to the proxy, whatever address was asked for.
func (f *faultProxy) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.p.Listen)
}

// toxic adds a toxic (toxiproxy's JSON form) and returns its removal.
func (f *faultProxy) toxic(t *testing.T, js string) func() {
	t.Helper()
	tw, err := f.p.Toxics.AddToxicJson(strings.NewReader(js))
	if err != nil {
		t.Fatalf("add toxic %s: %v", js, err)
	}
	return func() {
		if err := f.p.Toxics.RemoveToxic(context.Background(), tw.Name); err != nil {
			t.Errorf("remove toxic %s: %v", tw.Name, err)
		}
	}
}

// TestTCPFaults runs the engine through a TCP fault proxy to its broker
// while it works through a backlog: 300 ms of latency each way, then
// connections reset as soon as data flows, then a blackhole (data dropped,
// connections left open: half-open), each for a few seconds, with
// recovery between them. Every event ends with its score record and every
// offset is committed; no fault stops the engine.
func TestTCPFaults(t *testing.T) {
	k, err := local.StartKafka(map[string]int{txTopic: 2, scoresTopic: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	g, err := synth.New(synth.Config{Seed: 13, Cards: 300, Terminals: 40})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30_000
	ids := produceSynth(t, newWriter(t, brokers, txTopic), g, "f", time.Now().Add(-10*time.Hour), n)

	fp := startFaultProxy(t, brokers[0])
	dialer := &kafka.Dialer{Timeout: 5 * time.Second, DialFunc: fp.dial}
	tr := &kafka.Transport{Dial: fp.dial, DialTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	ks, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(output.KindScore, scoresTopic), sinks.WithKafkaTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	fan, err := output.NewFanout([]output.Sink{ks}, output.WithFanoutBackoff(10*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fan.Close() })
	p := newPipeline(t, brokers, "tcp-faults", shippedModels(t), fan, stream.WithDialer(dialer), stream.WithMaxBatch(64),
		stream.WithDrainTimeout(60*time.Second))
	r := runPipeline(t, p)
	waitScored(t, p, 500) // the group joined and scoring: the faults land mid-stream

	phases := []struct {
		name, toxic string
		last        time.Duration
	}{
		{"latency", `{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":300}}`, 2 * time.Second},
		{"reset", `{"name":"reset","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`, 2 * time.Second},
		{"blackhole", `{"name":"hole","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`, 3 * time.Second},
	}
	for _, ph := range phases {
		before := p.Stats().Scored.Load()
		remove := fp.toxic(t, ph.toxic)
		time.Sleep(ph.last)
		remove()
		t.Logf("%s for %v: %d events scored meanwhile", ph.name, ph.last, p.Stats().Scored.Load()-before)
		time.Sleep(time.Second) // some recovery between faults
	}
	// Scored counts re-deliveries too (a reset connection makes the reader
	// start over from the committed offset): wait for the commits instead.
	waitFor(t, waitBudget, "every offset committed", func() bool { return allCommitted(t, brokers, "tcp-faults", txTopic) })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lost := unscored(t, brokers, scoresTopic, ids)
	if !allCommitted(t, brokers, "tcp-faults", txTopic) {
		t.Errorf("not every offset committed after the fault")
	}
	if lost > 0 {
		t.Errorf("%d of %d events without a score record", lost, n)
	}
	t.Logf("TCP faults: %d events, %d lost, committed to the end; %d scored in all (re-deliveries included)", n, lost, p.Stats().Scored.Load())

}
