package stream_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// shippedVariant returns the shipped model file name (e.g. "fraud.json")
// after edit, parsed: a new, valid version of a shipped model.
func shippedVariant(t *testing.T, file string, edit func(f *models.File)) *models.Model {
	t.Helper()
	return parseModel(t, shippedVariantBytes(t, file, edit))
}

// shippedVariantBytes returns the shipped model file name re-encoded after
// edit.
func shippedVariantBytes(t *testing.T, file string, edit func(f *models.File)) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "models", "shipped", file))
	if err != nil {
		t.Fatal(err)
	}
	var f models.File
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	edit(&f)
	return encodeModel(t, &f)
}

// seqModel returns a random sequential model of family fam reading the
// first 10 default features.
func seqModel(t *testing.T, fam, name string, seed uint64) *models.Model {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	rnd := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return v
	}
	f := &models.File{Name: name, Family: fam, Version: 1, Output: models.OutputProbability,
		Thresholds: models.Thresholds{Review: 0.5, Alert: 0.7}}
	for _, n := range features.Names()[:10] {
		f.Inputs = append(f.Inputs, models.Input{Name: n, Mean: 1, Std: 3})
	}
	in, head := len(f.Inputs), 0
	switch fam {
	case models.FamilyCNN:
		f.Conv = &models.Conv{Window: 5, Kernel: 2, Channels: 6, Activation: "relu", Pool: models.PoolMax, PoolSize: 4, PoolStride: 1,
			Weights: rnd(2*in*6, 0.4), Bias: rnd(6, 0.1)}
		head = 6
	default:
		g := 3
		if fam == models.FamilyLSTM {
			g = 4
		}
		f.Recurrent = &models.Recurrent{Cell: fam, Hidden: 8, Wx: rnd(in*g*8, 0.4), Wh: rnd(8*g*8, 0.4), Bx: rnd(g*8, 0.1), Bh: rnd(g*8, 0.1)}
		head = 8
	}
	f.Layers = []models.Layer{{In: head, Out: 1, Activation: "sigmoid", Weights: rnd(head, 1), Bias: []float32{0}}}
	pinDefault(t, f)
	return parseModel(t, encodeModel(t, f))
}

// pinDefault records the default spec's definitions of f's inputs.
func pinDefault(t *testing.T, f *models.File) {
	t.Helper()
	var defs []models.FeatureDef
	for _, d := range features.DefaultSpec().Definitions() {
		defs = append(defs, models.FeatureDef{Name: d.Name, Text: d.Text, Hash: d.Hash})
	}
	if err := f.PinFeatures(defs); err != nil {
		t.Fatal(err)
	}
}

func encodeModel(t *testing.T, f *models.File) []byte {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseModel(t *testing.T, b []byte) *models.Model {
	t.Helper()
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
