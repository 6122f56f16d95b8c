package models

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// copyShipped copies shipped model files (and their signatures) into dir.
func copyShipped(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		for _, f := range []string{n, n + SignatureExt} {
			b, err := os.ReadFile(filepath.Join("shipped", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func acceptAll(string, *Model, []byte) error { return nil }

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	copyShipped(t, dir, "fraud_lr.json", "risk.json")
	if err := os.WriteFile(filepath.Join(dir, ".half-written.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	var sigs []string
	verify := func(path string, m *Model, sig []byte) error {
		if len(sig) == 0 {
			return errors.New("no signature")
		}
		sigs = append(sigs, filepath.Base(path))
		return nil
	}
	ms, shadows, st, err := LoadDir(dir, nil, verify)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || shadows != nil {
		t.Fatalf("got %d models (%v), shadows %v; want fraud_lr and risk, no shadow set", len(ms), ms, shadows)
	}
	if len(sigs) != 2 || len(st) != 4 {
		t.Fatalf("verified %v, state %d files; want 2 verified, 4 files stamped (models and signatures)", sigs, len(st))
	}

	// A shadow subdirectory makes the shadow set non-nil, even empty.
	if err := os.Mkdir(filepath.Join(dir, ShadowDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, shadows, _, err = LoadDir(dir, nil, acceptAll); err != nil || shadows == nil || len(shadows) != 0 {
		t.Fatalf("empty shadow dir: got %v, %v; want an empty, non-nil set", shadows, err)
	}
	copyShipped(t, filepath.Join(dir, ShadowDir), "fraud.json")
	if _, shadows, st, err = LoadDir(dir, nil, acceptAll); err != nil || len(shadows) != 1 {
		t.Fatalf("shadow dir: got %v, %v; want one shadow", shadows, err)
	}
	if _, ok := st[ShadowDir+"/fraud.json"+SignatureExt]; !ok {
		t.Errorf("state %v lacks the shadow's signature", st)
	}

	// A model refused by verify, or that does not parse, fails the set; the
	// state is returned all the same.
	refuse := func(path string, m *Model, sig []byte) error { return errors.New("refused " + filepath.Base(path)) }
	if ms, _, st, err := LoadDir(dir, nil, refuse); err == nil || ms != nil || len(st) == 0 {
		t.Fatalf("refused: got %v, %v, %d stamps; want an error with the state", ms, err, len(st))
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"format":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, st, err := LoadDir(dir, nil, acceptAll); err == nil || st["broken.json"].Size == 0 {
		t.Fatalf("broken file: got %v, stamp %+v; want an error and the file stamped", err, st["broken.json"])
	}
	if _, _, _, err := LoadDir(t.TempDir(), nil, acceptAll); err == nil {
		t.Error("a directory without models loaded")
	}
}

// TestScanDirHashesOnce: an unchanged stamp is not read again, and LoadDir
// parses the bytes ScanDir read rather than reading them a second time.
func TestScanDirHashesOnce(t *testing.T) {
	dir := t.TempDir()
	copyShipped(t, dir, "fraud_lr.json")
	path := filepath.Join(dir, "fraud_lr.json")
	st0, err := ScanDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st0) != 2 || st0["fraud_lr.json"].data == nil {
		t.Fatalf("first scan: %d files, bytes kept %v; want the model and its signature, read", len(st0), st0["fraud_lr.json"].data != nil)
	}

	// Same size and modification time, other content: the scan keeps the
	// old sum (it did not read the file) and holds no bytes.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	other := append([]byte(nil), b...)
	other[len(other)-2] = ' '
	if err := os.WriteFile(path, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	st1, err := ScanDir(dir, st0)
	if err != nil {
		t.Fatal(err)
	}
	if !st1.SameContent(st0) || st1["fraud_lr.json"].data != nil {
		t.Fatal("a file with an unchanged stamp was read again")
	}

	// A changed stamp is read; LoadDir then parses the scanned bytes.
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	later := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	st2, err := ScanDir(dir, st1)
	if err != nil {
		t.Fatal(err)
	}
	if st2["fraud_lr.json"].data == nil {
		t.Fatal("a file with a new stamp was not read")
	}
	if err := os.WriteFile(path, []byte("not a model any more"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, _, st3, err := LoadDir(dir, st2, acceptAll)
	if err != nil || len(ms) != 1 {
		t.Fatalf("LoadDir with the scan: %v, %v; want the scanned model (the file was not read again)", ms, err)
	}
	if !st3.SameContent(st2) || st3["fraud_lr.json"].data != nil {
		t.Error("the loaded state differs from the scan, or keeps the bytes")
	}
	if _, _, _, err := LoadDir(dir, nil, acceptAll); err == nil {
		t.Error("LoadDir without a scan parsed a file that is not a model")
	}
}
