package features

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// digestHash is keyedHash as first written: xxhash's Digest, seeded.
func digestHash(key uint64, s string) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(key)
	d.WriteString(s)
	return d.Sum64()
}

// TestKeyedHashIsXXHash: keyedHash's one-pass short-input path gives the
// Digest's values bit for bit (snapshots hold these hashes), for every
// length from 0 to 70 (both sides of 4, 8 and 32 bytes), seeds 0, ^0 and
// random ones, and all byte values.
func TestKeyedHashIsXXHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	seeds := []uint64{0, ^uint64(0), 1 << 63}
	for range 20 {
		seeds = append(seeds, rng.Uint64())
	}
	b := make([]byte, 70)
	for _, seed := range seeds {
		for n := range len(b) + 1 {
			for range 8 {
				for i := range b[:n] {
					b[i] = byte(rng.Uint32())
				}
				s := string(b[:n])
				if got, want := keyedHash(seed, s), digestHash(seed, s); got != want {
					t.Fatalf("seed %#x, %q: got %#x, want %#x", seed, s, got, want)
				}
			}
		}
	}
}

// FuzzKeyedHash: keyedHash equals xxhash's Digest for any id and seed.
func FuzzKeyedHash(f *testing.F) {
	f.Add(uint64(0), "")
	f.Add(uint64(42), "m-1234")
	f.Add(^uint64(0), "tx-00000000000000000000000000000001")
	f.Fuzz(func(t *testing.T, seed uint64, s string) {
		if got, want := keyedHash(seed, s), digestHash(seed, s); got != want {
			t.Fatalf("seed %#x, %q: got %#x, want %#x", seed, s, got, want)
		}
	})
}

// BenchmarkKeyedHash: keyedHash against the Digest, for a terminal id
// and a tx id of the bench's shape.
func BenchmarkKeyedHash(b *testing.B) {
	for _, id := range []string{"T000123", "tx-1234567"} {
		for _, fn := range []struct {
			name string
			f    func(uint64, string) uint64
		}{{"digest", digestHash}, {"keyedHash", keyedHash}} {
			b.Run(fmt.Sprintf("%s/len=%d", fn.name, len(id)), func(b *testing.B) {
				var h uint64
				for b.Loop() {
					h += fn.f(h, id)
				}
			})
		}
	}
}
