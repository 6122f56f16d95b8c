package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// cmdModels groups the model-file tools: import, inspect, predict, and
// signing (keygen, sign, verify).
func cmdModels(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, "usage: streamscore models <import|inspect|predict|retune|keygen|sign|verify> [flags]\n\n"+
			"  import --onnx FILE --inputs NAMES --name NAME --out MODEL\n"+
			"                        convert a PyTorch ONNX export into a native model file\n"+
			"  inspect MODEL         verify a model file and print what is inside\n"+
			"  predict --model M --input rows.csv --out scores.csv [--model-trust PUB]\n"+
			"                        score feature rows from a CSV with a header of feature names\n"+
			"                        (the output of `streamscore features` as is)\n"+
			"  retune --model M --events F --labels F --from T1 --to T2 --alert-budget 200/day --out M2\n"+
			"                        re-pick a model's thresholds by alert/review budget on recent history\n"+
			"  keygen --out PREFIX   create a model-signing key pair: PREFIX.key (private, 0600), PREFIX.pub\n"+
			"  sign --key KEY MODEL...\n"+
			"                        sign model files: writes MODEL.sig beside each (one line per key)\n"+
			"  verify [--model-trust PUB]... MODEL...\n"+
			"                        verify model files and their signatures as `run` does\n")
		if len(args) == 0 {
			return errors.New("models: missing subcommand")
		}
		return nil
	}
	switch args[0] {
	case "import":
		return cmdModelsImport(ctx, args[1:])
	case "inspect":
		return modelsInspect(os.Stdout, args[1:])
	case "predict":
		return modelsPredict(ctx, args[1:])
	case "retune":
		return modelsRetune(ctx, os.Stdout, args[1:])
	case "keygen":
		return modelsKeygen(os.Stdout, args[1:])
	case "sign":
		return modelsSign(os.Stdout, args[1:])
	case "verify":
		return modelsVerify(os.Stdout, args[1:])
	default:
		return fmt.Errorf("models: unknown subcommand %q (want import, inspect, predict, retune, keygen, sign or verify)", args[0])
	}
}

// modelsInspect verifies a model file (digest, shapes, values) and prints
// its identity, inputs, layers, thresholds and training metadata.
func modelsInspect(w io.Writer, args []string) error {
	fs := flag.NewFlagSet("models inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the training metadata as indented JSON")
	var tc modelTrustConfig
	fs.Var(&tc.ModelTrust, "model-trust", "public key file or directory of *.pub files to check the signature against (repeatable; default: the built-in release key)")
	specPath := fs.String("features", "", "feature spec YAML to check the model's recorded feature definitions against, as the engine would (default: the embedded default spec)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("models inspect: want exactly one model file")
	}
	var spec *features.Spec
	if *specPath != "" {
		var err error
		if spec, err = loadSpec(*specPath); err != nil {
			return err
		}
	}
	path := fs.Arg(0)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read model: %w", err)
	}
	m, err := models.Parse(b)
	if err != nil {
		return fmt.Errorf("model %s: %w", path, err)
	}
	// The signature is reported, not enforced: inspect looks at candidate
	// models too (`models verify` and the engine refuse).
	trust, err := loadTrust(tc.ModelTrust)
	if err != nil {
		return err
	}
	sigLine := ""
	sig, err := models.ReadSignatureFile(path)
	if err == nil {
		var id string
		id, err = trust.Verify(m, sig)
		sigLine = "valid, key " + id
	}
	if err != nil {
		sigLine = "NOT VALID (" + models.SignatureReason(err) + "): " + err.Error()
	}
	var f models.File
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("model %s: %w", path, err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	review, alert := m.Thresholds()
	fmt.Fprintf(tw, "model\t%s\n", m.Ident())
	fmt.Fprintf(tw, "digest\t%s (verified)\n", m.Digest())
	fmt.Fprintf(tw, "signature\t%s\n", sigLine)
	fmt.Fprintf(tw, "family\t%s, output %s\n", m.Family(), m.Output())
	fmt.Fprintf(tw, "thresholds\treview >= %g, alert >= %g\n", review, alert)
	fmt.Fprintf(tw, "inputs\t%d\n", len(f.Inputs))
	for _, in := range f.Inputs {
		def := ""
		if in.DefinitionHash != "" {
			def = "; " + in.Definition + " (" + in.DefinitionHash[:len("sha256:")+12] + ")"
		}
		fmt.Fprintf(tw, "  %s\tmean %.6g, std %.6g%s\n", in.Name, in.Mean, in.Std, def)
	}
	// The check the engine makes (reported here, not enforced).
	specName := "the default spec"
	if *specPath != "" {
		specName = *specPath
	}
	if err := checkModelFeatures(m, spec, false); err != nil {
		fmt.Fprintf(tw, "features\tNOT USABLE with %s: %v\n", specName, err)
	} else {
		fmt.Fprintf(tw, "features\tdefinitions recorded, all as %s defines them\n", specName)
	}
	params := 0
	if c := f.Conv; c != nil {
		params += len(c.Weights) + len(c.Bias)
		l := c.Window - c.Kernel + 1
		fmt.Fprintf(tw, "conv\twindow %d transactions, kernel %d, %d channels, %s, %s pool %d stride %d -> %d×%d\n",
			c.Window, c.Kernel, c.Channels, c.Activation, c.Pool, c.PoolSize, c.PoolStride, c.Channels, (l-c.PoolSize)/c.PoolStride+1)
	}
	if r := f.Recurrent; r != nil {
		params += len(r.Wx) + len(r.Wh) + len(r.Bx) + len(r.Bh)
		fmt.Fprintf(tw, "recurrent\t%s cell, hidden %d, one step per event of a card\n", r.Cell, r.Hidden)
	}
	if m.Sequential() {
		fmt.Fprintf(tw, "state\t%d float32 per card (%s)\n", m.StateSize(), m.StateShape())
	}
	if tr := f.Trees; tr != nil {
		nodes, leaves := 0, 0
		for _, t := range tr.Trees {
			nodes += len(t.Feature)
			for _, ft := range t.Feature {
				if ft < 0 {
					leaves++
				}
			}
		}
		params += nodes
		ev, _ := m.ExpectedMargin()
		fmt.Fprintf(tw, "trees\t%d trees, %d nodes (%d leaves), objective %s, base score %g, expected margin %.6g\n",
			len(tr.Trees), nodes, leaves, tr.Objective, tr.BaseScore, ev)
	}
	for i, l := range f.Layers {
		params += len(l.Weights) + len(l.Bias)
		fmt.Fprintf(tw, "layer %d\t%d -> %d, %s\n", i, l.In, l.Out, l.Activation)
	}
	fmt.Fprintf(tw, "parameters\t%d\n", params)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Training) == 0 {
		return nil
	}
	if *asJSON {
		out, err := json.MarshalIndent(f.Training, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "training\n%s\n", out)
		return nil
	}
	keys := make([]string, 0, len(f.Training))
	for k := range f.Training {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "training")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		v, _ := json.Marshal(f.Training[k])
		fmt.Fprintf(tw, "  %s\t%s\n", k, v)
	}
	return tw.Flush()
}

// predictBatch is the number of CSV rows scored at once.
const predictBatch = 256

// modelsPredict scores the rows of a CSV whose header names feature columns
// (in any order; columns the model does not read, like ts, label or
// terminal_id, are ignored) and writes id, score and decision. The CSV of
// `streamscore features` is a valid input as is: tx_id is the id and
// card_id the sequence of a sequence model. A sequence starts from a zero
// state at its first row and, unlike the stream's, never expires (--ttl).
func modelsPredict(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("models predict", flag.ContinueOnError)
	modelPath := fs.String("model", "", "model file (required)")
	input := fs.String("input", "", "CSV of feature rows with a header (required; - for stdin)")
	out := fs.String("out", "-", "output CSV: id, score, decision (- for stdout)")
	idCol := fs.String("id", "tx_id", "column copied to the output as the row id (if present)")
	seqCol := fs.String("seq", "card_id", "sequence models (cnn, gru, lstm): the column naming each row's sequence (its card); rows are scored in file order, each advancing its sequence's state")
	specPath := fs.String("features", "", "feature spec YAML that computed the CSV's columns (as `streamscore features --features`; default: the embedded default spec): the model must record the same definitions of its inputs, or it is refused")
	allowUnpinned := fs.Bool("allow-unpinned-models", false, "accept a model file that records no feature definitions (a warning); see run --allow-unpinned-models")
	// A model scores only with a valid signature by a trusted key, here
	// as in run and score: a decision is only as good as its thresholds.
	var trust modelTrustConfig
	trust.registerTrust(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *modelPath == "" || *input == "" {
		return errors.New("models predict: --model and --input are required")
	}
	if err := trust.validateTrust(); err != nil {
		return fmt.Errorf("models predict: %w", err)
	}
	m, err := trust.trustVerifier().load(*modelPath)
	if err != nil {
		return fmt.Errorf("models predict: %w", err)
	}
	// The CSV carries column names only: the spec says what they computed.
	var spec *features.Spec
	if *specPath != "" {
		if spec, err = loadSpec(*specPath); err != nil {
			return err
		}
	}
	if err := checkModelFeatures(m, spec, *allowUnpinned); err != nil {
		return fmt.Errorf("models predict: %w", err)
	}
	var in io.Reader = os.Stdin
	if *input != "-" {
		f, err := os.Open(*input)
		if err != nil {
			return fmt.Errorf("open input: %w", err)
		}
		defer f.Close()
		in = f
	}
	r := csv.NewReader(bufio.NewReaderSize(in, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("read CSV header: %w", err)
	}
	header = append([]string(nil), header...)
	// Only the model's inputs are parsed; other columns (ts, label, ...)
	// are ignored.
	needed := map[string]bool{}
	for _, in := range m.Inputs() {
		needed[in] = true
	}
	id, seq := -1, -1
	var cols []int // CSV column of each input the model reads
	var names []string
	for i, h := range header {
		h = strings.TrimSpace(h)
		switch {
		case h == *seqCol && m.Sequential():
			seq = i
		case h == *idCol:
			id = i
		case needed[h]:
			cols = append(cols, i)
			names = append(names, h)
		}
	}
	sc, err := m.Bind(names)
	if err != nil {
		return err
	}
	if m.Sequential() && seq < 0 {
		return fmt.Errorf("models predict: model %s is a sequence model (%s): the input needs a sequence column %q (set --seq)", m.Ident(), m.Family(), *seqCol)
	}
	// Sequence models: the state of each sequence, advanced row by row.
	seqState := map[string][]float32{}
	var states [][]float32
	w, closeOut, err := createOut(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	fmt.Fprintf(bw, "%s,%s,decision\n", *idCol, m.Name())

	width := len(names)
	x := make([]float32, predictBatch*width)
	scores := make([]float32, predictBatch)
	ids := make([]string, 0, predictBatch)
	line := 1
	flush := func() error {
		rows := len(ids)
		if rows == 0 {
			return nil
		}
		if m.Sequential() {
			sc.ScoreSeq(x[:rows*width], rows, states, nil, scores[:rows])
			clear(states)
			states = states[:0]
		} else {
			sc.Score(x[:rows*width], rows, scores[:rows])
		}
		for i := range rows {
			rec := appendCSVField(nil, ids[i])
			rec = append(rec, ',')
			rec = strconv.AppendFloat(rec, float64(scores[i]), 'g', -1, 32)
			rec = append(rec, ',')
			rec = append(rec, sc.Decide(scores[i]).String()...)
			if _, err := bw.Write(append(rec, '\n')); err != nil {
				return fmt.Errorf("write scores: %w", err)
			}
		}
		ids = ids[:0]
		return nil
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line++
		if err != nil {
			return fmt.Errorf("read CSV line %d: %w", line, err)
		}
		if line%8192 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		row := x[len(ids)*width : (len(ids)+1)*width]
		for j, c := range cols {
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[c]), 32)
			if err != nil {
				return fmt.Errorf("CSV line %d, column %s: %q is not a number", line, names[j], rec[c])
			}
			row[j] = float32(v)
		}
		rowID := strconv.Itoa(line - 1)
		if id >= 0 {
			rowID = rec[id]
		}
		ids = append(ids, rowID)
		if seq >= 0 {
			st, ok := seqState[rec[seq]]
			if !ok {
				st = make([]float32, m.StateSize())
				seqState[strings.Clone(rec[seq])] = st
			}
			states = append(states, st)
		}
		if len(ids) == predictBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return closeOut()
}
