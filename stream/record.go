package stream

import (
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
)

// recorder turns the model outputs of one event into its score record: the
// decision rule (the most severe decision among the deciding models), the
// reason codes of the model that drove it, and the record fields. The
// stream's workers and Replay share it, so offline scores are the stream's.
// A recorder is not safe for concurrent use.
type recorder struct {
	scorers      []*models.Scorer
	decides      []bool
	firstDecider int // the driver when every decision is allow
	reasons      int

	rec       output.ScoreRecord
	rs        []models.Reason
	decisions []models.Decision // per model, for the last record
}

func newRecorder(scorers []*models.Scorer, decides []bool, reasons int) *recorder {
	rc := &recorder{scorers: scorers, decides: decides, reasons: reasons, decisions: make([]models.Decision, len(scorers))}
	for j, d := range decides {
		if d {
			rc.firstDecider = j
			break
		}
	}
	rc.rec.Scores = make([]output.NamedScore, len(scorers))
	rc.rec.Models = make([]output.NamedModel, len(scorers))
	for j, s := range scorers {
		rc.rec.Scores[j].Name = s.Model().Name()
		rc.rec.Models[j] = output.NamedModel{Name: s.Model().Name(), Ident: s.Model().Ident()}
	}
	return rc
}

// fill sets the record of event ev, row r of the batch matrix x (rows ×
// features), whose model outputs are scores[model][r], and returns its
// decision. Reasons are computed for review and alert decisions only.
func (rc *recorder) fill(ev *features.Event, x []float32, r int, scores [][]float32, scoredAt time.Time, latencyMS float64) models.Decision {
	decision, driver := models.DecisionAllow, rc.firstDecider
	for j, s := range rc.scorers {
		v := scores[j][r]
		rc.rec.Scores[j].Value = float64(v)
		d := s.Decide(v)
		rc.decisions[j] = d
		if rc.decides[j] && d > decision {
			decision, driver = d, j
		}
	}
	rec := &rc.rec
	rec.TxID, rec.CardID, rec.TS, rec.ScoredAt = ev.TxID, ev.CardID, ev.TS, scoredAt
	rec.Amount, rec.Currency = ev.Amount, ev.Currency
	rec.CardKeyID, _ = features.PseudonymKeyID(ev.CardID)
	rec.Decision = decision.String()
	rec.LatencyMS = latencyMS
	rec.Reasons = rec.Reasons[:0]
	if rc.reasons > 0 && decision != models.DecisionAllow {
		rc.rs = rc.scorers[driver].Reasons(x, r, rc.reasons, rc.rs[:0])
		for _, rs := range rc.rs {
			rec.Reasons = append(rec.Reasons, output.Reason{Feature: rs.Feature, Contribution: float64(rs.Contribution)})
		}
	}
	return decision
}
