package main

// The float64 AVX2 primitives of package kernel (../f64.go): the exact
// integrated gradients' inner loops. Generated with -f64:
//
//	go run . -f64 -out ../f64_amd64.s -stubs ../f64_stub_amd64.go -pkg kernel
//
// Every product and sum is its own VMULPD and VADDPD, each rounded as Go's
// scalar statements round them, never a fused multiply-add (which rounds
// once); lanes are independent outputs, so no order of additions changes.
// Nothing is read or written past the ends the Go wrappers pass: the loops
// over whole vectors stop at n, and MulAddRows64's last n%4 columns go
// through VMASKMOVPD, which neither faults on nor touches masked-off lanes.

import (
	"flag"
	"log"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

var f64 = flag.Bool("f64", false, "generate the float64 primitives (f64_amd64.s) instead of the GEMM kernels")

// tailmask64 holds four all-ones quadwords then four zero ones: the 32 bytes
// at tailmask64+32-8r are the lane mask of the first r of 4 float64s.
var tailmask64 Mem

func f64Kernels() {
	tailmask64 = GLOBL("tailmask64", RODATA|NOPTR)
	for l := 0; l < 8; l++ {
		v := uint64(0)
		if l < 4 {
			v = ^uint64(0)
		}
		DATA(l*8, U64(v))
	}
	axpy64()
	signBits()
	mulAddRows()
	posBits()
}

// at64 addresses the float64 at base[i] (+disp bytes).
func at64(base, i Register, disp int) Mem {
	return Mem{Base: base, Index: i, Scale: 8, Disp: disp}
}

// paramMem is the memory operand of argument name in the frame.
func paramMem(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		log.Fatal(err)
	}
	return b.Addr
}

func axpy64() {
	TEXT("axpy64AVX2", NOSPLIT, "func(y, x *float64, n int, a float64)")
	Pragma("noescape")
	Doc("axpy64AVX2 is axpy64Generic over y[:n], x[:n], n a multiple of 4:",
		"",
		"\tfor i < n: y[i] += a * x[i]")
	y, x, n := loadGP("y"), loadGP("x"), loadGP("n")
	a := YMM()
	Comment("a = (a, a, a, a); i = 0; n8 = n &^ 7")
	VBROADCASTSD(paramMem("a"), a)
	i := GP64()
	XORQ(i, i)
	n8 := GP64()
	MOVQ(n, n8)
	ANDQ(I8(-8), n8)

	Label("axpy8")
	Comment("while i < n8: y[i:i+8] = y[i:i+8] + a·x[i:i+8]; i += 8")
	CMPQ(i, n8)
	JGE(LabelRef("axpy4"))
	p0, p1 := YMM(), YMM()
	VMULPD(at64(x, i, 0), a, p0)
	VMULPD(at64(x, i, 32), a, p1)
	VADDPD(at64(y, i, 0), p0, p0)
	VADDPD(at64(y, i, 32), p1, p1)
	VMOVUPD(p0, at64(y, i, 0))
	VMOVUPD(p1, at64(y, i, 32))
	ADDQ(Imm(8), i)
	JMP(LabelRef("axpy8"))

	Label("axpy4")
	Comment("n%8 is 0 or 4: if i < n: y[i:i+4] = y[i:i+4] + a·x[i:i+4]")
	CMPQ(i, n)
	JGE(LabelRef("axpydone"))
	p := YMM()
	VMULPD(at64(x, i, 0), a, p)
	VADDPD(at64(y, i, 0), p, p)
	VMOVUPD(p, at64(y, i, 0))

	Label("axpydone")
	VZEROUPPER()
	RET()
}

// orMask ORs into dst, shifted left by CL, the lane mask of the comparison
// pred (a VCMPPD predicate) of v against zero.
func orMask(pred uint8, zero, v VecVirtual, dst GPVirtual) {
	m := YMM()
	bits := GP64()
	VCMPPD(U8(pred), zero, v, m)
	VMOVMSKPD(m, bits.As32())
	SHLQ(CL, bits)
	ORQ(bits, dst)
}

// VCMPPD predicates: ordered and quiet, so a NaN sets neither bit.
const (
	cmpLT = 0x11 // LT_OQ
	cmpGT = 0x1e // GT_OQ
)

func signBits() {
	TEXT("signBitsAVX2", NOSPLIT, "func(x, d *float64, n int, a, c float64) (pa, pc, na, nc uint64)")
	Pragma("noescape")
	Doc("signBitsAVX2 is signBitsGeneric over x[:n], d[:n], n a multiple of 4",
		"from 4 to 64:",
		"",
		"\tfor j < n:",
		"\t\tva, vc := x[j] + a*d[j], x[j] + c*d[j]",
		"\t\tpa |= b2u(va > 0) << j; pc |= b2u(vc > 0) << j",
		"\t\tna |= b2u(va < 0) << j; nc |= b2u(vc < 0) << j")
	x, d, n := loadGP("x"), loadGP("d"), loadGP("n")
	a, c, zero := YMM(), YMM(), YMM()
	Comment("a, c broadcast; zero = 0; pa = pc = na = nc = 0; j (CX) = 0")
	VBROADCASTSD(paramMem("a"), a)
	VBROADCASTSD(paramMem("c"), c)
	VXORPD(zero, zero, zero)
	pa, pc, na, nc := GP64(), GP64(), GP64(), GP64()
	for _, r := range []GPVirtual{pa, pc, na, nc} {
		XORQ(r, r)
	}
	XORQ(RCX, RCX) // j is the shift count of the lane masks: CL

	Label("signs4")
	Comment("va = x[j:j+4] + a·d[j:j+4]; vc = x[j:j+4] + c·d[j:j+4]")
	xv, dv, va, vc := YMM(), YMM(), YMM(), YMM()
	VMOVUPD(at64(x, RCX, 0), xv)
	VMOVUPD(at64(d, RCX, 0), dv)
	VMULPD(dv, a, va)
	VADDPD(xv, va, va)
	VMULPD(dv, c, vc)
	VADDPD(xv, vc, vc)
	Comment("pa |= mask(va > 0) << j; pc |= mask(vc > 0) << j")
	orMask(cmpGT, zero, va, pa)
	orMask(cmpGT, zero, vc, pc)
	Comment("na |= mask(va < 0) << j; nc |= mask(vc < 0) << j")
	orMask(cmpLT, zero, va, na)
	orMask(cmpLT, zero, vc, nc)
	Comment("j += 4 while j < n")
	ADDQ(Imm(4), RCX)
	CMPQ(RCX, n)
	JLT(LabelRef("signs4"))

	Store(pa, Return("pa"))
	Store(pc, Return("pc"))
	Store(na, Return("na"))
	Store(nc, Return("nc"))
	VZEROUPPER()
	RET()
}

func posBits() {
	TEXT("posBitsAVX2", NOSPLIT, "func(x, d *float64, n int, m float64) (p uint64)")
	Pragma("noescape")
	Doc("posBitsAVX2 is posBitsGeneric over x[:n], d[:n], n a multiple of 4 from 4",
		"to 64:",
		"",
		"\tfor j < n: p |= b2u(x[j] + m*d[j] > 0) << j")
	x, d, n := loadGP("x"), loadGP("d"), loadGP("n")
	m, zero := YMM(), YMM()
	Comment("m broadcast; zero = 0; p = 0; j (CX) = 0")
	VBROADCASTSD(paramMem("m"), m)
	VXORPD(zero, zero, zero)
	p := GP64()
	XORQ(p, p)
	XORQ(RCX, RCX)

	Label("pos4")
	Comment("v = x[j:j+4] + m·d[j:j+4]; p |= mask(v > 0) << j; j += 4 while j < n")
	v := YMM()
	VMULPD(at64(d, RCX, 0), m, v)
	VADDPD(at64(x, RCX, 0), v, v)
	orMask(cmpGT, zero, v, p)
	ADDQ(Imm(4), RCX)
	CMPQ(RCX, n)
	JLT(LabelRef("pos4"))
	Store(p, Return("p"))
	VZEROUPPER()
	RET()
}

func mulAddRows() {
	TEXT("mulAddRowsAVX2", NOSPLIT, "func(u *float64, n int, w *float64, ld int, z *float64, rows int)")
	Pragma("noescape")
	Doc("mulAddRowsAVX2 is mulAddRowsGeneric over u[:n], rows of W ld apart; the",
		"last n%4 columns are read and written under a lane mask (VMASKMOVPD), never",
		"past their end:",
		"",
		"\tfor i < rows: if z[i] != 0: for j < n: u[j] += z[i] * w[i*ld+j]",
		"",
		"Columns go in blocks of 32, then 16, then 4, then the masked rest; each",
		"block of u stays in registers across all the rows.")
	u, n, w := loadGP("u"), loadGP("n"), loadGP("w")
	ld := loadGP("ld")
	Comment("ld in bytes")
	SHLQ(Imm(3), ld)
	z, rows := loadGP("z"), loadGP("rows")
	zero := XMM()
	VXORPD(zero, zero, zero)
	j := GP64()
	XORQ(j, j)

	// block generates the loop over blocks of `vecs` vectors of columns
	// (4·vecs float64s), falling through to label next when fewer remain.
	block := func(id string, vecs int, next string) {
		cols := 4 * vecs
		Label("rows" + id)
		Commentf("while j+%d <= n: acc = u[j:j+%d]; wr = &w[j]; i = 0", cols, cols)
		end := GP64()
		LEAQ(Mem{Base: j, Disp: cols}, end)
		CMPQ(end, n)
		JGT(LabelRef(next))
		acc := make([]VecVirtual, vecs)
		for v := range acc {
			acc[v] = YMM()
			VMOVUPD(at64(u, j, 32*v), acc[v])
		}
		wr, i := GP64(), GP64()
		LEAQ(at64(w, j, 0), wr)
		XORQ(i, i)

		Label("row" + id)
		Comment("while i < rows: s = z[i]; skip the row if s == 0 (not NaN)")
		CMPQ(i, rows)
		JGE(LabelRef("store" + id))
		s := YMM()
		VMOVSD(at64(z, i, 0), s.AsX())
		UCOMISD(zero, s.AsX())
		JNE(LabelRef("do" + id))
		JPS(LabelRef("do" + id))
		JMP(LabelRef("next" + id))

		Label("do" + id)
		Comment("acc += s·wr[0:cols], each product rounded, then each sum")
		VBROADCASTSD(s.AsX(), s)
		for v := range acc {
			t := YMM()
			VMULPD(Mem{Base: wr, Disp: 32 * v}, s, t)
			VADDPD(t, acc[v], acc[v])
		}

		Label("next" + id)
		Comment("wr += ld; i++")
		ADDQ(ld, wr)
		INCQ(i)
		JMP(LabelRef("row" + id))

		Label("store" + id)
		Commentf("u[j:j+%d] = acc; j += %d", cols, cols)
		for v := range acc {
			VMOVUPD(acc[v], at64(u, j, 32*v))
		}
		ADDQ(Imm(uint64(cols)), j)
		JMP(LabelRef("rows" + id))
	}
	block("32", 8, "rows16")
	block("16", 4, "rows4")
	block("4", 1, "rowsdone")

	Label("rowsdone")
	Comment("the last r = n-j < 4 columns, under the lane mask of the first r lanes:",
		"mask = tailmask64[4-r : 8-r]; acc = u[j:n] (masked)")
	r := GP64()
	MOVQ(n, r)
	SUBQ(j, r)
	JEQ(LabelRef("rowsret"))
	addr := GP64()
	LEAQ(tailmask64.Offset(32), addr)
	SHLQ(Imm(3), r)
	SUBQ(r, addr)
	mask, acc := YMM(), YMM()
	VMOVDQU(Mem{Base: addr}, mask)
	VMASKMOVPD(at64(u, j, 0), mask, acc)
	wr, i := GP64(), GP64()
	LEAQ(at64(w, j, 0), wr)
	XORQ(i, i)

	Label("rowt")
	Comment("while i < rows: s = z[i]; skip the row if s == 0 (not NaN)")
	CMPQ(i, rows)
	JGE(LabelRef("storet"))
	s := YMM()
	VMOVSD(at64(z, i, 0), s.AsX())
	UCOMISD(zero, s.AsX())
	JNE(LabelRef("dot"))
	JPS(LabelRef("dot"))
	JMP(LabelRef("nextt"))

	Label("dot")
	Comment("acc += s·wr[0:r] (masked load: nothing past the row's end is read)")
	VBROADCASTSD(s.AsX(), s)
	t := YMM()
	VMASKMOVPD(Mem{Base: wr}, mask, t)
	VMULPD(t, s, t)
	VADDPD(t, acc, acc)

	Label("nextt")
	Comment("wr += ld; i++")
	ADDQ(ld, wr)
	INCQ(i)
	JMP(LabelRef("rowt"))

	Label("storet")
	Comment("u[j:n] = acc (masked store)")
	VMASKMOVPD(acc, mask, at64(u, j, 0))

	Label("rowsret")
	VZEROUPPER()
	RET()
}
