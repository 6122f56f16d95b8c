package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func fakeDefs(names []string, salt string) []FeatureDef {
	d := make([]FeatureDef, len(names))
	for i, n := range names {
		d[i] = FeatureDef{Name: n, Text: "text of " + n + salt, Hash: fmt.Sprintf("sha256:%064x", i+1)}
	}
	return d
}

func inputNames(f *File) []string {
	var n []string
	for _, in := range f.Inputs {
		n = append(n, in.Name)
	}
	return n
}

func TestCheckFeatures(t *testing.T) {
	f := testFile(FamilyMLP, 4, []int{3}, 1)
	names := inputNames(f)
	stream := append(fakeDefs(names, ""), FeatureDef{Name: "extra", Text: "x", Hash: fmt.Sprintf("sha256:%064x", 99)})
	if err := f.PinFeatures(stream); err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, f)
	if !m.Pinned() || m.Definitions()[2] != stream[2] {
		t.Fatalf("pinned %v, defs %v", m.Pinned(), m.Definitions())
	}
	if err := m.CheckFeatures(stream); err != nil {
		t.Fatalf("same definitions: %v", err)
	}
	// The stream redefines input 2.
	other := append([]FeatureDef(nil), stream...)
	other[2] = FeatureDef{Name: names[2], Text: "sum of amount per card_id over 1d", Hash: fmt.Sprintf("sha256:%064x", 42)}
	err := m.CheckFeatures(other)
	if !errors.Is(err, ErrFeatureMismatch) {
		t.Fatalf("err = %v, want ErrFeatureMismatch", err)
	}
	want := names[2] + ": model trained on text of " + names[2] + " (sha256:000000000000), pipeline computes sum of amount per card_id over 1d (sha256:000000000000)"
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), names[1]+":") {
		t.Fatalf("err = %v\nwant it to contain %q and name no other input", err, want)
	}
	// A missing input is Bind's business.
	if err := m.CheckFeatures(stream[:3]); err != nil {
		t.Fatalf("missing input: %v", err)
	}
	// An unpinned model.
	u := mustParse(t, testFile(FamilyMLP, 4, []int{3}, 1))
	if err := u.CheckFeatures(stream); !errors.Is(err, ErrUnpinned) {
		t.Fatalf("unpinned: err = %v", err)
	}
}

func TestPinFeaturesErrors(t *testing.T) {
	f := testFile(FamilyLogistic, 3, nil, 1)
	if err := f.PinFeatures(fakeDefs(inputNames(f)[:2], "")); !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), `"f02"`) {
		t.Fatalf("missing def: %v", err)
	}
	bad := fakeDefs(inputNames(f), "")
	bad[1].Hash = "md5:00"
	if err := f.PinFeatures(bad); !errors.Is(err, ErrInvalidModel) {
		t.Fatalf("bad hash: %v", err)
	}
}

func TestParseDefinitionErrors(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(f *File)
	}{
		{"partial", "1 of 3 have a definition_hash", func(f *File) { f.Inputs[1].DefinitionHash = fmt.Sprintf("sha256:%064x", 1) }},
		{"text without hash", "definition without definition_hash", func(f *File) { f.Inputs[0].Definition = "x" }},
		{"bad hash", "want sha256:<64 lower-case hex>", func(f *File) {
			_ = f.PinFeatures(fakeDefs(inputNames(f), ""))
			f.Inputs[2].DefinitionHash = "sha256:" + strings.Repeat("A", 64)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := testFile(FamilyLogistic, 3, nil, 1)
			tc.edit(f)
			_, err := Parse(encodeUnchecked(t, f))
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidModel with %q", err, tc.want)
			}
		})
	}
}

// TestShippedPinnedOnly: the shipped files differ from the files as trained
// only by the recorded definitions: without them they encode to the digests
// they had before (README.md, "Feature definitions").
func TestShippedPinnedOnly(t *testing.T) {
	before := map[string]string{
		"fraud.json":     "sha256:e302919d2993c487b3b4512ab806d4a63868ffa8616c9b3df0c9a028d7c6b2a0",
		"fraud_gru.json": "sha256:184d2f23e6c61a9436dc64769af57a3daa4b5150fefaa8e91e913db719b5cb6f",
		"fraud_lr.json":  "sha256:8aae829042dd7f6370e4ae55fa3c141b16e20a3e8fca70e2fc318256bc68e3ae",
		"risk.json":      "sha256:b503284d0d5b9b6d5c7072a58e0085075b029e3d6a1ad094df4683b36550f65e",
	}
	for file, digest := range before {
		b, err := os.ReadFile("shipped/" + file)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Pinned() {
			t.Errorf("%s records no feature definitions", file)
		}
		var f File
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		for i := range f.Inputs {
			f.Inputs[i].DefinitionHash, f.Inputs[i].Definition = "", ""
		}
		if _, err := f.Encode(); err != nil {
			t.Fatal(err)
		}
		if f.Digest != digest {
			t.Errorf("%s without definitions: digest %s, want %s", file, f.Digest, digest)
		}
		if r, ok := m.ValidationAlertRate(); !ok || r <= 0 || r > 0.05 {
			t.Errorf("%s: validation alert rate %v %v", file, r, ok)
		}
	}
}
