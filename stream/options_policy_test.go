package stream_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// TestNewRejectsBadFeatureOptions: a feature or decoder option out of its
// range passed through WithFeatureOptions or WithDecoderOptions makes New
// return an error naming it, never panic.
func TestNewRejectsBadFeatureOptions(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opt  stream.Option
		want error
		text string
	}{
		{"ttl", stream.WithFeatureOptions(features.WithTTL(-time.Hour)), features.ErrInvalidOption, "feature options"},
		{"stripes", stream.WithFeatureOptions(features.WithStripes(3)), features.ErrInvalidOption, "feature options"},
		{"max field bytes", stream.WithDecoderOptions(features.WithMaxFieldBytes(-1)), nil, "decoder options"},
		// The aligner refuses an idle wait above the lag wait (10 s by
		// default); the pipeline ran without alignment, silently.
		{"align idle above lag", stream.WithAlignIdleWait(time.Minute), nil, "event-time alignment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p *stream.Pipeline
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("New panicked: %v", r)
					}
				}()
				p, err = stream.New([]string{"127.0.0.1:1"}, "g", "tx", ms, &captureSink{}, tc.opt,
					stream.WithRegisterer(prometheus.NewRegistry()))
			}()
			if err == nil || p != nil {
				t.Fatalf("got %v, %v; want an error", p, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want it to wrap %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("got %q, want it to say %q", err, tc.text)
			}
		})
	}
}

// TestReplayRejectsOptionsItIgnores: Replay refuses, naming them, the
// options it cannot honour offline, and accepts those it honours.
func TestReplayRejectsOptionsItIgnores(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	ev := []features.Event{{TxID: "t1", CardID: "c1", TerminalID: "p1", Amount: 10, TS: time.Unix(1.7e9, 0)}}
	n := 0
	count := func(*output.ScoreRecord) error { n++; return nil }
	replay := func(opts ...stream.Option) error {
		return stream.Replay(ev, nil, ms, ev[0].TS, ev[0].TS.Add(time.Second), count, opts...)
	}
	tests := []struct {
		name string
		opts []stream.Option
		want []string // option names in the error; nil: accepted
	}{
		{"none", nil, nil},
		{"honoured", []stream.Option{stream.WithReasons(0), stream.WithUnpinnedModels(true),
			stream.WithFeatureOptions(features.WithTTL(48 * time.Hour)), stream.WithDecisionModels(ms[0].Name())}, nil},
		{"workers", []stream.Option{stream.WithWorkers(4)}, []string{"WithWorkers"}},
		{"two", []stream.Option{stream.WithMaxBatch(8), stream.WithRegisterer(prometheus.NewRegistry()), stream.WithReasons(1)},
			[]string{"WithMaxBatch", "WithRegisterer"}},
		{"state", []stream.Option{stream.WithStateDir(t.TempDir())}, []string{"WithStateDir"}},
		{"decoder", []stream.Option{stream.WithDecoderOptions(features.WithMaxFutureSkew(-1))}, []string{"WithDecoderOptions"}},
		{"guard", []stream.Option{stream.WithAlertRateGuard(100, 3)}, []string{"WithAlertRateGuard"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n = 0
			err := replay(tc.opts...)
			if tc.want == nil {
				if err != nil || n != 1 {
					t.Fatalf("got %v and %d records, want 1 record", err, n)
				}
				return
			}
			if !errors.Is(err, stream.ErrReplayOption) {
				t.Fatalf("got %v, want ErrReplayOption", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if n != 0 {
				t.Errorf("%d records emitted before the refusal", n)
			}
		})
	}
	if err := replay(stream.WithFeatureOptions(features.WithStripes(3))); !errors.Is(err, features.ErrInvalidOption) {
		t.Errorf("Replay with a bad feature option: got %v, want features.ErrInvalidOption", err)
	}
}

func TestCheckOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []stream.Option
		ok   bool
	}{
		{"none", nil, true},
		{"in range", []stream.Option{stream.WithWorkers(8), stream.WithMaxBatch(1 << 16), stream.WithStateInterval(0)}, true},
		{"workers", []stream.Option{stream.WithWorkers(0)}, false},
		{"max delay", []stream.Option{stream.WithMaxDelay(2 * time.Minute)}, false},
		{"state interval", []stream.Option{stream.WithStateInterval(time.Millisecond)}, false},
		{"feature option", []stream.Option{stream.WithFeatureOptions(features.WithTTL(0))}, false},
		{"decoder option", []stream.Option{stream.WithDecoderOptions(features.WithMaxFieldBytes(0))}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := stream.CheckOptions(tc.opts...); (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok %v", err, tc.ok)
			}
		})
	}
}
