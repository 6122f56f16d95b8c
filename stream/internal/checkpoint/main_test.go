package checkpoint_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running when
// they end: every goroutine the package starts must be stopped and joined.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
