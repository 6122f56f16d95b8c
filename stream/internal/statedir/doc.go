// Package statedir is the crash-safe protocol of a state directory: where
// a snapshot's files go, how a new snapshot becomes current without a
// window in which a crash leaves none, how a reader checks that what it
// reads is what was written, and the lock that keeps a second process out.
// What a snapshot holds (its manifest's fields, its files' formats) is the
// caller's.
//
// # Concepts
//
// On disk, in the directory (0700, files 0600: they hold card and terminal
// ids):
//
//	LOCK                    flock held by the process using the directory
//	CURRENT                 "snap-<unix ns> <SHA-256 of its manifest.json>"
//	snap-<unix ns>/         one snapshot: manifest.json and the caller's files
//	snap-<unix ns>.tmp/     one being written (or left by a crash)
//	refused-snap-<unix ns>/ a snapshot set aside (SetAside), kept for a person
//
// A Writer writes every file into snap-<unix ns>.tmp, each synced, then
// the manifest (which names every file with its size and SHA-256, see
// File), syncs the directory, renames it to snap-<unix ns>, syncs the
// parent, and only then replaces CURRENT (write CURRENT.tmp, sync, rename,
// sync). A crash at any point leaves the previous snapshot current;
// leftovers (a .tmp directory, CURRENT.tmp, a renamed snapshot CURRENT
// does not name) are harmless and RemoveExcept clears them.
//
// A reader takes CURRENT's name and SHA-256 (Current), reads the manifest
// and checks it against that SHA-256 (ReadManifest), and reads each file
// through ReadFile, which checks its size and SHA-256 against the manifest's
// File, including any bytes the caller's decoder leaves unread.
//
// Errors: ErrNoSnapshot when there is no CURRENT; *UnusableError when what
// is there cannot be used (a torn or edited manifest, a missing or altered
// file, a CURRENT that names no snapshot); any other error is an I/O
// failure (permissions, a failing disk), which a caller should not mistake
// for a corrupt snapshot.
//
// # Concurrency
//
// The directory belongs to one process (Lock). Within it, a Writer's
// WriteFile may be called from several goroutines at once for different
// files; everything else is called by one goroutine at a time. Readers of a
// directory a live process writes may see a snapshot vanish (RemoveExcept)
// and get a missing file: read again. The package starts no goroutines and
// has no metrics.
package statedir
