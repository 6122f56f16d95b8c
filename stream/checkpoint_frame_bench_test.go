package stream

import (
	"testing"
)

// BenchmarkCheckpointCodec times the encode (workers paused) and the
// decode (at a restore) of one partition's checkpoint blob of 50,000 cards
// (snapshotFixture's 100,000 over two partitions), container included.
//
//	go test -run '^$' -bench BenchmarkCheckpointCodec -benchtime 10x ./stream/
func BenchmarkCheckpointCodec(b *testing.B) {
	p, st := snapshotFixture(b, 100_000)
	ps := st.parts[0]
	blob, err := encodePartState(ps)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodePartState(ps); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.decodePartState(st, 0, blob); err != nil {
				b.Fatal(err)
			}
		}
	})
}
