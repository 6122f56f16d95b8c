package eval

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// CardDay is card precision top-k on one UTC day of event time.
type CardDay struct {
	Day          string `json:"day"`            // YYYY-MM-DD (UTC)
	Transactions int    `json:"transactions"`   // transactions that day, all cards
	Cards        int    `json:"cards"`          // cards ranked: active that day and not detected before
	Excluded     int    `json:"excluded_cards"` // cards active that day but detected on an earlier day
	FraudCards   int    `json:"fraud_cards"`    // ranked cards with a fraudulent transaction that day
	Detected     int    `json:"detected"`       // fraud cards in the top k
	Precision    Float  `json:"precision"`      // Detected / k
	BestPossible Float  `json:"best_possible"`  // min(FraudCards, k) / k
}

// CardPrecision is card precision top-k per day and its mean over the days.
type CardPrecision struct {
	K    int   `json:"k"`
	Mean Float `json:"mean"` // of Days[i].Precision; null without days
	// MeanBestPossible is the mean of Days[i].BestPossible: the mean a
	// perfect ranking would reach (below 1 on days with fewer than k fraud
	// cards).
	MeanBestPossible Float     `json:"mean_best_possible"`
	Days             []CardDay `json:"days"` // days with transactions, in order
}

// CardPrecisionTopK computes card precision top-k as defined in the
// package documentation (Le Borgne et al.): per UTC day, cards detected on
// an earlier day are left out, each other card is ranked by its highest
// score of the day (ties: card_id ascending) and is a fraud card if any of
// its transactions that day is fraud in truth; the precision is the fraud
// cards in the top k divided by k, and those cards count as detected from
// the next day on. It panics if k < 1.
func CardPrecisionTopK(records []Scored, truth Truth, k int) CardPrecision {
	if k < 1 {
		panic("eval: card precision k < 1")
	}
	type card struct {
		id    string
		score float64
		fraud bool
	}
	type day struct {
		key   string
		txs   int
		cards map[string]*card
	}
	days := map[string]*day{}
	for i := range records {
		r := &records[i]
		key := r.TS.UTC().Format(time.DateOnly)
		d := days[key]
		if d == nil {
			d = &day{key: key, cards: map[string]*card{}}
			days[key] = d
		}
		d.txs++
		c := d.cards[r.CardID]
		if c == nil {
			c = &card{id: r.CardID, score: r.Score}
			d.cards[r.CardID] = c
		}
		c.score = max(c.score, r.Score)
		c.fraud = c.fraud || truth[r.TxID]
	}
	keys := make([]string, 0, len(days))
	for k := range days {
		keys = append(keys, k)
	}
	slices.Sort(keys) // YYYY-MM-DD sorts in time order

	out := CardPrecision{K: k, Mean: Float(math.NaN()), MeanBestPossible: Float(math.NaN()), Days: make([]CardDay, 0, len(keys))}
	detected := map[string]struct{}{}
	var sum, best float64
	for _, key := range keys {
		d := days[key]
		cd := CardDay{Day: key, Transactions: d.txs}
		ranked := make([]*card, 0, len(d.cards))
		for id, c := range d.cards {
			if _, done := detected[id]; done {
				cd.Excluded++
				continue
			}
			ranked = append(ranked, c)
			if c.fraud {
				cd.FraudCards++
			}
		}
		cd.Cards = len(ranked)
		slices.SortFunc(ranked, func(a, b *card) int {
			if c := cmp.Compare(b.score, a.score); c != 0 {
				return c
			}
			return cmp.Compare(a.id, b.id)
		})
		for _, c := range ranked[:min(k, len(ranked))] {
			if c.fraud {
				cd.Detected++
				detected[c.id] = struct{}{}
			}
		}
		cd.Precision = Float(float64(cd.Detected) / float64(k))
		cd.BestPossible = Float(float64(min(cd.FraudCards, k)) / float64(k))
		sum += float64(cd.Precision)
		best += float64(cd.BestPossible)
		out.Days = append(out.Days, cd)
	}
	if len(out.Days) > 0 {
		out.Mean = Float(sum / float64(len(out.Days)))
		out.MeanBestPossible = Float(best / float64(len(out.Days)))
	}
	return out
}
