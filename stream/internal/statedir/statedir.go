package statedir

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamscore/streamscore/internal/durable"
)

const (
	// CurrentName is the file naming the current snapshot.
	CurrentName = "CURRENT"
	// ManifestName is a snapshot's manifest file.
	ManifestName = "manifest.json"
	// RefusedPrefix is prepended to a snapshot set aside.
	RefusedPrefix = "refused-"

	snapPrefix = "snap-"
)

// ErrNoSnapshot means the directory holds no snapshot (no CURRENT).
var ErrNoSnapshot = errors.New("statedir: no snapshot")

// UnusableError marks a snapshot that is there but cannot be used
// (corrupt, truncated, or, for the caller's checks, written for another
// configuration), as opposed to an I/O failure reading it.
type UnusableError struct{ Err error }

func (e *UnusableError) Error() string { return e.Err.Error() }
func (e *UnusableError) Unwrap() error { return e.Err }

// Unusable returns an *UnusableError of fmt.Errorf(format, args...).
func Unusable(format string, args ...any) error {
	return &UnusableError{fmt.Errorf(format, args...)}
}

// IsUnusable reports whether err is, or wraps, an *UnusableError.
func IsUnusable(err error) bool { return errors.As(err, new(*UnusableError)) }

// File describes one file of a snapshot, as its manifest lists it.
type File struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// IsSnapshotName reports whether name is a complete snapshot's directory
// name, snap-<unix ns> (not a path, not a .tmp, not refused).
func IsSnapshotName(name string) bool {
	if !strings.HasPrefix(name, snapPrefix) {
		return false
	}
	_, err := strconv.ParseUint(name[len(snapPrefix):], 10, 64)
	return err == nil
}

// Current returns the snapshot CURRENT names and the SHA-256 (hex) its
// manifest must have: ErrNoSnapshot when there is no CURRENT, an
// *UnusableError when CURRENT does not read as a name and a SHA-256 (name
// is then what it holds, if anything).
func Current(dir string) (name, manifestSHA string, err error) {
	cur, err := os.ReadFile(filepath.Join(dir, CurrentName))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", ErrNoSnapshot
	}
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", CurrentName, err)
	}
	name, manifestSHA, _ = strings.Cut(strings.TrimSpace(string(cur)), " ")
	if !IsSnapshotName(name) || len(manifestSHA) != 64 {
		return name, "", Unusable("CURRENT reads %.80q, not a snapshot name and manifest SHA-256", cur)
	}
	return name, manifestSHA, nil
}

// ReadManifest reads the manifest of snapshot name. With manifestSHA other
// than "" (CURRENT's), a manifest with another SHA-256 is an
// *UnusableError; a missing one is one in every case.
func ReadManifest(dir, name, manifestSHA string) ([]byte, error) {
	mb, err := os.ReadFile(filepath.Join(dir, name, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		if manifestSHA == "" {
			return nil, Unusable("snapshot %s has no %s", name, ManifestName)
		}
		return nil, Unusable("CURRENT names %s, which has no %s", name, ManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if got := sha256.Sum256(mb); manifestSHA != "" && hex.EncodeToString(got[:]) != manifestSHA {
		return nil, Unusable("%s: SHA-256 %x, CURRENT says %s", ManifestName, got, manifestSHA)
	}
	return mb, nil
}

// ReadFile opens file f of snapshot name and passes it to read, then
// checks that the file's SHA-256 matches f's, hashing what read left
// unread too (a file longer than its content is as corrupt as a shorter
// one). A missing file or another SHA-256 is an *UnusableError; read's own
// error is returned wrapped with the file's name (an *UnusableError stays
// one).
func ReadFile(dir, name string, f File, read func(io.Reader) error) error {
	fh, err := os.Open(filepath.Join(dir, name, f.Name))
	if errors.Is(err, os.ErrNotExist) {
		return Unusable("%s is missing", f.Name)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Name, err)
	}
	defer fh.Close()
	h := sha256.New()
	cr := io.TeeReader(fh, h)
	if err := read(cr); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return Unusable("%s: SHA-256 %s, the manifest says %s", f.Name, got, f.SHA256)
	}
	return nil
}

// Snapshots returns the complete snapshots of dir (IsSnapshotName
// directories, whether CURRENT names them or not), newest first.
func Snapshots(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); e.IsDir() && IsSnapshotName(n) {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return -compareSnap(a, b) })
	return names, nil
}

// compareSnap orders snapshot names by their time.
func compareSnap(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// Refused returns the names of the snapshots set aside in dir.
func Refused(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list refused snapshots: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), RefusedPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// RemoveExcept removes every snapshot directory of dir (complete, or a
// .tmp left by a crash) but those in keep.
func RemoveExcept(dir string, keep []string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove old snapshots: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if n := e.Name(); e.IsDir() && strings.HasPrefix(n, snapPrefix) && !slices.Contains(keep, n) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, n)))
		}
	}
	return errors.Join(errs...)
}

// SetAside renames the snapshot CURRENT names to refused-<name> and
// removes CURRENT, so that the next start does not read it again and the
// next snapshot does not remove it. It returns the new path ("" when there
// was nothing to move).
func SetAside(dir string) (string, error) {
	name, _, err := Current(dir)
	var errs []error
	kept := ""
	if IsSnapshotName(name) {
		kept = filepath.Join(dir, RefusedPrefix+name)
		if rerr := os.Rename(filepath.Join(dir, name), kept); rerr != nil {
			kept = ""
			if !errors.Is(rerr, os.ErrNotExist) {
				errs = append(errs, rerr)
			}
		}
	} else if err != nil && !IsUnusable(err) && !errors.Is(err, ErrNoSnapshot) {
		errs = append(errs, err)
	}
	if rerr := os.Remove(filepath.Join(dir, CurrentName)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		errs = append(errs, rerr)
	}
	return kept, errors.Join(errs...)
}

// Writer writes one snapshot.
type Writer struct {
	dir, name    string
	tmp, final   string
	renamed, cur bool
}

// Create starts snapshot snap-<now in unix ns> in dir, in a .tmp
// directory of its own.
func Create(dir string, now time.Time) (*Writer, error) {
	name := snapPrefix + strconv.FormatInt(now.UnixNano(), 10)
	w := &Writer{dir: dir, name: name, tmp: filepath.Join(dir, name+".tmp"), final: filepath.Join(dir, name)}
	if err := os.MkdirAll(w.tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create snapshot: %w", err)
	}
	return w, nil
}

// Name returns the snapshot's name, snap-<unix ns>.
func (w *Writer) Name() string { return w.name }

// Path returns the snapshot's directory once committed.
func (w *Writer) Path() string { return w.final }

// WriteFile writes file fn of the snapshot with write, syncs it, and
// returns its description for the manifest. It may run concurrently for
// different files.
func (w *Writer) WriteFile(fn string, write func(io.Writer) error) (File, error) {
	fh, err := os.OpenFile(filepath.Join(w.tmp, fn), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return File{}, fmt.Errorf("write %s: %w", fn, err)
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(fh, h)}
	err = write(cw)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, fmt.Errorf("write %s: %w", fn, err)
	}
	return File{Name: fn, Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Commit writes the manifest, makes the snapshot durable and then
// current (see the package doc for the order). Once CURRENT names it,
// Current reports true, even if Commit returns an error (the last
// directory sync failed): the snapshot is then the one in use.
func (w *Writer) Commit(manifest []byte) error {
	if err := durable.WriteFile(filepath.Join(w.tmp, ManifestName), manifest, 0o600); err != nil {
		return err
	}
	if err := durable.SyncDir(w.tmp); err != nil {
		return err
	}
	if err := os.Rename(w.tmp, w.final); err != nil {
		return fmt.Errorf("commit snapshot: %w", err)
	}
	w.renamed = true
	// The rename is made durable before CURRENT names it.
	if err := durable.SyncDir(w.dir); err != nil {
		return err
	}
	sum := sha256.Sum256(manifest)
	line := w.name + " " + hex.EncodeToString(sum[:]) + "\n"
	tmp := filepath.Join(w.dir, CurrentName+".tmp")
	if err := durable.WriteFile(tmp, []byte(line), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, CurrentName)); err != nil {
		return fmt.Errorf("commit snapshot: %w", err)
	}
	w.cur = true
	if err := durable.SyncDir(w.dir); err != nil {
		return fmt.Errorf("the new snapshot %s is current, but syncing its directory failed: %w", w.name, err)
	}
	return nil
}

// Current reports whether CURRENT names the snapshot (Commit got that
// far).
func (w *Writer) Current() bool { return w.cur }

// Abort removes what the Writer wrote, unless CURRENT names it. It is
// safe after a successful Commit (it then does nothing).
func (w *Writer) Abort() {
	switch {
	case w.cur:
	case w.renamed:
		os.RemoveAll(w.final)
	default:
		os.RemoveAll(w.tmp)
	}
}
