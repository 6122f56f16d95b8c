package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/segmentio/kafka-go"
)

// PutChunksOnly writes the chunk records of a checkpoint of key with blob
// and no manifest: what a writer killed between chunks leaves behind.
func (s *Kafka) PutChunksOnly(ctx context.Context, key Key, blob []byte) ([]string, error) {
	var pid [8]byte
	rand.Read(pid[:])
	put := hex.EncodeToString(pid[:])
	var keys []string
	for seq := 0; len(blob) > 0; seq++ {
		n := min(len(blob), s.chunkSize)
		k := chunkKey(key.id(), put, seq)
		if _, err := s.produce(ctx, s.Partition(key), kafka.Record{Key: kafka.NewBytes([]byte(k)), Value: kafka.NewBytes(blob[:n])}); err != nil {
			return keys, err
		}
		keys = append(keys, k)
		blob = blob[n:]
	}
	return keys, nil
}

// RawRecord is one record of a key in the checkpoint topic.
type RawRecord struct {
	Offset    int64
	Key       string
	Tombstone bool
	Len       int
}

// RawRecords returns every record of key's manifest and chunk keys in the
// checkpoint topic, in offset order.
func (s *Kafka) RawRecords(ctx context.Context, key Key) ([]RawRecord, error) {
	part := s.Partition(key)
	first, end, err := s.bounds(ctx, part)
	if err != nil {
		return nil, err
	}
	recs, _, err := s.readRange(ctx, part, first, end, manifestKey(key.id()), chunkPrefix(key.id()), fetchMaxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]RawRecord, len(recs))
	for i, r := range recs {
		out[i] = RawRecord{Offset: r.off, Key: r.key, Tombstone: r.tomb, Len: len(r.val)}
	}
	return out, nil
}

// ManifestKey and ChunkPrefix name key's records in the checkpoint topic.
func ManifestKey(key Key) string { return manifestKey(key.id()) }
func ChunkPrefix(key Key) string { return chunkPrefix(key.id()) }

// PartitionOf is the checkpoint partition of key in a topic of parts.
func PartitionOf(key Key, parts int) int { return partitionOf(key, parts) }

// ID is the key's name in a store.
func ID(key Key) string { return key.id() }
