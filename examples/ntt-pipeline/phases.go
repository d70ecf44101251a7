package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loader"
	"github.com/HRDAG/ntt/loopdev"
)

// phaseError is a failed phase: its problem flag goes into medium.problems.
type phaseError struct {
	phase, flag string
	err         error
}

func (e *phaseError) Error() string { return fmt.Sprintf("%s failed: %v", e.phase, e.err) }
func (e *phaseError) Unwrap() error { return e.err }

func failed(phase, flag string, err error) error {
	return &phaseError{phase: phase, flag: flag, err: err}
}

// errNothingToDo ends a run whose medium is archived already.
var errNothingToDo = errors.New("nothing to do")

func (p *pipeline) run(ctx context.Context) int {
	h := p.c.hash
	start := time.Now()
	p.m = Metrics{Medium: string(h), Image: p.c.image, Started: start.UTC()}
	err := p.phases(ctx)
	p.failure = err
	var pe *phaseError
	failedPhase := errors.As(err, &pe) && ctx.Err() == nil
	if failedPhase {
		// Recorded before the unmount: on a dying disk the unmount may
		// wait on the medium, and the catalog must say why it stopped.
		if rerr := schema.MergeProblem(context.WithoutCancel(ctx), p.db, h, pe.flag, map[string]any{"error": pe.err.Error(), "phase": pe.phase}); rerr != nil {
			p.log.Error("could not record the problem", "medium", string(h), "flag", pe.flag, "error", rerr)
		}
	}
	// Unmount whatever happened: the runbook's rollback for every phase,
	// and the last step of a finished run. A rerun mounts again.
	p.unmount(ctx)
	p.m.Total = time.Since(start).Seconds()
	p.status.Clear()
	switch {
	case errors.Is(err, errNothingToDo):
		fmt.Fprintf(p.errw, "ntt-pipeline: medium %s is already archived (copy_done set): nothing to do\n", h)
		return 2
	case pe != nil && !failedPhase:
		// Interrupted (SIGINT/SIGTERM), not failed: nothing to record.
		fmt.Fprintf(p.errw, "ntt-pipeline: medium %s: interrupted during %s; a rerun resumes\n", h, pe.phase)
	case failedPhase:
		fmt.Fprintf(p.errw, "ntt-pipeline: medium %s: %v (recorded as %s in medium.problems)\n", h, pe, pe.flag)
	case err != nil:
		fmt.Fprintf(p.errw, "ntt-pipeline: medium %s: %v\n", h, err)
	}
	p.finishMetrics(context.WithoutCancel(ctx))
	p.m.writeTable(p.out)
	if werr := p.m.writeJSON(p.c.metrics); werr != nil {
		fmt.Fprintf(p.errw, "ntt-pipeline: writing metrics %s: %v\n", p.c.metrics, werr)
		return 1
	}
	fmt.Fprintf(p.out, "Metrics written to %s\n", p.c.metrics)
	if err != nil {
		return 1
	}
	return 0
}

// unmount takes the medium's mounts and loop devices off, once; a second
// call waits for the first to finish.
func (p *pipeline) unmount(ctx context.Context) {
	p.unmountOnce.Do(func() {
		if p.reader == readImage {
			return // nothing was mounted, and a non-root run could not lock the mount root
		}
		h := string(p.c.hash)
		if rep, err := loopdev.Unmount(context.WithoutCancel(ctx), h, p.c.root, &loopdev.UnmountOptions{Image: p.c.image, Logger: p.log}); err != nil {
			p.log.Warn("unmount failed", "medium", h, "error", err)
		} else if rep != nil {
			p.log.Debug("unmounted", "medium", h)
		}
	})
}

// phase runs fn as the named phase, timing it into the metrics.
func (p *pipeline) phase(name string, fn func() (note string, err error)) error {
	p.log.Info("phase started", "phase", name, "medium", string(p.c.hash))
	t := time.Now()
	note, err := fn()
	pm := PhaseMetric{Name: name, Outcome: "ran", Seconds: time.Since(t).Seconds(), Note: note}
	if err != nil {
		pm.Outcome = "failed"
		pm.Note = err.Error()
	} else {
		p.resolveProblems(context.Background(), phaseCleared[name]...)
	}
	p.m.Phases = append(p.m.Phases, pm)
	p.status.Clear()
	p.log.Info("phase finished", "phase", name, "outcome", pm.Outcome, "seconds", pm.Seconds)
	return err
}

func (p *pipeline) skip(name, why string) {
	p.m.Phases = append(p.m.Phases, PhaseMetric{Name: name, Outcome: "skipped", Note: why})
	p.log.Info("phase skipped", "phase", name, "why", why)
}

func (p *pipeline) phases(ctx context.Context) error {
	h := p.c.hash
	var st catalogState
	if err := p.phase("preflight", func() (string, error) {
		var err error
		st, err = p.preflight(ctx)
		return "", err
	}); err != nil {
		return err
	}
	if st.CopyDone != nil {
		return errNothingToDo
	}
	reader, err := p.chooseReader(ctx, st.EnumDone != nil)
	if err != nil {
		return failed("preflight", "preflight_failed", err)
	}
	p.reader, p.m.Reader = reader, reader
	if err := p.recordReader(ctx); err != nil {
		return err
	}

	var layout *loopdev.Layout
	mount := func() error {
		if layout != nil || p.reader == readImage {
			return nil
		}
		var err error
		// loopdev.Mount reaps NTT's stale loops first, exactly as
		// ntt-mount-helper mount does (the runbook's Test 1).
		layout, err = loopdev.Mount(ctx, loopdev.MountSpec{Medium: string(h), Image: p.c.image, Root: p.c.root, ImagesDirs: []string{p.c.images},
			Timeout: p.c.mountTimeout, Logger: p.log})
		p.recordLayout(ctx, layout)
		if err != nil {
			return failed("mount", "mount_failed", err)
		}
		return nil
	}

	// Phases 1 and 2 are one unit for resuming: enum_done is set by the
	// load's commit, so a medium without it is enumerated and loaded again.
	raw := filepath.Join(p.c.work, h.RawFileName())
	if st.EnumDone == nil {
		if p.reader == readImage {
			p.skip("mount", "reading the image (--read image)")
		} else if err := p.phase("mount", func() (string, error) { return "", mount() }); err != nil {
			return err
		}
		var records int64
		if err := p.phase("enumerate", func() (string, error) {
			var n int64
			var err error
			if p.reader == readImage {
				n, err = p.enumerateImage(ctx, raw)
			} else {
				n, err = p.enumerate(ctx, layout, raw)
			}
			records = n
			return fmt.Sprintf("%d records", n), err
		}); err != nil {
			os.Remove(raw) // the runbook's rollback: no partial raw file
			return err
		}
		if err := p.phase("load", func() (string, error) { return p.load(ctx, raw, records) }); err != nil {
			return err // the raw file stays for investigation; the load changed nothing
		}
	} else {
		p.skip("enumerate", "enum_done is set")
		p.skip("load", "enum_done is set")
	}

	if st, err := readCatalogState(ctx, p.db, h); err != nil {
		return err
	} else if st.Pending+st.Claimed > 0 {
		if layout == nil && p.reader != readImage {
			if err := p.phase("mount", func() (string, error) { return "", mount() }); err != nil {
				return err
			}
		}
		if err := p.phase("copy", func() (string, error) { return p.copy(ctx) }); err != nil {
			return err
		}
		// The archive reads the image, not the mount: unmount meanwhile
		// (the kernel takes a second or more to evict a large medium's
		// inodes). run waits for it.
		//
		// Sealing the image beside the copy (placing the archive only if
		// the copy completes) was tried on 2026-12-06, bench/pipeline.sh
		// alternating on 2 cores: 30.59 and 36.54 s against 31.31 and
		// 32.23 s in sequence. The copy and the seal are both bound by
		// CPU there, so the copy slowed by what the archive phase saved.
		// With more cores than the copy uses it may pay; not measured.
		go p.unmount(ctx)
	} else {
		p.skip("copy", "no pending or claimed inode")
	}
	return p.phase("archive", func() (string, error) { return p.archive(ctx) })
}

func (p *pipeline) preflight(ctx context.Context) (catalogState, error) {
	h := p.c.hash
	st, err := readCatalogState(ctx, p.db, h)
	if err != nil {
		return st, err
	}
	p.log.Info("pre-flight: catalog", "medium", string(h), "exists", st.Exists, "enum_done", st.EnumDone, "copy_done", st.CopyDone, "problems", st.Problems,
		"inodes", st.Inodes, "done", st.Done, "pending", st.Pending, "claimed", st.Claimed)
	if st.CopyDone != nil {
		return st, nil
	}
	procs, err := findDdrescue("/proc", p.c.image, h)
	if err != nil {
		return st, failed("preflight", "preflight_failed", err)
	}
	if len(procs) > 0 {
		return st, failed("preflight", "ddrescue_running", fmt.Errorf("ddrescue (pid %d: %s) is still writing this image; wait for it to finish", procs[0].PID, procs[0].Cmdline))
	}
	p.resolveProblems(ctx, preflightCleared...)
	fi, err := os.Stat(p.c.image)
	if err != nil {
		return st, failed("preflight", "image_missing", err)
	}
	// The store and the archive destination must exist: an absent
	// cold-storage mount must not turn into directories on the wrong disk.
	for _, d := range []string{p.c.store, p.c.dest} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return st, fmt.Errorf("%s is not a directory (create it, or mount the storage it belongs on): %v", d, err)
		}
	}
	p.m.ImageBytes = fi.Size()
	mapPath := filepath.Join(p.c.images, h.MapFileName())
	rep, _, err := diagnose.HealthOf(mapPath)
	if err != nil {
		return st, failed("preflight", "mapfile_unreadable", err)
	}
	p.m.Health, p.m.RescuedPct, p.m.MapfilePresent = string(rep.Health), rep.RescuedPct, rep.Present
	p.resolveProblems(ctx, mapfileCleared(rep)...)
	p.log.Info("pre-flight: mapfile", "mapfile", mapPath, "present", rep.Present, "health", rep.Health, "rescued_pct", rep.RescuedPct, "bad_ranges", rep.BadRanges)
	// Health is recomputed on every run (a stale value must not survive).
	var health any
	if rep.Present {
		health = string(rep.Health)
	}
	if _, err := p.db.Exec(ctx, `INSERT INTO medium (medium_hash, health, image_path) VALUES ($1, $2, $3)
		ON CONFLICT (medium_hash) DO UPDATE SET health = excluded.health, image_path = excluded.image_path`,
		string(h), health, p.c.image); err != nil {
		return st, fmt.Errorf("recording the medium's health: %w", err)
	}
	if l, err := loopdev.Status(string(h), p.c.root); err == nil && l != nil {
		p.log.Info("pre-flight: already mounted", "mount", l.Mount)
	} else {
		p.log.Info("pre-flight: not mounted", "medium", string(h))
	}
	return st, nil
}

func (p *pipeline) enumerate(ctx context.Context, layout *loopdev.Layout, raw string) (int64, error) {
	enter, err := enumerate.PartitionMounts(layout.Mount)
	if err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	if err := os.MkdirAll(p.c.work, 0o755); err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	tmp, err := os.CreateTemp(p.c.work, "."+p.c.hash.Short()+".raw-*")
	if err != nil {
		return 0, failed("enumerate", "enum_failed", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var unreadable []string
	res, err := enumerate.Walk(ctx, []string{layout.Mount}, enumerate.Options{
		Ignore: p.ignore, EnterMounts: enter, StallTimeout: p.c.stall, Logger: p.log,
		Progress: func(pr enumerate.Progress) {
			p.status.Set("enumerate: %s entries (%s/s)", cli.SI(float64(pr.Entries)), cli.SI(pr.Rate))
		},
		OnError: func(e *enumerate.EntryError) error {
			if len(unreadable) < 10 {
				unreadable = append(unreadable, e.Error())
			}
			p.log.Warn("unreadable entry", "error", e)
			return nil
		},
	}, tmp)
	p.m.EnumRecords, p.m.EnumSeconds = res.Records, res.Elapsed.Seconds()
	if res.Elapsed > 0 {
		p.m.EnumRate = float64(res.Records) / res.Elapsed.Seconds()
	}
	err = commitRaw(tmp, raw, res.Records, err)
	if err != nil {
		return res.Records, failed("enumerate", "enum_failed", err)
	}
	if res.Errors > 0 {
		// Unreadable directories are not a failed enumeration (the rest of
		// the medium is catalogued), but the medium must say so.
		schema.MergeProblem(ctx, p.db, p.c.hash, "enum_unreadable_entries", map[string]any{"count": res.Errors, "first": unreadable})
	}
	p.log.Info("✓ Enumeration complete", "records", res.Records, "file", raw, "errors", res.Errors)
	return res.Records, nil
}

func (p *pipeline) load(ctx context.Context, raw string, records int64) (string, error) {
	f, err := os.Open(raw)
	if err != nil {
		return "", failed("load", "load_failed", err)
	}
	defer f.Close()
	opts := loader.Options{ExpectedRecords: records, ImagePath: p.c.image, Logger: p.log,
		Progress: loaderProgress{p.status}}
	opts.Ignore = p.ignore
	st, err := loader.Load(ctx, p.db, string(p.c.hash), f, opts)
	if err != nil {
		return "", failed("load", "load_failed", err)
	}
	p.m.LoadSeconds = st.Total.Seconds()
	p.m.DedupeSeconds = st.Phase("dedupe").Seconds()
	p.m.Inodes, p.m.Paths = st.Inodes, st.Paths
	return fmt.Sprintf("%d inodes, %d paths, %d excluded, %d non-files", st.Inodes, st.Paths, st.ExcludedPaths, st.NonFiles), nil
}

func (p *pipeline) copy(ctx context.Context) (string, error) {
	opts := copier.Options{Medium: string(p.c.hash), Workers: p.c.workers, StoreRoot: p.c.store, MountRoot: p.c.root, Logger: p.log,
		Progress: &copyProgress{status: p.status, start: time.Now()}}
	if p.reader == readImage {
		opts.Image, opts.CodePage = p.c.image, p.c.codePage
	}
	// After the mount: the policy finds the image's loop devices now.
	pol, err := diagpolicy.New(diagpolicy.Options{Medium: string(p.c.hash), Image: p.c.image,
		Mapfile: filepath.Join(p.c.images, p.c.hash.MapFileName())})
	if err != nil {
		return "", failed("copy", "copy_failed", err)
	}
	defer pol.Close()
	if kerr := pol.KernelLogErr(); kerr != nil {
		p.log.Warn("kernel log unavailable: the checkpoint goes without it", "error", kerr)
	}
	// Files copied by an earlier run without the mapfile get their damage
	// checked now (or, still without one, damage_unchecked is recorded).
	mapPath := filepath.Join(p.c.images, p.c.hash.MapFileName())
	src := diagpolicy.Source{Image: p.c.image, Mapfile: mapPath, Looked: []string{mapPath}}
	if _, err := pol.PrepareDamage(ctx, p.db, src, p.c.root, p.log); err != nil {
		return "", failed("copy", "copy_failed", err)
	}
	opts.Policy, opts.Damage = pol, pol.DamageMapper()
	st, err := copier.Run(ctx, p.db, opts)
	p.m.CopySeconds = st.Elapsed.Seconds()
	p.m.FilesCopied, p.m.FilesDeduped = st.Copied, st.Deduped
	p.m.BytesRead, p.m.BytesWritten = st.BytesRead, st.BytesWritten
	if s := st.Elapsed.Seconds(); s > 0 {
		p.m.CopyMBps = float64(st.BytesRead) / 1e6 / s
		p.m.CopyFilesPerSec = float64(st.Processed) / s
	}
	if st.Copied > 0 {
		p.m.DedupRatePct = 100 * float64(st.Deduped) / float64(st.Copied)
	}
	if err != nil {
		return "", failed("copy", "copy_failed", err)
	}
	note := fmt.Sprintf("%d copied (%d new, %d deduplicated), %d skipped, %d gave up", st.Copied, st.New, st.Deduped, st.Skipped, st.GaveUp)
	if !st.Complete {
		return note, failed("copy", "copy_incomplete", fmt.Errorf("inodes are still pending or claimed after the run (%s); rerun to retry them", note))
	}
	return note, nil
}

func (p *pipeline) archive(ctx context.Context) (string, error) {
	res, err := archive.Complete(ctx, p.db, archive.Spec{Medium: string(p.c.hash), ImagesDirs: []string{p.c.images}, Dest: p.c.dest,
		Logger: p.log, Progress: archiveProgress{status: p.status, start: time.Now()}},
		archive.CompleteOptions{KeepSources: p.c.keepSources, Release: func(ctx context.Context, medium, image string) error {
			// The unmount started after the copy must be done; Release then
			// checks that nothing reads the image any more.
			p.unmount(ctx)
			_, err := loopdev.Release(ctx, loopdev.ReleaseSpec{Medium: medium, Image: image, Root: p.c.root, Logger: p.log})
			return err
		}})
	if errors.Is(err, archive.ErrAlreadyArchived) {
		return "already archived", nil
	}
	if err != nil {
		return "", failed("archive", "archive_failed", err)
	}
	p.m.ArchivePath, p.m.ArchiveBytes = res.Path, res.Size
	p.m.ArchiveSeconds = res.Total.Seconds()
	if p.m.ImageBytes > 0 {
		p.m.ArchiveRatio = float64(res.Size) / float64(p.m.ImageBytes)
	}
	return fmt.Sprintf("%d members, %d sources removed", len(res.Members), len(res.Removed)), nil
}

// finishMetrics fills what the catalog knows best (a checkpoint is an
// event that carries its checks; an auto-skip is an event whose action is
// skip): totals over every run
// of this medium, so a resumed run reports the whole medium.
func (p *pipeline) finishMetrics(ctx context.Context) {
	h := string(p.c.hash)
	p.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE checks IS NOT NULL), count(*) FILTER (WHERE action = 'skip')
		FROM diagnostic_event WHERE medium_hash = $1`, h).Scan(&p.m.Checkpoints, &p.m.AutoSkips)
	p.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('failed_retryable', 'failed_permanent')),
		count(*), (SELECT count(*) FROM path WHERE medium_hash = $1)
		FROM inode WHERE medium_hash = $1`, h).Scan(&p.m.Failed, &p.m.Inodes, &p.m.Paths)
	var archivePath *string
	var problems []byte
	p.db.QueryRow(ctx, `SELECT archive_path, problems FROM medium WHERE medium_hash = $1`, h).Scan(&archivePath, &problems)
	p.m.Layout = layoutProblems(problems)
	if archivePath != nil && p.m.ArchivePath == "" {
		p.m.ArchivePath = *archivePath
		if fi, err := os.Stat(*archivePath); err == nil {
			p.m.ArchiveBytes = fi.Size()
		}
	}
}

// commitRaw makes the walk's temporary raw file the medium's raw file once
// the walk succeeded with at least one record: synced, closed, renamed.
func commitRaw(tmp *os.File, raw string, records int64, err error) error {
	if err == nil && records == 0 {
		err = errors.New("the walk found no entries")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), raw)
	}
	return err
}
