package stream

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
)

// stateCounts are the running totals behind the state size and eviction
// metrics: the cards each worker's Builder held at its last batch, and the
// card evictions of every Builder the pipeline ran (workers add the growth
// of their Builder's counters once per batch). Terminal figures are read
// from the Shared when scraped.
type stateCounts struct {
	cards            []atomic.Int64 // per worker
	cardTTL, cardCap atomic.Uint64
	// shared is p.shared for scrapes (a restore replaces p.shared while
	// the metrics may be read).
	shared atomic.Pointer[features.Shared]
}

// registerStateMetrics registers streamscore_stream_state_entities{entity}
// and streamscore_stream_state_evictions_total{entity,reason} with reg
// (nil: none).
func (p *Pipeline) registerStateMetrics(reg prometheus.Registerer) error {
	p.counts.cards = make([]atomic.Int64, p.cfg.workers)
	p.counts.shared.Store(p.shared)
	if reg == nil {
		return nil
	}
	const (
		entitiesName = "streamscore_stream_state_entities"
		entitiesHelp = "Entity states held in memory: card (every worker's Builder) and terminal (the shared state; with a feature spec, also its other entities and card labels)."
		evictName    = "streamscore_stream_state_evictions_total"
		evictHelp    = "Entity states dropped: reason ttl (idle longer than the TTL) or cap (least recently seen in event time, evicted to stay under --max-cards or --max-terminals)."
	)
	gauge := func(entity string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: entitiesName, Help: entitiesHelp,
			ConstLabels: prometheus.Labels{"entity": entity}}, fn)
	}
	counter := func(entity, reason string, fn func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: evictName, Help: evictHelp,
			ConstLabels: prometheus.Labels{"entity": entity, "reason": reason}}, fn)
	}
	cs := []prometheus.Collector{
		gauge("card", func() float64 {
			var n int64
			for i := range p.counts.cards {
				n += p.counts.cards[i].Load()
			}
			return float64(n)
		}),
		gauge("terminal", func() float64 { return float64(p.counts.shared.Load().Stats().Entities) }),
		counter("card", "ttl", func() float64 { return float64(p.counts.cardTTL.Load()) }),
		counter("card", "cap", func() float64 { return float64(p.counts.cardCap.Load()) }),
		counter("terminal", "ttl", func() float64 { return float64(p.counts.shared.Load().Stats().EvictedTTL) }),
		counter("terminal", "cap", func() float64 { return float64(p.counts.shared.Load().Stats().EvictedCap) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register state metrics: %w", err)
		}
	}
	return nil
}

// workerFeatureOpts returns the feature options of a worker's Builder: the
// pipeline's, with the card cap (features.WithMaxCards) divided equally
// among the workers, rounded up.
func (p *Pipeline) workerFeatureOpts() []features.Option {
	opts := p.cfg.featureOpts
	if n := features.MaxCards(opts...); n > 0 {
		w := p.cfg.workers
		opts = append(slices.Clone(opts), features.WithMaxCards((n+w-1)/w))
	}
	return opts
}

// evictedCards drops the sequential-model state of the cards the last
// Update evicted, so that it leaves memory with their windows.
func (w *worker) evictedCards() {
	for _, id := range w.build.EvictedCards() {
		w.seq.drop(id)
	}
}

// countState publishes the growth of the Builder's state statistics since
// the last call. Called once per batch.
func (w *worker) countState() {
	st := w.build.Stats()
	w.p.counts.cards[w.id].Store(int64(st.Entities))
	if st.EvictedTTL > w.evicted.EvictedTTL {
		w.p.counts.cardTTL.Add(st.EvictedTTL - w.evicted.EvictedTTL)
	}
	if st.EvictedCap > w.evicted.EvictedCap {
		w.p.counts.cardCap.Add(st.EvictedCap - w.evicted.EvictedCap)
	}
	w.evicted = st
}
