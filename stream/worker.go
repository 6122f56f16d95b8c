package stream

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/sinks/output"
	"github.com/streamscore/streamscore/stream/internal/commit"
)

// reasonUndecodable is the dead-letter reason for a decode error that does
// not carry a reason code of its own (a decoder bug; never expected).
const reasonUndecodable = "undecodable"

// decodeReason is the dead-letter reason of a decode error: the
// *features.DecodeError's Reason, or reasonUndecodable.
func decodeReason(err error) string {
	if de, ok := errors.AsType[*features.DecodeError](err); ok {
		return de.Reason
	}
	return reasonUndecodable
}

// worker scores the batches of the partitions p with p mod workers == id:
// the feature stage hands it closed batches, it scores them with its
// scorers of the batch's model set (advancing the sequential-model state of
// its partitions' cards) and encodes their records; its senders publish them
// and ack their offsets.
type worker struct {
	p     *Pipeline
	id    int
	ready chan *batch // closed batches from the stage, and pause barriers
	out   chan *batch // scored batches waiting for sink acks
	free  chan *batch // batch pool: inFlight+1 batches per worker
	dec   *features.Decoder
	width int

	set    *modelSet     // the model set of the batch being scored
	m      *workerModels // this worker's scorers of set
	layout *seqLayout    // the sequential models' state layout of set
	// torn reports, once run returned on a hard stop, that batches handed
	// to it were left unscored (their events are in the windows, but the
	// sequential models have not stepped).
	torn bool

	slotOf       []int        // per scorer: its state slot, or -1 (stateless)
	shadowSlotOf []int        // per shadow: its state slot, or -1
	swept        []*partState // sweepSeq's scratch: the batch's partitions
	sweptN       []int        // and their rows
	// inputsOf and shadowInputsOf are, per scorer and per shadow, the
	// scorer scored before it whose standardised inputs it copies (the same
	// inputs: models.Scorer.SameInputs), or nil: a batch is standardised
	// once per distinct input layout, not once per model.
	inputsOf, shadowInputsOf []*models.Scorer

	decisions [models.DecisionAlert + 1]prometheus.Counter // by decision, resolved once
	// Per-batch tallies of the counters above and of the model set's, added
	// to the shared counters once per batch rather than once per event.
	nDecisions               [models.DecisionAlert + 1]int
	nAlerts, nAgree, nDiffer []int
	audit                    output.AuditRecord
	dl                       output.DeadLetterRecord
	dlBuf                    []byte // the dead letter's key, digest and redacted value
	// rowBytes is the record bytes per scored row of the last batch that
	// had rows: flush sizes a batch's buffer by it once, instead of letting
	// each of the worker's batches grow it by doubling from empty (a copy
	// of every record written so far at each step, on memory never
	// touched before).
	rowBytes int
}

// batch is one micro-batch: the input messages, the feature matrix of the
// decodable ones, and the encoded output records.
type batch struct {
	msgs    []kafka.Message
	events  []features.Event
	rowMsg  []int // row -> index in msgs
	dead    []deadEntry
	x       []float32            // rows × width, row-major, contiguous
	scores  [][]float32          // per model, per row
	shadow  [][]float32          // per shadow model, per row
	buf     []byte               // encoded records
	ids     []byte               // record ids, back to back
	keys    []byte               // record keys, back to back
	keyEnds []int                // end of each span's key in keys
	acks    []commit.Ack         // the batch's offsets, for the tracker
	cards   []*cardSeq           // row -> its card's sequential-model state (when a model is sequential)
	slots   []*features.CardSlot // row -> its card state's slot in the partition's Builder, or nil (see seqStates.cardVia)
	adv     []bool               // row -> the event was applied (not re-delivered, not late): its step advances the state
	late    []bool               // row -> the event was beyond the allowed lateness (scored, not applied)
	rowPart []*partState         // row -> its partition's state
	evicted []evictEntry         // cards the stage evicted (card cap), in row order
	set     *modelSet            // the model set the batch is scored with, fixed when it opened
	// barrier, on a batch that carries no messages, asks the worker to
	// pause once every batch before it is scored (a state snapshot).
	barrier *pauseReq
	states  [][]float32 // scratch: row -> one model's state
	idEnds  []int       // end of each span's id in ids
	spans   []span
	out     []output.Message
	opened  time.Time

	alerts int
}

// evictEntry is a card whose windows the stage dropped (features.WithMaxCards)
// while applying row: its sequential-model state goes too, at that point of
// the batch.
type evictEntry struct {
	row int
	ps  *partState
	id  string
}

type deadEntry struct {
	msg    int
	reason string
	err    string
}

type span struct {
	kind       output.Kind
	msg        int
	row        int // the event's row, or -1 for a dead letter
	start, end int
}

func newWorker(p *Pipeline, id int) *worker {
	w := &worker{
		p:     p,
		id:    id,
		ready: make(chan *batch, p.cfg.inFlight+2),
		out:   make(chan *batch, p.cfg.inFlight),
		free:  make(chan *batch, p.cfg.inFlight+1),
		dec:   p.dec,
		width: len(p.names),
	}
	w.audit.FeatureNames = p.names
	for d := range w.decisions {
		w.decisions[d] = p.met.decisions.WithLabelValues(models.Decision(d).String())
	}
	w.adopt(p.set.Load())
	for range p.cfg.inFlight + 1 {
		w.free <- w.newBatch()
	}
	return w
}

// adopt switches the worker to model set s. It is called between batches
// only: when the worker takes a batch opened with another set (and at
// start).
func (w *worker) adopt(s *modelSet) {
	if w.set != nil {
		w.p.log.Debug("worker switched model set", "worker", w.id, "from", w.set.gen, "to", s.gen)
	}
	w.set, w.m = s, s.workers[w.id]
	w.layout, w.slotOf, w.shadowSlotOf = newSeqLayout(w.layout, w.m.scorers, w.m.shadows, w.p.log)
	w.inputsOf, w.shadowInputsOf = sharedInputs(w.m.scorers, w.m.shadows)
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
	clear(b.slots)
	b.slots = b.slots[:0]
	b.adv = b.adv[:0]
	b.late = b.late[:0]
	clear(b.rowPart)
	b.rowPart = b.rowPart[:0]
	clear(b.evicted)
	b.evicted = b.evicted[:0]
	b.set = nil
	b.dead = b.dead[:0]
	b.buf = b.buf[:0]
	b.spans = b.spans[:0]
	clear(b.out) // drop references to record bytes and keys
	b.out = b.out[:0]
	b.alerts = 0
}

// run is the worker's scoring loop: it scores every batch the stage hands
// it and passes it to its senders. It returns when its input is closed or
// when the pipeline is stopped hard.
func (w *worker) run() {
	defer close(w.out)
	hard := w.p.hard.Done()
	for {
		if w.p.hard.Err() != nil { // select picks at random among ready cases
			w.torn = len(w.ready) > 0
			return
		}
		select {
		case b, ok := <-w.ready:
			if !ok {
				return
			}
			if b.barrier != nil {
				// A state snapshot: everything handed before is scored.
				close(b.barrier.paused)
				select {
				case <-b.barrier.resume:
				case <-hard:
					return
				}
				continue
			}
			w.flush(b)
		case <-hard:
			w.torn = len(w.ready) > 0
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

// seqCards resolves the sequential-model state of every row's card, in
// row order, dropping the states of the cards the stage evicted at the
// point of the batch where it did. A row's card is reached through its
// card state's slot when the slot is linked (seqStates.cardVia), else
// looked up.
func (w *worker) seqCards(b *batch, rows int) {
	stateful := w.layout.size > 0
	ei := 0
	for r := range rows {
		for ; ei < len(b.evicted) && b.evicted[ei].row <= r; ei++ {
			b.evicted[ei].ps.seq.drop(b.evicted[ei].id)
		}
		if !stateful {
			continue
		}
		ps := b.rowPart[r]
		if ps.seq.layout != w.layout {
			ps.seq.layout = w.layout
		}
		b.cards = append(b.cards, ps.seq.cardVia(&b.events[r], b.slots[r]))
	}
	for ; ei < len(b.evicted); ei++ {
		b.evicted[ei].ps.seq.drop(b.evicted[ei].id)
	}
}

// sweepSeq drops the sequential-model states idle past the TTL in the
// partitions of the batch (each paced by its own events).
func (w *worker) sweepSeq(b *batch, rows int) {
	w.swept, w.sweptN = w.swept[:0], w.sweptN[:0]
	for r := range rows {
		i := slices.Index(w.swept, b.rowPart[r]) // a batch holds few partitions
		if i < 0 {
			w.swept, w.sweptN = append(w.swept, b.rowPart[r]), append(w.sweptN, 0)
			i = len(w.swept) - 1
		}
		w.sweptN[i]++
	}
	for i, ps := range w.swept {
		ps.seq.sweep(w.sweptN[i])
	}
	clear(w.swept)
}

// flush scores the batch with every model, encodes its records and hands it
// to the sender.
func (w *worker) flush(b *batch) {
	rows := len(b.rowMsg)
	w.p.met.batchSize.Observe(float64(len(b.msgs)))
	if b.set != w.set {
		w.adopt(b.set)
	}
	wm := w.m
	w.seqCards(b, rows)
	if rows > 0 {
		x := b.x[:rows*w.width]
		for j, s := range wm.scorers {
			t0 := time.Now()
			w.score(b, s, w.inputsOf[j], w.slotOf[j], x, rows, b.scores[j][:rows])
			wm.scoreObs[j].Observe(time.Since(t0).Seconds())
		}
		for j, s := range wm.shadows {
			t0 := time.Now()
			w.score(b, s, w.shadowInputsOf[j], w.shadowSlotOf[j], x, rows, b.shadow[j][:rows])
			wm.shadowObs[j].Observe(time.Since(t0).Seconds())
		}
		if w.layout.size > 0 {
			w.sweepSeq(b, rows)
		}
	}
	now := time.Now()
	w.nDecisions = [models.DecisionAlert + 1]int{}
	w.nAlerts = resetInts(w.nAlerts, len(wm.scorers))
	w.nAgree = resetInts(w.nAgree, len(wm.shadows))
	w.nDiffer = resetInts(w.nDiffer, len(wm.shadows))
	start := len(b.buf)
	if need := rows * (w.rowBytes + w.rowBytes/8); cap(b.buf)-start < need {
		b.buf = slices.Grow(b.buf, need)
	}
	for r := range rows {
		w.encodeScore(b, r, now)
	}
	if rows > 0 {
		w.rowBytes = (len(b.buf) - start) / rows
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
		b.out = append(b.out, output.Message{
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

// sharedInputs returns, per scorer and per shadow (scored in that order,
// scorers first), the first scorer before it with the same standardised
// inputs, or nil.
func sharedInputs(scorers, shadows []*models.Scorer) (inputsOf, shadowInputsOf []*models.Scorer) {
	find := func(s *models.Scorer, before []*models.Scorer) *models.Scorer {
		for _, o := range before {
			if s.SameInputs(o) {
				return o
			}
		}
		return nil
	}
	inputsOf = make([]*models.Scorer, len(scorers))
	for j, s := range scorers {
		inputsOf[j] = find(s, scorers[:j])
	}
	shadowInputsOf = make([]*models.Scorer, len(shadows))
	for j, s := range shadows {
		shadowInputsOf[j] = find(s, scorers)
	}
	return inputsOf, shadowInputsOf
}

// score runs one model over the batch: a stateless model on the rows
// alone, a sequential one (slot >= 0) on the rows and their cards' states,
// which it advances for the events applied to the feature state. src, when
// not nil, is a scorer already run on this batch whose standardised inputs
// s copies.
func (w *worker) score(b *batch, s, src *models.Scorer, slot int, x []float32, rows int, out []float32) {
	if slot < 0 {
		s.ScoreFrom(src, x, rows, out)
		return
	}
	b.states = b.states[:0]
	sl := &w.layout.slots[slot]
	for r := range rows {
		b.states = append(b.states, b.cards[r].data[sl.off:sl.off+sl.size:sl.off+sl.size])
	}
	s.ScoreSeqFrom(src, x, rows, b.states, b.adv, out)
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
	b.spans = append(b.spans, span{kind: output.KindScore, msg: mi, row: r, start: start, end: len(b.buf)})
	if decision == models.DecisionAlert {
		b.spans = append(b.spans, span{kind: output.KindAlert, msg: mi, row: r, start: start, end: len(b.buf)})
		b.alerts++
	}
	if w.p.cfg.audit {
		w.audit.ScoreRecord = *rec
		w.audit.Features = b.x[r*w.width : (r+1)*w.width]
		end := len(b.buf)
		if w.p.cfg.auditProto {
			b.buf = w.audit.AppendProto(b.buf)
		} else {
			// The audit record starts with the score record's members:
			// copied from the bytes just encoded, not encoded again.
			b.buf = w.audit.AppendJSONAfterScore(b.buf, b.buf[start:end])
		}
		start := end
		b.spans = append(b.spans, span{kind: output.KindAudit, msg: mi, row: r, start: start, end: len(b.buf)})
	}
}

func (w *worker) encodeDead(b *batch, d deadEntry, now time.Time) {
	m := &b.msgs[d.msg]
	w.dlBuf = fillDeadLetter(&w.dl, w.dec, m, false, d.reason, d.err, now, w.dlBuf)
	w.p.met.deadLettered.WithLabelValues(d.reason).Inc()
	start := len(b.buf)
	b.buf = w.dl.AppendJSON(b.buf)
	b.spans = append(b.spans, span{kind: output.KindDeadLetter, msg: d.msg, row: -1, start: start, end: len(b.buf)})
}

// fillDeadLetter sets rec for message m, which dec refused with reason and
// errText (a label when label is set). The record never holds the message:
// only its key as dec allows it to be kept (pseudonymised with a PAN key;
// dropped if it holds a card number in clear), the digest of the message
// and its redacted contract fields (features.Decoder.AppendRedactedEvent).
// rec refers to buf, which it returns grown; buf must not change while rec
// is in use.
func fillDeadLetter(rec *output.DeadLetterRecord, dec *features.Decoder, m *kafka.Message, label bool, reason, errText string, at time.Time, buf []byte) []byte {
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
	*rec = output.DeadLetterRecord{
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
// output.MaxDeadLetterKey bytes (cut before the card-number check and the
// pseudonym, which then see exactly what is kept), and the original length
// when it was cut (else 0). A poison key (hundreds of KiB of control bytes,
// which JSON escaping grows six-fold) so never makes a record the broker
// refuses.
func cutKey(key []byte) ([]byte, int) {
	if len(key) <= output.MaxDeadLetterKey {
		return key, 0
	}
	return key[:output.MaxDeadLetterKey], len(key)
}

// messageID is the deduplication id of an output record: its kind and the
// input position it came from, so a re-delivered event yields the same ids
// (JetStream drops the duplicates inside its dedupe window).
func messageID(k output.Kind, m *kafka.Message) string {
	var buf [96]byte
	return string(appendMessageID(buf[:0], k, m))
}

func appendMessageID(b []byte, k output.Kind, m *kafka.Message) []byte {
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
			var rej *output.RejectedError
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
func (w *worker) lastResort(b *batch, rej *output.RejectedError) error {
	var dls []output.Message
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
		if sp.kind == output.KindDeadLetter || seen[sp.msg] {
			continue
		}
		seen[sp.msg] = true
		// The same dead letter as a decode failure's (key, digest and
		// redacted contract fields kept as safe), with the sink's error.
		var rec output.DeadLetterRecord
		fillDeadLetter(&rec, w.dec, m, false, reasonRecordRejected,
			fmt.Sprintf("%s record refused by sink %s: %v", sp.kind, r.Sink, r.Err), time.Now(), nil)
		dls = append(dls, output.Message{Kind: output.KindDeadLetter, Key: rec.Key, Value: rec.AppendJSON(nil), ID: messageID(output.KindDeadLetter, m)})
		w.p.met.deadLettered.WithLabelValues(reasonRecordRejected).Inc()
	}
	if len(dls) == 0 {
		return nil
	}
	err := w.p.sink.WriteBatch(w.p.hard, dls)
	var again *output.RejectedError
	if errors.As(err, &again) {
		for _, r := range again.Rejected {
			w.p.met.rejected.WithLabelValues(output.KindDeadLetter.String(), r.Sink).Inc()
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
