package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
)

// Damage of files copied before the mapfile was known.
//
// A file is copied as imaged; its damage (the ranges whose image bytes
// ddrescue did not rescue, so that they read as zeros) is recorded by the
// DamageMapper while it is copied. A file copied while no mapfile was known
// got no such check, and a later copy run has nothing left to copy:
// CheckDamage maps the files already copied, from the same mount, and
// records what it finds. The extents of a file on a read-only image do not
// change between mounts, so the answer is the one a check at copy time
// would have given.

// ErrNoDamageMapper says that CheckDamage was called without a mapper (no
// mapfile with unrescued ranges).
var ErrNoDamageMapper = errors.New("no damage mapper (no mapfile with unrescued ranges)")

// DamageCheckOptions of CheckDamage.
type DamageCheckOptions struct {
	Medium    string       // the medium hash (required)
	MountRoot string       // <MountRoot>/<hash> is the mount (default /mnt/ntt)
	Damage    DamageMapper // required
	// BatchSize is how many inodes are read from the catalog and updated
	// per statement (default 1000).
	BatchSize int
	// StallTimeout: a file whose mapping (an ioctl on a damaged device)
	// has not returned after this long ends the check with ErrStalled
	// (default DefaultStallTimeout; <0 disables).
	StallTimeout time.Duration
	Logger       *slog.Logger // nil is silent
}

// DamageCheckReport says what CheckDamage found.
type DamageCheckReport struct {
	// Checked files were opened beneath the mount, found to be the
	// catalogued inode and mapped.
	Checked int64
	// Damaged files of Checked overlap unrescued bytes; Recorded of them
	// had no damage recorded before (the others keep what they had).
	Damaged, Recorded int64
	// Unchecked files could not be checked (path gone, not the catalogued
	// inode, extents unavailable); each is logged with the reason.
	Unchecked int64
	Elapsed   time.Duration
}

// CheckDamage maps every copied file of the medium (status success, with a
// blob) onto the mapfile through opts.Damage and records the damage found
// in inode.damage where none was recorded. It never clears a recorded
// damage: the copy was made from the bytes the image had then. The medium
// must be mounted at <MountRoot>/<hash>; files are opened as the copier
// opens them (beneath the mount, no symlinks, the catalogued inode number
// and size). It is idempotent and safe to run while copiers work.
func CheckDamage(ctx context.Context, db querier, opts DamageCheckOptions) (DamageCheckReport, error) {
	start := time.Now()
	var rep DamageCheckReport
	h, err := medium.Parse(opts.Medium)
	if err != nil {
		return rep, err
	}
	if opts.Damage == nil {
		return rep, fmt.Errorf("medium %s: %w", h, ErrNoDamageMapper)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := opts.MountRoot
	if root == "" {
		root = DefaultMountRoot
	}
	n := opts.BatchSize
	if n <= 0 {
		n = DefaultBatchSize
	}
	src, err := openSource(root, h)
	if err != nil {
		return rep, err
	}
	stalled := false
	defer func() {
		if !stalled { // a stuck call may still use the source's fds
			src.close()
		}
	}()

	after := cursorStart
	for {
		batch, err := copiedBatch(ctx, db, h, after, n)
		if err != nil {
			return rep, err
		}
		if len(batch) == 0 {
			break
		}
		after = batch[len(batch)-1].key()
		var devs, inos []int64
		var dmgs []string
		for _, in := range batch {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			d, err := boundedDamage(ctx, src, in, opts.Damage, opts.StallTimeout)
			if errors.Is(err, ErrStalled) {
				stalled = true
				return rep, fmt.Errorf("medium %s: checking damage of dev %d ino %d: %w", h, in.Dev, in.Ino, err)
			}
			if err != nil {
				rep.Unchecked++
				log.Warn("could not check the file's damage", "medium", h, "dev", in.Dev, "ino", in.Ino, "err", err)
				continue
			}
			rep.Checked++
			if d != nil {
				rep.Damaged++
				devs, inos, dmgs = append(devs, in.Dev), append(inos, in.Ino), append(dmgs, string(d))
			}
		}
		if len(devs) > 0 {
			tag, err := db.Exec(ctx, fmt.Sprintf(`
				UPDATE %s AS i SET damage = u.damage::jsonb
				FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(dev, ino, damage)
				WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino AND i.damage IS NULL`, h.InodeTable()),
				string(h), devs, inos, dmgs)
			if err != nil {
				return rep, fmt.Errorf("medium %s: recording damage: %w", h, err)
			}
			rep.Recorded += tag.RowsAffected()
		}
	}
	rep.Elapsed = time.Since(start)
	log.Info("damage check completed", "medium", h, "checked", rep.Checked, "damaged", rep.Damaged,
		"recorded", rep.Recorded, "unchecked", rep.Unchecked, "seconds", rep.Elapsed.Seconds())
	return rep, nil
}

// copiedBatch reads up to n copied file inodes after cursor, with their
// non-excluded paths.
func copiedBatch(ctx context.Context, q querier, h medium.Hash, after key, n int) ([]*inode, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(`
		WITH c AS (
			SELECT dev, ino, size FROM %[1]s
			WHERE medium_hash = $1 AND copied AND fs_type = 'f' AND status = 'success' AND blobid IS NOT NULL
			  AND (dev, ino) > ($2, $3)
			ORDER BY dev, ino
			LIMIT $4)
		SELECT c.dev, c.ino, c.size, p.path
		FROM c LEFT JOIN %[2]s p
		  ON p.medium_hash = $1 AND p.dev = c.dev AND p.ino = c.ino AND p.exclude_reason IS NULL
		ORDER BY c.dev, c.ino, p.path`, h.InodeTable(), h.PathTable()), string(h), after.dev, after.ino, n)
	if err != nil {
		return nil, fmt.Errorf("medium %s: reading copied inodes: %w", h, err)
	}
	defer rows.Close()
	var out []*inode
	for rows.Next() {
		var dev, ino, size int64
		var path []byte
		if err := rows.Scan(&dev, &ino, &size, &path); err != nil {
			return nil, fmt.Errorf("medium %s: reading copied inodes: %w", h, err)
		}
		if len(out) == 0 || out[len(out)-1].Dev != dev || out[len(out)-1].Ino != ino {
			out = append(out, &inode{Dev: dev, Ino: ino, Size: size})
		}
		if path != nil {
			last := out[len(out)-1]
			last.Paths = append(last.Paths, path)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("medium %s: reading copied inodes: %w", h, err)
	}
	return out, nil
}

// boundedDamage runs damageOf, giving up with ErrStalled after timeout: a
// call stuck in the kernel cannot be cancelled, so it is left behind.
func boundedDamage(ctx context.Context, s *source, in *inode, m DamageMapper, timeout time.Duration) ([]byte, error) {
	if timeout == 0 {
		timeout = DefaultStallTimeout
	}
	if timeout < 0 {
		return s.damageOf(ctx, in, m)
	}
	type result struct {
		d   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := s.damageOf(ctx, in, m)
		done <- result{d, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.d, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("%w: mapping took longer than %v", ErrStalled, timeout)
	}
}

// damageOf opens the inode by the first of its paths that leads to it and
// maps its damage.
func (s *source) damageOf(ctx context.Context, in *inode, m DamageMapper) ([]byte, error) {
	if len(in.Paths) == 0 {
		return nil, errors.New("no path that is not excluded")
	}
	var first error
	for _, p := range in.Paths {
		rel, err := relPath(p)
		if err == nil {
			var fd int
			var mount string
			fd, mount, err = s.openFile(p, rel)
			if err == nil {
				f := os.NewFile(uintptr(fd), s.path+"/"+rel)
				if _, err = checkFile(fd, p, in.Ino, in.Size); err == nil {
					var d []byte
					d, err = m.Damage(ctx, f, mount)
					f.Close()
					if err == nil {
						return d, nil
					}
				} else {
					f.Close()
				}
			}
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}
