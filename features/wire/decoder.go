package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/twmb/franz-go/pkg/sr"
)

// Format is a binary input format.
type Format int

// The formats.
const (
	FormatAvro Format = iota + 1
	FormatProtobuf
)

// String returns "avro" or "protobuf".
func (f Format) String() string {
	switch f {
	case FormatAvro:
		return "avro"
	case FormatProtobuf:
		return "protobuf"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// ParseFormat parses "avro" or "protobuf".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "avro":
		return FormatAvro, nil
	case "protobuf":
		return FormatProtobuf, nil
	}
	return 0, fmt.Errorf("%w: format %q: want avro or protobuf", ErrInvalidOption, s)
}

// DefaultMaxSchemas is the default of WithMaxSchemas.
const DefaultMaxSchemas = 1000

// unknownTTL is how long a schema id the registry does not know is
// remembered as unknown (its records dead-lettered without asking again).
const unknownTTL = time.Minute

// Option tunes a Decoder.
type Option func(*config) error

type config struct {
	mapping    Mapping
	maxSchemas int
	observe    func(error)
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
	missWait   time.Duration
}

// WithMapping sets which record fields hold the contract's fields (see
// Mapping). Default: every contract field from the record field of its own
// name. The trap: a mapped path the writer schema lacks makes every record
// of that schema a schema_mismatch dead letter when the field is required,
// and silently absent when it is optional.
func WithMapping(m Mapping) Option {
	return func(c *config) error {
		if _, err := compileMapping(m); err != nil {
			return err
		}
		c.mapping = m
		return nil
	}
}

// WithMaxSchemas bounds the compiled writer schemas cached (the least
// recently used is dropped first). Default DefaultMaxSchemas. The trap: it
// must exceed the messages that may wait between Prepare and Decode (the
// stage's queue), or a schema prepared may be dropped before its record is
// decoded, and then fetched again in Decode. n must be >= 16.
func WithMaxSchemas(n int) Option {
	return func(c *config) error {
		if n < 16 {
			return fmt.Errorf("%w: max schemas %d must be >= 16", ErrInvalidOption, n)
		}
		c.maxSchemas = n
		return nil
	}
}

// WithObserver sets fn to hear the registry's state as seen by Prepare: a
// non-nil error while the registry cannot be reached (each failed try), nil
// at the first answer and once a fetch succeeds again after failures. Default: none. fn must be quick and safe for
// concurrent use.
func WithObserver(fn func(err error)) Option {
	return func(c *config) error {
		c.observe = fn
		return nil
	}
}

// WithLogger sets the logger of registry outages. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		c.log = l
		return nil
	}
}

// WithBackoff sets the pause between Prepare's tries while the registry is
// unavailable: min doubling up to max. Default 100ms to 5s.
func WithBackoff(minWait, maxWait time.Duration) Option {
	return func(c *config) error {
		if minWait <= 0 || maxWait < minWait {
			return fmt.Errorf("%w: backoff %v to %v", ErrInvalidOption, minWait, maxWait)
		}
		c.minBackoff, c.maxBackoff = minWait, maxWait
		return nil
	}
}

// WithMissWait bounds how long Decode itself retries a registry that is
// unavailable for a schema not prepared (Prepare not called, or the schema
// dropped from the cache since). Default 30s; after it, Decode returns an
// error wrapping ErrRegistryUnavailable (not a *features.DecodeError).
func WithMissWait(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: miss wait %v", ErrInvalidOption, d)
		}
		c.missWait = d
		return nil
	}
}

// Decoder decodes events and labels in the Confluent wire format. It
// implements the stream's event and label decoders and its Preparer.
// Safe for concurrent use.
type Decoder struct {
	format Format
	reg    *Registry
	dec    *features.Decoder
	cfg    config
	paths  paths

	mu     sync.RWMutex
	cache  map[int]*entry
	tick   atomic.Uint64
	flight map[int]*call

	pool     sync.Pool // *features.Record
	failing  atomic.Bool
	observed atomic.Bool
}

// entry is one cached writer schema, compiled.
type entry struct {
	used    atomic.Uint64
	err     error     // the schema cannot be used: every record is this dead letter
	expires time.Time // of an unknown id's entry
	event   plan
	label   plan
	proto   *protoFile
	// Protobuf messages other than the first, by index path; built on
	// first use.
	mu    sync.Mutex
	other map[uint64]*protoPlans
}

type protoPlans struct {
	event, label plan
}

type plan interface {
	decode(payload []byte, rec *features.Record)
}

// errPlan is a plan every record of which is the same dead letter.
type errPlan struct{ err error }

func (errPlan) decode([]byte, *features.Record) {}

type call struct {
	done chan struct{}
	err  error
}

// New returns a Decoder of format f whose writer schemas come from reg and
// whose events are checked and materialized by dec (its PAN key, skew and
// field bounds apply, as to JSON).
func New(f Format, reg *Registry, dec *features.Decoder, opts ...Option) (*Decoder, error) {
	if f != FormatAvro && f != FormatProtobuf {
		return nil, fmt.Errorf("%w: format %d", ErrInvalidOption, f)
	}
	if reg == nil || dec == nil {
		return nil, fmt.Errorf("%w: nil registry or decoder", ErrInvalidOption)
	}
	c := config{maxSchemas: DefaultMaxSchemas, log: slog.Default(), minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second, missWait: 30 * time.Second}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	p, err := compileMapping(c.mapping)
	if err != nil {
		return nil, err
	}
	d := &Decoder{format: f, reg: reg, dec: dec, cfg: c, paths: p, cache: map[int]*entry{}, flight: map[int]*call{}}
	d.pool.New = func() any { return new(features.Record) }
	return d, nil
}

// header splits a message into schema id and payload (for Protobuf, with
// the message indexes still in front).
func header(b []byte) (int, []byte, error) {
	if len(b) == 0 {
		return 0, nil, &features.DecodeError{Reason: features.ReasonEmpty, Err: errors.New("empty message")}
	}
	if b[0] != 0 {
		return 0, nil, &features.DecodeError{Reason: features.ReasonMalformedRecord,
			Err: fmt.Errorf("first byte %#x is not the wire format's magic byte 0", b[0])}
	}
	if len(b) < 5 {
		return 0, nil, &features.DecodeError{Reason: features.ReasonMalformedRecord, Err: errors.New("truncated wire-format header")}
	}
	return int(binary.BigEndian.Uint32(b[1:5])), b[5:], nil
}

// Prepare makes sure the writer schema of message b is known, fetching it
// from the registry: while the registry is unavailable it retries with a
// backoff until ctx is done (then it returns ctx's error), reporting each
// failure to the observer. A message that is not in the wire format, or
// whose schema id the registry does not know, is left to Decode (a dead
// letter): Prepare returns nil for it.
func (d *Decoder) Prepare(ctx context.Context, b []byte) error {
	id, _, err := header(b)
	if err != nil {
		return nil
	}
	backoff := d.cfg.minBackoff
	for {
		_, err := d.entry(ctx, id)
		if err == nil || !errors.Is(err, ErrRegistryUnavailable) {
			back := d.failing.Load() && d.failing.CompareAndSwap(true, false)
			if back {
				d.cfg.log.Info("schema registry reachable again", "schema_id", id)
			}
			// The first answer also clears an outage reported before
			// (at start).
			first := !d.observed.Load() && d.observed.CompareAndSwap(false, true)
			if (back || first) && d.cfg.observe != nil {
				d.cfg.observe(nil)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.failing.Swap(true) {
			d.cfg.log.Error("schema registry unavailable: holding the partition until it answers", "schema_id", id, "err", err)
		}
		if d.cfg.observe != nil {
			d.cfg.observe(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, d.cfg.maxBackoff)
	}
}

// Prepared reports, without blocking, whether Prepare(b) would return at
// once: b is not in the wire format (left to Decode) or the writer schema
// its id names is cached. A fetcher hands the stage the messages before
// one that is not prepared first, so that a registry lookup never holds
// back messages it has already read.
func (d *Decoder) Prepared(b []byte) bool {
	id, _, err := header(b)
	if err != nil {
		return true
	}
	return d.cached(id) != nil
}

// entry returns schema id's entry, fetching and compiling it on a miss
// (one fetch per id at a time).
func (d *Decoder) entry(ctx context.Context, id int) (*entry, error) {
	if e := d.cached(id); e != nil {
		return e, nil
	}
	d.mu.Lock()
	c := d.flight[id]
	if c == nil {
		c = &call{done: make(chan struct{})}
		d.flight[id] = c
		d.mu.Unlock()
		var e *entry
		e, c.err = d.load(ctx, id)
		d.mu.Lock()
		if c.err == nil {
			d.insert(id, e)
		}
		delete(d.flight, id)
		d.mu.Unlock()
		close(c.done)
	} else {
		d.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	d.mu.RLock()
	e := d.cache[id]
	d.mu.RUnlock()
	if e == nil { // dropped at once by a tiny cache under many ids: ask again
		return d.entry(ctx, id)
	}
	return e, nil
}

// cached returns schema id's entry if it is cached (and, for an unknown
// id, not expired), marking it used.
func (d *Decoder) cached(id int) *entry {
	d.mu.RLock()
	e := d.cache[id]
	d.mu.RUnlock()
	if e == nil || !e.expires.IsZero() && !time.Now().Before(e.expires) {
		return nil
	}
	e.used.Store(d.tick.Add(1))
	return e
}

// insert caches e, dropping the least recently used entry when full; mu
// must be held.
func (d *Decoder) insert(id int, e *entry) {
	if _, ok := d.cache[id]; !ok && len(d.cache) >= d.cfg.maxSchemas {
		victim, oldest := -1, uint64(math.MaxUint64)
		for k, v := range d.cache {
			if u := v.used.Load(); u < oldest {
				victim, oldest = k, u
			}
		}
		delete(d.cache, victim)
		d.reg.cached.Dec()
	}
	if _, ok := d.cache[id]; !ok {
		d.reg.cached.Inc()
	}
	e.used.Store(d.tick.Add(1))
	d.cache[id] = e
}

// load fetches and compiles schema id. An id the registry does not know,
// or a schema that does not fit, is an entry holding the dead letter's
// error; only an unavailable registry is an error.
func (d *Decoder) load(ctx context.Context, id int) (*entry, error) {
	f, err := d.reg.fetch(ctx, id)
	switch {
	case errors.Is(err, ErrUnknownSchema):
		return &entry{err: &features.DecodeError{Reason: features.ReasonUnknownSchema, Err: fmt.Errorf("schema id %d: %w", id, err)},
			expires: time.Now().Add(unknownTTL)}, nil
	case err != nil:
		return nil, err
	}
	e := &entry{}
	want := sr.TypeAvro
	if d.format == FormatProtobuf {
		want = sr.TypeProtobuf
	}
	if f.schema.Type != want {
		e.err = mismatch("schema id %d is a %s schema, the input format is %s", id, f.schema.Type, d.format)
		return e, nil
	}
	switch d.format {
	case FormatAvro:
		e.event = planOrErr(compileAvro(f, &d.paths, eventRole))
		e.label = planOrErr(compileAvro(f, &d.paths, labelRole))
	case FormatProtobuf:
		pf, err := compileProtoFile(f)
		if err != nil {
			e.err = err
			return e, nil
		}
		e.proto = pf
		e.event, e.label = d.protoPlans(pf, []int{0})
	}
	return e, nil
}

func planOrErr[P plan](p P, err error) plan {
	if err != nil {
		return errPlan{err: err}
	}
	return p
}

func (d *Decoder) protoPlans(pf *protoFile, idx []int) (plan, plan) {
	md, err := pf.message(idx)
	if err != nil {
		return errPlan{err}, errPlan{err}
	}
	return planOrErr(compileProto(md, &d.paths, eventRole)), planOrErr(compileProto(md, &d.paths, labelRole))
}

// plan returns the plan for message b (its payload after the header and,
// for Protobuf, the message indexes).
func (d *Decoder) plan(b []byte, label bool) (plan, []byte, error) {
	id, payload, err := header(b)
	if err != nil {
		return nil, nil, err
	}
	e := d.cached(id)
	if e == nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.missWait)
		e, err = d.entryWait(ctx, id)
		cancel()
		if err != nil {
			return nil, nil, err
		}
	}
	if e.err != nil {
		return nil, nil, e.err
	}
	if d.format == FormatAvro {
		if label {
			return e.label, payload, nil
		}
		return e.event, payload, nil
	}
	var idx [maxMessageIndexes]int
	n, payload, err := messageIndexes(payload, &idx)
	if err != nil {
		return nil, nil, err
	}
	ev, lb := e.event, e.label
	if n != 1 || idx[0] != 0 {
		ev, lb = e.otherPlans(d, idx, n)
	}
	if label {
		return lb, payload, nil
	}
	return ev, payload, nil
}

// entryWait is entry retried while the registry is unavailable, until ctx
// is done.
func (d *Decoder) entryWait(ctx context.Context, id int) (*entry, error) {
	backoff := d.cfg.minBackoff
	for {
		e, err := d.entry(ctx, id)
		if err == nil || !errors.Is(err, ErrRegistryUnavailable) {
			return e, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("decode schema id %d: %w", id, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, d.cfg.maxBackoff)
	}
}

// otherPlans returns the plans of the message at index path idx[:n] (idx
// by value: the common path [0] never gets here, and must not allocate).
func (e *entry) otherPlans(d *Decoder, idx [maxMessageIndexes]int, n int) (plan, plan) {
	var key uint64
	for _, i := range idx[:n] {
		key = key<<8 | uint64(i+1)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if pp := e.other[key]; pp != nil {
		return pp.event, pp.label
	}
	ev, lb := d.protoPlans(e.proto, idx[:n])
	if e.other == nil {
		e.other = map[uint64]*protoPlans{}
	}
	if len(e.other) < 64 {
		e.other[key] = &protoPlans{ev, lb}
	}
	return ev, lb
}

// messageIndexes reads the message-index path in front of a Protobuf
// payload: a zig-zag varint count then as many zig-zag varint indexes; a
// count of 0 stands for the path [0].
func messageIndexes(b []byte, idx *[maxMessageIndexes]int) (int, []byte, error) {
	rd := areader{b: b}
	n := rd.long()
	switch {
	case rd.bad || n < 0 || n > maxMessageIndexes:
		return 0, nil, &features.DecodeError{Reason: features.ReasonMalformedRecord, Err: errors.New("malformed Protobuf message indexes")}
	case n == 0:
		idx[0] = 0
		return 1, b[rd.i:], nil
	}
	for i := range n {
		v := rd.long()
		if rd.bad || v < 0 || v > 254 {
			return 0, nil, &features.DecodeError{Reason: features.ReasonMalformedRecord, Err: errors.New("malformed Protobuf message indexes")}
		}
		idx[i] = int(v)
	}
	return int(n), b[rd.i:], nil
}

// Decode decodes one event from b into *e. Bad records are
// *features.DecodeError (e unchanged); a registry unavailable for longer
// than WithMissWait for a schema not prepared is an error wrapping
// ErrRegistryUnavailable.
func (d *Decoder) Decode(b []byte, e *features.Event) error {
	rec, err := d.record(b, false)
	if err != nil {
		return err
	}
	err = d.dec.DecodeRecord(rec, e)
	d.pool.Put(rec)
	return err
}

// DecodeLabel decodes one label from b into *l, as Decode.
func (d *Decoder) DecodeLabel(b []byte, l *features.Label) error {
	rec, err := d.record(b, true)
	if err != nil {
		return features.AsLabelError(err)
	}
	err = d.dec.DecodeLabelRecord(rec, l)
	d.pool.Put(rec)
	return err
}

// record reads the fields of b's payload (an event, or a label) into a
// Record from the pool, which the caller puts back, or returns why b
// cannot be read (an unknown or unusable schema, a bad frame).
func (d *Decoder) record(b []byte, label bool) (*features.Record, error) {
	p, payload, err := d.plan(b, label)
	if err != nil {
		return nil, err
	}
	if ep, ok := p.(errPlan); ok {
		return nil, ep.err
	}
	rec := d.pool.Get().(*features.Record)
	rec.Reset()
	p.decode(payload, rec)
	return rec, nil
}
