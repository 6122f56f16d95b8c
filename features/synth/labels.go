package synth

import (
	"math"
	"time"

	"github.com/streamscore/streamscore/features"
)

// labelSigma is the log-normal spread of label delays.
const labelSigma = 0.6

// LabelFor returns the label of tx, if it gets one: every fraudulent
// transaction does, and a GenuineLabelRate sample of genuine ones (Fraud
// false). The label's TS is tx's time plus a log-normal delay with mean
// LabelDelay, so it always follows the transaction. The draw depends only on
// the seed and tx's TxID, not on call order: LabelFor may be called or not,
// in any order, without changing the transactions Next generates.
func (g *Generator) LabelFor(tx Tx) (features.Label, bool) {
	h := g.hash
	for i := 0; i < len(tx.Event.TxID); i++ { // FNV-1a over the id
		h ^= uint64(tx.Event.TxID[i])
		h *= 0x100000001b3
	}
	if !tx.Fraud && unit(mix64(h)) >= g.cfg.GenuineLabelRate {
		return features.Label{}, false
	}
	// Log-normal with mean LabelDelay: μ = ln(mean) − σ²/2.
	u1, u2 := unit(mix64(h+1)), unit(mix64(h+2))
	z := math.Sqrt(-2*math.Log(1-u1)) * math.Cos(2*math.Pi*u2)
	mean := float64(g.cfg.LabelDelay)
	d := time.Millisecond
	if mean > 0 {
		d = max(time.Duration(math.Exp(math.Log(mean)-labelSigma*labelSigma/2+labelSigma*z)), time.Millisecond)
	}
	return features.Label{
		TxID:       tx.Event.TxID,
		CardID:     tx.Event.CardID,
		TerminalID: tx.Event.TerminalID,
		TS:         tx.Event.TS.Add(d).Truncate(time.Millisecond),
		TxTS:       tx.Event.TS,
		Fraud:      tx.Fraud,
		Scenario:   tx.Scenario,
	}, true
}

// mix64 is the splitmix64 finaliser.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unit maps x to [0, 1).
func unit(x uint64) float64 { return float64(x>>11) / (1 << 53) }
