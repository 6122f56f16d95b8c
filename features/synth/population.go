package synth

import (
	"math"
	"slices"
	"strconv"
)

// country is a place cards live in or terminals stand in. Cards live only in
// the home countries (home > 0); the others host terminals for travel and
// fraud.
type country struct {
	code             string
	lat, lon, spread float64 // centre and spread (degrees) of locations
	home             float64 // weight as a card's home country
	far              bool    // typical destination of account-takeover cash-out
	travel           float64 // weight as a genuine travel destination
}

var countries = []country{
	{"FR", 46.6, 2.4, 2.2, 0.22, false, 1.0},
	{"DE", 51.1, 10.4, 2.0, 0.24, false, 0.8},
	{"ES", 40.4, -3.7, 2.2, 0.14, false, 1.6},
	{"IT", 42.8, 12.5, 2.2, 0.14, false, 1.4},
	{"NL", 52.2, 5.3, 0.6, 0.07, false, 0.5},
	{"BE", 50.6, 4.6, 0.5, 0.05, false, 0.3},
	{"AT", 47.6, 14.1, 0.9, 0.04, false, 0.5},
	{"PT", 39.6, -8.0, 1.0, 0.04, false, 0.8},
	{"IE", 53.2, -8.0, 0.9, 0.03, false, 0.3},
	{"PL", 52.0, 19.4, 1.8, 0.03, false, 0.3},
	{"GB", 53.0, -1.5, 1.8, 0, false, 0.8},
	{"GR", 38.5, 23.0, 1.5, 0, false, 0.7},
	{"US", 39.0, -98.0, 9.0, 0, true, 0.4},
	{"BR", -14.0, -51.0, 6.0, 0, true, 0.05},
	{"NG", 9.0, 8.0, 2.5, 0, true, 0.02},
	{"RU", 55.7, 37.6, 4.0, 0, true, 0.02},
	{"CN", 34.0, 104.0, 7.0, 0, true, 0.05},
	{"TH", 14.0, 101.0, 2.5, 0, true, 0.2},
	{"AE", 24.4, 54.4, 0.8, 0, true, 0.1},
	{"TR", 39.0, 35.0, 3.0, 0, false, 0.3},
	{"MA", 31.8, -7.0, 1.8, 0, false, 0.15},
}

// Terminal channels.
const (
	chanPOS uint8 = iota
	chanATM
	chanEcom
)

var channelNames = [...]string{chanPOS: "pos", chanATM: "atm", chanEcom: "ecom"}

// Hour-of-day profiles of merchant categories.
const (
	profDay = iota // shops
	profFood
	profFast
	profMorning
	profCommute
	profNight
	profAlways
	numProfiles
)

// mcc is a merchant category: code, amount level relative to a card's
// typical amount, opening-hours profile and share of terminals.
type mcc struct {
	code    string
	factor  float64 // multiplies the card's typical amount
	profile int
	channel uint8
	share   float64
}

var mccs = []mcc{
	{"5411", 1.0, profDay, chanPOS, 0.20},      // grocery
	{"5812", 1.4, profFood, chanPOS, 0.11},     // restaurants
	{"5814", 0.35, profFast, chanPOS, 0.07},    // fast food
	{"5499", 0.22, profMorning, chanPOS, 0.06}, // bakery, coffee
	{"5541", 1.5, profAlways, chanPOS, 0.06},   // fuel
	{"5912", 0.7, profDay, chanPOS, 0.05},      // pharmacy
	{"5311", 1.8, profDay, chanPOS, 0.04},      // department store
	{"5651", 2.0, profDay, chanPOS, 0.05},      // clothing
	{"5732", 3.5, profDay, chanPOS, 0.02},      // electronics
	{"5944", 5.0, profDay, chanPOS, 0.008},     // jewellery
	{"4111", 0.1, profCommute, chanPOS, 0.04},  // transit
	{"5813", 0.8, profNight, chanPOS, 0.04},    // bars
	{"7011", 4.0, profAlways, chanPOS, 0.02},   // hotels
	{"6011", 2.5, profAlways, chanATM, 0.05},   // ATM cash
	{"5999", 1.1, profAlways, chanEcom, 0.07},  // online retail
	{"5815", 0.3, profAlways, chanEcom, 0.04},  // digital goods
	{"5732", 3.0, profAlways, chanEcom, 0.02},  // online electronics
	{"4511", 6.0, profAlways, chanEcom, 0.01},  // airlines
	{"4829", 4.0, profAlways, chanEcom, 0.01},  // money transfer
	{"7995", 1.5, profAlways, chanEcom, 0.01},  // betting
}

// profileWeight returns the relative activity of a merchant profile at a
// local hour (0-23).
func profileWeight(p, h int) float64 {
	in := func(lo, hi int) bool { return h >= lo && h <= hi }
	switch p {
	case profDay:
		switch {
		case in(8, 20):
			return 1
		case h == 7 || h == 21:
			return 0.3
		}
		return 0.02
	case profFood:
		switch {
		case in(11, 14):
			return 1
		case in(18, 22):
			return 1.3
		case in(15, 17):
			return 0.3
		}
		return 0.03
	case profFast:
		switch {
		case in(7, 23):
			return 1
		case in(0, 2):
			return 0.4
		}
		return 0.1
	case profMorning:
		switch {
		case in(6, 11):
			return 1.5
		case in(12, 18):
			return 0.6
		}
		return 0.05
	case profCommute:
		switch {
		case in(7, 9), in(16, 19):
			return 2
		case in(10, 15):
			return 0.6
		case in(20, 23):
			return 0.5
		}
		return 0.1
	case profNight:
		switch {
		case in(18, 23):
			return 1.5
		case in(0, 2):
			return 1.2
		case in(12, 17):
			return 0.2
		}
		return 0.05
	}
	if in(0, 5) {
		return 0.3
	}
	return 1
}

// weekendFactor scales a merchant profile on Saturdays and Sundays.
var weekendFactor = [numProfiles]float64{profDay: 1, profFood: 1.3, profFast: 1.1, profMorning: 1.1, profCommute: 0.35, profNight: 1.6, profAlways: 1}

// Chronotypes: when a card's holder is active (local hour). The generator's
// overall intensity is their share-weighted sum.
var chronoShare = [3]float64{0.6, 0.3, 0.1}

var chronoCurve = [3][24]float64{
	{0.20, 0.10, 0.06, 0.05, 0.05, 0.10, 0.30, 0.65, 0.95, 1.10, 1.25, 1.45, 1.70, 1.55, 1.30, 1.25, 1.35, 1.55, 1.70, 1.55, 1.25, 0.90, 0.60, 0.35},
	{0.45, 0.25, 0.15, 0.10, 0.07, 0.07, 0.12, 0.25, 0.40, 0.55, 0.75, 1.00, 1.30, 1.25, 1.10, 1.10, 1.25, 1.50, 1.85, 2.00, 1.90, 1.60, 1.20, 0.80},
	{0.90, 0.80, 0.65, 0.50, 0.35, 0.25, 0.20, 0.25, 0.35, 0.45, 0.55, 0.70, 0.85, 0.85, 0.80, 0.85, 0.95, 1.10, 1.25, 1.40, 1.50, 1.50, 1.35, 1.10},
}

// dayFactor scales activity by weekday (Sunday = 0).
var dayFactor = [7]float64{0.72, 0.97, 0.98, 1.0, 1.02, 1.12, 1.1}

// localOffsetMS is the offset of the population's local time from UTC: the
// population lives in Central European Time (UTC+1, no daylight saving).
const localOffsetMS = 3600 * 1000

// clock is a local calendar position derived from an event time.
type clock struct {
	hour    int     // 0-23 local
	frac    float64 // position within the hour, [0,1)
	weekday int     // Sunday = 0
}

func clockOf(ms int64) clock {
	l := ms + localOffsetMS
	day := floorDiv(l, 86400000)
	inDay := l - day*86400000
	return clock{
		hour:    int(inDay / 3600000),
		frac:    float64(inDay%3600000) / 3600000,
		weekday: int(((day+4)%7 + 7) % 7), // 1970-01-01 was a Thursday
	}
}

func (c clock) weekend() bool { return c.weekday == 0 || c.weekday == 6 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// curveAt returns chronotype g's activity at a local hour, shifted later by
// 1.5 hours on weekends (people sleep in), interpolated within the hour.
func curveAt(g int, c clock) float64 {
	x := float64(c.hour) + c.frac
	if c.weekend() {
		x -= 1.5
	}
	x = math.Mod(x+24, 24)
	i := int(x)
	f := x - float64(i)
	return chronoCurve[g][i]*(1-f) + chronoCurve[g][(i+1)%24]*f
}

// intensityNorm makes the weekly mean of intensity 1.
var intensityNorm = func() float64 {
	var sum float64
	n := 0
	for d := 0; d < 7; d++ {
		for h := 0; h < 24; h++ {
			for q := 0; q < 4; q++ {
				sum += rawIntensity(clock{hour: h, frac: float64(q) / 4, weekday: d})
				n++
			}
		}
	}
	return sum / float64(n)
}()

func rawIntensity(c clock) float64 {
	var s float64
	for g := range chronoShare {
		s += chronoShare[g] * curveAt(g, c)
	}
	return s * dayFactor[c.weekday]
}

// intensity is Intensity at event time ms (Unix milliseconds).
func intensity(ms int64) float64 { return rawIntensity(clockOf(ms)) / intensityNorm }

type terminal struct {
	id       string
	country  uint8
	mcc      uint8
	channel  uint8
	lat, lon float64
	logTyp   float64 // log of the typical amount
	pop      float64 // popularity weight
}

// city is a cluster of terminals and card holders. Locations within a city
// are a few kilometres apart, so genuine geo velocity stays low.
type city struct {
	country  uint8
	lat, lon float64
	terms    *alias // the city's POS and ATM terminals, by popularity
}

type card struct {
	id       string
	home     uint8
	chrono   uint8
	city     int32
	lat, lon float64
	mu       float64 // log of the typical amount
	sigma    float64
	prefOff  int32 // preferred terminals are pref[prefOff : prefOff+prefN]
	prefN    uint8
	tripCity int32
	tripEnd  int64 // Unix ms; the card is abroad while ts < tripEnd
	last     int64 // Unix ms of the last transaction, 0 if none
}

// baseLogAmount is the log of the population's median typical amount (EUR).
var baseLogAmount = math.Log(32)

func roundTo(x, unit float64) float64 { return math.Round(x/unit) * unit }

// distKM returns the great-circle distance between two points.
func distKM(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	p1, p2 := lat1*math.Pi/180, lat2*math.Pi/180
	dp := p2 - p1
	dl := (lon2 - lon1) * math.Pi / 180
	a := math.Sin(dp/2)*math.Sin(dp/2) + math.Cos(p1)*math.Cos(p2)*math.Sin(dl/2)*math.Sin(dl/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}

// buildPopulation draws terminals and cards.
func (g *Generator) buildPopulation() {
	r := g.rng
	nc := len(countries)

	// Terminals.
	var homeW, allW []float64
	for _, c := range countries {
		homeW = append(homeW, c.home)
		w := c.home
		if w == 0 {
			w = 0.012
		}
		allW = append(allW, w)
	}
	homeA := newAlias(homeW, nil)
	allA := newAlias(allW, nil)
	var mccW []float64
	for _, m := range mccs {
		mccW = append(mccW, m.share)
	}
	mccA := newAlias(mccW, nil)
	// Ecom merchants sit mostly in the home countries, some abroad.
	ecomCountry := func() uint8 {
		if r.Float64() < 0.75 {
			return uint8(homeA.sample(r))
		}
		return []uint8{10, 12, 12, 12, 16}[r.IntN(5)] // GB, US, CN
	}

	// Cities: a few per country, Zipf-weighted.
	g.cityPick = make([]*alias, nc)
	for ci, c := range countries {
		n := 2 + int(c.home*40)
		var ids []int32
		var ws []float64
		for k := range n {
			ids = append(ids, int32(len(g.cities)))
			ws = append(ws, 1/float64(k+1))
			g.cities = append(g.cities, city{
				country: uint8(ci),
				lat:     math.Max(-80, math.Min(80, c.lat+c.spread*r.NormFloat64())),
				lon:     math.Max(-170, math.Min(170, c.lon+c.spread*1.3*r.NormFloat64())),
			})
		}
		g.cityPick[ci] = newAlias(ws, ids)
	}
	perCity := make([][]int32, len(g.cities))
	perCityW := make([][]float64, len(g.cities))

	g.terms = make([]terminal, g.cfg.Terminals)
	perCountry := make([][]int32, nc)
	perCountryW := make([][]float64, nc)
	var ecom, ecomTest, ecomHigh, homePOS []int32
	var ecomW, ecomTestW, ecomHighW, homePOSW []float64
	for i := range g.terms {
		t := &g.terms[i]
		t.id = "m-" + strconv.Itoa(i+1)
		t.mcc = uint8(mccA.sample(r))
		m := mccs[t.mcc]
		t.channel = m.channel
		t.pop = math.Exp(r.NormFloat64() * 1.0)
		t.logTyp = baseLogAmount + math.Log(m.factor) + 0.3*r.NormFloat64()
		idx := int32(i)
		if t.channel == chanEcom {
			t.country = ecomCountry()
			ecom, ecomW = append(ecom, idx), append(ecomW, t.pop)
			switch m.code {
			case "5815", "5999":
				ecomTest, ecomTestW = append(ecomTest, idx), append(ecomTestW, 1)
			case "5732", "4511", "4829", "7995":
				ecomHigh, ecomHighW = append(ecomHigh, idx), append(ecomHighW, t.pop)
			}
			continue
		}
		t.country = uint8(allA.sample(r))
		c := countries[t.country]
		cy := g.cityPick[t.country].sample(r)
		t.lat = math.Round((g.cities[cy].lat+0.06*r.NormFloat64())*1e4) / 1e4
		t.lon = math.Round((g.cities[cy].lon+0.09*r.NormFloat64())*1e4) / 1e4
		perCity[cy] = append(perCity[cy], idx)
		perCityW[cy] = append(perCityW[cy], t.pop)
		perCountry[t.country] = append(perCountry[t.country], idx)
		perCountryW[t.country] = append(perCountryW[t.country], t.pop)
		if c.home > 0 && t.channel == chanPOS {
			homePOS, homePOSW = append(homePOS, idx), append(homePOSW, t.pop)
		}
	}
	allT := make([]float64, len(g.terms))
	for i := range g.terms {
		allT[i] = g.terms[i].pop
	}
	g.anyTerm = newAlias(allT, nil)
	g.ecom = newAlias(ecomW, ecom)
	g.ecomTest = newAlias(ecomTestW, ecomTest)
	g.ecomHigh = newAlias(ecomHighW, ecomHigh)
	g.homePOS = newAlias(homePOSW, homePOS)
	g.homePOSList = homePOS
	for cy := range g.cities {
		g.cities[cy].terms = newAlias(perCityW[cy], perCity[cy])
	}
	g.byCountry = make([]*alias, nc)
	for c := range nc {
		g.byCountry[c] = newAlias(perCountryW[c], perCountry[c])
		if countries[c].far && g.byCountry[c] != nil {
			g.farCountries = append(g.farCountries, uint8(c))
		}
		if countries[c].home == 0 && g.byCountry[c] != nil {
			g.travelCountries = append(g.travelCountries, uint8(c))
			g.travelW = append(g.travelW, countries[c].travel)
		}
	}
	// Genuine trips also go to other home countries.
	for c := range nc {
		if countries[c].home > 0 && g.byCountry[c] != nil {
			g.travelCountries = append(g.travelCountries, uint8(c))
			g.travelW = append(g.travelW, countries[c].travel)
		}
	}
	g.travel = newAlias(g.travelW, nil)

	// Cards.
	g.cards = make([]card, g.cfg.Cards)
	activity := [3][]float64{}
	members := [3][]int32{}
	type cand struct {
		t int32
		d float64
	}
	cands := make([]cand, 0, 64)
	for i := range g.cards {
		c := &g.cards[i]
		c.id = "c-" + strconv.Itoa(i+1)
		c.home = uint8(homeA.sample(r))
		c.city = g.cityPick[c.home].sample(r)
		c.lat = g.cities[c.city].lat + 0.04*r.NormFloat64()
		c.lon = g.cities[c.city].lon + 0.06*r.NormFloat64()
		c.mu = baseLogAmount + 0.45*r.NormFloat64()
		c.sigma = 0.45 + 0.4*r.Float64()
		u := r.Float64()
		switch {
		case u < chronoShare[0]:
			c.chrono = 0
		case u < chronoShare[0]+chronoShare[1]:
			c.chrono = 1
		default:
			c.chrono = 2
		}
		act := math.Exp(0.9 * r.NormFloat64())
		activity[c.chrono] = append(activity[c.chrono], act)
		members[c.chrono] = append(members[c.chrono], int32(i))

		// Preferred terminals: the nearest of a popularity-weighted sample
		// of the home country's terminals, plus one or two web shops.
		c.prefOff = int32(len(g.pref))
		k := 3 + r.IntN(8)
		if a := orAlias(g.cities[c.city].terms, g.byCountry[c.home]); a != nil {
			cands = cands[:0]
			for range 4 * k {
				t := a.sample(r)
				if slices.ContainsFunc(cands, func(x cand) bool { return x.t == t }) {
					continue
				}
				tt := &g.terms[t]
				cands = append(cands, cand{t, distKM(c.lat, c.lon, tt.lat, tt.lon)})
			}
			slices.SortFunc(cands, func(a, b cand) int {
				if a.d != b.d {
					if a.d < b.d {
						return -1
					}
					return 1
				}
				return int(a.t - b.t)
			})
			for j := range min(k, len(cands)) {
				g.pref = append(g.pref, cands[j].t)
				g.prefW = append(g.prefW, 1/math.Pow(float64(j+1), 0.8))
			}
		}
		if g.ecom != nil {
			for range 1 + r.IntN(2) {
				g.pref = append(g.pref, g.ecom.sample(r))
				g.prefW = append(g.prefW, 0.25)
			}
		}
		c.prefN = uint8(int32(len(g.pref)) - c.prefOff)
	}
	for k := range 3 {
		g.chronoCards[k] = newAlias(activity[k], members[k])
	}
}
