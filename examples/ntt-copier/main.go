// Command ntt-copier copies a mounted medium's files into the content store
// (package copier): Phase 3 of the runbook,
//
//	sudo -E bin/ntt-copier --medium-hash $HASH --worker-id test-worker --batch-size 50 --limit 500
//
// plus `ntt-copier reset-failed` (failed_retryable rows back to pending),
// `ntt-copier verify-store` (re-hash blobs, quarantine damaged ones),
// `ntt-copier relink` (files whose content was stored again, without the
// medium) and `ntt-copier damage` (map the copied files onto the ddrescue
// mapfile).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5/pgxpool"
)

const usage = `Usage: ntt-copier --medium-hash HASH [options]
       ntt-copier reset-failed --medium-hash HASH [--error-type TYPE] [--include-permanent] [--apply]
       ntt-copier verify-store [--store DIR] [--sample N | --oldest N] [--workers N] [--report-only]
       ntt-copier relink --medium-hash HASH [--store DIR]
       ntt-copier damage --medium-hash HASH [--image FILE] [--images DIR]

Copy the pending files of the medium HASH, mounted at ROOT/HASH (partitions
at ROOT/HASH/pN) or read from its image (--read image: FAT, ISO 9660 …, in
user space, in the image's byte order), into the store: each file is read once, hashed (BLAKE3)
and stored as STORE/by-hash/AA/BB/<hash> unless that content is there
already; every path of it becomes a hardlink in STORE/archived/HASH/...
A read-only ext mount is read, where it may be, straight from its block
device (files up to 16 MiB, by their extents; the log says "reading files
from the block device" or why not; --kernel-read turns it off).
Files are taken in batches, so any number of copiers (processes, hosts)
can work on one medium at once. A batch of small files is held by a row
lock while it is copied (the monitoring query counts it as pending); a
batch of large files, or one cut by the batch's byte bound, is claimed
(claimed_by, renewed while it is copied).
A file that cannot be read is retried, checked at the checkpoint
("DIAGNOSTIC CHECKPOINT"), skipped when its data
lies beyond the end of the image ("SKIPPED ino=X reason=DIAGNOSTIC_SKIP:..."),
or, read from the image, in a structure that does not check out
(DIAGNOSTIC_SKIP:CORRUPT), or given up after the retry cap.

The image is the one named by --image, else the backing file of the loop
devices the medium is mounted from, else medium.image_path, else
IMAGES/HASH.img; the copier records it in medium.image_path. Its ddrescue
mapfile (HASH.map beside the image, else in IMAGES) gives the medium's
health (medium.health) and the damaged ranges of every file copied over
unrescued bytes (inode.damage: such files read as zeros there and are
stored as imaged). Without a mapfile, files are copied unchecked and the
problem damage_unchecked is recorded; the first run that finds the mapfile
checks the files already copied before it copies more, and marks the
problem resolved. Partitions the mount left out (truncated, skipped, not
mounted) and journals not replayed are warned about and recorded in
medium.problems.

Ctrl-C (SIGINT) or SIGTERM finishes the files being read, records the
batch, releases the other claims and exits 0; a second one exits at once
(the claims come back by themselves).

A catalog outage (a database restart, a lost connection) is waited out for
--db-retry (2m): the files being read are kept, the worker lock is taken
again, and the run goes on. A longer outage ends the run (exit 1); the next
run releases what it left claimed.

A medium whose source dies under the copy (its mount gone or unreadable, its
loop device or image cut short) ends the run at the first failure that
shows it (exit 1): the claims are released, source_lost is recorded in
medium.problems, and no file is marked failed for it. Remount the medium
and run the copier again.

damage maps every copied file of the medium onto the mapfile now, whether
or not a check is due, and records the damage found where none was
recorded (a recorded damage is never cleared). The medium must be mounted.
Exit status 1 when no mapfile is found.

reset-failed puts the medium's failed_retryable files (of one error type
with --error-type) back to pending, after the cause is fixed;
--include-permanent takes back failed_permanent ones too (auto-skipped or
unreadable: after the medium was re-imaged or remounted whole). Without
--apply it only shows what it would reset.

verify-store re-reads blobs and checks that their content hashes to their
name and their size is the catalogued one; --sample N checks N at random,
--oldest N the N least recently checked. A blob that is damaged, cut short,
missing or unreadable is quarantined: moved to STORE/quarantine/<hash>.<time>
(never deleted), marked in the catalog, and every file that named it goes
back to pending, so the next copy of a medium holding that content stores
it again (no copy dedupes against a quarantined blob). It lists the media
and paths affected and what to run next (for an archived medium whose image
is gone: which archive to restore it from). --report-only changes nothing.
Exit status 1 if any blob failed in this run.

relink records as copied again, without reading the medium, the files of
HASH that went back to pending when their blob was quarantined and whose
content a copy of another medium has stored again: their tree paths are
linked to the new blob. For a medium whose image is gone (archived). Exit
status 2 if there was nothing to relink.

Progress goes to stderr: a status line on a terminal (files, MB/s, ETA),
JSON log lines otherwise ("Batch completed" per batch). The summary goes to
stdout: a table on a terminal, one JSON object otherwise.

Database: --db URL, else $NTT_DB_URL, else libpq's PG* variables.
Exit status: 0 done (or interrupted cleanly); 1 error (also a lost source or
a catalog outage longer than --db-retry); 2 nothing to do; 3 done, but the
run gave up on some files (failed_retryable or failed_permanent: the summary
says how many, and reset-failed brings them back).

Options:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type config struct {
	db, hash, worker, store, root, image, errorType string
	images, read, codePage                          string
	workers, batch                                  int
	limit                                           int64
	lease, stall, dbRetry                           time.Duration
	dryRun, apply, permanent, verbose, reportOnly   bool
	kernelRead                                      bool
	sample, oldest                                  int
}

func run(args []string, stdout, stderr io.Writer) int {
	verb := "copy"
	if len(args) > 0 && (args[0] == "reset-failed" || args[0] == "verify-store" || args[0] == "relink" || args[0] == "damage") {
		verb, args = args[0], args[1:]
	}
	var c config
	fs := flag.NewFlagSet("ntt-copier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.db, "db", "", "catalog database `URL` (default $NTT_DB_URL, then libpq's PG* variables)")
	fs.StringVar(&c.hash, "medium-hash", "", "the medium to copy (its `HASH`)")
	fs.StringVar(&c.worker, "worker-id", "", "`ID` recorded in claimed_by; one process per id (default HOST-PID)")
	fs.IntVar(&c.workers, "workers", copier.DefaultWorkers, "at most `N` concurrent workers in this process; how many run is measured as the copy goes")
	fs.IntVar(&c.batch, "batch-size", copier.DefaultBatchSize, "inodes per claim and per catalog transaction (`N`)")
	fs.Int64Var(&c.limit, "limit", 0, "stop after `N` inodes (0: no limit)")
	fs.StringVar(&c.store, "store", copier.DefaultStore, "the content store `DIR` (must exist)")
	fs.StringVar(&c.root, "root", copier.DefaultMountRoot, "media are mounted at `DIR`/HASH")
	fs.DurationVar(&c.lease, "lease", copier.DefaultLease, "a claim not renewed for `D` may be taken by another worker")
	fs.DurationVar(&c.stall, "stall-timeout", copier.DefaultStallTimeout, "give up when a file makes no progress for `D`")
	fs.DurationVar(&c.dbRetry, "db-retry", dbconn.DefaultRetry, "wait out a catalog outage for up to `D` (0: do not)")
	fs.StringVar(&c.image, "image", "", "the medium's image `FILE` (default: the mounted medium's loop backing file, then medium.image_path, then IMAGES/HASH.img); its mapfile is HASH.map beside it; read from it with --read image")
	fs.StringVar(&c.images, "images", diagpolicy.DefaultImagesDir, "`DIR` of images and mapfiles (HASH.img, HASH.map), looked at when the mount and the catalog do not name the image")
	fs.StringVar(&c.read, "read", "auto", "where the files are read: `HOW` = mount (ROOT/HASH), image (the image file, in user space: no root, no mount), "+
		"or auto (the reader recorded for the medium, else image when --image is given and nothing is mounted at ROOT/HASH, else mount)")
	fs.StringVar(&c.codePage, "code-page", "", "code page of 8.3 FAT names when reading the image (default cp437)")
	fs.BoolVar(&c.kernelRead, "kernel-read", false, "read a mounted medium's files through the mount only, even where a read-only ext filesystem's could be read from its block device (see the copier's package doc)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "read and hash, but write nothing and claim nothing")
	fs.StringVar(&c.errorType, "error-type", "", "reset-failed: only rows of this error_type ("+strings.Join(copier.ErrorTypes, ", ")+")")
	fs.BoolVar(&c.apply, "apply", false, "reset-failed: do it (default: only show what would be reset)")
	fs.BoolVar(&c.permanent, "include-permanent", false, "reset-failed: take back failed_permanent rows too")
	fs.IntVar(&c.sample, "sample", 0, "verify-store: check `N` blobs chosen at random")
	fs.IntVar(&c.oldest, "oldest", 0, "verify-store: check the `N` least recently checked blobs")
	fs.BoolVar(&c.reportOnly, "report-only", false, "verify-store: report damaged blobs, quarantine nothing, reset no file")
	fs.BoolVar(&c.verbose, "v", false, "log debug events (every retry)")
	fs.Usage = func() {
		io.WriteString(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() error { return fs.Parse(args) }); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return failf(stderr, "unexpected argument %q; see --help.", fs.Arg(0))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		fmt.Fprintln(stderr, "ntt-copier: interrupted: finishing the files being read and releasing the other claims (again to exit at once).")
		cancel()
		if _, ok := <-sigs; ok {
			fmt.Fprintln(stderr, "ntt-copier: exiting at once; unfinished claims come back by themselves.")
			os.Exit(1)
		}
	}()

	workersSet := false
	fs.Visit(func(f *flag.Flag) { workersSet = workersSet || f.Name == "workers" })
	if verb == "verify-store" && !workersSet {
		c.workers = 1 // verify-store's own default: one reader besides the hasher
	}
	switch verb {
	case "reset-failed":
		return resetFailed(ctx, &c, stdout, stderr)
	case "verify-store":
		return verifyStore(ctx, &c, stdout, stderr)
	case "relink":
		return relink(ctx, &c, stdout, stderr)
	case "damage":
		return checkDamage(ctx, &c, stdout, stderr)
	}
	return copyMedium(ctx, &c, stdout, stderr)
}

func failf(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "ntt-copier: "+format+"\n", a...)
	return 1
}

// errText is err's message without a trailing period, for one sentence.
func errText(err error) string { return strings.TrimSuffix(err.Error(), ".") }

func copyMedium(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	if c.hash == "" {
		return failf(stderr, "--medium-hash is required; see --help.")
	}
	h, err := medium.Parse(c.hash)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if c.workers < 1 || c.workers > 256 {
		return failf(stderr, "--workers %d: want 1 to 256.", c.workers)
	}
	term := cli.IsTerminal(stderr)
	status := cli.NewStatus(stderr)
	log := cli.NewStatusLogger(stderr, status, c.verbose)
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: copier.PoolSize(c.workers), Logger: log, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()

	read, err := chooseReader(ctx, pool, h, c)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	src, pol, err := locate(ctx, pool, c, h, log)
	if err == nil && read == "image" && src.Image == "" {
		err = fmt.Errorf("medium %s: reading the image needs it: pass --image FILE (looked at %s)", h, strings.Join(src.Looked, ", "))
	}
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pol.Close()
	if err := pol.KernelLogErr(); err != nil {
		log.Warn("kernel log unavailable: checkpoints will not look at it", "err", err)
	}
	hr := pol.Health()
	log.Info("medium health", "medium", h, "health", hr.Health, "mapfile", hr.Mapfile, "rescued_pct", hr.RescuedPct,
		"image", src.Image, "image_from", src.From)
	log.Info("reader", "medium", h, "reader", read, "image", src.Image)
	if !c.dryRun {
		mountRoot := c.root
		if read == "image" {
			mountRoot = "" // nothing mounted: no file is mapped through the kernel
		}
		if err := prepare(ctx, pool, h, src, pol, mountRoot, log); err != nil {
			return failf(stderr, "%v.", errText(err))
		}
	}

	opts := copier.Options{
		Medium: string(h), WorkerID: c.worker, Workers: c.workers, BatchSize: c.batch, Limit: c.limit,
		StoreRoot: c.store, MountRoot: c.root, DryRun: c.dryRun, Policy: pol, Damage: pol.DamageMapper(), KernelOnly: c.kernelRead,
		Lease: c.lease, StallTimeout: c.stall, DBRetry: retryBound(c.dbRetry), Logger: log,
	}
	if read == "image" {
		opts.Image, opts.CodePage = src.Image, c.codePage
	}
	prog := &progress{status: status, start: time.Now()}
	opts.Progress = prog
	if term {
		done := make(chan struct{})
		defer close(done)
		go cli.Redraw(done, 250*time.Millisecond, prog.draw)
	}
	st, err := copier.Run(ctx, pool, opts)
	prog.stop()
	if st.Processed > 0 && !c.dryRun {
		if rerr := recordReader(context.WithoutCancel(ctx), pool, h, read); rerr != nil {
			log.Warn("could not record the reader", "medium", h, "err", rerr)
		}
	}
	interrupted := errors.Is(err, context.Canceled)
	switch {
	case errors.Is(err, copier.ErrSourceLost):
		return failf(stderr, "%v; its claims were released and no file was marked failed for it: remount the medium "+
			"(ntt-mount-helper unmount %s, then mount) and run the copier again.", errText(err), h)
	case errors.Is(err, dbconn.ErrUnavailable):
		return failf(stderr, "%v; start the database (or raise --db-retry) and run the copier again: claims left "+
			"behind are released by the next run.", errText(err))
	case err != nil && !interrupted:
		return failf(stderr, "%v.", errText(err))
	}
	if term {
		printTable(stdout, h, &st, c.dryRun)
	} else {
		printJSON(stdout, h, &st, c.dryRun)
	}
	if interrupted {
		fmt.Fprintf(stderr, "ntt-copier: interrupted; %d claims released, the next run goes on from here.\n", st.Released)
		return 0
	}
	if st.Processed == 0 && st.Excluded == 0 {
		return 2 // nothing to do
	}
	if n := st.GaveUp + st.Skipped; n > 0 {
		return gaveUp(ctx, pool, stderr, h, n)
	}
	return 0
}

// exitGaveUp is the exit status of a run that gave up on some files.
const exitGaveUp = 3

// gaveUp says how many files the run gave up on, how the medium's failed
// files stand, and which command takes them back.
func gaveUp(ctx context.Context, pool *pgxpool.Pool, stderr io.Writer, h medium.Hash, n int64) int {
	fmt.Fprintf(stderr, "ntt-copier: gave up on %s files of medium %s", cli.Group(n), h)
	if res, err := copier.ResetFailed(ctx, pool, string(h), copier.ResetOptions{IncludePermanent: true}); err == nil {
		fmt.Fprintf(stderr, " (the medium has %s failed_retryable and %s failed_permanent files)",
			cli.Group(res.ByStatus["failed_retryable"]), cli.Group(res.ByStatus["failed_permanent"]))
	}
	fmt.Fprintf(stderr, ". Once the cause is fixed, `ntt-copier reset-failed --medium-hash %s --apply` puts the "+
		"failed_retryable ones back to pending (add --include-permanent for the failed_permanent ones); then run the copier again.\n", h)
	return exitGaveUp
}

// retryBound maps the flag's 0 ("do not wait") to the library's "none" (<0).
func retryBound(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// progress counts files and bytes for the status line: files done of
// those pending at the start, read rate, and the ETA by bytes.
type progress struct {
	status               *cli.Status
	start                time.Time
	totalFiles, totalB   atomic.Int64
	files, bytes, errors atomic.Int64
	newB, dedup          atomic.Int64
	mu                   sync.Mutex
	stopped              bool
}

func (p *progress) Started(t copier.Totals) {
	p.totalFiles.Store(t.Files)
	p.totalB.Store(t.Bytes)
}

func (p *progress) FileDone(r copier.FileResult) {
	if r.Err != nil {
		p.errors.Add(1)
		if r.Action == copier.Retry {
			return
		}
	} else if r.New {
		p.newB.Add(1)
	} else {
		p.dedup.Add(1)
	}
	p.files.Add(1)
	p.bytes.Add(r.Size)
}

func (p *progress) BatchDone(copier.BatchResult) {}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	el := time.Since(p.start)
	b := float64(p.bytes.Load())
	p.status.Set("%s/%s files  %s  %.1f MB/s  new %s  dedup %s  errors %s  ETA %s",
		cli.Group(p.files.Load()), cli.Group(p.totalFiles.Load()), bytesText(int64(b)), b/1e6/max(el.Seconds(), 1e-3),
		cli.Group(p.newB.Load()), cli.Group(p.dedup.Load()), cli.Group(p.errors.Load()),
		cli.ETA(b, float64(p.totalB.Load()), el))
}

func (p *progress) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.status.Clear()
}

func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}

func printTable(w io.Writer, h medium.Hash, st *copier.Stats, dry bool) {
	verb := "Copied"
	if dry {
		verb = "Dry run of"
	}
	fmt.Fprintf(w, "✓ %s medium %s in %.1fs\n", verb, h, st.Elapsed.Seconds())
	row := func(name string, v string) { fmt.Fprintf(w, "  %-16s %14s\n", name, v) }
	row("processed", cli.Group(st.Processed))
	row("copied", cli.Group(st.Copied))
	row("new blobs", cli.Group(st.New))
	row("deduplicated", cli.Group(st.Deduped))
	row("bytes read", bytesText(st.BytesRead))
	if st.FromDevice > 0 {
		row("from device", cli.Group(st.FromDevice))
	}
	row("bytes written", bytesText(st.BytesWritten))
	row("errors", cli.Group(st.Errors))
	row("retried", cli.Group(st.Retried))
	row("skipped", cli.Group(st.Skipped))
	row("gave up", cli.Group(st.GaveUp))
	if st.Excluded > 0 {
		row("excluded", cli.Group(st.Excluded))
	}
	if st.Released > 0 {
		row("released", cli.Group(st.Released))
	}
	row("read rate", fmt.Sprintf("%.1f MB/s", mbps(st.BytesRead, st.Elapsed)))
	if st.Complete {
		fmt.Fprintf(w, "  medium complete: no file left pending or claimed; tree: %s dirs, %s symlinks\n",
			cli.Group(st.TreeDirs), cli.Group(st.TreeSymlinks))
	} else {
		left := st.Start.Files - st.Processed
		fmt.Fprintf(w, "  medium not complete (about %s files left, or claimed by other workers)\n", cli.Group(max(left, 0)))
	}
}

func printJSON(w io.Writer, h medium.Hash, st *copier.Stats, dry bool) {
	json.NewEncoder(w).Encode(map[string]any{
		"medium": string(h), "dry_run": dry, "processed": st.Processed, "copied": st.Copied,
		"new": st.New, "deduped": st.Deduped, "bytes_read": st.BytesRead, "bytes_written": st.BytesWritten,
		"bytes_discarded": st.BytesDiscarded, "from_device": st.FromDevice, "errors": st.Errors, "retried": st.Retried, "skipped": st.Skipped,
		"gave_up": st.GaveUp, "excluded": st.Excluded, "released": st.Released, "lost": st.Lost,
		"links": st.Links, "link_copies": st.LinkCopies, "tree_dirs": st.TreeDirs, "tree_symlinks": st.TreeSymlinks,
		"tree_errors": st.TreeErrors, "batches": st.Batches, "pending_at_start": st.Start.Files,
		"complete": st.Complete, "elapsed_s": st.Elapsed.Seconds(), "mb_per_s": mbps(st.BytesRead, st.Elapsed),
	})
}

func resetFailed(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	if c.hash == "" {
		return failf(stderr, "reset-failed needs --medium-hash; see --help.")
	}
	h, err := medium.Parse(c.hash)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 2, Logger: cli.NewLogger(stderr, c.verbose), Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	res, err := copier.ResetFailed(ctx, pool, string(h), copier.ResetOptions{ErrorType: c.errorType,
		IncludePermanent: c.permanent, Apply: c.apply})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if cli.IsTerminal(stdout) {
		types := make([]string, 0, len(res.ByErrorType))
		for t := range res.ByErrorType {
			types = append(types, t)
		}
		sort.Strings(types)
		what := "failed_retryable"
		if c.permanent {
			what = "failed_retryable and failed_permanent"
		}
		if res.Applied {
			fmt.Fprintf(stdout, "✓ Reset %s %s files of medium %s to pending\n", cli.Group(res.Total), what, h)
		} else {
			fmt.Fprintf(stdout, "Dry run: %s %s files of medium %s would be reset (nothing changed; add --apply)\n", cli.Group(res.Total), what, h)
		}
		for _, t := range types {
			fmt.Fprintf(stdout, "  %-18s %12s\n", t, cli.Group(res.ByErrorType[t]))
		}
	} else {
		json.NewEncoder(stdout).Encode(map[string]any{"medium": string(h), "applied": res.Applied,
			"total": res.Total, "by_error_type": res.ByErrorType, "by_status": res.ByStatus})
	}
	if res.Total == 0 {
		return 2
	}
	return 0
}

func verifyStore(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	term := cli.IsTerminal(stderr)
	status := cli.NewStatus(stderr)
	log := cli.NewStatusLogger(stderr, status, c.verbose)
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 3, Logger: log, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	var last time.Time
	rep, err := copier.VerifyStore(ctx, pool, copier.VerifyOptions{
		StoreRoot: c.store, Sample: c.sample, Oldest: c.oldest, Workers: c.workers + 1, Logger: log,
		ReportOnly: c.reportOnly,
		Progress: func(r copier.VerifyReport) {
			if term && time.Since(last) > 250*time.Millisecond {
				last = time.Now()
				status.Set("%s blobs checked  %s  %.1f MB/s  %s problems", cli.Group(r.Checked), bytesText(r.Bytes),
					mbps(r.Bytes, r.Elapsed), cli.Group(r.Checked-r.OK))
			}
		},
	})
	status.Clear()
	if err != nil && !errors.Is(err, context.Canceled) {
		return failf(stderr, "%v.", errText(err))
	}
	next := verifyAdvice(c, &rep)
	if term {
		fmt.Fprintf(stdout, "Store %s: %s blobs checked (%s) in %.1fs: %s ok, %s missing, %s damaged, %s wrong size, %s unreadable, %s wrong mode\n",
			c.store, cli.Group(rep.Checked), bytesText(rep.Bytes), rep.Elapsed.Seconds(), cli.Group(rep.OK), cli.Group(rep.Missing),
			cli.Group(rep.Mismatched), cli.Group(rep.WrongSize), cli.Group(rep.Unreadable), cli.Group(rep.BadMode))
		for i, p := range rep.Problems {
			if i == 20 {
				fmt.Fprintf(stdout, "  … %d more\n", len(rep.Problems)-20)
				break
			}
			fmt.Fprintf(stdout, "  %-10s %s  %s\n", p.Problem, p.ID, problemText(p))
		}
		if rep.Quarantined > 0 {
			fmt.Fprintf(stdout, "Quarantined %s blobs (moved to %s/%s); %s files back to pending\n", cli.Group(rep.Quarantined),
				c.store, copier.QuarantineDir, cli.Group(rep.Reset))
		}
		if rep.AffectedMedia > 0 {
			fmt.Fprintf(stdout, "Media with files to copy again (%s blobs awaiting a copy):\n", cli.Group(rep.Awaiting))
			for _, m := range rep.Affected {
				fmt.Fprintf(stdout, "  %s %s: %s files, %s", m.Medium, m.Human, cli.Group(m.Inodes), bytesText(m.Bytes))
				if m.ArchivePath != "" {
					fmt.Fprintf(stdout, ", archived in %s", m.ArchivePath)
				}
				fmt.Fprintln(stdout)
				for _, p := range m.Paths {
					fmt.Fprintf(stdout, "    %q\n", p)
				}
				if more := m.Inodes - int64(len(m.Paths)); more > 0 {
					fmt.Fprintf(stdout, "    … and more (%s files in all)\n", cli.Group(m.Inodes))
				}
			}
			if more := rep.AffectedMedia - int64(len(rep.Affected)); more > 0 {
				fmt.Fprintf(stdout, "  … %s more media\n", cli.Group(more))
			}
		}
		if len(next) > 0 {
			fmt.Fprintln(stdout, "Next:")
			for _, n := range next {
				fmt.Fprintf(stdout, "  %s\n", n)
			}
		}
	} else {
		probs := make([]map[string]any, 0, len(rep.Problems))
		for _, p := range rep.Problems {
			m := map[string]any{"blob": p.ID, "problem": p.Problem, "size": p.Size, "detail": problemText(p),
				"quarantined": p.Marked, "inodes_reset": p.Inodes}
			if p.Actual != "" {
				m["actual"] = p.Actual
			}
			if p.Problem == copier.BlobWrongSize {
				m["found_size"] = p.Found
			}
			if p.Quarantine != "" {
				m["moved_to"] = p.Quarantine
			}
			if p.Err != nil {
				m["error"] = p.Err.Error()
			}
			probs = append(probs, m)
		}
		media := make([]map[string]any, 0, len(rep.Affected))
		for _, m := range rep.Affected {
			media = append(media, map[string]any{"medium": m.Medium, "medium_human": m.Human, "image_path": m.ImagePath,
				"archive_path": m.ArchivePath, "files": m.Inodes, "bytes": m.Bytes, "pending": m.Pending, "paths": m.Paths})
		}
		json.NewEncoder(stdout).Encode(map[string]any{"store": c.store, "checked": rep.Checked, "ok": rep.OK,
			"missing": rep.Missing, "mismatched": rep.Mismatched, "wrong_size": rep.WrongSize,
			"unreadable": rep.Unreadable, "bad_mode": rep.BadMode, "bytes": rep.Bytes,
			"elapsed_s": rep.Elapsed.Seconds(), "problems": probs,
			"quarantined": rep.Quarantined, "inodes_reset": rep.Reset, "awaiting_copy": rep.Awaiting,
			"affected_media": rep.AffectedMedia, "affected": media, "next": next})
		for _, n := range next {
			fmt.Fprintf(stderr, "ntt-copier: next: %s\n", n)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "ntt-copier: verification interrupted.")
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

func relink(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	if c.hash == "" {
		return failf(stderr, "--medium-hash is required; see --help.")
	}
	h, err := medium.Parse(c.hash)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 2, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	log := cli.NewStatusLogger(stderr, cli.NewStatus(stderr), c.verbose)
	res, err := copier.Relink(ctx, pool, copier.RelinkOptions{Medium: string(h), StoreRoot: c.store, Logger: log})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if cli.IsTerminal(stderr) {
		fmt.Fprintf(stdout, "Medium %s: %s files relinked (%s tree paths); %s still wait for their content\n", h,
			cli.Group(res.Relinked), cli.Group(res.Links), cli.Group(res.Waiting))
	} else {
		json.NewEncoder(stdout).Encode(map[string]any{"medium": string(h), "relinked": res.Relinked, "links": res.Links, "waiting": res.Waiting})
	}
	if res.Waiting > 0 {
		fmt.Fprintf(stderr, "ntt-copier: %s files of medium %s still wait for their content: copy a medium holding it, or the medium itself from its image (ntt-copier verify-store lists them).\n",
			cli.Group(res.Waiting), h)
	}
	if res.Relinked == 0 {
		return 2
	}
	return 0
}

// problemText says what is wrong with a blob, in words.
func problemText(p copier.BlobProblem) string {
	var s string
	switch p.Problem {
	case copier.BlobWrongSize:
		s = fmt.Sprintf("wrong size: %d bytes expected, %d found", p.Size, p.Found)
	case copier.BlobMismatch:
		s = "content hashes to " + p.Actual
	case copier.BlobMissing:
		s = "no file at its name"
	case copier.BlobBadMode:
		s = "content good, " + p.Actual + " instead of 644"
	default:
		s = fmt.Sprintf("unreadable: %v", p.Err)
	}
	if p.Quarantine != "" {
		s += "; moved to " + p.Quarantine
	}
	return s
}

// verifyAdvice says what to run after a verification, medium by medium.
func verifyAdvice(c *config, rep *copier.VerifyReport) []string {
	var next []string
	if c.reportOnly && rep.Failed() {
		next = append(next, fmt.Sprintf("ntt-copier verify-store --store %s (without --report-only) quarantines the damaged blobs and puts their files back to pending", c.store))
	}
	for _, p := range rep.Problems {
		if p.Problem == copier.BlobBadMode {
			next = append(next, fmt.Sprintf("chmod 0644 %s/%s/%s (the content is good)", c.store, copier.ByHashDir, copier.BlobPath(p.ID)))
		}
	}
	var gone []string // media whose image is gone: after the copies
	mountCmd, rootFlag := "ntt-mount-helper", ""
	if c.root != copier.DefaultMountRoot {
		mountCmd, rootFlag = "ntt-mount-helper --root "+c.root, " --root "+c.root
	}
	for _, m := range rep.Affected {
		if m.Pending == 0 {
			continue
		}
		copyCmd := fmt.Sprintf("ntt-copier --medium-hash %s --store %s%s", m.Medium, c.store, rootFlag)
		_, imgErr := os.Stat(m.ImagePath)
		switch {
		case m.ImagePath == "" && m.ArchivePath == "":
			next = append(next, fmt.Sprintf("medium %s: mount it at %s/%s if it is not mounted, then %s copies its %s files again",
				m.Medium, c.root, m.Medium, copyCmd, cli.Group(m.Pending)))
		case m.ImagePath != "" && imgErr == nil:
			next = append(next, fmt.Sprintf("medium %s: mount its image %s (%s mount %s %s) if it is not mounted, then %s copies its %s files again",
				m.Medium, m.ImagePath, mountCmd, m.Medium, m.ImagePath, copyCmd, cli.Group(m.Pending)))
		case m.ArchivePath != "":
			gone = append(gone, fmt.Sprintf("medium %s: its image is gone: after the copies above, ntt-copier relink --medium-hash %s --store %s links those of its %s files whose content they stored again; for the rest, restore its image from %s (tar -I 'zstd -d' -xf %s -C DIR %s.img), mount it (%s mount %s DIR/%s.img), then %s",
				m.Medium, m.Medium, c.store, cli.Group(m.Pending), m.ArchivePath, m.ArchivePath, m.Medium, mountCmd, m.Medium, m.Medium, copyCmd))
		default:
			gone = append(gone, fmt.Sprintf("medium %s: its image %q is gone and it was not archived: only the copy of another medium holding the same content, then ntt-copier relink --medium-hash %s --store %s, can bring back its %s files; they stay pending until then",
				m.Medium, m.ImagePath, m.Medium, c.store, cli.Group(m.Pending)))
		}
	}
	next = append(next, gone...)
	if rep.Awaiting > 0 {
		next = append(next, fmt.Sprintf("then ntt-copier verify-store --store %s again; the quarantined files stay in %s/%s (remove them by hand once every medium is copied again, if the space is needed)",
			c.store, c.store, copier.QuarantineDir))
	}
	return next
}

func bytesText(n int64) string { return cli.SI(float64(n)) + "B" }
