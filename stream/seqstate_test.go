package stream

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

func gruModel(t *testing.T, name string, hidden int, inputs ...string) *models.Model {
	t.Helper()
	in, g := len(inputs), 3
	f := &models.File{Name: name, Family: models.FamilyGRU, Version: 1, Output: models.OutputProbability,
		Thresholds: models.Thresholds{Review: 0.5, Alert: 0.9},
		Recurrent: &models.Recurrent{Cell: models.FamilyGRU, Hidden: hidden,
			Wx: make([]float32, in*g*hidden), Wh: make([]float32, hidden*g*hidden), Bx: make([]float32, g*hidden), Bh: make([]float32, g*hidden)},
		Layers: []models.Layer{{In: hidden, Out: 1, Activation: "sigmoid", Weights: make([]float32, hidden), Bias: []float32{0}}}}
	for _, n := range inputs {
		f.Inputs = append(f.Inputs, models.Input{Name: n, Mean: 0, Std: 1})
	}
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func bind(t *testing.T, ms ...*models.Model) []*models.Scorer {
	var out []*models.Scorer
	for _, m := range ms {
		s, err := m.Bind([]string{"a", "b", "c"})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestSeqStatesReload: a reload keeps a card's state of a model whose state
// shape is unchanged, resets (and counts) the state of one whose shape
// changed, and the idle sweep drops cards past the TTL.
func TestSeqStatesReload(t *testing.T) {
	resets := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r", Help: "Resets."}, []string{"model"})
	ss := newSeqStates(time.Hour, resets, nil)
	keep, change := gruModel(t, "keep", 4, "a", "b"), gruModel(t, "change", 4, "a")
	slots, _ := ss.setModels(bind(t, keep, change), nil)
	c := ss.card("c1", 0)
	copy(ss.state(c, slots[0]), []float32{1, 2, 3, 4})
	copy(ss.state(c, slots[1]), []float32{5, 6, 7, 8})

	// Reload: "keep" v2 with the same shape, "change" with a larger hidden
	// state, and a new model.
	keep2, change2, added := gruModel(t, "keep", 4, "a", "b"), gruModel(t, "change", 6, "a"), gruModel(t, "new", 2, "c")
	slots, _ = ss.setModels(bind(t, added, change2, keep2), nil)
	c = ss.card("c1", int64(time.Minute))
	if got := ss.state(c, slots[2]); got[0] != 1 || got[3] != 4 {
		t.Fatalf("kept state %v, want 1 2 3 4", got)
	}
	for i, v := range ss.state(c, slots[1]) {
		if v != 0 || len(ss.state(c, slots[1])) != 6 {
			t.Fatalf("changed model's state[%d] = %v, want zeros of len 6", i, v)
		}
	}
	// Exactly one series: the changed model's (none for "keep" or "new").
	if err := testutil.CollectAndCompare(resets, strings.NewReader(`
# HELP r Resets.
# TYPE r counter
r{model="change"} 1
`)); err != nil {
		t.Fatal(err)
	}
	// A card seen again after the TTL, before any sweep, starts from zero.
	c = ss.card("c1", int64(2*time.Hour))
	if got := ss.state(c, slots[2]); got[0] != 0 || got[3] != 0 {
		t.Fatalf("state of a card idle past the TTL: %v, want zeros", got)
	}
	// A card idle beyond the TTL is dropped by the sweep.
	ss.card("c2", int64(4*time.Hour))
	ss.sweep(seqSweepEvery)
	if _, ok := ss.cards["c1"]; ok {
		t.Fatal("idle card c1 survived the sweep")
	}
	if _, ok := ss.cards["c2"]; !ok {
		t.Fatal("active card c2 was swept")
	}
}

// TestSeqStatesRekey: during a PAN-key rotation a card's model state moves
// from its old pseudonym (the event's CardAlias) to its new one, once and
// without a copy; not when the new pseudonym already has state, nor when
// the old state is idle past the TTL.
func TestSeqStatesRekey(t *testing.T) {
	ev := func(id, alias string, t time.Duration) *features.Event {
		return &features.Event{CardID: id, CardAlias: alias, TS: time.Unix(0, int64(t))}
	}
	tests := []struct {
		name      string
		setup     []*features.Event
		ev        *features.Event
		wantState float32 // the state the event's card gets (0: a fresh one)
		wantCards int
	}{
		{"moved", []*features.Event{ev("old", "", 0)}, ev("new", "old", time.Minute), 1, 1},
		{"no alias", []*features.Event{ev("old", "", 0)}, ev("new", "", time.Minute), 0, 2},
		{"new has state", []*features.Event{ev("old", "", 0), ev("new", "", 0)}, ev("new", "old", time.Minute), 2, 2},
		{"old idle past the TTL", []*features.Event{ev("old", "", 0)}, ev("new", "old", 2*time.Hour), 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ss := newSeqStates(time.Hour, nil, nil)
			slots, _ := ss.setModels(bind(t, gruModel(t, "g", 2, "a")), nil)
			for i, e := range tc.setup {
				ss.state(ss.cardOf(e), slots[0])[0] = float32(i + 1)
			}
			c := ss.cardOf(tc.ev)
			if got := ss.state(c, slots[0])[0]; got != tc.wantState {
				t.Errorf("state %v, want %v", got, tc.wantState)
			}
			if got := len(ss.cards); got != tc.wantCards {
				t.Errorf("%d cards held, want %d", got, tc.wantCards)
			}
			if again := ss.cardOf(tc.ev); again != c {
				t.Error("a second event of the card got another state")
			}
		})
	}
}
