package train

import (
	cblas "gonum.org/v1/gonum/blas"

	"github.com/streamscore/streamscore/models"
)

// cnnScratch holds a chunk's standardised rows, convolution outputs and
// their gradient.
type cnnScratch struct {
	z, zc, u, du, feat []float64
	arg                []int
}

func grow(v []float64, n int) []float64 {
	if cap(v) < n {
		return make([]float64, n)
	}
	return v[:n]
}

// cnnChunk scores positions [ps, pe) of a card (rows = all its row
// indices): each row's window is its last Window rows, oldest first, zero
// rows in front of the card's first row. The convolution is computed once
// per position of the chunk (windows overlap), then each row pools its L =
// Window−Kernel+1 positions and runs the head (see headRow). With grad, the
// gradient of the training rows' loss flows back through pooling and the
// convolution (exact: no state crosses chunks).
func (w *seqWork) cnnChunk(p *seqParams, sd *seqData, rows []int32, ps, pe int, grad bool, logits []float64) {
	a := p.a
	F, C, K, P := a.in, a.channels, a.kernel, a.poolP
	start := ps - a.window + 1 // position of z row 0
	nr := pe - start
	nu := nr - K + 1
	s := &w.cnn
	s.z = grow(s.z, nr*F)
	s.u = grow(s.u, nu*C)
	s.feat = grow(s.feat, C*P)
	if len(s.arg) < C*P {
		s.arg = make([]int, C*P)
	}
	for q := 0; q < nr; q++ {
		if pos := start + q; pos < 0 {
			clear(s.z[q*F : (q+1)*F])
		} else {
			sd.zrow(rows[pos], s.z[q*F:(q+1)*F])
		}
	}
	// im2col: row q of zc is rows q..q+K-1 of z; u = relu(zc·W + b).
	KF := K * F
	s.zc = grow(s.zc, nu*KF)
	for q := 0; q < nu; q++ {
		copy(s.zc[q*KF:(q+1)*KF], s.z[q*F:(q+K)*F])
		copy(s.u[q*C:(q+1)*C], p.cb)
	}
	blas.Dgemm(cblas.NoTrans, cblas.NoTrans, nu, C, KF, 1, s.zc, KF, p.cw, C, 1, s.u, C)
	for i, v := range s.u {
		if v < 0 {
			s.u[i] = 0
		}
	}
	if grad {
		s.du = grow(s.du, nu*C)
		clear(s.du)
	}
	hasGrad := false
	avg := a.pool == models.PoolAvg
	inv := 1 / float64(a.poolSize)
	for pos := ps; pos < pe; pos++ {
		r := rows[pos]
		if logits == nil && sd.role[r] != roleTrain {
			continue
		}
		base := pos - ps
		for c := 0; c < C; c++ {
			for q := 0; q < P; q++ {
				lo := base + q*a.poolStride
				if avg {
					var sum float64
					for l := lo; l < lo+a.poolSize; l++ {
						sum += s.u[l*C+c]
					}
					s.feat[c*P+q] = sum * inv
					continue
				}
				best, bi := s.u[lo*C+c], lo
				for l := lo + 1; l < lo+a.poolSize; l++ {
					if v := s.u[l*C+c]; v > best {
						best, bi = v, l
					}
				}
				s.feat[c*P+q] = best
				s.arg[c*P+q] = bi
			}
		}
		if !w.headRow(p, sd, r, s.feat, grad, logits) {
			continue
		}
		hasGrad = true
		df := w.hs.delta[0]
		for c := 0; c < C; c++ {
			for q := 0; q < P; q++ {
				d := df[c*P+q]
				if avg {
					lo := base + q*a.poolStride
					for l := lo; l < lo+a.poolSize; l++ {
						s.du[l*C+c] += d * inv
					}
					continue
				}
				s.du[s.arg[c*P+q]*C+c] += d
			}
		}
	}
	if !hasGrad {
		return
	}
	g := w.g
	for i, u := range s.u {
		if u <= 0 { // ReLU
			s.du[i] = 0
		}
		g.cb[i%C] += s.du[i]
	}
	blas.Dgemm(cblas.Trans, cblas.NoTrans, KF, C, nu, 1, s.zc, KF, s.du, C, 1, g.cw, C)
}
