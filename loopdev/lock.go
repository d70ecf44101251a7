package loopdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/internal/medium"
)

// Two locks guard a medium: a channel per lock file inside this process
// (so goroutines queue without spinning and honour ctx), and flock(2) on
// <root>/.<hash>.lock across processes. The lock file is never removed:
// removing it would let a newcomer lock a fresh inode while an old holder
// still has the old one.
var (
	procLocksMu sync.Mutex
	procLocks   = map[string]chan struct{}{}
)

func procLock(key string) chan struct{} {
	procLocksMu.Lock()
	defer procLocksMu.Unlock()
	ch, ok := procLocks[key]
	if !ok {
		ch = make(chan struct{}, 1)
		procLocks[key] = ch
	}
	return ch
}

// lockMedium takes the medium's lock and returns the function that
// releases it.
func lockMedium(ctx context.Context, h medium.Hash, root string) (func(), error) {
	path := filepath.Join(root, "."+string(h)+".lock")
	ch := procLock(path)
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("medium %s: waiting for lock %s: %w", h, path, ctx.Err())
	}
	release := func() { <-ch }
	if err := os.MkdirAll(root, 0o755); err != nil {
		release()
		return nil, fmt.Errorf("medium %s: %w", h, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		release()
		return nil, fmt.Errorf("medium %s: lock: %w", h, err)
	}
	for delay := time.Millisecond; ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			release()
			return nil, fmt.Errorf("medium %s: flock %s: %w", h, path, err)
		}
		// flock has no timeout; poll so that ctx can end the wait.
		select {
		case <-ctx.Done():
			f.Close()
			release()
			return nil, fmt.Errorf("medium %s: waiting for lock %s (held by another process): %w", h, path, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		release()
	}, nil
}
