package models

import "fmt"

// Decision is the action a score leads to.
type Decision uint8

// Decisions, in increasing severity.
const (
	DecisionAllow  Decision = iota // score below the review threshold
	DecisionReview                 // review <= score < alert (or a NaN score)
	DecisionAlert                  // score >= alert
)

// String returns "allow", "review" or "alert".
func (d Decision) String() string {
	switch d {
	case DecisionAllow:
		return "allow"
	case DecisionReview:
		return "review"
	case DecisionAlert:
		return "alert"
	}
	return fmt.Sprintf("Decision(%d)", uint8(d))
}

// Reason is one feature's contribution to a score, in the model's
// attribution units (see [Scorer.Reasons]).
type Reason struct {
	Feature      string
	Contribution float32
}
