package output

import (
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestAppendFloat32 compares appendFloat32, and appendFloat of the widened
// value, with appendFloatRef — strconv's shortest round-trip formatting
// alone — on the values around every decimal with up to 6 significant
// digits that audit features and scores take (counts, amounts, rates,
// small probabilities), on every float32 of two whole binades, and on
// random float32s; with STREAMSCORE_EXHAUSTIVE=1 on every float32 whose
// fast paths apply (2^-33 <= |f| <= 1e6, both signs).
func TestAppendFloat32(t *testing.T) {
	var got, want []byte
	var room [floatRoom]byte
	check := func(f float32) {
		got = appendFloat32(got[:0], f)
		want = appendFloatRef(want[:0], float64(f), 32)
		if string(got) != string(want) {
			t.Fatalf("%v (bits %#08x): got %s, want %s", f, math.Float32bits(f), got, want)
		}
		// putFloats (the audit record's features), which appendFloat32
		// passes by for small values.
		if n := putFloat32(room[:], f); string(room[:n]) != string(want) {
			t.Fatalf("putFloat32(%v) (bits %#08x): got %s, want %s", f, math.Float32bits(f), room[:n], want)
		}
		// A score: the float32 widened, printed at 64 bits.
		got = appendFloat(got[:0], float64(f), 64)
		if string(got) != string(want) {
			t.Fatalf("appendFloat(%v, 64) (bits %#08x): got %s, want %s", f, math.Float32bits(f), got, want)
		}
	}
	if os.Getenv("STREAMSCORE_EXHAUSTIVE") != "" {
		lo, hi := math.Float32bits(0x1p-33), math.Float32bits(1e6)
		for b := lo - 1; b <= hi+1; b++ {
			check(math.Float32frombits(b))
			check(-math.Float32frombits(b))
		}
		return
	}
	for _, f := range []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.1, 57.2, 512.5, 1e-4, 9.9999e-5, 999999.94, 1e6, 123456.7,
		float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, math.SmallestNonzeroFloat32} {
		check(f)
	}
	// Around decimals of up to 6 significant digits, in every decade used
	// (scores go down to 1e-10).
	for scale := 1e-10; scale < 1e6; scale *= 10 {
		for m := 1; m < 1_000_000; m += 37 {
			f := float32(float64(m) / 1e5 * scale)
			b := math.Float32bits(f)
			for db := uint32(0); db < 3; db++ {
				check(math.Float32frombits(b + db - 1))
			}
		}
	}
	// Two whole binades: [1, 2) and [1024, 2048).
	for _, start := range []float32{1, 1024} {
		b0 := math.Float32bits(start)
		for b := b0; b < b0+1<<23; b += 3 {
			check(math.Float32frombits(b))
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2_000_000 {
		check(math.Float32frombits(r.Uint32()))
	}
	// And what encoding/json-style parsing reads back is the value.
	for _, f := range []float32{0.3, 1.1, 2.675, 0.0123, 33.333} {
		got = appendFloat32(got[:0], f)
		back, err := strconv.ParseFloat(string(got), 32)
		if err != nil || float32(back) != f {
			t.Errorf("%v: %s parses back to %v, %v", f, got, back, err)
		}
	}
}

func BenchmarkAppendFloat32(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	vals := make([]float32, 1024)
	for i := range vals {
		switch i % 4 {
		case 0:
			vals[i] = float32(r.IntN(100000)) / 100 // amounts
		case 1:
			vals[i] = float32(math.Log1p(r.Float64() * 1000)) // log1p
		case 2:
			vals[i] = float32(r.Float64()) // rates
		default:
			vals[i] = float32(r.IntN(50)) // counts
		}
	}
	buf := make([]byte, 0, 64)
	for _, class := range []string{"mix", "amounts", "log1p", "rates"} {
		for _, bc := range []struct {
			name string
			fn   func([]byte, float32) []byte
		}{
			{"fast", appendFloat32},
			{"scan", appendFloat32Scan},
			{"strconv", func(dst []byte, f float32) []byte { return appendFloatRef(dst, float64(f), 32) }},
		} {
			b.Run(class+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				i, step := 0, 1
				if class != "mix" {
					i, step = map[string]int{"amounts": 0, "log1p": 1, "rates": 2}[class], 4
				}
				for b.Loop() {
					buf = bc.fn(buf[:0], vals[i&1023])
					i += step
				}
			})
		}
	}
}

// TestAppendFloat64 compares appendFloat at 64 bits with appendFloatRef
// (strconv alone) on float64s of up to 4 decimals and their neighbours,
// in every decade from 1e-4 to 1e6 (the three-decimal fast path and its
// edges), and on random float64s.
func TestAppendFloat64(t *testing.T) {
	var got, want []byte
	check := func(f float64) {
		got = appendFloat(got[:0], f, 64)
		want = appendFloatRef(want[:0], f, 64)
		if string(got) != string(want) {
			t.Fatalf("%v (bits %#016x): got %s, want %s", f, math.Float64bits(f), got, want)
		}
	}
	for _, f := range []float64{1e-3, 0.0015, 999999.999, 999999.9995, 1e6, 1e6 + 0.5, 0.1 + 0.2, 57.2, 2.675, 1.005, 0.000999} {
		check(f)
		check(-f)
	}
	r := rand.New(rand.NewPCG(6, 4))
	for places := 1; places <= 4; places++ {
		for scale := 1e-4; scale < 1e6; scale *= 10 {
			for range 50_000 {
				// The float64 closest to a decimal of at most places
				// places below 10·scale.
				f := math.Round(float64(r.Int64N(1_000_000))*scale/1e5*math.Pow10(places)) / math.Pow10(places)
				check(f)
				check(math.Nextafter(f, 0))
				check(math.Nextafter(f, math.Inf(1)))
			}
		}
	}
	for range 2_000_000 {
		check(math.Float64frombits(r.Uint64()))
		check(r.Float64() * 1e6)
	}
}

// TestDigits8 checks digits8 on every n < 10^8: eight digits 0–9, most
// significant first, that make n.
func TestDigits8(t *testing.T) {
	for n := uint64(0); n < 1e8; n++ {
		w, back := digits8(n), uint64(0)
		for k := range 8 {
			dg := w >> (8 * k) & 0xff
			if dg > 9 {
				t.Fatalf("digits8(%d) = %#016x: byte %d is %d", n, w, k, dg)
			}
			back = back*10 + dg
		}
		if back != n {
			t.Fatalf("digits8(%d) = %#016x, which reads %d", n, w, back)
		}
	}
}

// TestPutDecimal compares putDecimal and putInt with the digits of
// strconv.FormatUint (the fraction's d places, trailing zeros dropped)
// around every power of ten of both parts, for every d, in a buffer of
// exactly floatRoom bytes (a write past it panics).
func TestPutDecimal(t *testing.T) {
	var near []uint64
	for p10 := uint64(1); p10 <= 1e16; p10 *= 10 {
		for _, delta := range []int64{-1, 0, 1, 7, 1234567} {
			if v := int64(p10) + delta; v >= 0 {
				near = append(near, uint64(v))
			}
		}
	}
	b := make([]byte, floatRoom)
	for _, ip := range near {
		if ip >= 1e8 {
			continue
		}
		for _, neg := range []bool{false, true} {
			sign := ""
			if neg {
				sign = "-"
			}
			if got, want := string(b[:putInt(b, neg, ip)]), sign+strconv.FormatUint(ip, 10); got != want {
				t.Fatalf("putInt(%v, %d) = %q, want %q", neg, ip, got, want)
			}
			for d := 1; d <= 16; d++ {
				for _, frac := range near {
					if frac == 0 || frac >= pow10u[d&15] && d < 16 || frac >= 1e16 {
						continue
					}
					fs := strconv.FormatUint(frac, 10)
					fs = strings.TrimRight(strings.Repeat("0", d-len(fs))+fs, "0")
					want := sign + strconv.FormatUint(ip, 10) + "." + fs
					if got := string(b[:putDecimal(b, neg, ip, frac, d)]); got != want {
						t.Fatalf("putDecimal(%v, %d, %d, %d) = %q, want %q", neg, ip, frac, d, got, want)
					}
				}
			}
		}
	}
}
