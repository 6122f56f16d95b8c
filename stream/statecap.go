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
	cards            atomic.Int64 // every partition's Builder, at the stage's last batch
	cardTTL, cardCap atomic.Uint64
	// shared is p.shared for scrapes (a restore replaces p.shared while
	// the metrics may be read).
	shared atomic.Pointer[features.Shared]
}

// registerStateMetrics registers streamscore_stream_state_entities{entity}
// and streamscore_stream_state_evictions_total{entity,reason} with reg
// (nil: none).
func (p *Pipeline) registerStateMetrics(reg prometheus.Registerer) error {
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
		gauge("card", func() float64 { return float64(p.counts.cards.Load()) }),
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

// partFeatureOpts returns the feature options of a partition's Builder:
// the pipeline's, with the card cap (features.WithMaxCards) divided
// equally among the topic's partitions, rounded up (a member owns some of
// them, and a partition's state moves whole).
func (p *Pipeline) partFeatureOpts() []features.Option {
	opts := p.cfg.featureOpts
	if n := p.shared.MaxCards(); n > 0 {
		parts := max(p.nParts, 1)
		opts = append(slices.Clone(opts), features.WithMaxCards((n+parts-1)/parts))
	}
	return opts
}

// partBuilder returns a partition's Builder over s (p.shared, or the Shared
// of a restored snapshot). New built a Builder from the same options and
// refused the pipeline if they were invalid, and the card cap
// partFeatureOpts divides stays in range, so an error here is a bug in
// this package: it panics rather than run without a partition's state.
func (p *Pipeline) partBuilder(s *features.Shared) *features.Builder {
	b, err := features.NewBuilder(s, p.partFeatureOpts()...)
	if err != nil {
		panic(fmt.Sprintf("stream: partition builder from options New accepted: %v", err))
	}
	return b
}
