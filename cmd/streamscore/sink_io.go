package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream"

	"github.com/streamscore/streamscore/sinks/output"
)

// sinkIO is how the sinks move records (issue 13): JetStream batch
// acknowledgements, the Kafka producer, and the audit topic's compression.
// run and demo take these flags.
type sinkIO struct {
	NATSBatch        string
	KafkaProducer    string
	AuditCompression string
	AuditFormat      string
}

// defaultSinkIO is the flags' defaults, for configurations built without
// flags (demo).
func defaultSinkIO() sinkIO {
	return sinkIO{NATSBatch: "fast", KafkaProducer: "direct", AuditCompression: "none", AuditFormat: string(stream.AuditJSON)}
}

func (c *sinkIO) register(fs *flag.FlagSet) {
	d := defaultSinkIO()
	fs.StringVar(&c.NATSBatch, "nats-batch", d.NATSBatch,
		"how JetStream acknowledges the records of one micro-batch: fast (one acknowledgement per batch and stream through nats-server's fast batch publish, "+
			"for streams created with allow_batched, nats-server 2.14+; other streams get one per record), atomic (atomic batch publish, all or nothing, "+
			"for streams with allow_atomic; slower here), or none (one acknowledgement per record). Every record keeps its Nats-Msg-Id; "+
			"a batch that fails is republished record by record")
	fs.StringVar(&c.KafkaProducer, "kafka-producer", d.KafkaProducer,
		"how records are produced to Kafka: direct (one produce request per topic-partition of each micro-batch, records read in place) or writer "+
			"(kafka-go's Writer, which copies every record into batches it allocates); both acks=all")
	fs.StringVar(&c.AuditCompression, "audit-compression", d.AuditCompression,
		"compression of the audit topic's record batches: none, lz4, zstd, snappy or gzip (lz4 and zstd cut the audit bytes on the wire and on the brokers' "+
			"disks several times for some producer CPU; consumers decompress). Needs --kafka-producer direct")
	fs.StringVar(&c.AuditFormat, "audit-format", d.AuditFormat,
		"encoding of audit records: json (the score record plus features and thresholds, one JSON object) or protobuf (the same members as one "+
			"streamscore.audit.v1.AuditRecord message, feature values as float32 bit for bit: about a third of the JSON record's encoding CPU; "+
			"the schema is in the README). Consumers of the audit topic must expect it: records carry no content type")
}

// Validate checks the values.
func (c *sinkIO) Validate() error {
	_, err := c.natsOptions()
	_, kerr := c.kafkaOptions()
	var ferr error
	if c.AuditFormat != string(stream.AuditJSON) && c.AuditFormat != string(stream.AuditProtobuf) {
		ferr = fmt.Errorf("--audit-format %q: %w (json or protobuf)", c.AuditFormat, stream.ErrAuditFormat)
	}
	return errors.Join(err, kerr, ferr)
}

func (c *sinkIO) natsOptions() ([]sinks.NATSOption, error) {
	b, err := sinks.ParseNATSBatch(c.NATSBatch)
	if err != nil {
		return nil, fmt.Errorf("--nats-batch: %w", err)
	}
	return []sinks.NATSOption{sinks.WithNATSBatch(b)}, nil
}

func (c *sinkIO) kafkaOptions() ([]sinks.KafkaOption, error) {
	p, err := sinks.ParseKafkaProducer(c.KafkaProducer)
	if err != nil {
		return nil, fmt.Errorf("--kafka-producer: %w", err)
	}
	codec, err := sinks.ParseKafkaCompression(c.AuditCompression)
	if err != nil {
		return nil, fmt.Errorf("--audit-compression: %w", err)
	}
	opts := []sinks.KafkaOption{sinks.WithKafkaProducer(p)}
	if codec != kafka.Compression(0) {
		if p != sinks.KafkaProducerDirect {
			return nil, fmt.Errorf("--audit-compression %s needs --kafka-producer direct", c.AuditCompression)
		}
		opts = append(opts, sinks.WithKafkaKindCompression(output.KindAudit, codec))
	}
	return opts, nil
}
