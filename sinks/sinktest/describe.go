package sinktest

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Describing is a prometheus.Registerer that keeps what is registered with
// it, so a test can list the metric names a constructor registers.
type Describing struct {
	cs []prometheus.Collector
}

// Register implements prometheus.Registerer.
func (d *Describing) Register(c prometheus.Collector) error {
	d.cs = append(d.cs, c)
	return nil
}

// MustRegister implements prometheus.Registerer.
func (d *Describing) MustRegister(cs ...prometheus.Collector) { d.cs = append(d.cs, cs...) }

// Unregister implements prometheus.Registerer.
func (d *Describing) Unregister(prometheus.Collector) bool { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names returns the sorted names of every metric the registered collectors
// describe.
func (d *Describing) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range d.cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	var names []string
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil && !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

// DocListsMetrics fails the test unless every name appears in the package
// documentation file doc (doc.go of the package under test): the doc-vs-code
// check of the metrics a package registers.
func DocListsMetrics(t *testing.T, doc string, names []string) {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no metric registered: the test does not see the constructors' metrics")
	}
	for _, n := range names {
		if !strings.Contains(string(b), n) {
			t.Errorf("%s: metric %s is registered but not documented", doc, n)
		}
	}
}
