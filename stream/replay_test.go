package stream_test

import (
	"context"
	"encoding/json"
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

	ms, err := models.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := sinks.NewKafka(brokers, sinks.WithKafkaTopic(sinks.KindScore, "scores"))
	if err != nil {
		t.Fatal(err)
	}
	fan := sinks.NewFanout([]sinks.Sink{ks})
	defer fan.Close()
	opts := []stream.Option{stream.WithDecisionModels(models.ShippedDecisionModel)}
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

	var replayed int
	var alerts int
	err = stream.Replay(events, nil, ms, start, end.Add(time.Millisecond), func(rec *sinks.ScoreRecord) error {
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
	if replayed != len(events) || len(streamed) != len(events) {
		t.Fatalf("replayed %d, streamed %d, events %d", replayed, len(streamed), len(events))
	}
	if alerts == 0 {
		t.Fatal("no alerts among the compared records: the comparison did not cover reasons")
	}
	t.Logf("%d events, %d alerts: stream and replay identical", replayed, alerts)
}
