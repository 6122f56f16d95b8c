package onnx

import (
	"fmt"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/internal/importopt"
)

// Option tunes [Import].
type Option func(*config) error

type config struct {
	importopt.Config
	window int
}

func defaultConfig() config {
	return config{Config: importopt.Default()}
}

// WithVersion sets the model version written to the file (default 1). It
// must be >= 1; bump it for each import of a retrained graph so score
// records tell the versions apart.
func WithVersion(n int) Option {
	return func(c *config) error { return c.SetVersion(n) }
}

// WithWindow sets the window (transactions seen per step) of a CNN whose
// graph input has a dynamic sequence length. Default 0: take it from the
// graph's input shape. When the graph fixes the length, a different window
// is an error: the dense head was trained for that many positions.
func WithWindow(n int) Option {
	return func(c *config) error {
		if n < 1 || n > models.MaxWindow {
			return fmt.Errorf("window %d: want 1..%d", n, models.MaxWindow)
		}
		c.window = n
		return nil
	}
}

// WithThresholds sets the decision cut-offs (review <= alert, both
// finite). Default: review 0.5 and alert 0.9 for a probability; for a
// value output, both at the largest float32, i.e. the model never reviews
// or alerts until real cut-offs are given — an imported value has no
// natural scale.
func WithThresholds(review, alert float64) Option {
	return func(c *config) error { return c.SetThresholds(review, alert) }
}

// WithTraining adds free metadata to the file's training map (e.g. the
// command that imported it; a later call's keys win). Import always
// records the source graph's producer, opset and sha256; keys given here
// win.
func WithTraining(meta map[string]any) Option {
	return func(c *config) error { c.AddTraining(meta); return nil }
}
