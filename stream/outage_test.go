package stream_test

import (
	"github.com/prometheus/client_golang/prometheus"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
)

// TestSinkOutage cuts the Kafka sink off (every produce request's
// connection dropped) for a few seconds — STREAMSCORE_OUTAGE_SECONDS, 30 in
// the long run — while a backlog waits: the engine holds back (what it has
// taken from Kafka but not published stays bounded by its queues), commits
// nothing it has not published, and once the sink is back every event has
// its score record and every offset is committed. Nothing is lost.
func TestSinkOutage(t *testing.T) {
	outage := 4 * time.Second
	if s := os.Getenv("STREAMSCORE_OUTAGE_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		outage = time.Duration(n) * time.Second
	}
	k, err := local.StartKafka(map[string]int{txTopic: 2, scoresTopic: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	g, err := synth.New(synth.Config{Seed: 9, Cards: 200, Terminals: 30})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	ids := produceSynth(t, newWriter(t, brokers, txTopic), g, "o", time.Now().Add(-10*time.Hour), n)

	back := make(chan struct{})
	k.FailProduce(back)
	sink := kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic})
	const workers, inFlight, maxBatch, queue = 2, 2, 64, 256
	reg := prometheus.NewRegistry()
	p := newPipeline(t, brokers, "outage", shippedModels(t), sink, stream.WithWorkers(workers), stream.WithRegisterer(reg),
		stream.WithInFlight(inFlight), stream.WithMaxBatch(maxBatch), stream.WithQueueDepth(queue))
	r := runPipeline(t, p)
	time.Sleep(outage)
	st := p.Stats()
	// What waits in the event-time aligner for the other partition is
	// bounded on its own (bounded by the aligner's cap, checked here).
	aligning := int64(metricValue(t, reg, "streamscore_stream_align_buffered_events"))
	held := st.Consumed.Load() - st.Scored.Load() - aligning
	if aligning > 2*4096 {
		t.Errorf("during the outage: %d events in the aligner, above the partitions' credits", aligning)
	}
	// Bound: the stage's queue, each worker's open batch and its batches
	// in flight, plus what kafka-go's reader prefetches is not counted as
	// consumed.
	if bound := int64(queue + workers*(inFlight+1)*maxBatch); held > bound || st.Scored.Load() != 0 {
		t.Errorf("during the outage: %d consumed and not published (bound %d), %d scored (want 0)", held, bound, st.Scored.Load())
	}
	if c := committedOffset(t, brokers, "outage"); c > 0 {
		t.Errorf("committed offset %d on partition 0 during the outage", c)
	}
	close(back)
	waitScored(t, p, n)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	lost := unscored(t, brokers, scoresTopic, ids)
	if !allCommitted(t, brokers, "outage", txTopic) {
		t.Errorf("not every offset committed after the fault")
	}
	if lost > 0 {
		t.Errorf("%d of %d events have no score record after the outage", lost, n)
	}
	t.Logf("sink outage of %v: %d events held back at most (bound %d) and %d in the aligner, %d lost, all committed after", outage, held, queue+workers*(inFlight+1)*maxBatch, aligning, lost)
}
