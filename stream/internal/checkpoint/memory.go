package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Memory is a Store in process memory, for tests of the pipeline and for
// single-process runs that need no durability. Every Put copies the blob; a
// Put whose reader fails stores nothing.
type Memory struct {
	mu     sync.Mutex
	m      map[string]Checkpoint
	closed bool
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{m: make(map[string]Checkpoint)} }

// Put implements Store.
func (s *Memory) Put(ctx context.Context, key Key, offset int64, blob io.Reader) (Info, error) {
	start := time.Now()
	if err := checkPut(key, offset, blob); err != nil {
		return Info{}, err
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, blob); err != nil {
		return Info{}, fmt.Errorf("read checkpoint blob of %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("put checkpoint of %s: %w", key, err)
	}
	info := Info{Key: key, Offset: offset, Size: int64(buf.Len()), Chunks: 1, CreatedAt: start, Transferred: int64(buf.Len())}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Info{}, ErrClosed
	}
	info.Duration = time.Since(start)
	s.m[key.id()] = Checkpoint{Info: info, Blob: buf.Bytes()}
	return info, nil
}

// Latest implements Store.
func (s *Memory) Latest(ctx context.Context, key Key) (Checkpoint, bool, error) {
	start := time.Now()
	if err := key.Validate(); err != nil {
		return Checkpoint{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Checkpoint{}, false, ErrClosed
	}
	cp, ok := s.m[key.id()]
	if !ok {
		return Checkpoint{}, false, nil
	}
	if cp.Key.Fingerprint != key.Fingerprint {
		return Checkpoint{}, false, &MismatchError{Key: key, Stored: cp.Key.Fingerprint, Offset: cp.Offset}
	}
	cp.Blob = bytes.Clone(cp.Blob)
	cp.Duration = time.Since(start)
	cp.Transferred = cp.Size
	return cp, true, nil
}

// Delete implements Store.
func (s *Memory) Delete(ctx context.Context, key Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	delete(s.m, key.id())
	return nil
}

// Close implements Store; the checkpoints are dropped.
func (s *Memory) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.m = nil
	return nil
}
