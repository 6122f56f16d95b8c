package stream

import (
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
)

// perMessageDecoder hides a features.Decoder's DecodeAt and Now from
// the stage (it is then not the JSON decoder itself): the stage decodes each message
// with Decode, reading the clock per message, as builds before
// 2026-12-06 (evening) did.
type perMessageDecoder struct{ d *features.Decoder }

func (p perMessageDecoder) Decode(value []byte, ev *features.Event) error {
	return p.d.Decode(value, ev)
}

// BenchmarkStageDecode measures the fetchers' decoding (stage.decode) of
// the generator's events in slices of maxHandOff, the pending items given
// back to the pool after each slice: per_message decodes each with its own
// clock reading (time.Now); slice reads the clock once per slice
// (features.Decoder.DecodeAt), as handOff does. Both in one run, so that
// their ratio holds on a busy machine.
//
//	go test ./stream -run '^$' -bench BenchmarkStageDecode -count 5
func BenchmarkStageDecode(b *testing.B) {
	g, err := synth.New(synth.Config{Seed: 3})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	recs := make([]Record, 4096)
	for i := range recs {
		tx := g.Next(now.Add(-time.Hour + time.Duration(i)*37*time.Millisecond))
		recs[i] = Record{Partition: 0, Offset: int64(i), Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil), Time: tx.Event.TS}
	}
	for _, c := range []struct {
		name  string
		slice bool
	}{{"per_message", false}, {"slice", true}} {
		b.Run(c.name, func(b *testing.B) {
			p := shippedPipeline(b, "decode")
			st := newStage(p, nil)
			if !c.slice {
				st.dec, st.sdec = perMessageDecoder{p.dec}, nil
			}
			pds := make([]*pending, 0, maxHandOff)
			b.ReportAllocs()
			i := 0
			var t time.Time // the slice's clock reading
			for b.Loop() {
				if len(pds) == maxHandOff {
					for _, pd := range pds {
						st.recycle(pd)
					}
					pds = pds[:0]
				}
				if len(pds) == 0 {
					t = st.now()
				}
				pd := st.decode("transactions", &recs[i%len(recs)], t)
				if pd.reason != "" {
					b.Fatalf("dead letter: %s", pd.err)
				}
				pds = append(pds, pd)
				i++
			}
		})
	}
}
