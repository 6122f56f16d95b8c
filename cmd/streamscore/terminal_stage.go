package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream"
)

// terminalStage is where the shared entities' state (terminals) is kept
// with several members in the group: --terminal-stage replicas (every
// member reads every partition: exact, simple, one member's CPU is the
// group's ceiling) or repartition (a repartition topic keyed by terminal
// and a terminal stage per R partition: the work and the memory are
// shared out; two more hops of latency).
type terminalStage struct {
	TerminalStage         string
	RepartitionTopic      string
	EnrichedTopic         string
	RepartitionPartitions int
	RepartitionRetention  time.Duration
}

func (t *terminalStage) register(fs *flag.FlagSet) {
	fs.StringVar(&t.TerminalStage, "terminal-stage", "replicas", "where the terminal (shared-entity) state is kept with several members: replicas (each member also reads the partitions it does not claim; exact, every member holds every terminal) or repartition (events go through --repartition-topic keyed by terminal to the terminal stage owning it, whose columns come back through --enriched-topic; exact, terminals shared out among the members; needs --checkpoint-store; two more Kafka hops of latency)")
	fs.StringVar(&t.RepartitionTopic, "repartition-topic", "", "with --terminal-stage repartition, the topic the events go to keyed by terminal (default <group>.<topic>.repartition; created with --repartition-partitions when missing)")
	fs.StringVar(&t.EnrichedTopic, "enriched-topic", "", "with --terminal-stage repartition, the topic the terminal stages write each event's terminal columns to (default <group>.<topic>.enriched; created with the input topic's partition count when missing)")
	fs.IntVar(&t.RepartitionPartitions, "repartition-partitions", 0, "partitions of a --repartition-topic created by the engine (how many terminal stages share the work); 0: the input topic's count")
	fs.DurationVar(&t.RepartitionRetention, "repartition-retention", 7*24*time.Hour, "retention of the repartition and enriched topics the engine creates: at least the longest outage a terminal stage or a member may need to catch up on")
}

// Validate checks the flags; topic defaults are filled in from the group
// and the topic (internal topics belong to a group, as Kafka Streams'
// <application.id>-...-repartition do: a second group on the same input, a
// canary, must not share them).
func (t *terminalStage) Validate(group, topic string) error {
	if t.TerminalStage == "" {
		t.TerminalStage = "replicas" // an engine built without flags (demo)
	}
	switch t.TerminalStage {
	case "replicas", "repartition":
	default:
		return fmt.Errorf("--terminal-stage %q: want replicas or repartition", t.TerminalStage)
	}
	if t.RepartitionTopic == "" {
		t.RepartitionTopic = group + "." + topic + ".repartition"
	}
	if t.EnrichedTopic == "" {
		t.EnrichedTopic = group + "." + topic + ".enriched"
	}
	if t.RepartitionPartitions < 0 {
		return fmt.Errorf("--repartition-partitions %d is negative", t.RepartitionPartitions)
	}
	if t.RepartitionTopic == topic || t.EnrichedTopic == topic || t.RepartitionTopic == t.EnrichedTopic {
		return fmt.Errorf("--topic %q, --repartition-topic %q and --enriched-topic %q must differ", topic, t.RepartitionTopic, t.EnrichedTopic)
	}
	if t.RepartitionRetention == 0 {
		t.RepartitionRetention = 7 * 24 * time.Hour // an engine built without flags (demo)
	}
	if t.RepartitionRetention < time.Hour {
		return fmt.Errorf("--repartition-retention %v: at least 1h", t.RepartitionRetention)
	}
	return nil
}

func (t *terminalStage) repartition() bool { return t.TerminalStage == "repartition" }

// ensureTopics creates the repartition and enriched topics when missing:
// R with --repartition-partitions (default the input's count), E with the
// input's count, both deleting records after --repartition-retention. An
// existing E with another partition count is refused (the pipeline checks
// it again).
func (t *terminalStage) ensureTopics(ctx context.Context, brokers []string, rt kafka.RoundTripper, topic string) error {
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: rt, Timeout: 10 * time.Second}
	count := func(name string) (int, error) {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err != nil {
			return 0, err
		}
		for _, tp := range md.Topics {
			if tp.Name == name {
				if tp.Error != nil {
					return 0, tp.Error
				}
				return len(tp.Partitions), nil
			}
		}
		return 0, kafka.UnknownTopicOrPartition
	}
	in, err := count(topic)
	if err != nil {
		return fmt.Errorf("input topic %s: %w", topic, err)
	}
	want := map[string]int{t.RepartitionTopic: t.RepartitionPartitions, t.EnrichedTopic: in}
	if want[t.RepartitionTopic] == 0 {
		want[t.RepartitionTopic] = in
	}
	for _, name := range []string{t.RepartitionTopic, t.EnrichedTopic} {
		n, err := count(name)
		if err == nil {
			if name == t.EnrichedTopic && n != in {
				return fmt.Errorf("--enriched-topic %s has %d partitions, the input topic %s %d: they must be equal", name, n, topic, in)
			}
			continue
		}
		if !errors.Is(err, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("topic %s: %w", name, err)
		}
		res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: name, NumPartitions: want[name], ReplicationFactor: -1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: fmt.Sprint(t.RepartitionRetention.Milliseconds())}},
		}}})
		if err == nil {
			err = res.Errors[name]
		}
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
		for range 50 { // metadata follows creation after a moment on real clusters
			if _, err = count(name); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// streamOption is the pipeline option of the repartition mode.
func (t *terminalStage) streamOption() stream.Option {
	return stream.WithRepartition(stream.RepartitionConfig{Topic: t.RepartitionTopic, Enriched: t.EnrichedTopic})
}
