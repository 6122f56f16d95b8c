package statedir_test

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamscore/streamscore/stream/internal/statedir"
)

var t0 = time.Unix(1_800_000_000, 0)

// write commits a snapshot of files (name -> content) at, with a manifest
// listing them, and returns its name and files.
func write(t *testing.T, dir string, at time.Time, files map[string]string) (string, []statedir.File) {
	t.Helper()
	w, err := statedir.Create(dir, at)
	if err != nil {
		t.Fatal(err)
	}
	var fs []statedir.File
	for _, fn := range slices.Sorted(maps.Keys(files)) {
		f, err := w.WriteFile(fn, func(wr io.Writer) error { _, err := io.WriteString(wr, files[fn]); return err })
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	if err := w.Commit(manifest(fs)); err != nil || !w.Current() {
		t.Fatalf("Commit: %v, current %v", err, w.Current())
	}
	return w.Name(), fs
}

func manifest(fs []statedir.File) []byte {
	var b bytes.Buffer
	for _, f := range fs {
		b.WriteString(f.Name + " " + f.SHA256 + "\n")
	}
	return b.Bytes()
}

// readAll reads snapshot name of dir as a restore would: CURRENT's
// manifest, then every file whole.
func readAll(dir string, fs []statedir.File) (map[string]string, error) {
	name, sha, err := statedir.Current(dir)
	if err != nil {
		return nil, err
	}
	if _, err := statedir.ReadManifest(dir, name, sha); err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, f := range fs {
		err := statedir.ReadFile(dir, name, f, func(r io.Reader) error {
			b, err := io.ReadAll(r)
			got[f.Name] = string(b)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return got, nil
}

func TestWriteAndRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	unlock, err := statedir.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	files := map[string]string{"a.state": "alpha", "b.state": strings.Repeat("b", 100_000), "empty": ""}
	name, fs := write(t, dir, t0, files)
	if !statedir.IsSnapshotName(name) || name != "snap-1800000000000000000" {
		t.Fatalf("name %q", name)
	}
	got, err := readAll(dir, fs)
	if err != nil || !maps.Equal(got, files) {
		t.Fatalf("read back %d files, %v", len(got), err)
	}
	for _, fn := range []string{"", name, filepath.Join(name, "a.state"), filepath.Join(name, statedir.ManifestName), statedir.CurrentName} {
		st, err := os.Stat(filepath.Join(dir, fn))
		if err != nil {
			t.Fatal(err)
		}
		if want := os.FileMode(0o600); st.IsDir() {
			want = 0o700 | os.ModeDir
			if st.Mode() != want {
				t.Errorf("%s: mode %v, want %v", fn, st.Mode(), want)
			}
		} else if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", fn, st.Mode(), want)
		}
	}
}

// TestCrashPoints: the directory as a crash (or a person) leaves it at
// each step of a write. Before CURRENT moves, the previous snapshot reads
// whole; a torn or altered file is an *UnusableError, never read as state;
// an I/O failure is not mistaken for corruption.
func TestCrashPoints(t *testing.T) {
	files := map[string]string{"a.state": "alpha", "b.state": "bravo-bravo"}
	for _, tc := range []struct {
		name string
		// crash changes the directory after a first snapshot, name.
		crash func(t *testing.T, dir, name string)
		want  string // "ok" (the first snapshot reads whole), "none", "unusable", "io"
	}{
		{"intact", func(t *testing.T, dir, name string) {}, "ok"},
		{"first snapshot, CURRENT never written", func(t *testing.T, dir, name string) {
			os.Remove(filepath.Join(dir, statedir.CurrentName))
		}, "none"},
		{"partial write of the next: files in its .tmp", func(t *testing.T, dir, name string) {
			w, err := statedir.Create(dir, t0.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			w.WriteFile("a.state", func(wr io.Writer) error { _, err := io.WriteString(wr, "half"); return err })
		}, "ok"},
		{"next renamed, CURRENT not yet moved", func(t *testing.T, dir, name string) {
			copyDir(t, filepath.Join(dir, name), filepath.Join(dir, "snap-1800000060000000000"))
			os.WriteFile(filepath.Join(dir, "snap-1800000060000000000", "a.state"), []byte("other"), 0o600)
		}, "ok"},
		{"CURRENT.tmp written, not renamed", func(t *testing.T, dir, name string) {
			os.WriteFile(filepath.Join(dir, statedir.CurrentName+".tmp"), []byte("snap-1800000060000000000 00"), 0o600)
		}, "ok"},
		{"torn manifest", func(t *testing.T, dir, name string) {
			truncate(t, filepath.Join(dir, name, statedir.ManifestName), 10)
		}, "unusable"},
		{"manifest missing", func(t *testing.T, dir, name string) {
			os.Remove(filepath.Join(dir, name, statedir.ManifestName))
		}, "unusable"},
		{"torn CURRENT", func(t *testing.T, dir, name string) {
			truncate(t, filepath.Join(dir, statedir.CurrentName), 20)
		}, "unusable"},
		{"snapshot directory gone", func(t *testing.T, dir, name string) {
			os.RemoveAll(filepath.Join(dir, name))
		}, "unusable"},
		{"file torn", func(t *testing.T, dir, name string) {
			truncate(t, filepath.Join(dir, name, "b.state"), 4)
		}, "unusable"},
		{"file longer", func(t *testing.T, dir, name string) {
			f, _ := os.OpenFile(filepath.Join(dir, name, "b.state"), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
		}, "unusable"},
		{"file missing", func(t *testing.T, dir, name string) {
			os.Remove(filepath.Join(dir, name, "a.state"))
		}, "unusable"},
		{"file unreadable (a directory in its place)", func(t *testing.T, dir, name string) {
			os.Remove(filepath.Join(dir, name, statedir.ManifestName))
			os.Mkdir(filepath.Join(dir, name, statedir.ManifestName), 0o700)
		}, "io"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			name, fs := write(t, dir, t0, files)
			tc.crash(t, dir, name)
			got, err := readAll(dir, fs)
			switch tc.want {
			case "ok":
				if err != nil || !maps.Equal(got, files) {
					t.Fatalf("got %v, %v; want the first snapshot whole", got, err)
				}
			case "none":
				if !errors.Is(err, statedir.ErrNoSnapshot) {
					t.Fatalf("err %v, want ErrNoSnapshot", err)
				}
			case "unusable":
				if !statedir.IsUnusable(err) {
					t.Fatalf("err %v, want an *UnusableError", err)
				}
			case "io":
				if err == nil || statedir.IsUnusable(err) || errors.Is(err, statedir.ErrNoSnapshot) {
					t.Fatalf("err %v, want an I/O error", err)
				}
			}
			// Whatever the crash left, the next snapshot becomes current
			// and RemoveExcept clears the leftovers.
			next, fs2 := write(t, dir, t0.Add(2*time.Minute), map[string]string{"c.state": "charlie"})
			if err := statedir.RemoveExcept(dir, []string{next}); err != nil {
				t.Fatal(err)
			}
			if got, err := readAll(dir, fs2); err != nil || got["c.state"] != "charlie" {
				t.Fatalf("next snapshot: %v, %v", got, err)
			}
			snaps, err := statedir.Snapshots(dir)
			if err != nil || !slices.Equal(snaps, []string{next}) {
				t.Fatalf("snapshots after RemoveExcept: %v, %v; want [%s]", snaps, err, next)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".tmp") && e.IsDir() {
					t.Errorf("%s left", e.Name())
				}
			}
		})
	}
}

func truncate(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// TestFailedWrite: a write that fails before CURRENT moves removes its own
// directory and leaves the previous snapshot current.
func TestFailedWrite(t *testing.T) {
	dir := t.TempDir()
	name, fs := write(t, dir, t0, map[string]string{"a.state": "alpha"})
	boom := errors.New("encode failed")

	w, err := statedir.Create(dir, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteFile("a.state", func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("WriteFile: %v, want the encoder's error", err)
	}
	w.Abort()

	// The rename fails: a non-empty directory holds the name.
	w, err = statedir.Create(dir, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(w.Path(), "x"), 0o700)
	if err := w.Commit([]byte("m")); err == nil || w.Current() {
		t.Fatalf("Commit onto a non-empty directory: %v, current %v", err, w.Current())
	}
	w.Abort()
	os.RemoveAll(w.Path())

	if cur, _, err := statedir.Current(dir); err != nil || cur != name {
		t.Fatalf("current %q, %v; want %q", cur, err, name)
	}
	if got, err := readAll(dir, fs); err != nil || got["a.state"] != "alpha" {
		t.Fatalf("previous snapshot: %v, %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{statedir.CurrentName, name}) {
		t.Errorf("directory holds %v, want CURRENT and %s", names, name)
	}
}

// TestReadErrorKept: the decoder's own error comes back wrapped with the
// file's name; an *UnusableError of the decoder stays one.
func TestReadErrorKept(t *testing.T) {
	dir := t.TempDir()
	name, fs := write(t, dir, t0, map[string]string{"a.state": "alpha"})
	boom := errors.New("disk")
	err := statedir.ReadFile(dir, name, fs[0], func(io.Reader) error { return boom })
	if !errors.Is(err, boom) || statedir.IsUnusable(err) || !strings.Contains(err.Error(), "a.state") {
		t.Errorf("decoder's I/O error: %v", err)
	}
	err = statedir.ReadFile(dir, name, fs[0], func(io.Reader) error { return statedir.Unusable("bad body") })
	if !statedir.IsUnusable(err) {
		t.Errorf("decoder's unusable error: %v", err)
	}
}

func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	name, _ := write(t, dir, t0, map[string]string{"a.state": "alpha"})
	kept, err := statedir.SetAside(dir)
	if err != nil || kept != filepath.Join(dir, statedir.RefusedPrefix+name) {
		t.Fatalf("SetAside: %q, %v", kept, err)
	}
	if _, _, err := statedir.Current(dir); !errors.Is(err, statedir.ErrNoSnapshot) {
		t.Errorf("after SetAside: %v, want ErrNoSnapshot", err)
	}
	if r, err := statedir.Refused(dir); err != nil || !slices.Equal(r, []string{statedir.RefusedPrefix + name}) {
		t.Errorf("Refused: %v, %v", r, err)
	}
	// A refused snapshot is neither listed nor removed by the next ones.
	next, _ := write(t, dir, t0.Add(time.Minute), map[string]string{"a.state": "alpha"})
	if err := statedir.RemoveExcept(dir, []string{next}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the refused snapshot was removed: %v", err)
	}
	// A garbage CURRENT: nothing to move, CURRENT removed.
	os.WriteFile(filepath.Join(dir, statedir.CurrentName), []byte("garbage"), 0o600)
	if kept, err := statedir.SetAside(dir); kept != "" || err != nil {
		t.Errorf("SetAside of a garbage CURRENT: %q, %v", kept, err)
	}
	if _, _, err := statedir.Current(dir); !errors.Is(err, statedir.ErrNoSnapshot) {
		t.Errorf("after SetAside: %v, want ErrNoSnapshot", err)
	}
}

func TestSnapshotsNewestFirst(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"snap-900", "snap-1000", "snap-20", "snap-1000.tmp", "refused-snap-5000", "snap-x", "other"} {
		os.Mkdir(filepath.Join(dir, n), 0o700)
	}
	got, err := statedir.Snapshots(dir)
	if want := []string{"snap-1000", "snap-900", "snap-20"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Snapshots: %v, %v; want %v", got, err, want)
	}
}
