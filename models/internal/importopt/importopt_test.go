package importopt

import (
	"math"
	"testing"

	"github.com/streamscore/streamscore/models"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		set     func(c *Config) error
		output  string
		want    models.Thresholds
		wantErr bool
	}{
		{"probability default", func(*Config) error { return nil }, models.OutputProbability, models.Thresholds{Review: 0.5, Alert: 0.9}, false},
		{"value default", func(*Config) error { return nil }, models.OutputValue, models.Thresholds{Review: math.MaxFloat32, Alert: math.MaxFloat32}, false},
		{"set", func(c *Config) error { return c.SetThresholds(0.2, 0.7) }, models.OutputValue, models.Thresholds{Review: 0.2, Alert: 0.7}, false},
		{"equal", func(c *Config) error { return c.SetThresholds(0.7, 0.7) }, models.OutputProbability, models.Thresholds{Review: 0.7, Alert: 0.7}, false},
		{"review above alert", func(c *Config) error { return c.SetThresholds(0.8, 0.7) }, "", models.Thresholds{}, true},
		{"nan", func(c *Config) error { return c.SetThresholds(math.NaN(), 0.7) }, "", models.Thresholds{}, true},
		{"inf", func(c *Config) error { return c.SetThresholds(0, math.Inf(1)) }, "", models.Thresholds{}, true},
		{"version 0", func(c *Config) error { return c.SetVersion(0) }, "", models.Thresholds{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			err := tc.set(&c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got := c.Thresholds(tc.output); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	c := Default()
	if c.Version != 1 {
		t.Errorf("default version %d, want 1", c.Version)
	}
	m := map[string]any{"a": 1}
	c.AddTraining(m)
	c.AddTraining(map[string]any{"a": 2, "b": 3})
	if c.Training["a"] != 2 || c.Training["b"] != 3 || m["a"] != 1 || len(m) != 1 {
		t.Errorf("training %v (caller's map %v): want later keys to win and the caller's map untouched", c.Training, m)
	}
}
