package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/eval"
)

// historyFlags are the flags shared by the commands that replay recorded
// history through the stream's feature code (features, score).
type historyFlags struct {
	events, labels string
	from, to       string
	spec           string
	lateness       time.Duration
	pan            panConfig
	mem            memConfig // --max-cards, --max-terminals, --max-field-bytes: as the engine's
}

func (h *historyFlags) register(fs *flag.FlagSet, labelsHelp string) {
	fs.StringVar(&h.events, "events", "", "events JSONL file (required)")
	fs.StringVar(&h.labels, "labels", "", labelsHelp)
	fs.StringVar(&h.from, "from", "", "start of the range, RFC 3339 or YYYY-MM-DD (default: first event)")
	fs.StringVar(&h.to, "to", "", "end (exclusive) of the range (default: after the last event)")
	fs.StringVar(&h.spec, "features", "", "feature spec YAML, as the engine's --features (default: the embedded default spec; docs/features.md)")
	fs.DurationVar(&h.lateness, "max-lateness", time.Hour, "as the engine's --max-lateness (it only matters for out-of-order input)")
	h.pan.register(fs)
	h.mem.register(fs)
}

// history is recorded history read for a replay.
type history struct {
	events   []features.Event
	labels   []features.Label
	from, to time.Time
	opts     []features.Option // lateness and spec, for the Builder
	names    []string          // feature names of the spec
	defs     []features.Definition
}

// load validates the flags and reads the files; cmd names the command in
// errors.
func (h *historyFlags) load(cmd string) (*history, error) {
	if h.events == "" {
		return nil, fmt.Errorf("%s: --events is required", cmd)
	}
	from, err := parseTime(h.from, time.Unix(0, 0).UTC())
	if err != nil {
		return nil, fmt.Errorf("parse --from: %w", err)
	}
	to, err := parseTime(h.to, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		return nil, fmt.Errorf("parse --to: %w", err)
	}
	if !to.After(from) {
		return nil, fmt.Errorf("%s: --to must be after --from", cmd)
	}
	if err := h.mem.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	out := &history{from: from, to: to, names: features.Names(), defs: features.DefaultSpec().Definitions(),
		opts: append([]features.Option{features.WithMaxLateness(h.lateness)}, h.mem.featureOptions()...)}
	if h.spec != "" {
		spec, err := loadSpec(h.spec)
		if err != nil {
			return nil, err
		}
		out.opts = append(out.opts, features.WithSpec(spec))
		out.names, out.defs = spec.Names(), spec.Definitions()
	}
	panOpts, err := h.pan.decoderOptions(slog.Default())
	if err != nil {
		return nil, err
	}
	if out.events, out.labels, err = readHistory(h.events, h.labels, append(panOpts, h.mem.decoderOptions()...)...); err != nil {
		return nil, err
	}
	return out, nil
}

// readHistory reads an events file and, if labelsPath is not empty, a
// labels file, decoded with opts (the PAN key) as the stream decodes them.
// Generated files run on a simulated clock, so timestamps in the future are
// accepted.
func readHistory(eventsPath, labelsPath string, opts ...features.DecoderOption) ([]features.Event, []features.Label, error) {
	dec, err := features.NewDecoder(append([]features.DecoderOption{features.WithMaxFutureSkew(-1)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	events, err := readJSONL(eventsPath, func(f *os.File) ([]features.Event, error) { return features.ReadEvents(f, dec) })
	if err != nil {
		return nil, nil, err
	}
	if labelsPath == "" {
		return events, nil, nil
	}
	labels, err := readJSONL(labelsPath, func(f *os.File) ([]features.Label, error) { return features.ReadLabels(f, dec) })
	if err != nil {
		return nil, nil, err
	}
	return events, labels, nil
}

// knownFraud is the truth as known at the end of a labels file: for each
// transaction, its latest label (by label time; the later line on a tie),
// as `streamscore eval` counts it (eval.Feedback).
func knownFraud(labels []features.Label) eval.Truth {
	return feedback(labels).Truth()
}

// feedback feeds labels, in file order, to an eval.Feedback.
func feedback(labels []features.Label) *eval.Feedback {
	var fb eval.Feedback
	for i := range labels {
		l := &labels[i]
		fb.Add(l.TxID, l.TS, l.Fraud, l.Scenario)
	}
	return &fb
}

// decisionModels is the --decision-models list, or, when it is empty and
// the shipped models are in use, the shipped decision model.
func decisionModels(flagValue string, shipped bool) []string {
	d := splitList(flagValue)
	if len(d) == 0 && shipped {
		d = []string{models.ShippedDecisionModel}
	}
	return d
}
