package stream_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// Key files of the rotation test: k1, then k2 (a secret of its own) with
// k1 as the previous key.
const (
	rotateK1  = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
	rotateK21 = "k2 202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n" + rotateK1
)

// TestPANRotationKeepsState rotates the PAN key half way through a history:
// a pipeline with the key file [k1] scores the first half and stops (its
// state goes to the state directory), and one with [k2, k1] restores it and
// scores the rest. Every card seen before the rotation must keep its
// windows and its sequential-model (GRU, CNN, LSTM) state: every record's
// scores, decision and reasons equal, bit for bit, a Replay of the whole
// history under [k1] that never rotated, and a Replay under [k2, k1] (what
// `score` gives with the new key file); only card_id changes, to the k2
// pseudonym, in the records after the rotation. The cards moved are
// counted in streamscore_stream_cards_rekeyed_total.
func TestPANRotationKeepsState(t *testing.T) {
	ms := shippedModels(t)
	for i, fam := range []string{models.FamilyGRU, models.FamilyCNN, models.FamilyLSTM} {
		ms = append(ms, seqModel(t, fam, "seq_"+fam, uint64(i+1)))
	}
	k1, err := features.ParsePANKey([]byte(rotateK1))
	if err != nil {
		t.Fatal(err)
	}
	k21, err := features.ParsePANKey([]byte(rotateK21))
	if err != nil {
		t.Fatal(err)
	}
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	_, msgs, start, end := history(t, 11, 3000)
	split := len(msgs) / 2
	decode := func(key *features.PANKey) []features.Event {
		d, err := features.NewDecoder(features.WithPANKey(key))
		if err != nil {
			t.Fatal(err)
		}
		evs := make([]features.Event, len(msgs))
		for i, m := range msgs {
			if err := d.Decode(m.Value, &evs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return evs
	}
	never, rotated := decode(k1), decode(k21)
	dir := t.TempDir()
	opts := []stream.Option{stream.WithDecisionModels(models.ShippedDecisionModel, "seq_gru")}
	run := func(key *features.PANKey, n int) *prometheus.Registry {
		reg := prometheus.NewRegistry()
		p := newPipeline(t, brokers, "rotate", ms, kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}),
			append(opts, stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false), stream.WithStateDir(dir),
				stream.WithDecoderOptions(features.WithPANKey(key)))...)
		r := runPipeline(t, p)
		waitScored(t, p, n)
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		return reg
	}
	produce(t, brokers, txTopic, msgs[:split]...)
	reg1 := run(k1, split)
	produce(t, brokers, txTopic, msgs[split:]...)
	reg2 := run(k21, len(msgs)-split)
	if v := metricValue(t, reg2, "streamscore_stream_state_restores_total", "outcome", "ok"); v != 1 {
		t.Fatalf("second run: restores{ok} = %v, want 1", v)
	}

	before, both := map[string]bool{}, 0
	for _, e := range never[:split] {
		before[e.CardID] = true
	}
	seen := map[string]bool{}
	for _, e := range never[split:] {
		if before[e.CardID] && !seen[e.CardID] {
			both++
		}
		seen[e.CardID] = true
	}
	if v := metricValue(t, reg1, "streamscore_stream_cards_rekeyed_total"); v != 0 {
		t.Errorf("first run (one key): %v cards rekeyed, want 0", v)
	}
	if v := metricValue(t, reg2, "streamscore_stream_cards_rekeyed_total"); v != float64(both) || both == 0 {
		t.Errorf("second run: %v cards rekeyed, want %d (the cards seen before and after the rotation)", v, both)
	}

	streamed := map[string]scoreJSON{}
	cards := map[string]string{} // tx -> card_id of its record
	for _, m := range readAll(t, brokers, scoresTopic) {
		var r scoreJSON
		var c struct {
			CardID string `json:"card_id"`
			KeyID  string `json:"card_key_id"`
		}
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Value, &c); err != nil {
			t.Fatal(err)
		}
		if prefix := "p1:" + c.KeyID + ":"; !strings.HasPrefix(c.CardID, prefix) {
			t.Fatalf("tx %s: card_id %q, card_key_id %q", r.TxID, c.CardID, c.KeyID)
		}
		if _, ok := features.PseudonymKeyID(c.CardID); !ok || bytes.Contains(m.Value, []byte(`card_alias`)) {
			t.Fatalf("tx %s: record %s", r.TxID, m.Value)
		}
		streamed[r.TxID] = r
		cards[r.TxID] = c.CardID
	}
	for i := range msgs {
		want := never[i].CardID
		if i >= split {
			want = rotated[i].CardID
		}
		if got := cards[never[i].TxID]; got != want {
			t.Fatalf("event %d (rotation at %d): card_id %q, want %q", i, split, got, want)
		}
	}
	// Scores, decisions and reasons: as if the key had never changed, and
	// as `score` gives them with the new key file.
	compareReplay(t, never, ms, start, end, streamed, opts)
	compareReplay(t, rotated, ms, start, end, streamed, opts)
}
