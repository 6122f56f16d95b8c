package models

import (
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

// TestShippedPinned: every shipped file records the definition of each of
// its inputs, its terminal fraud inputs those counting by transaction time
// (the files were re-created with them, README.md "Feature definitions"),
// and a plausible validation alert rate.
func TestShippedPinned(t *testing.T) {
	for _, file := range []string{"fraud.json", "fraud_gru.json", "fraud_lr.json", "risk.json"} {
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
		fraud := 0
		for _, d := range m.Definitions() {
			if strings.HasPrefix(d.Name, "terminal_fraud_") {
				fraud++
				if !strings.HasPrefix(d.Text, "known frauds among the events") {
					t.Errorf("%s: %s defined as %q, want a transaction-time fraud feature", file, d.Name, d.Text)
				}
			}
		}
		if fraud != 6 {
			t.Errorf("%s: %d terminal fraud inputs, want 6", file, fraud)
		}
		if r, ok := m.ValidationAlertRate(); !ok || r <= 0 || r > 0.05 {
			t.Errorf("%s: validation alert rate %v %v", file, r, ok)
		}
	}
}
