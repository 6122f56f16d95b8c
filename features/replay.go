package features

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
)

// CompareEvents orders events as Replay applies them, and as the stream
// applies state shared across partitions: by TS, then by TxID (byte order).
// It returns -1, 0 or +1. Events equal under it (same TS and tx_id: a
// duplicate) keep their input order in Replay.
func CompareEvents(a, b *Event) int {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c
	}
	return strings.Compare(a.TxID, b.TxID)
}

// CompareLabels orders labels as Replay applies them: by TS, then by TxID
// (byte order). Labels equal under it keep their input order in Replay.
func CompareLabels(a, b *Label) int {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c
	}
	return strings.Compare(a.TxID, b.TxID)
}

// Replay computes the feature row of every event exactly as the stream
// does, for training data and offline scoring. It applies events in one
// total order, CompareEvents (TS, then tx_id; events equal under it in
// input order; the caller's slices are not reordered), and before each
// event applies to a fresh Shared, in CompareLabels order, every label with
// TS <= that event's TS; rows come from one Builder built with opts. fn
// receives each event and its row; row is reused and only valid during the
// call. Replay stops at and returns fn's first error.
func Replay(events []Event, labels []Label, opts []Option, fn func(e *Event, row []float32) error) error {
	return ReplayEvicting(events, labels, opts, func(e *Event, row []float32, _ []string) error { return fn(e, row) })
}

// ReplayEvicting is Replay, whose fn also receives the ids of the cards
// applying e evicted under WithMaxCards (Builder.EvictedCards: usually
// none; only valid during the call), so that state kept beside the
// features for the same cards can be dropped as the stream drops it.
func ReplayEvicting(events []Event, labels []Label, opts []Option, fn func(e *Event, row []float32, evicted []string) error) error {
	shared, err := NewShared(opts...)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	b, err := NewBuilder(shared, opts...)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	eo := order(len(events), func(i, j int) int { return CompareEvents(&events[i], &events[j]) })
	lo := order(len(labels), func(i, j int) int { return CompareLabels(&labels[i], &labels[j]) })
	row := make([]float32, b.Width())
	li := 0
	for _, i := range eo {
		e := &events[i]
		for li < len(lo) && !labels[lo[li]].TS.After(e.TS) {
			shared.ApplyLabel(&labels[lo[li]])
			li++
		}
		b.Update(e, row)
		if err := fn(e, row, b.EvictedCards()); err != nil {
			return err
		}
	}
	return nil
}

// order returns the indexes 0..n-1 stably sorted by cmp.
func order(n int, cmp func(i, j int) int) []int32 {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int { return cmp(int(a), int(b)) })
	return idx
}

// maxLine is the longest JSONL line ReadEvents and ReadLabels accept.
const maxLine = 16 << 20

// ReadEvents reads JSON Lines events with d (nil: NewDecoder()). Blank lines
// are skipped. A bad line stops the read with an error naming its 1-based
// line number and wrapping the *DecodeError.
func ReadEvents(r io.Reader, d *Decoder) ([]Event, error) {
	if d == nil {
		var err error
		if d, err = NewDecoder(); err != nil {
			return nil, err
		}
	}
	var out []Event
	err := readLines(r, func(line []byte) error {
		out = append(out, Event{})
		return d.Decode(line, &out[len(out)-1])
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// ReadLabels reads JSON Lines labels with d (nil: NewDecoder()), like
// ReadEvents.
func ReadLabels(r io.Reader, d *Decoder) ([]Label, error) {
	if d == nil {
		var err error
		if d, err = NewDecoder(); err != nil {
			return nil, err
		}
	}
	var out []Label
	err := readLines(r, func(line []byte) error {
		out = append(out, Label{})
		return d.DecodeLabel(line, &out[len(out)-1])
	})
	if err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	return out, nil
}

func readLines(r io.Reader, fn func(line []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", n+1, err)
	}
	return nil
}
