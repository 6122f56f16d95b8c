package stream

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
)

// ErrInvalidModelSet is wrapped by the errors of New, SetModels and Reload
// when a model set cannot serve this pipeline (no models, duplicate names, an
// input the features do not provide or define otherwise than when the model
// was trained (models.ErrFeatureMismatch), a model that records no feature
// definitions without WithUnpinnedModels (models.ErrUnpinned), a decision
// model that is not in the set); after New, the active set keeps serving.
var ErrInvalidModelSet = errors.New("stream: invalid model set")

// Outcomes of streamscore_stream_model_reloads_total.
const (
	reloadOK     = "ok"
	reloadFailed = "failed"
)

// modelSet is one immutable generation of models: the scoring (champion)
// models, which of them decide, the shadow models, and for every worker the
// scorers bound to the pipeline's feature layout. It is published through
// Pipeline.set; each worker picks up the newest set when it opens a batch,
// so all records of a batch come from one set. The workerModels of worker i
// are used by worker i only (Scorers are not safe for concurrent use).
type modelSet struct {
	gen     uint64
	models  []*models.Model
	decides []bool
	shadows []*models.Model
	workers []*workerModels
	guards  []*alertGuard // per model (nil: no validation rate), nil when the guard is off
}

// workerModels is what one worker scores a batch with.
type workerModels struct {
	scorers    []*models.Scorer
	shadows    []*models.Scorer
	shadowPeer []int // per shadow: index of the scoring model with its name, or -1 (compare with the final decision)
	rc         *recorder
	guards     []*alertGuard       // the set's, shared by its workers
	thresholds []output.Threshold  // audit "thresholds", read-only
	shadowIDs  []output.NamedModel // audit "shadow_models", read-only
	shadowRec  []output.NamedScore // audit "shadow", rewritten per record

	scoreObs  []prometheus.Observer
	shadowObs []prometheus.Observer
	alerts    []prometheus.Counter
	agree     []prometheus.Counter // per shadow
	disagree  []prometheus.Counter // per shadow
}

// decidingModels returns which of ms make decisions: those named in
// deciders, or all of them when deciders is empty. A name not among ms is
// an error.
func decidingModels(ms []*models.Model, deciders []string) ([]bool, error) {
	decides := make([]bool, len(ms))
	for i := range ms {
		decides[i] = len(deciders) == 0
	}
	for _, name := range deciders {
		found := false
		for i, m := range ms {
			if m.Name() == name {
				decides[i], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("decision model %q is not among the models", name)
		}
	}
	return decides, nil
}

// newModelSet validates ms (and the pipeline's shadow models) against the
// pipeline's feature layout and decision models, and binds one set of
// scorers per worker. It does the expensive part of a reload (binding,
// scratch allocation) off the workers' hot path.
func (p *Pipeline) newModelSet(ms, shadows []*models.Model) (*modelSet, error) {
	if len(ms) == 0 {
		return nil, errors.New("no models")
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if m == nil {
			return nil, errors.New("nil model")
		}
		if seen[m.Name()] {
			return nil, fmt.Errorf("two models named %q", m.Name())
		}
		seen[m.Name()] = true
	}
	seenShadow := map[string]bool{}
	for _, m := range shadows {
		if m == nil {
			return nil, errors.New("nil shadow model")
		}
		if seenShadow[m.Name()] {
			return nil, fmt.Errorf("two shadow models named %q", m.Name())
		}
		seenShadow[m.Name()] = true
	}
	decides, err := decidingModels(ms, p.cfg.deciders)
	if err != nil {
		return nil, err
	}
	if err := CheckModelFeatures(ms, shadows, p.defs, p.cfg.allowUnpinned, p.log); err != nil {
		return nil, err
	}
	s := &modelSet{models: ms, decides: decides, shadows: shadows, workers: make([]*workerModels, p.cfg.workers),
		guards: p.newAlertGuards(ms)}
	for i := range s.workers {
		wm, err := p.bindWorker(s)
		if err != nil {
			return nil, err
		}
		s.workers[i] = wm
	}
	return s, nil
}

// bindWorker binds a fresh set of scorers for one worker.
func (p *Pipeline) bindWorker(s *modelSet) (*workerModels, error) {
	wm := &workerModels{guards: s.guards}
	for _, m := range s.models {
		sc, err := m.Bind(p.names)
		if err != nil {
			return nil, err
		}
		wm.scorers = append(wm.scorers, sc)
		r, a := m.Thresholds()
		wm.thresholds = append(wm.thresholds, output.Threshold{Name: m.Name(), Review: float64(r), Alert: float64(a)})
		wm.scoreObs = append(wm.scoreObs, p.met.scoreSeconds.WithLabelValues(m.Name()))
		wm.alerts = append(wm.alerts, p.met.alerts.WithLabelValues(m.Name()))
	}
	for _, m := range s.shadows {
		sc, err := m.Bind(p.names)
		if err != nil {
			return nil, fmt.Errorf("shadow: %w", err)
		}
		wm.shadows = append(wm.shadows, sc)
		peer := -1
		for j, c := range s.models {
			if c.Name() == m.Name() {
				peer = j
			}
		}
		wm.shadowPeer = append(wm.shadowPeer, peer)
		wm.shadowIDs = append(wm.shadowIDs, output.NamedModel{Name: m.Name(), Ident: m.Ident()})
		wm.shadowRec = append(wm.shadowRec, output.NamedScore{Name: m.Name()})
		wm.shadowObs = append(wm.shadowObs, p.met.shadowSeconds.WithLabelValues(m.Name()))
		wm.agree = append(wm.agree, p.met.shadowAgreement.WithLabelValues(m.Name(), "agree"))
		wm.disagree = append(wm.disagree, p.met.shadowAgreement.WithLabelValues(m.Name(), "disagree"))
	}
	wm.rc = newRecorder(wm.scorers, s.decides, p.cfg.reasons)
	return wm, nil
}

// Models returns the scoring models of the active set (the last one
// SetModels or Reload published), in their order. The slice is a copy.
func (p *Pipeline) Models() []*models.Model {
	return append([]*models.Model(nil), p.set.Load().models...)
}

// ShadowModels returns the shadow models (WithShadowModels). The slice is a
// copy.
func (p *Pipeline) ShadowModels() []*models.Model {
	return append([]*models.Model(nil), p.set.Load().shadows...)
}

// SetModels replaces the scoring models, e.g. with new versions of them,
// while the pipeline runs (or before Run). The set is validated first: every
// model must bind to the pipeline's feature layout, names must be distinct,
// and every WithDecisionModels name must still be in the set. A set that
// fails leaves the active one serving; the error wraps ErrInvalidModelSet
// and the failure is logged and counted (streamscore_stream_model_reloads_total
// {outcome="failed"}).
//
// A valid set is bound for every worker here, in the caller's goroutine, and
// published atomically; each worker switches to it when it opens its next
// batch, so a batch is scored, decided and recorded by one set and no event
// is lost or scored twice by the switch. A worker with no traffic switches
// when its next event arrives. The shadow models stay as they are (see
// ReloadSets to replace them too).
//
// SetModels is safe for concurrent use; concurrent calls are serialised and
// the last one wins.
func (p *Pipeline) SetModels(ms []*models.Model) error {
	return p.Reload(func() ([]*models.Model, error) { return ms, nil })
}

// Reload calls load (in the caller's goroutine, off the hot path) and
// publishes the models it returns as SetModels does. An error from load (a
// model file that fails to parse or verify: models.ErrDigest,
// models.ErrInvalidModel, …) is returned wrapped, logged and counted as a
// failed reload, and the active set keeps serving. Reload is how a reloader
// reports every attempt, including those that never got as far as a model
// set. load runs with the reload lock held: it must not call SetModels or
// Reload.
func (p *Pipeline) Reload(load func() ([]*models.Model, error)) error {
	return p.ReloadSets(func() ([]*models.Model, []*models.Model, error) {
		ms, err := load()
		return ms, nil, err
	})
}

// ReloadSets is Reload for the scoring models and the shadow models
// together: load returns both, and a nil shadows keeps the active shadow
// models (an empty non-nil slice removes them). The two sets are validated
// together and published as one: a failure of either leaves both serving.
func (p *Pipeline) ReloadSets(load func() (ms, shadows []*models.Model, err error)) error {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	ms, shadows, err := load()
	if err != nil {
		err = fmt.Errorf("stream: load models: %w", err)
	} else {
		if shadows == nil {
			shadows = p.set.Load().shadows
		}
		var s *modelSet
		s, err = p.newModelSet(ms, shadows)
		if err == nil {
			s.gen = p.set.Load().gen + 1
			p.publish(s)
			p.met.reloads.WithLabelValues(reloadOK).Inc()
			idents := make([]string, len(ms))
			for i, m := range ms {
				idents[i] = m.Ident()
			}
			sh := make([]string, len(shadows))
			for i, m := range shadows {
				sh[i] = m.Ident()
			}
			p.log.Info("model set published", "generation", s.gen, "models", idents, "shadow_models", sh)
			return nil
		}
		err = fmt.Errorf("%w: %w", ErrInvalidModelSet, err)
	}
	p.met.reloads.WithLabelValues(reloadFailed).Inc()
	p.log.Error("model reload failed; the active models keep serving", "err", err, "active", p.activeIdents())
	return err
}

func (p *Pipeline) activeIdents() []string {
	s := p.set.Load()
	out := make([]string, len(s.models))
	for i, m := range s.models {
		out[i] = m.Ident()
	}
	return out
}

// publish makes s the active set and updates the active-model gauge. The
// caller holds setMu (or is New).
func (p *Pipeline) publish(s *modelSet) {
	p.set.Store(s)
	type key struct{ model, version, digest, role string }
	next := map[key]bool{}
	for _, m := range s.models {
		next[key{m.Name(), strconv.Itoa(m.Version()), m.Digest(), roleScoring}] = true
	}
	for _, m := range s.shadows {
		next[key{m.Name(), strconv.Itoa(m.Version()), m.Digest(), roleShadow}] = true
	}
	for _, l := range p.activeLabels {
		k := key{l[0], l[1], l[2], l[3]}
		if !next[k] {
			p.met.activeInfo.DeleteLabelValues(l[:]...)
		}
	}
	p.activeLabels = p.activeLabels[:0]
	for k := range next {
		l := [4]string{k.model, k.version, k.digest, k.role}
		p.met.activeInfo.WithLabelValues(l[:]...).Set(1)
		p.activeLabels = append(p.activeLabels, l)
	}
}

// Roles of streamscore_stream_model_active_info.
const (
	roleScoring = "scoring"
	roleShadow  = "shadow"
)
