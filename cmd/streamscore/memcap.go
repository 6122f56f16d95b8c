package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/streamscore/streamscore/features"
)

// Defaults of the state caps. See the README's memory budget: a card with
// 20 events in its windows costs about 0.8 KB, so the card cap alone allows
// about 4 GB of card state; raise both for a larger fleet.
const (
	defaultMaxCards     = 5_000_000
	defaultMaxTerminals = 1_000_000
	defaultMaxPoints    = 1_000_000 // 16 MB of history for one entity
)

// memConfig bounds the memory the feature state can take, whoever writes
// to the input topic: caps on the cards and terminals held
// (features.WithMaxCards, WithMaxTerminals), on the events each one's
// history keeps (features.WithMaxPoints) and on the length of string
// fields (features.WithMaxFieldBytes). run (and demo), features and score
// take the same flags, so that `score` evicts as the stream does.
type memConfig struct {
	MaxCards      int
	MaxTerminals  int
	MaxFieldBytes int
	MaxPoints     int
}

func (c *memConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxCards, "max-cards", defaultMaxCards,
		"most card states held (shared equally among the workers); beyond it the card least recently seen in event time is evicted "+
			"(its next event starts from empty state, counted in streamscore_stream_state_evictions_total{entity=\"card\",reason=\"cap\"}); "+
			"0 = unbounded, which lets made-up card ids exhaust memory")
	fs.IntVar(&c.MaxTerminals, "max-terminals", defaultMaxTerminals,
		"most terminal states held (with --features: of each shared entity); beyond it the terminal least recently seen in event time is evicted; 0 = unbounded")
	fs.IntVar(&c.MaxPoints, "max-points", defaultMaxPoints,
		"most events one card's or terminal's history keeps (16 bytes each); beyond it its oldest events leave its windows early, "+
			"so its window features count only the newest ones; 0 = unbounded")
	fs.IntVar(&c.MaxFieldBytes, "max-field-bytes", features.DefaultMaxFieldBytes,
		"longest string field (tx_id, card_id, terminal_id, currency, mcc, channel, country) accepted, in bytes; longer events and labels are dead-lettered (reason field_too_long)")
}

// Validate checks the bounds.
func (c *memConfig) Validate() error {
	// The ranges are features': each flag's option is checked by the
	// constructor that applies it, and the error names the flag.
	var errs []error
	for _, f := range []struct {
		flag  string
		value int
		opt   features.Option
	}{
		{"--max-cards", c.MaxCards, features.WithMaxCards(c.MaxCards)},
		{"--max-terminals", c.MaxTerminals, features.WithMaxTerminals(c.MaxTerminals)},
		{"--max-points", c.MaxPoints, features.WithMaxPoints(c.MaxPoints)},
	} {
		if _, err := features.NewShared(f.opt); err != nil {
			errs = append(errs, fmt.Errorf("%s %d: %w", f.flag, f.value, err))
		}
	}
	if _, err := features.NewDecoder(features.WithMaxFieldBytes(c.MaxFieldBytes)); err != nil {
		errs = append(errs, fmt.Errorf("--max-field-bytes %d: %w", c.MaxFieldBytes, err))
	} else if c.MaxFieldBytes > maxFieldBytesFlag {
		// The command's own bound (the package has none): a field this long
		// is never an id.
		errs = append(errs, fmt.Errorf("--max-field-bytes %d above %d", c.MaxFieldBytes, maxFieldBytesFlag))
	}
	return errors.Join(errs...)
}

// maxFieldBytesFlag is the largest --max-field-bytes the command accepts.
const maxFieldBytesFlag = 1 << 20

func (c *memConfig) featureOptions() []features.Option {
	return []features.Option{features.WithMaxCards(c.MaxCards), features.WithMaxTerminals(c.MaxTerminals), features.WithMaxPoints(c.MaxPoints)}
}

func (c *memConfig) decoderOptions() []features.DecoderOption {
	return []features.DecoderOption{features.WithMaxFieldBytes(c.MaxFieldBytes)}
}

// defaultMemConfig is memConfig with the flags' defaults, for configs
// built in code (demo).
func defaultMemConfig() memConfig {
	return memConfig{MaxCards: defaultMaxCards, MaxTerminals: defaultMaxTerminals, MaxFieldBytes: features.DefaultMaxFieldBytes, MaxPoints: defaultMaxPoints}
}
