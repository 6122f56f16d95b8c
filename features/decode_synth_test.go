package features_test

import (
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// BenchmarkDecodeSynth decodes the generator's events as the benchmarks'
// producers write them (Event.AppendJSON: RFC 3339 with milliseconds,
// shortest-form floats, geo on card-present channels), round robin over
// 4,096 of them, without and with a PAN key.
func BenchmarkDecodeSynth(b *testing.B) {
	g, err := synth.New(synth.Config{Seed: 3})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	msgs := make([][]byte, 4096)
	size := 0
	for i := range msgs {
		tx := g.Next(start.Add(time.Duration(i) * 37 * time.Millisecond))
		msgs[i] = tx.Event.AppendJSON(nil)
		size += len(msgs[i])
	}
	clock := features.WithClock(func() time.Time { return start.Add(time.Hour) })
	key, err := features.ParsePANKey([]byte("k1 " + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opts []features.DecoderOption
	}{
		{"strict", []features.DecoderOption{clock}},
		{"strict_pan_key", []features.DecoderOption{clock, features.WithPANKey(key)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			d, err := features.NewDecoder(c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			var e features.Event
			b.SetBytes(int64(size / len(msgs)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := d.Decode(msgs[i%len(msgs)], &e); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		// As the stream's fetchers decode: one clock reading per slice
		// of 64 messages.
		b.Run(c.name+"_slice64", func(b *testing.B) {
			d, err := features.NewDecoder(c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			var e features.Event
			b.SetBytes(int64(size / len(msgs)))
			b.ReportAllocs()
			i := 0
			var now time.Time
			for b.Loop() {
				if i%64 == 0 {
					now = d.Now()
				}
				if err := d.DecodeAt(msgs[i%len(msgs)], &e, now); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// TestDecodeSynthSample checks that BenchmarkDecodeSynth's events decode
// to the generator's events (benchmarks do not run in CI).
func TestDecodeSynthSample(t *testing.T) {
	g, err := synth.New(synth.Config{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	d, err := features.NewDecoder(features.WithClock(func() time.Time { return start.Add(time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		tx := g.Next(start.Add(time.Duration(i) * 37 * time.Millisecond))
		var e features.Event
		if err := d.Decode(tx.Event.AppendJSON(nil), &e); err != nil {
			t.Fatal(err)
		}
		e.TS = tx.Event.TS
		if e != tx.Event {
			t.Fatalf("decoded %+v, want %+v", e, tx.Event)
		}
	}
}
