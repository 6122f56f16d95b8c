package features

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestNewReturnsOptionErrors: the New* constructors return an error for an
// invalid option (never a panic) and accept the valid ones.
func TestNewReturnsOptionErrors(t *testing.T) {
	other := DefaultSpec() // with one window changed: not the default
	i := slices.Index(other.Names(), "card_amount_sum_1h")
	if i < 0 {
		t.Fatal("no card_amount_sum_1h")
	}
	other.Features[i].Window = Duration(24 * time.Hour)
	tests := []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"defaults", nil, true},
		{"ttl", []Option{WithTTL(48 * time.Hour)}, true},
		{"negative ttl", []Option{WithTTL(-1)}, false},
		{"stripes", []Option{WithStripes(3)}, false},
		{"spec", []Option{WithSpec(other)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewShared(tc.opts...)
			if tc.ok != (err == nil) || tc.ok != (s != nil) {
				t.Fatalf("NewShared: got %v, %v; want ok %v", s, err, tc.ok)
			}
			b, err := NewBuilder(nil, tc.opts...)
			if tc.ok != (err == nil) || tc.ok != (b != nil) {
				t.Fatalf("NewBuilder: got %v, %v; want ok %v", b, err, tc.ok)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidOption) {
				t.Errorf("got %v, want it to wrap ErrInvalidOption", err)
			}
		})
	}
	t.Run("spec differs from the Shared's", func(t *testing.T) {
		_, err := NewBuilder(MustShared(), WithSpec(other))
		if !errors.Is(err, ErrInvalidOption) {
			t.Fatalf("got %v, want ErrInvalidOption", err)
		}
	})
	t.Run("decoder", func(t *testing.T) {
		if d, err := NewDecoder(WithMaxFieldBytes(-1)); err == nil || d != nil {
			t.Fatalf("got %v, %v; want an error", d, err)
		}
		if d, err := NewDecoder(WithMaxFutureSkew(-1)); err != nil || d == nil {
			t.Fatalf("got %v, %v; want a decoder", d, err)
		}
	})
}
