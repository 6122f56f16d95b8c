package stream

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
)

// TestWorkerPathAllocs checks that the worker's path — scoring a batch of
// 256 events with the shipped models (the GRU stepping each card's state),
// reasons for its review and alert records, encoding the score, alert and
// audit records and the sink messages — allocates nothing per event once
// its buffers have grown: at most one allocation per batch (the string the
// record ids share).
func TestWorkerPathAllocs(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	p, err := New([]string{"127.0.0.1:1"}, "allocs", "transactions", ms, discardSink{},
		WithWorkers(1), WithRegisterer(prometheus.NewRegistry()), WithStateDir(t.TempDir()),
		WithLogger(slog.New(slog.DiscardHandler)), WithDecisionModels(models.ShippedDecisionModel))
	if err != nil {
		t.Fatal(err)
	}
	st := newStage(p, []*worker{newWorker(p, 0)})
	w := st.workers[0]
	ps := st.part(0)
	ps.seq.layout = stageLayout(st, 0)
	g, err := synth.New(synth.Config{Seed: 3, Cards: 300, Terminals: 60})
	if err != nil {
		t.Fatal(err)
	}
	// Two days of warm-up traffic through the windows, then the last 256
	// events of a third day as the batch.
	end := time.Now().Truncate(time.Second)
	var evs []features.Event
	if err := g.Simulate(end.Add(-72*time.Hour), end, 0.05, func(tx synth.Tx) error {
		evs = append(evs, tx.Event)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(evs) < 1000 {
		t.Fatalf("only %d generated events", len(evs))
	}
	row := make([]float32, st.width)
	for i := range evs[:len(evs)-256] {
		ps.build.UpdateLocal(&evs[i], row, false)
	}
	b := <-w.free
	b.set = p.set.Load()
	b.fit(len(b.set.workers[0].scorers), len(b.set.workers[0].shadows), p.cfg.maxBatch)
	for i, ev := range evs[len(evs)-256:] {
		b.msgs = append(b.msgs, kafka.Message{Partition: 0, Offset: int64(i), Time: ev.TS})
		b.events = append(b.events, ev)
		ps.build.UpdateLocal(&b.events[i], b.x[i*st.width:(i+1)*st.width], false)
		b.late = append(b.late, false)
		b.adv = append(b.adv, true)
		b.rowPart = append(b.rowPart, ps)
		b.rowMsg = append(b.rowMsg, i)
	}
	flush := func() {
		b.buf, b.spans, b.out, b.cards = b.buf[:0], b.spans[:0], b.out[:0], b.cards[:0]
		w.flush(b)
		<-w.out
	}
	flush() // grows the buffers
	var decided int
	for _, m := range b.out {
		if m.Kind == output.KindAlert {
			decided++
		}
	}
	reviewOrAlert := w.nDecisions[models.DecisionReview] + w.nDecisions[models.DecisionAlert]
	if reviewOrAlert == 0 || len(b.out) < 2*256 {
		t.Fatalf("the batch has %d review/alert records and %d messages: no reasons or no audit records to measure", reviewOrAlert, len(b.out))
	}
	allocs := testing.AllocsPerRun(20, flush)
	t.Logf("%d events, %d review/alert (%d alert records), %d messages: %v allocations per batch", len(b.msgs), reviewOrAlert, decided, len(b.out), allocs)
	if allocs > 1 {
		t.Errorf("worker path: %v allocations per batch of 256 events, want at most 1", allocs)
	}
}
