package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/streamscore/streamscore/models"
)

// ErrData is wrapped by the errors about unusable training data.
var ErrData = errors.New("train: unusable data")

// Dataset is a training or evaluation set: Rows() rows of len(Names)
// float32 features, row-major in X, and one target per row in Y. Rows
// should be in event-time order: the held-out validation rows are the tail.
type Dataset struct {
	Names []string  // feature names, one per column (features.Names())
	X     []float32 // Rows() × len(Names)
	Y     []float32 // 0/1 (fraud) for Logistic and MLP, a value for Linear
}

// Rows returns the number of rows.
func (d *Dataset) Rows() int { return len(d.Y) }

// Append adds one row (len(row) must be len(d.Names)) with target y.
func (d *Dataset) Append(row []float32, y float32) {
	d.X = append(d.X, row[:len(d.Names)]...)
	d.Y = append(d.Y, y)
}

func (d *Dataset) check(binary bool) error {
	w := len(d.Names)
	if w == 0 {
		return fmt.Errorf("check dataset: no feature names: %w", ErrData)
	}
	if len(d.X) != len(d.Y)*w {
		return fmt.Errorf("check dataset: len(X) %d != rows %d × features %d: %w", len(d.X), len(d.Y), w, ErrData)
	}
	for i, v := range d.X {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("check dataset: row %d feature %s is %v: %w", i/w, d.Names[i%w], v, ErrData)
		}
	}
	for i, y := range d.Y {
		if binary && y != 0 && y != 1 {
			return fmt.Errorf("check dataset: row %d target %v, want 0 or 1: %w", i, y, ErrData)
		}
		if math.IsNaN(float64(y)) || math.IsInf(float64(y), 0) {
			return fmt.Errorf("check dataset: row %d target %v: %w", i, y, ErrData)
		}
	}
	return nil
}

// split returns the number of training rows (the head); the rest is the
// held-out tail.
func split(d *Dataset, c *config) (int, error) {
	n := d.Rows()
	nv := int(math.Round(float64(n) * c.holdout))
	if nv < c.minValidRows || n-nv < 2 {
		return 0, fmt.Errorf("split dataset: %d rows are too few for a %.0f%% hold-out: %w", n, c.holdout*100, ErrData)
	}
	return n - nv, nil
}

// standardize returns the inputs named names with the mean and std of the
// rows of x (row-major, len(names) columns) for which keep(r) is true, or of
// every row if keep is nil. A constant column gets std 1.
func standardize(names []string, x []float32, keep func(r int) bool) []models.Input {
	w := len(names)
	sum := make([]float64, w)
	sq := make([]float64, w)
	rows := func(yield func(row []float32) bool) {
		for r := 0; (r+1)*w <= len(x); r++ {
			if (keep == nil || keep(r)) && !yield(x[r*w:(r+1)*w]) {
				return
			}
		}
	}
	n := 0
	for row := range rows {
		n++
		for j, v := range row {
			sum[j] += float64(v)
		}
	}
	in := make([]models.Input, w)
	for j := range in {
		in[j] = models.Input{Name: names[j], Mean: sum[j] / float64(n)}
	}
	for row := range rows {
		for j, v := range row {
			dv := float64(v) - in[j].Mean
			sq[j] += dv * dv
		}
	}
	for j := range in {
		s := math.Sqrt(sq[j] / float64(n))
		if !(s > 1e-12) || float32(s) == 0 {
			s = 1
		}
		// Round to float32 so training sees exactly what scoring will.
		in[j].Mean = float64(float32(in[j].Mean))
		in[j].Std = float64(float32(s))
	}
	return in
}

// zRows returns rows [from, to) of d standardised, float64, row-major, with
// a trailing 1 per row if intercept.
func zRows(d *Dataset, in []models.Input, from, to int, intercept bool) []float64 {
	w := len(d.Names)
	stride := w
	if intercept {
		stride++
	}
	z := make([]float64, (to-from)*stride)
	for r := from; r < to; r++ {
		dst := z[(r-from)*stride:]
		for j, v := range d.X[r*w : (r+1)*w] {
			// Same float32 arithmetic as models.Scorer.
			dst[j] = float64((v - float32(in[j].Mean)) * float32(1/in[j].Std))
		}
		if intercept {
			dst[w] = 1
		}
	}
	return z
}

func countPositives(y []float32) int {
	n := 0
	for _, v := range y {
		if v > 0.5 {
			n++
		}
	}
	return n
}
