package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/streamscore/streamscore/models"
)

// Option configures a trainer. Options that do not apply to a family (for
// example WithHidden for Logistic) are ignored.
type Option func(*config) error

type config struct {
	seed         int64
	holdout      float64
	l2           float64
	l2Set        bool
	hidden       []int
	epochs       int
	batch        int
	lr           float64
	patience     int
	classWeight  float64
	reviewQ      float64
	alertQ       float64
	progress     func(done, total int)
	metadata     map[string]any
	maxIter      int
	minValidRows int
	link         string // Linear: LinkIdentity or LinkLog

	// Set flags: sequence families have their own defaults for these.
	hiddenSet, epochsSet, batchSet, lrSet, patienceSet bool

	// GBDT.
	trees          int
	maxDepth       int
	maxLeaves      int
	minChildWeight float64
	subsample      float64
	colsample      float64

	// Sequence families (CNN, GRU, LSTM).
	chunk      int    // rows per sequence chunk (truncated BPTT length)
	window     int    // CNN window
	kernel     int    // CNN kernel
	channels   int    // CNN channels
	pool       string // CNN pooling
	poolSize   int    // 0 = global (window-kernel+1)
	poolStride int
}

func defaultConfig() config {
	return config{
		seed:         1,
		holdout:      0.2,
		hidden:       []int{32, 16},
		epochs:       40,
		batch:        256,
		lr:           1e-3,
		patience:     4,
		reviewQ:      0.95,
		alertQ:       0.99,
		maxIter:      30,
		minValidRows: 10,
		link:         LinkIdentity,
		chunk:        32,
		window:       8,
		kernel:       3,
		channels:     16,
		pool:         models.PoolMax,
		poolSize:     1,
		poolStride:   1,

		trees:          defaultTrees,
		maxDepth:       defaultMaxDepth,
		minChildWeight: defaultMinChildWeight,
		subsample:      defaultSubsample,
		colsample:      defaultColsample,
	}
}

func newConfig(opts []Option) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// WithSeed sets the seed of every random choice (initial weights, mini-batch
// order). Default 1. Training is deterministic for a given seed, data and
// options: same bytes out.
func WithSeed(seed int64) Option {
	return func(c *config) error { c.seed = seed; return nil }
}

// WithHoldout sets the fraction of rows, taken from the END of the dataset
// (the latest rows when rows are in time order), held out for early
// stopping, threshold selection and the validation metrics recorded in the
// model. Default 0.2; must be in (0, 0.9]. The trap: rows not in time order
// make the held-out tail a random sample and the validation optimistic.
func WithHoldout(frac float64) Option {
	return func(c *config) error {
		if !(frac > 0 && frac <= 0.9) {
			return fmt.Errorf("train: holdout %v outside (0, 0.9]", frac)
		}
		c.holdout = frac
		return nil
	}
}

// WithL2 sets the L2 penalty on weights (never on biases), per row, in
// standardised units. Defaults: Logistic 1e-4, Linear 1e-4, MLP, CNN, GRU
// and LSTM 1e-5. For GBDT it is lambda, the L2 penalty on leaf values in
// the split gain and leaf weights (XGBoost's), default 1. Too large a value
// shrinks scores towards the base rate.
func WithL2(lambda float64) Option {
	return func(c *config) error {
		if !(lambda >= 0) || math.IsInf(lambda, 0) {
			return fmt.Errorf("train: l2 %v must be finite and >= 0", lambda)
		}
		c.l2, c.l2Set = lambda, true
		return nil
	}
}

// WithHidden sets the widths of the MLP's hidden ReLU layers. Default
// [32 16]. At least one layer.
//
// For GRU and LSTM the first width is the cell's hidden size H and any
// further widths are hidden ReLU layers of the dense head (default [16 8]:
// H = 16, head H→8 ReLU→1 sigmoid; [16] gives a linear head). For CNN the
// widths are the head's hidden ReLU layers (default none: head →1 sigmoid).
func WithHidden(widths ...int) Option {
	return func(c *config) error {
		if len(widths) == 0 {
			return errors.New("train: hidden: at least one layer")
		}
		for _, w := range widths {
			if w < 1 || w > 4096 {
				return fmt.Errorf("train: hidden width %d outside [1, 4096]", w)
			}
		}
		c.hidden = append([]int(nil), widths...)
		c.hiddenSet = true
		return nil
	}
}

// WithEpochs sets the maximum number of MLP epochs. Default 40; early
// stopping usually ends sooner. Sequence families (CNN, GRU, LSTM) default
// to 8: an epoch over a few million events takes several seconds, and the
// held-out loss rarely improves after that.
func WithEpochs(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("train: epochs %d must be >= 1", n)
		}
		c.epochs = n
		c.epochsSet = true
		return nil
	}
}

// WithBatchSize sets the MLP mini-batch size in rows. Default 256. For the
// sequence families it is the number of sequence chunks (see
// WithChunkLength) per mini-batch, default 32, i.e. up to 32×32 rows.
func WithBatchSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("train: batch size %d must be >= 1", n)
		}
		c.batch = n
		c.batchSet = true
		return nil
	}
}

// WithLearningRate sets Adam's step size for the MLP. Default 1e-3; 3e-3
// for the sequence families (larger mini-batches, fewer epochs). For GBDT
// it is the shrinkage of each tree's leaf values, default 0.1.
func WithLearningRate(lr float64) Option {
	return func(c *config) error {
		if !(lr > 0 && lr < 1) {
			return fmt.Errorf("train: learning rate %v outside (0, 1)", lr)
		}
		c.lr = lr
		c.lrSet = true
		return nil
	}
}

// WithPatience sets how many epochs without a better validation loss end
// MLP and sequence training (the best epoch's weights are kept). Default 4;
// 2 for the sequence families. For GBDT it counts boosting rounds, default
// 30 (the best round's trees are kept).
func WithPatience(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("train: patience %d must be >= 1", n)
		}
		c.patience = n
		c.patienceSet = true
		return nil
	}
}

// WithClassWeight sets the weight of positive rows in the MLP (and GBDT) loss. Default
// 0 = automatic, sqrt(negatives/positives). The output bias is shifted by
// −log(weight) after training, which undoes the prior shift the weight
// causes, so scores stay calibrated probabilities.
func WithClassWeight(w float64) Option {
	return func(c *config) error {
		if !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("train: class weight %v must be finite and >= 0", w)
		}
		c.classWeight = w
		return nil
	}
}

// WithValueQuantiles sets the quantiles of the validation predictions used
// as review and alert thresholds of value models (Linear). Default 0.95 and
// 0.99: about 5% of transactions go to review or above, 1% alert.
func WithValueQuantiles(review, alert float64) Option {
	return func(c *config) error {
		if !(review >= 0 && review <= alert && alert <= 1) {
			return fmt.Errorf("train: value quantiles %v, %v: want 0 <= review <= alert <= 1", review, alert)
		}
		c.reviewQ, c.alertQ = review, alert
		return nil
	}
}

// WithProgress sets a callback called after each unit of work (an epoch for
// the MLP, a Newton step for Logistic) with the units done and the maximum
// total. It runs on the training goroutine; keep it short.
func WithProgress(fn func(done, total int)) Option {
	return func(c *config) error { c.progress = fn; return nil }
}

// WithMetadata adds entries to the model's free "training" metadata (data
// range, source files, command line). Values must encode as JSON. Keys the
// trainer writes itself (rows, validation, ...) win on conflict.
func WithMetadata(md map[string]any) Option {
	return func(c *config) error {
		if c.metadata == nil {
			c.metadata = make(map[string]any, len(md))
		}
		for k, v := range md {
			c.metadata[k] = v
		}
		return nil
	}
}

// WithChunkLength sets the rows per sequence chunk of the sequence
// families, default 32: a card's history is cut into chunks of this many
// consecutive events, and a mini-batch is WithBatchSize chunks of different
// cards. For GRU and LSTM it is the truncated-BPTT length: the state is
// carried from one chunk to the next of the same card (so every row sees
// its whole history, as in the stream) but gradients stop at chunk borders,
// so dependencies longer than a chunk are learned only through the forward
// state. For CNN it only groups windows (the gradient is exact).
func WithChunkLength(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 4096 {
			return fmt.Errorf("train: chunk length %d outside [1, 4096]", n)
		}
		c.chunk = n
		return nil
	}
}

// WithWindow sets the CNN's window, the card's last transactions seen (the
// current one included). Default 8; at most models.MaxWindow. The runtime
// keeps Window-1 standardised rows per card, so memory grows with it.
func WithWindow(n int) Option {
	return func(c *config) error {
		if n < 1 || n > models.MaxWindow {
			return fmt.Errorf("train: window %d outside [1, %d]", n, models.MaxWindow)
		}
		c.window = n
		return nil
	}
}

// WithKernel sets the CNN's kernel length in time (taps). Default 3; must
// not exceed the window.
func WithKernel(n int) Option {
	return func(c *config) error {
		if n < 1 || n > models.MaxWindow {
			return fmt.Errorf("train: kernel %d outside [1, %d]", n, models.MaxWindow)
		}
		c.kernel = n
		return nil
	}
}

// WithChannels sets the CNN's output channels (ReLU). Default 16.
func WithChannels(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 1<<12 {
			return fmt.Errorf("train: channels %d outside [1, %d]", n, 1<<12)
		}
		c.channels = n
		return nil
	}
}

// WithPool sets the CNN's pooling over time: kind models.PoolMax (default)
// or models.PoolAvg, window size in conv positions (default 1: no pooling,
// the head reads channels × (window−kernel+1) values; 0 = all positions:
// global pooling, one value per channel) and stride (default 1). The trap:
// global pooling forgets which position (the current transaction or an
// older one) produced a value, which costs much accuracy on fraud data.
func WithPool(kind string, size, stride int) Option {
	return func(c *config) error {
		if kind != models.PoolMax && kind != models.PoolAvg {
			return fmt.Errorf("train: pool %q: want %q or %q", kind, models.PoolMax, models.PoolAvg)
		}
		if size < 0 || stride < 1 {
			return fmt.Errorf("train: pool size %d / stride %d: want size >= 0 (0 = global), stride >= 1", size, stride)
		}
		c.pool, c.poolSize, c.poolStride = kind, size, stride
		return nil
	}
}

func (c *config) report(done, total int) {
	if c.progress != nil {
		c.progress(done, total)
	}
}

// Links of Linear (WithLink).
const (
	LinkIdentity = "identity" // value = z·w + b (ridge regression); can go negative
	LinkLog      = "log"      // value = exp(z·w + b) (log-link regression); never negative
	// LinkProbAmount: value = sigmoid(z·w + b) × amount, a fraud
	// probability times the transaction's amount (logistic regression on
	// target > 0): an expected loss in [0, amount]. Needs the feature
	// amount_log1p.
	LinkProbAmount = "prob_amount"
)

// WithLink sets the link of Linear: LinkIdentity (default, ridge
// regression) or LinkLog (value = exp(z·w + b), for a non-negative target
// such as a loss; its targets must all be >= 0 and not all 0) or
// LinkProbAmount (value = P(fraud) × amount, for a loss that is the amount
// if fraud, else 0). The traps: the identity link fits a loss's mean well
// on average but predicts negative losses for low-risk transactions; the
// log link is unbounded above (on the shipped data it predicted more than
// the amount for 238 of 419,511 transactions, once 18 times it);
// probability × amount is bounded by the amount. The log and
// probability × amount links take at most 30 Newton steps. Other families
// ignore it.
func WithLink(link string) Option {
	return func(c *config) error {
		if link != LinkIdentity && link != LinkLog && link != LinkProbAmount {
			return fmt.Errorf("train: link %q: want %q, %q or %q", link, LinkIdentity, LinkLog, LinkProbAmount)
		}
		c.link = link
		return nil
	}
}
