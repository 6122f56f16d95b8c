package synth

import (
	"container/heap"
	"math"
	"slices"
)

const (
	scCompromised = iota
	scTakeover
	scTesting
	scCollusion
	numScenarios
)

var scenarioNames = [numScenarios]string{
	scCompromised: ScenarioCompromisedTerminal,
	scTakeover:    ScenarioAccountTakeover,
	scTesting:     ScenarioCardTesting,
	scCollusion:   ScenarioMerchantCollusion,
}

// meanSize is the mean number of fraudulent transactions of one episode.
var meanSize = [numScenarios]float64{
	scCompromised: 25,   // up to 5-20 skimmed cards × 1-3 uses
	scTakeover:    5.5,  // 3-8 large transactions
	scTesting:     14,   // 6-20 probes + 1 cash-out
	scCollusion:   24.5, // 4-10 ring cards × 2-5 transactions
}

// maxCampaigns bounds the terminal compromises active at once.
const maxCampaigns = 512

const (
	minuteMS = 60 * 1000
	hourMS   = 60 * minuteMS
	dayMS    = 24 * hourMS
)

// planned is a fraudulent transaction an episode scheduled.
type planned struct {
	due        int64
	seq        uint64
	card, term int32
	amount     float64
	scen       uint8
}

type pendingHeap []planned

func (h pendingHeap) Len() int { return len(h) }
func (h pendingHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h pendingHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)   { *h = append(*h, x.(planned)) }
func (h *pendingHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// campaign is an active terminal compromise: until its end, cards used at
// term are skimmed with some probability and later defrauded.
type campaign struct {
	term         int32
	start, until int64
	maxCards     int     // most cards it skims, spread over its window
	capacity     float64 // most fraud transactions it plans
	planned      float64 // fraud transactions planned so far
	captured     []int32
}

func (g *Generator) initFraud() {
	m := g.cfg.Mix
	shares := [numScenarios]float64{m.CompromisedTerminal, m.AccountTakeover, m.CardTesting, m.MerchantCollusion}
	var total float64
	for _, s := range shares {
		total += s
	}
	for s := range numScenarios {
		g.rate[s] = g.cfg.FraudRate * shares[s] / total
		g.need[s] = meanSize[s] * (0.5 + g.rng.Float64())
	}
	g.compromised = make([]bool, len(g.terms))
	g.nextExpiry = math.MaxInt64
}

// advanceFraud accrues fraud credit for one transaction and starts an
// episode of a scenario once its credit covers the episode's expected size.
// Episodes deduct the transactions they plan, so the realised fraud rate
// tracks FraudRate without a fixed period.
func (g *Generator) advanceFraud(ms int64) {
	if ms >= g.nextExpiry {
		g.nextExpiry = math.MaxInt64
		for i := 0; i < len(g.campaigns); {
			c := &g.campaigns[i]
			if ms >= c.until {
				g.compromised[c.term] = false
				g.campaigns = slices.Delete(g.campaigns, i, i+1)
				continue
			}
			g.nextExpiry = min(g.nextExpiry, c.until)
			i++
		}
	}
	for s := range numScenarios {
		if g.rate[s] == 0 {
			continue
		}
		g.credit[s] += g.rate[s]
		if g.credit[s] >= g.need[s] && g.credit[s]-g.outstanding(s, ms) >= g.need[s] && g.start(s, ms) {
			g.need[s] = meanSize[s] * (0.5 + g.rng.Float64())
		}
	}
}

// outstanding is the fraud that active episodes of scenario s are still
// expected to plan; it only gates new episodes, the credit itself is charged
// as transactions are planned. Only terminal compromises plan lazily (as
// cards are skimmed); their expectation fades quadratically over the
// campaign's window, which lets campaigns overlap from the start of a run
// (shorter warm-up) and keeps a campaign at a quiet terminal from blocking
// the next one for long.
func (g *Generator) outstanding(s int, ms int64) float64 {
	if s != scCompromised {
		return 0
	}
	var o float64
	for i := range g.campaigns {
		c := &g.campaigns[i]
		if left := c.capacity - c.planned; left > 0 && ms < c.until {
			f := float64(c.until-ms) / float64(c.until-c.start)
			o += left * f * f
		}
	}
	return o
}

func (g *Generator) plan(due int64, card, term int32, amount float64, scen int) {
	g.planSeq++ // orders ties of due deterministically
	heap.Push(&g.pending, planned{due: due, seq: g.planSeq, card: card, term: term, amount: amount, scen: uint8(scen)})
	g.credit[scen]--
}

// nightAfter returns a time in the local night (00:00-05:00) at or after ms.
func (g *Generator) nightAfter(ms int64) int64 {
	l := ms + localOffsetMS
	day := floorDiv(l, dayMS)
	t := day*dayMS + g.rng.Int64N(5*hourMS)
	if t < l {
		t += dayMS
	}
	return t - localOffsetMS
}

// pickN draws n terminals from a (or, when a is nil, from any terminal).
func (g *Generator) pickN(a *alias, n int) []int32 {
	if a == nil {
		a = g.anyTerm
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = a.sample(g.rng)
	}
	return out
}

func orAlias(a, b *alias) *alias {
	if a != nil {
		return a
	}
	return b
}

func (g *Generator) start(s int, ms int64) bool {
	r := g.rng
	switch s {
	case scCompromised:
		if len(g.campaigns) >= maxCampaigns || g.homePOS == nil {
			return false
		}
		t := g.homePOS.sample(r)
		if g.compromised[t] {
			return false
		}
		maxCards := 5 + r.IntN(16)
		g.compromised[t] = true
		until := ms + 7*dayMS + r.Int64N(21*dayMS)
		g.nextExpiry = min(g.nextExpiry, until)
		g.campaigns = append(g.campaigns, campaign{
			term:     t,
			start:    ms,
			until:    until,
			maxCards: maxCards,
			capacity: float64(maxCards) * 2,
		})

	case scTakeover:
		ci := int32(r.IntN(len(g.cards)))
		c := &g.cards[ci]
		at := ms // at once, or in the coming night
		if r.Float64() < 0.6 {
			at = g.nightAfter(at)
		}
		var terms []int32
		switch u := r.Float64(); {
		case u < 0.5 && len(g.farCountries) > 0: // cloned card abroad: geo velocity
			far := g.farCountries[r.IntN(len(g.farCountries))]
			terms = g.pickN(orAlias(g.cities[g.cityPick[far].sample(r)].terms, g.byCountry[far]), 1+r.IntN(3))
		case u < 0.8: // web shops selling resaleable goods
			terms = g.pickN(orAlias(g.ecomHigh, g.ecom), 1+r.IntN(3))
		default: // at home, but not where the card usually shops
			terms = g.pickN(g.byCountry[c.home], 1+r.IntN(3))
		}
		typical := math.Exp(c.mu)
		for range 3 + r.IntN(6) {
			a := math.Max(typical*(4+8*r.Float64()), 150+250*r.Float64()) * math.Exp(0.3*r.NormFloat64())
			g.plan(at, ci, terms[r.IntN(len(terms))], math.Min(a, 8000), s)
			at += 3*minuteMS + r.Int64N(37*minuteMS)
		}

	case scTesting:
		ci := int32(r.IntN(len(g.cards)))
		at := ms + r.Int64N(5*minuteMS)
		if r.Float64() < 0.4 {
			at = g.nightAfter(at)
		}
		terms := g.pickN(orAlias(g.ecomTest, g.ecom), 1+r.IntN(3))
		for range 6 + r.IntN(15) {
			a := 0.5 + 2.5*r.Float64()
			if r.Float64() < 0.3 {
				a = 1
			}
			g.plan(at, ci, terms[r.IntN(len(terms))], a, s)
			at += 8000 + r.Int64N(52000)
		}
		at += 3*minuteMS + r.Int64N(27*minuteMS)
		g.plan(at, ci, g.pickN(orAlias(g.ecomHigh, g.ecom), 1)[0], 200+1300*r.Float64(), s)

	case scCollusion:
		if len(g.homePOSList) == 0 {
			return false
		}
		t := g.homePOSList[r.IntN(len(g.homePOSList))] // any shop, popular or not
		span := dayMS + r.Int64N(3*dayMS)
		first := true
		for range 4 + r.IntN(7) {
			ci := int32(r.IntN(len(g.cards)))
			for range 2 + r.IntN(4) {
				at := ms + r.Int64N(span)
				if first { // the ring starts at once
					at, first = ms, false
				}
				if h := clockOf(at).hour; h < 9 || h > 20 { // during opening hours
					at += int64((9+r.IntN(12)-h+24)%24) * hourMS
				}
				a := collusionAmounts[r.IntN(len(collusionAmounts))]
				if r.Float64() < 0.3 {
					a -= math.Round(r.Float64() * 1000 / 100)
				}
				g.plan(at, ci, t, a, s)
			}
		}
	}
	return true
}

// collusionAmounts sit just under round limits.
var collusionAmounts = []float64{250, 299, 450, 499, 500, 750, 900, 950, 990, 999, 1000, 1450, 1500, 1999}

// captureSkim skims card ci if terminal ti is compromised, planning later
// fraudulent uses of the card: at the terminal itself (so its label-based
// fraud rate rises), at web shops, or cloned in another country.
// Skimming is paced over the campaign's window (at most its share of
// maxCards so far, plus one), so fraud at the terminal goes on long enough
// for its delayed labels to matter.
func (g *Generator) captureSkim(ci, ti int32, ms int64) {
	if !g.compromised[ti] {
		return
	}
	for i := range g.campaigns {
		c := &g.campaigns[i]
		if c.term != ti || ms >= c.until || c.planned >= c.capacity {
			continue
		}
		r := g.rng
		paced := float64(c.maxCards)*float64(ms-c.start)/float64(c.until-c.start) + 1
		if float64(len(c.captured)) >= paced || r.Float64() >= 0.5 || slices.Contains(c.captured, ci) {
			return
		}
		c.captured = append(c.captured, ci)
		cd := &g.cards[ci]
		base := math.Max(math.Exp(g.terms[ti].logTyp), math.Exp(cd.mu))
		for range 1 + r.IntN(3) {
			at := ms + int64(math.Exp(math.Log(2*minuteMS)+r.Float64()*math.Log(3*dayMS/(2*minuteMS))))
			if r.Float64() < 0.5 {
				at = g.nightAfter(at)
			}
			term := ti
			switch u := r.Float64(); {
			case u < 0.6:
			case u < 0.8:
				term = g.pickN(orAlias(g.ecomHigh, g.ecom), 1)[0]
			default:
				other := uint8(r.IntN(10)) // a home country
				if other == cd.home {
					other = (other + 1) % 10
				}
				term = g.pickN(g.byCountry[other], 1)[0]
			}
			a := base * (1.5 + 3.5*r.Float64())
			if g.terms[term].channel == chanATM {
				a = math.Max(100, roundTo(a*3, 50))
			}
			g.plan(at, ci, term, a, scCompromised)
			c.planned++
		}
		return
	}
}
