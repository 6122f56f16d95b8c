package checkpoint_test

import (
	"testing"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

func TestMemoryConformance(t *testing.T) {
	runConformance(t, func(t *testing.T) target {
		s := checkpoint.NewMemory()
		t.Cleanup(func() { s.Close() })
		return target{store: s, big: 3 << 20}
	})
}
