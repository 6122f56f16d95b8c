package history

import (
	"fmt"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models/train"
)

// Fold is one fold of a prequential backtest: train on [TrainFrom,
// TrainTo), skip the delay (the labels of fraud not yet known), test on
// [TestFrom, TestTo).
type Fold struct {
	Index     int       `json:"fold"` // 0 is the latest
	TrainFrom time.Time `json:"train_from"`
	TrainTo   time.Time `json:"train_to"`
	TestFrom  time.Time `json:"test_from"`
	TestTo    time.Time `json:"test_to"`
}

// Folds returns the k folds whose test windows end at end: fold i tests on
// the test days ending i test windows before end, after a delay following
// the training days (the Fraud Detection Handbook's chapter 5 protocol),
// latest first. k and the training and test days must be at least 1 and
// the delay at least 0, or it returns an error wrapping ErrPlan.
func Folds(end time.Time, k, trainDays, delayDays, testDays int) ([]Fold, error) {
	if k < 1 || trainDays < 1 || delayDays < 0 || testDays < 1 {
		return nil, fmt.Errorf("%w: %d folds, %d training, %d delay and %d test days: want folds, training and test days >= 1, delay >= 0",
			ErrPlan, k, trainDays, delayDays, testDays)
	}
	day := 24 * time.Hour
	out := make([]Fold, k)
	for i := range out {
		testTo := end.Add(-time.Duration(i*testDays) * day)
		testFrom := testTo.Add(-time.Duration(testDays) * day)
		trainTo := testFrom.Add(-time.Duration(delayDays) * day)
		out[i] = Fold{Index: i, TrainFrom: trainTo.Add(-time.Duration(trainDays) * day), TrainTo: trainTo,
			TestFrom: testFrom, TestTo: testTo}
	}
	return out, nil
}

// Rows are the feature rows of a replayed history, in event-time order, with
// what a training or test set needs of each event: its time, transaction,
// card, and the card's sequence index (by first appearance), so that one
// replay serves any number of ranges and folds.
type Rows struct {
	Names  []string  // feature names, one per column
	X      []float32 // Len() × len(Names)
	TS     []time.Time
	TxID   []string
	CardID []string
	Card   []int32 // the card's sequence index (train.SeqDataset.Seq)
	cards  map[string]int32
}

// NewRows returns empty Rows of the columns names.
func NewRows(names []string) *Rows {
	return &Rows{Names: names, cards: map[string]int32{}}
}

// Append adds e with its row (the first len(Names) values are kept). The
// events must come in event-time order, as Replay gives them.
func (r *Rows) Append(e *features.Event, row []float32) {
	id, ok := r.cards[e.CardID]
	if !ok {
		id = int32(len(r.cards))
		r.cards[e.CardID] = id
	}
	r.X = append(r.X, row[:len(r.Names)]...)
	r.TS = append(r.TS, e.TS)
	r.TxID = append(r.TxID, e.TxID)
	r.CardID = append(r.CardID, e.CardID)
	r.Card = append(r.Card, id)
}

// Len returns the number of rows.
func (r *Rows) Len() int { return len(r.TS) }

// Cards returns the number of distinct cards.
func (r *Rows) Cards() int { return len(r.cards) }

// Row returns row i (not a copy).
func (r *Rows) Row(i int) []float32 {
	w := len(r.Names)
	return r.X[i*w : (i+1)*w : (i+1)*w]
}

// In reports whether row i's event time is in [from, to).
func (r *Rows) In(i int, from, to time.Time) bool {
	return !r.TS[i].Before(from) && r.TS[i].Before(to)
}

// Set returns the rows in [from, to) as a row-by-row training set, with
// target y(i) for row i.
func (r *Rows) Set(from, to time.Time, y func(i int) float32) *train.Dataset {
	d := &train.Dataset{Names: r.Names}
	for i := range r.TS {
		if r.In(i, from, to) {
			d.Append(r.Row(i), y(i))
		}
	}
	return d
}

// SeqSet returns the sequence set of the rows before to, the loss on those
// in [from, to), with target y(i) on every row i (the trainers and
// train.EvaluateSeq read it on the loss rows): each card's earlier rows warm
// its state up, as the stream's state is warmed by the card's history. The
// rows before to are a prefix (event-time order), whose X it shares; it
// returns an error if a row of the prefix is not before to.
func (r *Rows) SeqSet(from, to time.Time, y func(i int) float32) (*train.SeqDataset, error) {
	n := 0
	for n < len(r.TS) && r.TS[n].Before(to) {
		n++
	}
	for i := n; i < len(r.TS); i++ {
		if r.TS[i].Before(to) {
			return nil, fmt.Errorf("history: rows out of event-time order: row %d at %s after row %d at %s, before %s",
				i, r.TS[i].Format(time.RFC3339Nano), n, r.TS[n].Format(time.RFC3339Nano), to.Format(time.RFC3339))
		}
	}
	w := len(r.Names)
	d := &train.SeqDataset{Names: r.Names, X: r.X[: n*w : n*w], Y: make([]float32, n), Seq: r.Card[:n:n], Loss: make([]bool, n)}
	for i := range n {
		d.Y[i], d.Loss[i] = y(i), r.In(i, from, to)
	}
	return d, nil
}
