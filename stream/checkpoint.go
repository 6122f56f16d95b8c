package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/stream/internal/checkpoint"
)

// Checkpoints (WithCheckpoints).
//
// A checkpoint is one partition's state — its cards' feature windows, their
// sequential-model states, and how far the partition is applied — in a
// store every member of the group reads: a compacted Kafka topic, or the
// JetStream object store. Every state interval the pipeline pauses (as for
// a snapshot), serialises each claimed partition, resumes, stores them,
// and only then lets the committer move the partitions' committed offsets
// to exactly the checkpoints' (Pipeline.caps): the committed offset of a
// partition is always the offset of its newest checkpoint (or behind it,
// while it is being stored). A member that is assigned a partition whose
// state it does not hold (a failover, a rebalance, a fresh process)
// restores the newest checkpoint before it fetches: Kafka re-delivers
// exactly the events the checkpoint lacks. When a rebalance revokes
// partitions, or the pipeline stops, the drained state is checkpointed and
// committed first, so the next owner continues where this one stopped.
//
// Terminal (shared) state is not in a partition's checkpoint: every member
// holds all of it (shared-state replicas, replica.go), and the member that
// claims partition 0 stores it in the shared checkpoint, which a fresh
// member restores at start.

// CheckpointStore keeps the newest checkpoint of each partition where every
// member of the group can read it. NewKafkaCheckpoints,
// NewJetStreamCheckpoints and NewMemoryCheckpoints make one.
type CheckpointStore = checkpoint.Store

// NewKafkaCheckpoints returns a store on the compacted topic of brokers
// (created, compacted, when missing; an existing topic that deletes records
// is refused), through dialer's TLS and SASL settings (nil: plain).
func NewKafkaCheckpoints(ctx context.Context, brokers []string, topic string, dialer *kafka.Dialer) (CheckpointStore, error) {
	opts := []checkpoint.KafkaOption{checkpoint.WithKafkaTopic(topic)}
	if dialer != nil {
		opts = append(opts, checkpoint.WithKafkaDialer(dialer))
	}
	return checkpoint.NewKafka(ctx, brokers, opts...)
}

// NewJetStreamCheckpoints returns a store in the JetStream object store
// bucket (created when missing).
func NewJetStreamCheckpoints(ctx context.Context, js jetstream.JetStream, bucket string) (CheckpointStore, error) {
	return checkpoint.NewJetStream(ctx, js, checkpoint.WithJetStreamBucket(bucket))
}

// NewMemoryCheckpoints returns a store in memory (tests; the members of
// one process).
func NewMemoryCheckpoints() CheckpointStore { return checkpoint.NewMemory() }

// ckptMagic opens a checkpoint blob:
//
//	magic, version u32, applied i64, ahead u32 + i64 each,
//	cards u64 + features.Builder.WriteState, then seqStates.writeState
const (
	ckptMagic   = "streamscore-ckpt\x00"
	ckptVersion = 1
)

var errCheckpoint = errors.New("stream: bad checkpoint")

// ckptKey is the store key of partition part's checkpoint slot (0 or 1).
// A partition's checkpoints alternate between two slots, so that the one
// whose offset is the committed offset survives a crash between the
// store of the next one and its commit: the next owner restores exactly
// the state Kafka re-delivers after.
func (p *Pipeline) ckptKey(part, slot int) checkpoint.Key {
	return checkpoint.Key{Group: p.group, Topic: p.topic + "#" + strconv.Itoa(slot), Partition: part, Fingerprint: p.ckptFingerprint()}
}

// ckptFingerprint names the state format: this build's blob version and
// the features (the features package checks the rest of its own part).
func (p *Pipeline) ckptFingerprint() string {
	h := sha256.Sum256([]byte(strings.Join(p.names, "\n")))
	return "v" + strconv.Itoa(ckptVersion) + ":features:" + hex.EncodeToString(h[:8])
}

// encodePartState serialises ps. The stage and the worker of ps must not
// run meanwhile.
func encodePartState(ps *partState) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(ckptMagic)
	var hdr []byte
	hdr = binary.LittleEndian.AppendUint32(hdr, ckptVersion)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(ps.applied))
	ahead := ps.ahead()
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(ahead)))
	for _, a := range ahead {
		hdr = binary.LittleEndian.AppendUint64(hdr, uint64(a))
	}
	b.Write(hdr)
	var cards bytes.Buffer
	if err := ps.build.WriteState(&cards); err != nil {
		return nil, err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(cards.Len()))
	b.Write(n[:])
	b.Write(cards.Bytes())
	if err := ps.seq.writeState(&b); err != nil {
		return nil, err
	}
	return sealCkpt(ckptFramePart, b.Bytes()), nil // checkpoint_frame.go
}

// decodePartState reads a blob of encodePartState into a fresh state for
// partition part of the stage.
func (p *Pipeline) decodePartState(st *stage, part int, blob []byte) (*partState, error) {
	blob, err := openCkpt(ckptFramePart, blob)
	if err != nil {
		return nil, err
	}
	r := bytes.NewReader(blob)
	magic := make([]byte, len(ckptMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != ckptMagic {
		return nil, fmt.Errorf("%w: no checkpoint magic", errCheckpoint)
	}
	var v uint32
	var applied int64
	var nAhead uint32
	if err := binary.Read(r, binary.LittleEndian, &v); err != nil || v != ckptVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", errCheckpoint, v, ckptVersion)
	}
	if binary.Read(r, binary.LittleEndian, &applied) != nil || binary.Read(r, binary.LittleEndian, &nAhead) != nil || nAhead > maxSnapAhead || applied < -1 {
		return nil, fmt.Errorf("%w: truncated header", errCheckpoint)
	}
	ps := p.newPartState(part)
	ps.applied, ps.seen = applied, applied
	for range nAhead {
		var a int64
		if binary.Read(r, binary.LittleEndian, &a) != nil || a <= ps.seen {
			return nil, fmt.Errorf("%w: offsets applied ahead", errCheckpoint)
		}
		ps.trail = append(ps.trail, trailEntry{off: a, done: true})
		ps.seen = a
	}
	var n uint64
	if binary.Read(r, binary.LittleEndian, &n) != nil || n > uint64(r.Len()) {
		return nil, fmt.Errorf("%w: card state length", errCheckpoint)
	}
	cards := blob[len(blob)-r.Len():][:n]
	ps.build = p.partBuilder(p.shared)
	if err := ps.build.ReadState(bytes.NewReader(cards)); err != nil {
		return nil, err
	}
	r.Seek(int64(n), io.SeekCurrent)
	ps.seq.layout = stageLayout(st, part)
	if _, err := ps.seq.readState(r); err != nil {
		return nil, err
	}
	for _, id := range ps.build.EvictedCards() { // cut to a smaller --max-cards
		ps.seq.drop(id)
	}
	return ps, nil
}

// ckptBlob is one partition's serialised state, to be stored.
type ckptBlob struct {
	part    int
	slot    int
	applied int64 // the highest offset up to which every offset is in it
	blob    []byte
	sig     int64 // the shared checkpoint: what it covers (sharedSig)
}

// encodeClaimed serialises the claimed partitions that changed since their
// last checkpoint. It must run while the stage and the workers are paused
// (or idle).
func (p *Pipeline) encodeClaimed(st *stage) []ckptBlob {
	g := p.gen.Load()
	if g == nil {
		return nil
	}
	var out []ckptBlob
	for _, part := range g.claimed {
		ps, ok := st.parts[part]
		if !ok || ps.applied < 0 || ps.applied == ps.ckptApplied || p.keepsCommitSlot(part, ps) {
			continue
		}
		b, err := encodePartState(ps)
		if err != nil {
			p.log.Error("encode a partition's checkpoint", "partition", part, "err", err)
			continue
		}
		out = append(out, ckptBlob{part: part, slot: ps.ckptSlot, applied: ps.applied, blob: b})
	}
	if sb, ok := p.encodeShared(st); ok {
		out = append(out, sb)
	}
	return out
}

// putCheckpoints stores blobs (a few at a time) and, when every one is
// stored, makes their offsets the next commit cap. It reports whether all
// were stored.
func (p *Pipeline) putCheckpoints(ctx context.Context, st *stage, blobs []ckptBlob, running bool, reason string) bool {
	if len(blobs) == 0 {
		return true
	}
	t0 := time.Now()
	errs := make([]error, len(blobs))
	var total int64
	var mu sync.Mutex
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, b := range blobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			key, off := p.ckptKey(b.part, b.slot), b.applied+1
			if b.part == sharedCkptPart {
				key, off = p.sharedKey(b.slot), b.applied // the time it was written
			}
			info, err := p.cfg.ckpt.Put(ctx, key, off, bytes.NewReader(b.blob))
			if errors.Is(err, checkpoint.ErrCleanup) {
				p.log.Warn("checkpoint stored; superseded chunks not removed yet (retried at the next one)", "partition", b.part, "err", err)
				err = nil
			}
			errs[i] = err
			mu.Lock()
			total += info.Size
			mu.Unlock()
		}()
	}
	wg.Wait()
	applied := map[int]int64{}
	slots := map[int]int{}
	ok := true
	cutShort := 0
	cut := ctx.Err() != nil && p.hard.Err() == nil // a revoke cut the round short: its own round stores these
	sharedStored, sharedBlobs := -1, 0
	var sig int64
	for i, b := range blobs {
		if b.part == sharedCkptPart {
			sharedBlobs++
			sig = b.sig
			outcome := "ok"
			switch {
			case errs[i] == nil:
				sharedStored = b.slot
			case cut:
				outcome = "error"
			default:
				outcome = "error"
				p.log.Error("store the shared-state checkpoint", "err", errs[i])
			}
			p.met.sharedCkpt.WithLabelValues("put", outcome).Inc()
			continue
		}
		if errs[i] != nil {
			ok = false
			if cut {
				cutShort++
				continue
			}
			p.met.checkpoints.WithLabelValues("put", "error").Inc()
			p.log.Error("store a partition's checkpoint: its committed offset stays at the previous one", "partition", b.part, "err", errs[i])
			continue
		}
		p.met.checkpoints.WithLabelValues("put", "ok").Inc()
		applied[b.part] = b.applied
		slots[b.part] = b.slot
	}
	if sharedStored >= 0 {
		flip := func() { st.sharedSlot, st.sharedSig = 1-sharedStored, sig }
		if running {
			st.do(flip)
		} else {
			flip()
		}
	}
	if len(applied) > 0 {
		// Recorded as stored by the stage (its goroutine owns the
		// partitions' state; a partition may have been replaced meanwhile).
		record := func() {
			for part, a := range applied {
				if ps, ok := st.parts[part]; ok && ps.applied >= a {
					ps.ckptApplied = max(ps.ckptApplied, a)
					ps.ckptOff[slots[part]] = a + 1
					if ps.ckptSlot == slots[part] {
						ps.ckptSlot = 1 - slots[part] // the next one overwrites the older
					}
				}
			}
		}
		if running {
			st.do(record)
		} else {
			record()
		}
		p.setCommitCap("ckpt-"+strconv.FormatInt(t0.UnixNano(), 10), p.capWithStored(applied))
	}
	d := time.Since(t0)
	p.met.checkpointSeconds.WithLabelValues("put").Set(d.Seconds())
	p.met.checkpointBytes.Set(float64(total))
	p.log.Info("partition checkpoints stored", "reason", reason, "partitions", len(applied), "failed", len(blobs)-sharedBlobs-len(applied)-cutShort,
		"cut_short_by_revoke", cutShort, "shared_state", sharedBlobs > 0 && sharedStored >= 0, "bytes", total, "took", d.Round(time.Millisecond))
	return ok
}

// capWithStored returns the commit cap of a checkpoint round: the offsets
// just stored, and for the other claimed partitions the offset of their
// newest stored checkpoint (they did not change), so that a cap always
// names every claimed partition that has state.
func (p *Pipeline) capWithStored(stored map[int]int64) map[int]int64 {
	out := map[int]int64{}
	g := p.gen.Load()
	p.capMu.Lock()
	var last map[int]int64
	if n := len(p.caps); n > 0 {
		last = p.caps[n-1].next
	}
	p.capMu.Unlock()
	for part, a := range stored {
		out[part] = a
	}
	if g != nil {
		for _, part := range g.claimed {
			if _, ok := out[part]; !ok {
				if next, ok := last[part]; ok {
					out[part] = next - 1
				}
			}
		}
	}
	return out
}

// restoreClaims restores, before the generation's fetch starts, the newest
// checkpoint of every claimed partition whose state this member does not
// hold up to the claim's start (new to it, or changed by another member
// since), a few at a time. A partition without a usable checkpoint starts
// empty (or keeps the state it has), logged.
func (p *Pipeline) restoreClaims(ctx context.Context, st *stage, claims []Claim) {
	if p.cfg.ckpt == nil {
		return
	}
	type need struct {
		c       Claim
		applied int64
	}
	var needs []need
	if !st.do(func() {
		for _, c := range claims {
			applied := int64(-1)
			if ps, ok := st.parts[c.Partition()]; ok {
				applied = ps.applied
			}
			// Behind the commit (or nothing held), or ahead of it: its
			// events from the commit on are re-delivered, and a checkpoint
			// exactly at the commit re-applies them exactly (the state held
			// would score them with Peek, the sequential models not
			// stepping): restoreClaim decides.
			if applied+1 != c.Start() || applied < 0 {
				needs = append(needs, need{c, applied})
			}
		}
	}) || len(needs) == 0 {
		return
	}
	t0 := time.Now()
	p.restoring.Add(int32(len(needs)))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, n := range needs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; p.restoring.Add(-1); wg.Done() }()
			p.restoreClaim(ctx, st, n.c, n.applied)
		}()
	}
	wg.Wait()
	p.log.Info("partitions restored from checkpoints", "partitions", len(needs), "took", time.Since(t0).Round(time.Millisecond))
}

func (p *Pipeline) restoreClaim(ctx context.Context, st *stage, c Claim, held int64) {
	part := c.Partition()
	t0 := time.Now()
	// Both slots: the one at the committed offset is exact; the other may
	// be newer than the commit (a crash between its store and its commit)
	// or older.
	var cps [2]checkpoint.Checkpoint
	var founds [2]bool
	var errs [2]error
	for slot := range 2 {
		cps[slot], founds[slot], errs[slot] = latestRetrying(ctx, p.cfg.ckpt, p.ckptKey(part, slot), p.log.With("partition", part))
	}
	err := errors.Join(errs[0], errs[1])
	if err != nil && ctx.Err() != nil {
		// Stopping, or the generation ended, while the store failed: what
		// the partition's state should be is unknown. The state this
		// member holds of it (behind or ahead of the commit) is let go,
		// so that no checkpoint of it replaces the ones not read.
		st.do(func() {
			if old, ok := st.parts[part]; ok && old.applied >= 0 {
				st.setPart(part, p.withoutCards(part, old))
			}
		})
		p.log.Warn("partition checkpoint not read before the generation ended; the partition's state is let go", "partition", part, "err", err)
		return
	}
	chosen := ckptChoice(founds, [2]int64{cps[0].Offset, cps[1].Offset}, c.Start())
	found := chosen >= 0
	var cp checkpoint.Checkpoint
	if found {
		cp = cps[chosen]
		if errs[1-chosen] != nil && cp.Offset != c.Start() {
			// The other slot is unusable (written for other features,
			// or corrupt): it may have been the one at the commit.
			p.log.Warn("one partition checkpoint slot unusable: restoring the other, which is not at the committed offset", "partition", part,
				"checkpoint_offset", cp.Offset, "committed", c.Start(), "err", errs[1-chosen])
		}
		err = nil // a usable slot: the other's error is logged above when it matters
	}
	switch {
	case errors.Is(err, checkpoint.ErrFingerprintMismatch):
		p.met.checkpoints.WithLabelValues("restore", "refused").Inc()
		p.log.Error("partition checkpoint written for other features: the partition starts without it", "partition", part, "err", err)
		return
	case err != nil:
		p.met.checkpoints.WithLabelValues("restore", "error").Inc()
		p.log.Error("read a partition checkpoint: the partition starts without it", "partition", part, "err", err)
		return
	case !found:
		p.met.checkpoints.WithLabelValues("restore", "none").Inc()
		p.log.Info("no checkpoint for the partition: its cards start with empty state", "partition", part, "start", c.Start())
		return
	case cp.Offset-1 <= held && !(held >= c.Start() && cp.Offset == c.Start()):
		return // what this member holds is as new, and no better than the commit's
	}
	ps, err := p.decodePartState(st, part, cp.Blob)
	if err != nil {
		p.met.checkpoints.WithLabelValues("restore", "refused").Inc()
		p.log.Error("partition checkpoint unusable: the partition starts without it", "partition", part, "err", err)
		return
	}
	if ps.applied != cp.Offset-1 {
		p.met.checkpoints.WithLabelValues("restore", "refused").Inc()
		p.log.Error("partition checkpoint stored at another offset than its state's: the partition starts without it", "partition", part,
			"stored_offset", cp.Offset, "state_applied", ps.applied)
		return
	}
	ps.restoredFrom = ps.applied
	p.stateRestored.Store(true)
	ps.ckptApplied = ps.applied
	ps.ckptSlot = 1 - chosen // the next checkpoint overwrites the other slot
	ps.ckptOff[chosen] = cp.Offset
	if founds[1-chosen] {
		ps.ckptOff[1-chosen] = cps[1-chosen].Offset
	}
	if cp.Offset > c.Start() {
		p.log.Warn("partition checkpoint is ahead of the committed offset (the member that stored it stopped before committing, and no checkpoint matches the commit): the events between are re-delivered and scored against a state that holds them",
			"partition", part, "checkpoint_offset", cp.Offset, "committed", c.Start())
	}
	st.do(func() {
		if old, ok := st.parts[part]; ok {
			// The partition's shared half (read as a replica, or restored
			// with the shared state) is not in its checkpoint: it stays.
			keepShared(ps, old)
		}
		st.setPart(part, ps)
	})
	d := time.Since(t0)
	p.met.checkpoints.WithLabelValues("restore", "ok").Inc()
	p.met.checkpointSeconds.WithLabelValues("restore").Set(d.Seconds())
	ahead := c.Start() - cp.Offset
	p.log.Info("partition restored from its checkpoint", "partition", part, "offset", cp.Offset, "committed", c.Start(),
		"bytes", len(cp.Blob), "cards", ps.build.Cards(), "took", d.Round(time.Millisecond), "offsets_behind_committed", max(ahead, 0))
}

// latestRetrying reads key's newest checkpoint from store. A failed read
// (the store unreachable, a leader moving) is asked again until it answers
// or ctx ends: taken as "no checkpoint", the partition would start without
// its history, and its next checkpoints would replace the ones that could
// not be read. A checkpoint of other features, a corrupt one and a closed
// store are not asked again. log gets each retry (an error from the
// restoreTries-th on).
func latestRetrying(ctx context.Context, store CheckpointStore, key checkpoint.Key, log *slog.Logger) (checkpoint.Checkpoint, bool, error) {
	cp, found, err := store.Latest(ctx, key)
	for try := 1; err != nil && ctx.Err() == nil && !errors.Is(err, checkpoint.ErrFingerprintMismatch) &&
		!errors.Is(err, checkpoint.ErrCorrupt) && !errors.Is(err, checkpoint.ErrClosed); try++ {
		level := slog.LevelWarn
		if try >= restoreTries {
			level = slog.LevelError
		}
		log.Log(ctx, level, "read a checkpoint failed, retrying", "key", key.String(), "err", err, "try", try)
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(try)*time.Second, 5*time.Second)):
		}
		cp, found, err = store.Latest(ctx, key)
	}
	return cp, found, err
}

// withoutCards returns a state of partition part with old's shared half
// (read as a replica, or restored with the shared state) and no card
// state: nothing applied, restored again at its next claim.
func (p *Pipeline) withoutCards(part int, old *partState) *partState {
	ps := p.newPartState(part)
	keepShared(ps, old)
	return ps
}

// keepShared gives ps, a partition's new card state, old's shared half:
// it is not in a partition's checkpoint.
func keepShared(ps, old *partState) {
	ps.aligned = old.aligned
	ps.shr, ps.shrKnown, ps.cols = old.shr, old.shrKnown, old.cols
}

// keepsCommitSlot reports whether ps's next checkpoint must wait: the slot
// it would overwrite holds the checkpoint at the group's committed offset
// (the other does not), and the commit has not moved past it yet (its
// events not all scored and acknowledged). Overwritten, a member restoring
// the partition would find only checkpoints ahead of the commit, whose
// events are then re-delivered and scored against a state that holds them
// already (Builder.Peek: the card's country change and velocity of such an
// event are not recomputed); kept, it restores the one the commit matches.
func (p *Pipeline) keepsCommitSlot(part int, ps *partState) bool {
	committed := ps.startOff
	if _, c := p.tracker.Pending(part); c > committed {
		committed = c
	}
	dest := ps.ckptSlot
	return committed >= 0 && ps.ckptOff[dest] == committed && ps.ckptOff[1-dest] != committed
}

// ckptChoice picks the checkpoint slot to restore for a partition whose
// committed offset is start: the one at exactly start; else the newest
// before it (a gap, counted at the first message); else, for a partition
// committed at its very start (offset 0: nothing was scored for good yet),
// none (empty state is exact); else the oldest after it (ahead of the
// commit); -1 when neither slot holds one.
func ckptChoice(found [2]bool, off [2]int64, start int64) int {
	best := -1
	for slot := range 2 {
		if found[slot] && off[slot] == start {
			return slot
		}
	}
	for slot := range 2 {
		if found[slot] && off[slot] < start && (best < 0 || off[slot] > off[best]) {
			best = slot
		}
	}
	if best >= 0 || start == 0 {
		return best
	}
	for slot := range 2 {
		if found[slot] && (best < 0 || off[slot] < off[best]) {
			best = slot
		}
	}
	return best
}

// checkpointNow serialises the claimed partitions once every batch is
// scored (after a drain), stores them and makes their offsets the commit
// cap. Used when partitions are revoked (running: the stage goroutine
// still runs) and at shutdown (it has returned).
func (p *Pipeline) checkpointNow(ctx context.Context, st *stage, running bool, reason string) {
	if p.cfg.ckpt == nil {
		return
	}
	if running {
		// A revoke: the interval round in flight, if any, stops storing
		// (what it did not store, this round does) rather than spend the
		// rebalance timeout.
		p.cutMu.Lock()
		if p.cutInterval != nil {
			p.cutInterval()
		}
		p.cutMu.Unlock()
	}
	p.ckptRound.Lock() // after the interval's round in flight, if any
	defer p.ckptRound.Unlock()
	var blobs []ckptBlob
	if running {
		if !st.do(func() { st.syncWorkers(); blobs = p.encodeClaimed(st) }) {
			return
		}
	} else {
		blobs = p.encodeClaimed(st)
	}
	p.putCheckpoints(ctx, st, blobs, running, reason)
}
