package sinks_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running when
// they end: every goroutine the package starts must be stopped and joined.
//
// One goroutine of nats.go's jetstream is ignored: newAsyncReply starts
// resetPendingAcksOnReconnect, which reads publisher.connStatusCh under the
// publisher's lock; when the connection closes first (cleanupReplySub sets
// it to nil), the goroutine receives from a nil channel for ever. Seen once
// under the race detector after TestNATSJetStreamServerRestart (nats.go
// v1.55.0, jetstream/publish.go:570): the library's, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	)
}
