package frame_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/streamscore/streamscore/internal/frame"
)

// FuzzOpen: Open never panics; it accepts a blob only if it is exactly the
// container Seal makes of the header and body it returns, and refuses
// anything else with ErrCorrupt.
func FuzzOpen(f *testing.F) {
	f.Add(frame.Seal(hdr, nil))
	f.Add(frame.Seal(hdr, []byte("some body")))
	f.Add(frame.Seal(hdr, body(frame.MaxBody+3)))
	f.Add([]byte("TESTMAGI\x03\x00k\x05\x00\x00\x00ab"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, b, err := frame.Open(blob)
		if err != nil {
			if !errors.Is(err, frame.ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if len(h.Magic) != frame.MagicLen {
			t.Fatalf("magic %q", h.Magic)
		}
		// A body of at most MaxBody in a container of Seal's length is in
		// one frame (or none, empty), as Seal writes it: the same bytes.
		// Longer bodies may be cut into frames otherwise and stay valid.
		if again := frame.Seal(h, b); len(b) <= frame.MaxBody && len(again) == len(blob) && !bytes.Equal(again, blob) {
			t.Fatalf("accepted a container that Seal does not reproduce")
		}
	})
}
