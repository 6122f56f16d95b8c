package stream_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// metricName is the shape of a metric name the stream package registers.
var metricName = regexp.MustCompile(`^streamscore_stream_[a-z0-9_]+$`)

// registeredMetrics returns every metric name spelled as a string literal
// in the package's non-test files (metrics.go, statecap.go, the source):
// each is a name the package registers.
func registeredMetrics(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var names []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && metricName.MatchString(s) && !slices.Contains(names, s) {
				names = append(names, s)
			}
			return true
		})
	}
	if len(names) < 30 {
		t.Fatalf("found %d metric names in the package source, want the full set (30 or more): is the scan broken?", len(names))
	}
	slices.Sort(names)
	return names
}

// section returns the text of doc from the line that starts with heading to
// the next line starting with prefix (the next heading of the same level).
func section(t *testing.T, doc, heading, prefix string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("no %q heading", heading)
	}
	rest := doc[i+len(heading)+2:]
	if j := strings.Index(rest, "\n"+prefix); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestDocListsEveryMetric fails when a metric the package registers is
// missing from the "# Metrics" list of the package doc (doc.go) or from the
// stream line of README's "## Metrics" section, which writes the names
// after the first one as "…_<rest>".
func TestDocListsEveryMetric(t *testing.T) {
	names := registeredMetrics(t)
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	pkgDoc := section(t, string(doc), "// # Metrics", "// # ")
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	metrics := section(t, string(readme), "## Metrics", "## ")
	word := func(text, name string) bool {
		return regexp.MustCompile(regexp.QuoteMeta(name) + `\b`).MatchString(text)
	}
	for _, name := range names {
		if !word(pkgDoc, "//\t"+name) {
			t.Errorf("stream/doc.go # Metrics does not list %s", name)
		}
		short := "…_" + strings.TrimPrefix(name, "streamscore_stream_")
		if !word(metrics, "`"+name) && !word(metrics, "`"+short) {
			t.Errorf("README.md ## Metrics does not list %s (as %q)", name, short)
		}
	}
	for _, m := range regexp.MustCompile(`streamscore_stream_[a-z0-9_]+`).FindAllString(pkgDoc, -1) {
		if !slices.Contains(names, m) {
			t.Errorf("stream/doc.go # Metrics lists %s, which the package does not register", m)
		}
	}
}
