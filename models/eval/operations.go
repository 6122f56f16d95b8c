package eval

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/streamscore/streamscore/models/train"
)

// OperatingShares are the shares of transactions alerted at which the
// operating-point table (Metrics.Operating) is computed.
var OperatingShares = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05}

// Money is the money view of the evaluated transactions (amounts from the
// score records).
type Money struct {
	// Records with an amount; the money figures need all of them, so with
	// any record missing one (records written before amounts were
	// published) they are null.
	WithAmount  int   `json:"with_amount"`
	TotalAmount Float `json:"total_amount"`
	FraudAmount Float `json:"fraud_amount"` // the loss if no fraud is stopped
	// AlertCost is the cost of handling one alert, in currency units, that
	// savings subtract (WithAlertCost; default 0).
	AlertCost float64 `json:"alert_cost"`
}

// DayOps is one UTC day of event time in operations terms: what the alert
// and review thresholds would have sent to the team, against the budget.
type DayOps struct {
	Day          string `json:"day"` // YYYY-MM-DD (UTC)
	Transactions int    `json:"transactions"`
	Fraud        int    `json:"fraud"`
	Alerts       int    `json:"alerts"`  // score >= alert threshold
	Reviews      int    `json:"reviews"` // score >= review threshold (alerts included)
	AlertFraud   int    `json:"alert_fraud"`
	// Precision of the day's alerts (null without alerts), recall of its
	// fraud (null without fraud).
	Precision Float `json:"precision"`
	Recall    Float `json:"recall"`
	// OverBudget is set when the day's alerts exceed the alert budget.
	OverBudget bool `json:"over_budget,omitempty"`
}

// Budget compares the alerts a day with an alert budget.
type Budget struct {
	Budget     string  `json:"budget"`  // "200/day" or "0.5%"
	Source     string  `json:"source"`  // where it comes from: --alert-budget, the model file
	PerDay     Float   `json:"per_day"` // alerts a day allowed (null for a rate budget)
	Rate       Float   `json:"rate"`    // share of transactions allowed (null for a per-day budget)
	Days       int     `json:"days"`
	DaysOver   int     `json:"days_over"` // days whose alerts exceed the budget
	MeanAlerts float64 `json:"mean_alerts_per_day"`
	MaxAlerts  int     `json:"max_alerts_per_day"`
}

// ScenarioRecall is the recall of one fraud scenario (labels that name
// one) at the review and alert thresholds, in transactions and in money.
type ScenarioRecall struct {
	Scenario     string `json:"scenario"` // "(unnamed)": fraud whose label names none
	Fraud        int    `json:"fraud"`
	ReviewCaught int    `json:"review_caught"`
	AlertCaught  int    `json:"alert_caught"`
	RecallReview Float  `json:"recall_review"`
	RecallAlert  Float  `json:"recall_alert"`
	Amount       Float  `json:"amount"`              // fraud amount of the scenario (null without amounts)
	AmountRecall Float  `json:"amount_recall_alert"` // share of it alerted
}

// unnamedScenario names fraud whose label carries no scenario.
const unnamedScenario = "(unnamed)"

// moneyCut fills the money and per-day fields of c: alerts a day over
// days, fraud amount alerted, its share of all fraud amount, and savings
// (fraud amount alerted − AlertCost × alerts).
func (e *evalData) moneyCut(c *Cut) {
	c.AlertsPerDay = Float(float64(c.Alerted) / float64(max(e.days, 1)))
	c.FraudAmount, c.AmountRecall, c.Savings = nan(), nan(), nan()
	if !e.amounts {
		return
	}
	var caught float64
	for i, s := range e.scores {
		if e.fraud[i] && s >= c.Threshold {
			caught += e.amount[i]
		}
	}
	c.FraudAmount = Float(caught)
	if e.fraudAmount > 0 {
		c.AmountRecall = Float(caught / e.fraudAmount)
	}
	c.Savings = Float(caught - e.alertCost*float64(c.Alerted))
}

func nan() Float { return Float(math.NaN()) }

// evalData is what the operations views read: one entry per evaluated
// transaction.
type evalData struct {
	scores, amount []float64
	fraud          []bool
	dayOf          []int32 // index into dayKeys
	dayKeys        []string
	days           int
	amounts        bool // every record has an amount
	withAmount     int  // records with an amount
	fraudAmount    float64
	alertCost      float64
}

func newEvalData(recs []Scored, scores []float64, fraud []bool, alertCost float64) *evalData {
	e := &evalData{scores: scores, fraud: fraud, amount: make([]float64, len(recs)), dayOf: make([]int32, len(recs)),
		amounts: true, alertCost: alertCost}
	idx := map[string]int32{}
	for i := range recs {
		key := recs[i].TS.UTC().Format(time.DateOnly)
		d, ok := idx[key]
		if !ok {
			d = int32(len(e.dayKeys))
			idx[key] = d
			e.dayKeys = append(e.dayKeys, key)
		}
		e.dayOf[i] = d
		if recs[i].HasAmount {
			e.withAmount++
		} else {
			e.amounts = false
		}
		e.amount[i] = recs[i].Amount
		if fraud[i] {
			e.fraudAmount += recs[i].Amount
		}
	}
	// Day indexes in time order.
	order := slices.Clone(e.dayKeys)
	sort.Strings(order)
	remap := make([]int32, len(e.dayKeys))
	for i, k := range e.dayKeys {
		remap[i] = int32(sort.SearchStrings(order, k))
	}
	for i := range e.dayOf {
		e.dayOf[i] = remap[e.dayOf[i]]
	}
	e.dayKeys = order
	e.days = len(order)
	return e
}

// money returns the money summary.
func (e *evalData) money() Money {
	m := Money{WithAmount: e.withAmount, TotalAmount: nan(), FraudAmount: nan(), AlertCost: e.alertCost}
	if e.amounts {
		var total float64
		for _, a := range e.amount {
			total += a
		}
		m.TotalAmount, m.FraudAmount = Float(total), Float(e.fraudAmount)
	}
	return m
}

// perDay returns the alerts, reviews and fraud of each day at the given
// thresholds.
func (e *evalData) perDay(review, alert float64) []DayOps {
	out := make([]DayOps, e.days)
	for d := range out {
		out[d].Day = e.dayKeys[d]
	}
	for i, s := range e.scores {
		d := &out[e.dayOf[i]]
		d.Transactions++
		if e.fraud[i] {
			d.Fraud++
		}
		if s >= review {
			d.Reviews++
		}
		if s >= alert {
			d.Alerts++
			if e.fraud[i] {
				d.AlertFraud++
			}
		}
	}
	for i := range out {
		out[i].Precision = Float(ratio(out[i].AlertFraud, out[i].Alerts))
		out[i].Recall = Float(ratio(out[i].AlertFraud, out[i].Fraud))
	}
	return out
}

// checkBudget marks the days over budget b and summarises them.
func checkBudget(days []DayOps, b train.Budget, source string) *Budget {
	out := &Budget{Budget: b.String(), Source: source, PerDay: nan(), Rate: nan(), Days: len(days)}
	if b.PerDay > 0 {
		out.PerDay = Float(b.PerDay)
	} else {
		out.Rate = Float(b.Rate)
	}
	total := 0
	for i := range days {
		d := &days[i]
		allowed := b.Allowed(d.Transactions, 1)
		if d.Alerts > allowed {
			d.OverBudget = true
			out.DaysOver++
		}
		total += d.Alerts
		out.MaxAlerts = max(out.MaxAlerts, d.Alerts)
	}
	if len(days) > 0 {
		out.MeanAlerts = float64(total) / float64(len(days))
	}
	return out
}

// scenarioRecall returns the recall per scenario, in the order of the
// scenarios' names, "(unnamed)" last; nil when no label names a scenario.
func (e *evalData) scenarioRecall(recs []Scored, scen map[string]string, review, alert float64) []ScenarioRecall {
	if len(scen) == 0 {
		return nil
	}
	by := map[string]*ScenarioRecall{}
	amount := map[string][2]float64{}
	for i := range recs {
		if !e.fraud[i] {
			continue
		}
		name := scen[recs[i].TxID]
		if name == "" {
			name = unnamedScenario
		}
		r := by[name]
		if r == nil {
			r = &ScenarioRecall{Scenario: name}
			by[name] = r
		}
		r.Fraud++
		a := amount[name]
		a[0] += e.amount[i]
		if e.scores[i] >= review {
			r.ReviewCaught++
		}
		if e.scores[i] >= alert {
			r.AlertCaught++
			a[1] += e.amount[i]
		}
		amount[name] = a
	}
	names := make([]string, 0, len(by))
	for n := range by {
		if n != unnamedScenario {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if _, ok := by[unnamedScenario]; ok {
		names = append(names, unnamedScenario)
	}
	out := make([]ScenarioRecall, 0, len(names))
	for _, n := range names {
		r := by[n]
		r.RecallReview = Float(ratio(r.ReviewCaught, r.Fraud))
		r.RecallAlert = Float(ratio(r.AlertCaught, r.Fraud))
		r.Amount, r.AmountRecall = nan(), nan()
		if e.amounts {
			a := amount[n]
			r.Amount = Float(a[0])
			if a[0] > 0 {
				r.AmountRecall = Float(a[1] / a[0])
			}
		}
		out = append(out, *r)
	}
	return out
}

// operating returns the cuts that alert each of OperatingShares of the
// transactions, named "top 0.5%" etc., with their money and per-day
// fields.
func (e *evalData) operating() []Cut {
	out := make([]Cut, 0, len(OperatingShares))
	for _, share := range OperatingShares {
		t := TopShareThreshold(e.scores, share)
		c := AtThreshold(fmt.Sprintf("top %g%%", share*100), e.scores, e.fraud, t)
		e.moneyCut(&c)
		out = append(out, c)
	}
	return out
}

// moneyCurve returns, for each distinct score from the highest, the alerts
// a day, the recall, the amount recall and the savings of alerting at it
// (amount figures NaN without amounts). Used by the savings plot.
func (e *evalData) moneyCurve() (perDay, recall, amountRecall, savings []float64) {
	idx := make([]int32, len(e.scores))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		switch sa, sb := e.scores[a], e.scores[b]; {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	pos := 0
	for _, f := range e.fraud {
		if f {
			pos++
		}
	}
	days := float64(max(e.days, 1))
	tp, n := 0, 0
	var caught float64
	for i := 0; i < len(idx); {
		t := e.scores[idx[i]]
		for ; i < len(idx) && e.scores[idx[i]] == t; i++ {
			n++
			if e.fraud[idx[i]] {
				tp++
				caught += e.amount[idx[i]]
			}
		}
		perDay = append(perDay, float64(n)/days)
		recall = append(recall, ratio(tp, pos))
		if e.amounts && e.fraudAmount > 0 {
			amountRecall = append(amountRecall, caught/e.fraudAmount)
			savings = append(savings, caught-e.alertCost*float64(n))
		} else {
			amountRecall = append(amountRecall, math.NaN())
			savings = append(savings, math.NaN())
		}
	}
	return perDay, recall, amountRecall, savings
}
