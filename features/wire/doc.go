// Package wire decodes events and labels written in the Confluent wire
// format — a magic byte 0, the 4-byte big-endian id of the writer schema in
// a schema registry, then an Avro or Protobuf payload (Protobuf first lists
// the message indexes, as zig-zag varints) — into features.Event and
// features.Label, with the rules of the JSON decoder (features.Decoder).
//
// # Concepts
//
// A Registry fetches writer schemas by id from a Confluent-compatible
// schema registry (franz-go's sr client: TLS, basic auth). A Decoder
// compiles each writer schema once into a plan that walks the payload
// without allocating: fields mapped to the event contract (by default the
// JSON names: tx_id, ts, card_id, …; nested fields with dotted paths) are
// read, every other field skipped. Compiled plans are cached per schema id
// (bounded, least recently used out first). Schema evolution is the
// reader's: writer fields are matched by name, so a record written with an
// older or newer schema still maps as long as it has the required fields;
// Avro's type promotions (int → long → float → double, string ↔ bytes)
// apply; Protobuf fields are matched by name in the writer's descriptor,
// whatever their numbers.
//
// Bad records are *features.DecodeError with the JSON reasons
// (missing_field, wrong_type, invalid_amount, …) plus
// features.ReasonUnknownSchema (the registry does not know the id),
// features.ReasonSchemaMismatch (the writer schema lacks a required mapped
// field or types it wrongly) and features.ReasonMalformedRecord (not the
// wire format, truncated). A registry that cannot be reached (or refuses
// our credentials) is not the record's fault: Prepare retries with a
// backoff, holding its caller (one partition's fetcher), and reports the
// outage to the observer (/readyz) until the schema is fetched.
//
// # Concurrency
//
// Registry and Decoder are safe for concurrent use. Decode and DecodeLabel
// allocate only what the event itself needs (one string backing all its
// string fields, as the JSON decoder).
//
// # Metrics
//
//   - streamscore_features_schema_fetches_total{outcome}: registry look-ups
//     by outcome: ok, unknown (the id is not in the registry), error (the
//     registry is down or refused the request).
//   - streamscore_features_schemas_cached: compiled writer schemas cached.
package wire
