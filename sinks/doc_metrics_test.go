package sinks_test

import (
	"testing"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/sinks/sinktest"
)

// TestDocListsEveryMetric: every metric the NATS and Kafka sinks register
// is listed in the package documentation (doc.go).
func TestDocListsEveryMetric(t *testing.T) {
	reg := &sinktest.Describing{}
	ns := startNATS(t, false, 0, "") // core publish: no stream needed
	n, err := sinks.NewNATS(connect(t, ns), sinks.WithNATSSubject(output.KindScore, "doc.scores"),
		sinks.WithNATSMode(sinks.NATSModeCore), sinks.WithNATSRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	k, err := sinks.NewKafka([]string{"127.0.0.1:1"}, sinks.WithKafkaTopic(output.KindScore, "scores"), sinks.WithKafkaRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	names := reg.Names()
	t.Logf("registered: %v", names)
	sinktest.DocListsMetrics(t, "doc.go", names)
}
