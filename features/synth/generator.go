package synth

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/streamscore/streamscore/features"
)

// Tx is one generated transaction with its ground truth.
type Tx struct {
	Event    features.Event
	Fraud    bool
	Scenario string // one of the Scenario* names; "" for genuine
}

// Generator draws transactions from a synthetic population. It is not safe
// for concurrent use.
type Generator struct {
	cfg  Config
	rng  *rand.Rand
	seq  uint64
	idb  []byte
	hash uint64 // seed mixed for label draws

	terms []terminal
	cards []card
	pref  []int32
	prefW []float64

	anyTerm, ecom, ecomTest, ecomHigh, homePOS *alias
	homePOSList                                []int32
	byCountry, cityPick                        []*alias
	cities                                     []city
	farCountries, travelCountries              []uint8
	travelW                                    []float64
	travel                                     *alias
	chronoCards                                [3]*alias

	// Fraud machinery (fraud.go).
	pending     pendingHeap
	planSeq     uint64
	credit      [numScenarios]float64
	need        [numScenarios]float64
	rate        [numScenarios]float64
	campaigns   []campaign
	nextExpiry  int64  // earliest end of an active campaign
	compromised []bool // by terminal: under an active campaign
	scratch     []float64
}

// New builds the population described by cfg.
func New(cfg Config) (*Generator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := uint64(cfg.Seed)
	g := &Generator{
		cfg:  cfg,
		rng:  rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15)),
		hash: mix64(s ^ 0x5851f42d4c957f2d),
	}
	g.idb = append(g.idb, cfg.TxIDPrefix...)
	g.buildPopulation()
	g.initFraud()
	return g, nil
}

// Config returns the configuration in effect, defaults filled in.
func (g *Generator) Config() Config { return g.cfg }

// Next returns the next transaction at event time ts (truncated to the
// millisecond, in UTC). Times need not be increasing, but the scenarios and
// the hour-of-day mix assume they roughly are. A fraudulent transaction that
// an episode planned for a time at or before ts is emitted first; otherwise
// the generator picks a card likely to be active at ts's hour, one of its
// usual terminals (or a trip abroad, or a web shop) open at that hour, and an
// amount from the card's log-normal profile scaled by the merchant category.
func (g *Generator) Next(ts time.Time) Tx {
	ts = ts.UTC().Truncate(time.Millisecond)
	ms := ts.UnixMilli()
	g.advanceFraud(ms)
	if len(g.pending) > 0 && g.pending[0].due <= ms {
		p := heap.Pop(&g.pending).(planned)
		return g.emit(ts, ms, p.card, p.term, p.amount, scenarioNames[p.scen], true)
	}
	return g.genuine(ts, ms)
}

func (g *Generator) genuine(ts time.Time, ms int64) Tx {
	r := g.rng
	clk := clockOf(ms)

	// Who is awake: chronotype by hour, then a card by activity.
	var w [3]float64
	var sum float64
	for k := range w {
		if g.chronoCards[k] != nil {
			w[k] = chronoShare[k] * curveAt(k, clk)
			sum += w[k]
		}
	}
	u := r.Float64() * sum
	k := 0
	for k < 2 && (u >= w[k] || g.chronoCards[k] == nil) {
		u -= w[k]
		k++
	}
	for g.chronoCards[k] == nil { // rounding walked past the last group with cards
		k = (k + 1) % 3
	}
	ci := g.chronoCards[k].sample(r)
	c := &g.cards[ci]

	// Trips abroad: start one only if the card has been quiet long enough
	// to have travelled, so genuine geo velocity stays plausible.
	if c.tripEnd <= ms && g.travel != nil && r.Float64() < 0.003 && (c.last == 0 || ms-c.last > 4*3600*1000) {
		for range 4 {
			dst := g.travelCountries[g.travel.sample(r)]
			if dst != c.home {
				c.tripCity = g.cityPick[dst].sample(r)
				c.tripEnd = ms + int64((2+r.Float64()*10)*86400*1000)
				break
			}
		}
	}

	var ti int32 = -1
	abroad := c.tripEnd > ms
	switch {
	case abroad && r.Float64() < 0.85:
		cy := &g.cities[c.tripCity]
		if a := orAlias(cy.terms, g.byCountry[cy.country]); a != nil {
			ti = a.sample(r)
		}
	case abroad:
		if g.ecom != nil {
			ti = g.ecom.sample(r)
		}
	case r.Float64() < 0.86:
		ti = g.pickPreferred(c, clk)
	case r.Float64() < 0.6: // elsewhere in town
		if a := orAlias(g.cities[c.city].terms, g.byCountry[c.home]); a != nil {
			ti = a.sample(r)
		}
	default:
		if g.ecom != nil {
			ti = g.ecom.sample(r)
		}
	}
	if ti < 0 {
		ti = g.anyTerm.sample(r)
	}
	t := &g.terms[ti]
	m := &mccs[t.mcc]

	var amount float64
	if t.channel == chanATM {
		amount = math.Max(20, roundTo(math.Exp(c.mu+math.Log(m.factor)+0.5*r.NormFloat64()), 10))
	} else {
		la := c.mu + (t.logTyp - baseLogAmount) + c.sigma*r.NormFloat64()
		if r.Float64() < 0.004 { // the occasional big-ticket purchase
			la += math.Log(4 + 8*r.Float64())
		}
		amount = math.Exp(la)
	}
	g.captureSkim(ci, ti, ms)
	return g.emit(ts, ms, ci, ti, amount, "", false)
}

// pickPreferred picks one of the card's usual terminals, weighted by
// preference and by how busy the terminal's category is at this hour.
func (g *Generator) pickPreferred(c *card, clk clock) int32 {
	n := int(c.prefN)
	if n == 0 {
		return -1
	}
	off := int(c.prefOff)
	ws := g.scratch[:0]
	var sum float64
	for j := range n {
		p := mccs[g.terms[g.pref[off+j]].mcc].profile
		w := g.prefW[off+j] * profileWeight(p, clk.hour)
		if clk.weekend() {
			w *= weekendFactor[p]
		}
		sum += w
		ws = append(ws, sum)
	}
	g.scratch = ws
	u := g.rng.Float64() * sum
	for j, cum := range ws {
		if u < cum {
			return g.pref[off+j]
		}
	}
	return g.pref[off+n-1]
}

func (g *Generator) emit(ts time.Time, ms int64, ci, ti int32, amount float64, scen string, fraud bool) Tx {
	c := &g.cards[ci]
	t := &g.terms[ti]
	c.last = ms
	g.seq++
	g.idb = strconv.AppendUint(g.idb[:len(g.cfg.TxIDPrefix)], g.seq, 10)
	amount = math.Round(math.Min(math.Max(amount, 0.01), 50000)*100) / 100
	tx := Tx{
		Event: features.Event{
			TxID:       string(g.idb),
			CardID:     c.id,
			TerminalID: t.id,
			TS:         ts,
			Amount:     amount,
			Currency:   "EUR",
			MCC:        mccs[t.mcc].code,
			Channel:    channelNames[t.channel],
			Country:    countries[t.country].code,
		},
		Fraud:    fraud,
		Scenario: scen,
	}
	if t.channel != chanEcom {
		tx.Event.Lat, tx.Event.Lon, tx.Event.HasGeo = t.lat, t.lon, true
	}
	return tx
}
