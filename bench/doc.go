// Package bench is streamscore's benchmark harness: end-to-end throughput of
// the engine against the raw Kafka read path, measured in the same run on an
// embedded broker and NATS server. It holds no library code; see README.md
// in this folder for the figures and the commands that reproduce them.
package bench
