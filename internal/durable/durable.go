// Package durable writes files so that what was reported written survives
// a crash: the data is fsynced before the call returns, and a replacement
// is renamed into place and its directory synced, so a reader (a hot
// reload, a restore) sees the old file or the new one, never a part.
//
// # Concurrency
//
// The functions hold no state; two calls on the same path race as the file
// system lets them (the last rename wins).
package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes b to path (created with perm, or truncated) and fsyncs
// it before closing. It does not sync the directory (see SyncDir) and is
// not atomic: a crash may leave a part of b behind the name. Use it for a
// file in a directory that is itself renamed into place, or with a rename
// of your own.
func WriteFile(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write file %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs directory dir, making the names created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ReplaceFile writes b to path atomically and durably: through a temporary
// file in the same directory (named ".<base>-*.tmp", so directory scans for
// "*.json" never see it), fsynced, given perm, renamed over path, and the
// directory fsynced. The temporary file is removed on failure.
func ReplaceFile(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("replace file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: no such file, ignored
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("replace file %s: %w", path, err)
	}
	return SyncDir(dir)
}
