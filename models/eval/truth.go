package eval

import "time"

// Label is fraud feedback about one transaction: the part of the label
// contract ({"tx_id","card_id","terminal_id","ts","fraud"}) evaluation needs.
type Label struct {
	TxID  string
	TS    time.Time // when the label became known, not the transaction's time
	Fraud bool
	// Scenario is the kind of fraud ("card_testing", ...) when the label
	// names one; "" otherwise.
	Scenario string
}

// Truth is the fraud status of the labelled transactions, by tx_id. A
// transaction that is not in it is genuine.
type Truth map[string]bool

// NewTruth returns the truth as known at the end of labels: for each tx_id
// the label with the latest TS wins, and of labels with equal TS the later in
// the slice (the feed's order), so a fraud:false correction published after a
// fraud:true label clears it, and the other way round.
func NewTruth(labels []Label) Truth {
	t := make(Truth, len(labels))
	latest := make(map[string]time.Time, len(labels))
	for i := range labels {
		l := &labels[i]
		if ts, ok := latest[l.TxID]; ok && l.TS.Before(ts) {
			continue
		}
		latest[l.TxID] = l.TS
		t[l.TxID] = l.Fraud
	}
	return t
}

// Frauds returns the number of transactions whose truth is fraud.
func (t Truth) Frauds() int {
	n := 0
	for _, f := range t {
		if f {
			n++
		}
	}
	return n
}

// Scenarios returns the fraud scenario of each transaction whose truth (as
// NewTruth decides it) is fraud and whose deciding label names a scenario.
func Scenarios(labels []Label) map[string]string {
	out := map[string]string{}
	latest := make(map[string]time.Time, len(labels))
	for i := range labels {
		l := &labels[i]
		if ts, ok := latest[l.TxID]; ok && l.TS.Before(ts) {
			continue
		}
		latest[l.TxID] = l.TS
		if l.Fraud && l.Scenario != "" {
			out[l.TxID] = l.Scenario
		} else {
			delete(out, l.TxID)
		}
	}
	return out
}
