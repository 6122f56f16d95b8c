package importopt

import (
	"errors"
	"fmt"
	"maps"
	"math"

	"github.com/streamscore/streamscore/models"
)

// Config is the importers' shared configuration.
type Config struct {
	Version       int
	Review, Alert float64
	HasThresholds bool           // Review and Alert were set
	Training      map[string]any // free metadata for the file's training map
}

// Default returns the defaults: version 1, nothing else set.
func Default() Config { return Config{Version: 1} }

// SetVersion sets the model version; it must be >= 1.
func (c *Config) SetVersion(n int) error {
	if n < 1 {
		return fmt.Errorf("version %d: must be >= 1", n)
	}
	c.Version = n
	return nil
}

// SetThresholds sets the decision cut-offs; they must be finite, with
// review <= alert.
func (c *Config) SetThresholds(review, alert float64) error {
	if math.IsNaN(review) || math.IsNaN(alert) || math.IsInf(review, 0) || math.IsInf(alert, 0) {
		return errors.New("thresholds must be finite")
	}
	if review > alert {
		return fmt.Errorf("thresholds: review %v > alert %v", review, alert)
	}
	c.Review, c.Alert, c.HasThresholds = review, alert, true
	return nil
}

// AddTraining copies the entries of m into the training metadata (a later
// call's keys win); m itself is never kept or modified.
func (c *Config) AddTraining(m map[string]any) {
	if c.Training == nil {
		c.Training = make(map[string]any, len(m))
	}
	maps.Copy(c.Training, m)
}

// Thresholds returns the cut-offs of a file whose output is output
// (models.OutputProbability or models.OutputValue): those set, else the
// default for the output.
func (c *Config) Thresholds(output string) models.Thresholds {
	switch {
	case c.HasThresholds:
		return models.Thresholds{Review: c.Review, Alert: c.Alert}
	case output == models.OutputProbability:
		return models.Thresholds{Review: 0.5, Alert: 0.9}
	default:
		return models.Thresholds{Review: math.MaxFloat32, Alert: math.MaxFloat32}
	}
}
