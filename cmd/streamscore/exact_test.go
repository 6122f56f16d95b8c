package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/stream/local"
)

// The exactness comparison: the records the engine published against the
// records a single-process replay (`streamscore score`, `streamscore
// features`) of the same events produces. It is shared by the issue-16
// acceptance tests (TestBacklogExact, TestLiveExact) and meant for any test
// that claims "stream = score bit for bit" (the multi-process kill test).

// scoreRecordVolatile are the members of a score record that legitimately
// differ between the engine and `score`: scored_at is the moment of scoring
// (the event's own time in `score`) and latency_ms the time from the
// event's Kafka append to its scoring (0 in `score`). Every other member must be
// equal: tx_id, card_id (card_key_id), ts, scores, decision, models,
// reasons (feature and contribution, in order) and late (absent in both:
// the inputs are in event-time order, so nothing is late).
var scoreRecordVolatile = []string{"scored_at", "latency_ms"}

// exactRecord is one output record decoded for comparison: a JSON object
// whose numbers are kept as json.Number.
type exactRecord = map[string]any

// decodeExact decodes one JSON record, numbers as json.Number.
func decodeExact(b []byte) (exactRecord, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var r exactRecord
	if err := d.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode record %.120q: %w", b, err)
	}
	if _, ok := r["tx_id"].(string); !ok {
		return nil, fmt.Errorf("record %.120q has no tx_id", b)
	}
	return r, nil
}

// exactSummary is the outcome of compareExact.
type exactSummary struct {
	What       string // what was compared, e.g. "score records"
	Events     int    // events of the replay (one record each)
	Records    int    // records of the engine, duplicates included
	Missing    int    // events without any engine record
	Extra      int    // engine records of tx_ids the replay does not have
	Duplicates int    // engine records beyond the first of their event
	// DupsDiffer counts the events with several engine records that are
	// not all equal (volatile members aside): a re-delivery scored
	// against other state than the first delivery.
	DupsDiffer int
	// Mismatches counts the events whose last engine record differs from
	// the replay's record.
	Mismatches int
	// Fields counts the mismatching events per member path, indexes
	// folded ("scores.fraud", "reasons[].contribution",
	// "features.terminal_tx_count_1h", "late").
	Fields map[string]int
	// Diffs explains the first mismatching events (in replay order),
	// member by member.
	Diffs []string
}

// Exact reports whether the engine's records are exactly the replay's:
// every event has a record, none is extra, and the last record of every
// event equals the replay's. Duplicates are allowed (at least once); check
// Duplicates and DupsDiffer separately where none are expected.
func (s exactSummary) Exact() bool {
	return s.Events > 0 && s.Missing == 0 && s.Extra == 0 && s.Mismatches == 0
}

// String is a one-paragraph report: the counts, the members that differ
// (most often first) and the first diffs.
func (s exactSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d events, %d engine records; %d missing, %d extra, %d duplicates (%d events whose duplicates disagree); %d differ",
		s.What, s.Events, s.Records, s.Missing, s.Extra, s.Duplicates, s.DupsDiffer, s.Mismatches)
	if s.Events > 0 {
		fmt.Fprintf(&b, " (%.1f%%)", 100*float64(s.Mismatches)/float64(s.Events))
	}
	if len(s.Fields) > 0 {
		paths := slices.SortedFunc(maps.Keys(s.Fields), func(a, c string) int {
			if s.Fields[a] != s.Fields[c] {
				return s.Fields[c] - s.Fields[a]
			}
			return strings.Compare(a, c)
		})
		b.WriteString("\n  events differing per member:")
		for _, p := range paths {
			fmt.Fprintf(&b, " %s %d;", p, s.Fields[p])
		}
	}
	for _, d := range s.Diffs {
		b.WriteString("\n  ")
		b.WriteString(d)
	}
	return b.String()
}

// exactDiffsShown is how many mismatching events an exactSummary explains.
const exactDiffsShown = 3

// compareExact compares the engine's records with the replay's. engine
// holds every record the engine published, in the order they were
// appended (one sink partition gives that order), duplicates included;
// replay holds one record per event, in event-time order. The members named
// in volatile are removed from both sides before comparing. Strings, bools
// and nulls compare with ==, numbers by value (the shortest text that
// round-trips a float64 or float32, as the records are written: equal
// values are equal bit for bit), objects member by member (a member absent
// on one side differs), arrays element by element. Of several records of
// one event, the last is compared (at-least-once delivery: the last one is
// what a consumer keeping the newest record sees).
func compareExact(what string, engine, replay []exactRecord, volatile []string) exactSummary {
	s := exactSummary{What: what, Events: len(replay), Records: len(engine), Fields: map[string]int{}}
	byTx := make(map[string][]exactRecord, len(engine))
	for _, r := range engine {
		id := r["tx_id"].(string)
		byTx[id] = append(byTx[id], withoutMembers(r, volatile))
	}
	known := make(map[string]bool, len(replay))
	for _, want := range replay {
		id := want["tx_id"].(string)
		known[id] = true
		got := byTx[id]
		if len(got) == 0 {
			s.Missing++
			continue
		}
		s.Duplicates += len(got) - 1
		last := got[len(got)-1]
		for _, g := range got[:len(got)-1] {
			if len(diffExact("", g, last, nil)) > 0 {
				s.DupsDiffer++
				break
			}
		}
		diffs := diffExact("", last, withoutMembers(want, volatile), nil)
		if len(diffs) == 0 {
			continue
		}
		s.Mismatches++
		counted := map[string]bool{}
		for _, d := range diffs {
			p := foldIndexes(d.path)
			if !counted[p] {
				counted[p] = true
				s.Fields[p]++
			}
		}
		if len(s.Diffs) < exactDiffsShown {
			var b strings.Builder
			fmt.Fprintf(&b, "%s differs in %d members:", id, len(diffs))
			for i, d := range diffs {
				if i == 8 {
					fmt.Fprintf(&b, " …")
					break
				}
				fmt.Fprintf(&b, " %s engine %s replay %s;", d.path, d.got, d.want)
			}
			s.Diffs = append(s.Diffs, b.String())
		}
	}
	for id, rs := range byTx {
		if !known[id] {
			s.Extra += len(rs)
		}
	}
	return s
}

// withoutMembers returns r without the named top-level members: a copy
// when it has any of them, r itself otherwise.
func withoutMembers(r exactRecord, names []string) exactRecord {
	if !slices.ContainsFunc(names, func(n string) bool { _, ok := r[n]; return ok }) {
		return r
	}
	out := maps.Clone(r)
	for _, n := range names {
		delete(out, n)
	}
	return out
}

// memberDiff is one differing member: its path and both values as JSON.
type memberDiff struct{ path, got, want string }

// diffExact appends to out the members in which got and want differ.
func diffExact(path string, got, want any, out []memberDiff) []memberDiff {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		keys := slices.Collect(maps.Keys(w))
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			gv, gok := g[k]
			wv, wok := w[k]
			if !gok || !wok {
				out = append(out, memberDiff{p, jsonOrAbsent(gv, gok), jsonOrAbsent(wv, wok)})
				continue
			}
			out = diffExact(p, gv, wv, out)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			break
		}
		for i := range max(len(g), len(w)) {
			p := fmt.Sprintf("%s[%d]", path, i)
			if i >= len(g) || i >= len(w) {
				out = append(out, memberDiff{p, jsonOrAbsent(at(g, i), i < len(g)), jsonOrAbsent(at(w, i), i < len(w))})
				continue
			}
			out = diffExact(p, g[i], w[i], out)
		}
		return out
	case json.Number:
		if g, ok := got.(json.Number); ok && sameNumber(g, w) {
			return out
		}
	default:
		if got == want {
			return out
		}
	}
	return append(out, memberDiff{path, jsonOrAbsent(got, true), jsonOrAbsent(want, true)})
}

func at(s []any, i int) any {
	if i < len(s) {
		return s[i]
	}
	return nil
}

// sameNumber reports whether two JSON numbers have the same value.
func sameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	fa, errA := strconv.ParseFloat(string(a), 64)
	fb, errB := strconv.ParseFloat(string(b), 64)
	return errA == nil && errB == nil && fa == fb
}

func jsonOrAbsent(v any, present bool) string {
	if !present {
		return "(absent)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

var indexRe = regexp.MustCompile(`\[\d+\]`)

// foldIndexes turns "reasons[3].contribution" into "reasons[].contribution".
func foldIndexes(path string) string { return indexRe.ReplaceAllString(path, "[]") }

// readTopicRecords returns the records of every message of topic, in
// partition then offset order (append order on a one-partition topic).
func readTopicRecords(ctx context.Context, brokers []string, topic string) ([]exactRecord, error) {
	msgs, err := local.ReadAll(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	out := make([]exactRecord, 0, len(msgs))
	for _, m := range msgs {
		r, err := decodeExact(m.Value)
		if err != nil {
			return nil, fmt.Errorf("%s/%d/%d: %w", topic, m.Partition, m.Offset, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// replayScores runs `streamscore score` over the events file with args
// added and returns its records.
func replayScores(ctx context.Context, dir, eventsPath string, args ...string) ([]exactRecord, error) {
	out := filepath.Join(dir, "replay-scores.jsonl")
	if err := cmdScore(ctx, append([]string{"--events", eventsPath, "--out", out}, args...)); err != nil {
		return nil, fmt.Errorf("score: %w", err)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []exactRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		r, err := decodeExact(sc.Bytes())
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

// replayFeatures runs `streamscore features` over the events file with
// args added and returns one record per row, shaped as the feature part of
// an audit record: {"tx_id":…,"features":{"<column>":<value>,…}}.
func replayFeatures(ctx context.Context, dir, eventsPath string, args ...string) ([]exactRecord, error) {
	out := filepath.Join(dir, "replay-features.csv")
	if err := cmdFeatures(ctx, append([]string{"--events", eventsPath, "--out", out}, args...)); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", out, err)
	}
	if len(head) < len(featureIDColumns) || !slices.Equal(head[:len(featureIDColumns)], featureIDColumns) {
		return nil, fmt.Errorf("%s: header %v does not start with %v", out, head, featureIDColumns)
	}
	names := head[len(featureIDColumns):]
	var recs []exactRecord
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", out, err)
		}
		fm := make(map[string]any, len(names))
		for i, n := range names {
			fm[n] = json.Number(row[len(featureIDColumns)+i])
		}
		recs = append(recs, exactRecord{"tx_id": row[0], "features": fm})
	}
}

// auditFeatures keeps only tx_id and features of audit records, to compare
// them with replayFeatures.
func auditFeatures(audit []exactRecord) []exactRecord {
	out := make([]exactRecord, len(audit))
	for i, r := range audit {
		out[i] = exactRecord{"tx_id": r["tx_id"], "features": r["features"]}
	}
	return out
}

// featureDrift counts, over the events present on both sides (the last
// engine record of each), the events whose engine value is below the
// replay's in at least one column with prefix lowerPrefix (e.g.
// "terminal_tx_count": windows that missed events), and the events with any
// differing column per entity class (the column name up to its first "_":
// card, terminal, …).
func featureDrift(engine, replay []exactRecord, lowerPrefix string) (lower int, byClass map[string]int) {
	last := map[string]map[string]any{}
	for _, r := range engine {
		if fm, ok := r["features"].(map[string]any); ok {
			last[r["tx_id"].(string)] = fm
		}
	}
	byClass = map[string]int{}
	for _, w := range replay {
		g := last[w["tx_id"].(string)]
		if g == nil {
			continue
		}
		wm := w["features"].(map[string]any)
		isLower := false
		classes := map[string]bool{}
		for name, wv := range wm {
			gv, _ := g[name].(json.Number)
			wn, _ := wv.(json.Number)
			if gv != "" && wn != "" && sameNumber(gv, wn) {
				continue
			}
			class, _, _ := strings.Cut(name, "_")
			classes[class] = true
			if strings.HasPrefix(name, lowerPrefix) {
				gf, e1 := strconv.ParseFloat(string(gv), 64)
				wf, e2 := strconv.ParseFloat(string(wn), 64)
				if e1 == nil && e2 == nil && gf < wf {
					isLower = true
				}
			}
		}
		for c := range classes {
			byClass[c]++
		}
		if isLower {
			lower++
		}
	}
	return lower, byClass
}

// TestCompareExact checks the comparison itself on hand-made records: it
// must see every kind of difference, and none where there is none.
func TestCompareExact(t *testing.T) {
	rec := func(s string) exactRecord {
		t.Helper()
		r, err := decodeExact([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	base := `{"tx_id":"a","ts":"2026-01-01T00:00:00Z","scored_at":"%s","scores":{"fraud":%s},"decision":"allow","reasons":[{"feature":"x","contribution":%s}],"latency_ms":%s%s}`
	a := func(scoredAt, fraud, contrib, lat, extra string) exactRecord {
		return rec(fmt.Sprintf(base, scoredAt, fraud, contrib, lat, extra))
	}
	want := []exactRecord{a("2026-01-01T00:00:00Z", "0.25", "1.5", "0", ""), rec(`{"tx_id":"b","scores":{"fraud":1}}`)}
	for _, tc := range []struct {
		name                                 string
		engine                               []exactRecord
		missing, extra, dups, differ, mismat int
		fields                               []string
	}{
		{"equal but for volatile members", []exactRecord{a("2026-05-05T00:00:00Z", "0.25", "1.5", "3.2", ""), rec(`{"tx_id":"b","scores":{"fraud":1.0}}`)},
			0, 0, 0, 0, 0, nil},
		{"a score one ulp off", []exactRecord{a("x", "0.25000000000000006", "1.5", "0", ""), rec(`{"tx_id":"b","scores":{"fraud":1}}`)},
			0, 0, 0, 0, 1, []string{"scores.fraud"}},
		{"late and a reason", []exactRecord{a("x", "0.25", "1.25", "0", `,"late":true`), rec(`{"tx_id":"b","scores":{"fraud":1}}`)},
			0, 0, 0, 0, 1, []string{"late", "reasons[].contribution"}},
		{"missing and extra", []exactRecord{a("x", "0.25", "1.5", "0", ""), rec(`{"tx_id":"c","scores":{"fraud":1}}`)},
			1, 1, 0, 0, 0, nil},
		{"duplicates, last one right", []exactRecord{a("x", "0.5", "1.5", "0", ""), a("y", "0.25", "1.5", "0", ""), rec(`{"tx_id":"b","scores":{"fraud":1}}`)},
			0, 0, 1, 1, 0, nil},
		{"duplicates, last one wrong", []exactRecord{a("x", "0.25", "1.5", "0", ""), a("y", "0.5", "1.5", "0", ""), rec(`{"tx_id":"b","scores":{"fraud":1}}`)},
			0, 0, 1, 1, 1, []string{"scores.fraud"}},
		{"a member of another type", []exactRecord{a("x", "0.25", "1.5", "0", ""), rec(`{"tx_id":"b","scores":[1]}`)},
			0, 0, 0, 0, 1, []string{"scores"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := compareExact("records", tc.engine, want, scoreRecordVolatile)
			got := []int{s.Missing, s.Extra, s.Duplicates, s.DupsDiffer, s.Mismatches}
			if w := []int{tc.missing, tc.extra, tc.dups, tc.differ, tc.mismat}; !slices.Equal(got, w) {
				t.Errorf("missing, extra, duplicates, dups differing, mismatches = %v, want %v\n%s", got, w, s)
			}
			if f := slices.Sorted(maps.Keys(s.Fields)); !slices.Equal(f, tc.fields) {
				t.Errorf("fields %v, want %v\n%s", f, tc.fields, s)
			}
			if s.Exact() != (tc.missing+tc.extra+tc.mismat == 0) {
				t.Errorf("Exact() = %v\n%s", s.Exact(), s)
			}
			if tc.mismat > 0 && (len(s.Diffs) == 0 || !strings.Contains(s.Diffs[0], "engine")) {
				t.Errorf("no diff explained: %s", s)
			}
		})
	}
	// The volatile members are removed from copies: the caller's records
	// keep them.
	if _, ok := want[0]["scored_at"]; !ok {
		t.Error("compareExact removed scored_at from the caller's record")
	}
}
