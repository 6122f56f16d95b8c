package checkpoint_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running when
// they end: every goroutine the package starts must be stopped and joined.
//
// One goroutine of nats.go (v1.55.0) is ignored, as it is not ours and
// cannot be stopped: ObjectStore.Put publishes through a JetStream context
// of its own whose first async publish starts resetPendingAcksOnReconnect,
// and Put's deferred cleanupReplySub sets the channel that goroutine reads
// to nil. When Put returns before the goroutine first runs (seen under
// -race on a loaded machine), it blocks on the nil channel for good: one
// goroutine (a few KiB) per such Put. The fix belongs upstream (hand the
// channel to the goroutine as an argument).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}
