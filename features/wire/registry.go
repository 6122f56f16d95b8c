package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/sr"
)

// Sentinel errors.
var (
	// ErrUnknownSchema: the registry answered that it has no schema of
	// that id (or holds one it calls invalid). Records written with it are
	// dead letters (features.ReasonUnknownSchema).
	ErrUnknownSchema = errors.New("wire: schema not in the registry")
	// ErrRegistryUnavailable: the registry could not be asked (down,
	// timeouts, 5xx, or it refused our credentials). Never the record's
	// fault: retried.
	ErrRegistryUnavailable = errors.New("wire: schema registry unavailable")
	// ErrInvalidOption: an option's value is out of range.
	ErrInvalidOption = errors.New("wire: invalid option")
)

// maxRefDepth bounds the chain of schema references followed.
const maxRefDepth = 16

// Registry fetches writer schemas, with the schemas they reference, from a
// Confluent-compatible schema registry. It caches nothing itself (the
// Decoders cache compiled schemas). Safe for concurrent use.
type Registry struct {
	cl      *sr.Client
	fetches *prometheus.CounterVec
	cached  prometheus.Gauge
}

// RegistryOption tunes a Registry.
type RegistryOption func(*registryConfig) error

type registryConfig struct {
	reg prometheus.Registerer
}

// WithRegisterer registers the registry's and its Decoders' metrics with
// reg. Default: none (metrics are kept but not exported). The trap: one
// Registry per registerer, or the second registration fails.
func WithRegisterer(reg prometheus.Registerer) RegistryOption {
	return func(c *registryConfig) error {
		c.reg = reg
		return nil
	}
}

// NewRegistry returns a Registry asking cl (sr.NewClient with the URLs, TLS
// — sr.DialTLSConfig or sr.HTTPClient — and authentication: sr.BasicAuth,
// or sr.PreReq to read a rotated password at every request).
func NewRegistry(cl *sr.Client, opts ...RegistryOption) (*Registry, error) {
	if cl == nil {
		return nil, fmt.Errorf("%w: nil registry client", ErrInvalidOption)
	}
	var c registryConfig
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	r := &Registry{
		cl: cl,
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamscore_features_schema_fetches_total",
			Help: "Writer schemas looked up in the schema registry, by outcome (ok, unknown: not in the registry, error: the registry is down or refused the request).",
		}, []string{"outcome"}),
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "streamscore_features_schemas_cached",
			Help: "Compiled writer schemas held in the decoders' caches.",
		}),
	}
	for _, o := range []string{"ok", "unknown", "error"} {
		r.fetches.WithLabelValues(o)
	}
	if c.reg != nil {
		for _, m := range []prometheus.Collector{r.fetches, r.cached} {
			if err := c.reg.Register(m); err != nil {
				return nil, fmt.Errorf("register schema registry metrics: %w", err)
			}
		}
	}
	return r, nil
}

// fetched is a writer schema and the texts of the schemas it references
// (by reference name: the import path of a .proto, the full name of an
// Avro type), references before the schemas that use them.
type fetched struct {
	schema sr.Schema
	refs   []namedSchema
}

type namedSchema struct {
	name string
	sr.Schema
}

// fetch returns schema id with its references. Errors wrap ErrUnknownSchema
// or ErrRegistryUnavailable.
func (r *Registry) fetch(ctx context.Context, id int) (fetched, error) {
	s, err := r.cl.SchemaByID(ctx, id)
	if err != nil {
		return fetched{}, r.classify(fmt.Errorf("get schema id %d: %w", id, err))
	}
	f := fetched{schema: s}
	seen := map[string]bool{}
	if err := r.refs(ctx, s.References, &f, seen, 0); err != nil {
		return fetched{}, err
	}
	r.fetches.WithLabelValues("ok").Inc()
	return f, nil
}

func (r *Registry) refs(ctx context.Context, refs []sr.SchemaReference, f *fetched, seen map[string]bool, depth int) error {
	if depth > maxRefDepth {
		r.fetches.WithLabelValues("unknown").Inc()
		return fmt.Errorf("%w: references nested deeper than %d", ErrUnknownSchema, maxRefDepth)
	}
	for _, ref := range refs {
		if seen[ref.Name] {
			continue
		}
		seen[ref.Name] = true
		ss, err := r.cl.SchemaByVersion(ctx, ref.Subject, ref.Version)
		if err != nil {
			return r.classify(fmt.Errorf("get reference %q (subject %q version %d): %w", ref.Name, ref.Subject, ref.Version, err))
		}
		if err := r.refs(ctx, ss.References, f, seen, depth+1); err != nil {
			return err
		}
		f.refs = append(f.refs, namedSchema{name: ref.Name, Schema: ss.Schema})
	}
	return nil
}

// classify wraps err in ErrUnknownSchema when the registry answered that
// the schema (or a subject or version it references) does not exist or is
// invalid, else in ErrRegistryUnavailable, and counts it.
func (r *Registry) classify(err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusNotFound || re.StatusCode == http.StatusUnprocessableEntity) {
		r.fetches.WithLabelValues("unknown").Inc()
		return fmt.Errorf("%w: %w", ErrUnknownSchema, err)
	}
	r.fetches.WithLabelValues("error").Inc()
	return fmt.Errorf("%w: %w", ErrRegistryUnavailable, err)
}
