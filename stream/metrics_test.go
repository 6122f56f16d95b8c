package stream_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A registry gathers a family only once it has a series: a vector without
// children is missing just as a misspelt name is. So metricValue fails the
// test unless the one series it reads exists, and an absent series is
// asserted by assertNoSeries, which needs the family gathered (its name and
// label names are checked); a test pairs it with a metricValue of the same
// labels at a point where the series must exist.

// metricValue returns the value of the counter or gauge series of family
// name whose labels include the label name/value pairs. It fails the test if
// the family is not gathered, a label name is not one of the family's, or
// not exactly one series matches.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := gatherFamily(t, reg, name)
	if !ok {
		t.Fatalf("metric %s not gathered: unregistered, misspelt, or no series yet", name)
	}
	ss := fam.match(t, labels)
	if len(ss) != 1 {
		t.Fatalf("metric %s: %d series with labels %v, want 1; series: %v", name, len(ss), labels, fam.series)
	}
	if math.IsNaN(ss[0].value) {
		t.Fatalf("metric %s is not a counter or gauge", name)
	}
	return ss[0].value
}

// assertNoSeries fails the test unless family name is gathered (it has
// other series) and has no series whose labels include the pairs.
func assertNoSeries(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) {
	t.Helper()
	fam, ok := gatherFamily(t, reg, name)
	if !ok {
		t.Fatalf("metric %s not gathered: an absent series cannot be told from a wrong name", name)
	}
	if ss := fam.match(t, labels); len(ss) > 0 {
		t.Errorf("metric %s has series %v, want none with labels %v", name, ss, labels)
	}
}

// seriesValue is metricValue for polling: ok is false while the family or
// the series does not exist yet.
func seriesValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (v float64, ok bool) {
	t.Helper()
	fam, ok := gatherFamily(t, reg, name)
	if !ok || len(fam.match(t, labels)) == 0 {
		return 0, false
	}
	return metricValue(t, reg, name, labels...), true
}

// family is a gathered metric family.
type family struct {
	name   string
	series []series
}

type series struct {
	labels map[string]string
	value  float64 // NaN unless a counter or gauge
}

func (s series) String() string { return fmt.Sprintf("%v=%v", s.labels, s.value) }

func gatherFamily(t *testing.T, reg prometheus.Gatherer, name string) (family, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		fam := family{name: name}
		for _, m := range mf.GetMetric() {
			s := series{labels: map[string]string{}, value: math.NaN()}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				s.value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.value = m.GetGauge().GetValue()
			}
			fam.series = append(fam.series, s)
		}
		return fam, true
	}
	return family{}, false
}

// match returns the series whose labels include the pairs, failing the test
// on an odd list or a label name the family does not have.
func (f family) match(t *testing.T, labels []string) []series {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: odd label list %v", f.name, labels)
	}
	var names []string
	for _, s := range f.series {
		for n := range s.labels {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for i := 0; i < len(labels); i += 2 {
		if !slices.Contains(names, labels[i]) {
			slices.Sort(names)
			t.Fatalf("metric %s has no label %q, only %s", f.name, labels[i], strings.Join(names, ", "))
		}
	}
	var out []series
	for _, s := range f.series {
		ok := true
		for i := 0; i < len(labels); i += 2 {
			if v, has := s.labels[labels[i]]; !has || v != labels[i+1] {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}
