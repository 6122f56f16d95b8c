// Package frame writes and reads the one binary container every state
// codec of streamscore uses (feature state, sequential-model state,
// partition and shared checkpoints): a header naming the codec, its body cut
// into length-prefixed frames, and a CRC-32C over everything.
//
// # Concepts
//
// Format, all integers little endian:
//
//	header   magic (8 bytes), uint16 version, byte kind
//	frames   uint32 n (1..MaxBody), then n bytes of body; repeated
//	end      uint32 0 (the empty frame)
//	trailer  uint32 CRC-32C (Castagnoli) of every byte before it
//
// The magic names the codec, the version its body's layout, the kind what
// the body holds (a codec may write several). The package reads and checks
// the container; the caller checks the header's values and parses the body.
// Framing bounds what a corrupt length can make a reader allocate or read at
// once (MaxBody), lets a reader read exactly the container's bytes (no
// read-ahead past the trailer, so containers can follow one another in one
// stream), and the CRC catches a torn or flipped byte the body's own checks
// would miss. A body is delivered as it is read: a caller learns that the
// CRC matched only when Next (or Read) returns io.EOF, and must not act on
// a body before then.
//
// Errors about the bytes (truncated, a bad length, data after the end, a
// CRC mismatch) are *CorruptError, which matches ErrCorrupt; an error of the
// underlying reader or writer is returned wrapped.
//
// # Concurrency
//
// A Writer or Reader is used by one goroutine at a time. The package starts
// no goroutines and has no metrics.
package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	// MagicLen is the length of a header's magic.
	MagicLen = 8
	// HeaderLen is the length of the header: magic, version, kind.
	HeaderLen = MagicLen + 3
	// MaxBody is the largest frame body.
	MaxBody = 64 << 10
	// Reserve is the room WriteFrame wants before a frame's body (its
	// length goes there).
	Reserve = 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is matched by every *CorruptError.
var ErrCorrupt = errors.New("frame: corrupt")

// CorruptError says what is wrong with a container and where.
type CorruptError struct {
	Off    int64  // bytes of the container read when it was found
	Reason string // e.g. "truncated", "checksum 1234abcd, computed …"
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("frame: %s (at byte %d)", e.Reason, e.Off)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Header opens a container.
type Header struct {
	Magic   string // exactly MagicLen bytes
	Version uint16
	Kind    byte
}

func (h Header) append(b []byte) []byte {
	if len(h.Magic) != MagicLen {
		panic(fmt.Sprintf("frame: magic %q is not %d bytes", h.Magic, MagicLen))
	}
	b = append(b, h.Magic...)
	b = binary.LittleEndian.AppendUint16(b, h.Version)
	return append(b, h.Kind)
}

// Writer writes one container. Its first error sticks: later calls do
// nothing and return it.
type Writer struct {
	w   io.Writer
	crc uint32
	buf []byte // Write's frame: buf[:Reserve] is its length
	err error
}

// NewWriter writes h to w and returns a Writer for the body. It panics if
// h.Magic is not MagicLen bytes (a programmer's error).
func NewWriter(w io.Writer, h Header) *Writer {
	fw := &Writer{w: w}
	fw.write(h.append(make([]byte, 0, HeaderLen)))
	return fw
}

func (fw *Writer) write(p []byte) {
	if fw.err != nil {
		return
	}
	fw.crc = crc32.Update(fw.crc, crcTable, p)
	if _, err := fw.w.Write(p); err != nil {
		fw.err = fmt.Errorf("write frame: %w", err)
	}
}

// WriteFrame writes frame[Reserve:] as one frame (nothing when it is
// empty), using frame[:Reserve] for its length, so that a caller filling
// its own buffer writes it in one call without a copy. It panics if the
// body is longer than MaxBody. Do not mix it with Write.
func (fw *Writer) WriteFrame(frame []byte) error {
	n := len(frame) - Reserve
	if n > MaxBody {
		panic(fmt.Sprintf("frame: body of %d bytes, at most %d", n, MaxBody))
	}
	if n > 0 {
		binary.LittleEndian.PutUint32(frame, uint32(n))
		fw.write(frame)
	}
	return fw.err
}

// Write appends p to the body, writing a frame each time MaxBody bytes are
// buffered. It returns len(p) unless an error occurred.
func (fw *Writer) Write(p []byte) (int, error) {
	if fw.buf == nil {
		fw.buf = make([]byte, Reserve, Reserve+MaxBody)
	}
	n := len(p)
	for len(p) > 0 && fw.err == nil {
		if len(fw.buf) == cap(fw.buf) {
			fw.WriteFrame(fw.buf)
			fw.buf = fw.buf[:Reserve]
		}
		k := copy(fw.buf[len(fw.buf):cap(fw.buf)], p)
		fw.buf = fw.buf[:len(fw.buf)+k]
		p = p[k:]
	}
	if fw.err != nil {
		return 0, fw.err
	}
	return n, nil
}

// Close writes what Write buffered, the end frame and the CRC. It does not
// close the underlying writer. It returns the first error of the Writer.
func (fw *Writer) Close() error {
	if fw.buf != nil {
		fw.WriteFrame(fw.buf)
		fw.buf = fw.buf[:Reserve]
	}
	var z [4]byte
	fw.write(z[:])
	binary.LittleEndian.PutUint32(z[:], fw.crc)
	if fw.err == nil {
		if _, err := fw.w.Write(z[:]); err != nil {
			fw.err = fmt.Errorf("write frame: %w", err)
		}
	}
	return fw.err
}

// Reader reads one container. Its first error sticks.
type Reader struct {
	r    io.Reader
	crc  uint32
	off  int64
	buf  []byte // the current frame's body
	pos  int    // Read's position in buf
	done bool   // the end frame and the CRC were read and matched
	err  error
	tmp  [HeaderLen]byte
}

// NewReader returns a Reader of the container at the start of r. It reads
// from r exactly the container's bytes, in pieces of at most MaxBody.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Offset returns the number of bytes read from the underlying reader.
func (fr *Reader) Offset() int64 { return fr.off }

func (fr *Reader) corrupt(format string, args ...any) error {
	if fr.err == nil {
		fr.err = &CorruptError{Off: fr.off, Reason: fmt.Sprintf(format, args...)}
	}
	return fr.err
}

func (fr *Reader) readFull(p []byte, sum bool) bool {
	if fr.err != nil {
		return false
	}
	n, err := io.ReadFull(fr.r, p)
	fr.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			fr.corrupt("truncated")
		} else {
			fr.err = fmt.Errorf("read frame at byte %d: %w", fr.off, err)
		}
		return false
	}
	if sum {
		fr.crc = crc32.Update(fr.crc, crcTable, p)
	}
	return true
}

// ReadHeader reads the header. The caller checks its values: the package
// knows no codec. An empty or short input is a *CorruptError ("truncated").
func (fr *Reader) ReadHeader() (Header, error) {
	h := fr.tmp[:HeaderLen]
	if !fr.readFull(h, true) {
		return Header{}, fr.err
	}
	return Header{Magic: string(h[:MagicLen]), Version: binary.LittleEndian.Uint16(h[MagicLen:]), Kind: h[MagicLen+2]}, nil
}

// Next returns the next frame's body, valid until the next call. After the
// last frame it reads the end frame and the CRC and returns io.EOF if the
// CRC matches (then, and only then, the whole body is known intact), or a
// *CorruptError. It must follow ReadHeader.
func (fr *Reader) Next() ([]byte, error) {
	if fr.done {
		return nil, io.EOF
	}
	var h [4]byte
	if !fr.readFull(h[:], true) {
		return nil, fr.err
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n > MaxBody {
		return nil, fr.corrupt("frame of %d bytes, at most %d", n, MaxBody)
	}
	if n == 0 {
		sum := fr.crc
		if !fr.readFull(h[:], false) {
			return nil, fr.err
		}
		if got := binary.LittleEndian.Uint32(h[:]); got != sum {
			return nil, fr.corrupt("checksum %08x, computed %08x", got, sum)
		}
		fr.done = true
		return nil, io.EOF
	}
	if fr.buf == nil {
		fr.buf = make([]byte, 0, MaxBody)
	}
	fr.buf, fr.pos = fr.buf[:n], 0
	if !fr.readFull(fr.buf, true) {
		return nil, fr.err
	}
	return fr.buf, nil
}

// Read reads the body as one stream; it returns io.EOF at its end once the
// CRC matched. Do not mix it with Next.
func (fr *Reader) Read(p []byte) (int, error) {
	for fr.pos == len(fr.buf) {
		if _, err := fr.Next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, fr.buf[fr.pos:])
	fr.pos += n
	return n, nil
}

// Seal returns the container of h and body, in one allocation.
func Seal(h Header, body []byte) []byte {
	frames := (len(body) + MaxBody - 1) / MaxBody
	b := make([]byte, 0, HeaderLen+4*frames+len(body)+8)
	b = h.append(b)
	for rest := body; len(rest) > 0; {
		k := min(len(rest), MaxBody)
		b = binary.LittleEndian.AppendUint32(b, uint32(k))
		b = append(b, rest[:k]...)
		rest = rest[k:]
	}
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// Open reads the container that is exactly blob (bytes after its trailer
// are corrupt) and returns its header and body (a copy). The caller checks
// the header.
func Open(blob []byte) (Header, []byte, error) {
	fr := NewReader(bytes.NewReader(blob))
	h, err := fr.ReadHeader()
	if err != nil {
		return h, nil, err
	}
	body := make([]byte, 0, max(len(blob)-HeaderLen-8, 0))
	for {
		f, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return h, nil, err
		}
		body = append(body, f...)
	}
	if rest := int64(len(blob)) - fr.off; rest != 0 {
		return h, nil, fr.corrupt("%d bytes after the trailer", rest)
	}
	return h, body, nil
}
