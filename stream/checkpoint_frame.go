package stream

import (
	"bytes"
	"fmt"

	"github.com/streamscore/streamscore/internal/frame"
)

// A checkpoint blob (a partition's, encodePartState; the shared one,
// encodeShared) is stored in a container of internal/frame — magic
// "SSCHKPNT", version 1, kind 'P' (partition) or 'S' (shared): frames of at
// most 64 KiB and a CRC-32C over the whole — whose body is the blob laid out
// as ckptMagic and sharedCkptMagic describe. Blobs stored by builds before
// the container start with their own magic and are read as they are, so a
// store written by an older member stays usable; an older member refuses a
// blob in the container (no checkpoint magic) and starts that partition
// without it, as it would any unusable checkpoint.
const (
	ckptFrameMagic   = "SSCHKPNT"
	ckptFrameVersion = 1
	ckptFramePart    = 'P'
	ckptFrameShared  = 'S'
)

// sealCkpt returns body in its container of kind.
func sealCkpt(kind byte, body []byte) []byte {
	return frame.Seal(frame.Header{Magic: ckptFrameMagic, Version: ckptFrameVersion, Kind: kind}, body)
}

// openCkpt returns the body of a blob stored by sealCkpt with kind, checked
// whole (CRC, lengths), or the blob itself if it has no container (stored
// before it). Errors wrap errCheckpoint.
func openCkpt(kind byte, blob []byte) ([]byte, error) {
	if !bytes.HasPrefix(blob, []byte(ckptFrameMagic)) {
		return blob, nil
	}
	h, body, err := frame.Open(blob)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errCheckpoint, err)
	case h.Version != ckptFrameVersion:
		return nil, fmt.Errorf("%w: container version %d, this build reads %d", errCheckpoint, h.Version, ckptFrameVersion)
	case h.Kind != kind:
		return nil, fmt.Errorf("%w: a checkpoint of kind %q, want %q", errCheckpoint, h.Kind, kind)
	}
	return body, nil
}
