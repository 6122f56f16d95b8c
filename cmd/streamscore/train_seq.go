package main

import (
	"flag"
	"fmt"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/train"
)

// seqTrainFlags are the flags of the sequence kinds (cnn, gru, lstm) that
// train and backtest share (ignored by the other kinds).
type seqTrainFlags struct {
	window   *int
	kernel   *int
	channels *int
	pool     *string
	poolSize *int
	chunk    *int
}

func (q *seqTrainFlags) register(fs *flag.FlagSet) {
	q.window = fs.Int("window", 8, "cnn: transactions of the card seen, the current one included")
	q.kernel = fs.Int("kernel", 3, "cnn: convolution taps in time")
	q.channels = fs.Int("channels", 16, "cnn: convolution channels")
	q.pool = fs.String("pool", "max", "cnn: pooling over time, max or avg")
	q.poolSize = fs.Int("pool-size", 1, "cnn: pooling window in conv positions (1: no pooling; 0: global, one value per channel)")
	q.chunk = fs.Int("chunk", 32, "cnn/gru/lstm: rows per card chunk (gru/lstm: truncated BPTT length)")
}

// options returns the training options of kind (cnn, gru or lstm) the
// flags set; a CNN kernel wider than its window is refused.
func (q *seqTrainFlags) options(kind string) ([]train.Option, error) {
	opts := []train.Option{train.WithChunkLength(*q.chunk)}
	if kind == models.FamilyCNN {
		if *q.kernel > *q.window {
			return nil, fmt.Errorf("--kernel %d must not exceed --window %d", *q.kernel, *q.window)
		}
		opts = append(opts, train.WithWindow(*q.window), train.WithKernel(*q.kernel), train.WithChannels(*q.channels),
			train.WithPool(*q.pool, *q.poolSize, 1))
	}
	return opts, nil
}

// isSeqKind reports whether kind is a sequence family (per-card state).
func isSeqKind(kind string) bool { return train.IsSeqKind(kind) }
