package stream

import (
	"errors"
	"fmt"
	"io"
	"testing"

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
