//go:build unix

package statedir_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/stream/internal/statedir"
)

// TestLockHeld: a held directory cannot be locked again (flock is per open
// file, so this holds within one process too) until it is unlocked.
func TestLockHeld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	unlock, err := statedir.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := statedir.Lock(dir); !errors.Is(err, statedir.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock2, err := statedir.Lock(dir)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}
