package stream_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/synth"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"
	"github.com/streamscore/streamscore/stream/local"
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
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	replayMatchesStream(t, ms, models.ShippedDecisionModel)
}

// TestReplayMatchesStreamSequential does the same with sequential models
// (cnn, gru, lstm) beside the shipped ones, deciding with the GRU too: their
// per-card state must evolve identically in the stream and in Replay,
// including a Replay that starts in the middle of the history (its cards'
// states warmed by the events before from).
func TestReplayMatchesStreamSequential(t *testing.T) {
	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	for i, fam := range []string{models.FamilyGRU, models.FamilyCNN, models.FamilyLSTM} {
		ms = append(ms, seqModel(t, fam, "seq_"+fam, uint64(i+1)))
	}
	replayMatchesStream(t, ms, models.ShippedDecisionModel, "seq_gru")
}

// seqModel returns a random sequential model of family fam reading the
// first 10 default features.
func seqModel(t testing.TB, fam, name string, seed uint64) *models.Model {
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

func replayMatchesStream(t *testing.T, ms []*models.Model, deciders ...string) {
	k, err := local.StartKafka(map[string]int{"tx": 1, "scores": 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	brokers := k.Brokers()

	g, err := synth.New(synth.Config{Seed: 11, Cards: 400, Terminals: 40, FraudRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	start := end.Add(-10 * 24 * time.Hour)
	var events []features.Event
	var msgs []kafka.Message
	if err := g.Simulate(start, end, 3000.0/end.Sub(start).Seconds(), func(tx synth.Tx) error {
		events = append(events, tx.Event)
		msgs = append(msgs, kafka.Message{Key: []byte(tx.Event.CardID), Value: tx.Event.AppendJSON(nil)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeScale)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "tx", BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	ks, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(sinks.KindScore, "scores"))
	if err != nil {
		t.Fatal(err)
	}
	fan := sinks.NewFanout([]sinks.Sink{ks})
	defer fan.Close()
	opts := []stream.Option{stream.WithDecisionModels(deciders...)}
	p, err := stream.New(brokers, "replay", "tx", ms, fan, append(opts,
		stream.WithWorkers(1), stream.WithRegisterer(prometheus.NewRegistry()), stream.WithAudit(false))...)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	waitFor(t, 60*time.Second*timeScale, "every event scored", func() bool { return p.Stats().Scored.Load() >= int64(len(events)) })
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, err := local.ReadAll(ctx, brokers, "scores")
	if err != nil {
		t.Fatal(err)
	}
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
	err := stream.Replay(events, nil, ms, from, end.Add(time.Millisecond), func(rec *sinks.ScoreRecord) error {
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
