package stream

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestIsFatalFetch(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"topic authorization", fmt.Errorf("fetch: %w", kafka.TopicAuthorizationFailed), true},
		{"sasl", kafka.SASLAuthenticationFailed, true},
		{"leader moved", kafka.NotLeaderForPartition, false},
		{"unknown topic (may be created)", kafka.UnknownTopicOrPartition, false},
		{"connection", io.ErrUnexpectedEOF, false},
		{"other", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isFatalFetch(tc.err); got != tc.want {
				t.Errorf("isFatalFetch(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestCloseWithin(t *testing.T) {
	if err := closeWithin(time.Second, func() error { return nil }); err != nil {
		t.Errorf("quick close: %v", err)
	}
	boom := errors.New("boom")
	if err := closeWithin(time.Second, func() error { return boom }); !errors.Is(err, boom) {
		t.Errorf("failing close: %v", err)
	}
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	err := closeWithin(50*time.Millisecond, func() error { <-release; return nil })
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("hanging close: %v after %v, want an error after 50ms", err, time.Since(start))
	}
}

// TestLabelReaderReport: the labels reader is reported failing while any
// of its partitions fails, and back once all fetch again.
func TestLabelReaderReport(t *testing.T) {
	var got []string
	p := &Pipeline{}
	p.cfg.connObserve = func(reader string, err error) {
		got = append(got, fmt.Sprintf("%s:%v", reader, err != nil))
	}
	lc := newLabelConsumer(p, nil)
	down := errors.New("down")
	lc.report(0, nil) // fine from the start: nothing said
	lc.report(0, down)
	lc.report(1, down)
	lc.report(0, nil) // partition 1 still fails
	lc.report(1, nil)
	lc.report(1, nil)
	want := []string{"kafka labels reader:true", "kafka labels reader:true", "kafka labels reader:false"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
}
