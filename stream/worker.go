package stream

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks"
	"github.com/streamscore/streamscore/stream/internal/commit"
)

// reasonUndecodable is the dead-letter reason for a decode error that does
// not carry a reason code of its own (a decoder bug; never expected).
const reasonUndecodable = "undecodable"

// worker owns the partitions p with p mod workers == id: their card state
// (a features.Builder), its scorers of the active model set, and a pool of
// batches. run builds and scores batches; send publishes them and acks their
// offsets.
type worker struct {
	p     *Pipeline
	id    int
	in    chan kafka.Message
	out   chan *batch // closed batches waiting for sink acks
	free  chan *batch // batch pool: inFlight+1 batches per worker
	dec   *features.Decoder
	build *features.Builder
	width int

	set     *modelSet     // the model set of the open batch
	m       *workerModels // this worker's scorers of set
	applied []int64       // partition/workers -> highest offset applied to the state (or dead-lettered), -1 none
	// restoredFrom is, per partition/workers, the offset restored from a
	// state snapshot until the partition's first event was checked
	// against it (checkGap), else -1; nil without a restore.
	restoredFrom []int64
	pause        chan *pauseReq      // state snapshots: pause between batches
	torn         bool                // run returned on a hard stop with an open batch
	late         uint64              // the Builder's Late() already added to the metric
	rekeyed      uint64              // the Builder's Rekeyed() already added to the metric
	evicted      features.StateStats // the Builder's Stats() already added to the metrics

	seq          *seqStates // per-card state of the sequential models
	slotOf       []int      // per scorer: its state slot, or -1 (stateless)
	shadowSlotOf []int      // per shadow: its state slot, or -1

	decisions [models.DecisionAlert + 1]prometheus.Counter // by decision, resolved once
	// Per-batch tallies of the counters above and of the model set's, added
	// to the shared counters once per batch rather than once per event.
	nDecisions               [models.DecisionAlert + 1]int
	nAlerts, nAgree, nDiffer []int
	audit                    sinks.AuditRecord
	dl                       sinks.DeadLetterRecord
	dlBuf                    []byte // the dead letter's key, digest and redacted value
}

// batch is one micro-batch: the input messages, the feature matrix of the
// decodable ones, and the encoded output records.
type batch struct {
	msgs    []kafka.Message
	events  []features.Event
	rowMsg  []int // row -> index in msgs
	dead    []deadEntry
	x       []float32    // rows × width, row-major, contiguous
	scores  [][]float32  // per model, per row
	shadow  [][]float32  // per shadow model, per row
	buf     []byte       // encoded records
	ids     []byte       // record ids, back to back
	keys    []byte       // record keys, back to back
	keyEnds []int        // end of each span's key in keys
	acks    []commit.Ack // the batch's offsets, for the tracker
	cards   []*cardSeq   // row -> its card's sequential-model state (when a model is sequential)
	adv     []bool       // row -> the event was applied (not re-delivered, not late): its step advances the state
	late    []bool       // row -> the event was beyond the allowed lateness (scored, not applied)
	states  [][]float32  // scratch: row -> one model's state
	idEnds  []int        // end of each span's id in ids
	spans   []span
	out     []sinks.Message
	opened  time.Time

	alerts int
}

type deadEntry struct {
	msg    int
	reason string
	err    string
}

type span struct {
	kind       sinks.Kind
	msg        int
	row        int // the event's row, or -1 for a dead letter
	start, end int
}

func newWorker(p *Pipeline, id int) (*worker, error) {
	w := &worker{
		p:     p,
		id:    id,
		in:    make(chan kafka.Message, p.cfg.queueDepth),
		out:   make(chan *batch, p.cfg.inFlight),
		free:  make(chan *batch, p.cfg.inFlight+1),
		dec:   features.NewDecoder(p.cfg.decoderOpts...),
		build: features.NewBuilder(p.shared, p.workerFeatureOpts()...),
		seq:   newSeqStates(features.TTL(p.cfg.featureOpts...), p.met.stateResets, p.log),
		pause: make(chan *pauseReq),
	}
	w.width = w.build.Width()
	if w.width != len(p.names) {
		return nil, fmt.Errorf("stream: worker %d has %d features, the pipeline %d", id, w.width, len(p.names))
	}
	w.audit.FeatureNames = w.build.Names()
	for d := range w.decisions {
		w.decisions[d] = p.met.decisions.WithLabelValues(models.Decision(d).String())
	}
	w.adopt(p.set.Load())
	for range p.cfg.inFlight + 1 {
		w.free <- w.newBatch()
	}
	return w, nil
}

// adopt switches the worker to model set s. It is called between batches
// only: when the worker opens a batch (and at start).
func (w *worker) adopt(s *modelSet) {
	if w.set != nil {
		w.p.log.Debug("worker switched model set", "worker", w.id, "from", w.set.gen, "to", s.gen)
	}
	w.set, w.m = s, s.workers[w.id]
	w.slotOf, w.shadowSlotOf = w.seq.setModels(w.m.scorers, w.m.shadows)
	w.audit.Thresholds = w.m.thresholds
	w.audit.Shadow = w.m.shadowRec
	w.audit.ShadowModels = w.m.shadowIDs
}

// newBatch returns an empty batch. Senders call it too, so it must not
// read the worker's model set: run sizes the score slices (fit) when it opens
// the batch.
func (w *worker) newBatch() *batch {
	return &batch{x: make([]float32, w.p.cfg.maxBatch*w.width)}
}

// fit makes room for the scores of n models and k shadow models; a batch
// from the pool may have been made for a model set of another size.
func (b *batch) fit(n, k, maxBatch int) {
	for len(b.scores) < n {
		b.scores = append(b.scores, make([]float32, maxBatch))
	}
	for len(b.shadow) < k {
		b.shadow = append(b.shadow, make([]float32, maxBatch))
	}
}

func (b *batch) reset() {
	b.msgs = b.msgs[:0]
	b.events = b.events[:0]
	b.rowMsg = b.rowMsg[:0]
	clear(b.cards)
	b.cards = b.cards[:0]
	b.adv = b.adv[:0]
	b.late = b.late[:0]
	b.dead = b.dead[:0]
	b.buf = b.buf[:0]
	b.spans = b.spans[:0]
	clear(b.out) // drop references to record bytes and keys
	b.out = b.out[:0]
	b.alerts = 0
}

// run is the worker's batching loop. It returns when its input is closed
// (after flushing the open batch) or when the pipeline is stopped hard.
func (w *worker) run() {
	defer close(w.out)
	var cur *batch
	defer func() {
		// On a hard stop an open batch's events are in the windows but
		// have not been scored: the sequential models have not stepped.
		w.torn = cur != nil && len(cur.msgs) > 0
	}()
	hard := w.p.hard.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if w.p.hard.Err() != nil { // select picks at random among ready cases
			return
		}
		select {
		case m, ok := <-w.in:
			if !ok {
				if cur != nil {
					w.flush(cur)
					cur = nil
				}
				return
			}
			if cur == nil {
				select {
				case cur = <-w.free: // blocks while every batch is in flight: backpressure
				case <-hard:
					return
				}
				cur.opened = time.Now()
				timer.Reset(w.p.cfg.maxDelay)
				// Between batches: pick up a newly published model set.
				if s := w.p.set.Load(); s != w.set {
					w.adopt(s)
				}
				cur.fit(len(w.m.scorers), len(w.m.shadows), w.p.cfg.maxBatch)
			}
			w.add(cur, m)
			if len(cur.msgs) >= w.p.cfg.maxBatch {
				timer.Stop()
				w.flush(cur)
				cur = nil
			}
		case <-timer.C:
			if cur != nil {
				w.flush(cur)
				cur = nil
			}
		case req := <-w.pause:
			// A state snapshot: close the open batch (sequential models
			// advance their state when it is scored), then wait while the
			// state is written.
			if cur != nil {
				timer.Stop()
				w.flush(cur)
				cur = nil
			}
			close(req.paused)
			select {
			case <-req.resume:
			case <-hard:
				return
			}
		case <-hard:
			return
		}
	}
}

// pauseReq asks a worker to stop between batches until resume is closed;
// the worker closes paused once it has.
type pauseReq struct {
	paused chan struct{}
	resume <-chan struct{}
}

// add decodes m and, if it is a valid event, applies it to the feature state
// and appends its row to the batch matrix; otherwise it records a dead letter.
func (w *worker) add(b *batch, m kafka.Message) {
	if w.restoredFrom != nil {
		w.checkGap(m.Partition/w.p.cfg.workers, m.Partition, m.Offset)
	}
	i := len(b.msgs)
	b.msgs = append(b.msgs, m)
	b.events = append(b.events, features.Event{})
	ev := &b.events[len(b.events)-1]
	if err := w.dec.Decode(m.Value, ev); err != nil {
		b.events = b.events[:len(b.events)-1]
		reason := reasonUndecodable
		var de *features.DecodeError
		if errors.As(err, &de) {
			reason = de.Reason
		}
		b.dead = append(b.dead, deadEntry{msg: i, reason: reason, err: err.Error()})
		// Handled: it changes no state, but a snapshot covers its offset
		// (no gap after a restore, and commits held at the snapshot
		// pass it).
		if pi := w.appliedIndex(m.Partition); m.Offset > w.applied[pi] {
			w.applied[pi] = m.Offset
		}
		return
	}
	rows := len(b.rowMsg)
	row := b.x[rows*w.width : (rows+1)*w.width]
	applied := true
	pi := w.appliedIndex(m.Partition)
	if m.Offset <= w.applied[pi] {
		// Re-delivered (a rebalance restarts partitions at the committed
		// offset): the event is already in the windows, so score it
		// against them without applying it twice.
		w.build.Peek(ev, row)
		w.p.met.redelivered.Inc()
		applied = false
	} else {
		w.build.Update(ev, row)
		w.applied[pi] = m.Offset
		w.evictedCards()
	}
	late := w.build.LastLate()
	b.late = append(b.late, late)
	if w.seq.stateful() {
		// A late event is not applied to the windows; it does not advance
		// the sequential models' state either.
		b.cards = append(b.cards, w.seq.cardOf(ev))
		b.adv = append(b.adv, applied && !late)
	}
	b.rowMsg = append(b.rowMsg, i)
}

// appliedIndex returns partition's index in w.applied, growing it. The
// worker owns the partitions p with p mod workers == id: they index applied
// densely as p / workers.
func (w *worker) appliedIndex(partition int) int {
	pi := partition / w.p.cfg.workers
	for len(w.applied) <= pi {
		w.applied = append(w.applied, -1)
	}
	return pi
}

// flush scores the batch with every model, encodes its records and hands it
// to the sender.
func (w *worker) flush(b *batch) {
	rows := len(b.rowMsg)
	w.p.met.batchSize.Observe(float64(len(b.msgs)))
	if late := w.build.Late(); late > w.late {
		w.p.met.late.Add(float64(late - w.late))
		w.late = late
	}
	if n := w.build.Rekeyed(); n > w.rekeyed {
		w.p.met.rekeyed.Add(float64(n - w.rekeyed))
		w.rekeyed = n
	}
	w.countState()
	wm := w.m
	if rows > 0 {
		x := b.x[:rows*w.width]
		for j, s := range wm.scorers {
			t0 := time.Now()
			w.score(b, s, w.slotOf[j], x, rows, b.scores[j][:rows])
			wm.scoreObs[j].Observe(time.Since(t0).Seconds())
		}
		for j, s := range wm.shadows {
			t0 := time.Now()
			w.score(b, s, w.shadowSlotOf[j], x, rows, b.shadow[j][:rows])
			wm.shadowObs[j].Observe(time.Since(t0).Seconds())
		}
		if w.seq.stateful() {
			w.seq.sweep(rows)
		}
	}
	now := time.Now()
	w.nDecisions = [models.DecisionAlert + 1]int{}
	w.nAlerts = resetInts(w.nAlerts, len(wm.scorers))
	w.nAgree = resetInts(w.nAgree, len(wm.shadows))
	w.nDiffer = resetInts(w.nDiffer, len(wm.shadows))
	for r := range rows {
		w.encodeScore(b, r, now)
	}
	for d, n := range w.nDecisions {
		if n > 0 {
			w.decisions[d].Add(float64(n))
		}
	}
	for j, n := range w.nAlerts {
		if n > 0 {
			wm.alerts[j].Add(float64(n))
		}
		if wm.guards != nil && wm.guards[j] != nil {
			wm.guards[j].add(rows, n)
		}
	}
	for j := range w.nAgree {
		if n := w.nAgree[j]; n > 0 {
			wm.agree[j].Add(float64(n))
		}
		if n := w.nDiffer[j]; n > 0 {
			wm.disagree[j].Add(float64(n))
		}
	}
	for _, d := range b.dead {
		w.encodeDead(b, d, now)
	}
	// Every record's id is written into one buffer and turned into one
	// string per batch; the ids are substrings of it (no allocation per
	// record).
	// Keys likewise share one buffer: a record's key is its event's card_id
	// as decoded (a pseudonym with a PAN key), never the input key, which
	// may be the card number in clear; a dead letter's is the input key as
	// the decoder allows it to be kept.
	b.ids, b.idEnds = b.ids[:0], b.idEnds[:0]
	b.keys, b.keyEnds = b.keys[:0], b.keyEnds[:0]
	for _, sp := range b.spans {
		b.ids = appendMessageID(b.ids, sp.kind, &b.msgs[sp.msg])
		b.idEnds = append(b.idEnds, len(b.ids))
		if sp.row >= 0 {
			b.keys = append(b.keys, b.events[sp.row].CardID...)
		} else {
			key, _ := cutKey(b.msgs[sp.msg].Key)
			b.keys = w.dec.AppendSafeKey(b.keys, key)
		}
		b.keyEnds = append(b.keyEnds, len(b.keys))
	}
	ids, start, kstart := string(b.ids), 0, 0
	for i, sp := range b.spans {
		var key []byte
		if kend := b.keyEnds[i]; kend > kstart {
			key = b.keys[kstart:kend:kend]
		}
		b.out = append(b.out, sinks.Message{
			Kind:  sp.kind,
			Key:   key,
			Value: b.buf[sp.start:sp.end:sp.end],
			ID:    ids[start:b.idEnds[i]],
		})
		start, kstart = b.idEnds[i], b.keyEnds[i]
	}
	select {
	case w.out <- b:
	case <-w.p.hard.Done():
	}
}

// resetInts returns v with length n, zeroed.
func resetInts(v []int, n int) []int {
	if cap(v) < n {
		return make([]int, n)
	}
	v = v[:n]
	clear(v)
	return v
}

// score runs one model over the batch: a stateless model on the rows
// alone, a sequential one (slot >= 0) on the rows and their cards' states,
// which it advances for the events applied to the feature state.
func (w *worker) score(b *batch, s *models.Scorer, slot int, x []float32, rows int, out []float32) {
	if slot < 0 {
		s.Score(x, rows, out)
		return
	}
	b.states = b.states[:0]
	for r := range rows {
		b.states = append(b.states, w.seq.state(b.cards[r], slot))
	}
	s.ScoreSeq(x, rows, b.states, b.adv, out)
	clear(b.states)
}

func (w *worker) encodeScore(b *batch, r int, now time.Time) {
	mi := b.rowMsg[r]
	m := &b.msgs[mi]
	rows := len(b.rowMsg)
	wm := w.m
	decision := wm.rc.fill(&b.events[r], b.x[:rows*w.width], r, b.scores, now, float64(now.Sub(m.Time).Microseconds())/1000)
	wm.rc.rec.Late = b.late[r]
	for j, d := range wm.rc.decisions {
		if d == models.DecisionAlert {
			w.nAlerts[j]++
		}
	}
	// Shadow models: their decision at their own thresholds against the
	// scoring model of the same name (or the final decision); their scores
	// go to the audit record only.
	for j, s := range wm.shadows {
		v := b.shadow[j][r]
		wm.shadowRec[j].Value = float64(v)
		want := decision
		if peer := wm.shadowPeer[j]; peer >= 0 {
			want = wm.rc.decisions[peer]
		}
		if s.Decide(v) == want {
			w.nAgree[j]++
		} else {
			w.nDiffer[j]++
		}
	}
	rec := &wm.rc.rec
	w.nDecisions[decision]++

	start := len(b.buf)
	b.buf = rec.AppendJSON(b.buf)
	b.spans = append(b.spans, span{kind: sinks.KindScore, msg: mi, row: r, start: start, end: len(b.buf)})
	if decision == models.DecisionAlert {
		b.spans = append(b.spans, span{kind: sinks.KindAlert, msg: mi, row: r, start: start, end: len(b.buf)})
		b.alerts++
	}
	if w.p.cfg.audit {
		w.audit.ScoreRecord = *rec
		w.audit.Features = b.x[r*w.width : (r+1)*w.width]
		start := len(b.buf)
		b.buf = w.audit.AppendJSON(b.buf)
		b.spans = append(b.spans, span{kind: sinks.KindAudit, msg: mi, row: r, start: start, end: len(b.buf)})
	}
}

func (w *worker) encodeDead(b *batch, d deadEntry, now time.Time) {
	m := &b.msgs[d.msg]
	w.dlBuf = fillDeadLetter(&w.dl, w.dec, m, false, d.reason, d.err, now, w.dlBuf)
	w.p.met.deadLettered.WithLabelValues(d.reason).Inc()
	start := len(b.buf)
	b.buf = w.dl.AppendJSON(b.buf)
	b.spans = append(b.spans, span{kind: sinks.KindDeadLetter, msg: d.msg, row: -1, start: start, end: len(b.buf)})
}

// fillDeadLetter sets rec for message m, which dec refused with reason and
// errText (a label when label is set). The record never holds the message:
// only its key as dec allows it to be kept (pseudonymised with a PAN key;
// dropped if it holds a card number in clear), the digest of the message
// and its redacted contract fields (features.Decoder.AppendRedactedEvent).
// rec refers to buf, which it returns grown; buf must not change while rec
// is in use.
func fillDeadLetter(rec *sinks.DeadLetterRecord, dec *features.Decoder, m *kafka.Message, label bool, reason, errText string, at time.Time, buf []byte) []byte {
	key, keySize := cutKey(m.Key)
	buf = dec.AppendSafeKey(buf[:0], key)
	nk := len(buf)
	buf, keyID, digested := dec.AppendDigest(buf, m.Value)
	nd := len(buf)
	var redacted bool
	if label {
		buf, redacted = dec.AppendRedactedLabel(buf, m.Value)
	} else {
		buf, redacted = dec.AppendRedactedEvent(buf, m.Value)
	}
	*rec = sinks.DeadLetterRecord{
		Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		Reason: reason, Error: errText, Size: len(m.Value), At: at, KeySize: keySize,
	}
	if nk > 0 {
		rec.Key = buf[:nk]
	}
	if digested {
		rec.Digest, rec.DigestKeyID = buf[nk:nd], keyID
	}
	if redacted {
		rec.Redacted = buf[nd:]
	}
	return buf
}

// cutKey returns an input key as a dead letter may keep it: at most
// sinks.MaxDeadLetterKey bytes (cut before the card-number check and the
// pseudonym, which then see exactly what is kept), and the original length
// when it was cut (else 0). A poison key (hundreds of KiB of control bytes,
// which JSON escaping grows six-fold) so never makes a record the broker
// refuses.
func cutKey(key []byte) ([]byte, int) {
	if len(key) <= sinks.MaxDeadLetterKey {
		return key, 0
	}
	return key[:sinks.MaxDeadLetterKey], len(key)
}

// messageID is the deduplication id of an output record: its kind and the
// input position it came from, so a re-delivered event yields the same ids
// (JetStream drops the duplicates inside its dedupe window).
func messageID(k sinks.Kind, m *kafka.Message) string {
	var buf [96]byte
	return string(appendMessageID(buf[:0], k, m))
}

func appendMessageID(b []byte, k sinks.Kind, m *kafka.Message) []byte {
	b = append(b, k.String()...)
	b = append(b, ':')
	b = append(b, m.Topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(m.Partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, m.Offset, 10)
}

// send publishes closed batches and acks their offsets once every sink
// accepted them. Each worker runs inFlight senders. It returns when run
// closed the out channel.
func (w *worker) send() {
	for b := range w.out {
		if w.p.hard.Err() == nil {
			err := w.p.sink.WriteBatch(w.p.hard, b.out)
			var rej *sinks.RejectedError
			if errors.As(err, &rej) {
				err = w.lastResort(b, rej)
			}
			if err == nil {
				w.ack(b)
				b.reset()
				w.free <- b
				continue
			}
			if w.p.hard.Err() == nil {
				// The sink (a Fanout) retries everything but a permanent
				// rejection until the context ends, so an error here is the
				// end of the pipeline, not of the batch.
				w.p.log.Error("sink write failed; stopping", "err", err)
				w.p.cancel(err)
			}
		}
		// After a failed or cancelled write a client may still hold the
		// batch's bytes (kafka-go keeps a queued batch, JetStream retries
		// from a timer): never reuse them. A fresh batch keeps the pool
		// full for the workers still draining.
		w.free <- w.newBatch()
	}
}

// reasonRecordRejected is the dead-letter reason of an event one of whose
// records a sink refused for good (too large, invalid).
const reasonRecordRejected = "record_rejected"

// lastResort handles the records of b that a sink refused for good, each
// alone (the Fanout isolated them; everything else of b is acknowledged):
// each is logged at error level and counted, and its event gets a dead
// letter without payload (reason record_rejected, the sink's error) so that
// the offset is accounted for; then b is acked and its offsets committed
// past. A poison message never blocks its partition, and never stops the
// engine. A dead letter that is itself refused (it is bounded, so this
// needs a dead-letter topic with a tiny message limit) is logged and
// counted, nothing more. It returns an error only when the dead letters
// cannot be written at all (a hard stop, a configuration error).
func (w *worker) lastResort(b *batch, rej *sinks.RejectedError) error {
	var dls []sinks.Message
	seen := map[int]bool{}
	for _, r := range rej.Rejected {
		if r.Index < 0 || r.Index >= len(b.spans) {
			return fmt.Errorf("stream: sink rejection of record %d of a batch of %d: %w", r.Index, len(b.spans), r.Err)
		}
		sp := b.spans[r.Index]
		m := &b.msgs[sp.msg]
		w.p.met.rejected.WithLabelValues(sp.kind.String(), r.Sink).Inc()
		w.p.log.Error("record refused for good by a sink: replaced by a dead letter without payload, offset committed past",
			"kind", sp.kind.String(), "sink", r.Sink, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", r.Err)
		if sp.kind == sinks.KindDeadLetter || seen[sp.msg] {
			continue
		}
		seen[sp.msg] = true
		// The same dead letter as a decode failure's (key, digest and
		// redacted contract fields kept as safe), with the sink's error.
		var rec sinks.DeadLetterRecord
		fillDeadLetter(&rec, w.dec, m, false, reasonRecordRejected,
			fmt.Sprintf("%s record refused by sink %s: %v", sp.kind, r.Sink, r.Err), time.Now(), nil)
		dls = append(dls, sinks.Message{Kind: sinks.KindDeadLetter, Key: rec.Key, Value: rec.AppendJSON(nil), ID: messageID(sinks.KindDeadLetter, m)})
		w.p.met.deadLettered.WithLabelValues(reasonRecordRejected).Inc()
	}
	if len(dls) == 0 {
		return nil
	}
	err := w.p.sink.WriteBatch(w.p.hard, dls)
	var again *sinks.RejectedError
	if errors.As(err, &again) {
		for _, r := range again.Rejected {
			w.p.met.rejected.WithLabelValues(sinks.KindDeadLetter.String(), r.Sink).Inc()
			w.p.log.Error("the dead letter of a refused record was refused too: the offset is only in this log", "sink", r.Sink, "err", r.Err)
		}
		return nil
	}
	return err
}

func (w *worker) ack(b *batch) {
	now := time.Now()
	b.acks = b.acks[:0] // on the batch: a worker's senders ack concurrently
	for i := range b.msgs {
		b.acks = append(b.acks, commit.Ack{Partition: b.msgs[i].Partition, Offset: b.msgs[i].Offset})
	}
	w.p.tracker.AckAll(b.acks) // one lock per batch, not per message
	for i := range b.msgs {
		m := &b.msgs[i]
		lat := now.Sub(m.Time)
		w.p.met.latency.Observe(lat.Seconds())
		if w.p.cfg.observe != nil {
			w.p.cfg.observe(m.Time, lat)
		}
	}
	w.p.stats.Scored.Add(int64(len(b.rowMsg)))
	w.p.stats.DeadLettered.Add(int64(len(b.dead)))
	w.p.stats.Alerts.Add(int64(b.alerts))
}
