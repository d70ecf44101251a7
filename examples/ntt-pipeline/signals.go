package main

// Stopping the queue. The first SIGINT or SIGTERM cancels the queue's
// context: no medium is started any more, and every running job ends the
// way a cancelled phase ends — the copier finishes the files it is reading,
// commits its batch and gives back its other claims; enumeration and load
// roll back (a rerun redoes them); then the job unmounts. The next run
// resumes from the catalog.
//
// A second signal stops at once: every mount of a running medium is
// detached lazily (MNT_DETACH) and the process exits. The kernel closes
// the process's files at exit, which releases the detached filesystems,
// and loopdev's loops are autoclear, so they detach with them: nothing is
// left mounted or attached. Claims left by the killed workers come back to
// pending by their lease, as after a crash.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev"
	"golang.org/x/sys/unix"
)

// running is the set of media whose job is under way.
type running struct {
	mu sync.Mutex
	m  map[medium.Hash]bool
}

func (r *running) add(h medium.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[medium.Hash]bool{}
	}
	r.m[h] = true
}

func (r *running) remove(h medium.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, h)
}

func (r *running) list() []medium.Hash {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []medium.Hash
	for h := range r.m {
		out = append(out, h)
	}
	return out
}

// stopOnSignals returns a context cancelled by the first SIGINT/SIGTERM;
// the second calls hardStop and exits with status 1. stop releases the
// signals.
func stopOnSignals(stderr io.Writer, hardStop func()) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "ntt-pipeline: %v: stopping — running media finish their batch, record their state and unmount; no new medium starts (signal again to stop at once)\n", s)
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "ntt-pipeline: %v again: stopping at once (running media resume on the next run)\n", s)
			hardStop()
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// detachMounts lazily unmounts every mount under <root>/<hash> of the
// given media, deepest first (partition mounts before the medium root).
func detachMounts(root string, media []medium.Hash, errw io.Writer) {
	abs, err := filepath.Abs(root)
	if err == nil {
		root = abs
	}
	for _, h := range media {
		ms, err := loopdev.Mounts(loopdev.MountpointFilter(h.MountPath(root)))
		if err != nil {
			fmt.Fprintf(errw, "ntt-pipeline: medium %s: reading mounts: %v\n", h, err)
			continue
		}
		sort.Slice(ms, func(i, j int) bool { return len(ms[i].Mountpoint) > len(ms[j].Mountpoint) })
		for _, m := range ms {
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil {
				fmt.Fprintf(errw, "ntt-pipeline: medium %s: detaching %s: %v\n", h, m.Mountpoint, err)
			}
		}
	}
}
