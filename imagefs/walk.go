package imagefs

import (
	"context"
	"fmt"
)

// MaxDepth bounds how deep Walk descends: deeper directories are reported
// (Kind "too_deep") and not entered. Real media stay far below it.
const MaxDepth = 4096

// WalkFunc is called for every entry, the root first, with its path relative
// to the filesystem root ("/" for the root, "/a/b" below it). A non-nil
// error stops the walk and is returned by Walk. For a directory, returning
// SkipDir leaves its contents unread.
type WalkFunc func(path []byte, e *Entry) error

// SkipDir, returned by a WalkFunc for a directory, skips its contents.
var SkipDir = fmt.Errorf("skip this directory")

// Walk visits every entry of fsys depth-first, each directory's entries in
// stored order, so the same image gives the same sequence every time. A
// directory that contains one of its own ancestors (same ID) is reported
// through opts.Report (Kind "cycle") and not entered — a directory is known
// by where its records start on the volume (its first run), else by its ID; a directory that
// cannot be read is reported and skipped; the walk goes on.
func Walk(ctx context.Context, fsys FS, opts *Options, fn WalkFunc) error {
	root, err := fsys.Root()
	if err != nil {
		return fmt.Errorf("%s: reading the root directory: %w", fsys.Type(), err)
	}
	if err := fn([]byte("/"), root); err != nil {
		if err == SkipDir {
			return nil
		}
		return err
	}
	ancestors := map[int64]bool{dirKey(root): true}
	return walkDir(ctx, fsys, opts, fn, nil, root, ancestors, 1)
}

func walkDir(ctx context.Context, fsys FS, opts *Options, fn WalkFunc, path []byte, dir *Entry, ancestors map[int64]bool, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		opts.Reportf(-1, "unreadable_dir", "directory %q: %v", displayPath(path), err)
		return nil
	}
	for _, e := range entries {
		p := make([]byte, 0, len(path)+1+len(e.Name))
		p = append(append(append(p, path...), '/'), e.Name...)
		err := fn(p, e)
		if err == SkipDir {
			continue
		}
		if err != nil {
			return err
		}
		if !e.IsDir() {
			continue
		}
		key := dirKey(e)
		if ancestors[key] {
			opts.Reportf(-1, "cycle", "directory %q (id %d) is one of its own ancestors; not entered", p, e.ID)
			continue
		}
		if depth >= MaxDepth {
			opts.Reportf(-1, "too_deep", "directory %q is deeper than %d levels; not entered", p, MaxDepth)
			continue
		}
		ancestors[key] = true
		err = walkDir(ctx, fsys, opts, fn, p, e, ancestors, depth+1)
		delete(ancestors, key)
		if err != nil {
			return err
		}
	}
	return nil
}

// dirKey identifies a directory's content: its first stored run's volume
// offset, or (no runs) its ID, negated so the two kinds never collide.
func dirKey(e *Entry) int64 {
	for _, r := range e.Runs {
		if !r.Hole {
			return r.Offset
		}
	}
	return -1 - int64(e.ID>>1)
}

func displayPath(p []byte) string {
	if len(p) == 0 {
		return "/"
	}
	return string(p)
}
