package features

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// BenchmarkExpiryMapGet measures the card look-up of Update (expiryMap.get
// and the read of the state's lastSeen it makes) over 200,000 cards seen in
// random order (a map that no longer fits the caches), each look-up made
// with an id of its own bytes, as a decoded event's is (a string compare
// with the stored key would otherwise match by the pointer). old=true
// rotates the generations before each pass over the cards: every look-up
// is a card's first after a rotation (a miss in cur, a hit in old, and the
// move to cur).
func BenchmarkExpiryMapGet(b *testing.B) {
	const cards = 200_000
	for _, old := range []bool{false, true} {
		b.Run(fmt.Sprintf("old=%v", old), func(b *testing.B) {
			m := newExpiryMap[*cardState](1 << 62)
			m.tick(1)
			ids := make([]string, cards)
			for i := range ids {
				ids[i] = fmt.Sprintf("c-%08d", i)
				c := &cardState{}
				c.s.maxTS = 1
				m.put(ids[i], c)
				ids[i] = strings.Clone(ids[i])
			}
			order := rand.New(rand.NewPCG(1, 2)).Perm(cards)
			i := 0
			var sum int64
			for b.Loop() {
				if old && i == 0 {
					b.StopTimer()
					m.old, m.cur = m.cur, make(map[string]*cardState, cards) // a rotation
					b.StartTimer()
				}
				if c, ok := m.get(ids[order[i]]); ok {
					sum += c.lastSeen()
				}
				if i++; i == cards {
					i = 0
				}
			}
			_ = sum
		})
	}
}
