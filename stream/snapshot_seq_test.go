package stream

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testSeqStates returns seqStates with two models' slots and n cards of
// distinct, recognisable state.
func testSeqStates(n int) *seqStates {
	ss := newSeqStates(time.Hour, nil, nil)
	ss.layout = &seqLayout{
		slots: []seqSlot{
			{name: "g", key: "score:g", shape: "gru/39/3", off: 0, size: 3},
			{name: "c", key: "shadow:c", shape: "cnn/39/2x2", off: 3, size: 4},
		},
		size: 7,
	}
	for i := range n {
		c := ss.card(fmt.Sprintf("card-%d", i), int64(i)*int64(time.Second))
		for j := range c.data {
			c.data[j] = float32(i) + float32(j)/8
		}
	}
	c := ss.card("nan", 0)
	c.data[0] = float32(math.NaN())
	c.data[1] = float32(math.Inf(-1))
	return ss
}

func TestSeqStateRoundTrip(t *testing.T) {
	ss := testSeqStates(100)
	var buf bytes.Buffer
	if err := ss.writeState(&buf); err != nil {
		t.Fatal(err)
	}
	got := newSeqStates(time.Hour, nil, nil)
	got.layout = ss.layout
	n, err := got.readState(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(ss.cards) || len(got.cards) != len(ss.cards) || got.clock != ss.clock {
		t.Fatalf("read %d cards (map %d), clock %d; want %d cards, clock %d", n, len(got.cards), got.clock, len(ss.cards), ss.clock)
	}
	for id, want := range ss.cards {
		c := got.card(id, want.last)
		if c.last != want.last || len(c.data) != len(want.data) {
			t.Fatalf("card %s: last %d, %d floats; want %d, %d", id, c.last, len(c.data), want.last, len(want.data))
		}
		for j := range c.data {
			if math.Float32bits(c.data[j]) != math.Float32bits(want.data[j]) {
				t.Fatalf("card %s float %d: %v, want %v", id, j, c.data[j], want.data[j])
			}
		}
	}
}

// TestSeqStateRestoreNewShape: a model whose state shape changed between
// the snapshot and the restart restarts from zero (counted); the other
// keeps its state.
func TestSeqStateRestoreNewShape(t *testing.T) {
	ss := testSeqStates(10)
	var buf bytes.Buffer
	if err := ss.writeState(&buf); err != nil {
		t.Fatal(err)
	}
	resets := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "resets"}, []string{"model"})
	got := newSeqStates(time.Hour, resets, nil)
	got.layout = &seqLayout{
		slots: []seqSlot{
			{name: "c", key: "shadow:c", shape: "cnn/39/2x2", off: 0, size: 4},
			{name: "g", key: "score:g", shape: "gru/39/5", off: 4, size: 5},
		},
		size: 9,
	}
	if _, err := got.readState(&buf); err != nil {
		t.Fatal(err)
	}
	c := got.card("card-7", 7*int64(time.Second))
	want := []float32{7 + 3.0/8, 7 + 4.0/8, 7 + 5.0/8, 7 + 6.0/8, 0, 0, 0, 0, 0}
	for j := range want {
		if c.data[j] != want[j] {
			t.Fatalf("card-7 state %v, want %v", c.data, want)
		}
	}
	if v := testutil.ToFloat64(resets.WithLabelValues("g")); v != 1 {
		t.Errorf("resets of g = %v, want 1", v)
	}
}

func TestSeqStateReadErrors(t *testing.T) {
	ss := testSeqStates(5)
	var buf bytes.Buffer
	if err := ss.writeState(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	read := func(b []byte, ttl time.Duration) (*seqStates, error) {
		got := newSeqStates(ttl, nil, nil)
		got.layout = ss.layout
		_, err := got.readState(bytes.NewReader(b))
		return got, err
	}
	if _, err := read(good, 2*time.Hour); !errors.Is(err, errSeqState) {
		t.Errorf("other TTL: err %v, want errSeqState", err)
	}
	if _, err := read(append(bytes.Clone(good), 0), time.Hour); !errors.Is(err, errSeqState) {
		t.Errorf("trailing byte: err %v, want errSeqState", err)
	}
	for cut := range len(good) {
		got, err := read(good[:cut], time.Hour)
		if !errors.Is(err, errSeqState) || len(got.cards) != 0 {
			t.Fatalf("cut at %d of %d: err %v, %d cards; want errSeqState and none", cut, len(good), err, len(got.cards))
		}
	}
	// A flipped byte anywhere fails (the container's CRC-32C), never a
	// panic or a huge allocation.
	for i := range len(good) {
		b := bytes.Clone(good)
		b[i] ^= 0xa5
		got, err := read(b, time.Hour)
		if !errors.Is(err, errSeqState) || len(got.cards) != 0 {
			t.Fatalf("flip at %d: err %v, %d cards; want errSeqState and none", i, err, len(got.cards))
		}
	}
}
