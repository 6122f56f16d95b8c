package onnx

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// overflow37 is a 37-byte ModelProto whose one initializer has dimensions
// 2^24 × 2^24 × 2^15: the product overflows int64 to a negative size, on
// which the importer once allocated (and panicked with "makeslice: cap out
// of range").
const overflow37 = "\b\b:!\n\x06\"\x04Gemm\x12\x01g*\x14\b\x80\x80\x80\b\b\x80\x80\x80\b\b\x80\x80\x02\x10\x01B\x02W1"

// TestImportHostile feeds the importer files built to break it; each must
// be refused with an error naming the problem.
func TestImportHostile(t *testing.T) {
	if len(overflow37) != 37 {
		t.Fatalf("overflow37 is %d bytes, want 37", len(overflow37))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"37-byte dims overflow", []byte(overflow37), ErrLimit, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Import(tc.b, "m", []string{"a", "b"})
			if !errors.Is(err, tc.want) || !contains(err, tc.msg) {
				t.Fatalf("Import = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// FuzzImport checks that Import never panics, and that whatever it accepts
// and [models.File.Encode] validates parses back and scores without
// panicking. Seeds: the fixtures in testdata and the 37-byte overflow.
func FuzzImport(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.onnx")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, p := range paths {
		b, fx := loadFixture(f, strings.TrimSuffix(filepath.Base(p), ".onnx"))
		f.Add(b, uint8(len(fx.Inputs)), uint8(0))
		f.Add(b, uint8(len(fx.Inputs)), uint8(8))
	}
	f.Add([]byte(overflow37), uint8(2), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, nIn, window uint8) {
		names := make([]string, int(nIn%32)+1)
		for i := range names {
			names[i] = "f" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		}
		var opts []Option
		if window > 0 {
			opts = append(opts, WithWindow(int(window)%models.MaxWindow+1))
		}
		file, err := Import(b, "m", names, opts...)
		if err != nil {
			return
		}
		enc, err := file.Encode()
		if err != nil {
			return // imported but not a valid model (e.g. non-finite weights)
		}
		m, err := models.Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode(Import)) = %v", err)
		}
		s, err := m.Bind(m.Inputs())
		if err != nil {
			t.Fatalf("Bind(own inputs) = %v", err)
		}
		x := make([]float32, 2*len(names))
		out := make([]float32, 2)
		states := [][]float32{make([]float32, m.StateSize()), make([]float32, m.StateSize())}
		s.ScoreSeq(x, 2, states, nil, out)
	})
}
