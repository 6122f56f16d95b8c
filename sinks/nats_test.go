package sinks_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/sinktest"

	"github.com/streamscore/streamscore/sinks/output"
)

// startNATS starts an embedded server on a free port; port > 0 and dir
// reuse a previous server's port and JetStream store (restart).
func startNATS(t *testing.T, jetStream bool, port int, dir string) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	if dir == "" {
		dir = t.TempDir()
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: jetStream, StoreDir: dir, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func connectB(t testing.TB, ns *server.Server, opts ...nats.Option) *nats.Conn {
	return connect(t, ns, opts...)
}

func connect(t testing.TB, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

var natsSubjects = map[output.Kind]string{output.KindScore: "out.scores", output.KindAlert: "out.alerts"}

func natsOptions(extra ...sinks.NATSOption) []sinks.NATSOption {
	opts := []sinks.NATSOption{
		sinks.WithNATSSubject(output.KindScore, natsSubjects[output.KindScore]),
		sinks.WithNATSSubject(output.KindAlert, natsSubjects[output.KindAlert]),
	}
	return append(opts, extra...)
}

func kindOfSubject(subj string) output.Kind {
	for k, s := range natsSubjects {
		if s == subj {
			return k
		}
	}
	return output.Kind(255)
}

// coreTarget: a server without JetStream and a subscriber on every subject.
func coreTarget(t *testing.T) sinktest.Target {
	ns := startNATS(t, false, 0, "")
	sub := connect(t, ns)
	ch := make(chan *nats.Msg, 10000)
	s, err := sub.ChanSubscribe("out.>", ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Unsubscribe() })
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := sinks.NewNATS(connect(t, ns), natsOptions()...); !errors.Is(err, sinks.ErrNoStream) {
		t.Fatalf("NewNATS in the default (jetstream) mode on a server without JetStream: %v, want ErrNoStream", err)
	}
	sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSMode(sinks.NATSModeCore))...)
	if err != nil {
		t.Fatalf("NewNATS: %v", err)
	}
	for k := range natsSubjects {
		if st := sink.Stream(k); st != "" {
			t.Fatalf("kind %s: stream %q on a server without JetStream", k, st)
		}
	}
	var got []sinktest.Received
	return sinktest.Target{
		Sink:   sink,
		Routed: []output.Kind{output.KindScore, output.KindAlert},
		Collect: func(t *testing.T, n int, timeout time.Duration) []sinktest.Received {
			deadline := time.After(timeout)
			for len(got) < n {
				select {
				case m := <-ch:
					got = append(got, sinktest.Received{
						Kind: kindOfSubject(m.Subject), Value: m.Data, ID: m.Header.Get(output.HeaderID),
					})
				case <-deadline:
					return got
				}
			}
			return got
		},
	}
}

// jetStreamTarget: a stream capturing every output subject, read back with
// an ordered consumer.
func jetStreamTarget(t *testing.T) sinktest.Target {
	return jetStreamBatchTarget(t, sinks.NATSBatchNone)
}

// jetStreamBatchTarget is jetStreamTarget with a stream that allows batch
// publishing and a sink that uses batch mode b.
func jetStreamBatchTarget(t *testing.T, b sinks.NATSBatch) sinktest.Target {
	ns := startNATS(t, true, 0, "")
	_, stream := createStreamWith(t, connect(t, ns), func(c *jetstream.StreamConfig) {
		c.AllowAtomicPublish, c.AllowBatchPublish = true, true
	})
	sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSBatch(b))...)
	if err != nil {
		t.Fatalf("NewNATS: %v", err)
	}
	for k := range natsSubjects {
		if st := sink.Stream(k); st != "OUT" {
			t.Fatalf("kind %s: stream %q, want OUT", k, st)
		}
		if got := sink.Batch(k); got != b {
			t.Fatalf("kind %s: batch %v, want %v", k, got, b)
		}
	}
	var got []sinktest.Received
	var cons jetstream.Consumer
	return sinktest.Target{
		Sink:   sink,
		Routed: []output.Kind{output.KindScore, output.KindAlert},
		Collect: func(t *testing.T, n int, timeout time.Duration) []sinktest.Received {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if cons == nil {
				var err error
				if cons, err = stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err != nil {
					t.Fatalf("ordered consumer: %v", err)
				}
			}
			for len(got) < n && ctx.Err() == nil {
				batch, err := cons.Fetch(n-len(got), jetstream.FetchMaxWait(min(time.Until(deadlineOf(ctx)), time.Second)))
				if err != nil {
					break
				}
				for m := range batch.Messages() {
					if m.Headers().Get(jetstream.MsgIDHeader) != m.Headers().Get(output.HeaderID) {
						t.Errorf("Nats-Msg-Id %q != %s %q", m.Headers().Get(jetstream.MsgIDHeader), output.HeaderID, m.Headers().Get(output.HeaderID))
					}
					got = append(got, sinktest.Received{
						Kind: kindOfSubject(m.Subject()), Value: m.Data(), ID: m.Headers().Get(output.HeaderID),
					})
				}
			}
			return got
		},
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func createStreamB(t testing.TB, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
}

func createStream(t *testing.T, nc *nats.Conn) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	return createStreamWith(t, nc, nil)
}

// createStreamWith creates stream OUT (file storage, 1 min duplicate
// window), its configuration changed by edit when not nil.
func createStreamWith(t *testing.T, nc *nats.Conn, edit func(*jetstream.StreamConfig)) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := jetstream.StreamConfig{
		Name: "OUT", Subjects: []string{"out.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return js, s
}

func TestNATSCoreConformance(t *testing.T)      { sinktest.Run(t, coreTarget) }
func TestNATSJetStreamConformance(t *testing.T) { sinktest.Run(t, jetStreamTarget) }
func TestNATSFastBatchConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target { return jetStreamBatchTarget(t, sinks.NATSBatchFast) })
}
func TestNATSAtomicBatchConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Target { return jetStreamBatchTarget(t, sinks.NATSBatchAtomic) })
}

func streamMsgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestNATSJetStreamDedupe(t *testing.T) {
	ns := startNATS(t, true, 0, "")
	_, stream := createStream(t, connect(t, ns))
	reg := prometheus.NewPedanticRegistry()
	sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSRegisterer(reg))...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	routed := map[output.Kind]bool{output.KindScore: true, output.KindAlert: true}
	msgs, want := sinktest.Batch("dup", 3000, routed) // more than the in-flight window
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 2 {
		if err := sink.WriteBatch(ctx, msgs); err != nil {
			t.Fatalf("WriteBatch #%d: %v", i, err)
		}
	}
	if got := streamMsgs(t, stream); got != uint64(want) {
		t.Errorf("stream holds %d messages, want %d (each ID once)", got, want)
	}
	dups := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_duplicates_total", map[string]string{"sink": "nats"})
	if dups != float64(want) {
		t.Errorf("duplicates_total = %v, want %d", dups, want)
	}
	sinktest.Lint(t, reg)
}

func TestNATSMixedRouting(t *testing.T) {
	ns := startNATS(t, true, 0, "")
	nc := connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCORES", Subjects: []string{"out.scores"}}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *nats.Msg, 100)
	sub, err := nc.ChanSubscribe("out.alerts", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := sinks.NewNATS(connect(t, ns), natsOptions()...); !errors.Is(err, sinks.ErrNoStream) || !strings.Contains(err.Error(), `"out.alerts"`) {
		t.Fatalf("NewNATS in the default (jetstream) mode with out.alerts in no stream: %v, want ErrNoStream naming it", err)
	}
	sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSMode(sinks.NATSModeAuto))...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if sink.Stream(output.KindScore) != "SCORES" || sink.Stream(output.KindAlert) != "" || sink.Stream(output.KindAudit) != "" {
		t.Fatalf("streams: score %q alert %q audit %q", sink.Stream(output.KindScore), sink.Stream(output.KindAlert), sink.Stream(output.KindAudit))
	}
	msgs := []output.Message{
		{Kind: output.KindScore, Value: []byte("s1"), ID: "s1"},
		{Kind: output.KindAlert, Value: []byte("a1"), ID: "a1"},
		{Kind: output.KindAudit, Value: []byte("x1"), ID: "x1"},
	}
	if err := sink.WriteBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "SCORES")
	if got := streamMsgs(t, s); got != 1 {
		t.Errorf("SCORES holds %d, want 1", got)
	}
	select {
	case m := <-ch:
		if string(m.Data) != "a1" || m.Header.Get(output.HeaderID) != "a1" || m.Header.Get(jetstream.MsgIDHeader) != "a1" {
			t.Errorf("alert: got %q headers %v", m.Data, m.Header)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alert not delivered")
	}
}

// TestNATSJetStreamServerRestart kills the server while a large batch is in
// flight and restarts it on the same port and store: the Fanout keeps
// retrying, the sink republishes with the same Msg-Ids, and the stream ends
// up with every message exactly once.
//
// A kill that lands after the server has taken and acked the whole batch
// (possible on a loaded machine) disturbs nothing: the run is repeated, up
// to three times, and the test fails only if none was disturbed.
func TestNATSJetStreamServerRestart(t *testing.T) {
	for _, mode := range []sinks.NATSBatch{sinks.NATSBatchNone, sinks.NATSBatchFast} {
		t.Run("batch="+mode.String(), func(t *testing.T) {
			for try := 1; ; try++ {
				if natsServerRestart(t, mode) {
					return
				}
				if try == 3 {
					t.Fatal("the restart did not disturb the batch in 3 runs: the test proves nothing")
				}
				t.Logf("run %d: the restart came after the whole batch was acked; again", try)
			}
		})
	}
}

// natsServerRestart runs TestNATSJetStreamServerRestart's scenario once and
// reports whether the restart disturbed the batch.
func natsServerRestart(t *testing.T, mode sinks.NATSBatch) bool {
	dir := t.TempDir()
	ns := startNATS(t, true, 0, dir)
	tcpPort := ns.Addr().(*net.TCPAddr).Port
	_, stream := createStreamWith(t, connect(t, ns), func(c *jetstream.StreamConfig) { c.AllowBatchPublish = true })
	nc := connect(t, ns, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1), nats.ReconnectJitter(0, 0))
	reg := prometheus.NewPedanticRegistry()
	sink, err := sinks.NewNATS(nc, natsOptions(sinks.WithNATSAckTimeout(time.Second),
		sinks.WithNATSRetries(2, 20*time.Millisecond), sinks.WithNATSRegisterer(reg), sinks.WithNATSBatch(mode))...)
	if err != nil {
		t.Fatal(err)
	}
	if got := sink.Batch(output.KindScore); got != mode {
		t.Fatalf("Batch(score) = %v, want %v", got, mode)
	}
	f, err := output.NewFanout([]output.Sink{sink}, output.WithFanoutBackoff(20*time.Millisecond, 200*time.Millisecond),
		output.WithFanoutRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	routed := map[output.Kind]bool{output.KindScore: true, output.KindAlert: true}
	msgs, want := sinktest.Batch("restart", 60000, routed) // large enough that the kill always lands mid-batch
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.WriteBatch(ctx, msgs) }()
	for streamMsgs(t, stream) == 0 { // kill the server mid-batch
		time.Sleep(time.Millisecond)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(100 * time.Millisecond)
	ns2 := startNATS(t, true, tcpPort, dir)
	if err := <-done; err != nil {
		t.Fatalf("WriteBatch across a restart: %v", err)
	}
	js, err := jetstream.New(connect(t, ns2))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "OUT")
	if err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, s); got != uint64(want) {
		t.Errorf("stream holds %d messages, want %d", got, want)
	}
	sink1 := map[string]string{"sink": "nats"}
	ackErrs := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_ack_errors_total", sink1)
	republished := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_republishes_total", sink1)
	attempts := sinktest.MetricValue(t, reg, "streamscore_sinks_publish_seconds", sink1)
	fallbacks := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_batch_fallbacks_total", sink1)
	t.Logf("ack errors %v, republished %v, batch fallbacks %v, fanout attempts %v, duplicates %v", ackErrs, republished, fallbacks, attempts,
		sinktest.MetricValue(t, reg, "streamscore_sinks_nats_duplicates_total", sink1))
	disturbed := ackErrs > 0 || attempts > 1 || fallbacks > 0
	if acked := sinktest.MetricValue(t, reg, "streamscore_sinks_messages_total", map[string]string{"sink": "nats", "kind": "score"}); acked != float64(want/2) {
		t.Errorf("messages_total{kind=score} = %v, want %d", acked, want/2)
	}
	sinktest.Lint(t, reg)
	return disturbed
}

func TestNATSOptions(t *testing.T) {
	ns := startNATS(t, false, 0, "")
	nc := connect(t, ns)
	tests := []struct {
		name string
		opt  sinks.NATSOption
	}{
		{"wildcard subject", sinks.WithNATSSubject(output.KindScore, "out.*")},
		{"empty subject", sinks.WithNATSSubject(output.KindScore, "")},
		{"unknown kind", sinks.WithNATSSubject(output.Kind(9), "x")},
		{"window too large", sinks.WithNATSMaxInFlight(4000)},
		{"zero timeout", sinks.WithNATSAckTimeout(0)},
		{"empty name", sinks.WithNATSName("")},
		{"unknown mode", sinks.WithNATSMode(sinks.NATSMode(7))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sinks.NewNATS(nc, tc.opt); err == nil {
				t.Error("got nil error")
			}
		})
	}
	if _, err := sinks.NewNATS(nil); err == nil {
		t.Error("nil conn: got nil error")
	}
}

func TestNATSClosedConnection(t *testing.T) {
	ns := startNATS(t, false, 0, "")
	nc := connect(t, ns)
	sink, err := sinks.NewNATS(nc, natsOptions(sinks.WithNATSMode(sinks.NATSModeCore))...)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	err = sink.WriteBatch(context.Background(), []output.Message{{Kind: output.KindScore, Value: []byte("x"), ID: "x"}})
	var be *output.BatchError
	if !errors.As(err, &be) || be.Failed(0) == nil || !errors.Is(err, nats.ErrConnectionClosed) || sinks.IsRetryable(err) {
		t.Errorf("got %v (retryable %v), want a non-retryable BatchError for index 0", err, sinks.IsRetryable(err))
	}
}

// TestNATSBatchPublish: with a stream that allows it, a WriteBatch goes out
// as batches (no fallback), every message stored once; the same batch again
// (a replay) stores nothing new and still succeeds; a stream that does not
// allow the mode gets one PubAck per message.
func TestNATSBatchPublish(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      sinks.NATSBatch
		fallbacks float64 // a fast batch skips replayed IDs; an atomic one fails on the replay and on the mixed write
	}{
		{"fast", sinks.NATSBatchFast, 0},
		{"atomic", sinks.NATSBatchAtomic, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t, true, 0, "")
			_, stream := createStreamWith(t, connect(t, ns), func(c *jetstream.StreamConfig) {
				c.AllowAtomicPublish, c.AllowBatchPublish = true, true
			})
			reg := prometheus.NewPedanticRegistry()
			sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSBatch(tc.mode), sinks.WithNATSRegisterer(reg),
				sinks.WithNATSAckTimeout(time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			if got := sink.Batch(output.KindScore); got != tc.mode {
				t.Fatalf("Batch(score) = %v, want %v", got, tc.mode)
			}
			routed := map[output.Kind]bool{output.KindScore: true, output.KindAlert: true}
			msgs, want := sinktest.Batch("b", 2600, routed) // 1300 routed: two atomic batches
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := sink.WriteBatch(ctx, msgs); err != nil {
				t.Fatalf("WriteBatch: %v", err)
			}
			if got := streamMsgs(t, stream); got != uint64(want) {
				t.Fatalf("stream holds %d messages, want %d", got, want)
			}
			fb := map[string]string{"sink": "nats"}
			if got := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_batch_fallbacks_total", fb); got != 0 {
				t.Fatalf("batch_fallbacks_total = %v after a first write, want 0", got)
			}
			if err := sink.WriteBatch(ctx, msgs); err != nil {
				t.Fatalf("WriteBatch (replay): %v", err)
			}
			if got := streamMsgs(t, stream); got != uint64(want) {
				t.Errorf("stream holds %d messages after a replay, want %d (each ID once)", got, want)
			}
			// Half replayed, half new: every new one stored once.
			more, _ := sinktest.Batch("c", 400, routed)
			mixed := append(msgs[:400:400], more...)
			if err := sink.WriteBatch(ctx, mixed); err != nil {
				t.Fatalf("WriteBatch (mixed): %v", err)
			}
			if got := streamMsgs(t, stream); got != uint64(want+200) {
				t.Errorf("stream holds %d messages after a mixed replay, want %d", got, want+200)
			}
			if got := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_batch_fallbacks_total", fb); got != tc.fallbacks {
				t.Errorf("%v batches fell back to one PubAck per message, want %v", got, tc.fallbacks)
			}
			sinktest.Lint(t, reg)
		})
	}
	t.Run("two-streams", func(t *testing.T) { // one fast batch per stream, concurrently
		ns := startNATS(t, true, 0, "")
		js, err := jetstream.New(connect(t, ns))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		streams := map[output.Kind]jetstream.Stream{}
		for k, name := range map[output.Kind]string{output.KindScore: "S", output.KindAlert: "A"} {
			st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{natsSubjects[k]},
				Storage: jetstream.MemoryStorage, Duplicates: time.Minute, AllowBatchPublish: true})
			if err != nil {
				t.Fatal(err)
			}
			streams[k] = st
		}
		reg := prometheus.NewPedanticRegistry()
		sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSRegisterer(reg))...)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		for k := range streams {
			if sink.Batch(k) != sinks.NATSBatchFast {
				t.Fatalf("Batch(%s) = %v, want fast (the default)", k, sink.Batch(k))
			}
		}
		msgs, _ := sinktest.Batch("two", 1000, map[output.Kind]bool{output.KindScore: true, output.KindAlert: true})
		for range 2 { // the second time, all duplicates
			if err := sink.WriteBatch(ctx, msgs); err != nil {
				t.Fatal(err)
			}
		}
		for k, st := range streams {
			want := 0
			for _, m := range msgs {
				if m.Kind == k {
					want++
				}
			}
			if got := streamMsgs(t, st); got != uint64(want) {
				t.Errorf("stream of %s holds %d, want %d", k, got, want)
			}
		}
		if got := sinktest.MetricValue(t, reg, "streamscore_sinks_nats_batch_fallbacks_total", map[string]string{"sink": "nats"}); got != 0 {
			t.Errorf("batch_fallbacks_total = %v, want 0", got)
		}
	})
	t.Run("not-allowed", func(t *testing.T) {
		ns := startNATS(t, true, 0, "")
		_, stream := createStream(t, connect(t, ns))
		sink, err := sinks.NewNATS(connect(t, ns), natsOptions(sinks.WithNATSBatch(sinks.NATSBatchFast))...)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		if got := sink.Batch(output.KindScore); got != sinks.NATSBatchNone {
			t.Fatalf("Batch(score) = %v on a stream without allow_batched, want none", got)
		}
		msgs, want := sinktest.Batch("n", 100, map[output.Kind]bool{output.KindScore: true, output.KindAlert: true})
		if err := sink.WriteBatch(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
		if got := streamMsgs(t, stream); got != uint64(want) {
			t.Errorf("stream holds %d, want %d", got, want)
		}
	})
}

func TestParseNATSBatch(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sinks.NATSBatch
		err  bool
	}{
		{"none", sinks.NATSBatchNone, false},
		{"fast", sinks.NATSBatchFast, false},
		{"atomic", sinks.NATSBatchAtomic, false},
		{"Fast", 0, true},
		{"", 0, true},
	} {
		got, err := sinks.ParseNATSBatch(tc.in)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("ParseNATSBatch(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}
