package archive

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// This file is the catalog side of archiving: the copy-complete check, the
// archived mark, and source removal. Seal and Verify do not need it.

// Querier runs catalog queries: *pgxpool.Pool, *pgx.Conn and pgx.Tx
// qualify.
type Querier = schema.Querier

// DB is what completion needs of the catalog: *pgxpool.Pool and *pgx.Conn
// qualify.
type DB interface {
	Querier
	schema.Beginner
}

// CompleteOptions tune Complete.
type CompleteOptions struct {
	// AllowIncomplete archives even while inodes are pending or claimed.
	AllowIncomplete bool
	// KeepSources leaves the source files in place.
	KeepSources bool
	// DBRetry is how long a catalog outage (a database restart, a lost
	// connection) is waited out at each catalog step: the checks before
	// sealing and the archived mark after it (0: 2 minutes; <0: no retry).
	// A seal is never redone for an outage.
	DBRetry time.Duration

	// Release is called before the first source is removed, with the
	// medium and the path of its image: it must take down every mount and
	// loop device that still reads the image, or fail (ntt-archiver and
	// ntt-pipeline pass loopdev.Release). If it fails, no source is
	// removed and the error says why. This package does not know mounts:
	// nil means the caller vouches that nothing reads the image.
	Release func(ctx context.Context, medium, image string) error
}

// catalogStep runs one catalog step of Complete, waiting out an outage.
func catalogStep(ctx context.Context, spec Spec, opts CompleteOptions, what string, op func() error) error {
	r := dbconn.Retry{Bound: opts.DBRetry, Logger: spec.Logger}
	return r.Do(ctx, what, op)
}

// ErrImageBusy: the image is still mounted or attached, so the sources
// were kept although the archive is sealed and marked.
var ErrImageBusy = errors.New("image in use, sources kept")

// removeSources is the removal step of Complete: release the image (see
// CompleteOptions.Release), then remove the sources.
func removeSources(ctx context.Context, h medium.Hash, res *Result, spec Spec, opts CompleteOptions) error {
	if opts.Release != nil {
		// The image's own path, or where it was if an earlier run removed
		// it already (a loop may still read the deleted file).
		image := ""
		for _, m := range res.Members {
			if m.Name == h.ImageFileName() {
				image = m.Source
			}
		}
		if image == "" && len(spec.ImagesDirs) > 0 {
			image = filepath.Join(spec.ImagesDirs[0], h.ImageFileName())
		}
		if err := opts.Release(ctx, string(h), image); err != nil {
			return fmt.Errorf("%w; %w (archive %s is sealed and marked; run again once the image is unmounted)", err, ErrImageBusy, res.Path)
		}
	}
	return RemoveSources(ctx, res, spec.Progress)
}

// CopyCounts are a medium's inodes by copy state.
type CopyCounts struct {
	Total, Pending, Claimed int64
}

// mediumState is the medium row's archive columns.
type mediumState struct {
	copyDone    *time.Time
	archivePath *string
}

func (s mediumState) markedAs(path string) bool {
	return s.copyDone != nil && s.archivePath != nil && *s.archivePath == path
}

func readMedium(ctx context.Context, q schema.Querier, h medium.Hash, lock bool) (mediumState, error) {
	sql := `SELECT copy_done, archive_path FROM medium WHERE medium_hash = $1`
	if lock {
		sql += ` FOR UPDATE`
	}
	var s mediumState
	err := q.QueryRow(ctx, sql, string(h)).Scan(&s.copyDone, &s.archivePath)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("medium %s: %w", h, ErrUnknownMedium)
	}
	if err != nil {
		return s, fmt.Errorf("medium %s: read catalog: %w", h, err)
	}
	return s, nil
}

// CopyStatus counts the medium's inodes that are not copied yet: pending
// (no claim) and claimed (a worker holds them). Rows that are copied,
// excluded, non-files, skipped or failed all have copied = true.
func CopyStatus(ctx context.Context, q Querier, hash string) (CopyCounts, error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return CopyCounts{}, err
	}
	var c CopyCounts
	err = q.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE NOT copied AND claimed_by IS NULL),
		count(*) FILTER (WHERE NOT copied AND claimed_by IS NOT NULL)
		FROM inode WHERE medium_hash = $1`, string(h)).Scan(&c.Total, &c.Pending, &c.Claimed)
	if err != nil {
		return c, fmt.Errorf("medium %s: count inodes: %w", h, err)
	}
	return c, nil
}

// CheckCopied returns an *IncompleteError (matching ErrCopyIncomplete) if
// any inode of the medium is pending or claimed, or if it has none at all.
func CheckCopied(ctx context.Context, q Querier, hash string) error {
	c, err := CopyStatus(ctx, q, hash)
	if err != nil {
		return err
	}
	if c.Total == 0 || c.Pending+c.Claimed > 0 {
		return &IncompleteError{Medium: hash, Total: c.Total, Pending: c.Pending, Claimed: c.Claimed}
	}
	return nil
}

// MarkArchived sets medium.copy_done and archive_path in one transaction,
// checking again, under the medium row's lock, that the copy is complete
// (unless allowIncomplete).
func MarkArchived(ctx context.Context, db DB, hash, archivePath string, allowIncomplete bool) error {
	h, err := medium.Parse(hash)
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("medium %s: begin: %w", h, err)
	}
	defer tx.Rollback(ctx)
	if _, err := readMedium(ctx, tx, h, true); err != nil {
		return err
	}
	if !allowIncomplete {
		if err := CheckCopied(ctx, tx, string(h)); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE medium SET copy_done = now(), archive_path = $2 WHERE medium_hash = $1`,
		string(h), archivePath); err != nil {
		return fmt.Errorf("medium %s: mark archived: %w", h, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("medium %s: mark archived: %w", h, err)
	}
	return nil
}

// Complete is Phase 4 with the catalog: check the copy is complete, seal
// and verify the archive, mark the medium archived, then remove the sources
// (unless KeepSources), each reported through spec.Progress.Removed.
//
// When the archive already exists (and spec.Force is not set), Complete
// finishes what a crashed run left: it verifies the archive, re-hashes the
// sources still present against its manifest, marks the catalog if needed
// and removes them. If there is nothing left to do it returns
// ErrAlreadyArchived.
func Complete(ctx context.Context, db DB, spec Spec, opts CompleteOptions) (*Result, error) {
	h, err := medium.Parse(spec.Medium)
	if err != nil {
		return nil, err
	}
	spec = spec.withDefaults()
	var state mediumState
	if err := catalogStep(ctx, spec, opts, "reading medium "+string(h), func() error {
		if err := schema.Require(ctx, db, schema.Version); err != nil {
			return fmt.Errorf("medium %s: catalog: %w", h, err)
		}
		state, err = readMedium(ctx, db, h, false)
		return err
	}); err != nil {
		return nil, err
	}
	final := filepath.Join(spec.Dest, h.ArchiveFileName())
	if _, err := os.Lstat(final); err == nil && !spec.Force {
		return resume(ctx, db, h, spec, opts, final, state)
	}
	if !opts.AllowIncomplete {
		if err := catalogStep(ctx, spec, opts, "checking the copy of medium "+string(h), func() error {
			return CheckCopied(ctx, db, string(h))
		}); err != nil {
			return nil, err
		}
	}
	res, err := Seal(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := catalogStep(ctx, spec, opts, "marking medium "+string(h)+" archived", func() error {
		return MarkArchived(ctx, db, string(h), res.Path, opts.AllowIncomplete)
	}); err != nil {
		return res, fmt.Errorf("archive %s is sealed but the catalog was not marked, sources kept "+
			"(run the archiver again: it verifies the archive and marks the catalog): %w", res.Path, err)
	}
	if !opts.KeepSources {
		err = removeSources(ctx, h, res, spec, opts)
	}
	return res, err
}

// resume handles an existing final archive.
func resume(ctx context.Context, db DB, h medium.Hash, spec Spec, opts CompleteOptions, final string, state mediumState) (*Result, error) {
	marked := state.markedAs(final)
	// Which sources are left: the members the archive lists (read from its
	// last frame, cheap; the full check comes below before anything is
	// done), or the requested names if that fails.
	var names []string
	if m, err := peekManifest(final); err == nil {
		for _, mm := range m.Members {
			names = append(names, mm.Name)
		}
	} else if names = spec.Members; names == nil {
		names = h.ImageMembers()
	}
	present := 0
	for _, name := range names {
		if _, err := openSourcePath(name, spec.ImagesDirs); err == nil {
			present++
		}
	}
	if marked && (present == 0 || opts.KeepSources) {
		return nil, fmt.Errorf("medium %s: %w: %s", h, ErrAlreadyArchived, final)
	}
	if !marked && !opts.AllowIncomplete {
		if err := catalogStep(ctx, spec, opts, "checking the copy of medium "+string(h), func() error {
			return CheckCopied(ctx, db, string(h))
		}); err != nil {
			return nil, err
		}
	}
	// Work is left: trust nothing about the archive before checking it.
	start := time.Now()
	man, err := VerifyWith(ctx, final, VerifyOptions{Concurrency: spec.Concurrency, Progress: spec.Progress})
	if err != nil {
		return nil, fmt.Errorf("medium %s: existing archive fails verification, nothing changed (force to seal again): %w", h, err)
	}
	if man.Medium != string(h) {
		return nil, fmt.Errorf("medium %s: existing archive %s holds medium %s", h, final, man.Medium)
	}
	st, err := os.Stat(final)
	if err != nil {
		return nil, err
	}
	res := &Result{Path: final, Size: st.Size(), Manifest: *man, VerifyTime: time.Since(start)}
	srcs, err := recheckSources(ctx, man, spec)
	if err != nil {
		return nil, err
	}
	res.Members = srcs
	if !marked {
		if err := catalogStep(ctx, spec, opts, "marking medium "+string(h)+" archived", func() error {
			return MarkArchived(ctx, db, string(h), final, opts.AllowIncomplete)
		}); err != nil {
			return res, err
		}
	}
	if !opts.KeepSources {
		err = removeSources(ctx, h, res, spec, opts)
	}
	res.Total = time.Since(start)
	return res, err
}

func openSourcePath(name string, dirs []string) (string, error) {
	s, err := openSource(name, dirs)
	if err != nil {
		return "", err
	}
	s.f.Close()
	return s.path, nil
}

// recheckSources re-hashes the sources still present against the
// manifest of an existing archive; any difference is an ErrSourceChanged
// and nothing is removed.
func recheckSources(ctx context.Context, man *Manifest, spec Spec) ([]SealedMember, error) {
	var out []SealedMember
	var srcs []*source
	defer func() { closeSources(srcs) }()
	var total int64
	for _, mm := range man.Members {
		s, err := openSource(mm.Name, spec.ImagesDirs)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, s)
		total += s.st.Size
	}
	p := spec.Progress
	p.Start(PhaseRecheck, total)
	buf := make([]byte, readChunk)
	hs := &hashSink{b3: blake3.New(), progress: p}
	for _, s := range srcs {
		mm := man.member(s.name)
		p.Member(PhaseRecheck, s.name, s.st.Size)
		if s.st.Size != mm.Size {
			return nil, fmt.Errorf("%w: %s is %d bytes, the archive's copy %d; nothing removed", ErrSourceChanged, s.path, s.st.Size, mm.Size)
		}
		hs.b3.Reset()
		if err := stream(ctx, s.f, s.st.Size, buf, hs); err != nil {
			return nil, fmt.Errorf("recheck %s: %w", s.path, err)
		}
		if got := hex.EncodeToString(hs.b3.Sum(nil)); got != mm.BLAKE3 {
			return nil, fmt.Errorf("%w: %s has BLAKE3 %s, the archive's copy %s; nothing removed", ErrSourceChanged, s.path, got, mm.BLAKE3)
		}
		if err := s.checkUnchanged(); err != nil {
			return nil, err
		}
		out = append(out, SealedMember{ManifestMember: *mm, Source: s.path, dev: s.st.Dev, ino: s.st.Ino, mtimeNs: s.mtimeNs()})
	}
	return out, nil
}

// hashSink hashes a stream (holes included, as zeros).
type hashSink struct {
	b3       *blake3.Hasher
	progress Progress
	done     int64
}

func (h *hashSink) data(p []byte) error {
	h.b3.Write(p)
	h.done += int64(len(p))
	h.progress.Bytes(PhaseRecheck, h.done)
	return nil
}

func (h *hashSink) zeros(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.b3.Write(zeros[:k])
		n -= k
		h.done += k
	}
	h.progress.Bytes(PhaseRecheck, h.done)
	return nil
}

// RemoveSources removes the source file of every member in res, each only
// if it is still the file that was sealed (same device, inode, size and
// mtime), reporting each through p.Removed and in res.Removed, and fsyncs
// the directories. The first failure stops it; the sources not yet removed
// stay.
func RemoveSources(ctx context.Context, res *Result, p Progress) error {
	p = progressOrNop(p)
	dirs := map[string]bool{}
	for _, m := range res.Members {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := removeIfSame(m)
		p.Removed(m.Source, err)
		if err != nil {
			return fmt.Errorf("remove source %s: %w", m.Source, err)
		}
		res.Removed = append(res.Removed, m.Source)
		dirs[filepath.Dir(m.Source)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

func removeIfSame(m SealedMember) error {
	var st unix.Stat_t
	if err := unix.Lstat(m.Source, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // already gone (an earlier run removed it)
		}
		return err
	}
	if st.Dev != m.dev || st.Ino != m.ino || st.Size != m.Size || st.Mtim.Nano() != m.mtimeNs {
		return fmt.Errorf("%w: it is no longer the file that was sealed; kept", ErrSourceChanged)
	}
	return os.Remove(m.Source)
}
