package copier

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// VerifyOptions choose which blobs VerifyStore re-hashes.
type VerifyOptions struct {
	StoreRoot string // default /data/cold
	// Sample > 0 checks that many blobs chosen at random; Oldest > 0 checks
	// that many, least recently checked (never checked) first. Neither: all.
	Sample int
	Oldest int
	// Workers hash in parallel (default 2).
	Workers int
	// OnProblem is called for every blob that fails (from one goroutine).
	OnProblem func(BlobProblem)
	// Progress is called after every checked blob (from one goroutine).
	Progress func(VerifyReport)
	Logger   *slog.Logger
}

// Blob problems found by VerifyStore.
const (
	BlobMissing    = "missing"    // no file at by-hash/AA/BB/<id>
	BlobMismatch   = "mismatch"   // the content does not hash to the name
	BlobWrongSize  = "size"       // the file's size differs from blobs.size
	BlobUnreadable = "unreadable" // the file could not be read
	BlobBadMode    = "mode"       // content good, but not a 0644 regular file
)

// BlobProblem is a blob that failed verification.
type BlobProblem struct {
	ID      string
	Size    int64  // blobs.size
	Problem string // one of the Blob* constants
	Actual  string // the content's BLAKE3 (mismatch), or detail
	Err     error
}

// VerifyReport summarises a verification.
type VerifyReport struct {
	Checked, OK                                int64
	Missing, Mismatched, WrongSize, Unreadable int64
	BadMode                                    int64
	Bytes                                      int64         // bytes re-hashed
	Problems                                   []BlobProblem // the first 1000
	Elapsed                                    time.Duration
}

// Failed reports whether any blob failed.
func (r VerifyReport) Failed() bool {
	return r.Missing+r.Mismatched+r.WrongSize+r.Unreadable+r.BadMode > 0
}

// VerifyStore re-reads blobs listed in the catalog, re-hashes their content
// with BLAKE3 and compares it with their names and sizes — a content check,
// not an existence check. Blobs that pass get blobs.last_checked = now().
func VerifyStore(ctx context.Context, db *pgxpool.Pool, opts VerifyOptions) (VerifyReport, error) {
	t0 := time.Now()
	if opts.StoreRoot == "" {
		opts.StoreRoot = DefaultStore
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
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

	sql := `SELECT blobid, size FROM blobs ORDER BY blobid`
	var args []any
	switch {
	case opts.Sample > 0:
		sql, args = `SELECT blobid, size FROM blobs ORDER BY random() LIMIT $1`, []any{opts.Sample}
	case opts.Oldest > 0:
		sql, args = `SELECT blobid, size FROM blobs ORDER BY last_checked NULLS FIRST, blobid LIMIT $1`, []any{opts.Oldest}
	}

	type job struct {
		id   string
		size int64
	}
	type result struct {
		job
		bytes int64
		prob  *BlobProblem
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
				n, p := checkBlob(dir, j.id, j.size, buf, h)
				results <- result{job: j, bytes: n, prob: p}
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
	var upErr error
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
			switch res.prob.Problem {
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
			if len(rep.Problems) < 1000 {
				rep.Problems = append(rep.Problems, *res.prob)
			}
			log.Warn("blob failed verification", "blob", res.id, "problem", res.prob.Problem, "actual", res.prob.Actual, "err", res.prob.Err)
			if opts.OnProblem != nil {
				opts.OnProblem(*res.prob)
			}
		}
		if opts.Progress != nil {
			rep.Elapsed = time.Since(t0)
			opts.Progress(rep)
		}
	}
	if upErr == nil {
		upErr = flush()
	}
	rep.Elapsed = time.Since(t0)
	if listErr != nil {
		return rep, fmt.Errorf("store %s: listing blobs: %w", root, listErr)
	}
	if upErr != nil {
		return rep, fmt.Errorf("store %s: %w", root, upErr)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("store %s: verification interrupted: %w", root, err)
	}
	log.Info("store verified", "store", root, "checked", rep.Checked, "ok", rep.OK, "missing", rep.Missing,
		"mismatched", rep.Mismatched, "wrong_size", rep.WrongSize, "unreadable", rep.Unreadable, "bad_mode", rep.BadMode,
		"bytes", rep.Bytes, "seconds", rep.Elapsed.Seconds())
	return rep, nil
}

func checkBlob(dir int, id string, size int64, buf []byte, h *blake3.Hasher) (int64, *BlobProblem) {
	prob := func(kind, actual string, err error) *BlobProblem {
		return &BlobProblem{ID: id, Size: size, Problem: kind, Actual: actual, Err: err}
	}
	if len(id) != 64 {
		return 0, prob(BlobMismatch, "", errors.New("blob id is not 64 hex characters"))
	}
	fd, err := unix.Openat(dir, BlobPath(id), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, prob(BlobMissing, "", err)
	}
	if err != nil {
		return 0, prob(BlobUnreadable, "", err)
	}
	f := os.NewFile(uintptr(fd), id)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, prob(BlobUnreadable, "", err)
	}
	h.Reset()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf) // hide WriterTo: use buf
	if err != nil {
		return n, prob(BlobUnreadable, "", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	switch {
	case sum != id:
		return n, prob(BlobMismatch, sum, nil)
	case n != size:
		return n, prob(BlobWrongSize, fmt.Sprintf("%d bytes", n), nil)
	case st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o7777 != 0o644:
		return n, prob(BlobBadMode, fmt.Sprintf("mode %o", st.Mode), nil)
	}
	return n, nil
}
