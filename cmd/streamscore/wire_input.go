package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/wire"
	"github.com/streamscore/streamscore/stream"
	"github.com/twmb/franz-go/pkg/sr"
)

// envRegistryPassword holds the schema registry password itself (read
// directly, never through a flag).
const envRegistryPassword = envPrefix + "SCHEMA_REGISTRY_PASSWORD"

// registryTransport is the schema registry's name in connHealth (/readyz).
const registryTransport = "schema registry"

// wireInput is the input format of the transactions and labels topics:
// JSON, or Avro / Protobuf in the Confluent wire format with a schema
// registry (--input-format, --schema-registry and its TLS and basic auth,
// --input-mapping).
type wireInput struct {
	InputFormat             string
	LabelsFormat            string
	SchemaRegistry          string
	SchemaRegistryTLSCA     string
	SchemaRegistryTLSCert   string
	SchemaRegistryTLSKey    string
	SchemaRegistryUser      string
	SchemaRegistryPassFile  string
	SchemaRegistryMaxSchema int
	InputMapping            string
}

// register defines the input format flags on fs.
func (w *wireInput) register(fs *flag.FlagSet) {
	fs.StringVar(&w.InputFormat, "input-format", "json", "format of the transactions topic: json, avro or protobuf (the Confluent wire format: magic byte, schema id, payload; writer schemas from --schema-registry)")
	fs.StringVar(&w.LabelsFormat, "labels-format", "", "format of the labels topic: json, avro or protobuf (default: --input-format)")
	fs.StringVar(&w.SchemaRegistry, "schema-registry", "", "Confluent-compatible schema registry URL(s), comma-separated, for --input-format avro|protobuf (https:// for TLS)")
	fs.StringVar(&w.SchemaRegistryTLSCA, "schema-registry-tls-ca", "", "PEM file of the CA(s) that sign the schema registry's certificate (default: the system roots)")
	fs.StringVar(&w.SchemaRegistryTLSCert, "schema-registry-tls-cert", "", "PEM client certificate for mutual TLS to the schema registry (with --schema-registry-tls-key); re-read when it changes")
	fs.StringVar(&w.SchemaRegistryTLSKey, "schema-registry-tls-key", "", "PEM private key of --schema-registry-tls-cert")
	fs.StringVar(&w.SchemaRegistryUser, "schema-registry-user", "", "basic-auth user of the schema registry; its password comes from --schema-registry-password-file or env "+envRegistryPassword+", never from a flag")
	fs.StringVar(&w.SchemaRegistryPassFile, "schema-registry-password-file", "", "file holding the password of --schema-registry-user (trailing newline ignored); re-read when it changes, so rotating it needs no restart")
	fs.IntVar(&w.SchemaRegistryMaxSchema, "schema-registry-max-schemas", wire.DefaultMaxSchemas, "compiled writer schemas cached (least recently used dropped first)")
	fs.StringVar(&w.InputMapping, "input-mapping", "", "which Avro/Protobuf record field holds each field of the event contract, comma-separated contract=path pairs, e.g. card_id=card.token,amount=amount_eur,ts=event_time (dotted paths reach into nested records; '-' leaves an optional field unread); unmapped contract fields are read from the field of their own name")
}

// formats returns the input and labels formats ("json", "avro",
// "protobuf").
func (w *wireInput) formats() (string, string) {
	in := w.InputFormat
	if in == "" {
		in = "json"
	}
	lb := w.LabelsFormat
	if lb == "" {
		lb = in
	}
	return in, lb
}

// usesRegistry reports whether a topic is read in a registry format.
func (w *wireInput) usesRegistry() bool {
	in, lb := w.formats()
	return in != "json" || lb != "json"
}

// Validate checks the input format settings. It reads no file.
func (w *wireInput) Validate() error {
	var errs []error
	in, lb := w.formats()
	for _, f := range []struct{ flag, v string }{{"--input-format", in}, {"--labels-format", lb}} {
		if f.v != "json" {
			if _, err := wire.ParseFormat(f.v); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: want json, avro or protobuf", f.flag, f.v))
			}
		}
	}
	_, envPass := os.LookupEnv(envRegistryPassword)
	if !w.usesRegistry() {
		for _, f := range []struct{ name, v string }{
			{"--schema-registry", w.SchemaRegistry}, {"--schema-registry-tls-ca", w.SchemaRegistryTLSCA},
			{"--schema-registry-tls-cert", w.SchemaRegistryTLSCert}, {"--schema-registry-tls-key", w.SchemaRegistryTLSKey},
			{"--schema-registry-user", w.SchemaRegistryUser}, {"--schema-registry-password-file", w.SchemaRegistryPassFile},
			{"--input-mapping", w.InputMapping},
		} {
			if f.v != "" {
				errs = append(errs, fmt.Errorf("%s is set but no topic is read as avro or protobuf (--input-format, --labels-format)", f.name))
			}
		}
		return errors.Join(errs...)
	}
	urls := splitList(w.SchemaRegistry)
	if len(urls) == 0 {
		errs = append(errs, fmt.Errorf("--input-format %s / --labels-format %s need --schema-registry", in, lb))
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--schema-registry %q: %w", u, err))
		case pu.Scheme != "http" && pu.Scheme != "https" || pu.Host == "":
			errs = append(errs, fmt.Errorf("--schema-registry %q: want http(s)://host[:port]", u))
		case pu.User != nil:
			errs = append(errs, fmt.Errorf("--schema-registry %s://%s: credentials in the URL; use --schema-registry-user with --schema-registry-password-file or %s", pu.Scheme, pu.Host, envRegistryPassword))
		}
	}
	if (w.SchemaRegistryTLSCert == "") != (w.SchemaRegistryTLSKey == "") {
		errs = append(errs, errors.New("--schema-registry-tls-cert and --schema-registry-tls-key go together"))
	}
	hasPass := w.SchemaRegistryPassFile != "" || envPass
	switch {
	case w.SchemaRegistryPassFile != "" && envPass:
		errs = append(errs, fmt.Errorf("both --schema-registry-password-file and %s are set: use one", envRegistryPassword))
	case w.SchemaRegistryUser != "" && !hasPass:
		errs = append(errs, fmt.Errorf("--schema-registry-user needs a password: --schema-registry-password-file or %s", envRegistryPassword))
	case w.SchemaRegistryUser == "" && hasPass:
		errs = append(errs, errors.New("a schema registry password is set but --schema-registry-user is empty"))
	}
	if w.SchemaRegistryMaxSchema < 16 {
		errs = append(errs, fmt.Errorf("--schema-registry-max-schemas %d: want >= 16", w.SchemaRegistryMaxSchema))
	}
	if _, err := parseMapping(w.InputMapping); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// parseMapping parses --input-mapping.
func parseMapping(s string) (wire.Mapping, error) {
	m := wire.Mapping{}
	for _, pair := range splitList(s) {
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("--input-mapping %q: want contract=path pairs", pair)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("--input-mapping: %s mapped twice", k)
		}
		m[k] = v
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("--input-mapping: %w", err)
	}
	return m, nil
}

// client returns the registry client: TLS from the CA and
// client certificate files, and basic auth read at every request (a
// rotated password file is picked up without a restart).
func (w *wireInput) client() (*sr.Client, error) {
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if w.SchemaRegistryTLSCA != "" {
		pool, err := loadCAPool("--schema-registry-tls-ca", w.SchemaRegistryTLSCA)
		if err != nil {
			return nil, err
		}
		tcfg.RootCAs = pool
	}
	if w.SchemaRegistryTLSCert != "" {
		kp := &keyPairFiles{cert: w.SchemaRegistryTLSCert, key: w.SchemaRegistryTLSKey, flag: "--schema-registry-tls"}
		if _, err := kp.get(); err != nil {
			return nil, err
		}
		tcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tcfg
	opts := []sr.ClientOpt{
		sr.URLs(splitList(w.SchemaRegistry)...),
		sr.HTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}),
		sr.UserAgent("streamscore"),
	}
	if w.SchemaRegistryUser != "" {
		password := func() (string, error) { return os.Getenv(envRegistryPassword), nil }
		if w.SchemaRegistryPassFile != "" {
			sf := &secretFile{path: w.SchemaRegistryPassFile, what: "--schema-registry-password-file", trim: trimNewline}
			if _, err := sf.get(); err != nil {
				return nil, err
			}
			password = sf.get
		}
		user := w.SchemaRegistryUser
		opts = append(opts, sr.PreReq(func(req *http.Request) error {
			pass, err := password()
			if err != nil {
				return err
			}
			req.SetBasicAuth(user, pass)
			return nil
		}))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("schema registry client: %w", err)
	}
	return cl, nil
}

// streamOptions returns the pipeline's decoders for the configured
// formats (none for JSON). decOpts are the event decoder's options (skew,
// PAN key, bounds), applied to Avro and Protobuf records alike. A registry
// outage is reported in /readyz through health.
func (w *wireInput) streamOptions(reg prometheus.Registerer, log *slog.Logger, health *connHealth, decOpts []features.DecoderOption) ([]stream.Option, error) {
	if !w.usesRegistry() {
		return nil, nil
	}
	cl, err := w.client()
	if err != nil {
		return nil, err
	}
	if err := w.checkRegistry(cl, health, log); err != nil {
		return nil, err
	}
	r, err := wire.NewRegistry(cl, wire.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	mapping, err := parseMapping(w.InputMapping)
	if err != nil {
		return nil, err
	}
	observe := func(err error) {
		if health == nil {
			return
		}
		if err == nil {
			health.Up(registryTransport)
			return
		}
		health.Down(registryTransport, "unavailable", err)
	}
	jsonDec, err := features.NewDecoder(decOpts...)
	if err != nil {
		return nil, err
	}
	in, lb := w.formats()
	decoders := map[string]*wire.Decoder{}
	for _, f := range []string{in, lb} {
		if f == "json" || decoders[f] != nil {
			continue
		}
		format, _ := wire.ParseFormat(f)
		d, err := wire.New(format, r, jsonDec, wire.WithMapping(mapping), wire.WithMaxSchemas(w.SchemaRegistryMaxSchema),
			wire.WithObserver(observe), wire.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("--input-format %s: %w", f, err)
		}
		decoders[f] = d
	}
	var opts []stream.Option
	if d := decoders[in]; d != nil {
		opts = append(opts, stream.WithEventDecoder(d))
	}
	if d := decoders[lb]; d != nil {
		opts = append(opts, stream.WithLabelDecoder(d))
	}
	log.Info("input format", "transactions", in, "labels", lb, "schema_registry", strings.Join(splitList(w.SchemaRegistry), ","))
	return opts, nil
}

// checkRegistry asks the registry for schema id 0, which none holds: "not
// found" says it is reachable, speaks our TLS and takes our credentials. A
// TLS failure or a refusal of the credentials fails the start, naming the
// cause; a registry that cannot be reached (or answers 5xx) is reported in
// /readyz and waited for — the partitions hold until it answers.
func (w *wireInput) checkRegistry(cl *sr.Client, health *connHealth, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cl.SchemaByID(ctx, 0)
	var re *sr.ResponseError
	var verify *tls.CertificateVerificationError
	var recordHdr tls.RecordHeaderError
	switch {
	case err == nil, errors.As(err, &re) && re.StatusCode == http.StatusNotFound:
	case errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden):
		return fmt.Errorf("check schema registry: it refused the credentials (HTTP %d): check --schema-registry-user and its password", re.StatusCode)
	case errors.As(err, &verify), errors.As(err, &recordHdr), isRemoteTLSAlert(err):
		return fmt.Errorf("check schema registry: TLS: %w", err)
	default:
		log.Warn("schema registry unreachable at start: partitions wait for it when they need a schema", "err", err)
		if health != nil {
			health.Down(registryTransport, "unavailable", err)
		}
		return nil
	}
	if w.SchemaRegistryUser != "" {
		for _, u := range splitList(w.SchemaRegistry) {
			if strings.HasPrefix(u, "http://") {
				log.Warn("schema registry basic auth over http: the password crosses the network in clear; use https://", "url", u)
			}
		}
	}
	log.Info("schema registry checked", "urls", strings.Join(splitList(w.SchemaRegistry), ","), "tls_client_cert", w.SchemaRegistryTLSCert != "",
		"user", w.SchemaRegistryUser)
	return nil
}
