package models

import (
	"fmt"

	"github.com/streamscore/streamscore/models/internal/kernel"
)

// convLayer is a FamilyCNN model's convolution, packed for the GEMM kernel
// as a (Kernel·In)×Channels matrix (one im2col row per output position).
type convLayer struct {
	window, kernel, channels int
	positions, pooled        int // L = window-kernel+1, P
	act                      kernel.Activation
	max                      bool // max pooling, else average
	poolSize, poolStride     int
	packed                   *kernel.Packed
	bias                     []float32
	w64, b64                 []float64
}

// recLayer is a FamilyGRU or FamilyLSTM model's cell. The recurrent
// weights are packed per gate (H×H each) so that each gate's activation is
// fused into its own GEMM, accumulated onto the input part.
type recLayer struct {
	lstm     bool
	hidden   int
	gates    int
	wx       *kernel.Packed   // In × G·H
	bx       []float32        // G·H
	wh       []*kernel.Packed // per gate, H × H
	bh       [][]float32      // per gate, H
	wx64     []float64        // In × G·H
	wh64     []float64        // H × G·H
	bx64     []float64
	bh64     []float64
	gateActs []kernel.Activation
}

func newConvLayer(c *Conv, in int) *convLayer {
	act, _ := parseActivation(c.Activation)
	l := c.Window - c.Kernel + 1
	cl := &convLayer{
		window: c.Window, kernel: c.Kernel, channels: c.Channels,
		positions: l, pooled: (l-c.PoolSize)/c.PoolStride + 1,
		act: act, max: c.Pool == PoolMax, poolSize: c.PoolSize, poolStride: c.PoolStride,
		packed: kernel.Pack(c.Kernel*in, c.Channels, c.Weights),
		bias:   append([]float32(nil), c.Bias...),
		w64:    f64s(c.Weights),
		b64:    f64s(c.Bias),
	}
	return cl
}

func newRecLayer(r *Recurrent, in int) *recLayer {
	h, g := r.Hidden, gates(r.Cell)
	rl := &recLayer{
		lstm: r.Cell == FamilyLSTM, hidden: h, gates: g,
		wx:   kernel.Pack(in, g*h, r.Wx),
		bx:   append([]float32(nil), r.Bx...),
		wx64: f64s(r.Wx), wh64: f64s(r.Wh), bx64: f64s(r.Bx), bh64: f64s(r.Bh),
	}
	if rl.lstm { // i, f, g, o
		rl.gateActs = []kernel.Activation{kernel.Sigmoid, kernel.Sigmoid, kernel.Tanh, kernel.Sigmoid}
	} else { // r, z; n is applied after the reset gate
		rl.gateActs = []kernel.Activation{kernel.Sigmoid, kernel.Sigmoid, kernel.Identity}
	}
	for gi := range g {
		w := make([]float32, h*h)
		for i := range h {
			copy(w[i*h:(i+1)*h], r.Wh[i*g*h+gi*h:i*g*h+(gi+1)*h])
		}
		rl.wh = append(rl.wh, kernel.Pack(h, h, w))
		rl.bh = append(rl.bh, append([]float32(nil), r.Bh[gi*h:(gi+1)*h]...))
	}
	return rl
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Sequential reports whether the model keeps per-entity state (families
// cnn, gru and lstm): score it with [Scorer.ScoreSeq].
func (m *Model) Sequential() bool { return m.conv != nil || m.rec != nil }

// StateSize returns the number of float32 values of state the model keeps
// per entity (card): (Window−1)·inputs for a CNN (the card's previous
// standardised input rows), H for a GRU, 2H for an LSTM (h then c), 0 for
// the stateless families. A new entity's state is all zeros.
func (m *Model) StateSize() int {
	switch {
	case m.conv != nil:
		return (m.conv.window - 1) * len(m.inputs)
	case m.rec != nil && m.rec.lstm:
		return 2 * m.rec.hidden
	case m.rec != nil:
		return m.rec.hidden
	}
	return 0
}

// StateShape is a string that two models share exactly when one's per-entity
// state can be carried over to the other: the family, the inputs and the
// sizes. The stream keeps state across a model reload when the shapes match
// and resets it (counted, logged) when they do not.
func (m *Model) StateShape() string {
	switch {
	case m.conv != nil:
		return fmt.Sprintf("cnn window=%d inputs=%q", m.conv.window, m.inputs)
	case m.rec != nil:
		return fmt.Sprintf("%s hidden=%d inputs=%q", m.family, m.rec.hidden, m.inputs)
	}
	return ""
}

// ScoreSeq scores rows feature rows of a sequential model (see
// [Model.Sequential]), laid out as for [Scorer.Score], where states[r] is
// the state (len [Model.StateSize]) of row r's entity, owned by the caller
// and zero for a new entity. Rows of one entity share the same state slice
// and are applied in row order; the state advances in place for every row
// unless advance is non-nil and advance[r] is false (a re-delivered event:
// scored against the state without applying it). The batch runs through
// the GEMM kernel: the input part of every gate (or the convolution) for all
// rows at once, the recurrent part once per "wave" (the k-th rows of their
// entities), the head for all rows. It also keeps each row's state before
// its step for [Scorer.Reasons] of the same batch.
//
// For a stateless model it is [Scorer.Score] (states and advance ignored).
// It panics on length misuse.
func (s *Scorer) ScoreSeq(x []float32, rows int, states [][]float32, advance []bool, out []float32) {
	s.ScoreSeqFrom(nil, x, rows, states, advance, out)
}

// ScoreSeqFrom is [Scorer.ScoreSeq] taking the standardised inputs from
// src, as [Scorer.ScoreFrom] does (same conditions, same trap). A nil src
// is ScoreSeq.
func (s *Scorer) ScoreSeqFrom(src *Scorer, x []float32, rows int, states [][]float32, advance []bool, out []float32) {
	m := s.m
	if !m.Sequential() {
		s.ScoreFrom(src, x, rows, out)
		return
	}
	if rows < 0 || len(x) < rows*s.width || len(out) < rows || len(states) < rows || (advance != nil && len(advance) < rows) {
		panic(fmt.Sprintf("models: ScoreSeq: %d rows need len(x) >= %d, len(out), len(states) (and len(advance)) >= %d, got %d, %d, %d",
			rows, rows*s.width, rows, len(x), len(out), len(states)))
	}
	ss := m.StateSize()
	for r := range rows {
		if len(states[r]) != ss {
			panic(fmt.Sprintf("models: ScoreSeq: state of row %d has %d values, model %s keeps %d", r, len(states[r]), m.ident, ss))
		}
	}
	if rows == 0 {
		return
	}
	s.inputsFrom(src, x, rows)
	s.prev = grow(s.prev, rows*ss)
	s.prevRows = rows
	var head []float32
	if m.conv != nil {
		head = s.convForward(rows, states, advance)
	} else {
		head = s.recForward(rows, states, advance)
	}
	s.runLayers(head, rows, out)
}

// adv reports whether row r applies its step to the state.
func adv(advance []bool, r int) bool { return advance == nil || advance[r] }

// convForward builds every row's window from its entity's state (im2col),
// advances the states in row order, convolves all rows in one GEMM and
// pools into the head input (rows × C·P), which it returns.
func (s *Scorer) convForward(rows int, states [][]float32, advance []bool) []float32 {
	m, c := s.m, s.m.conv
	in := len(m.inputs)
	ss := (c.window - 1) * in
	kin := c.kernel * in
	s.col = grow(s.col, rows*c.positions*kin)
	for r := range rows {
		st, cur := states[r], s.xs[r*in:(r+1)*in]
		copy(s.prev[r*ss:(r+1)*ss], st)
		for l := range c.positions {
			dst := s.col[(r*c.positions+l)*kin:]
			for k := range c.kernel {
				t := l + k // time index in the window; window-1 is the current row
				if t == c.window-1 {
					copy(dst[k*in:(k+1)*in], cur)
				} else {
					copy(dst[k*in:(k+1)*in], st[t*in:(t+1)*in])
				}
			}
		}
		if adv(advance, r) && ss > 0 {
			copy(st, st[in:])
			copy(st[ss-in:], cur)
		}
	}
	n := rows * c.positions
	s.convOut = grow(s.convOut, n*c.channels)
	kernel.Gemm(n, kin, c.channels, s.col, kin, c.packed, c.bias, c.act, s.convOut, c.channels, false)
	hw := c.channels * c.pooled
	s.headIn = grow(s.headIn, rows*hw)
	inv := 1 / float32(c.poolSize)
	for r := range rows {
		co := s.convOut[r*c.positions*c.channels:]
		hi := s.headIn[r*hw : (r+1)*hw]
		for ch := range c.channels {
			for p := range c.pooled {
				l0 := p * c.poolStride
				v := co[l0*c.channels+ch]
				for l := l0 + 1; l < l0+c.poolSize; l++ {
					if u := co[l*c.channels+ch]; c.max {
						if u > v || u != u {
							v = u
						}
					} else {
						v += u
					}
				}
				if !c.max {
					v *= inv
				}
				hi[ch*c.pooled+p] = v
			}
		}
	}
	return s.headIn
}

// recForward advances the cell one step for every row and returns the new
// hidden states (rows × H), the head's input.
func (s *Scorer) recForward(rows int, states [][]float32, advance []bool) []float32 {
	m, rc := s.m, s.m.rec
	in, h, g := len(m.inputs), rc.hidden, rc.gates
	gh := g * h
	ss := m.StateSize()
	// The input part of every gate for all rows: one GEMM.
	s.gx = grow(s.gx, rows*gh)
	kernel.Gemm(rows, in, gh, s.xs, in, rc.wx, rc.bx, kernel.Identity, s.gx, gh, false)
	s.headIn = grow(s.headIn, rows*h)

	// Waves: the k-th row of each entity goes in wave k, so that an entity's
	// later row reads the state its earlier row wrote.
	waves := 1
	s.waveOf = s.waveOf[:0]
	if rows > 1 {
		if s.wave == nil {
			s.wave = make(map[*float32]int)
		}
		clear(s.wave)
		for r := range rows {
			p := &states[r][0]
			w := s.wave[p]
			s.wave[p] = w + 1
			s.waveOf = append(s.waveOf, w)
			waves = max(waves, w+1)
		}
	}
	s.bn = grow(s.bn, rows*h)
	for w := range waves {
		// idx: the rows of wave w. With one wave (no entity twice in the
		// batch, the usual case) they are all rows in order, and the
		// states before the step (kept in s.prev for Reasons) and the
		// input part of the gates are used where they are, without a
		// gather.
		idx := s.idx[:0]
		for r := range rows {
			if waves == 1 || s.waveOf[r] == w {
				idx = append(idx, r)
			}
		}
		s.idx = idx
		nw := len(idx)
		for _, r := range idx {
			copy(s.prev[r*ss:(r+1)*ss], states[r])
		}
		hp, gb := s.prev[:rows*ss], s.gx[:rows*gh]
		if waves > 1 {
			s.hp = grow(s.hp, rows*ss)
			s.g = grow(s.g, rows*gh)
			hp, gb = s.hp[:nw*ss], s.g[:nw*gh]
			for i, r := range idx {
				copy(hp[i*ss:(i+1)*ss], s.prev[r*ss:(r+1)*ss])
				copy(gb[i*gh:(i+1)*gh], s.gx[r*gh:(r+1)*gh])
			}
		}
		// Recurrent part, gate by gate, accumulated onto the input part
		// with the gate's activation fused (h is the first H of the state).
		for gi := range g {
			if !rc.lstm && gi == 2 {
				kernel.Gemm(nw, h, h, hp, ss, rc.wh[2], rc.bh[2], kernel.Identity, s.bn, h, false)
				continue
			}
			kernel.Gemm(nw, h, h, hp, ss, rc.wh[gi], rc.bh[gi], rc.gateActs[gi], gb[gi*h:], gh, true)
		}
		if rc.lstm {
			// c' = f ⊙ c + i ⊙ g into bn, then h' = o ⊙ tanh(c').
			for i := range nw {
				gr, cp, c := gb[i*gh:(i+1)*gh], s.bn[i*h:(i+1)*h], hp[i*ss+h:(i+1)*ss]
				for j := range h {
					cp[j] = gr[h+j]*c[j] + gr[j]*gr[2*h+j]
				}
			}
			s.tc = grow(s.tc, nw*h)
			copy(s.tc, s.bn[:nw*h])
			kernel.Activate(kernel.Tanh, nw, h, s.tc, h)
			for i, r := range idx {
				gr, cp, tc := gb[i*gh:(i+1)*gh], s.bn[i*h:(i+1)*h], s.tc[i*h:(i+1)*h]
				hn := s.headIn[r*h : (r+1)*h]
				for j := range h {
					hn[j] = gr[3*h+j] * tc[j]
				}
				if adv(advance, r) {
					copy(states[r][:h], hn)
					copy(states[r][h:], cp)
				}
			}
			continue
		}
		// GRU: n = tanh(a_n + r ⊙ (h·Whn + bhn)), h' = (1−z) ⊙ n + z ⊙ h.
		for i := range nw {
			gr, bn := gb[i*gh:(i+1)*gh], s.bn[i*h:(i+1)*h]
			for j := range h {
				gr[2*h+j] += gr[j] * bn[j]
			}
		}
		kernel.Activate(kernel.Tanh, nw, h, gb[2*h:], gh)
		for i, r := range idx {
			gr, hv := gb[i*gh:(i+1)*gh], hp[i*ss:i*ss+h]
			hn := s.headIn[r*h : (r+1)*h]
			for j := range h {
				z := gr[h+j]
				hn[j] = (1-z)*gr[2*h+j] + z*hv[j]
			}
			if adv(advance, r) {
				copy(states[r], hn)
			}
		}
	}
	return s.headIn
}

// seqGrad is the float64 scratch of Reasons for the sequence families.
type seqGrad struct {
	hist, cur, y, dy, sum []float64 // CNN: L·C each
	arg                   []int     // CNN max pooling: argmax position per pooled output
	zw, a, b, da          []float64 // GRU/LSTM: G·H each (sum: summed da)
	hp                    []float64 // state, float64
	dz                    []float64 // In
}

// seqGradSum returns the sum over the igSteps midpoints alpha of
// ∂(output pre-activation)/∂z at the current input alpha·z of a sequential
// model, the entity's state before the step held at prev, in a scratch
// slice valid until the next call. What does not depend on alpha (the
// history's part of the convolution, the recurrent part of the gates) is
// computed once; the input part is linear in alpha; and because the
// gradient's last step (back through the input weights) is linear too, the
// per-step gradients are summed before it.
func (s *Scorer) seqGradSum(z []float64, prev []float32) []float64 {
	m := s.m
	in := len(m.inputs)
	if s.seq == nil {
		sg := &seqGrad{dz: make([]float64, in), hp: make([]float64, m.StateSize())}
		if c := m.conv; c != nil {
			n := c.positions * c.channels
			sg.hist, sg.cur, sg.y, sg.dy, sg.sum = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
			sg.arg = make([]int, c.channels*c.pooled)
		} else {
			gh := m.rec.gates * m.rec.hidden
			sg.zw, sg.a, sg.b, sg.da, sg.sum = make([]float64, gh), make([]float64, gh), make([]float64, gh), make([]float64, gh), make([]float64, gh)
		}
		s.seq = sg
	}
	sg := s.seq
	for i, v := range prev {
		sg.hp[i] = float64(v)
	}
	dz := sg.dz
	clear(dz)
	clear(sg.sum)
	if c := m.conv; c != nil {
		C := c.channels
		// The history's part (rows before the current one) and the current
		// row's part of every pre-activation.
		for l := range c.positions {
			for ch := range C {
				h, cu := c.b64[ch], 0.0
				for k := range c.kernel {
					t := l + k
					if t == c.window-1 {
						for i, v := range z {
							cu += v * c.w64[(k*in+i)*C+ch]
						}
						continue
					}
					for i, v := range sg.hp[t*in : (t+1)*in] {
						h += v * c.w64[(k*in+i)*C+ch]
					}
				}
				sg.hist[l*C+ch], sg.cur[l*C+ch] = h, cu
			}
		}
		head := s.acts[0]
		for st := range igSteps {
			alpha := (float64(st) + 0.5) / igSteps
			for j := range sg.y {
				sg.y[j] = act64(c.act, sg.hist[j]+alpha*sg.cur[j])
			}
			for ch := range C {
				for p := range c.pooled {
					l0 := p * c.poolStride
					if c.max {
						best := l0
						for l := l0 + 1; l < l0+c.poolSize; l++ {
							if sg.y[l*C+ch] > sg.y[best*C+ch] {
								best = l
							}
						}
						sg.arg[ch*c.pooled+p] = best
						head[ch*c.pooled+p] = sg.y[best*C+ch]
					} else {
						var sum float64
						for l := l0; l < l0+c.poolSize; l++ {
							sum += sg.y[l*C+ch]
						}
						head[ch*c.pooled+p] = sum / float64(c.poolSize)
					}
				}
			}
			gh := s.headGrad()
			clear(sg.dy)
			for ch := range C {
				for p := range c.pooled {
					g := gh[ch*c.pooled+p]
					if c.max {
						sg.dy[sg.arg[ch*c.pooled+p]*C+ch] += g
						continue
					}
					l0 := p * c.poolStride
					for l := l0; l < l0+c.poolSize; l++ {
						sg.dy[l*C+ch] += g / float64(c.poolSize)
					}
				}
			}
			for j, d := range sg.dy {
				if d != 0 {
					sg.sum[j] += d * dact64(c.act, sg.hist[j]+alpha*sg.cur[j], sg.y[j])
				}
			}
		}
		for l := range c.positions {
			k := c.window - 1 - l // tap that reads the current row
			if k < 0 || k >= c.kernel {
				continue
			}
			for ch := range C {
				d := sg.sum[l*C+ch]
				if d == 0 {
					continue
				}
				for i := range dz {
					dz[i] += d * c.w64[(k*in+i)*C+ch]
				}
			}
		}
		return dz
	}
	rc := m.rec
	h := rc.hidden
	gh := rc.gates * h
	zw, a, b, da := sg.zw, sg.a, sg.b, sg.da
	clear(zw)
	for i, v := range z {
		if v == 0 {
			continue
		}
		w := rc.wx64[i*gh : (i+1)*gh]
		for j := range zw {
			zw[j] += v * w[j]
		}
	}
	copy(b, rc.bh64)
	hp := sg.hp[:h]
	for i, v := range hp {
		if v == 0 {
			continue
		}
		w := rc.wh64[i*gh : (i+1)*gh]
		for j := range b {
			b[j] += v * w[j]
		}
	}
	head := s.acts[0][:h]
	for st := range igSteps {
		alpha := (float64(st) + 0.5) / igSteps
		for j := range a {
			a[j] = rc.bx64[j] + alpha*zw[j]
		}
		if rc.lstm {
			cp := sg.hp[h:]
			for j := range h {
				ig, fg := sigmoid64(a[j]+b[j]), sigmoid64(a[h+j]+b[h+j])
				gg, og := act64(kernel.Tanh, a[2*h+j]+b[2*h+j]), sigmoid64(a[3*h+j]+b[3*h+j])
				head[j] = og * act64(kernel.Tanh, fg*cp[j]+ig*gg)
			}
			g := s.headGrad()
			for j := range h {
				ig, fg := sigmoid64(a[j]+b[j]), sigmoid64(a[h+j]+b[h+j])
				gg, og := act64(kernel.Tanh, a[2*h+j]+b[2*h+j]), sigmoid64(a[3*h+j]+b[3*h+j])
				tc := act64(kernel.Tanh, fg*cp[j]+ig*gg)
				dc := g[j] * og * (1 - tc*tc)
				da[j] = dc * gg * ig * (1 - ig)
				da[h+j] = dc * cp[j] * fg * (1 - fg)
				da[2*h+j] = dc * ig * (1 - gg*gg)
				da[3*h+j] = g[j] * tc * og * (1 - og)
			}
		} else {
			for j := range h {
				r, zg := sigmoid64(a[j]+b[j]), sigmoid64(a[h+j]+b[h+j])
				n := act64(kernel.Tanh, a[2*h+j]+r*b[2*h+j])
				head[j] = (1-zg)*n + zg*hp[j]
			}
			g := s.headGrad()
			for j := range h {
				r, zg := sigmoid64(a[j]+b[j]), sigmoid64(a[h+j]+b[h+j])
				n := act64(kernel.Tanh, a[2*h+j]+r*b[2*h+j])
				dpn := g[j] * (1 - zg) * (1 - n*n)
				da[2*h+j] = dpn
				da[j] = dpn * b[2*h+j] * r * (1 - r)
				da[h+j] = g[j] * (hp[j] - n) * zg * (1 - zg)
			}
		}
		for j, d := range da {
			sg.sum[j] += d
		}
	}
	for i := range dz {
		w := rc.wx64[i*gh : (i+1)*gh]
		var sum float64
		for j, d := range sg.sum {
			sum += w[j] * d
		}
		dz[i] = sum
	}
	return dz
}

func sigmoid64(x float64) float64 { return act64(kernel.Sigmoid, x) }
