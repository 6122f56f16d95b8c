package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"github.com/streamscore/streamscore/models"
)

// SeqDataset is the training set of a sequence model (CNN, GRU, LSTM): every
// event of the sequences (cards) in event-time order, each with its
// sequence index. Rows with Loss set count in the loss (their TS is in the
// training range); the others only advance the state (history before the
// range, so the state at the start of the range is warmed up exactly as in
// the stream). Rows after the last loss row of a sequence are ignored by
// the trainers.
type SeqDataset struct {
	Names []string  // feature names, one per column
	X     []float32 // Rows() × len(Names), in event-time order over all sequences
	Y     []float32 // 0/1 fraud target (read only on Loss rows)
	Seq   []int32   // sequence (card) index of each row, >= 0
	Loss  []bool    // the row counts in the loss
}

// Rows returns the number of rows.
func (d *SeqDataset) Rows() int { return len(d.Y) }

// Append adds one row of sequence seq (len(row) must be at least
// len(d.Names)) with target y; loss tells whether it counts in the loss.
func (d *SeqDataset) Append(seq int32, row []float32, y float32, loss bool) {
	d.X = append(d.X, row[:len(d.Names)]...)
	d.Y = append(d.Y, y)
	d.Seq = append(d.Seq, seq)
	d.Loss = append(d.Loss, loss)
}

func (d *SeqDataset) check() error {
	w := len(d.Names)
	if w == 0 {
		return fmt.Errorf("check sequence dataset: no feature names: %w", ErrData)
	}
	n := len(d.Y)
	if len(d.X) != n*w || len(d.Seq) != n || len(d.Loss) != n {
		return fmt.Errorf("check sequence dataset: len(X) %d, len(Seq) %d, len(Loss) %d for %d rows × %d features: %w",
			len(d.X), len(d.Seq), len(d.Loss), n, w, ErrData)
	}
	for i, v := range d.X {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("check sequence dataset: row %d feature %s is %v: %w", i/w, d.Names[i%w], v, ErrData)
		}
	}
	for i, y := range d.Y {
		if d.Loss[i] && y != 0 && y != 1 {
			return fmt.Errorf("check sequence dataset: row %d target %v, want 0 or 1: %w", i, y, ErrData)
		}
		if d.Seq[i] < 0 {
			return fmt.Errorf("check sequence dataset: row %d sequence %d < 0: %w", i, d.Seq[i], ErrData)
		}
	}
	return nil
}

// Row roles.
const (
	roleNone  uint8 = iota // history only (or after the training range)
	roleTrain              // in the loss
	roleValid              // in the held-out tail
)

// seqData is a SeqDataset prepared for a model: its rows per sequence,
// their roles and the standardisation.
type seqData struct {
	d     *SeqDataset
	w     int       // columns of d
	cols  []int     // model input j reads column cols[j] of d
	mean  []float32 // per model input
	inv   []float32 // float32(1/std)
	seqs  [][]int32 // row indices per sequence, in order
	role  []uint8
	cw    float64 // weight of positive rows in the loss
	nt    int     // training rows (roleTrain)
	nv    int     // validation rows
	first int     // first row of the validation tail
}

// newSeqData groups the rows of d per sequence. Roles are left empty.
func newSeqData(d *SeqDataset) *seqData {
	sd := &seqData{d: d, w: len(d.Names), role: make([]uint8, d.Rows())}
	var nseq int32
	for _, s := range d.Seq {
		nseq = max(nseq, s+1)
	}
	counts := make([]int32, nseq)
	for _, s := range d.Seq {
		counts[s]++
	}
	all := make([]int32, d.Rows())
	sd.seqs = make([][]int32, nseq)
	off := 0
	for s, n := range counts {
		sd.seqs[s] = all[off : off : off+int(n)]
		off += int(n)
	}
	for r, s := range d.Seq {
		sd.seqs[s] = append(sd.seqs[s], int32(r))
	}
	sd.cols = make([]int, sd.w)
	for j := range sd.cols {
		sd.cols[j] = j
	}
	return sd
}

// splitSeq sets the roles: the loss rows are split by row order (time) into
// training rows and the held-out tail, the last c.holdout of them.
func (sd *seqData) splitSeq(c *config) error {
	d := sd.d
	n := 0
	for _, l := range d.Loss {
		if l {
			n++
		}
	}
	nv := int(math.Round(float64(n) * c.holdout))
	if nv < c.minValidRows || n-nv < 2 {
		return fmt.Errorf("split sequence dataset: %d loss rows are too few for a %.0f%% hold-out: %w", n, c.holdout*100, ErrData)
	}
	sd.nt, sd.nv = n-nv, nv
	k := 0
	sd.first = d.Rows()
	for r, l := range d.Loss {
		if !l {
			continue
		}
		if k < sd.nt {
			sd.role[r] = roleTrain
		} else {
			if k == sd.nt {
				sd.first = r
			}
			sd.role[r] = roleValid
		}
		k++
	}
	return nil
}

// setInputs sets the standardisation of the model inputs.
func (sd *seqData) setInputs(in []models.Input) {
	sd.mean = make([]float32, len(in))
	sd.inv = make([]float32, len(in))
	for j, v := range in {
		sd.mean[j] = float32(v.Mean)
		sd.inv[j] = float32(1 / v.Std)
	}
}

// zrow writes row r standardised (the float32 arithmetic of the runtime)
// into dst.
func (sd *seqData) zrow(r int32, dst []float64) {
	x := sd.d.X[int(r)*sd.w : (int(r)+1)*sd.w]
	for j, c := range sd.cols {
		dst[j] = float64((x[c] - sd.mean[j]) * sd.inv[j])
	}
}

// sw returns the loss weight of row r.
func (sd *seqData) sw(r int32) (y, sw float64) {
	if sd.d.Y[r] > 0.5 {
		return 1, sd.cw
	}
	return 0, 1
}

// seqArch is the shape of a sequence model.
type seqArch struct {
	family                    string
	in                        int // model inputs F
	hidden                    int // GRU/LSTM H
	window, kernel, channels  int // CNN
	pool                      string
	poolSize, poolStride      int
	head                      []int // dense head widths: input, hidden..., 1
	chunk                     int
	stateLen                  int // per-sequence state carried between chunks (recurrent)
	convL, poolP, convWeights int
}

// newSeqArch returns the shape of a model of family with in inputs: the
// cell's hidden size (GRU, LSTM) or the convolution cv (CNN; its weights are
// not read), then a dense head of ReLU layers of widths headHidden and one
// output.
func newSeqArch(family string, in, hidden int, cv *models.Conv, headHidden []int) *seqArch {
	a := &seqArch{family: family, in: in}
	switch family {
	case models.FamilyGRU, models.FamilyLSTM:
		a.hidden, a.stateLen = hidden, hidden
		if family == models.FamilyLSTM {
			a.stateLen = 2 * hidden
		}
		a.head = []int{hidden}
	case models.FamilyCNN:
		a.window, a.kernel, a.channels = cv.Window, cv.Kernel, cv.Channels
		a.pool, a.poolSize, a.poolStride = cv.Pool, cv.PoolSize, cv.PoolStride
		a.convL = a.window - a.kernel + 1
		a.poolP = (a.convL-a.poolSize)/a.poolStride + 1
		a.convWeights = a.kernel * in * a.channels
		a.head = []int{a.channels * a.poolP}
	}
	a.head = append(a.head, headHidden...)
	a.head = append(a.head, 1)
	return a
}

// archFromConfig returns the shape of the model of family with in inputs
// that c asks for.
func archFromConfig(family string, in int, c *config) (*seqArch, error) {
	var hidden int
	var headHidden []int
	var cv *models.Conv
	switch family {
	case models.FamilyGRU, models.FamilyLSTM:
		hid := []int{16, 8}
		if c.hiddenSet {
			hid = c.hidden
		}
		hidden, headHidden = hid[0], hid[1:]
	case models.FamilyCNN:
		if c.hiddenSet {
			headHidden = c.hidden
		}
		if c.kernel > c.window {
			return nil, fmt.Errorf("train cnn: kernel %d > window %d", c.kernel, c.window)
		}
		cv = &models.Conv{Window: c.window, Kernel: c.kernel, Channels: c.channels,
			Pool: c.pool, PoolSize: c.poolSize, PoolStride: c.poolStride}
		convL := c.window - c.kernel + 1
		if cv.PoolSize == 0 {
			cv.PoolSize = convL
		}
		if cv.PoolSize > convL {
			return nil, fmt.Errorf("train cnn: pool size %d > window-kernel+1 = %d positions", cv.PoolSize, convL)
		}
	}
	a := newSeqArch(family, in, hidden, cv, headHidden)
	a.chunk = c.chunk
	return a, nil
}

// gh returns the gate columns G·H of a recurrent cell.
func (a *seqArch) gh() int {
	if a.family == models.FamilyLSTM {
		return 4 * a.hidden
	}
	return 3 * a.hidden
}

// seqParams is a sequence model's parameters (or their gradient): one flat
// vector with named views into it.
type seqParams struct {
	a              *seqArch
	flat           []float64
	decay          []float64 // 1 on weights (L2), 0 on biases
	wx, wh, bx, bh []float64 // recurrent cell
	cw, cb         []float64 // convolution
	head           *net      // views into flat
}

func newSeqParams(a *seqArch) *seqParams {
	size := 0
	switch a.family {
	case models.FamilyGRU, models.FamilyLSTM:
		size += (a.in+a.hidden)*a.gh() + 2*a.gh()
	case models.FamilyCNN:
		size += a.convWeights + a.channels
	}
	size += netSize(a.head)
	p := &seqParams{a: a, flat: make([]float64, size), decay: make([]float64, size)}
	l := &layout{flat: p.flat, decay: p.decay}
	switch a.family {
	case models.FamilyGRU, models.FamilyLSTM:
		p.wx = l.take(a.in*a.gh(), true)
		p.wh = l.take(a.hidden*a.gh(), true)
		p.bx = l.take(a.gh(), false)
		p.bh = l.take(a.gh(), false)
	case models.FamilyCNN:
		p.cw = l.take(a.convWeights, true)
		p.cb = l.take(a.channels, false)
	}
	p.head = netIn(a.head, l)
	return p
}

// init draws the initial weights: PyTorch's U(±1/√H) for the cell (LSTM
// forget-gate bias 1), He normal for the convolution and the head.
func (p *seqParams) init(rng *rand.Rand) {
	a := p.a
	switch a.family {
	case models.FamilyGRU, models.FamilyLSTM:
		k := 1 / math.Sqrt(float64(a.hidden))
		for _, v := range [][]float64{p.wx, p.wh} {
			for i := range v {
				v[i] = (2*rng.Float64() - 1) * k
			}
		}
		if a.family == models.FamilyLSTM {
			for j := a.hidden; j < 2*a.hidden; j++ {
				p.bx[j] = 1
			}
		}
	case models.FamilyCNN:
		s := math.Sqrt(2 / float64(a.kernel*a.in))
		for i := range p.cw {
			p.cw[i] = rng.NormFloat64() * s
		}
	}
	p.head.initHe(rng)
}

// file returns the model file of p (weights rounded to float32), without
// thresholds and metadata.
func (p *seqParams) file(name string, version int, in []models.Input) *models.File {
	a := p.a
	f := &models.File{Name: name, Family: a.family, Version: version, Output: models.OutputProbability, Inputs: in}
	switch a.family {
	case models.FamilyGRU, models.FamilyLSTM:
		f.Recurrent = &models.Recurrent{Cell: a.family, Hidden: a.hidden,
			Wx: to32(p.wx), Wh: to32(p.wh), Bx: to32(p.bx), Bh: to32(p.bh)}
	case models.FamilyCNN:
		f.Conv = &models.Conv{Window: a.window, Kernel: a.kernel, Channels: a.channels, Activation: "relu",
			Weights: to32(p.cw), Bias: to32(p.cb), Pool: a.pool, PoolSize: a.poolSize, PoolStride: a.poolStride}
	}
	for l := range p.head.w {
		act := "relu"
		if l == len(p.head.w)-1 {
			act = "sigmoid"
		}
		f.Layers = append(f.Layers, models.Layer{In: a.head[l], Out: a.head[l+1], Activation: act,
			Weights: to32(p.head.w[l]), Bias: to32(p.head.b[l])})
	}
	return f
}

// paramsFromFile returns the parameters of a sequence model file, or an
// error if f is not a CNN, GRU or LSTM model this package can run (dense
// head of ReLU layers and a sigmoid output, ReLU convolution).
func paramsFromFile(f *models.File) (*seqParams, error) {
	var hidden int
	switch f.Family {
	case models.FamilyGRU, models.FamilyLSTM:
		r := f.Recurrent
		if r == nil || r.Cell != f.Family {
			return nil, fmt.Errorf("sequence model: family %s without its cell: %w", f.Family, models.ErrInvalidModel)
		}
		hidden = r.Hidden
	case models.FamilyCNN:
		if cv := f.Conv; cv == nil || cv.Activation != "relu" {
			return nil, fmt.Errorf("sequence model: cnn without a relu convolution: %w", models.ErrInvalidModel)
		}
	default:
		return nil, fmt.Errorf("sequence model: family %q is not cnn, gru or lstm: %w", f.Family, models.ErrInvalidModel)
	}
	if f.Output != models.OutputProbability || len(f.Layers) == 0 {
		return nil, fmt.Errorf("sequence model: only probability outputs: %w", models.ErrInvalidModel)
	}
	var headHidden []int
	for i, l := range f.Layers {
		want := "relu"
		if i == len(f.Layers)-1 {
			want = "sigmoid"
		} else {
			headHidden = append(headHidden, l.Out)
		}
		if l.Activation != want {
			return nil, fmt.Errorf("sequence model: head layer %d activation %q, this trainer runs %q: %w", i, l.Activation, want, models.ErrInvalidModel)
		}
	}
	// A head whose widths do not chain from the cell or convolution to one
	// output fails the parameter counts below.
	p := newSeqParams(newSeqArch(f.Family, len(f.Inputs), hidden, f.Conv, headHidden))
	set := func(dst []float64, src []float32) error {
		if len(dst) != len(src) {
			return fmt.Errorf("sequence model: %d parameters, want %d: %w", len(src), len(dst), models.ErrInvalidModel)
		}
		for i, v := range src {
			dst[i] = float64(v)
		}
		return nil
	}
	var errs []error
	if r := f.Recurrent; r != nil {
		errs = append(errs, set(p.wx, r.Wx), set(p.wh, r.Wh), set(p.bx, r.Bx), set(p.bh, r.Bh))
	}
	if cv := f.Conv; cv != nil {
		errs = append(errs, set(p.cw, cv.Weights), set(p.cb, cv.Bias))
	}
	for i, l := range f.Layers {
		errs = append(errs, set(p.head.w[i], l.Weights), set(p.head.b[i], l.Bias))
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

func to32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// seqWork is one part of a mini-batch: its scratch and gradient.
type seqWork struct {
	g          *seqParams
	loss, wsum float64
	hs         *scratch
	rec        recScratch
	cnn        cnnScratch
}

func newSeqWork(a *seqArch) *seqWork {
	w := &seqWork{g: newSeqParams(a)}
	w.hs = w.g.head.scratch()
	return w
}

// run processes positions [ps, pe) of a sequence (rows = its row indices):
// forward from state (recurrent; updated to the state after pe-1), the
// weighted log loss of its roleTrain rows into w.loss and w.wsum, their
// gradient into w.g if grad, and the logit of every row into logits if not
// nil.
func (w *seqWork) run(p *seqParams, sd *seqData, rows []int32, ps, pe int, state []float64, grad bool, logits []float64) {
	if p.a.family == models.FamilyCNN {
		// Scoring a long card runs in blocks (windows reach back into the
		// previous block's rows), bounding the scratch.
		blk := pe - ps
		if !grad {
			blk = min(blk, 1024)
		}
		for s := ps; s < pe; s += blk {
			w.cnnChunk(p, sd, rows, s, min(s+blk, pe), grad, logits)
		}
		return
	}
	w.recChunk(p, sd, rows[ps:pe], state, grad, logits)
}

// headRow runs the head on feature vector v of row r: the logit into
// logits (if not nil) and, for a training row, the loss and (if grad) the
// head gradient; it returns whether d loss/d v is in w.hs.delta[0].
func (w *seqWork) headRow(p *seqParams, sd *seqData, r int32, v []float64, grad bool, logits []float64) bool {
	if sd.role[r] != roleTrain {
		if logits != nil {
			logits[r] = p.head.forward(v, w.hs)
		}
		return false
	}
	y, sw := sd.sw(r)
	var logit float64
	if grad {
		p.head.backprop(v, y, sw, w.hs, w.g.head)
		logit = w.hs.h[len(w.hs.h)-1][0]
	} else {
		logit = p.head.forward(v, w.hs)
	}
	if logits != nil {
		logits[r] = logit
	}
	if y > 0.5 {
		w.loss += sw * softplus(-logit)
	} else {
		w.loss += sw * softplus(logit)
	}
	w.wsum += sw
	return grad
}

// chunk is positions [ps, pe) of sequence s.
type chunk struct {
	s, ps, pe int32
}

// seqFit is one training run's state.
type seqFit struct {
	c       *config
	sd      *seqData
	a       *seqArch
	p       *seqParams
	parts   []*seqWork
	workers int
	states  []float64 // per sequence, stateLen each
	last    []int32   // per sequence, 1 + position of its last training row (0: none)
	lastAll []int32   // per sequence, 1 + position of its last loss row
}

// seqParts is the fixed number of parts a mini-batch is cut into: each has
// its own gradient, summed in part order, so results do not depend on the
// number of cores.
const seqParts = 4

func newSeqFit(c *config, sd *seqData, a *seqArch, p *seqParams) *seqFit {
	ft := &seqFit{c: c, sd: sd, a: a, p: p, workers: min(runtime.GOMAXPROCS(0), seqParts)}
	for range seqParts {
		ft.parts = append(ft.parts, newSeqWork(a))
	}
	ft.states = make([]float64, len(sd.seqs)*a.stateLen)
	ft.last = make([]int32, len(sd.seqs))
	ft.lastAll = make([]int32, len(sd.seqs))
	for s, rows := range sd.seqs {
		for i, r := range rows {
			switch sd.role[r] {
			case roleTrain:
				ft.last[s] = int32(i + 1)
				ft.lastAll[s] = int32(i + 1)
			case roleValid:
				ft.lastAll[s] = int32(i + 1)
			}
		}
	}
	return ft
}

// parallel runs fn(part) for every part, on up to ft.workers goroutines,
// and waits for them.
func (ft *seqFit) parallel(n int, fn func(part int)) {
	if ft.workers <= 1 || n <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	for wk := range min(ft.workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := wk; i < n; i += ft.workers {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// batch computes the gradient of the chunks, split into seqParts parts,
// into ft.parts[0].g, and returns the weight sum.
func (ft *seqFit) batch(items []chunk) float64 {
	n := len(items)
	ft.parallel(seqParts, func(part int) {
		w := ft.parts[part]
		clear(w.g.flat)
		w.loss, w.wsum = 0, 0
		for _, it := range items[part*n/seqParts : (part+1)*n/seqParts] {
			var st []float64
			if ft.a.stateLen > 0 {
				st = ft.states[int(it.s)*ft.a.stateLen : int(it.s+1)*ft.a.stateLen]
			}
			w.run(ft.p, ft.sd, ft.sd.seqs[it.s], int(it.ps), int(it.pe), st, true, nil)
		}
	})
	g := ft.parts[0]
	for _, w := range ft.parts[1:] {
		for i, v := range w.g.flat {
			g.g.flat[i] += v
		}
		g.loss += w.loss
		g.wsum += w.wsum
	}
	return g.wsum
}

// logits runs p over every sequence with a loss row (validation rows
// included), from a zero state, and returns the logit of each row (0 for
// rows not run).
func (ft *seqFit) logits(p *seqParams) []float64 {
	out := make([]float64, ft.sd.d.Rows())
	ft.parallel(seqParts, func(part int) {
		w := ft.parts[part]
		st := make([]float64, ft.a.stateLen)
		for s := part; s < len(ft.sd.seqs); s += seqParts {
			if ft.lastAll[s] == 0 {
				continue
			}
			clear(st)
			w.run(p, ft.sd, ft.sd.seqs[s], 0, int(ft.lastAll[s]), st, false, out)
		}
	})
	return out
}

// validLogits returns the logits of the rows after each sequence's last
// training row, run from the state the epoch left (recurrent: the state
// after the sequence's last training chunk, computed with the weights of
// that moment; CNN: exact). It is the cheap early-stopping pass; the final
// thresholds come from logits, from zero states.
func (ft *seqFit) validLogits(p *seqParams) []float64 {
	out := make([]float64, ft.sd.d.Rows())
	ft.parallel(seqParts, func(part int) {
		w := ft.parts[part]
		for s := part; s < len(ft.sd.seqs); s += seqParts {
			if ft.lastAll[s] <= ft.last[s] {
				continue
			}
			var st []float64
			if ft.a.stateLen > 0 {
				st = ft.states[s*ft.a.stateLen : (s+1)*ft.a.stateLen]
			}
			w.run(p, ft.sd, ft.sd.seqs[s], int(ft.last[s]), int(ft.lastAll[s]), st, false, out)
		}
	})
	return out
}

// validLoss returns the class-weighted mean log loss of the validation rows.
func (ft *seqFit) validLoss(logits []float64) float64 {
	var sum, wsum float64
	for r := ft.sd.first; r < len(ft.sd.role); r++ {
		if ft.sd.role[r] != roleValid {
			continue
		}
		y, sw := ft.sd.sw(int32(r))
		if y > 0.5 {
			sum += sw * softplus(-logits[r])
		} else {
			sum += sw * softplus(logits[r])
		}
		wsum += sw
	}
	return sum / wsum
}

// plan returns one epoch's mini-batches. Recurrent: sequences are grouped
// by chunk count (ties in random order) into groups of c.batch, the groups
// shuffled, and round k takes chunk k of every sequence of each group in
// turn, so a sequence's chunks run in order with its state carried. CNN:
// every chunk with a training row, shuffled, c.batch per mini-batch.
func (ft *seqFit) plan(rng *rand.Rand) [][]chunk {
	T := int32(ft.a.chunk)
	B := ft.c.batch
	var out [][]chunk
	if ft.a.family == models.FamilyCNN {
		var all []chunk
		for s, rows := range ft.sd.seqs {
			for ps := int32(0); ps < ft.last[s]; ps += T {
				pe := min(ps+T, ft.last[s])
				for _, r := range rows[ps:pe] {
					if ft.sd.role[r] == roleTrain {
						all = append(all, chunk{int32(s), ps, pe})
						break
					}
				}
			}
		}
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		for i := 0; i < len(all); i += B {
			out = append(out, all[i:min(i+B, len(all))])
		}
		return out
	}
	type seqKey struct {
		s, n int32
		key  uint64
	}
	var keys []seqKey
	for s, l := range ft.last {
		if l > 0 {
			keys = append(keys, seqKey{int32(s), (l + T - 1) / T, rng.Uint64()})
		}
	}
	slices.SortFunc(keys, func(a, b seqKey) int {
		if a.n != b.n {
			return int(a.n - b.n)
		}
		if a.key < b.key {
			return -1
		}
		if a.key > b.key {
			return 1
		}
		return 0
	})
	var groups [][]seqKey
	for i := 0; i < len(keys); i += B {
		groups = append(groups, keys[i:min(i+B, len(keys))])
	}
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	maxN := int32(0)
	for _, k := range keys {
		maxN = max(maxN, k.n)
	}
	for k := int32(0); k < maxN; k++ {
		for _, g := range groups {
			var b []chunk
			for _, sk := range g {
				if k < sk.n {
					ps := k * T
					b = append(b, chunk{sk.s, ps, min(ps+T, ft.last[sk.s])})
				}
			}
			if len(b) > 0 {
				out = append(out, b)
			}
		}
	}
	return out
}

// CNN fits a 1-D convolutional model (family "cnn") on the sequences of d:
// for each loss row, the ReLU convolution (WithKernel taps, default 3;
// WithChannels channels, default 16) over the card's last WithWindow
// (default 8) standardised rows (zero rows in front of a short history),
// pooling over time (WithPool, default none: max over 1 position, so the
// head sees every conv position, channels×(window−kernel+1) = 96 inputs)
// and a dense head with a sigmoid output (WithHidden: its hidden ReLU
// layers, default none) — exactly models.Conv. Training is mini-batch Adam
// on the class-weighted log loss with early stopping on the held-out last
// WithHoldout of the loss rows (in time), as for MLP; see [GRU].
//
// Global pooling (WithPool(models.PoolMax, 0, 1)) mixes the current
// transaction with older ones: the head can no longer tell which one looked
// suspicious, and on generated data it scores below the logistic model.
func CNN(ctx context.Context, name string, version int, d *SeqDataset, opts ...Option) (*models.File, error) {
	return fitSeq(ctx, models.FamilyCNN, name, version, d, opts)
}

// GRU fits a GRU model (family "gru", PyTorch's cell; see models.Recurrent):
// the cell advances one step per row of a card from a zero state, and a
// dense head (WithHidden: hidden size, default 16, then the head's hidden
// ReLU layers, default one of 8: H→8 ReLU→1 sigmoid) reads the new hidden
// state of each loss row.
//
// Training: the rows of d before each card's last training row are cut
// into chunks of WithChunkLength (32) rows; mini-batches of WithBatchSize
// (32) chunks of different cards run Adam (WithLearningRate, 3e-3, L2 1e-5
// on weights) on the class-weighted log loss of their loss rows (positives
// weighted WithClassWeight, default sqrt(neg/pos), the output bias shifted
// back by −log(weight) afterwards), with truncated backpropagation through
// time: a card's state is carried from one chunk to the next, the gradient
// is not. The last WithHoldout (20%) of the loss rows in time order are
// held out: each epoch ends with the forward pass over all cards to get
// their loss, and training stops when it has not improved for WithPatience
// (2) epochs, or after WithEpochs (8), keeping the best epoch's weights.
// Thresholds and validation metrics come from the held-out rows, scored
// with the float32 weights of the file in float64 arithmetic.
//
// Deterministic for a seed: mini-batches are cut into a fixed number of
// parts computed on up to GOMAXPROCS goroutines (at most 4) and summed in
// order. Cancelling ctx stops the fit within 64 mini-batches.
func GRU(ctx context.Context, name string, version int, d *SeqDataset, opts ...Option) (*models.File, error) {
	return fitSeq(ctx, models.FamilyGRU, name, version, d, opts)
}

// LSTM fits an LSTM model (family "lstm", gates i, f, g, o; forget-gate
// bias initialised to 1) like [GRU].
func LSTM(ctx context.Context, name string, version int, d *SeqDataset, opts ...Option) (*models.File, error) {
	return fitSeq(ctx, models.FamilyLSTM, name, version, d, opts)
}

func fitSeq(ctx context.Context, family, name string, version int, d *SeqDataset, opts []Option) (*models.File, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if !c.l2Set {
		c.l2 = 1e-5
	}
	if !c.epochsSet {
		c.epochs = 8
	}
	if !c.batchSet {
		c.batch = 32
	}
	if !c.lrSet {
		c.lr = 3e-3
	}
	if !c.patienceSet {
		c.patience = 2
	}
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("train %s: %w", family, err)
	}
	sd := newSeqData(d)
	if err := sd.splitSeq(&c); err != nil {
		return nil, fmt.Errorf("train %s: %w", family, err)
	}
	pos := 0
	for r, role := range sd.role {
		if role == roleTrain && d.Y[r] > 0.5 {
			pos++
		}
	}
	if pos == 0 || pos == sd.nt {
		return nil, fmt.Errorf("train %s: %d positives in %d training rows, need both classes: %w", family, pos, sd.nt, ErrData)
	}
	sd.cw = c.classWeight
	if sd.cw == 0 {
		sd.cw = math.Sqrt(float64(sd.nt-pos) / float64(pos))
	}
	in := standardize(d.Names, d.X, func(r int) bool { return sd.role[r] == roleTrain })
	sd.setInputs(in)
	a, err := archFromConfig(family, len(d.Names), &c)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(c.seed), 0x5eed))
	p := newSeqParams(a)
	p.init(rng)
	base := float64(pos) / float64(sd.nt)
	p.head.b[len(p.head.b)-1][0] = math.Log(base * sd.cw / (1 - base))

	ft := newSeqFit(&c, sd, a, p)
	best := slices.Clone(p.flat)
	bestLoss, bestEpoch, epochs := math.Inf(1), 0, 0
	opt := newAdam(len(p.flat), c.lr)
	var trainLoss float64
	for epoch := 1; epoch <= c.epochs; epoch++ {
		epochs = epoch
		clear(ft.states)
		var lsum, wsum float64
		for i, b := range ft.plan(rng) {
			if i%64 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, fmt.Errorf("train %s: %w", family, err)
				}
			}
			ws := ft.batch(b)
			lsum += ft.parts[0].loss
			wsum += ws
			if ws > 0 {
				opt.step(p.flat, ft.parts[0].g.flat, p.decay, 1/ws, c.l2)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train %s: %w", family, err)
		}
		trainLoss = lsum / wsum
		loss := ft.validLoss(ft.validLogits(p))
		c.report(epoch, c.epochs)
		if loss < bestLoss-1e-6 {
			bestLoss, bestEpoch = loss, epoch
			copy(best, p.flat)
		} else if epoch-bestEpoch >= c.patience {
			break
		}
	}
	copy(p.flat, best)
	p.head.b[len(p.head.b)-1][0] -= math.Log(sd.cw)

	f := p.file(name, version, in)
	md := map[string]any{
		"l2":                    c.l2,
		"learning_rate":         c.lr,
		"batch_chunks":          c.batch,
		"chunk_length":          c.chunk,
		"epochs_run":            epochs,
		"best_epoch":            bestEpoch,
		"patience":              c.patience,
		"class_weight":          sd.cw,
		"validation_loss_wtd":   bestLoss,
		"train_loss_wtd_last":   trainLoss,
		"class_ratio":           base,
		"class_weight_bias_fix": "output bias shifted by -log(class_weight) after training",
		"head":                  a.head,
		"sequences":             len(sd.seqs),
	}
	switch family {
	case models.FamilyCNN:
		md["algorithm"] = "1-d cnn over the card's last window rows (zero rows in front), relu, pooling, dense head, mini-batch adam, early stopping"
	default:
		md["algorithm"] = family + " cell per card event (state carried from the card's first event), dense head, mini-batch adam, truncated bptt, early stopping"
		md["hidden"] = a.hidden
	}
	return finishSeq(f, ft, &c, md, pos)
}

// finishSeq finishes a sequence model with pos positives among its
// training rows (see finish): the held-out rows are scored with the file's
// own (float32) weights, each card from its first row.
func finishSeq(f *models.File, ft *seqFit, c *config, md map[string]any, pos int) (*models.File, error) {
	sd := ft.sd
	md["rows_history_only"] = sd.d.Rows() - sd.nt - sd.nv
	split := heldOut{
		rows: sd.d.Rows(), train: sd.nt, valid: sd.nv, positives: pos,
		rule: fmt.Sprintf("last %.4g%% of loss rows (time order), scored with each card's full history", c.holdout*100),
	}
	return finish(f, c, md, split, func(*models.Model) ([]float32, []float32, error) {
		p, err := paramsFromFile(f)
		if err != nil {
			return nil, nil, err
		}
		logits := ft.logits(p)
		scores := make([]float32, 0, sd.nv)
		ys := make([]float32, 0, sd.nv)
		for r := sd.first; r < len(sd.role); r++ {
			if sd.role[r] == roleValid {
				scores = append(scores, float32(sigmoid(logits[r])))
				ys = append(ys, sd.d.Y[r])
			}
		}
		return scores, ys, nil
	})
}

// PredictSeq scores every row of d with the sequence model f (family cnn,
// gru or lstm) as the stream does: each row from its card's earlier rows in
// d only (the state from a zero state at the card's first row; the CNN
// window of its last rows, zero-padded), with f's float32 weights in
// float64 arithmetic and the runtime's float32 standardisation. Columns are
// matched to f's inputs by name.
func PredictSeq(f *models.File, d *SeqDataset) ([]float32, error) {
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("predict sequence model: %w", err)
	}
	p, err := paramsFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("predict sequence model: %w", err)
	}
	sd := newSeqData(d)
	col := make(map[string]int, len(d.Names))
	for j, n := range d.Names {
		col[n] = j
	}
	if len(f.Inputs) > len(d.Names) {
		return nil, fmt.Errorf("predict sequence model: %d inputs, %d columns: %w", len(f.Inputs), len(d.Names), models.ErrMissingInput)
	}
	for j, in := range f.Inputs {
		c, ok := col[in.Name]
		if !ok {
			return nil, fmt.Errorf("predict sequence model: input %q: %w", in.Name, models.ErrMissingInput)
		}
		sd.cols[j] = c
	}
	sd.cols = sd.cols[:len(f.Inputs)]
	sd.setInputs(f.Inputs)
	ft := newSeqFit(&config{}, sd, p.a, p)
	for s, rows := range sd.seqs {
		ft.lastAll[s] = int32(len(rows))
	}
	logits := ft.logits(p)
	out := make([]float32, len(logits))
	for i, v := range logits {
		out[i] = float32(sigmoid(v))
	}
	return out, nil
}

// EvaluateSeq scores d with the sequence model f (see [PredictSeq]) and
// measures the rows with Loss set against their Y; the other rows are the
// cards' history.
func EvaluateSeq(f *models.File, d *SeqDataset) (Metrics, error) {
	scores, err := PredictSeq(f, d)
	if err != nil {
		return Metrics{}, fmt.Errorf("evaluate: %w", err)
	}
	var s, y []float32
	for r, l := range d.Loss {
		if l {
			s = append(s, scores[r])
			y = append(y, d.Y[r])
		}
	}
	return metrics(s, y, f.Thresholds.Review, f.Thresholds.Alert, true), nil
}
