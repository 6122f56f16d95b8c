package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// Example shows the restore-on-assignment flow: restore the newest
// checkpoint of the partition, re-apply [Offset, committed) without
// emitting, then checkpoint now and then.
func Example() {
	ctx := context.Background()
	var store checkpoint.Store = checkpoint.NewMemory() // NewKafka or NewJetStream in a deployment
	defer store.Close()
	key := checkpoint.Key{Group: "scoring", Topic: "transactions", Partition: 3, Fingerprint: "spec sha256:ab12… models sha256:cd34…"}

	// A previous owner checkpointed the partition after offset 1,199.
	if _, err := store.Put(ctx, key, 1200, bytes.NewReader([]byte("state"))); err != nil {
		fmt.Println(err)
		return
	}

	// The new owner, on assignment:
	cp, found, err := store.Latest(ctx, key)
	switch {
	case errors.Is(err, checkpoint.ErrFingerprintMismatch):
		fmt.Println("state of another spec or model set: start the partition empty, and say so")
	case err != nil:
		fmt.Println("restore failed:", err) // not ready; retry
	case !found:
		fmt.Println("no checkpoint: start empty")
	default:
		fmt.Printf("restore %d bytes, re-apply from offset %d to the committed offset\n", cp.Size, cp.Offset)
	}
	// Output: restore 5 bytes, re-apply from offset 1200 to the committed offset
}
