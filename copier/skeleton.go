package copier

import (
	"context"
	"fmt"
	"time"
)

// buildTree recreates the medium's directories and symlinks in the tree,
// once no file is left to copy (it is idempotent: a rerun keeps what is
// there). Directories come first, parents before children (paths sorted);
// symlink targets are read from the medium beneath its mount and written
// as they are, never followed. A directory or symlink that cannot be made
// is logged and counted (Stats.TreeErrors); it does not fail the run.
func (r *run) buildTree(ctx context.Context) {
	t0 := time.Now()
	rows, err := r.db.Query(ctx, fmt.Sprintf(`
		SELECT p.path, i.fs_type, i.ino
		FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.dev = p.dev AND i.ino = p.ino
		WHERE p.medium_hash = $1 AND p.exclude_reason IS NULL AND i.fs_type IN ('d', 'l')
		ORDER BY i.fs_type, p.path`, r.h.PathTable(), r.h.InodeTable()), string(r.h))
	if err != nil {
		r.st.treeErrors.Add(1)
		r.log.Error("could not list directories and symlinks for the tree", "medium", r.h, "err", err)
		return
	}
	defer rows.Close()
	tc := r.tree.cursor()
	defer tc.close()
	var p []byte
	var typ string
	var ino int64
	for rows.Next() {
		if err := rows.Scan(&p, &typ, &ino); err != nil {
			r.st.treeErrors.Add(1)
			r.log.Error("could not read the tree listing", "medium", r.h, "err", err)
			return
		}
		rel, err := relPath(p)
		if err == nil {
			switch typ {
			case "d":
				if err = r.tree.mkdir(p, rel); err == nil {
					r.st.dirs.Add(1)
				}
			case "l":
				var target string
				if target, err = r.src.readSymlink(p, rel, ino); err == nil {
					if err = tc.symlink(p, rel, target); err == nil {
						r.st.symlinks.Add(1)
					}
				}
			}
		}
		if err != nil {
			r.st.treeErrors.Add(1)
			r.log.Warn("could not recreate a tree entry", "medium", r.h, "path", string(p), "type", typ, "err", err)
		}
	}
	if err := rows.Err(); err != nil {
		r.st.treeErrors.Add(1)
		r.log.Error("could not list directories and symlinks for the tree", "medium", r.h, "err", err)
		return
	}
	if !r.o.DryRun {
		if err := r.store.Sync(); err != nil {
			r.log.Warn("could not sync the tree", "medium", r.h, "err", err)
		}
	}
	r.log.Info("tree completed", "medium", r.h, "dirs", r.st.dirs.Load(), "symlinks", r.st.symlinks.Load(),
		"errors", r.st.treeErrors.Load(), "seconds", time.Since(t0).Seconds())
}
