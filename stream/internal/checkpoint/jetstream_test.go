package checkpoint_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// startNATS starts an embedded JetStream server on a free loopback port.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
	})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func connectJS(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

func TestJetStreamConformance(t *testing.T) {
	runConformance(t, func(t *testing.T) target {
		js := connectJS(t, startNATS(t))
		s, err := checkpoint.NewJetStream(context.Background(), js, checkpoint.WithJetStreamChunkSize(32<<10))
		if err != nil {
			t.Fatalf("NewJetStream: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return target{
			store: s, big: 300 << 10, chunked: true,
			// A writer killed between chunks: chunk messages on a fresh
			// object subject, and no meta message naming it.
			crash: func(t *testing.T, _ checkpoint.Key, blob []byte) {
				var id [11]byte
				rand.Read(id[:])
				subj := fmt.Sprintf("$O.%s.C.%s", checkpoint.DefaultJetStreamBucket, hex.EncodeToString(id[:]))
				for len(blob) > 0 {
					n := min(len(blob), 32<<10)
					if _, err := js.Publish(context.Background(), subj, blob[:n]); err != nil {
						t.Fatalf("publish a chunk: %v", err)
					}
					blob = blob[n:]
				}
			},
		}
	})
}

// TestJetStreamBucket: a missing bucket is created unless told not to, and
// a second member (another connection) restores what the first stored.
func TestJetStreamBucket(t *testing.T) {
	ctx := context.Background()
	ns := startNATS(t)
	js := connectJS(t, ns)
	if _, err := checkpoint.NewJetStream(ctx, js, checkpoint.WithJetStreamBucket("ckpt"), checkpoint.WithJetStreamCreateBucket(false)); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("NewJetStream on a missing bucket without create: %v, want ErrBucketNotFound", err)
	}
	a, err := checkpoint.NewJetStream(ctx, js, checkpoint.WithJetStreamBucket("ckpt"), checkpoint.WithJetStreamMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	key := checkpoint.Key{Group: "g", Topic: "t", Partition: 1, Fingerprint: "f"}
	blob := randBlob(1, 1<<20)
	if _, err := a.Put(ctx, key, 5, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	b, err := checkpoint.NewJetStream(ctx, connectJS(t, ns), checkpoint.WithJetStreamBucket("ckpt"), checkpoint.WithJetStreamCreateBucket(false))
	if err != nil {
		t.Fatalf("second member: %v", err)
	}
	defer b.Close()
	cp, found, err := b.Latest(ctx, key)
	if err != nil || !found || cp.Offset != 5 || !bytes.Equal(cp.Blob, blob) {
		t.Fatalf("Latest on the second member: offset %d, found %v, err %v", cp.Offset, found, err)
	}
	for _, o := range []checkpoint.JetStreamOption{
		checkpoint.WithJetStreamBucket(""), checkpoint.WithJetStreamReplicas(0), checkpoint.WithJetStreamChunkSize(10),
	} {
		if _, err := checkpoint.NewJetStream(ctx, js, o); err == nil {
			t.Fatal("NewJetStream with a bad option: no error")
		}
	}
}

// TestJetStreamSizes measures Put and restore of 10 and 50 MB checkpoints
// on the embedded server (file storage, default chunk size).
func TestJetStreamSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 120 MB to the embedded server")
	}
	ctx := context.Background()
	for _, mb := range []int{10, 50} {
		t.Run(fmt.Sprintf("%dMB", mb), func(t *testing.T) {
			ns := startNATS(t)
			s, err := checkpoint.NewJetStream(ctx, connectJS(t, ns))
			if err != nil {
				t.Fatal(err)
			}
			key := checkpoint.Key{Group: "g", Topic: "tx", Partition: 0, Fingerprint: "f"}
			blob := randBlob(uint64(mb), mb<<20)
			var puts []time.Duration
			for i := range 2 {
				info, err := s.Put(ctx, key, int64(i), bytes.NewReader(blob))
				if err != nil {
					t.Fatal(err)
				}
				puts = append(puts, info.Duration)
			}
			fresh, err := checkpoint.NewJetStream(ctx, connectJS(t, ns))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cp, found, err := fresh.Latest(ctx, key)
			elapsed := time.Since(start)
			if err != nil || !found || !bytes.Equal(cp.Blob, blob) {
				t.Fatalf("Latest: found %v, err %v", found, err)
			}
			mbps := func(d time.Duration) float64 { return float64(mb) / d.Seconds() }
			t.Logf("%d MB in %d chunks: put %v (%.0f MB/s), put again %v (%.0f MB/s), restore %v (%.0f MB/s)",
				mb, cp.Chunks, puts[0].Round(time.Millisecond), mbps(puts[0]), puts[1].Round(time.Millisecond), mbps(puts[1]),
				elapsed.Round(time.Millisecond), mbps(elapsed))
		})
	}
}

// TestJetStreamDigestCorrupt: an object whose stored digest no read
// matches (its data damaged, or its meta) is ErrCorrupt once Latest's
// re-reads all fail, so that a restore does not ask again for ever as it
// does for a store that cannot be reached.
func TestJetStreamDigestCorrupt(t *testing.T) {
	ctx := context.Background()
	ns := startNATS(t)
	js := connectJS(t, ns)
	s, err := checkpoint.NewJetStream(ctx, js, checkpoint.WithJetStreamChunkSize(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := checkpoint.Key{Group: "g", Topic: "t", Partition: 0, Fingerprint: "f"}
	if _, err := s.Put(ctx, key, 7, bytes.NewReader(randBlob(2, 100<<10))); err != nil {
		t.Fatal(err)
	}
	// The meta message rewritten with another digest, as the object store
	// writes it (a rollup of the object's meta subject).
	obs, err := js.ObjectStore(ctx, checkpoint.DefaultJetStreamBucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil || len(infos) != 1 {
		t.Fatalf("list: %d objects, err %v", len(infos), err)
	}
	info := infos[0]
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(make([]byte, 32))
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(fmt.Sprintf("$O.%s.M.%s", checkpoint.DefaultJetStreamBucket, base64.URLEncoding.EncodeToString([]byte(info.Name))))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	_, found, err := s.Latest(ctx, key)
	if found || !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Fatalf("Latest of an object whose digest no read matches: found %v, err %v; want ErrCorrupt", found, err)
	}
	t.Logf("%v", err)
}
