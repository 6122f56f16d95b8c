package stream

import (
	"runtime"
	"testing"
	"time"

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
	p := shippedPipeline(t, "allocs", WithWorkers(1), WithStateDir(t.TempDir()), WithDecisionModels(models.ShippedDecisionModel))
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
		b.slots = append(b.slots, ps.build.LastCardSlot())
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

// TestStagePathAllocs checks the allocations of the path from a fetched
// message to a worker's batch: decoding in the partition's fetching
// goroutine (stage.decode) allocates the event's one shared string and
// nothing else (the pending item comes from a pool), and the stage —
// the event-time alignment of two partitions, the offset trails, the card
// and terminal updates, the feature row written into the worker's batch,
// batches handed over when full — less than 0.6 per event once its
// buffers have grown. Measured: 0.42-0.45, all of it in release (the
// aligner's pops and the card and terminal updates; not narrowed down
// further); 2.45 when the offset trails dropped their head by reslicing
// only (each append then reallocated sooner or later).
func TestStagePathAllocs(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector makes sync.Pool drop items at random: the pooled pending items allocate")
	}
	p := shippedPipeline(t, "allocs", WithWorkers(1), WithStateDir(t.TempDir()), WithDecisionModels(models.ShippedDecisionModel))
	st := newStage(p, []*worker{newWorker(p, 0)})
	w := st.workers[0]
	st.credits = map[int]*credit{} // a generation: the aligner releases
	for part := range 2 {
		ps := st.part(part)
		ps.owned, ps.shrKnown = true, true
		ps.seq.layout = stageLayout(st, part)
	}
	g, err := synth.New(synth.Config{Seed: 3, Cards: 300, Terminals: 60})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Truncate(time.Second)
	const days = 10 // warm-up: the windows and buffers have grown
	var msgs []kafka.Message
	if err := g.Simulate(end.Add(-time.Duration(days)*24*time.Hour), end, 0.05, func(tx synth.Tx) error {
		part := len(msgs) % 2
		msgs = append(msgs, kafka.Message{Topic: "transactions", Partition: part, Offset: int64(len(msgs) / 2),
			Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil), Time: tx.Event.TS})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const batch = 256
	if len(msgs) < 8*batch {
		t.Fatalf("only %d generated events", len(msgs))
	}
	// The worker's side: full batches come back empty at once.
	recycle := func() {
		for {
			select {
			case b := <-w.ready:
				b.reset()
				w.free <- b
			default:
				return
			}
		}
	}
	next := 0
	pds := make([]*pending, batch)
	// feed decodes the next batch of messages (counting the decoder's
	// allocations), then hands them to the stage (counting the stage's).
	feed := func() (decodeAllocs, stageAllocs uint64) {
		var m0, m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m0)
		now := st.now() // one clock reading per slice, as handOff
		for i := range pds {
			m := &msgs[next+i]
			pds[i] = st.decode(m.Topic, &Record{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time}, now)
		}
		runtime.ReadMemStats(&m1)
		for i, pd := range pds {
			if pd.reason != "" {
				t.Fatalf("message %d dead-lettered: %s", next+i, pd.err)
			}
		}
		// In the fetchers' slices (handOff), as the stage's loop takes
		// them; one partition's each, as a fetcher's.
		for part := range 2 {
			h := handoffPool.Get().(*handoff)
			h.epoch = st.epoch
			for _, pd := range pds {
				if pd.m.Partition != part {
					continue
				}
				h.pds = append(h.pds, pd)
				if len(h.pds) == maxHandOff {
					st.inFlight.Add(int64(len(h.pds)))
					st.take(h)
					recycle()
					h = handoffPool.Get().(*handoff)
					h.epoch = st.epoch
				}
			}
			st.inFlight.Add(int64(len(h.pds)))
			st.take(h)
			recycle()
		}
		runtime.ReadMemStats(&m2)
		next += batch
		return m1.Mallocs - m0.Mallocs, m2.Mallocs - m1.Mallocs
	}
	for next+batch <= len(msgs)-4*batch { // warm-up: two days and more
		feed()
	}
	var dec, stage uint64
	for range 4 {
		d, s := feed()
		dec += d
		stage += s
	}
	n := float64(4 * batch)
	t.Logf("%d days, %d events, the last %d: decode %.3f allocations per event, stage %.3f", days, len(msgs), 4*batch, float64(dec)/n, float64(stage)/n)
	if float64(dec)/n > 1.01 {
		t.Errorf("decode: %.3f allocations per event, want 1 (the event's shared string)", float64(dec)/n)
	}
	if float64(stage)/n > 0.6 {
		t.Errorf("stage: %.3f allocations per event, want less than 0.6", float64(stage)/n)
	}
}
