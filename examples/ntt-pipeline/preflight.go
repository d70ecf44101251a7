package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ddrescueProc is a running ddrescue whose command line names the image.
type ddrescueProc struct {
	PID     int
	Cmdline string
}

// findDdrescue scans procRoot (/proc) for a ddrescue process whose
// command line mentions the image's file name or the medium hash: the
// seed's `ps aux | grep ddrescue | grep $HASH`, without parsing ps.
func findDdrescue(procRoot, image string, h medium.Hash) ([]ddrescueProc, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(image)
	var found []ddrescueProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if !strings.Contains(filepath.Base(string(args[0])), "ddrescue") {
			continue
		}
		for _, a := range args[1:] {
			if bytes.Contains(a, []byte(base)) || bytes.Contains(a, []byte(h)) {
				found = append(found, ddrescueProc{PID: pid, Cmdline: string(bytes.Join(args, []byte(" ")))})
				break
			}
		}
	}
	return found, nil
}

// catalogState is what the catalog says of a medium: the resume decisions
// of every phase are taken from it, never guessed from files.
type catalogState struct {
	Exists      bool
	EnumDone    *time.Time
	CopyDone    *time.Time
	ArchivePath *string
	Problems    map[string]any
	Health      *string
	Inodes      int64
	Done        int64
	Pending     int64
	Claimed     int64
}

func readCatalogState(ctx context.Context, db *pgxpool.Pool, h medium.Hash) (catalogState, error) {
	var s catalogState
	err := db.QueryRow(ctx, `SELECT enum_done, copy_done, archive_path, problems, health FROM medium WHERE medium_hash = $1`, string(h)).
		Scan(&s.EnumDone, &s.CopyDone, &s.ArchivePath, &s.Problems, &s.Health)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("medium %s: reading its catalog state: %w", h, err)
	}
	s.Exists = true
	// The seed's monitoring query.
	err = db.QueryRow(ctx, `
		SELECT count(*),
		       count(*) FILTER (WHERE copied = true),
		       count(*) FILTER (WHERE copied = false AND claimed_by IS NULL),
		       count(*) FILTER (WHERE copied = false AND claimed_by IS NOT NULL)
		FROM inode WHERE medium_hash = $1`, string(h)).Scan(&s.Inodes, &s.Done, &s.Pending, &s.Claimed)
	if err != nil {
		return s, fmt.Errorf("medium %s: counting its inodes: %w", h, err)
	}
	return s, nil
}

// preflightCleared are the flags of an earlier pre-flight that one which
// found no ddrescue writing the image has shown gone (the ddrescue check
// is the first; "preflight_failed" was a failure to scan /proc).
var preflightCleared = []string{"ddrescue_running", "preflight_failed"}

// phaseCleared are the flags a phase records when it fails, resolved when
// it succeeds in a later run. enum_unreadable_entries is not among them: an
// enumeration that succeeds may still have found unreadable entries.
var phaseCleared = map[string][]string{
	"mount":     {"mount_failed"},
	"enumerate": {"enum_failed"},
	"load":      {"load_failed"},
	"copy":      {"copy_failed", "copy_incomplete"},
	"archive":   {"archive_failed"},
}

// mapfileCleared are the flags a readable mapfile (and, for
// unrescued_bytes, one with every byte rescued) shows gone; the image was
// found before the mapfile is read.
func mapfileCleared(rep diagnose.HealthReport) []string {
	flags := []string{"image_missing", "mapfile_unreadable"}
	if rep.Present && rep.BadBytes == 0 {
		flags = append(flags, "unrescued_bytes")
	}
	return flags
}

// resolveProblems marks flags of earlier runs resolved in medium.problems
// (kept, with resolved_at) because this run has just seen their condition
// gone. Failing to mark them is not a reason to stop the run.
func (p *pipeline) resolveProblems(ctx context.Context, flags ...string) {
	h := p.c.hash
	got, err := schema.ResolveProblems(ctx, p.db, h, flags...)
	if err != nil {
		p.log.Warn("could not mark resolved problems", "medium", string(h), "flags", flags, "err", err.Error())
		return
	}
	if len(got) > 0 {
		p.log.Info("problems resolved", "medium", string(h), "flags", got)
	}
}
