package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// target is one Store under the conformance suite.
type target struct {
	store checkpoint.Store
	// crash leaves what a writer killed between chunks leaves: the chunks
	// of a checkpoint of key with blob, and no manifest. Nil where the
	// store has no such intermediate state (Memory).
	crash func(t *testing.T, key checkpoint.Key, blob []byte)
	// big is a blob size that spans several chunks of the store.
	big int
	// chunked: the store splits blobs (Info.Chunks > 1 for big).
	chunked bool
}

// runConformance checks the Store contract on fresh targets.
func runConformance(t *testing.T, newTarget func(t *testing.T) target) {
	ctx := context.Background()
	key := func(p int) checkpoint.Key {
		return checkpoint.Key{Group: "scoring", Topic: "transactions", Partition: p, Fingerprint: "spec-v1"}
	}
	put := func(t *testing.T, s checkpoint.Store, k checkpoint.Key, off int64, blob []byte) checkpoint.Info {
		t.Helper()
		info, err := s.Put(ctx, k, off, bytes.NewReader(blob))
		if err != nil {
			t.Fatalf("Put %s at %d: %v", k, off, err)
		}
		if info.Offset != off || info.Size != int64(len(blob)) || info.Key != k {
			t.Fatalf("Put %s: info %+v, want offset %d size %d", k, info, off, len(blob))
		}
		return info
	}
	wantLatest := func(t *testing.T, s checkpoint.Store, k checkpoint.Key, off int64, blob []byte) checkpoint.Checkpoint {
		t.Helper()
		cp, found, err := s.Latest(ctx, k)
		if err != nil || !found {
			t.Fatalf("Latest %s: found %v, err %v; want offset %d", k, found, err, off)
		}
		if cp.Offset != off || !bytes.Equal(cp.Blob, blob) || cp.Size != int64(len(blob)) || cp.Key != k {
			t.Fatalf("Latest %s: offset %d, %d bytes (equal %v), key %+v; want offset %d, %d bytes",
				k, cp.Offset, len(cp.Blob), bytes.Equal(cp.Blob, blob), cp.Key, off, len(blob))
		}
		return cp
	}
	wantNone := func(t *testing.T, s checkpoint.Store, k checkpoint.Key) {
		t.Helper()
		cp, found, err := s.Latest(ctx, k)
		if err != nil || found {
			t.Fatalf("Latest %s: found %v (offset %d), err %v; want none", k, found, cp.Offset, err)
		}
	}

	t.Run("round-trip", func(t *testing.T) {
		tg := newTarget(t)
		wantNone(t, tg.store, key(0))
		blob := randBlob(1, 1000)
		put(t, tg.store, key(0), 42, blob)
		cp := wantLatest(t, tg.store, key(0), 42, blob)
		if cp.Chunks < 1 || cp.Duration <= 0 {
			t.Fatalf("info %+v: want chunks >= 1 and a duration", cp.Info)
		}
		wantNone(t, tg.store, key(1))
	})

	t.Run("empty-blob", func(t *testing.T) {
		tg := newTarget(t)
		put(t, tg.store, key(0), 7, nil)
		wantLatest(t, tg.store, key(0), 7, nil)
	})

	t.Run("last-put-wins", func(t *testing.T) {
		tg := newTarget(t)
		for i, off := range []int64{10, 20, 5} { // a lower offset put last still wins
			blob := randBlob(uint64(i), 500+i)
			put(t, tg.store, key(0), off, blob)
			wantLatest(t, tg.store, key(0), off, blob)
		}
	})

	t.Run("big", func(t *testing.T) {
		tg := newTarget(t)
		blob := randBlob(2, tg.big)
		info := put(t, tg.store, key(0), 1000, blob)
		if tg.chunked && info.Chunks < 2 {
			t.Fatalf("%d bytes stored in %d chunks, want several", len(blob), info.Chunks)
		}
		wantLatest(t, tg.store, key(0), 1000, blob)
		smaller := randBlob(3, tg.big/3) // fewer chunks than the previous
		put(t, tg.store, key(0), 2000, smaller)
		wantLatest(t, tg.store, key(0), 2000, smaller)
	})

	t.Run("failing-reader-keeps-previous", func(t *testing.T) {
		tg := newTarget(t)
		prev := randBlob(4, 2000)
		put(t, tg.store, key(0), 100, prev)
		broken := io.MultiReader(bytes.NewReader(randBlob(5, tg.big)), errReader{})
		if _, err := tg.store.Put(ctx, key(0), 200, broken); !errors.Is(err, errBroken) {
			t.Fatalf("Put with a failing reader: %v, want errBroken", err)
		}
		wantLatest(t, tg.store, key(0), 100, prev)
		next := randBlob(6, tg.big)
		put(t, tg.store, key(0), 300, next)
		wantLatest(t, tg.store, key(0), 300, next)
	})

	t.Run("cancelled-put-keeps-previous", func(t *testing.T) {
		tg := newTarget(t)
		prev := randBlob(7, 2000)
		put(t, tg.store, key(0), 100, prev)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r := &cancelReader{r: bytes.NewReader(randBlob(8, tg.big)), after: tg.big / 2, cancel: cancel}
		if _, err := tg.store.Put(cctx, key(0), 200, r); err == nil {
			t.Fatal("Put whose context was cancelled midway: no error")
		}
		wantLatest(t, tg.store, key(0), 100, prev)
	})

	t.Run("crash-between-chunks", func(t *testing.T) {
		tg := newTarget(t)
		if tg.crash == nil {
			t.Skip("the store has no state between chunks")
		}
		prev := randBlob(9, tg.big)
		put(t, tg.store, key(0), 100, prev)
		tg.crash(t, key(0), randBlob(10, tg.big))
		wantLatest(t, tg.store, key(0), 100, prev)
		next := randBlob(11, 3000)
		put(t, tg.store, key(0), 300, next)
		wantLatest(t, tg.store, key(0), 300, next)
	})

	t.Run("concurrent-partitions", func(t *testing.T) {
		tg := newTarget(t)
		const parts, rounds = 6, 3
		var wg sync.WaitGroup
		errs := make(chan error, parts*rounds)
		for p := range parts {
			wg.Go(func() {
				for r := range rounds {
					blob := randBlob(uint64(p*100+r), 1000+tg.big/4*r)
					if _, err := tg.store.Put(ctx, key(p), int64(r), bytes.NewReader(blob)); err != nil {
						errs <- fmt.Errorf("partition %d round %d: %w", p, r, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for p := range parts {
			wantLatest(t, tg.store, key(p), rounds-1, randBlob(uint64(p*100+rounds-1), 1000+tg.big/4*(rounds-1)))
		}
	})

	t.Run("concurrent-same-key", func(t *testing.T) {
		tg := newTarget(t)
		const writers = 4
		blobs := make([][]byte, writers)
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			blobs[w] = randBlob(uint64(50+w), tg.big/2+w)
			wg.Go(func() {
				if _, err := tg.store.Put(ctx, key(0), int64(w), bytes.NewReader(blobs[w])); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		cp, found, err := tg.store.Latest(ctx, key(0))
		if err != nil || !found || cp.Offset < 0 || cp.Offset >= writers || !bytes.Equal(cp.Blob, blobs[cp.Offset]) {
			t.Fatalf("Latest after concurrent Puts of one key: offset %d, found %v, err %v; want one writer's blob whole", cp.Offset, found, err)
		}
	})

	t.Run("fingerprint-mismatch", func(t *testing.T) {
		tg := newTarget(t)
		blob := randBlob(12, 500)
		put(t, tg.store, key(0), 50, blob)
		other := key(0)
		other.Fingerprint = "spec-v2"
		cp, found, err := tg.store.Latest(ctx, other)
		var me *checkpoint.MismatchError
		if !errors.Is(err, checkpoint.ErrFingerprintMismatch) || !errors.As(err, &me) || found || cp.Blob != nil {
			t.Fatalf("Latest with another fingerprint: found %v, %d bytes, err %v; want a *MismatchError", found, len(cp.Blob), err)
		}
		if me.Stored != "spec-v1" || me.Offset != 50 || me.Key != other {
			t.Fatalf("mismatch error %+v: want stored spec-v1 at offset 50", me)
		}
		// The new format replaces the old one; the old reader now mismatches.
		blob2 := randBlob(13, 700)
		put(t, tg.store, other, 60, blob2)
		wantLatest(t, tg.store, other, 60, blob2)
		if _, _, err := tg.store.Latest(ctx, key(0)); !errors.Is(err, checkpoint.ErrFingerprintMismatch) {
			t.Fatalf("Latest with the old fingerprint: %v, want a mismatch", err)
		}
	})

	t.Run("keys-do-not-collide", func(t *testing.T) {
		tg := newTarget(t)
		keys := []checkpoint.Key{
			{Group: "g/1", Topic: "t", Partition: 1, Fingerprint: "f"},
			{Group: "g", Topic: "1/t", Partition: 1, Fingerprint: "f"},
			{Group: "g", Topic: "1", Partition: 11, Fingerprint: "f"},
			{Group: "g", Topic: "11", Partition: 1, Fingerprint: "f"},
			{Group: "g%2F1", Topic: "t", Partition: 1, Fingerprint: "f"},
		}
		for i, k := range keys {
			put(t, tg.store, k, int64(i), randBlob(uint64(20+i), 100+i))
		}
		for i, k := range keys {
			wantLatest(t, tg.store, k, int64(i), randBlob(uint64(20+i), 100+i))
		}
	})

	t.Run("delete", func(t *testing.T) {
		tg := newTarget(t)
		if err := tg.store.Delete(ctx, key(0)); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
		put(t, tg.store, key(0), 10, randBlob(30, tg.big))
		put(t, tg.store, key(1), 11, randBlob(31, 100))
		other := key(0)
		other.Fingerprint = "any" // Delete ignores the fingerprint
		if err := tg.store.Delete(ctx, other); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		wantNone(t, tg.store, key(0))
		wantLatest(t, tg.store, key(1), 11, randBlob(31, 100))
		blob := randBlob(32, 100)
		put(t, tg.store, key(0), 12, blob)
		wantLatest(t, tg.store, key(0), 12, blob)
	})

	t.Run("bad-input", func(t *testing.T) {
		tg := newTarget(t)
		good := key(0)
		for _, tc := range []struct {
			name string
			key  checkpoint.Key
			off  int64
			blob io.Reader
		}{
			{"no-group", checkpoint.Key{Topic: "t", Fingerprint: "f"}, 0, bytes.NewReader(nil)},
			{"no-topic", checkpoint.Key{Group: "g", Fingerprint: "f"}, 0, bytes.NewReader(nil)},
			{"negative-partition", checkpoint.Key{Group: "g", Topic: "t", Partition: -1, Fingerprint: "f"}, 0, bytes.NewReader(nil)},
			{"no-fingerprint", checkpoint.Key{Group: "g", Topic: "t"}, 0, bytes.NewReader(nil)},
			{"negative-offset", good, -1, bytes.NewReader(nil)},
			{"nil-reader", good, 0, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := tg.store.Put(ctx, tc.key, tc.off, tc.blob); err == nil {
					t.Fatal("Put: no error")
				}
				if tc.key != good {
					if _, _, err := tg.store.Latest(ctx, tc.key); err == nil {
						t.Fatal("Latest: no error")
					}
				}
			})
		}
		wantNone(t, tg.store, good)
	})
}

// randBlob returns n pseudo-random bytes, the same for the same seed.
func randBlob(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

// cancelReader cancels a context once after bytes were read.
type cancelReader struct {
	r      io.Reader
	after  int
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if c.n >= c.after && c.cancel != nil {
		c.cancel()
		c.cancel = nil
		time.Sleep(time.Millisecond) // let the cancellation be seen by the next request
	}
	return n, err
}
