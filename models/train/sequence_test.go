package train

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/internal/modelref"
)

// randomSeqData returns nseq random sequences of F features, every row a
// training row with random 0/1 targets, prepared with roles and a random
// standardisation.
func randomSeqData(nseq, F int, seed uint64) *seqData {
	r := rand.New(rand.NewPCG(seed, 3))
	d := &SeqDataset{}
	for j := 0; j < F; j++ {
		d.Names = append(d.Names, string(rune('a'+j)))
	}
	lens := make([]int, nseq)
	total := 0
	for s := range lens {
		lens[s] = 3 + r.IntN(8)
		total += lens[s]
	}
	row := make([]float32, F)
	left := append([]int(nil), lens...)
	for total > 0 {
		s := r.IntN(nseq)
		if left[s] == 0 {
			continue
		}
		left[s]--
		total--
		for j := range row {
			row[j] = float32(r.NormFloat64()*2 + 1)
		}
		d.Append(int32(s), row, float32(r.IntN(2)), true)
	}
	sd := newSeqData(d)
	for i := range sd.role {
		sd.role[i] = roleTrain
	}
	in := make([]models.Input, F)
	for j := range in {
		in[j] = models.Input{Name: d.Names[j], Mean: 1, Std: 2}
	}
	sd.setInputs(in)
	sd.cw = 2.5
	return sd
}

// seqLossGrad returns the weighted log loss of every row of sd and, if g is
// not nil, its gradient, running each sequence in chunks of chunk rows from
// a zero state.
func seqLossGrad(p *seqParams, sd *seqData, chunk int, g []float64) float64 {
	w := newSeqWork(p.a)
	st := make([]float64, p.a.stateLen)
	for _, rows := range sd.seqs {
		clear(st)
		for ps := 0; ps < len(rows); ps += chunk {
			w.run(p, sd, rows, ps, min(ps+chunk, len(rows)), st, g != nil, nil)
		}
	}
	if g != nil {
		copy(g, w.g.flat)
	}
	return w.loss
}

func TestSeqGradient(t *testing.T) {
	tests := []struct {
		name   string
		family string
		opts   []Option
		chunk  int
	}{
		{"gru", models.FamilyGRU, []Option{WithHidden(3)}, 100},
		{"gru head", models.FamilyGRU, []Option{WithHidden(4, 3)}, 100},
		{"lstm", models.FamilyLSTM, []Option{WithHidden(3)}, 100},
		{"lstm head", models.FamilyLSTM, []Option{WithHidden(3, 2)}, 100},
		{"cnn global max", models.FamilyCNN, []Option{WithWindow(4), WithKernel(2), WithChannels(3)}, 2},
		{"cnn max pool 2", models.FamilyCNN, []Option{WithWindow(5), WithKernel(2), WithChannels(3), WithPool(models.PoolMax, 2, 1), WithHidden(3)}, 3},
		{"cnn avg pool", models.FamilyCNN, []Option{WithWindow(5), WithKernel(3), WithChannels(2), WithPool(models.PoolAvg, 2, 1)}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sd := randomSeqData(4, 3, 5)
			c, err := newConfig(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			a, err := archFromConfig(tc.family, 3, &c)
			if err != nil {
				t.Fatal(err)
			}
			p := newSeqParams(a)
			p.init(rand.New(rand.NewPCG(1, 2)))
			r := rand.New(rand.NewPCG(3, 4))
			for i := range p.flat {
				p.flat[i] += 0.3 * r.NormFloat64() // biases too, away from 0
			}
			g := make([]float64, len(p.flat))
			seqLossGrad(p, sd, tc.chunk, g)
			const eps = 1e-6
			worst := 0.0
			for i := range p.flat {
				v := p.flat[i]
				p.flat[i] = v + eps
				lp := seqLossGrad(p, sd, tc.chunk, nil)
				p.flat[i] = v - eps
				lm := seqLossGrad(p, sd, tc.chunk, nil)
				p.flat[i] = v
				num := (lp - lm) / (2 * eps)
				err := math.Abs(num-g[i]) / math.Max(1, math.Abs(num))
				worst = max(worst, err)
				if err > 1e-5 {
					t.Errorf("param %d: backprop %.8g, finite difference %.8g", i, g[i], num)
				}
			}
			t.Logf("%d params, worst relative error %.2g", len(p.flat), worst)
		})
	}
}

// refScores scores each row of d with the float64 reference of f's math
// (package modelref), card by card from a zero state.
func refScores(t *testing.T, f *models.File, d *SeqDataset) []float64 {
	t.Helper()
	ref, err := modelref.New(f)
	if err != nil {
		t.Fatal(err)
	}
	w := len(d.Names)
	states := map[int32][]float64{}
	out := make([]float64, d.Rows())
	for r := range d.Rows() {
		st, ok := states[d.Seq[r]]
		if !ok {
			st = make([]float64, ref.StateLen())
		}
		z := ref.Standardize(d.X[r*w : (r+1)*w])
		out[r], _, states[d.Seq[r]] = ref.Step(st, z)
	}
	return out
}

func TestPredictSeqMatchesReference(t *testing.T) {
	ctx := context.Background()
	train := burstData(300, 30, 1)
	tests := []struct {
		name string
		fit  func() (*models.File, error)
	}{
		{"gru", func() (*models.File, error) { return GRU(ctx, "g", 1, train, WithHidden(5, 3), WithEpochs(1)) }},
		{"lstm", func() (*models.File, error) { return LSTM(ctx, "l", 1, train, WithHidden(4), WithEpochs(1)) }},
		{"cnn", func() (*models.File, error) {
			return CNN(ctx, "c", 1, train, WithWindow(6), WithKernel(2), WithChannels(4), WithPool(models.PoolMax, 3, 2), WithEpochs(1))
		}},
		{"cnn avg", func() (*models.File, error) {
			return CNN(ctx, "c", 1, train, WithWindow(4), WithKernel(4), WithChannels(3), WithPool(models.PoolAvg, 0, 1), WithEpochs(1), WithHidden(2))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.fit()
			if err != nil {
				t.Fatal(err)
			}
			encodeParse(t, f)
			// Many short cards, and two long ones (scored in blocks).
			for _, test := range []*SeqDataset{burstData(50, 20, 9), burstData(2, 1500, 10)} {
				got, err := PredictSeq(f, test)
				if err != nil {
					t.Fatal(err)
				}
				want := refScores(t, f, test)
				for r := range want {
					if math.Abs(float64(got[r])-want[r]) > 1e-6 {
						t.Fatalf("row %d (card %d): PredictSeq %v, reference %v", r, test.Seq[r], got[r], want[r])
					}
				}
			}
		})
	}
}

// burstData returns cards×events rows of a card-testing task: an event is
// fraud when it and the card's two previous events are all small amounts
// (< 5). Features: log amount, a noise column and an hour-like column; no
// row alone tells a burst from a single small purchase. Cards interleave in
// time; the first 5 events of each card are history (not in the loss).
func burstData(cards, events int, seed uint64) *SeqDataset {
	r := rand.New(rand.NewPCG(seed, 7))
	d := &SeqDataset{Names: []string{"amount_log", "noise", "hour"}}
	small := make([]int, cards)
	n := make([]int, cards)
	for left := cards * events; left > 0; {
		s := r.IntN(cards)
		if n[s] == events {
			continue
		}
		left--
		amt := math.Exp(3 + r.NormFloat64())
		if r.Float64() < 0.3 {
			amt = 1 + 4*r.Float64()
		}
		if amt < 5 {
			small[s]++
		} else {
			small[s] = 0
		}
		var y float32
		if small[s] >= 3 {
			y = 1
		}
		d.Append(int32(s), []float32{float32(math.Log1p(amt)), float32(r.NormFloat64()), float32(r.IntN(24))}, y, n[s] >= 5)
		n[s]++
	}
	return d
}

// lossRows returns the Loss rows of d as a Dataset (for per-row models).
func lossRows(d *SeqDataset) *Dataset {
	out := &Dataset{Names: d.Names}
	w := len(d.Names)
	for r, l := range d.Loss {
		if l {
			out.Append(d.X[r*w:(r+1)*w], d.Y[r])
		}
	}
	return out
}

func TestSeqLearnsBursts(t *testing.T) {
	ctx := context.Background()
	trainSet, testSet := burstData(1500, 40, 1), burstData(500, 40, 2)
	lr, err := Logistic(ctx, "lr", 1, lossRows(trainSet))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := encodeParse(t, lr)
	lrm, err := Evaluate(m, lossRows(testSet))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("logistic: test AUC %.4f, positives %d/%d", lrm.AUC, lrm.Positives, lrm.Rows)
	// Global max pooling forgets where in the window a burst was, so it
	// cannot tell a burst ending now from an older one: it must beat the
	// logistic model, but only the CNN without pooling (the default: the
	// head sees every position) solves the task.
	tests := []struct {
		name, family string
		minAUC       float64
		fit          func() (*models.File, error)
	}{
		{"gru", "gru", 0.97, func() (*models.File, error) { return GRU(ctx, "fraud_gru", 1, trainSet) }},
		{"lstm", "lstm", 0.97, func() (*models.File, error) { return LSTM(ctx, "fraud_lstm", 1, trainSet) }},
		{"cnn", "cnn", 0.97, func() (*models.File, error) { return CNN(ctx, "fraud_cnn", 1, trainSet) }},
		{"cnn global pooling", "cnn", 0.9, func() (*models.File, error) {
			return CNN(ctx, "fraud_cnn", 1, trainSet, WithPool(models.PoolMax, 0, 1))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.fit()
			if err != nil {
				t.Fatal(err)
			}
			m, _ := encodeParse(t, f)
			if m.Family() != tc.family {
				t.Errorf("family %q", m.Family())
			}
			mt, err := EvaluateSeq(f, testSet)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: test AUC %.4f, recall@alert %.3f precision@alert %.3f; training %v", tc.name, mt.AUC, mt.RecallAtAlert, mt.PrecisionAtAlert, f.Training["validation"])
			if mt.AUC < tc.minAUC || mt.AUC < lrm.AUC+0.05 {
				t.Errorf("%s test AUC %.4f, logistic %.4f: want >= %v and a clear margin", tc.name, mt.AUC, lrm.AUC, tc.minAUC)
			}
			if tc.minAUC >= 0.97 && mt.RecallAtAlert < 0.8 {
				t.Errorf("recall at alert %.3f", mt.RecallAtAlert)
			}
		})
	}
}

func TestSeqDeterministic(t *testing.T) {
	ctx := context.Background()
	d := burstData(300, 30, 4)
	for _, family := range []string{models.FamilyGRU, models.FamilyLSTM, models.FamilyCNN} {
		t.Run(family, func(t *testing.T) {
			fit := func(seed int64, procs int) []byte {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				var f *models.File
				var err error
				opts := []Option{WithSeed(seed), WithEpochs(2), WithHidden(6)}
				switch family {
				case models.FamilyGRU:
					f, err = GRU(ctx, "x", 1, d, opts...)
				case models.FamilyLSTM:
					f, err = LSTM(ctx, "x", 1, d, opts...)
				default:
					f, err = CNN(ctx, "x", 1, d, opts...)
				}
				if err != nil {
					t.Fatal(err)
				}
				_, b := encodeParse(t, f)
				return b
			}
			a, b := fit(7, 1), fit(7, 4)
			if !bytes.Equal(a, b) {
				t.Errorf("two fits with seed 7 (1 and 4 procs) differ")
			}
			if c := fit(8, 2); bytes.Equal(a, c) {
				t.Errorf("seeds 7 and 8 give the same model")
			}
		})
	}
}

func TestSeqDataErrors(t *testing.T) {
	ctx := context.Background()
	one := burstData(20, 10, 1)
	clear(one.Y)
	ragged := burstData(20, 10, 1)
	ragged.Seq = ragged.Seq[1:]
	few := burstData(2, 6, 1)
	neg := burstData(20, 10, 1)
	neg.Seq[3] = -1
	tests := []struct {
		name string
		d    *SeqDataset
	}{
		{"one class", one},
		{"ragged", ragged},
		{"too few", few},
		{"negative sequence", neg},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := GRU(ctx, "x", 1, tc.d); !errors.Is(err, ErrData) {
				t.Errorf("got %v, want ErrData", err)
			}
		})
	}
	if _, err := CNN(ctx, "x", 1, burstData(50, 10, 1), WithWindow(3), WithKernel(4)); err == nil {
		t.Errorf("kernel > window: got nil error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LSTM(cctx, "x", 1, burstData(50, 10, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
}

func BenchmarkSeqEpoch(b *testing.B) {
	ctx := context.Background()
	d := burstData(2000, 50, 1)
	// Widen to 39 features like the default spec.
	wide := &SeqDataset{}
	for j := 0; j < 39; j++ {
		wide.Names = append(wide.Names, string(rune('A'+j)))
	}
	row := make([]float32, 39)
	for r := 0; r < d.Rows(); r++ {
		for j := range row {
			row[j] = d.X[r*3+j%3] + float32(j)
		}
		wide.Append(d.Seq[r], row, d.Y[r], d.Loss[r])
	}
	for _, family := range []string{models.FamilyGRU, models.FamilyLSTM, models.FamilyCNN} {
		b.Run(family, func(b *testing.B) {
			for b.Loop() {
				var err error
				switch family {
				case models.FamilyGRU:
					_, err = GRU(ctx, "x", 1, wide, WithEpochs(1))
				case models.FamilyLSTM:
					_, err = LSTM(ctx, "x", 1, wide, WithEpochs(1))
				default:
					_, err = CNN(ctx, "x", 1, wide, WithEpochs(1))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*wide.Rows()), "ns/row")
		})
	}
}
