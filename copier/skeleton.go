package copier

import (
	"context"
	"fmt"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5"
)

// finish, once the copy is over, says whether the medium is complete (no
// file of it pending or claimed, by anyone) and, if so, marks the problems
// a clean run resolves (clean: no attempt of this run failed) and builds
// the tree's directories and symlinks. The count and the tree's listing
// each read the whole inode table (after a copy, about three times its
// size in row versions): the listing is sent before the count and runs
// on the server meanwhile; it is read only once the medium is known to be
// complete, else dropped.
func (r *run) finish(ctx context.Context, clean bool) (complete bool) {
	var rows pgx.Rows
	var lerr error
	lctx, cancel := context.WithCancel(ctx)
	list := func() {
		rows, lerr = r.db.Query(lctx, fmt.Sprintf(`
			SELECT p.path, i.fs_type, i.ino
			FROM %s p JOIN %s i ON i.medium_hash = p.medium_hash AND i.dev = p.dev AND i.ino = p.ino
			WHERE p.medium_hash = $1 AND p.exclude_reason IS NULL AND i.fs_type IN ('d', 'l')
			ORDER BY i.fs_type, p.path`, r.h.PathTable(), r.h.InodeTable()), string(r.h))
	}
	// The listing holds a connection until it is read: the count needs
	// another besides the worker lock's.
	early := ctx.Err() == nil && r.db.Config().MaxConns >= 3
	if early {
		list()
	}
	defer func() {
		cancel() // a listing not read is not waited for
		if rows != nil {
			rows.Close()
		}
	}()
	var left int64
	var failed bool
	err := r.catalog(ctx, "counting the files left", func(cctx context.Context) (err error) {
		left, failed, err = leftAndFailed(context.WithoutCancel(cctx), r.db, r.h)
		return err
	})
	if err != nil || left > 0 {
		return false
	}
	if clean {
		r.resolveProblems(context.WithoutCancel(ctx), failed)
	}
	if ctx.Err() != nil {
		return true
	}
	if !early {
		list()
	}
	if lerr != nil {
		r.st.treeErrors.Add(1)
		r.log.Error("could not list directories and symlinks for the tree", "medium", r.h, "err", lerr)
		return true
	}
	r.buildTree(rows)
	return true
}

// leftAndFailed counts the medium's file inodes left to copy (pending or
// claimed) and says whether any inode of it is failed (failed_retryable or
// failed_permanent), in one pass over its inode table.
func leftAndFailed(ctx context.Context, q querier, h medium.Hash) (left int64, failed bool, err error) {
	err = q.QueryRow(ctx, fmt.Sprintf(`
		SELECT count(*) FILTER (WHERE NOT copied AND fs_type = 'f'),
		       count(*) FILTER (WHERE status IN ('failed_retryable', 'failed_permanent')) > 0
		FROM %s WHERE medium_hash = $1`, h.InodeTable()), string(h)).Scan(&left, &failed)
	if err != nil {
		return 0, false, fmt.Errorf("medium %s: counting inodes left to copy: %w", h, err)
	}
	return left, failed, nil
}

// buildTree recreates the medium's directories and symlinks in the tree
// from their listing (rows: path, type, inode), once no file is left to
// copy (it is idempotent: a rerun keeps what is there). Directories come
// first, parents before children (paths sorted); symlink targets are read
// from the medium beneath its mount and written as they are, never
// followed. A directory or symlink that cannot be made is logged and
// counted (Stats.TreeErrors); it does not fail the run.
func (r *run) buildTree(rows pgx.Rows) {
	t0 := time.Now()
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
