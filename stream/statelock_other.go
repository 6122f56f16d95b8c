//go:build !unix

package stream

import (
	"fmt"
	"os"
)

// lockStateDir creates dir if needed. Without flock (non-Unix systems) it
// cannot keep a second process out: give each process its own directory.
func lockStateDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("stream: state directory: %w", err)
	}
	return func() {}, nil
}
