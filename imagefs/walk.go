package imagefs

import (
	"context"
	"fmt"
)

// MaxDepth bounds how deep Walk descends: deeper directories are reported
// (Kind "too_deep") and not entered. Real media stay far below it.
const MaxDepth = 4096

// WalkFunc is called for every entry, the root first, with its path relative
// to the filesystem root ("/" for the root, "/a/b" below it), and for each
// of an entry's forks right after it ("/a/b/..namedfork/rsrc", see fork.go). A non-nil
// error stops the walk and is returned by Walk. For a directory, returning
// SkipDir leaves its contents unread.
type WalkFunc func(path []byte, e *Entry) error

// SkipDir, returned by a WalkFunc for a directory, skips its contents.
var SkipDir = fmt.Errorf("skip this directory")

// Walk visits every entry of fsys depth-first, each directory's entries in
// stored order, so the same image gives the same sequence every time. Each
// directory's content is entered once: a directory that contains one of its
// own ancestors is reported (Kind "cycle"), one whose content was already
// walked under another name is reported (Kind "cross_linked"), and neither
// is entered again, so a hostile image cannot make the walk longer than its
// directories. A directory is known by where its records start on the volume
// (its first run), else by its ID. A directory that cannot be read is
// reported and skipped; the walk goes on.
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
	w := &walk{fsys: fsys, opts: opts, fn: fn, ancestors: map[int64]bool{dirKey(root): true}, walked: map[int64]bool{dirKey(root): true}}
	return w.dir(ctx, nil, root, 1)
}

// walk is the state of one Walk: the directories on the current path and
// every directory already entered, by dirKey.
type walk struct {
	fsys      FS
	opts      *Options
	fn        WalkFunc
	ancestors map[int64]bool
	walked    map[int64]bool
}

func (w *walk) dir(ctx context.Context, path []byte, dir *Entry, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fn, opts := w.fn, w.opts
	entries, err := w.fsys.ReadDir(dir)
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
		for _, f := range e.Forks {
			if err := fn(ForkPath(p, f.Name), f); err != nil && err != SkipDir {
				return err
			}
		}
		if !e.IsDir() {
			continue
		}
		key := dirKey(e)
		if w.ancestors[key] {
			opts.Reportf(-1, "cycle", "directory %q (id %d) is one of its own ancestors; not entered", p, e.ID)
			continue
		}
		if w.walked[key] {
			opts.Reportf(-1, "cross_linked", "directory %q (id %d) holds a directory already walked under another name; not entered again", p, e.ID)
			continue
		}
		if depth >= MaxDepth {
			opts.Reportf(-1, "too_deep", "directory %q is deeper than %d levels; not entered", p, MaxDepth)
			continue
		}
		w.ancestors[key], w.walked[key] = true, true
		err = w.dir(ctx, p, e, depth+1)
		delete(w.ancestors, key)
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
	return -1 - int64(e.ID&(1<<63-1)) // < 0, one key per ID (bit 63 aside)
}

func displayPath(p []byte) string {
	if len(p) == 0 {
		return "/"
	}
	return string(p)
}
