package features

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidSpec is wrapped by every error of ParseSpec and Spec.Validate.
var ErrInvalidSpec = errors.New("features: invalid spec")

// Spec is a declarative feature spec: the features of a row, in row order.
// See docs/features.md for the YAML format and an example per aggregation.
type Spec struct {
	Features []FeatureSpec `yaml:"features"`
}

// FeatureSpec is one feature (one column) of a Spec.
type FeatureSpec struct {
	Name      string   `yaml:"name"`
	Agg       string   `yaml:"agg"`                 // one of the Agg* constants
	Entity    string   `yaml:"entity,omitempty"`    // event field keying the state (card_id, terminal_id, ...)
	Field     string   `yaml:"field,omitempty"`     // input field: amount (numeric aggs), or a string field (changed)
	Of        string   `yaml:"of,omitempty"`        // distinct: the field whose distinct values are counted
	Window    Duration `yaml:"window,omitempty"`    // window length w (> 0)
	Offset    Duration `yaml:"offset,omitempty"`    // window offset d (>= 0): the window is (t-d-w, t-d]
	Cap       *int     `yaml:"cap,omitempty"`       // distinct: exact up to cap distinct values (default 1024)
	Transform string   `yaml:"transform,omitempty"` // "" or "log1p" (value, since_prev)
	NightHour *int     `yaml:"night_hour,omitempty"`
	// Tiles, when set (>= 2), makes a count, sum, mean, std, min, max,
	// fraud_count or fraud_rate feature keep Tiles fixed-size time tiles of
	// width window/Tiles per entity instead of every event: memory O(Tiles)
	// per entity, and an approximation with a documented bound (see
	// docs/features.md, "Tiled windows"). 0: exact.
	Tiles int `yaml:"tiles,omitempty"`
	// LabelTime, for fraud_count and fraud_rate only, says which time of a
	// fraud label places it in the window: LabelTimeTransaction (the
	// default, "" means it) counts the frauds among the entity's
	// transactions whose transaction time lies in the window, known at the
	// event (label TS <= t); LabelTimeLabel counts the labels whose own TS
	// (when the fraud became known) lies in the window. See
	// docs/features.md, "Fraud labels". Trap: the two are different
	// features (different definition hashes); a model trained on one is
	// refused by a pipeline computing the other.
	LabelTime string `yaml:"label_time,omitempty"`
}

// Label times of fraud_count and fraud_rate (FeatureSpec.LabelTime).
const (
	LabelTimeTransaction = "transaction" // the transaction's time (Label.TxTS), label known at the event
	LabelTimeLabel       = "label"       // the label's own time (Label.TS)
)

// txTime reports whether f is a fraud feature placing labels by the
// transaction's time.
func (f *FeatureSpec) txTime() bool {
	return (f.Agg == AggFraudCount || f.Agg == AggFraudRate) && f.LabelTime != LabelTimeLabel
}

// MaxTiles is the largest tiles value a feature may set.
const MaxTiles = 4096

// Aggregations.
const (
	AggValue       = "value"        // the event's own field value
	AggCount       = "count"        // events in the window
	AggSum         = "sum"          // sum of field over the window
	AggMean        = "mean"         // mean of field (0 when empty)
	AggMin         = "min"          // min of field (0 when empty)
	AggMax         = "max"          // max of field (0 when empty)
	AggStd         = "std"          // population standard deviation (0 when empty)
	AggDistinct    = "distinct"     // distinct values of `of` in the window
	AggLast        = "last"         // field of the latest other event in the window (0 when none)
	AggSincePrev   = "since_prev"   // seconds since the entity's previous event; -1 when none
	AggRatio       = "ratio"        // value / mean of the other events in the window
	AggZScore      = "zscore"       // (value - mean) / std of the other events in the window
	AggChanged     = "changed"      // 1 when field differs from the entity's previous event's
	AggGeoVelocity = "geo_velocity" // km/h from the entity's previous event
	AggFraudCount  = "fraud_count"  // frauds among the entity's transactions in the window, known at the event (label_time)
	AggFraudRate   = "fraud_rate"   // fraud_count / events of the entity in the window, capped at 1
	AggHourSin     = "hour_sin"     // sin(2π hour/24), UTC
	AggHourCos     = "hour_cos"     // cos(2π hour/24), UTC
	AggWeekend     = "weekend"      // 1 on Saturday and Sunday, UTC
	AggNight       = "night"        // 1 when the UTC hour <= night_hour (default 6)
)

// DefaultDistinctCap is the cap of a distinct feature that sets none.
const DefaultDistinctCap = 1024

// DefaultNightHour is the night_hour of a night feature that sets none.
const DefaultNightHour = 6

// Duration is a YAML duration: Go syntax ("90m", "1h30m") or a whole
// number of days ("7d").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats d as days when it is a whole number of days.
func (d Duration) String() string {
	if d != 0 && int64(d)%dayNs == 0 {
		return strconv.FormatInt(int64(d)/dayNs, 10) + "d"
	}
	return time.Duration(d).String()
}

func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil || days > 100000 || days < -100000 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(days * dayNs), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return v, nil
}

//go:embed spec_default.yaml
var defaultSpecYAML []byte

// DefaultSpec returns the embedded default spec (spec_default.yaml): the
// features of Names(), in the same order, with the same semantics. Each
// call returns a fresh copy.
func DefaultSpec() *Spec {
	s, err := ParseSpec(defaultSpecYAML)
	if err != nil {
		panic(fmt.Errorf("parse embedded default spec: %w", err))
	}
	return s
}

// ParseSpec decodes and validates a YAML spec. Decoding is strict: unknown
// keys, duplicate keys and trailing documents are errors. Every error wraps
// ErrInvalidSpec and names the offending feature.
func ParseSpec(data []byte) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrInvalidSpec)
		}
		return nil, fmt.Errorf("%w: decode yaml: %w", ErrInvalidSpec, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one yaml document", ErrInvalidSpec)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Fields an entity may be keyed by (and that changed and distinct may read).
var stringFields = []string{"card_id", "terminal_id", "currency", "mcc", "channel", "country"}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// aggInfo says which keys an aggregation takes.
type aggInfo struct {
	entity   bool // entity required (else forbidden)
	field    byte // 'n': numeric field (amount) required; 's': string field required; 0: forbidden
	window   bool // window required (else window and offset forbidden)
	labels   bool // entity must be carried by labels
	log1p    bool // transform allowed
	needsOf  bool
	needsCap bool
}

var aggs = map[string]aggInfo{
	AggValue:       {field: 'n', log1p: true},
	AggCount:       {entity: true, window: true},
	AggSum:         {entity: true, field: 'n', window: true},
	AggMean:        {entity: true, field: 'n', window: true},
	AggMin:         {entity: true, field: 'n', window: true},
	AggMax:         {entity: true, field: 'n', window: true},
	AggStd:         {entity: true, field: 'n', window: true},
	AggDistinct:    {entity: true, window: true, needsOf: true, needsCap: true},
	AggLast:        {entity: true, field: 'n', window: true},
	AggSincePrev:   {entity: true, log1p: true},
	AggRatio:       {entity: true, field: 'n', window: true},
	AggZScore:      {entity: true, field: 'n', window: true},
	AggChanged:     {entity: true, field: 's'},
	AggGeoVelocity: {entity: true},
	AggFraudCount:  {entity: true, window: true, labels: true},
	AggFraudRate:   {entity: true, window: true, labels: true},
	AggHourSin:     {},
	AggHourCos:     {},
	AggWeekend:     {},
	AggNight:       {},
}

// Validate checks s; the error wraps ErrInvalidSpec and names the first
// offending feature and the problem.
func (s *Spec) Validate() error {
	if s == nil || len(s.Features) == 0 {
		return fmt.Errorf("%w: no features", ErrInvalidSpec)
	}
	seen := make(map[string]int, len(s.Features))
	distinctOf := map[string]string{} // entity -> of field
	for i := range s.Features {
		f := &s.Features[i]
		if err := f.validate(); err != nil {
			name := f.Name
			if name == "" {
				name = "#" + strconv.Itoa(i+1)
			}
			return fmt.Errorf("%w: feature %q: %s", ErrInvalidSpec, name, err)
		}
		if j, ok := seen[f.Name]; ok {
			return fmt.Errorf("%w: feature %q: duplicate name (also feature #%d)", ErrInvalidSpec, f.Name, j+1)
		}
		seen[f.Name] = i
		if f.Agg == AggDistinct {
			if of, ok := distinctOf[f.Entity]; ok && of != f.Of {
				return fmt.Errorf("%w: feature %q: entity %s already counts distinct %s; one distinct field per entity is supported",
					ErrInvalidSpec, f.Name, f.Entity, of)
			}
			distinctOf[f.Entity] = f.Of
		}
	}
	return nil
}

func (f *FeatureSpec) validate() error {
	if f.Name == "" {
		return errors.New("missing name")
	}
	if !nameRE.MatchString(f.Name) {
		return errors.New("name must be lower_snake_case ([a-z][a-z0-9]*(_[a-z0-9]+)*)")
	}
	info, ok := aggs[f.Agg]
	if !ok {
		if f.Agg == "" {
			return errors.New("missing agg")
		}
		return fmt.Errorf("unknown aggregation %q", f.Agg)
	}
	switch {
	case info.entity && f.Entity == "":
		return fmt.Errorf("agg %s needs an entity", f.Agg)
	case !info.entity && f.Entity != "":
		return fmt.Errorf("agg %s takes no entity", f.Agg)
	case info.entity && !isStringField(f.Entity):
		return fmt.Errorf("unknown or unsupported entity field %q (one of %s)", f.Entity, strings.Join(stringFields, ", "))
	case info.labels && f.Entity != "card_id" && f.Entity != "terminal_id":
		return fmt.Errorf("agg %s needs entity card_id or terminal_id (the fields labels carry), not %q", f.Agg, f.Entity)
	}
	switch info.field {
	case 'n':
		if f.Field == "" {
			return fmt.Errorf("agg %s needs a field", f.Agg)
		}
		if f.Field != "amount" {
			return fmt.Errorf("unknown or unsupported input field %q (numeric fields: amount)", f.Field)
		}
	case 's':
		if f.Field == "" {
			return fmt.Errorf("agg %s needs a field", f.Agg)
		}
		if !isStringField(f.Field) {
			return fmt.Errorf("unknown or unsupported input field %q (one of %s)", f.Field, strings.Join(stringFields, ", "))
		}
	default:
		if f.Field != "" {
			return fmt.Errorf("agg %s takes no field", f.Agg)
		}
	}
	switch {
	case info.window && f.Window == 0:
		return fmt.Errorf("agg %s needs a window", f.Agg)
	case info.window && f.Window < 0:
		return fmt.Errorf("window %v must be > 0", time.Duration(f.Window))
	case !info.window && (f.Window != 0 || f.Offset != 0):
		return fmt.Errorf("agg %s takes no window or offset", f.Agg)
	case f.Offset < 0:
		return fmt.Errorf("offset %v must be >= 0", time.Duration(f.Offset))
	}
	switch {
	case info.needsOf && f.Of == "":
		return fmt.Errorf("agg %s needs `of` (the field whose distinct values are counted)", f.Agg)
	case !info.needsOf && f.Of != "":
		return fmt.Errorf("agg %s takes no `of`", f.Agg)
	case info.needsOf && !isStringField(f.Of):
		return fmt.Errorf("unknown or unsupported `of` field %q (one of %s)", f.Of, strings.Join(stringFields, ", "))
	case !info.needsCap && f.Cap != nil:
		return fmt.Errorf("agg %s takes no cap", f.Agg)
	case f.Cap != nil && *f.Cap < 2:
		return fmt.Errorf("cap %d must be >= 2", *f.Cap)
	case f.Cap != nil && *f.Cap > 1<<20:
		return fmt.Errorf("cap %d must be <= %d", *f.Cap, 1<<20)
	}
	switch f.Transform {
	case "":
	case "log1p":
		if !info.log1p {
			return fmt.Errorf("agg %s takes no transform", f.Agg)
		}
	default:
		return fmt.Errorf("unknown transform %q (only log1p)", f.Transform)
	}
	if f.Tiles != 0 {
		switch f.Agg {
		case AggCount, AggSum, AggMean, AggStd, AggMin, AggMax, AggFraudCount, AggFraudRate:
		default:
			return fmt.Errorf("agg %s takes no tiles (only count, sum, mean, std, min, max, fraud_count, fraud_rate)", f.Agg)
		}
		switch {
		case f.Tiles < 2 || f.Tiles > MaxTiles:
			return fmt.Errorf("tiles %d must be in [2, %d]", f.Tiles, MaxTiles)
		case int64(f.Window)%int64(f.Tiles) != 0:
			return fmt.Errorf("window %v is not a whole number of nanoseconds per tile (%d tiles)", time.Duration(f.Window), f.Tiles)
		}
	}
	switch f.LabelTime {
	case "", LabelTimeTransaction, LabelTimeLabel:
		if f.LabelTime != "" && !info.labels {
			return fmt.Errorf("agg %s takes no label_time (only fraud_count, fraud_rate)", f.Agg)
		}
	default:
		return fmt.Errorf("unknown label_time %q (%s or %s)", f.LabelTime, LabelTimeTransaction, LabelTimeLabel)
	}
	if f.NightHour != nil {
		if f.Agg != AggNight {
			return fmt.Errorf("agg %s takes no night_hour", f.Agg)
		}
		if *f.NightHour < 0 || *f.NightHour > 23 {
			return fmt.Errorf("night_hour %d must be in [0, 23]", *f.NightHour)
		}
	}
	return nil
}

func isStringField(f string) bool {
	for _, s := range stringFields {
		if s == f {
			return true
		}
	}
	return false
}

// Names returns the feature names of s, in row order.
func (s *Spec) Names() []string {
	n := make([]string, len(s.Features))
	for i, f := range s.Features {
		n[i] = f.Name
	}
	return n
}
