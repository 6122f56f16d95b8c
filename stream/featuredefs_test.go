package stream_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// specWindow returns the default spec with feature name's window set to w.
func specWindow(t *testing.T, name string, w time.Duration) *features.Spec {
	t.Helper()
	s := features.DefaultSpec()
	i := slices.Index(s.Names(), name)
	if i < 0 {
		t.Fatalf("no feature %s", name)
	}
	s.Features[i].Window = features.Duration(w)
	return s
}

const wantMismatch = "card_amount_sum_1h: model trained on sum of amount per card_id over 1h (sha256:"

// TestRedefinedWindowRefused is the regression test of the silent
// misconfiguration: the shipped models (trained on the default spec) with a
// spec that redefines card_amount_sum_1h as a 24h window are refused by New,
// by SetModels of a pipeline running that spec, and by Replay, naming the
// feature and both definitions.
func TestRedefinedWindowRefused(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	alt := specWindow(t, "card_amount_sum_1h", 24*time.Hour)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, models.ErrFeatureMismatch) || !strings.Contains(err.Error(), wantMismatch) ||
			!strings.Contains(err.Error(), "pipeline computes sum of amount per card_id over 1d (sha256:") {
			t.Fatalf("%s: err = %v, want ErrFeatureMismatch naming card_amount_sum_1h and both definitions", what, err)
		}
		if strings.Contains(err.Error(), "card_amount_sum_1d:") {
			t.Fatalf("%s: err names an unchanged feature: %v", what, err)
		}
	}

	_, err = stream.New([]string{"127.0.0.1:1"}, "g", "tx", ms, &captureSink{},
		stream.WithFeatureOptions(features.WithSpec(alt)), stream.WithRegisterer(prometheus.NewRegistry()))
	if !errors.Is(err, stream.ErrInvalidModelSet) {
		t.Fatalf("New: err = %v, want ErrInvalidModelSet", err)
	}
	check("New", err)

	// A pipeline of the altered spec serving a model pinned to it refuses the
	// shipped model on reload and keeps serving.
	f := shippedFile(t, "fraud.json")
	if err := f.PinFeatures(stream.ModelFeatureDefs(alt.Definitions())); err != nil {
		t.Fatal(err)
	}
	f.Version = 2
	own := parseModel(t, encodeModel(t, f))
	p, err := stream.New([]string{"127.0.0.1:1"}, "g", "tx", []*models.Model{own}, &captureSink{},
		stream.WithFeatureOptions(features.WithSpec(alt)), stream.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatalf("New with a model pinned to the pipeline's spec: %v", err)
	}
	err = p.SetModels(ms[:1])
	check("SetModels", err)
	if got := p.Models(); len(got) != 1 || got[0] != own {
		t.Fatalf("active models after a refused reload: %v", got)
	}

	// Replay (the score command) refuses too, and the default spec accepts.
	ev := []features.Event{{TxID: "t1", CardID: "c1", TerminalID: "p1", Amount: 10, TS: time.Unix(1.7e9, 0)}}
	noop := func(*output.ScoreRecord) error { return nil }
	err = stream.Replay(ev, nil, ms, ev[0].TS, ev[0].TS.Add(time.Second), noop, stream.WithFeatureOptions(features.WithSpec(alt)))
	check("Replay", err)
	if err := stream.Replay(ev, nil, ms, ev[0].TS, ev[0].TS.Add(time.Second), noop); err != nil {
		t.Fatalf("Replay, default spec: %v", err)
	}
}

// TestUnpinnedModels: a model file without feature definitions is refused
// unless WithUnpinnedModels(true).
func TestUnpinnedModels(t *testing.T) {
	f := shippedFile(t, "fraud_lr.json")
	for i := range f.Inputs {
		f.Inputs[i].DefinitionHash, f.Inputs[i].Definition = "", ""
	}
	m := parseModel(t, encodeModel(t, f))
	newP := func(opts ...stream.Option) error {
		opts = append(opts, stream.WithRegisterer(prometheus.NewRegistry()))
		_, err := stream.New([]string{"127.0.0.1:1"}, "g", "tx", []*models.Model{m}, &captureSink{}, opts...)
		return err
	}
	if err := newP(); !errors.Is(err, models.ErrUnpinned) || !errors.Is(err, stream.ErrInvalidModelSet) {
		t.Fatalf("unpinned, default: err = %v, want ErrUnpinned", err)
	}
	if err := newP(stream.WithUnpinnedModels(true)); err != nil {
		t.Fatalf("unpinned, allowed: %v", err)
	}
	// A mismatch is refused even when unpinned models are allowed.
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.New([]string{"127.0.0.1:1"}, "g", "tx", ms, &captureSink{}, stream.WithUnpinnedModels(true),
		stream.WithFeatureOptions(features.WithSpec(specWindow(t, "card_amount_sum_1h", 24*time.Hour))),
		stream.WithRegisterer(prometheus.NewRegistry()))
	if !errors.Is(err, models.ErrFeatureMismatch) {
		t.Fatalf("mismatch with unpinned allowed: err = %v", err)
	}
}

// shippedFile returns a shipped model file, decoded.
func shippedFile(t *testing.T, file string) *models.File {
	t.Helper()
	var out *models.File
	shippedVariantBytes(t, file, func(f *models.File) { out = f })
	return out
}
