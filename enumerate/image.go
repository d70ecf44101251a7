package enumerate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/loopdev"
)

// Enumerating a medium read from its image (package imagefs), without a
// mount: the records are those a walk of the kernel mount at
// <root>/<hash> would give — paths under the medium root, /pN/… for the
// partitions of a multi-partition medium, the medium root first — so the
// loader and everything after it cannot tell the two apart. Identity is the
// reader's: dev is the partition number (0 for a whole-disk filesystem),
// ino the filesystem's own id of the entry (imagefs.Entry.ID), stable from
// one walk of the same image to the next.

// ImageOptions tune WalkImage. The zero value is usable.
type ImageOptions struct {
	// Root is the mount root the paths are spelled under, as if the medium
	// were mounted at <Root>/<hash> (default: the medium's Layout.Mount,
	// i.e. the root given to imagefs.OpenMedium).
	Root string
	// Ignore leaves out the records of matching paths (their subtrees are
	// still walked); the medium root is never left out.
	Ignore *Matcher
	// RootMtime is the mtime of the medium root of a multi-partition
	// medium, a directory that exists on no volume (a mount shows the
	// directory the mount points were made in); default 0.
	RootMtime int64
	// Progress is called every ProgressInterval (default 1s) and once at
	// the end, from the walking goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// WalkImage writes one raw record per directory entry of every volume of m
// to sink: the medium root first, then each volume depth-first in stored
// order (so the same image gives the same file, byte for byte). Structural
// damage found on the way goes to the Report given to imagefs.OpenMedium
// and is counted in Result.Errors; the walk goes on with the rest. It stops
// early only when ctx is cancelled or the sink fails.
func WalkImage(ctx context.Context, m *imagefs.Medium, opts ImageOptions, sink io.Writer) (Result, error) {
	start := time.Now()
	var res Result
	if m == nil || len(m.Volumes) == 0 {
		return res, errors.New("enumerate: the medium has no readable volume")
	}
	base := m.Layout.Mount
	if opts.Root != "" {
		base = m.Hash.MountPath(opts.Root)
	}
	problems0 := m.Problems()
	interval := opts.ProgressInterval
	if interval <= 0 {
		interval = time.Second
	}
	w := NewWriter(&countingWriter{w: sink, n: &res.Bytes})
	var entries, dirs int64
	lastProgress := start
	progress := func(done bool) {
		if opts.Progress == nil {
			return
		}
		p := Progress{Entries: entries, Dirs: dirs, Errors: m.Problems() - problems0, Elapsed: time.Since(start), Done: done}
		if s := p.Elapsed.Seconds(); s > 0 {
			p.Rate = float64(p.Entries) / s
		}
		opts.Progress(p)
	}
	finish := func(err error) (Result, error) {
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		res.Records = w.Count()
		res.Dirs = dirs
		res.Errors = m.Problems() - problems0
		res.Elapsed = time.Since(start)
		progress(true)
		return res, err
	}

	multi := m.Layout.Layout == loopdev.LayoutMulti
	if multi {
		root := Record{Type: TypeDir, Nlink: uint64(2 + len(m.Volumes)), Mtime: opts.RootMtime, Path: []byte(base)}
		if err := w.Write(&root); err != nil {
			return finish(err)
		}
	}
	var path []byte
	for _, v := range m.Volumes {
		prefix := base + v.Prefix
		err := m.Walk(ctx, v, func(p []byte, e *imagefs.Entry) error {
			path = append(path[:0], prefix...)
			if len(p) > 1 {
				path = append(path, p...)
			}
			if e.IsDir() {
				dirs++
			}
			ino, err := imagefs.CatalogIno(e.ID)
			if err != nil {
				return fmt.Errorf("enumerate: partition %d: %q: %w", v.Num, path, err)
			}
			if multi || len(p) > 1 {
				// Anything but the medium root counts, and may be left out.
				entries++
				if opts.Ignore != nil && opts.Ignore.Match(path) {
					res.Ignored++
					return nil
				}
			}
			rec := Record{Type: e.Type, Dev: uint64(v.Num), Ino: ino, Nlink: e.Nlink, Size: e.Size,
				Mtime: e.Mtime.Unix(), Path: path}
			if err := w.Write(&rec); err != nil {
				return err
			}
			if now := time.Now(); now.Sub(lastProgress) >= interval {
				lastProgress = now
				progress(false)
			}
			return ctx.Err()
		})
		if err != nil {
			return finish(fmt.Errorf("enumerate: medium %s partition %d (%s): %w", m.Hash, v.Num, v.FSType, err))
		}
	}
	return finish(nil)
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	*c.n += int64(n)
	return n, err
}
