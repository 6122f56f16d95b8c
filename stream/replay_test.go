package stream_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

type scoreJSON struct {
	TxID     string             `json:"tx_id"`
	Scores   map[string]float64 `json:"scores"`
	Decision string             `json:"decision"`
	Reasons  []struct {
		Feature      string  `json:"feature"`
		Contribution float64 `json:"contribution"`
	} `json:"reasons"`
}

// TestReplayMatchesStream scores the same events through the running
// pipeline (one partition, one worker, so the stream applies them in event
// order) and through Replay, and requires identical records: scores,
// decisions and reasons, bit for bit.
func TestReplayMatchesStream(t *testing.T) {
	replayMatchesStream(t, shippedModels(t), models.ShippedDecisionModel)
}

// TestReplayMatchesStreamSequential does the same with sequential models
// (cnn, gru, lstm) beside the shipped ones, deciding with the GRU too: their
// per-card state must evolve identically in the stream and in Replay,
// including a Replay that starts in the middle of the history (its cards'
// states warmed by the events before from).
func TestReplayMatchesStreamSequential(t *testing.T) {
	ms := shippedModels(t)
	for i, fam := range []string{models.FamilyGRU, models.FamilyCNN, models.FamilyLSTM} {
		ms = append(ms, seqModel(t, fam, "seq_"+fam, uint64(i+1)))
	}
	replayMatchesStream(t, ms, models.ShippedDecisionModel, "seq_gru")
}

// TestReplayMatchesStreamCapped does the same under a card cap that
// evicts real cards (400 cards, a cap of 150): the stream's worker and
// Replay evict the same cards at the same events, windows and sequential
// model states alike. The metrics count the evictions and the cards held.
func TestReplayMatchesStreamCapped(t *testing.T) {
	ms := append(shippedModels(t), seqModel(t, models.FamilyGRU, "seq_gru", 1))
	reg := prometheus.NewRegistry()
	const maxCards = 150
	replayMatchesStreamWith(t, ms, reg, []stream.Option{stream.WithFeatureOptions(features.WithMaxCards(maxCards))},
		models.ShippedDecisionModel, "seq_gru")
	evicted := metricValue(t, reg, "streamscore_stream_state_evictions_total", "entity", "card", "reason", "cap")
	held := metricValue(t, reg, "streamscore_stream_state_entities", "entity", "card")
	t.Logf("cards held %v, evicted for the cap %v", held, evicted)
	if evicted < 250 || held != maxCards {
		t.Errorf("card evictions %v (want >= 250: 400 cards under a cap of %d), cards held %v (want %d)", evicted, maxCards, held, maxCards)
	}
	if n := metricValue(t, reg, "streamscore_stream_state_entities", "entity", "terminal"); n < 1 || n > 40 {
		t.Errorf("terminals held %v, want 1 to 40", n)
	}
	if n := metricValue(t, reg, "streamscore_stream_state_evictions_total", "entity", "terminal", "reason", "cap"); n != 0 {
		t.Errorf("terminal cap evictions %v without a terminal cap", n)
	}
}

func replayMatchesStream(t *testing.T, ms []*models.Model, deciders ...string) {
	replayMatchesStreamWith(t, ms, prometheus.NewRegistry(), nil, deciders...)
}

func replayMatchesStreamWith(t *testing.T, ms []*models.Model, reg *prometheus.Registry, extra []stream.Option, deciders ...string) {
	brokers := startKafka(t, map[string]int{txTopic: 1, scoresTopic: 1})
	events, msgs, start, end := history(t, 11, 3000)
	produce(t, brokers, txTopic, msgs...)

	opts := append([]stream.Option{stream.WithDecisionModels(deciders...)}, extra...)
	p := newPipeline(t, brokers, "replay", ms, kafkaSink(t, brokers, map[output.Kind]string{output.KindScore: scoresTopic}),
		append(opts, stream.WithWorkers(1), stream.WithRegisterer(reg), stream.WithAudit(false))...)
	r := runPipeline(t, p)
	waitScored(t, p, len(events))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	out := readAll(t, brokers, scoresTopic)
	streamed := map[string]scoreJSON{}
	for _, m := range out {
		var r scoreJSON
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		streamed[r.TxID] = r
	}

	for _, d := range deciders {
		var alert float32
		for _, m := range ms {
			if m.Name() == d {
				_, alert = m.Thresholds()
			}
		}
		n := 0
		for _, r := range streamed {
			if float32(r.Scores[d]) >= alert {
				n++
			}
		}
		lo, hi := 1.0, 0.0
		for _, r := range streamed {
			lo, hi = min(lo, r.Scores[d]), max(hi, r.Scores[d])
		}
		t.Logf("%s scores in [%v, %v]", d, lo, hi)
		if n == 0 {
			t.Fatalf("decision model %s never alerts: the comparison does not cover its reasons", d)
		}
		t.Logf("decision model %s alerts on %d events", d, n)
	}
	mid := start.Add(end.Sub(start) / 2)
	for _, from := range []time.Time{start, mid} {
		compareReplay(t, events, ms, from, end, streamed, opts)
	}
}

func compareReplay(t *testing.T, events []features.Event, ms []*models.Model, from, end time.Time, streamed map[string]scoreJSON, opts []stream.Option) {
	want := 0
	for i := range events {
		if !events[i].TS.Before(from) {
			want++
		}
	}
	var replayed int
	var alerts int
	err := stream.Replay(events, nil, ms, from, end.Add(time.Millisecond), func(rec *output.ScoreRecord) error {
		replayed++
		var got scoreJSON
		if err := json.Unmarshal(rec.AppendJSON(nil), &got); err != nil {
			return err
		}
		want, ok := streamed[got.TxID]
		if !ok {
			t.Fatalf("tx %s replayed but never streamed", got.TxID)
		}
		if got.Decision != want.Decision || len(got.Scores) != len(want.Scores) || len(got.Reasons) != len(want.Reasons) {
			t.Fatalf("tx %s: replay %+v, stream %+v", got.TxID, got, want)
		}
		for name, v := range want.Scores {
			if got.Scores[name] != v {
				t.Fatalf("tx %s model %s: replay %v, stream %v", got.TxID, name, got.Scores[name], v)
			}
		}
		for i := range want.Reasons {
			if got.Reasons[i] != want.Reasons[i] {
				t.Fatalf("tx %s reason %d: replay %+v, stream %+v", got.TxID, i, got.Reasons[i], want.Reasons[i])
			}
		}
		if got.Decision == "alert" {
			alerts++
		}
		return nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if replayed != want || len(streamed) != len(events) {
		t.Fatalf("replayed %d (want %d from %v), streamed %d, events %d", replayed, want, from, len(streamed), len(events))
	}
	if alerts == 0 {
		t.Fatal("no alerts among the compared records: the comparison did not cover reasons")
	}
	t.Logf("from %v: %d events, %d alerts: stream and replay identical", from.Format(time.DateOnly), replayed, alerts)
}
