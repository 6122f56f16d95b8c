package synth

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrInvalidConfig is returned (wrapped) by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("synth: invalid config")

// Scenario names, the Scenario of a fraudulent Tx. Genuine transactions have
// the empty scenario.
const (
	ScenarioCompromisedTerminal = "compromised_terminal"
	ScenarioAccountTakeover     = "account_takeover"
	ScenarioCardTesting         = "card_testing"
	ScenarioMerchantCollusion   = "merchant_collusion"
)

// Scenarios returns the fraud scenario names in a stable order.
func Scenarios() []string {
	return []string{ScenarioCompromisedTerminal, ScenarioAccountTakeover, ScenarioCardTesting, ScenarioMerchantCollusion}
}

// Default values of a zero Config.
const (
	DefaultCards            = 10000
	DefaultTerminals        = 2000
	DefaultFraudRate        = 0.0075
	DefaultLabelDelay       = 7 * 24 * time.Hour
	DefaultGenuineLabelRate = 0.02
	DefaultTxIDPrefix       = "t-"
)

// Mix is the share of fraudulent transactions each scenario produces. The
// shares are relative (they need not sum to 1); a zero Mix is DefaultMix().
type Mix struct {
	CompromisedTerminal, AccountTakeover, CardTesting, MerchantCollusion float64
}

// DefaultMix returns the scenario mix of a zero Config: 30% compromised
// terminal, 30% account takeover, 25% card testing, 15% merchant collusion.
func DefaultMix() Mix {
	return Mix{CompromisedTerminal: 0.3, AccountTakeover: 0.3, CardTesting: 0.25, MerchantCollusion: 0.15}
}

// Config describes a synthetic population. Zero fields take the defaults.
type Config struct {
	// Seed makes the generator deterministic: the same Config and the same
	// sequence of Next times give the same transactions.
	Seed int64
	// Cards and Terminals size the population (defaults 10,000 and 2,000;
	// at least 1 card and 20 terminals). Population build cost is linear:
	// about a second per million cards.
	Cards, Terminals int
	// FraudRate is the fraction of transactions that are fraudulent (default
	// 0.0075; at most 0.2; negative: no fraud). The rate is reached once the
	// first episodes play out, a few hours to days of event time into a run:
	// every episode plans its transactions ahead, and those planned beyond
	// the end of a run are never emitted.
	FraudRate float64
	// Mix splits FraudRate among the scenarios (zero: DefaultMix()). A
	// scenario with share 0 never runs.
	Mix Mix
	// LabelDelay is the mean delay between a transaction and its label
	// (chargeback or confirmation); each label's delay is log-normal around
	// it (σ = 0.6). Default 7 days; a demo over Kafka wants seconds.
	LabelDelay time.Duration
	// GenuineLabelRate is the fraction of genuine transactions that get a
	// fraud:false label (default 0.02; negative: none; at most 1).
	GenuineLabelRate float64
	// TxIDPrefix prefixes the transaction sequence number in TxID (default
	// "t-"). Give each run its own prefix when runs share a topic.
	TxIDPrefix string
}

func (c Config) withDefaults() (Config, error) {
	if c.Cards == 0 {
		c.Cards = DefaultCards
	}
	if c.Terminals == 0 {
		c.Terminals = DefaultTerminals
	}
	switch {
	case c.FraudRate == 0:
		c.FraudRate = DefaultFraudRate
	case c.FraudRate < 0:
		c.FraudRate = 0
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix()
	}
	if c.LabelDelay == 0 {
		c.LabelDelay = DefaultLabelDelay
	}
	switch {
	case c.GenuineLabelRate == 0:
		c.GenuineLabelRate = DefaultGenuineLabelRate
	case c.GenuineLabelRate < 0:
		c.GenuineLabelRate = 0
	}
	if c.TxIDPrefix == "" {
		c.TxIDPrefix = DefaultTxIDPrefix
	}
	switch {
	case c.Cards < 1:
		return c, fmt.Errorf("%w: cards %d < 1", ErrInvalidConfig, c.Cards)
	case c.Terminals < 20:
		return c, fmt.Errorf("%w: terminals %d < 20", ErrInvalidConfig, c.Terminals)
	case c.Cards > 50_000_000 || c.Terminals > 10_000_000:
		return c, fmt.Errorf("%w: population too large (%d cards, %d terminals)", ErrInvalidConfig, c.Cards, c.Terminals)
	case math.IsNaN(c.FraudRate) || c.FraudRate > 0.2:
		return c, fmt.Errorf("%w: fraud rate %v not in [0, 0.2]", ErrInvalidConfig, c.FraudRate)
	case math.IsNaN(c.GenuineLabelRate) || c.GenuineLabelRate > 1:
		return c, fmt.Errorf("%w: genuine label rate %v not in [0, 1]", ErrInvalidConfig, c.GenuineLabelRate)
	case c.LabelDelay < 0:
		return c, fmt.Errorf("%w: label delay %v < 0", ErrInvalidConfig, c.LabelDelay)
	}
	m := c.Mix
	for _, v := range []float64{m.CompromisedTerminal, m.AccountTakeover, m.CardTesting, m.MerchantCollusion} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return c, fmt.Errorf("%w: mix share %v < 0", ErrInvalidConfig, v)
		}
	}
	return c, nil
}
