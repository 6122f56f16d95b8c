package features

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Definition identifies what one feature computes, independently of how the
// spec that defines it is written (YAML layout, key order, defaults left
// out or spelled out, file name). A model file records the Definition of
// every input it was trained on, and the stream refuses to score a model
// whose inputs the pipeline defines differently (see models.FeatureDef).
type Definition struct {
	Name string // the feature name (the column name)
	Text string // the definition in words, e.g. "sum of amount per card_id over 1h"
	Hash string // "sha256:<64 hex>" of Canonical
}

// DefinitionFormat heads every canonical definition; it changes only with
// the encoding (which would change every hash, and so refuse every model
// file recorded before).
const DefinitionFormat = "streamscore-feature-definition-v1"

// Canonical returns the canonical encoding of f's definition: one
// "key=value" line per property, in a fixed order, every key present,
// defaults spelled out (night_hour), durations in nanoseconds:
//
//	streamscore-feature-definition-v1
//	name=card_amount_sum_1h
//	agg=sum
//	entity=card_id
//	field=amount
//	of=
//	window=3600000000000
//	offset=0
//	transform=
//	night_hour=
//
// A fraud_count or fraud_rate feature counting by transaction time (its
// default label_time) has one more line, label_time=transaction; one
// counting by label time (label_time: label) has none, as before that
// property existed. It covers what the value means: name, aggregation, entity, input field,
// distinct field, window, offset, transform and night hour. It leaves out
// how precisely the engine approximates it (tiles, a distinct feature's
// cap): a tiled window or a lower cap changes a value only within the
// bound docs/features.md documents, and an operator may trade memory for
// that precision without retraining. f should be valid (Spec.Validate).
func (f *FeatureSpec) Canonical() string {
	night := ""
	if f.Agg == AggNight {
		h := DefaultNightHour
		if f.NightHour != nil {
			h = *f.NightHour
		}
		night = strconv.Itoa(h)
	}
	var b strings.Builder
	b.WriteString(DefinitionFormat)
	for _, kv := range [...][2]string{
		{"name", f.Name},
		{"agg", f.Agg},
		{"entity", f.Entity},
		{"field", f.Field},
		{"of", f.Of},
		{"window", strconv.FormatInt(int64(f.Window), 10)},
		{"offset", strconv.FormatInt(int64(f.Offset), 10)},
		{"transform", f.Transform},
		{"night_hour", night},
	} {
		b.WriteByte('\n')
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(kv[1])
	}
	if f.txTime() {
		// Added with the transaction-time semantics of fraud_count and
		// fraud_rate: their earlier (label-time) definitions, which
		// label_time: label keeps, hash as before, and a model recorded
		// under them is refused by a pipeline counting by transaction time.
		b.WriteString("\nlabel_time=" + LabelTimeTransaction)
	}
	b.WriteByte('\n')
	return b.String()
}

// Describe returns f's definition in words, for error messages and model
// files, e.g. "sum of amount per card_id over 1h" or "count of events per
// terminal_id over 7d, 7d before the event". Two features with the same
// Describe have the same Canonical except for the name.
func (f *FeatureSpec) Describe() string {
	var s string
	switch f.Agg {
	case AggValue:
		s = "the event's " + f.Field
	case AggCount:
		s = "count of events"
	case AggSum, AggMean, AggMin, AggMax, AggStd:
		s = f.Agg + " of " + f.Field
	case AggLast:
		s = "last " + f.Field + " of the other events"
	case AggDistinct:
		s = "distinct " + f.Of
	case AggSincePrev:
		s = "seconds since the previous event"
	case AggRatio:
		s = f.Field + " / its mean over the other events"
	case AggZScore:
		s = "z-score of " + f.Field + " against the other events"
	case AggChanged:
		s = f.Field + " changed since the previous event"
	case AggGeoVelocity:
		s = "km/h from the previous event"
	case AggFraudCount:
		s = "fraud labels"
		if f.txTime() {
			s = "known frauds among the events"
		}
	case AggFraudRate:
		s = "fraud labels / events"
		if f.txTime() {
			s = "known frauds among the events / events"
		}
	case AggHourSin:
		s = "sin(2π UTC hour/24)"
	case AggHourCos:
		s = "cos(2π UTC hour/24)"
	case AggWeekend:
		s = "weekend (UTC)"
	case AggNight:
		h := DefaultNightHour
		if f.NightHour != nil {
			h = *f.NightHour
		}
		s = "night (UTC hour <= " + strconv.Itoa(h) + ")"
	default:
		s = f.Agg
	}
	if f.Entity != "" {
		s += " per " + f.Entity
	}
	if f.Window != 0 {
		s += " over " + shortDuration(f.Window)
	}
	if f.Offset != 0 {
		s += ", " + shortDuration(f.Offset) + " before the event"
	}
	if f.Transform != "" {
		s = f.Transform + "(" + s + ")"
	}
	return s
}

// Definition returns f's Definition.
func (f *FeatureSpec) Definition() Definition {
	sum := sha256.Sum256([]byte(f.Canonical()))
	return Definition{Name: f.Name, Text: f.Describe(), Hash: "sha256:" + hex.EncodeToString(sum[:])}
}

// Definitions returns the Definition of every feature of s, in row order.
func (s *Spec) Definitions() []Definition {
	d := make([]Definition, len(s.Features))
	for i := range s.Features {
		d[i] = s.Features[i].Definition()
	}
	return d
}

// defaultDefinitions are DefaultSpec's, which the hand-written Builder
// computes.
var defaultDefinitions = sync.OnceValue(func() []Definition { return DefaultSpec().Definitions() })

// Definitions returns the Definition of every feature the Builder computes,
// in row order (the order of Names): its spec's (WithSpec), or the default
// spec's for the hand-written default features, which compute exactly the
// default spec (TestSpecDefaultMatchesBuilder).
func (b *Builder) Definitions() []Definition {
	if b.sp != nil {
		return b.sp.cs.spec.Definitions()
	}
	return slices.Clone(defaultDefinitions())
}

// shortDuration formats d as Duration.String does, without zero trailing
// units ("1h", not "1h0m0s").
func shortDuration(d Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
