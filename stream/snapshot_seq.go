package stream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/streamscore/streamscore/internal/frame"
)

// A partition's sequential-model state (format 2) is a container of
// internal/frame (magic "SSQSTATE", kind 'Q': frames of at most 64 KiB and
// a CRC-32C) whose body is
//
//	ttl i64, clock i64 (Unix ns)
//	slots u32, then per slot: key, shape (strings), size u32
//	cards u64, then per card: id (string), last i64, size floats (f32 bits)
//
// little endian; a string is a u32 length and its bytes. Every card is in
// the layout of the slots listed (cards still in an older layout are moved
// to the current one first). Lengths are bounded, so a corrupt file fails
// with errSeqState instead of allocating.
//
// Format 1 (magic "streamscore-seq\x00", version u32 1, then the same body,
// no framing and no CRC: its integrity rested on the snapshot manifest's
// SHA-256) is still read, from the snapshots and checkpoints written
// before format 2; it is no longer written.
const (
	seqMagic     = "SSQSTATE"
	seqVersion   = 2
	seqKind      = 'Q'
	seqMagicV1   = "streamscore-seq\x00"
	seqVersionV1 = 1
	maxSeqStr    = 1 << 16
	maxSeqSize   = 1 << 20 // floats of state per card
)

var errSeqState = errors.New("stream: bad sequential-model state")

// writeState writes the state of every card to w, in the current layout.
func (ss *seqStates) writeState(w io.Writer) error {
	fw := frame.NewWriter(w, frame.Header{Magic: seqMagic, Version: seqVersion, Kind: seqKind})
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.ttl))
	b = binary.LittleEndian.AppendUint64(b, uint64(ss.clock))
	l := ss.layout
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.slots)))
	for _, sl := range l.slots {
		b = appendSeqString(b, sl.key)
		b = appendSeqString(b, sl.shape)
		b = binary.LittleEndian.AppendUint32(b, uint32(sl.size))
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(len(ss.cards)))
	if _, err := fw.Write(b); err != nil {
		return err
	}
	for id, c := range ss.cards {
		if c.layout != l {
			ss.migrate(c)
		}
		b = appendSeqString(b[:0], id)
		b = binary.LittleEndian.AppendUint64(b, uint64(c.last))
		for _, v := range c.data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		if _, err := fw.Write(b); err != nil {
			return err
		}
	}
	return fw.Close()
}

func appendSeqString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// readState replaces the cards' states with those in r. The cards keep the
// layout they were written in: the first time each is seen it moves to the
// current layout, keeping the state of every model whose name, role and
// state shape did not change (see migrate). It returns the number of cards
// read, and on error leaves ss without cards.
func (ss *seqStates) readState(r io.Reader) (int, error) {
	n, err := ss.readAny(r)
	if err != nil {
		ss.unlinkAll()
		clear(ss.cards)
		ss.clock = 0
		return 0, fmt.Errorf("%w: %w", errSeqState, err)
	}
	return n, nil
}

// readAny reads format 2, or format 1 (told apart by their first 8 bytes),
// reading from r no more than the state's bytes but for one byte checked to
// be the end.
func (ss *seqStates) readAny(r io.Reader) (int, error) {
	var head [frame.MagicLen]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, err
	}
	full := io.MultiReader(bytes.NewReader(head[:]), r)
	if string(head[:]) == seqMagicV1[:frame.MagicLen] {
		br := bufio.NewReaderSize(full, 1<<16)
		var hdr [len(seqMagicV1) + 4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return 0, err
		}
		if string(hdr[:len(seqMagicV1)]) != seqMagicV1 {
			return 0, errors.New("not a sequential-model state file")
		}
		if v := binary.LittleEndian.Uint32(hdr[len(seqMagicV1):]); v != seqVersionV1 {
			return 0, fmt.Errorf("format version %d, this build reads %d and %d", v, seqVersionV1, seqVersion)
		}
		return ss.read(br)
	}
	fr := frame.NewReader(full)
	h, err := fr.ReadHeader()
	switch {
	case err != nil:
		return 0, err
	case h.Magic != seqMagic || h.Kind != seqKind:
		return 0, fmt.Errorf("not a sequential-model state file (magic %q, kind %q)", h.Magic, h.Kind)
	case h.Version != seqVersion:
		return 0, fmt.Errorf("format version %d, this build reads %d and %d", h.Version, seqVersionV1, seqVersion)
	}
	n, err := ss.read(bufio.NewReaderSize(fr, 1<<16))
	if err != nil {
		return 0, err
	}
	// The container ended (its CRC matched): nothing may follow it.
	if k, _ := r.Read(head[:1]); k != 0 {
		return 0, errors.New("trailing bytes")
	}
	return n, nil
}

// read reads the body (both formats) from r, up to its end: r must then
// be at EOF (format 2: the container's end and CRC checked).
func (ss *seqStates) read(r *bufio.Reader) (int, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if ttl := int64(binary.LittleEndian.Uint64(hdr[0:8])); ttl != ss.ttl {
		return 0, fmt.Errorf("written with TTL %d ns, this pipeline has %d", ttl, ss.ttl)
	}
	clock := int64(binary.LittleEndian.Uint64(hdr[8:16]))
	nSlots, err := readSeqU32(r)
	if err != nil {
		return 0, err
	}
	if nSlots > 1024 {
		return 0, fmt.Errorf("%d model slots", nSlots)
	}
	l := &seqLayout{}
	for range nSlots {
		var sl seqSlot
		if sl.key, err = readSeqString(r); err != nil {
			return 0, err
		}
		if sl.shape, err = readSeqString(r); err != nil {
			return 0, err
		}
		size, err := readSeqU32(r)
		if err != nil {
			return 0, err
		}
		sl.off, sl.size = l.size, int(size)
		if l.size += sl.size; l.size > maxSeqSize {
			return 0, fmt.Errorf("%d floats of state per card", l.size)
		}
		role, name, _ := strings.Cut(sl.key, ":")
		if role == "" || name == "" {
			return 0, fmt.Errorf("model slot %q", sl.key)
		}
		sl.name = name
		l.slots = append(l.slots, sl)
	}
	var nb [8]byte
	if _, err := io.ReadFull(r, nb[:]); err != nil {
		return 0, err
	}
	nCards := binary.LittleEndian.Uint64(nb[:])
	// Each card takes at least 12 bytes: a bound that a corrupt count
	// cannot turn into a huge map before the reads fail.
	cards := make(map[string]*cardSeq, min(nCards, 1<<20))
	buf := make([]byte, 8+4*l.size)
	for range nCards {
		id, err := readSeqString(r)
		if err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, err
		}
		c := &cardSeq{last: int64(binary.LittleEndian.Uint64(buf)), layout: l, data: make([]float32, l.size)}
		for i := range c.data {
			c.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[8+4*i:]))
		}
		if _, dup := cards[id]; dup {
			return 0, fmt.Errorf("card %q twice", id)
		}
		cards[id] = c
	}
	switch _, err := r.ReadByte(); {
	case err == nil:
		return 0, errors.New("trailing bytes")
	case err != io.EOF:
		return 0, err
	}
	ss.unlinkAll() // restored states are reached by look-up first (cardVia)
	ss.cards, ss.clock = cards, clock
	if ss.log != nil {
		for _, o := range l.slots {
			if sl := ss.layout.find(o.key); sl != nil && sl.shape != o.shape {
				ss.log.Warn("restored model state has another shape: each card's state of this model restarts from zero",
					"model", o.name, "key", o.key, "old_shape", o.shape, "new_shape", sl.shape)
			}
		}
	}
	return len(cards), nil
}

func readSeqU32(r *bufio.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func readSeqString(r *bufio.Reader) (string, error) {
	n, err := readSeqU32(r)
	if err != nil {
		return "", err
	}
	if n > maxSeqStr {
		return "", fmt.Errorf("string of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}
