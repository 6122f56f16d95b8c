package models

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ShadowDir is the subdirectory of a model directory that holds the shadow
// (challenger) models: scored beside the set, never deciding.
const ShadowDir = "shadow"

// DirState is what a model directory held when it was scanned or loaded:
// for each *.json model file (the shadow ones as "shadow/NAME.json") and
// each signature file beside one, its size, modification time and SHA-256.
// A signature counts as content: signing a refused model, or replacing a
// signature, changes the state.
type DirState map[string]FileStamp

// FileStamp is what a DirState holds of one file.
type FileStamp struct {
	Size    int64
	ModTime time.Time
	Sum     [sha256.Size]byte

	data []byte // the bytes hashed, kept from ScanDir for LoadDir; nil after
}

// SameContent reports whether a and b hold the same file names with the
// same contents (sizes and modification times aside).
func (a DirState) SameContent(b DirState) bool {
	if len(a) != len(b) {
		return false
	}
	for name, st := range a {
		if o, ok := b[name]; !ok || o.Sum != st.Sum {
			return false
		}
	}
	return true
}

// HasShadowDir reports whether dir has a shadow subdirectory (ShadowDir).
func HasShadowDir(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, ShadowDir))
	return err == nil && fi.IsDir()
}

// modelFileNames returns the sorted names of the regular *.json files in
// dir, without the hidden ones (a file being written beside them).
func modelFileNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read models dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// dirModels returns the model files of dir (names relative to dir, slash
// separated) and whether it has a shadow subdirectory.
func dirModels(dir string) (set, shadows []string, hasShadow bool, err error) {
	if set, err = modelFileNames(dir); err != nil {
		return nil, nil, false, err
	}
	if hasShadow = HasShadowDir(dir); hasShadow {
		sh, err := modelFileNames(filepath.Join(dir, ShadowDir))
		if err != nil {
			return nil, nil, false, err
		}
		for _, n := range sh {
			shadows = append(shadows, ShadowDir+"/"+n)
		}
	}
	return set, shadows, hasShadow, nil
}

// readStamped reads the file name of dir (one open, one stat of the open
// file) and returns its stamp with the bytes it hashed. A missing file is
// fs.ErrNotExist.
func readStamped(dir, name string) (FileStamp, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		return FileStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return FileStamp{}, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return FileStamp{}, err
	}
	return FileStamp{Size: fi.Size(), ModTime: fi.ModTime(), Sum: sha256.Sum256(b), data: b}, nil
}

// ScanDir returns the state of the model directory dir, hashing only the
// files whose size or modification time differ from prev (the others keep
// their sum): a poll of an unchanged directory reads no file. The bytes it
// read are kept in the returned state for LoadDir (until a later ScanDir
// or LoadDir replaces it), so a file that changed is read and hashed once
// per reload.
func ScanDir(dir string, prev DirState) (DirState, error) {
	set, shadows, _, err := dirModels(dir)
	if err != nil {
		return nil, err
	}
	st := make(DirState, 2*(len(set)+len(shadows)))
	for _, name := range append(set, shadows...) {
		for _, n := range []string{name, name + SignatureExt} {
			path := filepath.Join(dir, filepath.FromSlash(n))
			fi, err := os.Stat(path)
			if n != name && errors.Is(err, fs.ErrNotExist) {
				continue // an unsigned model
			}
			if err != nil {
				return nil, fmt.Errorf("stat model file: %w", err)
			}
			if p, ok := prev[n]; ok && p.Size == fi.Size() && p.ModTime.Equal(fi.ModTime()) {
				p.data = nil
				st[n] = p
				continue
			}
			rs, err := readStamped(dir, n)
			if err != nil {
				return nil, fmt.Errorf("read model file: %w", err)
			}
			st[n] = rs
		}
	}
	return st, nil
}

// LoadDir parses every *.json file of dir (in name order) as a model: the
// whole directory is the model set; and those of dir/shadow, if it exists,
// as the shadow set (then non-nil, possibly empty). verify is called with
// each model, its path and its signature file's bytes (nil without one)
// and refuses the model with an error. scanned, if not nil, is a ScanDir of
// dir whose bytes are used instead of reading the files again (the bytes
// parsed and verified are the bytes hashed, either way).
//
// It returns the state of the files as read, also when a model fails
// (errors of all the models, joined), so that a bad file is not retried
// until it changes. A directory without a model file is an error.
func LoadDir(dir string, scanned DirState, verify func(path string, m *Model, sig []byte) error) (ms, shadows []*Model, st DirState, err error) {
	set, shadowNames, hasShadow, err := dirModels(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(set) == 0 {
		return nil, nil, DirState{}, fmt.Errorf("models dir %s: no *.json model files", dir)
	}
	st = make(DirState, 2*(len(set)+len(shadowNames)))
	var errs []error
	read := func(name string) (FileStamp, error) {
		if s, ok := scanned[name]; ok && s.data != nil {
			return s, nil
		}
		return readStamped(dir, name)
	}
	load := func(name string) *Model {
		path := filepath.Join(dir, filepath.FromSlash(name))
		rs, err := read(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("read model file: %w", err))
			return nil
		}
		b := rs.data
		rs.data = nil
		st[name] = rs
		// The signature file is stamped whether or not the model parses,
		// as ScanDir stamps it: else the state never matches a scan.
		var sig []byte
		ss, err := read(name + SignatureExt)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			errs = append(errs, fmt.Errorf("read model signature: %w", err))
			return nil
		default:
			sig = ss.data
			ss.data = nil
			st[name+SignatureExt] = ss
		}
		m, err := Parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("load model %s: %w", path, err))
			return nil
		}
		if err := verify(path, m, sig); err != nil {
			errs = append(errs, err)
			return nil
		}
		return m
	}
	for _, name := range set {
		if m := load(name); m != nil {
			ms = append(ms, m)
		}
	}
	if hasShadow {
		shadows = []*Model{}
		for _, name := range shadowNames {
			if m := load(name); m != nil {
				shadows = append(shadows, m)
			}
		}
	}
	if len(errs) > 0 {
		return nil, nil, st, errors.Join(errs...)
	}
	return ms, shadows, st, nil
}
