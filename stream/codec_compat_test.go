package stream

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// The files of testdata/*-v1.bin were written by the codecs before the
// shared framing (internal/frame): a sequential-model state file of format
// 1 (no framing, no CRC), a partition checkpoint and a shared checkpoint of
// blob version 1 (no envelope). They are what users' state directories and
// checkpoint stores hold; this build must keep reading them.
// STREAMSCORE_WRITE_GOLDEN=1 rewrites them with the running build's
// writers: only ever with a build that writes the old format.

// compatMember is a member with the shipped models, labels and
// checkpoints, of a topic of two partitions.
func compatMember(tb testing.TB) (*Pipeline, *stage) {
	ms, err := models.Shipped()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New([]string{"127.0.0.1:1"}, "g", "tx", ms, nopSink{}, WithLabelsTopic("labels"),
		WithCheckpoints(NewMemoryCheckpoints()), WithStateInterval(time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	p.nParts = 2
	return p, newStage(p, []*worker{newWorker(p, 0)})
}

var compatT0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// compatState fills partitions 0 and 1 of st with cards, terminals, kept
// columns and one offset applied ahead, the same every time.
func compatState(p *Pipeline, st *stage) {
	row := make([]float32, len(p.names))
	for part := range 2 {
		ps := p.newPartState(part)
		ps.shr, ps.shrKnown = newOffTrail(-1), true
		ps.seq.layout = stageLayout(st, part)
		for off := int64(0); off < 40; off++ {
			e := features.Event{TxID: fmt.Sprint("t-", part, "-", off), TS: compatT0.Add(time.Duration(off) * time.Minute),
				CardID: fmt.Sprint("c-", off%4), TerminalID: fmt.Sprint("m-", off%3), Amount: float64(off)}
			late := p.shared.Apply(&e, row)
			ps.build.Update(&e, row)
			if off == 38 { // 39 applied before 38: ahead
				continue
			}
			ps.fetched(off, true)
			ps.shr.fetched(off, true)
			ps.cols.add(off, late, row, p.sharedCols)
		}
		st.parts[part] = ps
	}
	p.labelNext = map[int]int64{0: 17}
}

func TestWriteGoldenV1(t *testing.T) {
	if os.Getenv("STREAMSCORE_WRITE_GOLDEN") == "" {
		t.Skip("STREAMSCORE_WRITE_GOLDEN not set")
	}
	var seq bytes.Buffer
	if err := testSeqStates(5).writeState(&seq); err != nil {
		t.Fatal(err)
	}
	p, st := compatMember(t)
	compatState(p, st)
	part, err := encodePartState(st.parts[1])
	if err != nil {
		t.Fatal(err)
	}
	p.gen.Store(&genRef{claimed: []int{0}})
	shared, ok := p.encodeShared(st)
	if !ok {
		t.Fatal("no shared checkpoint")
	}
	for fn, b := range map[string][]byte{"seq-v1.bin": seq.Bytes(), "ckpt-part-v1.bin": part, "ckpt-shared-v1.bin": shared.blob} {
		if err := os.WriteFile(filepath.Join("testdata", fn), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSeqStateGoldenV1: a sequential-model state file of format 1 (before
// the framing) reads back whole; this build writes format 2, which reads
// back the same.
func TestSeqStateGoldenV1(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "seq-v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	want := testSeqStates(5)
	var v2 bytes.Buffer
	if err := want.writeState(&v2); err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(v2.Bytes(), []byte(seqMagicV1)) || !bytes.HasPrefix(old, []byte(seqMagicV1)) {
		t.Fatal("the golden file is not format 1, or this build writes format 1")
	}
	for name, b := range map[string][]byte{"v1": old, "v2": v2.Bytes()} {
		got := newSeqStates(time.Hour, nil, nil)
		got.layout = want.layout
		n, err := got.readState(bytes.NewReader(b))
		if err != nil || n != len(want.cards) || got.clock != want.clock {
			t.Fatalf("%s: %d cards, clock %d, %v; want %d, %d", name, n, got.clock, err, len(want.cards), want.clock)
		}
		for id, w := range want.cards {
			c := got.cards[id]
			if c == nil || c.last != w.last || !slices.EqualFunc(c.data, w.data, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
				t.Fatalf("%s: card %s: %+v, want %+v", name, id, c, w)
			}
		}
		// A trailing byte is refused in both formats.
		if _, err := got.readState(bytes.NewReader(append(bytes.Clone(b), 0))); !errors.Is(err, errSeqState) {
			t.Errorf("%s with a trailing byte: %v, want errSeqState", name, err)
		}
	}
}

// TestCheckpointGoldenV1: partition and shared checkpoint blobs stored
// before the container (internal/frame) decode into the state they were
// encoded from; this build's blobs are in the container, decode alike, and
// a flipped byte anywhere in them is refused.
func TestCheckpointGoldenV1(t *testing.T) {
	src, sst := compatMember(t)
	compatState(src, sst)
	src.gen.Store(&genRef{claimed: []int{0}})
	part, err := encodePartState(sst.parts[1])
	if err != nil {
		t.Fatal(err)
	}
	shared, ok := src.encodeShared(sst)
	if !ok {
		t.Fatal("no shared checkpoint")
	}
	read := func(fn string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", fn))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name          string
		part, shared  []byte
		wantContainer bool
	}{
		{"v1", read("ckpt-part-v1.bin"), read("ckpt-shared-v1.bin"), false},
		{"this build", part, shared.blob, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bytes.HasPrefix(tc.part, []byte(ckptFrameMagic)) && bytes.HasPrefix(tc.shared, []byte(ckptFrameMagic)); got != tc.wantContainer {
				t.Fatalf("blobs in the container: %v, want %v", got, tc.wantContainer)
			}
			q, qst := compatMember(t)
			parts, labels, err := q.decodeShared(qst, tc.shared)
			if err != nil {
				t.Fatal(err)
			}
			if labels[0] != 17 || len(parts) != 2 {
				t.Errorf("labels %v, %d partitions; want partition 0 at 17, 2", labels, len(parts))
			}
			for p, want := range sst.parts {
				got := parts[p]
				if got == nil || got.shr.applied != want.shr.applied || !slices.Equal(got.shr.ahead(), want.shr.ahead()) ||
					!slices.Equal(got.cols.offs, want.cols.offs) || !slices.Equal(got.cols.vals, want.cols.vals) {
					t.Fatalf("partition %d: shared half differs", p)
				}
			}
			ps, err := q.decodePartState(qst, 1, tc.part)
			if err != nil {
				t.Fatal(err)
			}
			want := sst.parts[1]
			if ps.applied != want.applied || !slices.Equal(ps.ahead(), want.ahead()) || ps.build.Cards() != want.build.Cards() {
				t.Fatalf("partition 1: applied %d ahead %v cards %d; want %d %v %d", ps.applied, ps.ahead(), ps.build.Cards(),
					want.applied, want.ahead(), want.build.Cards())
			}
			// The restored state scores a probe as the one encoded.
			e := features.Event{TxID: "probe", TS: compatT0.Add(50 * time.Minute), CardID: "c-1", TerminalID: "m-1", Amount: 5}
			a, b := make([]float32, len(src.names)), make([]float32, len(src.names))
			want.build.Peek(&e, a)
			ps.build.Peek(&e, b)
			if !slices.Equal(a, b) {
				t.Errorf("the restored partition scores a probe differently:\n got %v\nwant %v", b, a)
			}
		})
	}
	q, qst := compatMember(t)
	for _, blob := range [][]byte{part, shared.blob} {
		for i := 0; i < len(blob); i += 1 + i/50 {
			bad := bytes.Clone(blob)
			bad[i] ^= 0x10
			_, err1 := q.decodePartState(qst, 1, bad)
			_, _, err2 := q.decodeShared(qst, bad)
			if err1 == nil || err2 == nil {
				t.Fatalf("a blob of %d bytes with byte %d flipped was accepted", len(blob), i)
			}
		}
	}
}
