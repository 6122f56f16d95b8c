package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/internal/durable"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/gbdt"
	"github.com/streamscore/streamscore/models/onnx"
	"github.com/streamscore/streamscore/stream"
)

// cmdModelsImport converts an ONNX graph (PyTorch's torch.onnx.export) or
// an XGBoost JSON model (Booster.save_model) into a native model file,
// verifies it by parsing it back and writes it atomically.
func cmdModelsImport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("models import", flag.ContinueOnError)
	src := fs.String("onnx", "", "ONNX model file (this or --xgboost)")
	xgbSrc := fs.String("xgboost", "", "XGBoost JSON model file, as Booster.save_model(\"model.json\") writes it: objective binary:logistic or reg:squarederror, gbtree booster, numerical splits (this or --onnx); imported as family gbdt")
	inputs := fs.String("inputs", "", "comma-separated feature names, in the order of the graph input's feature axis or of XGBoost's feature columns (required)")
	name := fs.String("name", "", "model name, the key in score records, e.g. fraud (required)")
	out := fs.String("out", "", "native model file to write (required)")
	version := fs.Int("version", 1, "model version (>= 1)")
	window := fs.Int("window", 0, "CNN window (transactions) when the graph's sequence length is dynamic; 0: from the graph")
	review := fs.Float64("review", 0, "review threshold (default 0.5 for a probability, never for a value)")
	alert := fs.Float64("alert", 0, "alert threshold (default 0.9 for a probability, never for a value)")
	specPath := fs.String("features", "", "feature spec the graph was trained on: a spec YAML file, or \"default\" for the embedded default spec; its definitions of the inputs are recorded in the model file. Empty: none recorded, and run, score and predict refuse the model unless --allow-unpinned-models")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*src == "") == (*xgbSrc == "") || *inputs == "" || *name == "" || *out == "" {
		return errors.New("models import: one of --onnx or --xgboost, and --inputs, --name and --out are required")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var names []string
	for _, n := range strings.Split(*inputs, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	if *xgbSrc != "" {
		if set["window"] {
			return errors.New("models import: --window is for ONNX CNN graphs, not --xgboost")
		}
		return importXGBoost(ctx, *xgbSrc, *name, names, *version, set, *review, *alert, *specPath, *out, args)
	}
	opts := []onnx.Option{
		onnx.WithVersion(*version),
		onnx.WithTraining(map[string]any{
			"command":   "streamscore models import " + strings.Join(args, " "),
			"onnx_file": filepath.Base(*src),
		}),
	}
	if *window != 0 {
		opts = append(opts, onnx.WithWindow(*window))
	}
	switch {
	case set["review"] && set["alert"]:
		opts = append(opts, onnx.WithThresholds(*review, *alert))
	case set["review"] || set["alert"]:
		return errors.New("models import: give both --review and --alert, or neither")
	}
	b, err := readBounded(*src, onnx.MaxFileSize)
	if err != nil {
		return fmt.Errorf("read onnx model: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := onnx.Import(b, *name, names, opts...)
	if err != nil {
		return fmt.Errorf("%s: %w", *src, err)
	}
	return writeImported(f, *specPath, *out, len(names))
}

// importXGBoost is models import --xgboost.
func importXGBoost(ctx context.Context, src, name string, names []string, version int, set map[string]bool, review, alert float64, specPath, out string, args []string) error {
	opts := []gbdt.Option{
		gbdt.WithVersion(version),
		gbdt.WithTraining(map[string]any{
			"command":      "streamscore models import " + strings.Join(args, " "),
			"xgboost_file": filepath.Base(src),
		}),
	}
	switch {
	case set["review"] && set["alert"]:
		opts = append(opts, gbdt.WithThresholds(review, alert))
	case set["review"] || set["alert"]:
		return errors.New("models import: give both --review and --alert, or neither")
	}
	b, err := readBoundedLimit(src, gbdt.MaxFileSize, gbdt.ErrUnsupported)
	if err != nil {
		return fmt.Errorf("read xgboost model: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := gbdt.Import(b, name, names, opts...)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return writeImported(f, specPath, out, len(names))
}

// writeImported pins the feature definitions of specPath (none when empty,
// the embedded default spec for "default") into f, encodes it, verifies it
// parses and writes it atomically to out.
func writeImported(f *models.File, specPath, out string, inputs int) error {
	var err error
	switch specPath {
	case "":
		slog.Warn("models import: no --features: the model records no feature definitions, so run, score and predict refuse it unless --allow-unpinned-models")
	default:
		spec := features.DefaultSpec()
		if specPath != "default" {
			if spec, err = loadSpec(specPath); err != nil {
				return err
			}
		}
		if err := f.PinFeatures(stream.ModelFeatureDefs(spec.Definitions())); err != nil {
			return err
		}
	}
	enc, err := f.Encode()
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	m, err := models.Parse(enc)
	if err != nil {
		return fmt.Errorf("parse imported model: %w", err)
	}
	if err := durable.ReplaceFile(out, enc, 0o644); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	slog.Info("models import: model written", "path", out, "model", m.Ident(),
		"inputs", inputs, "review", f.Thresholds.Review, "alert", f.Thresholds.Alert,
		"next", "sign it (streamscore models sign --key KEY "+out+") before run will score with it")
	return nil
}

// readBounded reads the file at path, refusing one larger than limit
// bytes before reading it.
func readBounded(path string, limit int64) ([]byte, error) {
	return readBoundedLimit(path, limit, onnx.ErrLimit)
}

// readBoundedLimit is readBounded with the error wrapped when the file is
// too large.
func readBoundedLimit(path string, limit int64, tooLarge error) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", path, limit, tooLarge)
	}
	return b, nil
}
