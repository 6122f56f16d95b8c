package eval

import "time"

// Truth is the fraud status of the labelled transactions, by tx_id. A
// transaction that is not in it is genuine.
type Truth map[string]bool

// Feedback decides, from a feed of fraud labels (the label contract,
// decoded by features), the truth as known at the end of the feed: for each
// tx_id the label with the latest time wins, and of labels with equal time
// the later added (the feed's order), so a fraud:false correction published
// after a fraud:true label clears it, and the other way round. The zero
// value is ready to use; a Feedback is not safe for concurrent use.
type Feedback struct {
	latest   map[string]time.Time
	truth    Truth
	scenario map[string]string
}

// Add records one label about transaction txID: ts is when the label became
// known (not the transaction's time), scenario the kind of fraud it names
// ("card_testing", ...) or "".
func (f *Feedback) Add(txID string, ts time.Time, fraud bool, scenario string) {
	if f.latest == nil {
		f.latest, f.truth, f.scenario = map[string]time.Time{}, Truth{}, map[string]string{}
	}
	if prev, ok := f.latest[txID]; ok && ts.Before(prev) {
		return
	}
	f.latest[txID] = ts
	f.truth[txID] = fraud
	if fraud && scenario != "" {
		f.scenario[txID] = scenario
	} else {
		delete(f.scenario, txID)
	}
}

// Truth returns the truth decided so far (shared with f: later Adds change
// it). It is never nil.
func (f *Feedback) Truth() Truth {
	if f.truth == nil {
		return Truth{}
	}
	return f.truth
}

// Scenarios returns the fraud scenario of each transaction whose truth is
// fraud and whose deciding label names a scenario (shared with f). It is
// never nil.
func (f *Feedback) Scenarios() map[string]string {
	if f.scenario == nil {
		return map[string]string{}
	}
	return f.scenario
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
