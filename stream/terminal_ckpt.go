package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// A terminal-stage checkpoint (one per R partition, key {group, R topic,
// r}) is a container of kind 'T' (checkpoint_frame.go) whose body is:
//
//	termCkptMagic, version u32, R position i64,
//	sources u32, per source: trail, caught-up flags u8, last applied ts i64,
//	labels partitions u32, per one: partition u32, trail,
//	shared state length u64 + features.Shared.WriteState
//
// where a trail is: applied i64 (every offset fetched up to it is applied;
// -1 none), ahead u32, the offsets applied above it (i64 each, increasing).
// All integers little-endian. The store's offset is the R position.
const (
	termCkptMagic     = "streamscore-term\x00"
	termCkptVersion   = 1
	ckptFrameTerminal = 'T'
	// maxTermLabelParts bounds the labels partitions a checkpoint lists.
	maxTermLabelParts = 1 << 16
	// restoreTries is how many failed checkpoint reads (the store
	// unreachable, not a checkpoint refused) are logged as warnings; the
	// next ones are errors. A read is tried until it answers or the stage
	// stops (1 s, 2 s, ... 5 s apart): starting empty would lose the
	// partition's history for good.
	restoreTries = 3
)

func appendTrail(b []byte, tr *offTrail) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(tr.applied))
	ahead := tr.ahead()
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ahead)))
	for _, a := range ahead {
		b = binary.LittleEndian.AppendUint64(b, uint64(a))
	}
	return b
}

// encodeTermPart serialises tp's checkpointed state (the stage goroutine
// owns tp).
func encodeTermPart(tp *termPart) ([]byte, error) {
	b := []byte(termCkptMagic)
	b = binary.LittleEndian.AppendUint32(b, termCkptVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(tp.rPos()))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(tp.srcs)))
	for i := range tp.srcs {
		s := &tp.srcs[i]
		b = appendTrail(b, &s.trail)
		var f byte
		if s.hasTS {
			f = 1
		}
		b = append(b, f)
		b = binary.LittleEndian.AppendUint64(b, uint64(s.lastTS))
	}
	lps := slices.Sorted(maps.Keys(tp.labels))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(lps)))
	for _, lp := range lps {
		b = binary.LittleEndian.AppendUint32(b, uint32(lp))
		b = appendTrail(b, tp.labels[lp])
	}
	var sh bytes.Buffer
	if err := tp.shared.WriteState(&sh); err != nil {
		return nil, fmt.Errorf("encode terminal checkpoint: %w", err)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(sh.Len()))
	b = append(b, sh.Bytes()...)
	return sealCkpt(ckptFrameTerminal, b), nil
}

// ckptCursor reads a checkpoint body; the first short read sets bad.
type ckptCursor struct {
	b   []byte
	bad bool
}

func (c *ckptCursor) take(n int) []byte {
	if c.bad || n < 0 || len(c.b) < n {
		c.bad = true
		return make([]byte, max(n, 0))
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}
func (c *ckptCursor) u32() uint32 { return binary.LittleEndian.Uint32(c.take(4)) }
func (c *ckptCursor) i64() int64  { return int64(binary.LittleEndian.Uint64(c.take(8))) }

func (c *ckptCursor) trail() (offTrail, error) {
	tr := newOffTrail(c.i64())
	n := c.u32()
	if c.bad || tr.applied < -1 || n > maxSnapAhead {
		return tr, fmt.Errorf("%w: bad offset trail", errCheckpoint)
	}
	for range n {
		a := c.i64()
		if c.bad || a <= tr.seen {
			return tr, fmt.Errorf("%w: offsets applied ahead out of order", errCheckpoint)
		}
		tr.trail = append(tr.trail, trailEntry{off: a, done: true})
		tr.seen = a
	}
	return tr, nil
}

// decodeTermPart reads blob into tp (fresh: empty trails, a fresh Shared)
// and returns the R position it was taken at.
func (t *terminalStage) decodeTermPart(tp *termPart, blob []byte) (int64, error) {
	body, err := openCkpt(ckptFrameTerminal, blob)
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(body, []byte(termCkptMagic)) {
		return 0, fmt.Errorf("%w: no terminal checkpoint magic", errCheckpoint)
	}
	c := &ckptCursor{b: body[len(termCkptMagic):]}
	if v := c.u32(); c.bad || v != termCkptVersion {
		return 0, fmt.Errorf("%w: terminal checkpoint version %d, this build reads %d", errCheckpoint, v, termCkptVersion)
	}
	rPos := c.i64()
	nSrc := c.u32()
	switch {
	case c.bad || rPos < 0:
		return 0, fmt.Errorf("%w: truncated header", errCheckpoint)
	case int(nSrc) != len(tp.srcs):
		return 0, fmt.Errorf("%w: %d source partitions, the input topic has %d", errCheckpoint, nSrc, len(tp.srcs))
	}
	for i := range tp.srcs {
		s := &tp.srcs[i]
		if s.trail, err = c.trail(); err != nil {
			return 0, err
		}
		f := c.take(1)[0]
		s.lastTS = c.i64()
		s.hasTS = f&1 != 0
		if c.bad || f > 1 {
			return 0, fmt.Errorf("%w: bad source %d", errCheckpoint, i)
		}
	}
	nl := c.u32()
	if c.bad || nl > maxTermLabelParts {
		return 0, fmt.Errorf("%w: bad labels partitions", errCheckpoint)
	}
	for range nl {
		lp := c.u32()
		tr, err := c.trail()
		if err != nil {
			return 0, err
		}
		if lp > maxTermLabelParts {
			return 0, fmt.Errorf("%w: labels partition %d", errCheckpoint, lp)
		}
		tp.labels[int(lp)] = &tr
	}
	n := c.i64()
	if c.bad || n < 0 || n != int64(len(c.b)) {
		return 0, fmt.Errorf("%w: shared state length", errCheckpoint)
	}
	if err := tp.shared.ReadState(bytes.NewReader(c.b)); err != nil {
		return 0, fmt.Errorf("%w: %w", errCheckpoint, err)
	}
	return rPos, nil
}

// key is R partition r's checkpoint key.
func (t *terminalStage) key(r int) checkpoint.Key {
	return checkpoint.Key{Group: t.cfg.group, Topic: t.cfg.rTopic, Partition: r, Fingerprint: t.cfg.fingerprint}
}

// restoreAll makes the state of every claim: its newest checkpoint, or
// empty. An error only when a Shared or an aligner cannot be made.
func (t *terminalStage) restoreAll(ctx context.Context, claims []Claim) ([]*termPart, error) {
	t.restore.Add(int32(len(claims)))
	defer t.restore.Add(-int32(len(claims)))
	parts := make([]*termPart, 0, len(claims))
	for _, c := range claims {
		tp, err := t.restorePart(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("stream: terminal stage: partition %d: %w", c.Partition(), err)
		}
		for src := range tp.srcs {
			if err := tp.al.Add(src); err != nil {
				return nil, fmt.Errorf("stream: terminal stage: add source %d to the aligner: %w", src, err)
			}
			// A restored source holds the others back from its last
			// applied event on, until it reports again.
			if s := &tp.srcs[src]; s.hasTS {
				tp.al.Advance(src, s.lastTS, false)
			}
		}
		parts = append(parts, tp)
	}
	return parts, nil
}

// restorePart returns claim c's state from its newest usable checkpoint,
// or empty (logged, counted).
func (t *terminalStage) restorePart(ctx context.Context, c Claim) (*termPart, error) {
	tp, err := t.newPart(c)
	if err != nil {
		return nil, err
	}
	r := c.Partition()
	t0 := time.Now()
	// The partition's terminal columns wait meanwhile (/readyz: restoring).
	cp, found, err := latestRetrying(ctx, t.cfg.ckpt, t.key(r), t.cfg.log.With("partition", r))
	switch {
	case err != nil && ctx.Err() != nil:
		tp.unknown = true // stopping: its state is unknown, never stored
		return tp, nil
	case errors.Is(err, checkpoint.ErrFingerprintMismatch):
		t.met.checkpoints.WithLabelValues("restore", "refused").Inc()
		t.cfg.log.Error("terminal checkpoint written for other features: the partition's shared entities start empty", "partition", r, "err", err)
		return tp, nil
	case err != nil:
		t.met.checkpoints.WithLabelValues("restore", "error").Inc()
		t.cfg.log.Error("read a terminal checkpoint: the partition's shared entities start empty", "partition", r, "err", err)
		return tp, nil
	case !found:
		t.met.checkpoints.WithLabelValues("restore", "none").Inc()
		t.cfg.log.Info("no terminal checkpoint: the partition's shared entities start empty", "partition", r, "start", c.Start())
		return tp, nil
	}
	rPos, err := t.decodeTermPart(tp, cp.Blob)
	if err == nil && rPos != cp.Offset {
		err = fmt.Errorf("%w: stored at R offset %d, its state is at %d", errCheckpoint, cp.Offset, rPos)
	}
	if err != nil {
		t.met.checkpoints.WithLabelValues("restore", "refused").Inc()
		t.cfg.log.Error("terminal checkpoint unusable: the partition's shared entities start empty", "partition", r, "err", err)
		return t.newPart(c)
	}
	if rPos < c.Start() {
		t.cfg.log.Warn("terminal checkpoint is behind the committed repartition offset: the records between are not in its state",
			"partition", r, "checkpoint_offset", rPos, "committed", c.Start())
	}
	tp.ckptVersion = tp.version
	t.met.checkpoints.WithLabelValues("restore", "ok").Inc()
	t.cfg.log.Info("terminal partition restored from its checkpoint", "partition", r, "offset", rPos, "committed", c.Start(),
		"bytes", len(cp.Blob), "took", time.Since(t0).Round(time.Millisecond))
	return tp, nil
}

// termBlob is one partition's checkpoint to store.
type termBlob struct {
	r       int
	rPos    int64
	version uint64
	blob    []byte
}

// termRound is a checkpoint round: the blobs, and the E records queued
// when they were taken (stored before any of them is).
type termRound struct {
	blobs []termBlob
	eMark uint64
}

// snapshot takes the checkpoint of every partition changed since its last
// stored one (the stage goroutine).
func (l *termLoop) snapshot(final bool) termRound {
	t := l.t
	var rd termRound
	t0 := time.Now()
	for _, tp := range l.parts {
		if tp.version == tp.ckptVersion || tp.unknown {
			continue
		}
		b, err := encodeTermPart(tp)
		if err != nil {
			t.met.checkpoints.WithLabelValues("put", "error").Inc()
			t.cfg.log.Error("encode a terminal checkpoint", "partition", tp.r, "err", err)
			continue
		}
		rd.blobs = append(rd.blobs, termBlob{r: tp.r, rPos: tp.rPos(), version: tp.version, blob: b})
	}
	if d := time.Since(t0); !final && d > time.Millisecond {
		for _, tp := range l.parts {
			tp.al.Resume(d) // the stage was busy, the sources were not silent
		}
	}
	rd.eMark = t.w.mark()
	return rd
}

// round stores rd's checkpoints once every E record queued before them is
// stored, then commits their R positions through the generation. It
// returns the blobs stored and committed.
func (l *termLoop) round(ctx context.Context, rd termRound) []termBlob {
	t := l.t
	if len(rd.blobs) == 0 {
		return nil
	}
	t0 := time.Now()
	if !t.w.waitAcked(ctx, rd.eMark) {
		return nil // stopped hard: nothing more is committed
	}
	var stored []termBlob
	next := map[int]int64{}
	for _, b := range rd.blobs {
		_, err := t.cfg.ckpt.Put(ctx, t.key(b.r), b.rPos, bytes.NewReader(b.blob))
		if errors.Is(err, checkpoint.ErrCleanup) {
			err = nil
		}
		if err != nil {
			t.met.checkpoints.WithLabelValues("put", "error").Inc()
			t.cfg.log.Error("store a terminal checkpoint: its repartition offset stays at the previous one", "partition", b.r, "err", err)
			continue
		}
		t.met.checkpoints.WithLabelValues("put", "ok").Inc()
		stored = append(stored, b)
		next[b.r] = b.rPos
	}
	if len(next) == 0 {
		return nil
	}
	if err := l.gen.Commit(ctx, next); err != nil {
		outcome := "error"
		if errors.Is(err, ErrFenced) {
			outcome = "fenced"
		}
		t.met.checkpoints.WithLabelValues("commit", outcome).Inc()
		t.cfg.log.Warn("commit the repartition offsets of stored terminal checkpoints", "outcome", outcome, "err", err)
		return nil
	}
	t.met.checkpoints.WithLabelValues("commit", "ok").Inc()
	t.cfg.log.Debug("terminal checkpoints stored and committed", "partitions", len(stored), "took", time.Since(t0).Round(time.Millisecond))
	return stored
}

// stored records the versions a round stored (the stage goroutine).
func (l *termLoop) stored(bs []termBlob) {
	for _, b := range bs {
		if tp := l.byR[b.r]; tp != nil {
			tp.ckptVersion = max(tp.ckptVersion, b.version)
		}
	}
}

// waitRound waits for the round in flight, if any.
func (l *termLoop) waitRound() {
	if l.roundBusy {
		l.stored(<-l.roundDone)
		l.roundBusy = false
	}
	l.roundWG.Wait()
}
