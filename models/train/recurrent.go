package train

import (
	"math"

	cblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/streamscore/streamscore/models"
)

// recScratch holds a block's forward values for backpropagation through
// time, one slot per step.
type recScratch struct {
	slots                       int
	z, pa, hp, cp, gate, bn, cn []float64
	dhed, da, db                []float64
	has                         []bool
	b                           []float64 // G·H
	dh, dc, dhp, dcp            []float64 // H
}

func (s *recScratch) ensure(a *seqArch, slots int) {
	if s.b != nil && s.slots >= slots {
		return
	}
	F, H, GH := a.in, a.hidden, a.gh()
	s.slots = slots
	s.z = make([]float64, slots*F)
	s.pa = make([]float64, slots*GH)
	s.hp = make([]float64, slots*H)
	s.cp = make([]float64, slots*H)
	s.gate = make([]float64, slots*GH)
	s.bn = make([]float64, slots*H)
	s.cn = make([]float64, slots*H)
	s.dhed = make([]float64, slots*H)
	s.da = make([]float64, slots*GH)
	s.db = make([]float64, slots*GH)
	s.has = make([]bool, slots)
	s.b = make([]float64, GH)
	s.dh, s.dc, s.dhp, s.dcp = make([]float64, H), make([]float64, H), make([]float64, H), make([]float64, H)
}

// blas is gonum's pure-Go BLAS (assembly inner loops on amd64). Its Dgemm
// runs serially for the small matrices used here, and its results do not
// depend on the number of cores.
var blas gonum.Implementation

// matvecAdd adds x·W to out, W row-major len(x)×len(out).
func matvecAdd(out, x, w []float64) {
	if len(x) == 0 || len(out) == 0 {
		return
	}
	blas.Dgemv(cblas.Trans, len(x), len(out), 1, w, len(out), x, 1, 1, out, 1)
}

// outerAdd adds xᵀ·d to g, g row-major len(x)×len(d).
func outerAdd(g, x, d []float64) {
	if len(x) == 0 || len(d) == 0 {
		return
	}
	blas.Dger(len(x), len(d), 1, x, 1, d, 1, g, len(d))
}

// recChunk runs the cell over rows (consecutive rows of one card) from
// state (h, then c for LSTM), leaving the state after the last row in
// state, with the head on every new h (see headRow), and backpropagates the
// loss of the chunk's training rows through the chunk's steps if grad
// (truncated BPTT: nothing flows into the incoming state). Without grad,
// long sequences run in blocks of the chunk length.
func (w *seqWork) recChunk(p *seqParams, sd *seqData, rows []int32, state []float64, grad bool, logits []float64) {
	blk := len(rows)
	if !grad {
		blk = min(blk, max(p.a.chunk, 32))
	}
	w.rec.ensure(p.a, max(blk, p.a.chunk))
	for off := 0; off < len(rows); off += blk {
		w.recBlock(p, sd, rows[off:min(off+blk, len(rows))], state, grad, logits)
	}
}

func (w *seqWork) recBlock(p *seqParams, sd *seqData, rows []int32, state []float64, grad bool, logits []float64) {
	a := p.a
	F, H, GH := a.in, a.hidden, a.gh()
	n := len(rows)
	lstm := a.family == models.FamilyLSTM
	s := &w.rec
	hcur := state[:H]
	var ccur []float64
	if lstm {
		ccur = state[H : 2*H]
	}
	// Input projections of the whole block: pa = z·Wx + Bx.
	for t, r := range rows {
		sd.zrow(r, s.z[t*F:(t+1)*F])
		copy(s.pa[t*GH:(t+1)*GH], p.bx)
	}
	blas.Dgemm(cblas.NoTrans, cblas.NoTrans, n, GH, F, 1, s.z, F, p.wx, GH, 1, s.pa, GH)
	lastLoss := -1
	for t, r := range rows {
		hp := s.hp[t*H : (t+1)*H]
		copy(hp, hcur)
		copy(s.b, p.bh)
		matvecAdd(s.b, hp, p.wh)
		gate := s.gate[t*GH : (t+1)*GH]
		av, bv := s.pa[t*GH:(t+1)*GH], s.b
		if !lstm {
			bn := s.bn[t*H : (t+1)*H]
			for j := 0; j < H; j++ {
				rg := sigmoid(av[j] + bv[j])
				zg := sigmoid(av[H+j] + bv[H+j])
				n := math.Tanh(av[2*H+j] + rg*bv[2*H+j])
				gate[j], gate[H+j], gate[2*H+j] = rg, zg, n
				bn[j] = bv[2*H+j]
				hcur[j] = (1-zg)*n + zg*hp[j]
			}
		} else {
			cp := s.cp[t*H : (t+1)*H]
			copy(cp, ccur)
			cn := s.cn[t*H : (t+1)*H]
			for j := 0; j < H; j++ {
				ig := sigmoid(av[j] + bv[j])
				fg := sigmoid(av[H+j] + bv[H+j])
				gg := math.Tanh(av[2*H+j] + bv[2*H+j])
				og := sigmoid(av[3*H+j] + bv[3*H+j])
				gate[j], gate[H+j], gate[2*H+j], gate[3*H+j] = ig, fg, gg, og
				cn[j] = fg*cp[j] + ig*gg
				ccur[j] = cn[j]
				hcur[j] = og * math.Tanh(cn[j])
			}
		}
		has := w.headRow(p, sd, r, hcur, grad, logits)
		s.has[t] = has
		if has {
			copy(s.dhed[t*H:(t+1)*H], w.hs.delta[0])
			lastLoss = t
		}
	}
	if lastLoss < 0 {
		return
	}
	g := w.g
	dh, dc, dhp, dcp := s.dh, s.dc, s.dhp, s.dcp
	clear(dh)
	clear(dc)
	for t := lastLoss; t >= 0; t-- {
		if s.has[t] {
			for j, v := range s.dhed[t*H : (t+1)*H] {
				dh[j] += v
			}
		}
		hp := s.hp[t*H : (t+1)*H]
		gate := s.gate[t*GH : (t+1)*GH]
		da, db := s.da[t*GH:(t+1)*GH], s.db[t*GH:(t+1)*GH]
		if !lstm {
			bn := s.bn[t*H : (t+1)*H]
			for j := 0; j < H; j++ {
				rg, zg, n := gate[j], gate[H+j], gate[2*H+j]
				dn := dh[j] * (1 - zg)
				dz := dh[j] * (hp[j] - n)
				dhp[j] = dh[j] * zg
				dpn := dn * (1 - n*n)
				dr := dpn * bn[j]
				da[j] = dr * rg * (1 - rg)
				da[H+j] = dz * zg * (1 - zg)
				da[2*H+j] = dpn
				db[j], db[H+j], db[2*H+j] = da[j], da[H+j], dpn*rg
			}
		} else {
			cp := s.cp[t*H : (t+1)*H]
			cn := s.cn[t*H : (t+1)*H]
			for j := 0; j < H; j++ {
				ig, fg, gg, og := gate[j], gate[H+j], gate[2*H+j], gate[3*H+j]
				tc := math.Tanh(cn[j])
				do := dh[j] * tc
				dcj := dc[j] + dh[j]*og*(1-tc*tc)
				da[j] = dcj * gg * ig * (1 - ig)
				da[H+j] = dcj * cp[j] * fg * (1 - fg)
				da[2*H+j] = dcj * ig * (1 - gg*gg)
				da[3*H+j] = do * og * (1 - og)
				dcp[j] = dcj * fg
				dhp[j] = 0
			}
			copy(db, da)
		}
		// dhp += Wh·db
		blas.Dgemv(cblas.NoTrans, H, GH, 1, p.wh, GH, db, 1, 1, dhp, 1)
		dh, dhp = dhp, dh
		if lstm {
			dc, dcp = dcp, dc
		}
	}
	// Weight gradients of the block's steps [0, lastLoss].
	m := lastLoss + 1
	for t := 0; t < m; t++ {
		for j, v := range s.da[t*GH : (t+1)*GH] {
			g.bx[j] += v
		}
		for j, v := range s.db[t*GH : (t+1)*GH] {
			g.bh[j] += v
		}
	}
	blas.Dgemm(cblas.Trans, cblas.NoTrans, F, GH, m, 1, s.z, F, s.da, GH, 1, g.wx, GH)
	blas.Dgemm(cblas.Trans, cblas.NoTrans, H, GH, m, 1, s.hp, H, s.db, GH, 1, g.wh, GH)
}
