package features

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"
)

// ErrInvalidOption is wrapped by the panic value of NewShared, NewBuilder and
// NewDecoder when an option is out of range (a programmer error).
var ErrInvalidOption = errors.New("features: invalid option")

// Option tunes a Shared or a Builder. The same options may be passed to both
// (Replay does); each uses the settings that concern it.
type Option func(*config) error

type config struct {
	ttl      time.Duration
	lateness time.Duration
	stripes  int
	spec     *compiledSpec // nil: the hand-written default features
	// Capacity (0: unbounded): WithMaxCards, WithMaxTerminals.
	maxCards, maxTerminals int
	maxPoints              int // WithMaxPoints
}

func defaultConfig() config {
	return config{
		ttl:      35 * 24 * time.Hour,
		lateness: time.Hour,
		stripes:  64,
	}
}

// newConfig applies opts over the defaults; the error wraps
// ErrInvalidOption for an option out of its range.
func newConfig(opts []Option) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return config{}, fmt.Errorf("apply option: %w", err)
		}
	}
	return c, nil
}

// WithTTL sets how long, in event time, an idle card or terminal keeps its
// state. Default 35 days. An entity idle for longer than the TTL is forgotten
// (its next event starts from empty state); memory of idle entities is
// released between one and two TTLs after their last event. The trap: a TTL
// shorter than the longest window (30 days, 37 for the lagged terminal fraud
// windows) truncates those windows for entities that pause longer than the
// TTL. d must be > 0.
func WithTTL(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: ttl %v must be > 0", ErrInvalidOption, d)
		}
		c.ttl = d
		return nil
	}
}

// WithMaxLateness sets how far behind an entity's newest event an
// out-of-order event may arrive and still be inserted into that entity's
// windows. Default 1h. Later events are still scored (against the state that
// is retained) but leave the state untouched; Builder.Late counts them. State retains this much extra
// history beyond the longest window, so a large value costs memory. d >= 0.
func WithMaxLateness(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: max lateness %v must be >= 0", ErrInvalidOption, d)
		}
		c.lateness = d
		return nil
	}
}

// WithMaxCards caps the number of card states a Builder holds. Default 0:
// unbounded. When a new card would exceed the cap, the card least recently
// seen in event time (the smallest newest-event time; ties: the smaller id)
// is evicted first, exactly, whatever the arrival order; its next event
// starts from empty state, as after the TTL. Builder.Stats counts the
// evictions and Builder.EvictedCards names them (so that state kept beside
// the Builder's, such as the stream's per-card model state, can follow).
// The cap is per Builder: the stream gives each of its workers an equal
// share (MaxCards / workers, rounded up), while Replay's single Builder has
// it whole, so under cap pressure a stream with several workers evicts
// other cards than a replay of the same events. With WithSpec, the card
// labels a Shared keeps are capped by it too (an equal share per stripe).
// The trap: the cap is a safety valve against made-up card ids, not a model
// setting; size it above the cards active within the TTL (see the README's
// memory budget), because every eviction of a real card loses its history.
// n must be >= 0.
func WithMaxCards(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("%w: max cards %d must be >= 0", ErrInvalidOption, n)
		}
		c.maxCards = n
		return nil
	}
}

// WithMaxTerminals caps the number of terminal states a Shared holds (with
// WithSpec: the states of each entity kept in the Shared other than card_id,
// each capped separately). Default 0: unbounded. The cap is split in equal
// shares among the stripes (WithStripes; rounded up), and each stripe
// evicts its terminal least recently seen in event time (ties: the smaller
// id) when a new one would exceed its share; a terminal's stripe depends on
// the Shared's hash key, and several workers update terminals in an order
// that depends on timing, so under cap pressure which terminals are evicted
// is not reproducible by a replay. The trap: as for WithMaxCards, size it
// above the terminals active within the TTL; an evicted terminal also
// loses its fraud labels. n must be >= 0.
func WithMaxTerminals(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("%w: max terminals %d must be >= 0", ErrInvalidOption, n)
		}
		c.maxTerminals = n
		return nil
	}
}

// WithMaxPoints caps the events (points) each card's and each terminal's
// history keeps (with WithSpec: each entity's). Default 0: unbounded (a
// history keeps every event of its longest window plus the max lateness).
// When an event would exceed the cap, the entity's oldest events are
// dropped from its history and from every window holding them, as if they
// had aged out; an out-of-order event older than every event kept by a
// full history is scored but not inserted (Builder.Late counts it). Windows
// then count and sum only the newest n events: exact for every entity with
// fewer events than the cap over the longest window (30 days, 37 for the
// lagged terminal windows, plus the max lateness), and biased low for the
// others, the lagged windows first. The trap: a cap below the busiest
// terminal's 37-day volume makes its features differ from the model's
// training rows unless they were computed with the same cap. n must be in
// [0, 2^31).
func WithMaxPoints(n int) Option {
	return func(c *config) error {
		if n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("%w: max points %d must be in [0, 2^31)", ErrInvalidOption, n)
		}
		c.maxPoints = n
		return nil
	}
}

// WithStripes sets the number of lock stripes of a Shared (terminal state).
// Default 64. n must be a power of two in [1, 4096]. More stripes mean less
// contention between workers and a slightly larger fixed footprint.
func WithStripes(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 4096 || n&(n-1) != 0 {
			return fmt.Errorf("%w: stripes %d must be a power of two in [1, 4096]", ErrInvalidOption, n)
		}
		c.stripes = n
		return nil
	}
}

// WithSpec makes a Builder compute the features of spec (see ParseSpec,
// DefaultSpec and docs/features.md) with the spec-driven engine. Default:
// none, which means the hand-written default features that DefaultSpec
// describes. The spec is validated and compiled
// once, when WithSpec is called; an invalid one makes NewShared and
// NewBuilder panic with an error wrapping ErrInvalidOption and
// ErrInvalidSpec (call spec.Validate, or use ParseSpec, to get the error
// instead). The trap: pass the same WithSpec to NewShared and to every
// NewBuilder of that Shared (stream.WithFeatureOptions and Replay do): a
// Builder whose spec differs from its Shared's panics.
//
// A spec equal to DefaultSpec(), with defaults such as night_hour spelled
// out or left out, runs on the hand-written Builder, its specialised
// implementation: TestSpecDefaultMatchesBuilder checks that
// both write bit-identical rows (Update and Peek) and keep the same state.
// That test is the differential check for the fast path, like a generic
// kernel against its assembly.
func WithSpec(spec *Spec) Option { return withSpec(spec, false) }

// withSpec is WithSpec; generic forces the spec-driven engine even for the
// default spec (the test hook of the differential test).
func withSpec(spec *Spec, generic bool) Option {
	cs, err := compileSpec(spec)
	if err == nil && !generic && reflect.DeepEqual(cs.spec, defaultCompiled().spec) {
		cs = nil // the hand-written Builder
	}
	return func(c *config) error {
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		c.spec = cs
		return nil
	}
}

// defaultCompiled is DefaultSpec, compiled once.
var defaultCompiled = sync.OnceValue(func() *compiledSpec {
	cs, err := compileSpec(DefaultSpec())
	if err != nil {
		panic(fmt.Errorf("compile embedded default spec: %w", err))
	}
	return cs
})
