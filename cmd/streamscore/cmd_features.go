package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamscore/streamscore/features"
)

// featureIDColumns are the columns of a `features` row before the feature
// values: the transaction, its time and label, and the entities it belongs
// to, so that rows join back to events and scores. models predict takes
// tx_id as the row id and card_id as the sequence of a sequence model; it
// ignores the others. Label stays third, where it was before card_id and
// terminal_id were added.
var featureIDColumns = []string{"tx_id", "ts", "label", "card_id", "terminal_id"}

// cmdFeatures replays history through the stream's feature code and writes
// one point-in-time feature row per transaction of [from, to): training data
// that cannot see the future.
func cmdFeatures(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("features", flag.ContinueOnError)
	var hf historyFlags
	hf.register(fs, "labels JSONL file (label column and label-derived features; optional)")
	out := fs.String("out", "-", "output CSV file (- for stdout)")
	fs.Usage = func() {
		fs.Output().Write([]byte("usage: streamscore features --events F [--labels F] [--from T1] [--to T2] [--out rows.csv]\n\n" +
			"Replays all history before T2 through the stream's feature code and writes one CSV row per\n" +
			"transaction with event time in [T1, T2): tx_id, ts, label (as known at the end of the labels file:\n" +
			"1 fraud, 0 otherwise), card_id, terminal_id, then one column per feature. `models predict` reads\n" +
			"it as is (tx_id is the row id; card_id the sequence of a cnn, gru or lstm model).\n\n" +
			"Sequence models: rows before T1 are not written, so predict starts every card from a zero state at\n" +
			"T1, whereas `score` (and the stream) carry each card's state from its whole history. To compare\n" +
			"with them, write the rows from the start of the history (no --from) and keep the ones you need.\n\n"))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := hf.load("features")
	if err != nil {
		return err
	}
	events, labels, from, to, names := h.events, h.labels, h.from, h.to, h.names
	for _, n := range names {
		if slices.Contains(featureIDColumns, n) {
			return fmt.Errorf("features: feature %q has the name of an identifying column (%s); rename it in the spec",
				n, strings.Join(featureIDColumns, ", "))
		}
	}
	truth := knownFraud(labels)
	hist := events[:0:0]
	for _, e := range events {
		if e.TS.Before(to) {
			hist = append(hist, e)
		}
	}
	w, closeOut, err := createOut(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	line := []byte(strings.Join(featureIDColumns, ","))
	for _, n := range names {
		line = append(line, ',')
		line = append(line, n...)
	}
	bw.Write(append(line, '\n'))
	var rows, frauds int
	err = features.Replay(hist, labels, h.opts, func(e *features.Event, row []float32) error {
		if e.TS.Before(from) {
			return nil
		}
		if rows%8192 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line = appendCSVField(line[:0], e.TxID)
		line = append(line, ',')
		line = e.TS.UTC().AppendFormat(line, time.RFC3339Nano)
		label := byte('0')
		if truth[e.TxID] {
			label = '1'
			frauds++
		}
		line = append(line, ',', label, ',')
		line = appendCSVField(line, e.CardID)
		line = append(line, ',')
		line = appendCSVField(line, e.TerminalID)
		for _, v := range row {
			line = append(line, ',')
			line = strconv.AppendFloat(line, float64(v), 'g', -1, 32)
		}
		rows++
		_, err := bw.Write(append(line, '\n'))
		return err
	})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	slog.Info("features written", "rows", rows, "fraud", frauds, "columns", len(featureIDColumns)+len(names), "out", *out)
	return nil
}

// appendCSVField appends s as a CSV field, quoted when it needs to be.
func appendCSVField(dst []byte, s string) []byte {
	quote := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ',' || c == '"' || c == '\n' || c == '\r' {
			quote = true
			break
		}
	}
	if !quote {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// loadSpec reads and validates a feature spec file.
func loadSpec(path string) (*features.Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read feature spec: %w", err)
	}
	spec, err := features.ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("feature spec %s: %w", path, err)
	}
	return spec, nil
}
