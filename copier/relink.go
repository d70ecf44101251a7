package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RelinkOptions name the medium whose files Relink puts back.
type RelinkOptions struct {
	Medium    string
	StoreRoot string // default /data/cold
	Logger    *slog.Logger
}

// RelinkResult counts what Relink did.
type RelinkResult struct {
	Relinked int64 // inodes recorded as copied again
	Links    int64 // tree paths linked to their blob
	// Waiting are the medium's pending inodes that still need their
	// content: its blob is quarantined or not in the store. Only a copy
	// (of this medium, or of another holding the same content) stores it.
	Waiting int64
}

// relinkBatch is how many inodes one Relink transaction takes.
const relinkBatch = 500

// Relink records as copied again, without reading the medium, the
// medium's pending inodes whose content is known (blobid, kept when
// VerifyStore quarantined their blob) and stored again — by the copy of
// another medium holding the same content: it links each of their paths
// in the tree to the blob (replacing the link to the quarantined file) and
// marks them copied. It is how an archived medium whose image is gone gets
// its tree back after bit rot, when another medium holds the content. The
// blob is trusted as a copy's dedupe trusts it: present at its name, of
// its size, not quarantined. Inodes claimed by a running copier are left
// to it.
func Relink(ctx context.Context, db *pgxpool.Pool, opts RelinkOptions) (RelinkResult, error) {
	var res RelinkResult
	h, err := medium.Parse(opts.Medium)
	if err != nil {
		return res, err
	}
	if opts.StoreRoot == "" {
		opts.StoreRoot = DefaultStore
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := schema.CheckAttached(ctx, db, h); err != nil {
		return res, err
	}
	store, err := OpenStore(opts.StoreRoot)
	if err != nil {
		return res, err
	}
	defer store.Close()
	tr, err := store.openTree(h)
	if err != nil {
		return res, err
	}
	defer tr.close()
	tc := tr.cursor()
	defer tc.close()

	table := h.InodeTable()
	var lastDev, lastIno int64 = -1 << 63, -1 << 63
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("medium %s: relink interrupted: %w", h, err)
		}
		var n int
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			n = 0
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))`, quarantineLock); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, fmt.Sprintf(`
				SELECT i.dev, i.ino, i.size, i.blobid, coalesce(array_agg(p.path ORDER BY p.path) FILTER (WHERE p.path IS NOT NULL), '{}')
				FROM (SELECT dev, ino, size, blobid FROM %s i
					WHERE medium_hash = $1 AND fs_type = 'f' AND NOT copied AND claimed_by IS NULL AND blobid IS NOT NULL
					  AND (dev, ino) > ($2, $3)
					  AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.blobid = i.blobid AND b.quarantined_at IS NOT NULL)
					ORDER BY dev, ino LIMIT $4 FOR UPDATE SKIP LOCKED) i
				LEFT JOIN path p ON p.medium_hash = $1 AND p.dev = i.dev AND p.ino = i.ino AND p.exclude_reason IS NULL
				GROUP BY 1, 2, 3, 4 ORDER BY 1, 2`, table), string(h), lastDev, lastIno, relinkBatch)
			if err != nil {
				return err
			}
			type cand struct {
				dev, ino, size int64
				blob           string
				paths          [][]byte
			}
			var cands []cand
			for rows.Next() {
				var c cand
				if err := rows.Scan(&c.dev, &c.ino, &c.size, &c.blob, &c.paths); err != nil {
					rows.Close()
					return err
				}
				cands = append(cands, c)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			n = len(cands)
			var devs, inos []int64
			var links int64
			for _, c := range cands {
				lastDev, lastIno = c.dev, c.ino
				ok, err := store.HasBlob(c.blob, c.size)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				linked := true
				for _, p := range c.paths {
					rel, err := relPath(p)
					if err == nil {
						_, err = tc.link(p, rel, c.blob)
					}
					if errors.Is(err, errBlobGone) || isPathErr(err) {
						log.Warn("not relinked", "medium", h, "ino", c.ino, "path", string(p), "err", err)
						linked = false
						break
					}
					if err != nil {
						return err
					}
					links++
				}
				if linked {
					devs, inos = append(devs, c.dev), append(inos, c.ino)
				}
			}
			if len(devs) == 0 {
				return nil
			}
			if err := store.Sync(); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, fmt.Sprintf(`
				UPDATE %s AS i SET copied = true, status = 'success', processed_at = now(), by_hash_created = false,
					error_type = NULL
				FROM unnest($2::bigint[], $3::bigint[]) AS u(dev, ino)
				WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino AND NOT i.copied AND i.claimed_by IS NULL`, table),
				string(h), devs, inos)
			if err != nil {
				return err
			}
			res.Relinked += tag.RowsAffected()
			res.Links += links
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("medium %s: relinking: %w", h, err)
		}
		if n < relinkBatch {
			break
		}
	}
	err = db.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE medium_hash = $1 AND fs_type = 'f' AND NOT copied AND blobid IS NOT NULL`, table),
		string(h)).Scan(&res.Waiting)
	if err != nil {
		return res, fmt.Errorf("medium %s: counting pending inodes: %w", h, err)
	}
	log.Info("relinked", "medium", h, "inodes", res.Relinked, "links", res.Links, "waiting", res.Waiting)
	return res, nil
}
