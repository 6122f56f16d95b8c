// Command gen generates the AVX-512 and AVX2+FMA GEMM kernels of package
// kernel (../gemm_amd64.s, their Go declarations ../gemm_stub_amd64.go) and
// the Go switch that picks a tile kernel by shape (../gemm_tiles_amd64.go).
//
// Run it through go generate in the kernel package (see gemm.go):
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

	constants()
	var tileList [][3]any
	for _, ar := range []isa{avx512, avx2} {
		for r := 1; r <= ar.rows; r++ {
			for p := 1; p <= ar.maxP(r); p++ {
				tile(ar, r, p)
				tileList = append(tileList, [3]any{ar, r, p})
			}
		}
		actTile(ar)
	}
	Generate()
	if *tiles != "" {
		writeTiles(*tiles, tileList)
	}
}

// Constant tables. expc holds each constant of the exponential replicated 16
// times (64 bytes), so that any lane width can use it as a memory operand.
var (
	expc  Mem
	masks Mem
)

const (
	cLog2e = iota
	cShift
	cLn2Hi
	cLn2Lo
	cP5
	cP4
	cP3
	cP2
	cP1
	cP0
	cOne
	cLo
	cHi
	nConst
)

func constants() {
	vals := [nConst]float32{
		cLog2e: 1.44269504088896341,
		cShift: 12582912 + 127, // 1.5·2^23 + bias: rounds to an integer and keeps n+127 in the low bits
		cLn2Hi: 0.693359375,
		cLn2Lo: -2.12194440e-4,
		// Cephes expf: e^r ≈ 1 + r + r²·(P0 + P1 r + … + P5 r^5), |r| <= ln2/2.
		cP5:  1.9875691500e-4,
		cP4:  1.3981999507e-3,
		cP3:  8.3334519073e-3,
		cP2:  4.1665795894e-2,
		cP1:  1.6666665459e-1,
		cP0:  5.0000001201e-1,
		cOne: 1,
		cLo:  -87.3, // 2^n stays normal: n >= -126
		cHi:  88.3,  // n <= 127
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

// actTile generates the in-place logistic pass over a rows×cols tile of C:
//
//	for each x: s := 1 / (1 + exp(ng·x)); x = alpha·s + beta
//
// sigmoid is (ng, alpha, beta) = (-1, 1, 0) and tanh(x) = 2σ(2x) − 1 is
// (-2, 2, -1). exp(z) clamps z to [-87.3, 88.3], splits z = n·ln2 + r with
// n = round(z·log2e) (by the 1.5·2^23 shifter) and |r| <= ln2/2, evaluates
// the Cephes degree-5 polynomial for e^r, and scales by 2^n built from n's
// bits. NaN propagates: the clamps return their second operand on NaN.
func actTile(ar isa) {
	name := "actTile" + ar.name
	TEXT(name, NOSPLIT, "func(c *float32, ldc int, rows int, cols int, ng float32, alpha float32, beta float32)")
	Pragma("noescape")
	Doc(name+" applies x = alpha/(1+exp(ng·x)) + beta in place to the rows×cols",
		"block of c (leading dimension ldc elements): sigmoid with (-1, 1, 0), tanh",
		"with (-2, 2, -1). rows >= 1, cols >= 1.")
	cRow := loadGP("c")
	ldc := loadGP("ldc")
	SHLQ(Imm(2), ldc)
	rows := loadGP("rows")
	cols := loadGP("cols")
	nfull := GP64()
	MOVQ(cols, nfull)
	SHRQ(Imm(uint64(bitsOf(ar.width))), nfull)
	tail := GP64()
	MOVQ(cols, tail)
	ANDQ(U32(ar.width-1), tail)

	bcast := func(name string) VecVirtual {
		// Broadcast straight from the argument slot: a legacy-SSE MOVSS
		// here would mix SSE and AVX encodings.
		b, err := Param(name).Resolve()
		if err != nil {
			log.Fatal(err)
		}
		v := ar.vec()
		VBROADCASTSS(b.Addr, v)
		return v
	}
	ng, alpha, beta := bcast("ng"), bcast("alpha"), bcast("beta")
	lo, hi, one := ar.vec(), ar.vec(), ar.vec()
	VMOVUPS(cst(cLo), lo)
	VMOVUPS(cst(cHi), hi)
	VMOVUPS(cst(cOne), one)

	var kreg Register
	var vmask VecVirtual
	if ar.name == "AVX512" {
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

	f := func(x VecVirtual) {
		Comment("z = clamp(ng·x, lo, hi)")
		z := ar.vec()
		VMULPS(ng, x, z)
		VMAXPS(z, lo, z)
		VMINPS(z, hi, z)
		Comment("t = z·log2e + shifter; n = t - shifter = round(z·log2e)")
		t, n := ar.vec(), ar.vec()
		VMOVUPS(cst(cShift), t)
		VFMADD231PS(cst(cLog2e), z, t)
		VSUBPS(cst(cShift), t, n)
		Comment("r = z - n·ln2 (in two parts)")
		VFNMADD231PS(cst(cLn2Hi), n, z)
		VFNMADD231PS(cst(cLn2Lo), n, z)
		Comment("e^r = 1 + r + r²·P(r)")
		pp := ar.vec()
		VMOVUPS(cst(cP5), pp)
		for _, c := range []int{cP4, cP3, cP2, cP1, cP0} {
			VFMADD213PS(cst(c), z, pp)
		}
		VMULPS(z, z, n)
		VFMADD213PS(z, n, pp)
		VADDPS(one, pp, pp)
		Comment("e^z = e^r · 2^n, 2^n = (n+127) << 23 from the low bits of t")
		VPSLLD(Imm(23), t, t)
		VMULPS(t, pp, pp)
		Comment("x = alpha / (1 + e^z) + beta")
		VADDPS(one, pp, pp)
		VDIVPS(pp, one, pp)
		VFMADD213PS(beta, alpha, pp)
		VMOVUPS(pp, x)
	}

	Label("row")
	p := GP64()
	MOVQ(cRow, p)
	i := GP64()
	MOVQ(nfull, i)
	Label("vec")
	TESTQ(i, i)
	JZ(LabelRef("tail"))
	x := ar.vec()
	VMOVUPS(Mem{Base: p}, x)
	f(x)
	VMOVUPS(x, Mem{Base: p})
	ADDQ(U32(ar.width*4), p)
	DECQ(i)
	JMP(LabelRef("vec"))
	Label("tail")
	TESTQ(tail, tail)
	JZ(LabelRef("next"))
	y := ar.vec()
	if ar.name == "AVX512" {
		VMOVUPS_Z(Mem{Base: p}, kreg, y)
		f(y)
		VMOVUPS(y, kreg, Mem{Base: p})
	} else {
		VMASKMOVPS(Mem{Base: p}, vmask, y)
		f(y)
		VMASKMOVPS(y, vmask, Mem{Base: p})
	}
	Label("next")
	ADDQ(ldc, cRow)
	DECQ(rows)
	JNZ(LabelRef("row"))
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
