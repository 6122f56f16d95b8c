package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// captureSink keeps a copy of every message it acks, in memory.
type captureSink struct {
	mu   sync.Mutex
	msgs []output.Message
}

func (s *captureSink) Name() string { return "capture" }
func (s *captureSink) WriteBatch(_ context.Context, msgs []output.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		// The pipeline reuses the batch's bytes once the write returns.
		m.Key = append([]byte(nil), m.Key...)
		m.Value = append([]byte(nil), m.Value...)
		s.msgs = append(s.msgs, m)
	}
	return nil
}
func (s *captureSink) Close() error { return nil }

func (s *captureSink) byKind(k output.Kind) []output.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ofKind(s.msgs, k)
}

// ofKind returns the messages of kind k among msgs.
func ofKind(msgs []output.Message, k output.Kind) []output.Message {
	var out []output.Message
	for _, m := range msgs {
		if m.Kind == k {
			out = append(out, m)
		}
	}
	return out
}

// auditJSON is an audit record as other systems read it.
type auditJSON struct {
	TxID       string             `json:"tx_id"`
	Scores     map[string]float64 `json:"scores"`
	Decision   string             `json:"decision"`
	Models     map[string]string  `json:"models"`
	Thresholds map[string]struct {
		Review float64 `json:"review"`
		Alert  float64 `json:"alert"`
	} `json:"thresholds"`
	Shadow       map[string]float64 `json:"shadow"`
	ShadowModels map[string]string  `json:"shadow_models"`
}

// decide mirrors models.Scorer.Decide for a record's values: float32
// numbers, which records print in their shortest float32 form.
func decide(score, review, alert float64) string {
	switch {
	case float32(score) >= float32(alert):
		return "alert"
	case float32(score) >= float32(review):
		return "review"
	}
	return "allow"
}

// TestReloadMidStream swaps the decision model for a new version while
// events flow, then tries two bad reloads, and checks that every event got
// exactly one score and audit record, each batch scored by one model set
// (ident, thresholds and decision agree within every record), per partition
// the old version strictly before the new one, and everything produced
// after the swap scored by the new version.
func TestReloadMidStream(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 4})
	ms := shippedModels(t)
	var oldFraud *models.Model
	for _, m := range ms {
		if m.Name() == "fraud" {
			oldFraud = m
		}
	}
	newFraud := shippedVariant(t, "fraud.json", func(f *models.File) {
		f.Version++
		f.Thresholds.Review, f.Thresholds.Alert = 0.05, 0.2
	})
	if newFraud.Ident() == oldFraud.Ident() {
		t.Fatal("the new version has the old ident")
	}

	sink := &captureSink{}
	reg := prometheus.NewPedanticRegistry()
	p := newPipeline(t, brokers, "reload", ms, sink,
		stream.WithRegisterer(reg), stream.WithDecisionModels(models.ShippedDecisionModel),
		stream.WithMaxBatch(32), stream.WithMaxDelay(2*time.Millisecond), stream.WithCommitInterval(50*time.Millisecond))
	r := runPipeline(t, p)

	g, err := synth.New(synth.Config{Seed: 5, Cards: 200, Terminals: 30, FraudRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter(t, brokers, txTopic)
	start := time.Now().Add(-6 * time.Hour)

	// Phase 1: a producer keeps writing while the model is swapped.
	var phase1 []string
	var prodErr error
	prodDone := make(chan struct{})
	t.Cleanup(func() { <-prodDone }) // before the writer and the cluster close, should the test fail early
	go func() {
		defer close(prodDone)
		for i := range 20 {
			ids, err := writeSynth(w, g, fmt.Sprintf("a%d", i), start.Add(time.Duration(i)*200*time.Second), 200)
			if err != nil {
				prodErr = err
				return
			}
			phase1 = append(phase1, ids...)
		}
	}()
	waitScored(t, p, 1000)
	// The GRU's new version reads its inputs in another order: its state
	// shape changed, so every card's GRU state restarts from zero (counted).
	newGRU := shippedVariant(t, "fraud_gru.json", func(f *models.File) {
		f.Version++
		f.Inputs[0], f.Inputs[1] = f.Inputs[1], f.Inputs[0]
	})
	set := []*models.Model{newFraud}
	for _, m := range ms[1:] {
		if m.Name() == "fraud_gru" {
			m = newGRU
		}
		set = append(set, m)
	}
	if err := p.SetModels(set); err != nil {
		t.Fatalf("SetModels(new fraud version): %v", err)
	}
	swappedAt := p.Stats().Scored.Load()
	<-prodDone
	if prodErr != nil {
		t.Fatal(prodErr)
	}

	// Bad reloads while events flow: both leave the new version serving.
	tampered := shippedVariantBytes(t, "fraud.json", func(f *models.File) { f.Version += 2 })
	tampered = []byte(strings.Replace(string(tampered), `"version": `+strconv.Itoa(oldFraud.Version()+2), `"version": 99`, 1))
	err = p.Reload(func() ([]*models.Model, error) {
		m, err := models.Parse(tampered)
		if err != nil {
			return nil, err
		}
		return append([]*models.Model{m}, ms[1:]...), nil
	})
	if !errors.Is(err, models.ErrDigest) {
		t.Fatalf("Reload(tampered digest) = %v, want models.ErrDigest", err)
	}
	missing := shippedVariant(t, "fraud.json", func(f *models.File) { f.Version += 3; f.Inputs[0].Name = "no_such_feature" })
	err = p.SetModels(append([]*models.Model{missing}, ms[1:]...))
	if !errors.Is(err, stream.ErrInvalidModelSet) || !errors.Is(err, models.ErrMissingInput) {
		t.Fatalf("SetModels(missing input) = %v, want ErrInvalidModelSet and models.ErrMissingInput", err)
	}
	if got := p.Models()[0].Ident(); got != newFraud.Ident() {
		t.Fatalf("after failed reloads the active fraud model is %s, want %s", got, newFraud.Ident())
	}

	// Phase 2: produced after every phase-1 event was scored, so it lands
	// in batches opened after the swap.
	waitScored(t, p, len(phase1))
	phase2 := produceSynth(t, w, g, "b", start.Add(5*time.Hour), 1000)
	total := len(phase1) + len(phase2)
	waitScored(t, p, total)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := metricValue(t, reg, "streamscore_stream_model_state_resets_total", "model", "fraud_gru"); n == 0 {
		t.Error("the GRU's state shape changed, but no card's state was reset")
	} else {
		t.Logf("%v cards' GRU state reset by the reload", n)
	}

	type rec struct {
		part   int
		off    int64
		ident  string
		record auditJSON
	}
	check := func(kind output.Kind) map[string]rec {
		got := map[string]rec{}
		for _, m := range sink.byKind(kind) {
			var r auditJSON
			if err := json.Unmarshal(m.Value, &r); err != nil {
				t.Fatalf("%v record is not JSON: %v: %s", kind, err, m.Value)
			}
			if _, dup := got[r.TxID]; dup {
				t.Fatalf("tx %s: two %v records", r.TxID, kind)
			}
			parts := strings.Split(m.ID, "/")
			part, _ := strconv.Atoi(parts[1])
			off, _ := strconv.ParseInt(parts[2], 10, 64)
			ident := r.Models["fraud"]
			if ident != oldFraud.Ident() && ident != newFraud.Ident() {
				t.Fatalf("tx %s: fraud model %q is neither the old nor the new version", r.TxID, ident)
			}
			if len(r.Scores) != len(ms) || len(r.Models) != len(ms) {
				t.Fatalf("tx %s: mangled record %s", r.TxID, m.Value)
			}
			if r.Shadow != nil {
				t.Fatalf("tx %s: shadow member without shadow models: %s", r.TxID, m.Value)
			}
			got[r.TxID] = rec{part, off, ident, r}
		}
		return got
	}
	scores, audits := check(output.KindScore), check(output.KindAudit)
	if len(scores) != total || len(audits) != total {
		t.Fatalf("%d score and %d audit records, want %d each", len(scores), len(audits), total)
	}
	var nOld, nNew int
	perPart := map[int][]rec{}
	for _, id := range append(append([]string(nil), phase1...), phase2...) {
		s, ok := scores[id]
		if !ok {
			t.Fatalf("tx %s has no score record", id)
		}
		a := audits[id]
		if a.ident != s.ident {
			t.Fatalf("tx %s: score record by %s, audit by %s", id, s.ident, a.ident)
		}
		// The thresholds in the audit are the ones of the version that
		// scored, and the decision follows them.
		want := oldFraud
		if s.ident == newFraud.Ident() {
			want = newFraud
			nNew++
		} else {
			nOld++
		}
		rv, al := want.Thresholds()
		th := a.record.Thresholds["fraud"]
		if float32(th.Review) != rv || float32(th.Alert) != al {
			t.Fatalf("tx %s scored by %s with thresholds %+v, want %v/%v", id, s.ident, th, rv, al)
		}
		if d := decide(s.record.Scores["fraud"], th.Review, th.Alert); d != s.record.Decision {
			t.Fatalf("tx %s: decision %s, the thresholds of %s give %s", id, s.record.Decision, s.ident, d)
		}
		perPart[s.part] = append(perPart[s.part], s)
	}
	for _, id := range phase2 {
		if scores[id].ident != newFraud.Ident() {
			t.Fatalf("tx %s produced after the swap was scored by %s", id, scores[id].ident)
		}
	}
	for part, rs := range perPart {
		sort.Slice(rs, func(i, j int) bool { return rs[i].off < rs[j].off })
		seenNew := false
		for _, r := range rs {
			if r.ident == newFraud.Ident() {
				seenNew = true
			} else if seenNew {
				t.Fatalf("partition %d offset %d scored by the old version after the new one", part, r.off)
			}
		}
	}
	if nOld < 1000 || nNew < len(phase2) {
		t.Fatalf("%d records by the old version, %d by the new one", nOld, nNew)
	}
	if ok, failed := metricValue(t, reg, "streamscore_stream_model_reloads_total", "outcome", "ok"),
		metricValue(t, reg, "streamscore_stream_model_reloads_total", "outcome", "failed"); ok != 1 || failed != 2 {
		t.Errorf("reloads ok=%v failed=%v, want 1 and 2", ok, failed)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
	t.Logf("%d events: %d scored by %s, %d by %s (swap requested after %d)", total, nOld, oldFraud.Ident(), nNew, newFraud.Ident(), swappedAt)
}

// TestSetModelsValidation checks, without running the pipeline, that every
// kind of bad set is refused, counted and leaves the active set (and its
// active-model gauge) alone, and that a good set replaces it.
func TestSetModelsValidation(t *testing.T) {
	ms := shippedModels(t)
	reg := prometheus.NewPedanticRegistry()
	p := newPipeline(t, []string{"127.0.0.1:1"}, "g", ms, &captureSink{},
		stream.WithRegisterer(reg), stream.WithDecisionModels("fraud"))
	missing := shippedVariant(t, "fraud.json", func(f *models.File) { f.Version = 7; f.Inputs[3].Name = "card_tx_count_1y" })
	bumped := shippedVariant(t, "fraud.json", func(f *models.File) { f.Version = 2 })
	tampered := shippedVariantBytes(t, "fraud.json", func(f *models.File) { f.Version = 3 })
	tampered = []byte(strings.Replace(string(tampered), `"version": 3`, `"version": 4`, 1))
	for _, tc := range []struct {
		name string
		load func() ([]*models.Model, error)
		want []error
	}{
		{"empty set", func() ([]*models.Model, error) { return nil, nil }, []error{stream.ErrInvalidModelSet}},
		{"missing input", func() ([]*models.Model, error) { return append([]*models.Model{missing}, ms[1:]...), nil },
			[]error{stream.ErrInvalidModelSet, models.ErrMissingInput}},
		{"decision model gone", func() ([]*models.Model, error) { return ms[1:], nil },
			[]error{stream.ErrInvalidModelSet}},
		{"duplicate name", func() ([]*models.Model, error) { return []*models.Model{bumped, ms[0]}, nil },
			[]error{stream.ErrInvalidModelSet}},
		{"tampered digest", func() ([]*models.Model, error) {
			m, err := models.Parse(tampered)
			return []*models.Model{m}, err
		}, []error{models.ErrDigest}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Reload(tc.load)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
			if got := p.Models(); len(got) != len(ms) || got[0] != ms[0] {
				t.Errorf("active set changed to %v", got)
			}
		})
	}
	if got := metricValue(t, reg, "streamscore_stream_model_reloads_total", "outcome", "failed"); got != 5 {
		t.Errorf("failed reloads %v, want 5", got)
	}
	active := func(version string) float64 {
		return metricValue(t, reg, "streamscore_stream_model_active_info", "model", "fraud", "model_version", version, "role", "scoring")
	}
	if active("1") != 1 {
		t.Errorf("fraud@1 not in the active-model gauge")
	}
	if err := p.SetModels(append([]*models.Model{bumped}, ms[1:]...)); err != nil {
		t.Fatal(err)
	}
	assertNoSeries(t, reg, "streamscore_stream_model_active_info", "model", "fraud", "model_version", "1", "role", "scoring")
	if active("2") != 1 {
		t.Errorf("after the reload: fraud@2 gauge %v, want 1", active("2"))
	}
	if got := metricValue(t, reg, "streamscore_stream_model_reloads_total", "outcome", "ok"); got != 1 {
		t.Errorf("ok reloads %v, want 1", got)
	}
	if got := p.Models()[0]; got != bumped {
		t.Errorf("active fraud model %s, want %s", got.Ident(), bumped.Ident())
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
}

// TestShadowModels runs shadow models beside the shipped set: their scores
// appear in audit records only, and the agreement metric counts exactly the
// decision (dis)agreements the audit records show.
func TestShadowModels(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 2})
	ms := shippedModels(t)
	// A challenger for "fraud" with stricter thresholds, and a model with a
	// name of its own (compared with the final decision).
	challenger := shippedVariant(t, "fraud.json", func(f *models.File) {
		f.Version = 2
		f.Thresholds.Review, f.Thresholds.Alert = 0.02, 0.1
	})
	other := shippedVariant(t, "fraud_lr.json", func(f *models.File) { f.Name = "fraud_lr2" })
	sink := &captureSink{}
	reg := prometheus.NewPedanticRegistry()
	p := newPipeline(t, brokers, "shadow", ms, sink,
		stream.WithRegisterer(reg), stream.WithDecisionModels("fraud"), stream.WithShadowModels(challenger, other),
		stream.WithMaxBatch(64), stream.WithMaxDelay(2*time.Millisecond))
	g, err := synth.New(synth.Config{Seed: 9, Cards: 100, Terminals: 20, FraudRate: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	ids := produceSynth(t, newWriter(t, brokers, txTopic), g, "s", time.Now().Add(-3*time.Hour), 1500)

	r := runPipeline(t, p)
	waitScored(t, p, len(ids))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	for _, kind := range []output.Kind{output.KindScore, output.KindAlert} {
		for _, m := range sink.byKind(kind) {
			if strings.Contains(string(m.Value), "shadow") || strings.Contains(string(m.Value), "fraud_lr2") ||
				strings.Contains(string(m.Value), challenger.Ident()) {
				t.Fatalf("%v record mentions a shadow model: %s", kind, m.Value)
			}
		}
	}
	cr, ca := challenger.Thresholds()
	or, oa := other.Thresholds()
	disagree := map[string]int{}
	audits := sink.byKind(output.KindAudit)
	if len(audits) != len(ids) {
		t.Fatalf("%d audit records, want %d", len(audits), len(ids))
	}
	for _, m := range audits {
		var r auditJSON
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Shadow) != 2 || r.ShadowModels["fraud"] != challenger.Ident() || r.ShadowModels["fraud_lr2"] != other.Ident() {
			t.Fatalf("audit shadow members %v %v", r.Shadow, r.ShadowModels)
		}
		if len(r.Scores) != len(ms) || r.Models["fraud"] != ms[0].Ident() {
			t.Fatalf("audit scores %v models %v: shadow models leaked into them", r.Scores, r.Models)
		}
		champ := r.Thresholds["fraud"]
		if decide(r.Shadow["fraud"], float64(cr), float64(ca)) != decide(r.Scores["fraud"], champ.Review, champ.Alert) {
			disagree["fraud"]++
		}
		if decide(r.Shadow["fraud_lr2"], float64(or), float64(oa)) != r.Decision {
			disagree["fraud_lr2"]++
		}
	}
	for _, name := range []string{"fraud", "fraud_lr2"} {
		agreeN := metricValue(t, reg, "streamscore_stream_shadow_agreement_total", "model", name, "outcome", "agree")
		disN := metricValue(t, reg, "streamscore_stream_shadow_agreement_total", "model", name, "outcome", "disagree")
		if int(agreeN+disN) != len(ids) || int(disN) != disagree[name] {
			t.Errorf("shadow %s: agree %v disagree %v, want %d disagreements of %d", name, agreeN, disN, disagree[name], len(ids))
		}
	}
	if disagree["fraud"] == 0 {
		t.Errorf("the stricter challenger never disagreed: the test does not cover disagreement")
	}
	if got := metricValue(t, reg, "streamscore_stream_model_active_info", "model", "fraud", "model_version", "2", "role", "shadow"); got != 1 {
		t.Errorf("challenger not in the active-model gauge")
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
	t.Logf("%d events; disagreements: %v", len(ids), disagree)
}

// TestReloadSetsShadows: ReloadSets replaces the shadow models with the
// scoring ones (a nil shadow set keeps them, an empty one removes them), and
// a set whose shadow fails to bind leaves both sets serving.
func TestReloadSetsShadows(t *testing.T) {
	ms := shippedModels(t)
	reg := prometheus.NewPedanticRegistry()
	p := newPipeline(t, []string{"127.0.0.1:1"}, "g", ms, &captureSink{},
		stream.WithRegisterer(reg), stream.WithDecisionModels("fraud"))
	challenger := shippedVariant(t, "fraud.json", func(f *models.File) { f.Version = 2 })
	bad := shippedVariant(t, "fraud.json", func(f *models.File) { f.Version = 3; f.Inputs[0].Name = "no_such_feature" })
	steps := []struct {
		name    string
		shadows []*models.Model
		wantErr bool
		want    []*models.Model
	}{
		{"add a challenger", []*models.Model{challenger}, false, []*models.Model{challenger}},
		{"nil keeps it", nil, false, []*models.Model{challenger}},
		{"unbindable shadow refused", []*models.Model{bad}, true, []*models.Model{challenger}},
		{"empty removes it", []*models.Model{}, false, nil},
	}
	for _, st := range steps {
		err := p.ReloadSets(func() ([]*models.Model, []*models.Model, error) { return ms, st.shadows, nil })
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: error %v, want error %v", st.name, err, st.wantErr)
		}
		got := p.ShadowModels()
		if len(got) != len(st.want) || (len(got) == 1 && got[0] != st.want[0]) {
			t.Fatalf("%s: shadows %v, want %v", st.name, got, st.want)
		}
		// The active-model gauge lists exactly the serving shadows.
		for _, m := range []*models.Model{challenger, bad} {
			labels := []string{"model", m.Name(), "model_version", strconv.Itoa(m.Version()), "role", "shadow"}
			if !slices.Contains(st.want, m) {
				assertNoSeries(t, reg, "streamscore_stream_model_active_info", labels...)
			} else if v := metricValue(t, reg, "streamscore_stream_model_active_info", labels...); v != 1 {
				t.Errorf("%s: shadow %s in the active-model gauge with %v, want 1", st.name, m.Ident(), v)
			}
		}
	}
}
