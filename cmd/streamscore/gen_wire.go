package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/features/wire"
	"github.com/twmb/franz-go/pkg/sr"
)

// genWire is gen's output format in Kafka mode: JSON, or Avro / Protobuf in
// the Confluent wire format, its schemas (wire.AvroEventSchema, ...)
// registered in --schema-registry under <topic>-value.
type genWire struct {
	Format string
	reg    wireInput // the registry's URL, TLS and basic auth
	event  int       // schema ids, set by setup
	label  int
}

// register defines gen's format flags on fs.
func (g *genWire) register(fs *flag.FlagSet) {
	fs.StringVar(&g.Format, "format", "json", "Kafka mode: json, avro or protobuf (Confluent wire format; the schemas are registered in --schema-registry under <topic>-value, then read by run --input-format)")
	fs.StringVar(&g.reg.SchemaRegistry, "schema-registry", "", "Kafka mode with --format avro|protobuf: the schema registry URL(s)")
	fs.StringVar(&g.reg.SchemaRegistryTLSCA, "schema-registry-tls-ca", "", "PEM file of the CA(s) of the schema registry's certificate")
	fs.StringVar(&g.reg.SchemaRegistryTLSCert, "schema-registry-tls-cert", "", "PEM client certificate for mutual TLS to the schema registry")
	fs.StringVar(&g.reg.SchemaRegistryTLSKey, "schema-registry-tls-key", "", "PEM private key of --schema-registry-tls-cert")
	fs.StringVar(&g.reg.SchemaRegistryUser, "schema-registry-user", "", "basic-auth user of the schema registry (password: --schema-registry-password-file or env "+envRegistryPassword+")")
	fs.StringVar(&g.reg.SchemaRegistryPassFile, "schema-registry-password-file", "", "file holding the password of --schema-registry-user")
}

// Validate checks the format flags; kafkaMode is gen's mode.
func (g *genWire) Validate(kafkaMode bool) error {
	if g.Format == "" {
		g.Format = "json"
	}
	if g.Format != "json" && !kafkaMode {
		return errors.New("gen: --format is for Kafka mode; files are JSONL")
	}
	g.reg.InputFormat = g.Format
	g.reg.SchemaRegistryMaxSchema = wire.DefaultMaxSchemas
	if err := g.reg.Validate(); err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	return nil
}

// setup registers the schemas of the events and labels topics.
func (g *genWire) setup(ctx context.Context, topic, labelsTopic string) error {
	if g.Format == "json" {
		return nil
	}
	cl, err := g.reg.client()
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, lb := sr.Schema{Schema: wire.AvroEventSchema}, sr.Schema{Schema: wire.AvroLabelSchema}
	if g.Format == "protobuf" {
		ev = sr.Schema{Schema: wire.ProtoSchema, Type: sr.TypeProtobuf}
		lb = ev
	}
	s, err := cl.CreateSchema(ctx, topic+"-value", ev)
	if err != nil {
		return fmt.Errorf("gen: register the %s schema of %s: %w", g.Format, topic, err)
	}
	g.event = s.ID
	if labelsTopic != "" {
		s, err := cl.CreateSchema(ctx, labelsTopic+"-value", lb)
		if err != nil {
			return fmt.Errorf("gen: register the %s schema of %s: %w", g.Format, labelsTopic, err)
		}
		g.label = s.ID
	}
	slog.Info("gen: schemas registered", "format", g.Format, "event_schema_id", g.event, "label_schema_id", g.label)
	return nil
}

// appendEvent appends e in the format.
func (g *genWire) appendEvent(dst []byte, e *features.Event) []byte {
	switch g.Format {
	case "avro":
		return wire.AppendAvroEvent(dst, g.event, e)
	case "protobuf":
		return wire.AppendProtoEvent(dst, g.event, e)
	}
	return e.AppendJSON(dst)
}

// appendLabel appends l in the format.
func (g *genWire) appendLabel(dst []byte, l *features.Label) []byte {
	switch g.Format {
	case "avro":
		return wire.AppendAvroLabel(dst, g.label, l)
	case "protobuf":
		return wire.AppendProtoLabel(dst, g.label, l)
	}
	return l.AppendJSON(dst)
}
