package kernel

import "math"

// gemmGeneric is the pure-Go GEMM every other path is tested against. It
// walks W panel by panel and, inside a panel, A in blocks of rowBlock rows.
// A 4-row block sweeps the panel's 16 columns in 4×2 register blocks (eight
// accumulators, four A values and two W values fit the sixteen SSE registers
// the Go compiler allocates; wider blocks spill and run slower), with k
// unrolled by two. Rows past the last full block use a 1×4 kernel.
func gemmGeneric(m, k, n int, a []float32, lda int, w *Packed, bias []float32, act Activation, c []float32, ldc int, accumulate bool) {
	if k == 0 { // A·W is the zero matrix
		if !accumulate {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		epilogue(m, n, bias, act, c, ldc)
		return
	}
	panels := (n + PanelWidth - 1) / PanelWidth
	for p := 0; p < panels; p++ {
		j0 := p * PanelWidth
		nw := min(PanelWidth, n-j0)
		panel := w.data[p*k*PanelWidth : (p+1)*k*PanelWidth]
		var pb []float32
		if bias != nil {
			pb = bias[j0 : j0+nw]
		}
		i := 0
		for ; i+rowBlock <= m; i += rowBlock {
			kernel4x16(k, a[i*lda:], lda, panel, c[i*ldc+j0:], ldc, nw, accumulate)
			epilogue(rowBlock, nw, pb, act, c[i*ldc+j0:], ldc) // while the block is in cache
		}
		for ; i < m; i++ {
			for q := 0; q < nw; q += 4 {
				kernel1x4(k, a[i*lda:i*lda+k], panel[q:], c[i*ldc+j0+q:], min(4, nw-q), accumulate)
			}
			epilogue(1, nw, pb, act, c[i*ldc+j0:], ldc)
		}
	}
}

// kernel4x16 computes the 4×nw (nw <= PanelWidth) block of C at c (leading
// dimension ldc) from four rows of A at a (leading dimension lda) and one
// panel, sweeping the panel in column pairs: each pair is a 4×2 register
// block over all of k. The panel is zero-padded to its full width, so
// reading a pair is always in bounds; only nw columns are stored.
func kernel4x16(k int, a []float32, lda int, panel []float32, c []float32, ldc, nw int, accumulate bool) {
	a0 := a[:k]
	a1 := a[lda : lda+k]
	a2 := a[2*lda : 2*lda+k]
	a3 := a[3*lda : 3*lda+k]
	for q := 0; q < nw; q += 2 {
		c00, c01, c10, c11, c20, c21, c30, c31 := kernel4x2(k, a0, a1, a2, a3, panel[q:])
		cols := min(2, nw-q)
		store2(c[3*ldc+q:], cols, c30, c31, accumulate)
		store2(c[2*ldc+q:], cols, c20, c21, accumulate)
		store2(c[ldc+q:], cols, c10, c11, accumulate)
		store2(c[q:], cols, c00, c01, accumulate)
	}
}

// kernel4x2 returns the 4×2 block of sums of rows a0..a3 (len k) against
// the panel column pair at b (stride PanelWidth per k), k unrolled by two.
func kernel4x2(k int, a0, a1, a2, a3 []float32, b []float32) (c00, c01, c10, c11, c20, c21, c30, c31 float32) {
	a0, a1, a2, a3 = a0[:k], a1[:k], a2[:k], a3[:k]
	b = b[:(k-1)*PanelWidth+2]
	l := 0
	for ; l+1 < k; l += 2 {
		bb := b[l*PanelWidth : l*PanelWidth+PanelWidth+2]
		b0, b1 := bb[0], bb[1]
		e0, e1 := bb[PanelWidth], bb[PanelWidth+1]
		x, y := a0[l], a0[l+1]
		c00 += x*b0 + y*e0
		c01 += x*b1 + y*e1
		x, y = a1[l], a1[l+1]
		c10 += x*b0 + y*e0
		c11 += x*b1 + y*e1
		x, y = a2[l], a2[l+1]
		c20 += x*b0 + y*e0
		c21 += x*b1 + y*e1
		x, y = a3[l], a3[l+1]
		c30 += x*b0 + y*e0
		c31 += x*b1 + y*e1
	}
	if l < k {
		bb := b[l*PanelWidth : l*PanelWidth+2]
		b0, b1 := bb[0], bb[1]
		x := a0[l]
		c00 += x * b0
		c01 += x * b1
		x = a1[l]
		c10 += x * b0
		c11 += x * b1
		x = a2[l]
		c20 += x * b0
		c21 += x * b1
		x = a3[l]
		c30 += x * b0
		c31 += x * b1
	}
	return
}

// store2 writes (or adds, if accumulate) the first cols of two sums to c.
func store2(c []float32, cols int, s0, s1 float32, accumulate bool) {
	if cols == 2 {
		c = c[:2]
		if accumulate {
			c[0] += s0
			c[1] += s1
		} else {
			c[0], c[1] = s0, s1
		}
		return
	}
	if accumulate {
		c[0] += s0
	} else {
		c[0] = s0
	}
}

// kernel1x4 computes a 1×cols (cols <= 4) block of C for one row a of A
// (len k) against the panel column quad at b, with k unrolled by two.
func kernel1x4(k int, a []float32, b []float32, c []float32, cols int, accumulate bool) {
	var c00, c01, c02, c03 float32
	b = b[:(k-1)*PanelWidth+4]
	l := 0
	for ; l+1 < k; l += 2 {
		bb := b[l*PanelWidth : l*PanelWidth+PanelWidth+4]
		x0, x1 := a[l], a[l+1]
		c00 += x0*bb[0] + x1*bb[PanelWidth]
		c01 += x0*bb[1] + x1*bb[PanelWidth+1]
		c02 += x0*bb[2] + x1*bb[PanelWidth+2]
		c03 += x0*bb[3] + x1*bb[PanelWidth+3]
	}
	if l < k {
		bb := b[l*PanelWidth : l*PanelWidth+4]
		x0 := a[l]
		c00 += x0 * bb[0]
		c01 += x0 * bb[1]
		c02 += x0 * bb[2]
		c03 += x0 * bb[3]
	}
	store4(c, cols, c00, c01, c02, c03, accumulate)
}

// store4 writes (or adds, if accumulate) the first cols of four sums to c.
func store4(c []float32, cols int, s0, s1, s2, s3 float32, accumulate bool) {
	if cols == 4 {
		c = c[:4]
		if accumulate {
			c[0] += s0
			c[1] += s1
			c[2] += s2
			c[3] += s3
			return
		}
		c[0], c[1], c[2], c[3] = s0, s1, s2, s3
		return
	}
	s := [4]float32{s0, s1, s2, s3}
	for j := 0; j < cols; j++ {
		if accumulate {
			c[j] += s[j]
		} else {
			c[j] = s[j]
		}
	}
}

// epilogue adds the bias and applies the activation to the m×n block of c
// (bias may be nil).
func epilogue(m, n int, bias []float32, act Activation, c []float32, ldc int) {
	if bias == nil && act == Identity {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if bias != nil {
			bias := bias[:n]
			for j := range row {
				row[j] += bias[j]
			}
		}
		switch act {
		case ReLU:
			for j, v := range row {
				// Branch-free (a data-dependent branch mispredicts on half
				// the activations); NaN stays NaN so bad input stays visible.
				row[j] = max(v, 0)
			}
		case Sigmoid:
			for j, v := range row {
				row[j] = sigmoid32(v)
			}
		case Tanh:
			for j, v := range row {
				row[j] = float32(math.Tanh(float64(v)))
			}
		}
	}
}

// sigmoid32 is the logistic function, evaluated in float64 so that it is
// correctly rounded to float32 over the whole range and never overflows.
func sigmoid32(v float32) float32 {
	x := float64(v)
	if x >= 0 {
		return float32(1 / (1 + math.Exp(-x)))
	}
	e := math.Exp(x)
	return float32(e / (1 + e))
}
