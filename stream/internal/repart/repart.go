// Package repart holds the record formats and the routing of the
// repartition topics (--terminal-stage repartition): the owner of input
// partition p writes each valid event, and for every repartition partition
// it has sent nothing to for a while a watermark, to the repartition topic
// R, keyed and routed by the event's shared entity (Route); the terminal
// stage applies R's events to the shared entities in event-time order and
// writes each event's shared columns to the enriched topic E, partition p,
// where p's owner joins them to its rows.
//
// Both formats are versioned binary records, small and fixed in layout:
//
//	R record: 'R' 1 kind | src uvarint | offset varint | ts int64 BE | flags | payload
//	E record: 'E' 1      | src uvarint | offset varint | flags | n uvarint | n × float32 LE
//
// kind is KindEvent (payload: the event, in the input contract's JSON) or
// KindMark (no payload: the source is past offset, at event time ts).
// flags bit 0: caught up (R: the source's reader was at its high-water
// mark; E: late, the event was beyond the max lateness for a shared entity);
// E bit 1: refused (the terminal stage could not decode the event: no
// columns; the card stage dead-letters it instead of waiting for good).
package repart

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Kind is the kind of an R record.
type Kind byte

const (
	// KindEvent carries one event of the source partition.
	KindEvent Kind = 'e'
	// KindMark reports the source's progress: every event of it at or
	// below Offset that routes to this partition has been written before
	// the mark, and its later events are at or after TS.
	KindMark Kind = 'w'
)

const (
	magicR  = 'R'
	magicE  = 'E'
	version = 1

	flagBit     = 1
	flagRefused = 2
)

// Head is an R record's header.
type Head struct {
	Kind Kind
	// Src is the input partition the record comes from.
	Src int
	// Offset is the event's offset in Src (KindEvent), or the offset the
	// source has read through (KindMark; -1: nothing yet).
	Offset int64
	// TS is the event's time (ns since the Unix epoch), or the source's
	// watermark: the time of its last event (KindMark).
	TS int64
	// CaughtUp says the source's reader was at its high-water mark at
	// Offset: it had nothing more to read then.
	CaughtUp bool
}

// ErrFormat is wrapped by the parse errors.
var ErrFormat = errors.New("repart: malformed record")

// Route returns the partition, of n, that entity id routes to: FNV-1a
// (32 bits) of id, modulo n. Every stage routes by this one function,
// never by the producer's partitioner, so the terminal stage can tell
// which labels are its own. It panics if n <= 0.
func Route(id string, n int) int {
	if n <= 0 {
		panic("repart: Route: no partition")
	}
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// AppendRecord appends the R record of h and payload (KindEvent only) to
// dst and returns the extended buffer. To encode the payload in place
// instead of copying it, append it after AppendRecord(dst, h, nil) of a
// KindEvent head: the payload is the rest of the record.
func AppendRecord(dst []byte, h Head, payload []byte) []byte {
	dst = append(dst, magicR, version, byte(h.Kind))
	dst = binary.AppendUvarint(dst, uint64(h.Src))
	dst = binary.AppendVarint(dst, h.Offset)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.TS))
	var f byte
	if h.CaughtUp {
		f |= flagBit
	}
	dst = append(dst, f)
	if h.Kind == KindEvent {
		dst = append(dst, payload...)
	}
	return dst
}

// ParseRecord parses an R record. The payload aliases b.
func ParseRecord(b []byte) (h Head, payload []byte, err error) {
	if len(b) < 3 || b[0] != magicR {
		return h, nil, fmt.Errorf("%w: not a repartition record", ErrFormat)
	}
	if b[1] != version {
		return h, nil, fmt.Errorf("%w: repartition record version %d, this build reads %d", ErrFormat, b[1], version)
	}
	h.Kind = Kind(b[2])
	if h.Kind != KindEvent && h.Kind != KindMark {
		return h, nil, fmt.Errorf("%w: unknown record kind %q", ErrFormat, b[2])
	}
	b = b[3:]
	src, n := binary.Uvarint(b)
	if n <= 0 || src > math.MaxInt32 {
		return h, nil, fmt.Errorf("%w: bad source partition", ErrFormat)
	}
	b = b[n:]
	off, n := binary.Varint(b)
	if n <= 0 || off < -1 || (off < 0 && h.Kind == KindEvent) {
		return h, nil, fmt.Errorf("%w: bad source offset", ErrFormat)
	}
	b = b[n:]
	if len(b) < 9 {
		return h, nil, fmt.Errorf("%w: truncated", ErrFormat)
	}
	h.Src, h.Offset = int(src), off
	h.TS = int64(binary.BigEndian.Uint64(b))
	h.CaughtUp = b[8]&flagBit != 0
	b = b[9:]
	if h.Kind == KindMark {
		if len(b) != 0 {
			return h, nil, fmt.Errorf("%w: a watermark with a payload", ErrFormat)
		}
		return h, nil, nil
	}
	return h, b, nil
}

// Enriched is an E record: the shared columns of one event.
type Enriched struct {
	Src    int
	Offset int64
	// Late: the event was beyond the max lateness for one of its shared
	// entities (scored, not inserted there).
	Late bool
	// Refused: the terminal stage could not decode the event (Cols empty).
	Refused bool
	// Cols are the values of the Shared's columns (features.Shared.Columns),
	// in that order.
	Cols []float32
}

// AppendEnriched appends the E record of e to dst and returns the
// extended buffer.
func AppendEnriched(dst []byte, e *Enriched) []byte {
	dst = append(dst, magicE, version)
	dst = binary.AppendUvarint(dst, uint64(e.Src))
	dst = binary.AppendVarint(dst, e.Offset)
	var f byte
	if e.Late {
		f |= flagBit
	}
	if e.Refused {
		f |= flagRefused
	}
	dst = append(dst, f)
	dst = binary.AppendUvarint(dst, uint64(len(e.Cols)))
	for _, v := range e.Cols {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
	}
	return dst
}

// ParseEnriched parses an E record into e, reusing e.Cols' capacity.
func ParseEnriched(b []byte, e *Enriched) error {
	if len(b) < 2 || b[0] != magicE {
		return fmt.Errorf("%w: not an enriched record", ErrFormat)
	}
	if b[1] != version {
		return fmt.Errorf("%w: enriched record version %d, this build reads %d", ErrFormat, b[1], version)
	}
	b = b[2:]
	src, n := binary.Uvarint(b)
	if n <= 0 || src > math.MaxInt32 {
		return fmt.Errorf("%w: bad source partition", ErrFormat)
	}
	b = b[n:]
	off, n := binary.Varint(b)
	if n <= 0 || off < 0 {
		return fmt.Errorf("%w: bad source offset", ErrFormat)
	}
	b = b[n:]
	if len(b) < 1 {
		return fmt.Errorf("%w: truncated", ErrFormat)
	}
	e.Src, e.Offset, e.Late, e.Refused = int(src), off, b[0]&flagBit != 0, b[0]&flagRefused != 0
	b = b[1:]
	nc, n := binary.Uvarint(b)
	if n <= 0 || nc > uint64(len(b)-n)/4 {
		return fmt.Errorf("%w: bad column count", ErrFormat)
	}
	b = b[n:]
	if uint64(len(b)) != nc*4 {
		return fmt.Errorf("%w: %d bytes after %d columns", ErrFormat, len(b)-int(nc)*4, nc)
	}
	e.Cols = e.Cols[:0]
	for i := range int(nc) {
		e.Cols = append(e.Cols, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return nil
}
