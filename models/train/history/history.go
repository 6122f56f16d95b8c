package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/streamscore/streamscore/features"
)

var (
	// ErrPlan is returned (wrapped) for a plan that cannot be trained:
	// ranges out of order, no fraud function, no feature names.
	ErrPlan = errors.New("history: invalid plan")
	// ErrNoRows is returned (wrapped) when no event falls in the training
	// range.
	ErrNoRows = errors.New("history: no events in the training range")
)

// errReplayDone stops features.Replay once the events pass the end.
var errReplayDone = errors.New("history: replay done")

// progressEvery is how often (in events) Replay reports progress and
// checks its context.
const progressEvery = 4096

// Source is recorded history in memory, as the stream would consume it.
type Source struct {
	// Events in event-time order (as features.ReadEvents returns them).
	Events []features.Event
	// Labels in file order; features.Replay applies each at its
	// chargeback time.
	Labels []features.Label
	// Features are the options of the stream's feature code (spec,
	// lateness, caps); nil: the default spec and limits.
	Features []features.Option
}

// Replay replays src through the stream's feature code (features.Replay)
// up to the first event at or after end, calling fn with each event and
// its row (valid only during the call). progress, if not nil, is called
// with the events done and the total every 4,096 events and once at the
// end; ctx is checked at the same points. An error of fn or of ctx stops
// the replay and is returned wrapped.
func Replay(ctx context.Context, src Source, end time.Time, progress func(done, total int),
	fn func(e *features.Event, row []float32) error) error {
	n, total := 0, len(src.Events)
	err := features.Replay(src.Events, src.Labels, src.Features, func(e *features.Event, row []float32) error {
		if n++; n%progressEvery == 0 {
			if progress != nil {
				progress(n, total)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !e.TS.Before(end) {
			return errReplayDone
		}
		return fn(e, row)
	})
	if progress != nil {
		progress(min(n, total), total)
	}
	if err != nil && !errors.Is(err, errReplayDone) {
		return fmt.Errorf("replay history: %w", err)
	}
	return nil
}
