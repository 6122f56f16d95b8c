package frame_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/internal/frame"
)

var hdr = frame.Header{Magic: "TESTMAGI", Version: 3, Kind: 'k'}

func body(n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestRoundTrip: Write in uneven pieces, WriteFrame and Seal give the same
// container for the same body; Open, Next and Read give the body back.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"empty", 0}, {"one", 1}, {"frame", frame.MaxBody}, {"frame+1", frame.MaxBody + 1}, {"3.5 frames", 7 * frame.MaxBody / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := body(tc.n)
			var w1 bytes.Buffer
			fw := frame.NewWriter(&w1, hdr)
			for rest := want; len(rest) > 0; {
				k := min(len(rest), 1+len(rest)%1000)
				if n, err := fw.Write(rest[:k]); n != k || err != nil {
					t.Fatalf("Write: %d, %v", n, err)
				}
				rest = rest[k:]
			}
			if err := fw.Close(); err != nil {
				t.Fatal(err)
			}
			var w2 bytes.Buffer
			fw = frame.NewWriter(&w2, hdr)
			for rest := want; len(rest) > 0; {
				k := min(len(rest), frame.MaxBody)
				fw.WriteFrame(append(make([]byte, frame.Reserve), rest[:k]...))
				rest = rest[k:]
			}
			if err := fw.Close(); err != nil {
				t.Fatal(err)
			}
			sealed := frame.Seal(hdr, want)
			if !bytes.Equal(w1.Bytes(), sealed) || !bytes.Equal(w2.Bytes(), sealed) {
				t.Fatalf("Write %d bytes, WriteFrame %d, Seal %d: not the same container", w1.Len(), w2.Len(), len(sealed))
			}
			h, got, err := frame.Open(sealed)
			if err != nil || h != hdr || !bytes.Equal(got, want) {
				t.Fatalf("Open: header %+v, %d bytes, %v; want %+v, %d bytes", h, len(got), err, hdr, len(want))
			}
			// Read, from a stream holding a second container after it: it
			// reads exactly its own bytes.
			r := bytes.NewReader(append(bytes.Clone(sealed), sealed...))
			fr := frame.NewReader(r)
			if h, err := fr.ReadHeader(); err != nil || h != hdr {
				t.Fatalf("ReadHeader: %+v, %v", h, err)
			}
			got, err = io.ReadAll(fr)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Read: %d bytes, %v; want %d", len(got), err, len(want))
			}
			if r.Len() != len(sealed) || fr.Offset() != int64(len(sealed)) {
				t.Fatalf("%d bytes left, offset %d; want %d, %d", r.Len(), fr.Offset(), len(sealed), len(sealed))
			}
		})
	}
}

// TestCorrupt: every truncation, every flipped bit, a trailing byte and an
// oversized frame length are *CorruptError matching ErrCorrupt.
func TestCorrupt(t *testing.T) {
	sealed := frame.Seal(hdr, body(2*frame.MaxBody+100))
	open := func(b []byte) error { _, _, err := frame.Open(b); return err }
	for cut := range len(sealed) {
		if cut > 200 && cut < len(sealed)-200 && cut%997 != 0 {
			continue
		}
		if err := open(sealed[:cut]); !errors.Is(err, frame.ErrCorrupt) {
			t.Fatalf("cut at %d of %d: %v, want ErrCorrupt", cut, len(sealed), err)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 3000 {
		off := i
		if i >= 200 {
			off = rng.IntN(len(sealed))
		}
		b := bytes.Clone(sealed)
		b[off] ^= 1 << rng.IntN(8)
		err := open(b)
		if off < frame.HeaderLen && err == nil {
			continue // the header is the caller's to check; the CRC still covers it
		}
		if !errors.Is(err, frame.ErrCorrupt) {
			t.Fatalf("bit flipped at %d: %v, want ErrCorrupt", off, err)
		}
	}
	if err := open(append(bytes.Clone(sealed), 0)); !errors.Is(err, frame.ErrCorrupt) || !strings.Contains(err.Error(), "after the trailer") {
		t.Errorf("trailing byte: %v", err)
	}
	huge := frame.Seal(hdr, []byte("x"))
	huge[frame.HeaderLen+2] = 0x10 // length 1 + 16 MiB
	var ce *frame.CorruptError
	if err := open(huge); !errors.As(err, &ce) || !strings.Contains(ce.Reason, "at most 65536") || ce.Off != frame.HeaderLen+4 {
		t.Errorf("oversized frame: %v", err)
	}
}

// TestHeaderFlipCaught: a flipped header byte is refused by the CRC once
// the body is read (the caller may refuse it earlier by its values).
func TestHeaderFlipCaught(t *testing.T) {
	sealed := frame.Seal(hdr, []byte("body"))
	for off := range frame.HeaderLen {
		b := bytes.Clone(sealed)
		b[off] ^= 0x40
		fr := frame.NewReader(bytes.NewReader(b))
		if _, err := fr.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(fr); !errors.Is(err, frame.ErrCorrupt) {
			t.Errorf("header byte %d flipped: %v, want ErrCorrupt", off, err)
		}
	}
}

type failRW struct{ n int }

var errDisk = errors.New("disk")

func (f *failRW) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errDisk
	}
	f.n -= len(p)
	return len(p), nil
}

func (f *failRW) Read(p []byte) (int, error) { return 0, errDisk }

// TestIOErrors: the underlying writer's or reader's error is returned
// wrapped, sticks, and is not ErrCorrupt.
func TestIOErrors(t *testing.T) {
	for _, limit := range []int{0, frame.HeaderLen, frame.HeaderLen + 10, frame.HeaderLen + frame.MaxBody + 4} {
		fw := frame.NewWriter(&failRW{n: limit}, hdr)
		fw.Write(body(frame.MaxBody + 10))
		if err := fw.Close(); !errors.Is(err, errDisk) {
			t.Errorf("writer failing after %d bytes: Close %v, want the disk error", limit, err)
		}
	}
	fr := frame.NewReader(&failRW{})
	if _, err := fr.ReadHeader(); !errors.Is(err, errDisk) || errors.Is(err, frame.ErrCorrupt) {
		t.Errorf("failing reader: %v", err)
	}
	if _, err := fr.Next(); !errors.Is(err, errDisk) {
		t.Errorf("the error does not stick: %v", err)
	}
}

func TestBadMagicPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a 7-byte magic did not panic")
		}
	}()
	frame.NewWriter(io.Discard, frame.Header{Magic: "SHORT!!"})
}
