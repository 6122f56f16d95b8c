// Package promreg registers Prometheus collectors so that components built
// twice on one registry share their metrics instead of failing.
//
// # Concepts
//
// Register registers a collector, or returns the collector of the same
// type already registered under the same description: two sinks, or two
// Fanouts, on one registry then count into the same series (told apart by
// their labels). Any other refusal (a name registered with other labels or
// help) is an error: a wiring bug.
//
// # Concurrency
//
// Register is safe for concurrent use if the registerer is (a
// prometheus.Registry is).
//
// # Metrics
//
// None of its own.
package promreg
