package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/models/onnx"
)

// TestModelsImport: `models import` converts a PyTorch ONNX fixture into a
// model file that `models inspect` verifies, and refuses a graph by the
// name of its unsupported node.
func TestModelsImport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "fraud_gru.json")
	ctx := context.Background()
	src := filepath.Join("..", "..", "models", "onnx", "testdata", "gru.onnx")
	err := cmdModels(ctx, []string{"import", "--onnx", src, "--inputs", "f0,f1,f2,f3,f4,f5",
		"--name", "fraud_gru", "--version", "2", "--out", out, "--review", "0.3", "--alert", "0.7"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := modelsInspect(&buf, []string{out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fraud_gru-gru@2", "(verified)", "review >= 0.3, alert >= 0.7", "f5"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, buf.String())
		}
	}

	// Wrong number of input names: a shape error, and no file written.
	bad := filepath.Join(dir, "bad.json")
	err = cmdModels(ctx, []string{"import", "--onnx", src, "--inputs", "a,b", "--name", "x", "--out", bad})
	if !errors.Is(err, onnx.ErrShape) {
		t.Fatalf("got %v, want ErrShape", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("a refused import left %s behind", bad)
	}
}
