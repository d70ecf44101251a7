package copier

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// Bit rot. VerifyStore re-reads blobs and compares their content with their
// names and sizes. A blob that fails — its content hashes to something
// else, its size is not the catalogued one, it is missing or cannot be read
// — is quarantined:
//
//   - its file is moved aside to <store>/quarantine/<blake3>.<time> (a
//     rename in the store's filesystem: never deleted, never rewritten), so
//     that no copy finds it at its by-hash name again;
//   - blobs.quarantined_at and quarantine_reason mark it, and while the mark
//     stands no batch may record an inode as copied to it by deduplication
//     (commitBatch refuses, and the worker then writes the blob itself);
//   - every inode that named it goes back to pending (copied = false,
//     status pending), keeping its blobid: the catalog still says which
//     content the inode needs, and the report can name its paths.
//
// The next copy of any medium holding that content stores a correct blob
// (a new file at the by-hash name), clears the mark, and relinks the
// medium's tree paths to it (a tree link to another inode is replaced). The
// mark and the inode reset are one transaction under an exclusive advisory
// lock that every batch commit takes shared, so a batch that linked the bad
// blob before it was moved either commits before the reset (and is reset)
// or after the mark (and is refused).
//
// A medium whose inodes went back to pending needs its source to be copied
// again. When it was archived (medium.archive_path) and its image removed,
// the report names the archive that holds the image: restore the image,
// mount it and run the copier; or copy another medium holding the same
// content. Nothing is dropped meanwhile: the inodes stay pending (the
// medium shows as not fully copied) and every verification lists them.

// VerifyOptions choose which blobs VerifyStore re-hashes.
type VerifyOptions struct {
	StoreRoot string // default /data/cold
	// Sample > 0 checks that many blobs chosen at random; Oldest > 0 checks
	// that many, least recently checked (never checked) first. Neither: all.
	// Quarantined blobs are not checked again.
	Sample int
	Oldest int
	// Workers hash in parallel (default 2).
	Workers int
	// ReportOnly finds and reports damage but changes nothing: no blob is
	// moved or marked, no inode reset.
	ReportOnly bool
	// AffectedPaths is how many paths are listed per affected medium
	// (default 20; the counts are always complete).
	AffectedPaths int
	// OnProblem is called for every blob that fails (from one goroutine),
	// after it was moved aside.
	OnProblem func(BlobProblem)
	// Progress is called after every checked blob (from one goroutine).
	Progress func(VerifyReport)
	Logger   *slog.Logger
}

// QuarantineDir is the store's directory of blobs that failed
// verification: <store>/quarantine/<blake3>.<time>.
const QuarantineDir = "quarantine"

// Blob problems found by VerifyStore.
const (
	BlobMissing    = "missing"    // no file at by-hash/AA/BB/<id>
	BlobMismatch   = "mismatch"   // the content does not hash to the name
	BlobWrongSize  = "size"       // the file's size differs from blobs.size
	BlobUnreadable = "unreadable" // the file could not be read, or is not a regular file
	BlobBadMode    = "mode"       // content good, but not mode 0644
)

// BlobProblem is a blob that failed verification.
type BlobProblem struct {
	ID      string
	Size    int64  // blobs.size: the size expected
	Problem string // one of the Blob* constants
	Actual  string // the content's BLAKE3 (mismatch), or detail
	Found   int64  // the size found (BlobWrongSize)
	Err     error
	// Quarantine is where the file went, relative to the store
	// (quarantine/<id>.<time>); empty when there was no file to move or
	// nothing was changed (ReportOnly, BlobBadMode, a passing error).
	Quarantine string
	// Marked: the blob is marked quarantined in the catalog.
	Marked bool
	// Inodes is how many inodes went back to pending because of it.
	Inodes int64

	rewritten bool // the file checked was replaced meanwhile: not quarantined
}

// VerifyReport summarises a verification.
type VerifyReport struct {
	Checked, OK                                int64
	Missing, Mismatched, WrongSize, Unreadable int64
	BadMode                                    int64
	Bytes                                      int64         // bytes re-hashed
	Problems                                   []BlobProblem // the first 1000
	Elapsed                                    time.Duration
	// Quarantined blobs are those this verification marked; Reset the
	// inodes it put back to pending.
	Quarantined, Reset int64
	// Awaiting counts the blobs marked quarantined (by this verification
	// or an earlier one) that no copy has written again yet.
	Awaiting int64
	// Affected lists the media (the first 100, by hash) with inodes whose
	// blob failed here or is still quarantined; AffectedMedia counts them all.
	Affected      []AffectedMedium
	AffectedMedia int64
}

// AffectedMedium is a medium with inodes whose content must be copied
// again because their blob failed verification.
type AffectedMedium struct {
	Medium, Human string
	// ImagePath is the medium's image (medium.image_path); ArchivePath is
	// set when the medium was archived: its image is in that archive, and
	// may be gone from ImagePath.
	ImagePath, ArchivePath string
	Inodes, Bytes          int64    // inodes waiting for their blob, and their size
	Pending                int64    // of those, pending or claimed (to copy again)
	Paths                  []string // the first of their paths, sorted
}

// Failed reports whether any blob failed.
func (r VerifyReport) Failed() bool {
	return r.Missing+r.Mismatched+r.WrongSize+r.Unreadable+r.BadMode > 0
}

// quarantineLock is the advisory lock between quarantine (exclusive) and
// batch commits (shared).
const quarantineLock = "ntt-blob-quarantine"

// VerifyStore re-reads blobs listed in the catalog, re-hashes their content
// with BLAKE3 and compares it with their names and sizes — a content check,
// not an existence check. Blobs that pass get blobs.last_checked = now();
// blobs that fail are quarantined (see above) unless opts.ReportOnly.
func VerifyStore(ctx context.Context, db *pgxpool.Pool, opts VerifyOptions) (VerifyReport, error) {
	t0 := time.Now()
	if opts.StoreRoot == "" {
		opts.StoreRoot = DefaultStore
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.AffectedPaths <= 0 {
		opts.AffectedPaths = 20
	}
	if opts.Sample < 0 || opts.Oldest < 0 || opts.Sample > 0 && opts.Oldest > 0 {
		return VerifyReport{}, fmt.Errorf("%w: choose one of sample or oldest, with a positive count", ErrInvalidOptions)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := opts.StoreRoot
	dir, err := unix.Open(root+"/"+ByHashDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return VerifyReport{}, fmt.Errorf("store %s: opening %s: %w", root, ByHashDir, err)
	}
	defer unix.Close(dir)
	q := &quarantine{root: root, byHash: dir, qdir: -1, log: log}
	defer q.close()

	sql := `SELECT blobid, size FROM blobs WHERE quarantined_at IS NULL ORDER BY blobid`
	var args []any
	switch {
	case opts.Sample > 0:
		sql, args = `SELECT blobid, size FROM blobs WHERE quarantined_at IS NULL ORDER BY random() LIMIT $1`, []any{opts.Sample}
	case opts.Oldest > 0:
		sql, args = `SELECT blobid, size FROM blobs WHERE quarantined_at IS NULL ORDER BY last_checked NULLS FIRST, blobid LIMIT $1`, []any{opts.Oldest}
	}

	type job struct {
		id   string
		size int64
	}
	type result struct {
		job
		bytes int64
		prob  *BlobProblem
		st    unix.Stat_t // of the file checked
	}
	jobs := make(chan job, 64)
	results := make(chan result, 64)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, streamChunk)
			h := blake3.New()
			for j := range jobs {
				r := result{job: j}
				r.bytes, r.prob = checkBlob(dir, j.id, j.size, buf, h, &r.st)
				results <- r
			}
		}()
	}
	var listErr error
	go func() {
		defer close(jobs)
		rows, err := db.Query(ctx, sql, args...)
		if err != nil {
			listErr = err
			return
		}
		defer rows.Close()
		for rows.Next() {
			var j job
			if err := rows.Scan(&j.id, &j.size); err != nil {
				listErr = err
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
		listErr = rows.Err()
	}()
	go func() { wg.Wait(); close(results) }()

	var rep VerifyReport
	var good []string
	var failedIDs []string // every failed blob, for the affected media
	flush := func() error {
		if len(good) == 0 {
			return nil
		}
		_, err := db.Exec(context.WithoutCancel(ctx), `UPDATE blobs SET last_checked = now() WHERE blobid = ANY($1)`, good)
		good = good[:0]
		if err != nil {
			return fmt.Errorf("recording blobs.last_checked: %w", err)
		}
		return nil
	}
	var upErr, qErr error
	var toMark, probs []*BlobProblem
	mark := func() {
		if len(toMark) == 0 || qErr != nil {
			return
		}
		qErr = markQuarantined(context.WithoutCancel(ctx), db, toMark)
		for _, p := range toMark {
			if p.Marked {
				rep.Quarantined++
				rep.Reset += p.Inodes
			}
		}
		toMark = toMark[:0]
	}
	for res := range results {
		rep.Checked++
		rep.Bytes += res.bytes
		if res.prob == nil {
			rep.OK++
			good = append(good, res.id)
			if len(good) >= 500 && upErr == nil {
				upErr = flush()
			}
		} else {
			p := res.prob
			switch p.Problem {
			case BlobMissing:
				rep.Missing++
			case BlobMismatch:
				rep.Mismatched++
			case BlobWrongSize:
				rep.WrongSize++
			case BlobBadMode:
				rep.BadMode++
			default:
				rep.Unreadable++
			}
			if len(failedIDs) < 100000 {
				failedIDs = append(failedIDs, p.ID)
			}
			if !opts.ReportOnly && quarantinable(p) && qErr == nil {
				q.moveAside(p, &res.st)
				toMark = append(toMark, p)
			}
			log.Warn("blob failed verification", "blob", p.ID, "problem", p.Problem, "expected_size", p.Size,
				"found_size", p.Found, "actual", p.Actual, "quarantine", p.Quarantine, "err", p.Err)
			if opts.OnProblem != nil {
				opts.OnProblem(*p)
			}
			if len(toMark) >= 100 {
				mark()
			}
			if len(probs) < 1000 {
				probs = append(probs, p)
			}
		}
		if opts.Progress != nil {
			rep.Elapsed = time.Since(t0)
			opts.Progress(rep)
		}
	}
	mark()
	if upErr == nil {
		upErr = flush()
	}
	for _, p := range probs {
		rep.Problems = append(rep.Problems, *p)
	}
	if listErr == nil && qErr == nil {
		if err := affected(context.WithoutCancel(ctx), db, failedIDs, opts.AffectedPaths, &rep); err != nil {
			qErr = err
		}
	}
	rep.Elapsed = time.Since(t0)
	if listErr != nil {
		return rep, fmt.Errorf("store %s: listing blobs: %w", root, listErr)
	}
	if qErr != nil {
		return rep, fmt.Errorf("store %s: %w", root, qErr)
	}
	if upErr != nil {
		return rep, fmt.Errorf("store %s: %w", root, upErr)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("store %s: verification interrupted: %w", root, err)
	}
	log.Info("store verified", "store", root, "checked", rep.Checked, "ok", rep.OK, "missing", rep.Missing,
		"mismatched", rep.Mismatched, "wrong_size", rep.WrongSize, "unreadable", rep.Unreadable, "bad_mode", rep.BadMode,
		"quarantined", rep.Quarantined, "inodes_reset", rep.Reset, "awaiting_copy", rep.Awaiting,
		"affected_media", rep.AffectedMedia, "bytes", rep.Bytes, "seconds", rep.Elapsed.Seconds())
	return rep, nil
}

// quarantinable reports whether a failed blob is quarantined: not for a
// wrong mode (the content is good) nor for a passing shortage of the
// verifier's own resources.
func quarantinable(p *BlobProblem) bool {
	switch p.Problem {
	case BlobBadMode:
		return false
	case BlobUnreadable:
		for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOMEM, unix.EINTR, unix.EAGAIN} {
			if errors.Is(p.Err, e) {
				return false
			}
		}
	}
	return true
}

// quarantine moves failed blobs aside.
type quarantine struct {
	root   string
	byHash int
	qdir   int // O_PATH fd of <store>/quarantine, opened when first needed
	log    *slog.Logger
}

func (q *quarantine) close() {
	if q.qdir >= 0 {
		unix.Close(q.qdir)
	}
}

// moveAside renames the blob's file (the one checked, st) to
// quarantine/<id>.<time>. A file that is gone by now (another verification
// moved it) is still marked; a file that is not the one checked (written again meanwhile) is put back
// and not quarantined. A failure to move is recorded in the problem: the
// blob is still marked, and the mark alone keeps copies from deduping
// against it (they write it again, replacing the file).
func (q *quarantine) moveAside(p *BlobProblem, st *unix.Stat_t) {
	if p.Problem == BlobMissing {
		return
	}
	if q.qdir < 0 {
		dfd, err := unix.Open(q.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = mkdir0755(dfd, QuarantineDir)
			if err == nil {
				q.qdir, err = unix.Openat(dfd, QuarantineDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
			unix.Close(dfd)
		}
		if err != nil {
			q.qdir = -1
			p.Err = errors.Join(p.Err, fmt.Errorf("creating %s/%s: %w", q.root, QuarantineDir, err))
			return
		}
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	name := p.ID + "." + stamp
	var err error
	for n := 1; ; n++ {
		err = unix.Renameat2(q.byHash, BlobPath(p.ID), q.qdir, name, unix.RENAME_NOREPLACE)
		if !errors.Is(err, unix.EEXIST) {
			break
		}
		name = p.ID + "." + stamp + "-" + strconv.Itoa(n)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		p.Err = errors.Join(p.Err, errors.New("gone from by-hash before it could be moved"))
		return
	case err != nil:
		p.Err = errors.Join(p.Err, fmt.Errorf("moving it to %s: %w", QuarantineDir, err))
		return
	}
	var moved unix.Stat_t
	if st.Ino != 0 && unix.Fstatat(q.qdir, name, &moved, unix.AT_SYMLINK_NOFOLLOW) == nil && (moved.Dev != st.Dev || moved.Ino != st.Ino) {
		// Not the file checked: a copy wrote the blob again meanwhile.
		if unix.Renameat2(q.qdir, name, q.byHash, BlobPath(p.ID), unix.RENAME_NOREPLACE) == nil {
			q.log.Info("blob written again while being checked; left in place", "blob", p.ID)
			p.Actual += " (written again meanwhile: left in place)"
			p.rewritten = true
			return
		}
	}
	p.Quarantine = QuarantineDir + "/" + name
}

// reason is what quarantine_reason records.
func (p *BlobProblem) reason() string {
	var s string
	switch p.Problem {
	case BlobMismatch:
		s = "content hashes to " + p.Actual
	case BlobWrongSize:
		s = fmt.Sprintf("wrong size: %d bytes expected, %d found", p.Size, p.Found)
	case BlobMissing:
		s = "missing: no file at " + ByHashDir + "/" + BlobPath(p.ID)
	default:
		s = p.Problem + ": " + fmt.Sprint(p.Err)
	}
	if p.Quarantine != "" {
		s += "; moved to " + p.Quarantine
	} else if p.Problem != BlobMissing && p.Err != nil {
		s += "; not moved: " + p.Err.Error()
	}
	return time.Now().UTC().Format(time.RFC3339) + " " + s
}

// markQuarantined marks the blobs and puts every inode naming one of them
// back to pending, in one transaction under the exclusive quarantine lock
// (batch commits hold it shared): a commit either precedes it, and its
// inodes are reset, or follows it, and sees the mark.
func markQuarantined(ctx context.Context, db *pgxpool.Pool, probs []*BlobProblem) error {
	var ids, reasons []string
	byID := map[string]*BlobProblem{}
	for _, p := range probs {
		if p.rewritten {
			continue
		}
		ids, reasons = append(ids, p.ID), append(reasons, p.reason())
		byID[p.ID] = p
	}
	if len(ids) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, quarantineLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE blobs b SET quarantined_at = now(), quarantine_reason = u.reason
			FROM unnest($1::text[], $2::text[]) AS u(id, reason)
			WHERE b.blobid = u.id AND b.quarantined_at IS NULL`, ids, reasons); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH r AS (
				UPDATE inode SET copied = false, status = 'pending', claimed_by = NULL, claimed_at = NULL,
					processed_at = NULL, by_hash_created = NULL, error_type = NULL
				WHERE blobid = ANY($1) AND copied AND status = 'success' AND claimed_by IS NULL
				RETURNING blobid)
			SELECT blobid, count(*) FROM r GROUP BY 1`, ids)
		if err != nil {
			return err
		}
		counts := map[string]int64{}
		for rows.Next() {
			var id string
			var n int64
			if err := rows.Scan(&id, &n); err != nil {
				return err
			}
			counts[id] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			byID[id].Inodes, byID[id].Marked = counts[id], true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("marking %d blobs quarantined: %w", len(ids), err)
	}
	return nil
}

// checkBlob checks one blob: a regular file of the catalogued size whose
// content hashes to its name, mode 0644. st gets the file's stat.
func checkBlob(dir int, id string, size int64, buf []byte, h *blake3.Hasher, st *unix.Stat_t) (int64, *BlobProblem) {
	prob := func(kind, actual string, err error) *BlobProblem {
		return &BlobProblem{ID: id, Size: size, Problem: kind, Actual: actual, Err: err}
	}
	if len(id) != 64 {
		return 0, prob(BlobMismatch, "", errors.New("blob id is not 64 hex characters"))
	}
	// O_NONBLOCK: a FIFO at a blob's name must not hang the check.
	fd, err := unix.Openat(dir, BlobPath(id), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, prob(BlobMissing, "", err)
	}
	if err != nil {
		return 0, prob(BlobUnreadable, "", err)
	}
	f := os.NewFile(uintptr(fd), id)
	defer f.Close()
	if err := unix.Fstat(fd, st); err != nil {
		return 0, prob(BlobUnreadable, "", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, prob(BlobUnreadable, fmt.Sprintf("not a regular file (mode %o)", st.Mode), errors.New("not a regular file"))
	}
	wrongSize := func(found int64) *BlobProblem {
		p := prob(BlobWrongSize, fmt.Sprintf("%d bytes expected, %d found", size, found), nil)
		p.Found = found
		return p
	}
	if st.Size != size {
		// A truncation (or a file that grew) is a wrong size, whatever
		// the content would hash to: no need to read it.
		return 0, wrongSize(st.Size)
	}
	h.Reset()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf) // hide WriterTo: use buf
	if err != nil {
		return n, prob(BlobUnreadable, "", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	switch {
	case n != size:
		return n, wrongSize(n)
	case sum != id:
		return n, prob(BlobMismatch, sum, nil)
	case st.Mode&0o7777 != 0o644:
		return n, prob(BlobBadMode, fmt.Sprintf("mode %o", st.Mode&0o7777), nil)
	}
	return n, nil
}

// maxAffectedMedia bounds the media listed in a report.
const maxAffectedMedia = 100

// affected fills the report's quarantine summary: how many blobs await a
// copy, and the media (with a few paths each) whose inodes name one of them
// or one of the blobs that failed in this verification.
func affected(ctx context.Context, db *pgxpool.Pool, failed []string, nPaths int, rep *VerifyReport) error {
	rows, err := db.Query(ctx, `SELECT blobid FROM blobs WHERE quarantined_at IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("listing quarantined blobs: %w", err)
	}
	waiting, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing quarantined blobs: %w", err)
	}
	rep.Awaiting = int64(len(waiting))
	ids := append(slices.Clone(failed), waiting...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return nil
	}
	rows, err = db.Query(ctx, `
		SELECT i.medium_hash, coalesce(m.medium_human, ''), coalesce(m.image_path, ''), coalesce(m.archive_path, ''),
			count(*), coalesce(sum(i.size), 0)::bigint, count(*) FILTER (WHERE NOT i.copied)
		FROM inode i JOIN unnest($1::text[]) AS q(blobid) ON i.blobid = q.blobid
			LEFT JOIN medium m ON m.medium_hash = i.medium_hash
		GROUP BY 1, 2, 3, 4 ORDER BY 1`, ids)
	if err != nil {
		return fmt.Errorf("listing the media of failed blobs: %w", err)
	}
	var media []AffectedMedium
	for rows.Next() {
		var m AffectedMedium
		if err := rows.Scan(&m.Medium, &m.Human, &m.ImagePath, &m.ArchivePath, &m.Inodes, &m.Bytes, &m.Pending); err != nil {
			rows.Close()
			return fmt.Errorf("listing the media of failed blobs: %w", err)
		}
		rep.AffectedMedia++
		if len(media) < maxAffectedMedia {
			media = append(media, m)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing the media of failed blobs: %w", err)
	}
	for i := range media {
		m := &media[i]
		rows, err := db.Query(ctx, `
			SELECT p.path FROM path p JOIN inode i USING (medium_hash, dev, ino)
				JOIN unnest($2::text[]) AS q(blobid) ON i.blobid = q.blobid
			WHERE p.medium_hash = $1 AND p.exclude_reason IS NULL
			ORDER BY p.path LIMIT $3`, m.Medium, ids, nPaths)
		if err != nil {
			return fmt.Errorf("medium %s: listing the paths of failed blobs: %w", m.Medium, err)
		}
		paths, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return fmt.Errorf("medium %s: listing the paths of failed blobs: %w", m.Medium, err)
		}
		for _, p := range paths {
			m.Paths = append(m.Paths, string(p))
		}
	}
	rep.Affected = media
	return nil
}
