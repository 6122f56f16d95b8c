package output_test

import (
	"testing"

	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/sinks/sinktest"
)

// TestDocListsEveryMetric: every metric the Fanout registers is listed in
// the package documentation (doc.go).
func TestDocListsEveryMetric(t *testing.T) {
	reg := &sinktest.Describing{}
	f, err := output.NewFanout([]output.Sink{printSink{}}, output.WithFanoutRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := reg.Names()
	t.Logf("registered: %v", names)
	sinktest.DocListsMetrics(t, "doc.go", names)
}
