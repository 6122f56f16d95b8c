// Command gen generates the AVX-512 and AVX2+FMA GEMM kernels of package
// kernel (../gemm_amd64.s, their Go declarations ../gemm_stub_amd64.go) and
// the Go switch that picks a tile kernel by shape (../gemm_tiles_amd64.go);
// with -f64, the float64 AVX2 primitives instead (../f64_amd64.s and
// ../f64_stub_amd64.go, see f64.go).
//
// Run it through go generate in the kernel package (see gemm.go and
// ../f64.go):
//
//	go generate ./models/internal/kernel
//
// and check the committed output with _asm/check.sh.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"math"
	"os"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

var tiles = flag.String("tiles", "", "write the Go tile dispatch switch to this file")

// panelWidth must match kernel.PanelWidth: columns of W per packed panel.
const panelWidth = 16

// isa describes one instruction-set family.
type isa struct {
	name  string // suffix of the function names: AVX512, AVX2
	width int    // float32 lanes per vector register
	vec   func() VecVirtual
	regs  int             // vector registers
	maxP  func(r int) int // widest tile, in panels, for r rows
	rows  int             // tallest tile
}

var avx512 = isa{
	name: "AVX512", width: 16, vec: ZMM, regs: 32, rows: 12,
	// r·p accumulators + p panel registers + 1 broadcast of A <= 31 (one
	// spare), at most 8 panels (128 columns). One row streams W from memory
	// operands and needs only p+1.
	maxP: func(r int) int {
		if r == 1 {
			return 8
		}
		return min(8, 30/(r+1))
	},
}

var avx2 = isa{
	name: "AVX2", width: 8, vec: YMM, regs: 16, rows: 6,
	// two Y registers per panel: 2·r·p accumulators + 2·p + 1 <= 16; one
	// row streams W from memory operands.
	maxP: func(r int) int {
		if r == 1 {
			return 6
		}
		return max(1, 15/(2*r+2))
	},
}

func main() {
	flag.Parse()
	ConstraintExpr("amd64,gc,!noasm")
	if *f64 {
		f64Kernels()
		Generate()
		return
	}

	constants()
	var tileList [][3]any
	for _, ar := range []isa{avx512, avx2} {
		for r := 1; r <= ar.rows; r++ {
			for p := 1; p <= ar.maxP(r); p++ {
				tile(ar, r, p)
				tileList = append(tileList, [3]any{ar, r, p})
			}
		}
		actTile(ar, "sigmoid")
		actTile(ar, "tanh")
		peak(ar)
	}
	Generate()
	if *tiles != "" {
		writeTiles(*tiles, tileList)
	}
}

// Constant tables. expc holds each constant of the activation pass
// replicated 16 times (64 bytes), so that any lane width can use it as a
// memory operand.
var (
	expc  Mem
	masks Mem
)

const (
	cLo       = iota // clamp of t = log2(e^z): 2^t stays normal, 1/(1+2^t) too
	cHi              //
	cShift           // AVX2: 1.5·2^23 + 127 rounds t to an integer n and keeps n+127 in the low bits
	cOne             //
	cTwo             //
	cMinusOne        //
	cSigmoid         // −log2 e: σ(x) = 1/(1 + 2^t), t = −x·log2 e
	cTanh            // −2·log2 e: tanh(x) = 2/(1 + 2^t) − 1, t = −2x·log2 e
	cF0              // AVX-512: 2^f ≈ F0 + F1 f + … + F5 f^5 on [0, 1)
	cF1
	cF2
	cF3
	cF4
	cF5
	cH0 // AVX2: 2^f ≈ H0 + H1 f + … + H5 f^5 on [-1/2, 1/2]
	cH1
	cH2
	cH3
	cH4
	cH5
	nConst
)

func constants() {
	vals := [nConst]float32{
		// |t| <= 64 keeps 2^t, 1+2^t and its reciprocal normal, and costs
		// nothing in accuracy: σ(±44.4) is within 5.5e-20 of 0 or 1.
		cLo:       -64,
		cHi:       64,
		cShift:    12582912 + 127,
		cOne:      1,
		cTwo:      2,
		cMinusOne: -1,
		cSigmoid:  -math.Log2E,
		cTanh:     -2 * math.Log2E,
		// Minimax fits of the relative error of 2^f (Remez, float64; the
		// error of the float32 coefficients in float32 Horner steps is
		// 1.5e-7 on [0, 1) and 2.1e-7 on [-1/2, 1/2]).
		cF0: 9.9999992506e-01,
		cF1: 6.9315307320e-01,
		cF2: 2.4015361704e-01,
		cF3: 5.5826318053e-02,
		cF4: 8.9893400905e-03,
		cF5: 1.8775766752e-03,
		cH0: 1.0000000717e+00,
		cH1: 6.9314696706e-01,
		cH2: 2.4022119724e-01,
		cH3: 5.5507132735e-02,
		cH4: 9.6755413344e-03,
		cH5: 1.3276471993e-03,
	}
	expc = GLOBL("expc", RODATA|NOPTR)
	for i, v := range vals {
		for l := 0; l < 16; l++ {
			DATA(i*64+l*4, U32(math.Float32bits(v)))
		}
	}
	// masks: 16 words of all ones then 16 zeros; the 16 (8) words at
	// masks+4·(16-t) have ones in exactly the first t lanes.
	masks = GLOBL("masks", RODATA|NOPTR)
	for l := 0; l < 32; l++ {
		v := uint32(0)
		if l < 16 {
			v = 0xffffffff
		}
		DATA(l*4, U32(v))
	}
}

func cst(i int) Mem { return expc.Offset(i * 64) }

// strided addresses items i = 0..n-1 at base + i·stride with bases every
// three items and stride·{0,1,2} as the index: rows of A and C (stride lda,
// ldc) and panels of W (stride k·64 bytes).
type strided struct {
	bases  []GPVirtual
	stride GPVirtual
}

// newStrided sets bases[g] = p + 3g·stride; it clobbers nothing else.
func newStrided(p, stride GPVirtual, n int) strided {
	s := strided{stride: stride}
	for g := 0; g*3 < n; g++ {
		b := GP64()
		if g == 0 {
			MOVQ(p, b)
		} else {
			LEAQ(Mem{Base: s.bases[g-1], Index: stride, Scale: 2}, b)
			ADDQ(stride, b)
		}
		s.bases = append(s.bases, b)
	}
	return s
}

func (s strided) at(i, disp int) Mem {
	m := Mem{Base: s.bases[i/3], Disp: disp}
	if i%3 > 0 {
		m.Index, m.Scale = s.stride, uint8(i%3)
	}
	return m
}

func (s strided) add(n int) {
	for _, b := range s.bases {
		ADDQ(U32(n), b)
	}
}

func tileName(ar isa, r, p int) string {
	return fmt.Sprintf("gemm%dx%d%s", r, p*panelWidth, ar.name)
}

// tile generates the r×(16p) micro-kernel.
func tile(ar isa, r, p int) {
	vp := panelWidth / ar.width // vectors per panel
	nv := p * vp                // vectors per tile row
	TEXT(tileName(ar, r, p), NOSPLIT, "func(k int, a *float32, lda int, w *float32, c *float32, ldc int, bias *float32, tail int, flags int, nblk int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes nblk vertically stacked %d×%d tiles of C = act(C0 + A·W + bias),", tileName(ar, r, p), r, p*panelWidth),
		fmt.Sprintf("reading %d rows of A per tile and %d packed panels of W (panel stride k·%d", r, p, panelWidth),
		"floats). Only the first tail (1..16) columns of the last panel are read from",
		"bias and C and written to C. flags: bit 0 accumulates into C, bit 1 applies",
		"ReLU. lda and ldc are in elements.",
		"",
		"\tfor each block, i < rows, j < cols:",
		"\t\ts := flags&1 ? C[i][j] : 0",
		"\t\tfor l < k: s += A[i][l] * W[l][j]",
		"\t\tC[i][j] = relu?(s + bias[j])")

	k := loadGP("k")
	aBlk := loadGP("a")
	lda := loadGP("lda")
	SHLQ(Imm(2), lda)
	w := loadGP("w")
	cBlk := loadGP("c")
	nblk := loadGP("nblk")

	Comment("ws = panel stride in bytes = k·16·4")
	ws := GP64()
	MOVQ(k, ws)
	SHLQ(Imm(6), ws)

	Comment("tail masks for the last panel")
	tail := loadGP("tail")
	var kreg Register // AVX-512 tail opmask; AVX2 loads vector masks at the epilogue
	var maskAddr GPVirtual
	if ar.name == "AVX512" {
		one := GP32()
		MOVL(U32(1), one)
		SHLXL(tail.As32(), one, one) // one = 1 << tail
		DECL(one)                    // ones in the first tail bits
		kreg = K()
		KMOVW(one, kreg)
	} else {
		maskAddr = GP64()
		LEAQ(masks.Offset(64), maskAddr) // masks + 4·16
		SHLQ(Imm(2), tail)
		SUBQ(tail, maskAddr) // masks + 4·(16-tail)
	}

	acc := make([][]VecVirtual, r)
	for i := range acc {
		acc[i] = make([]VecVirtual, nv)
		for v := range acc[i] {
			acc[i][v] = ar.vec()
		}
	}
	// wAt addresses vector v of W at unrolled step u.
	var W strided
	wAt := func(v, u int) Mem { return W.at(v/vp, u*panelWidth*4+(v%vp)*ar.width*4) }

	Label("block")
	Comment("zero the accumulators")
	for i := range acc {
		for _, x := range acc[i] {
			if ar.name == "AVX512" {
				VPXORD(x, x, x)
			} else {
				VXORPS(x, x, x)
			}
		}
	}
	A := newStrided(aBlk, lda, r)
	W = newStrided(w, ws, p)
	kk := GP64()
	MOVQ(k, kk)

	step := func(u int) {
		at := ar.vec()
		if r == 1 {
			Commentf("k+%d: c[0][:] += a[0][k] * w[k][:]", u)
			VBROADCASTSS(A.at(0, u*4), at)
			for v := 0; v < nv; v++ {
				VFMADD231PS(wAt(v, u), at, acc[0][v])
			}
			return
		}
		Commentf("k+%d: b = w[k][:]; c[i][:] += a[i][k] * b", u)
		b := make([]VecVirtual, nv)
		for v := range b {
			b[v] = ar.vec()
			VMOVUPS(wAt(v, u), b[v])
		}
		for i := 0; i < r; i++ {
			VBROADCASTSS(A.at(i, u*4), at)
			for v := 0; v < nv; v++ {
				VFMADD231PS(b[v], at, acc[i][v])
			}
		}
	}
	const unroll = 4
	Label("loop4")
	CMPQ(kk, Imm(unroll))
	JL(LabelRef("loop1"))
	for u := 0; u < unroll; u++ {
		step(u)
	}
	A.add(unroll * 4)
	W.add(unroll * panelWidth * 4)
	SUBQ(Imm(unroll), kk)
	JMP(LabelRef("loop4"))
	Label("loop1")
	TESTQ(kk, kk)
	JZ(LabelRef("epilogue"))
	step(0)
	A.add(4)
	W.add(panelWidth * 4)
	DECQ(kk)
	JMP(LabelRef("loop1"))

	Label("epilogue")
	ldc := loadGP("ldc")
	SHLQ(Imm(2), ldc)
	C := newStrided(cBlk, ldc, r)
	cAt := func(i, v int) Mem { return C.at(i, v*ar.width*4) }
	last := func(v int) bool { return v >= nv-vp }
	var vmask []VecVirtual
	if ar.name == "AVX2" {
		vmask = []VecVirtual{ar.vec(), ar.vec()}
		VMOVUPS(Mem{Base: maskAddr}, vmask[0])
		VMOVUPS(Mem{Base: maskAddr, Disp: 32}, vmask[1])
	}
	// load returns vector v of a row at m, masked (zeroing) in the last panel.
	load := func(m Mem, v int) VecVirtual {
		t := ar.vec()
		switch {
		case !last(v):
			VMOVUPS(m, t)
		case ar.name == "AVX512":
			VMOVUPS_Z(m, kreg, t)
		default:
			VMASKMOVPS(m, vmask[v%vp], t)
		}
		return t
	}
	flags := loadGP("flags")
	Comment("accumulate: c[i][:] += C0[i][:]")
	TESTQ(U32(1), flags)
	JZ(LabelRef("bias"))
	for i := 0; i < r; i++ {
		for v := 0; v < nv; v++ {
			VADDPS(load(cAt(i, v), v), acc[i][v], acc[i][v])
		}
	}
	Label("bias")
	Comment("c[i][:] += bias[:] unless bias is nil")
	bias := loadGP("bias")
	TESTQ(bias, bias)
	JZ(LabelRef("relu"))
	for v := 0; v < nv; v++ {
		t := load(Mem{Base: bias, Disp: v * ar.width * 4}, v)
		for i := 0; i < r; i++ {
			VADDPS(t, acc[i][v], acc[i][v])
		}
	}
	Label("relu")
	Comment("relu: c = max(0, c), NaN stays NaN (second operand wins)")
	TESTQ(U32(2), flags)
	JZ(LabelRef("store"))
	zero := ar.vec()
	VXORPS(zero, zero, zero)
	for i := 0; i < r; i++ {
		for v := 0; v < nv; v++ {
			VMAXPS(acc[i][v], zero, acc[i][v])
		}
	}
	Label("store")
	Comment("masked stores only for a partial last panel: a load from a masked",
		"store cannot be forwarded, and the activation pass reloads the tile")
	CMPQ(loadGP("tail"), U32(panelWidth))
	JE(LabelRef("storefull"))
	for i := 0; i < r; i++ {
		for v := 0; v < nv; v++ {
			switch {
			case !last(v):
				VMOVUPS(acc[i][v], cAt(i, v))
			case ar.name == "AVX512":
				VMOVUPS(acc[i][v], kreg, cAt(i, v))
			default:
				VMASKMOVPS(acc[i][v], vmask[v%vp], cAt(i, v))
			}
		}
	}
	JMP(LabelRef("next"))
	Label("storefull")
	for i := 0; i < r; i++ {
		for v := 0; v < nv; v++ {
			VMOVUPS(acc[i][v], cAt(i, v))
		}
	}
	Label("next")
	Comment("next block: a += r·lda, c += r·ldc")
	t := GP64()
	IMUL3Q(U32(r), lda, t)
	ADDQ(t, aBlk)
	IMUL3Q(U32(r), ldc, t)
	ADDQ(t, cBlk)
	DECQ(nblk)
	JNZ(LabelRef("block"))
	VZEROUPPER()
	RET()
}

// actTile generates the in-place sigmoid or tanh pass over a rows×cols tile
// of C (sigmoidTile*, tanhTile*):
//
//	sigmoid: x = 1 / (1 + 2^t),     t = −x·log2 e
//	tanh:    x = 2 / (1 + 2^t) − 1, t = −2x·log2 e (tanh(x) = 2σ(2x) − 1)
//
// With t clamped to ±64 and t = n + f (n an integer), 2^t = 2^n · P(f)
// with P a degree-5 minimax polynomial, and the quotient is a reciprocal
// estimate refined by one Newton-Raphson step (VDIVPS measured 20% slower
// than the estimate and its refinement):
//
//   - AVX-512: f = t − ⌊t⌋ by VREDUCEPS (on the unclamped t: 0 for ±Inf,
//     NaN for NaN), t clamped by one VRANGEPS (sign of t, min of |t| and
//     64; 64 for NaN, which f carries on), P fitted on [0, 1), 2^n·P by
//     VSCALEFPS (which takes ⌊t⌋ itself), 1/(1+2^t) from VRCP14PS (relative
//     error 2^−14): 13 vector operations per 16 outputs for sigmoid, 14 for
//     tanh. Every constant is held in a register: as memory operands they
//     cost a load per operation and made the pass 35% slower.
//   - AVX2: t clamped by VMAXPS/VMINPS (which return t when it is NaN),
//     n = round(t) by the 1.5·2^23 shifter (which also leaves n+127 in the
//     low bits, shifted into the exponent of 2^n), P fitted on [−1/2, 1/2],
//     VRCPPS (1.5·2^−12): 16 operations per 8 outputs for sigmoid, 17 for
//     tanh, constants as memory operands (16 Y registers).
//
// The Newton step r' = r + r·(1 − d·r) squares the estimate's relative
// error (≤ 1.4e-7 after it), and NaN stays NaN through every step.
func actTile(ar isa, act string) {
	name := act + "Tile" + ar.name
	tanh := act == "tanh"
	TEXT(name, NOSPLIT, "func(c *float32, ldc int, rows int, cols int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s applies %s in place to the rows×cols block of c (leading", name, act),
		"dimension ldc elements); rows >= 1, cols >= 1.")
	avx512 := ar.name == "AVX512"
	cRow := loadGP("c")
	ldc := loadGP("ldc")
	SHLQ(Imm(2), ldc)
	rows := loadGP("rows")
	cols := loadGP("cols")
	tail := GP64()
	MOVQ(cols, tail)
	ANDQ(U32(ar.width-1), tail)

	// kc returns constant i as an operand: on AVX-512 a register loaded
	// once here (its 32 registers hold every constant beside four vectors
	// in flight, and memory operands cost a load each per vector), on AVX2
	// a memory operand.
	kregs := map[int]VecVirtual{}
	kc := func(i int) Op {
		if !avx512 {
			return cst(i)
		}
		if r, ok := kregs[i]; ok {
			return r
		}
		r := ar.vec()
		VMOVUPS(cst(i), r)
		kregs[i] = r
		return r
	}
	scale := kc(cSigmoid)
	if tanh {
		scale = kc(cTanh)
	}
	if avx512 {
		for _, c := range []int{cHi, cF0, cF1, cF2, cF3, cF4, cF5} {
			kc(c)
		}
		if tanh {
			kc(cMinusOne)
		}
	}
	one := ar.vec()
	VMOVUPS(cst(cOne), one)
	var two VecVirtual
	if tanh {
		two = ar.vec()
		VMOVUPS(cst(cTwo), two)
	}
	var lo, hi VecVirtual
	if !avx512 {
		lo, hi = ar.vec(), ar.vec()
		VMOVUPS(cst(cLo), lo)
		VMOVUPS(cst(cHi), hi)
	}

	var kreg Register
	var vmask VecVirtual
	if avx512 {
		m := GP32()
		MOVL(U32(1), m)
		SHLXL(tail.As32(), m, m)
		DECL(m)
		kreg = K()
		KMOVW(m, kreg)
	} else {
		addr := GP64()
		LEAQ(masks.Offset(64), addr)
		t := GP64()
		MOVQ(tail, t)
		SHLQ(Imm(2), t)
		SUBQ(t, addr)
		vmask = ar.vec()
		VMOVUPS(Mem{Base: addr}, vmask)
	}

	// f applies the function to the vectors xs in place, interleaving
	// their independent chains step by step.
	f := func(xs []VecVirtual) {
		each := func(g func(i int, x VecVirtual)) {
			for i, x := range xs {
				g(i, x)
			}
		}
		ts := make([]VecVirtual, len(xs))
		ps := make([]VecVirtual, len(xs))
		for i := range xs {
			ts[i], ps[i] = ar.vec(), ar.vec()
		}
		if avx512 {
			Comment("t = scale·x; f = t - floor(t) in [0, 1), 0 for ±Inf, NaN for NaN")
			each(func(i int, x VecVirtual) { VMULPS(scale, x, ts[i]) })
			each(func(i int, x VecVirtual) { VREDUCEPS(Imm(0b1001), ts[i], x) })
			Comment("t clamped to [-64, 64]: sign of t, min(|t|, 64) (64 for NaN:",
				"f carries the NaN)")
			each(func(i int, x VecVirtual) { VRANGEPS(Imm(0b0010), kc(cHi), ts[i], ts[i]) })
			Comment("p = 2^f = F0 + F1 f + … + F5 f^5")
			each(func(i int, x VecVirtual) { VMOVAPS(kc(cF5), ps[i]) })
			for _, c := range []int{cF4, cF3, cF2, cF1, cF0} {
				each(func(i int, x VecVirtual) { VFMADD213PS(kc(c), x, ps[i]) })
			}
			Comment("d = 1 + 2^t = 1 + p·2^floor(t)")
			each(func(i int, x VecVirtual) { VSCALEFPS(ts[i], ps[i], ps[i]) })
			each(func(i int, x VecVirtual) { VADDPS(one, ps[i], ps[i]) })
			Comment("r ≈ 1/d (14 bits)")
			each(func(i int, x VecVirtual) { VRCP14PS(ps[i], x) })
		} else {
			Comment("t = scale·x clamped to [-64, 64]")
			each(func(i int, x VecVirtual) { VMULPS(scale, x, ts[i]) })
			each(func(i int, x VecVirtual) { VMAXPS(ts[i], lo, ts[i]) })
			each(func(i int, x VecVirtual) { VMINPS(ts[i], hi, ts[i]) })
			Comment("s = t + shifter; n = s - shifter = round(t); f = t - n")
			each(func(i int, x VecVirtual) { VADDPS(cst(cShift), ts[i], x) })
			each(func(i int, x VecVirtual) { VSUBPS(cst(cShift), x, ps[i]) })
			each(func(i int, x VecVirtual) { VSUBPS(ps[i], ts[i], ts[i]) })
			Comment("2^n = (n+127) << 23 from the low bits of s")
			each(func(i int, x VecVirtual) { VPSLLD(Imm(23), x, x) })
			Comment("p = 2^f = H0 + H1 f + … + H5 f^5")
			each(func(i int, x VecVirtual) { VMOVUPS(cst(cH5), ps[i]) })
			for _, c := range []int{cH4, cH3, cH2, cH1, cH0} {
				each(func(i int, x VecVirtual) { VFMADD213PS(cst(c), ts[i], ps[i]) })
			}
			Comment("d = 1 + 2^t = 1 + p·2^n")
			each(func(i int, x VecVirtual) { VFMADD213PS(one, x, ps[i]) })
			Comment("r ≈ 1/d (12 bits)")
			each(func(i int, x VecVirtual) { VRCPPS(ps[i], x) })
		}
		Comment("x = r + r·(1 - d·r)")
		each(func(i int, x VecVirtual) { VFNMADD213PS(one, x, ps[i]) })
		each(func(i int, x VecVirtual) { VFMADD213PS(x, ps[i], x) })
		if tanh {
			Comment("x = 2x - 1")
			each(func(i int, x VecVirtual) { VFMADD213PS(kc(cMinusOne), two, x) })
		}
	}

	// Rows go in pairs, so that the short rows of a strip (two vectors per
	// row of a 12×32 tile) still give four (AVX2: two) independent chains
	// per iteration: three registers each, within the 32 Z or 16 Y
	// registers beside the constants. An odd last row runs alone, four
	// (two) vectors per iteration.
	perPair, perRow := 2, 4
	if !avx512 {
		perPair, perRow = 1, 2
	}
	step := ar.width * 4 // bytes per vector
	// sweep applies f to one row at each of ps: `per` vectors of each per
	// iteration, then one vector of each, then the masked tail.
	sweep := func(id string, ps []GPVirtual, per int) {
		i := GP64()
		MOVQ(cols, i)
		SHRQ(Imm(uint64(bitsOf(ar.width))), i) // full vectors in the row
		Label(id + "vecs")
		CMPQ(i, Imm(uint64(per)))
		JL(LabelRef(id + "vec1"))
		var xs []VecVirtual
		var at []Mem
		for _, p := range ps {
			for u := 0; u < per; u++ {
				xs = append(xs, ar.vec())
				at = append(at, Mem{Base: p, Disp: u * step})
				VMOVUPS(at[len(at)-1], xs[len(xs)-1])
			}
		}
		f(xs)
		for u := range xs {
			VMOVUPS(xs[u], at[u])
		}
		for _, p := range ps {
			ADDQ(U32(per*step), p)
		}
		SUBQ(Imm(uint64(per)), i)
		JMP(LabelRef(id + "vecs"))
		Label(id + "vec1")
		if per > 1 {
			TESTQ(i, i)
			JZ(LabelRef(id + "tail"))
			xs = xs[:0]
			for _, p := range ps {
				xs = append(xs, ar.vec())
				VMOVUPS(Mem{Base: p}, xs[len(xs)-1])
			}
			f(xs)
			for u, p := range ps {
				VMOVUPS(xs[u], Mem{Base: p})
				ADDQ(U32(step), p)
			}
			DECQ(i)
			JMP(LabelRef(id + "vec1"))
		}
		Label(id + "tail")
		TESTQ(tail, tail)
		JZ(LabelRef(id + "done"))
		xs = xs[:0]
		for _, p := range ps {
			y := ar.vec()
			if avx512 {
				VMOVUPS_Z(Mem{Base: p}, kreg, y)
			} else {
				VMASKMOVPS(Mem{Base: p}, vmask, y)
			}
			xs = append(xs, y)
		}
		f(xs)
		for u, p := range ps {
			if avx512 {
				VMOVUPS(xs[u], kreg, Mem{Base: p})
			} else {
				VMASKMOVPS(xs[u], vmask, Mem{Base: p})
			}
		}
		Label(id + "done")
	}
	Label("pair")
	CMPQ(rows, Imm(2))
	JL(LabelRef("single"))
	p0, p1 := GP64(), GP64()
	MOVQ(cRow, p0)
	LEAQ(Mem{Base: cRow, Index: ldc, Scale: 1}, p1)
	sweep("pair", []GPVirtual{p0, p1}, perPair)
	LEAQ(Mem{Base: cRow, Index: ldc, Scale: 2}, cRow)
	SUBQ(Imm(2), rows)
	JMP(LabelRef("pair"))
	Label("single")
	TESTQ(rows, rows)
	JZ(LabelRef("ret"))
	p := GP64()
	MOVQ(cRow, p)
	sweep("single", []GPVirtual{p}, perRow)
	Label("ret")
	VZEROUPPER()
	RET()
}

// peakAccumulators is how many independent accumulators the peak loop
// updates: as many as the main tile (24 Z, 12 Y), more than the FMA
// latency times the number of FMA units on any current core.
func peakAccumulators(ar isa) int { return 2 * ar.rows }

// peak generates fmaPeak*: n iterations of one VFMADD231PS into each of
// peakAccumulators independent registers, with no memory operand. It does
// the GEMM tile's arithmetic without its loads, epilogue or loop over K, so
// its rate is the ceiling for any fp32 GEMM on this core, measured in the
// same run as the GEMM benchmarks.
func peak(ar isa) {
	name := "fmaPeak" + ar.name
	TEXT(name, NOSPLIT, "func(n int)")
	Doc(fmt.Sprintf("%s runs n iterations of %d independent register-only VFMADD231PS", name, peakAccumulators(ar)),
		fmt.Sprintf("(%d float32 lanes each): %d flops per iteration; n >= 1.", ar.width, 2*ar.width*peakAccumulators(ar)))
	n := loadGP("n")
	acc := make([]VecVirtual, peakAccumulators(ar))
	x := ar.vec()
	VXORPS(x, x, x)
	for i := range acc {
		acc[i] = ar.vec()
		VXORPS(acc[i], acc[i], acc[i])
	}
	Label("loop")
	for i := range acc {
		VFMADD231PS(x, x, acc[i])
	}
	DECQ(n)
	JNZ(LabelRef("loop"))
	VZEROUPPER()
	RET()
}

func bitsOf(n int) int {
	b := 0
	for 1<<b < n {
		b++
	}
	return b
}

// writeTiles writes the Go switch from (rows, panels) to tile kernel.
func writeTiles(path string, list [][3]any) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "// Code generated by _asm/gen.go. DO NOT EDIT.\n\n")
	fmt.Fprintf(&buf, "//go:build amd64 && gc && !noasm\n\npackage kernel\n\n")
	for _, ar := range []isa{avx512, avx2} {
		fmt.Fprintf(&buf, "// maxPanels%s is the widest %s tile, in panels, for r rows (index r).\n", ar.name, ar.name)
		fmt.Fprintf(&buf, "var maxPanels%s = [...]int{0", ar.name)
		for r := 1; r <= ar.rows; r++ {
			fmt.Fprintf(&buf, ", %d", ar.maxP(r))
		}
		fmt.Fprintf(&buf, "}\n\n")
		fmt.Fprintf(&buf, "// tile%s runs the r×16p %s tile kernel; r and p must be within maxPanels%s.\n", ar.name, ar.name, ar.name)
		fmt.Fprintf(&buf, "func tile%s(r, p int, k int, a *float32, lda int, w *float32, c *float32, ldc int, bias *float32, tail int, flags int, nblk int) {\n", ar.name)
		fmt.Fprintf(&buf, "switch r<<4 | p {\n")
		for _, t := range list {
			if t[0].(isa).name != ar.name {
				continue
			}
			r, p := t[1].(int), t[2].(int)
			fmt.Fprintf(&buf, "case %d<<4 | %d:\n%s(k, a, lda, w, c, ldc, bias, tail, flags, nblk)\n", r, p, tileName(ar, r, p))
		}
		fmt.Fprintf(&buf, "default:\npanic(\"kernel: no %s tile for this shape\")\n}\n}\n\n", ar.name)
	}
	src, err := format.Source(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(path, src, 0o644); err != nil {
		log.Fatal(err)
	}
}

// loadGP loads the integer or pointer argument name into a new register.
func loadGP(name string) GPVirtual {
	r := GP64()
	Load(Param(name), r)
	return r
}
