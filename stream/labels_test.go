package stream_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream"
)

// TestLabelsAllPartitions: labels are read from every partition of the
// labels topic, valid ones applied and bad ones dead-lettered, and a second
// pipeline (another process, or a restart) reads them all again.
func TestLabelsAllPartitions(t *testing.T) {
	brokers := startKafka(t, map[string]int{txTopic: 1, labelsTopic: 3, deadTopic: 1})
	ts := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	var msgs []kafka.Message
	for i := range 30 {
		v := fmt.Sprintf(`{"tx_id":"t-%d","card_id":"c-%d","terminal_id":"m-%d","ts":"%s","fraud":true}`, i, i, i%4, ts)
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(v)})
	}
	msgs = append(msgs, kafka.Message{Key: []byte("bad"), Value: []byte(`{"tx_id":"x","fraud":"yes"}`)})
	produce(t, brokers, labelsTopic, msgs...)
	ms := shippedModels(t)
	const name = "streamscore_stream_labels_total"
	for run := range 2 {
		fan := kafkaSink(t, brokers, map[output.Kind]string{output.KindDeadLetter: deadTopic})
		reg := prometheus.NewRegistry()
		p := newPipeline(t, brokers, "labels-test", ms, fan, stream.WithRegisterer(reg), stream.WithLabelsTopic(labelsTopic))
		r := runPipeline(t, p)
		waitFor(t, waitBudget, "every label read", func() bool {
			applied, _ := seriesValue(t, reg, name, "outcome", "applied")
			dead, _ := seriesValue(t, reg, name, "outcome", "deadlettered")
			return applied >= 30 && dead >= 1
		})
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		fan.Close()
		if applied, dead := metricValue(t, reg, name, "outcome", "applied"), metricValue(t, reg, name, "outcome", "deadlettered"); applied != 30 || dead != 1 {
			t.Fatalf("run %d: %v labels applied, %v dead-lettered; want 30 and 1", run, applied, dead)
		}
		out := readAll(t, brokers, deadTopic)
		if len(out) != run+1 {
			t.Fatalf("run %d: %d dead letters, want %d (one per run, same id)", run, len(out), run+1)
		}
		var d struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(out[run].Value, &d); err != nil || d.Topic != labelsTopic || d.Reason != "wrong_type" {
			t.Fatalf("dead letter %s: %+v %v, want topic %s, reason wrong_type", out[run].Value, d, err, labelsTopic)
		}
	}
}
