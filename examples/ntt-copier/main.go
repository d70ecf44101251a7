// Command ntt-copier copies a mounted medium's files into the content store
// (package copier): Phase 3 of the runbook,
//
//	sudo -E bin/ntt-copier --medium-hash $HASH --worker-id test-worker --batch-size 50 --limit 500
//
// plus `ntt-copier reset-failed` (failed_retryable rows back to pending)
// and `ntt-copier verify-store` (re-hash blobs).
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
)

const usage = `Usage: ntt-copier --medium-hash HASH [options]
       ntt-copier reset-failed --medium-hash HASH [--error-type TYPE] [--apply]
       ntt-copier verify-store [--store DIR] [--sample N | --oldest N] [--workers N]

Copy the pending files of the medium HASH, mounted at ROOT/HASH (partitions
at ROOT/HASH/pN) or read from its image (--read image: FAT, ISO 9660 …, in
user space, in the image's byte order), into the store: each file is read once, hashed (BLAKE3)
and stored as STORE/by-hash/AA/BB/<hash> unless that content is there
already; every path of it becomes a hardlink in STORE/archived/HASH/...
Files are claimed in batches, so any number of copiers (processes, hosts)
can work on one medium at once. A file that cannot be read is retried,
checked at the checkpoint ("DIAGNOSTIC CHECKPOINT"), skipped when its data
lies beyond the end of the image ("SKIPPED ino=X reason=DIAGNOSTIC_SKIP:..."),
or given up after the retry cap; a ddrescue mapfile beside the image
(medium.image_path, or --image) gives the medium's health and records the
damaged ranges of the files it touches.

Ctrl-C (SIGINT) or SIGTERM finishes the files being read, records the
batch, releases the other claims and exits 0; a second one exits at once
(the claims come back by themselves).

reset-failed puts the medium's failed_retryable files (of one error type
with --error-type) back to pending, after the cause is fixed. Without
--apply it only shows what it would reset.

verify-store re-reads blobs and checks that their content hashes to their
name; --sample N checks N at random, --oldest N the N least recently
checked. Exit status 1 if any blob is missing or damaged.

Progress goes to stderr: a status line on a terminal (files, MB/s, ETA),
JSON log lines otherwise ("Batch completed" per batch). The summary goes to
stdout: a table on a terminal, one JSON object otherwise.

Database: --db URL, else $NTT_DB_URL, else libpq's PG* variables.
Exit status: 0 done (or interrupted cleanly); 1 error; 2 nothing to do.

Options:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type config struct {
	db, hash, worker, store, root, image, errorType string
	read, codePage                                  string
	workers, batch                                  int
	limit                                           int64
	lease, stall                                    time.Duration
	dryRun, apply, verbose                          bool
	sample, oldest                                  int
}

func run(args []string, stdout, stderr io.Writer) int {
	verb := "copy"
	if len(args) > 0 && (args[0] == "reset-failed" || args[0] == "verify-store") {
		verb, args = args[0], args[1:]
	}
	var c config
	fs := flag.NewFlagSet("ntt-copier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.db, "db", "", "catalog database `URL` (default $NTT_DB_URL, then libpq's PG* variables)")
	fs.StringVar(&c.hash, "medium-hash", "", "the medium to copy (its `HASH`)")
	fs.StringVar(&c.worker, "worker-id", "", "`ID` recorded in claimed_by; one process per id (default HOST-PID)")
	fs.IntVar(&c.workers, "workers", 1, "concurrent workers in this process (`N`)")
	fs.IntVar(&c.batch, "batch-size", copier.DefaultBatchSize, "inodes per claim and per catalog transaction (`N`)")
	fs.Int64Var(&c.limit, "limit", 0, "stop after `N` inodes (0: no limit)")
	fs.StringVar(&c.store, "store", copier.DefaultStore, "the content store `DIR` (must exist)")
	fs.StringVar(&c.root, "root", copier.DefaultMountRoot, "media are mounted at `DIR`/HASH")
	fs.DurationVar(&c.lease, "lease", copier.DefaultLease, "a claim not renewed for `D` may be taken by another worker")
	fs.DurationVar(&c.stall, "stall-timeout", copier.DefaultStallTimeout, "give up when a file makes no progress for `D`")
	fs.StringVar(&c.image, "image", "", "the medium's image `FILE` (default: medium.image_path); its mapfile is FILE's dir/HASH.map; read from it with --read image")
	fs.StringVar(&c.read, "read", "auto", "where the files are read: `HOW` = mount (ROOT/HASH), image (the image file, in user space: no root, no mount), "+
		"or auto (the reader recorded for the medium, else image when --image is given and nothing is mounted at ROOT/HASH, else mount)")
	fs.StringVar(&c.codePage, "code-page", "", "code page of 8.3 FAT names when reading the image (default cp437)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "read and hash, but write nothing and claim nothing")
	fs.StringVar(&c.errorType, "error-type", "", "reset-failed: only rows of this error_type ("+strings.Join(copier.ErrorTypes, ", ")+")")
	fs.BoolVar(&c.apply, "apply", false, "reset-failed: do it (default: only show what would be reset)")
	fs.IntVar(&c.sample, "sample", 0, "verify-store: check `N` blobs chosen at random")
	fs.IntVar(&c.oldest, "oldest", 0, "verify-store: check the `N` least recently checked blobs")
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

	switch verb {
	case "reset-failed":
		return resetFailed(ctx, &c, stdout, stderr)
	case "verify-store":
		return verifyStore(ctx, &c, stdout, stderr)
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
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: int32(c.workers + 4), Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()

	image := c.image
	if image == "" {
		var p *string
		if err := pool.QueryRow(ctx, `SELECT image_path FROM medium WHERE medium_hash = $1`, string(h)).Scan(&p); err == nil && p != nil {
			image = *p
		}
	}
	if image != "" {
		if _, err := os.Stat(image); err != nil {
			log.Warn("the image is not where the catalog says; copying without its mapfile", "medium", h, "image", image, "err", err)
			image = ""
		}
	}
	read, err := chooseReader(ctx, pool, h, c)
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if read == "image" && image == "" {
		return failf(stderr, "medium %s: reading the image needs it: pass --image FILE", h)
	}
	log.Info("reader", "medium", h, "reader", read, "image", image)
	pol, err := diagpolicy.New(diagpolicy.Options{Medium: string(h), Image: image})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pol.Close()
	if err := pol.KernelLogErr(); err != nil {
		log.Warn("kernel log unavailable: checkpoints will not look at it", "err", err)
	}
	hr := pol.Health()
	log.Info("medium health", "medium", h, "health", hr.Health, "mapfile", hr.Mapfile, "rescued_pct", hr.RescuedPct)

	opts := copier.Options{
		Medium: string(h), WorkerID: c.worker, Workers: c.workers, BatchSize: c.batch, Limit: c.limit,
		StoreRoot: c.store, MountRoot: c.root, DryRun: c.dryRun, Policy: pol, Damage: pol.DamageMapper(),
		Lease: c.lease, StallTimeout: c.stall, Logger: log,
	}
	if read == "image" {
		opts.Image, opts.CodePage = image, c.codePage
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
	if err != nil && !interrupted {
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
	return 0
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
		"bytes_discarded": st.BytesDiscarded, "errors": st.Errors, "retried": st.Retried, "skipped": st.Skipped,
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
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 2, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	res, err := copier.ResetFailed(ctx, pool, string(h), copier.ResetOptions{ErrorType: c.errorType, Apply: c.apply})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	if cli.IsTerminal(stdout) {
		types := make([]string, 0, len(res.ByErrorType))
		for t := range res.ByErrorType {
			types = append(types, t)
		}
		sort.Strings(types)
		if res.Applied {
			fmt.Fprintf(stdout, "✓ Reset %s failed_retryable files of medium %s to pending\n", cli.Group(res.Total), h)
		} else {
			fmt.Fprintf(stdout, "Dry run: %s failed_retryable files of medium %s would be reset (nothing changed; add --apply)\n", cli.Group(res.Total), h)
		}
		for _, t := range types {
			fmt.Fprintf(stdout, "  %-18s %12s\n", t, cli.Group(res.ByErrorType[t]))
		}
	} else {
		json.NewEncoder(stdout).Encode(map[string]any{"medium": string(h), "applied": res.Applied,
			"total": res.Total, "by_error_type": res.ByErrorType})
	}
	if res.Total == 0 {
		return 2
	}
	return 0
}

func verifyStore(ctx context.Context, c *config, stdout, stderr io.Writer) int {
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, MaxConns: 3, Private: dbconn.Announce("ntt-copier", stderr)})
	if err != nil {
		return failf(stderr, "%v.", errText(err))
	}
	defer pool.Close()
	term := cli.IsTerminal(stderr)
	status := cli.NewStatus(stderr)
	log := cli.NewStatusLogger(stderr, status, c.verbose)
	var last time.Time
	rep, err := copier.VerifyStore(ctx, pool, copier.VerifyOptions{
		StoreRoot: c.store, Sample: c.sample, Oldest: c.oldest, Workers: c.workers + 1, Logger: log,
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
	if term {
		fmt.Fprintf(stdout, "Store %s: %s blobs checked (%s) in %.1fs: %s ok, %s missing, %s damaged, %s wrong size, %s unreadable, %s wrong mode\n",
			c.store, cli.Group(rep.Checked), bytesText(rep.Bytes), rep.Elapsed.Seconds(), cli.Group(rep.OK), cli.Group(rep.Missing),
			cli.Group(rep.Mismatched), cli.Group(rep.WrongSize), cli.Group(rep.Unreadable), cli.Group(rep.BadMode))
		for i, p := range rep.Problems {
			if i == 20 {
				fmt.Fprintf(stdout, "  … %d more\n", len(rep.Problems)-20)
				break
			}
			fmt.Fprintf(stdout, "  %s %s %s\n", p.Problem, p.ID, p.Actual)
		}
	} else {
		probs := make([]map[string]any, 0, len(rep.Problems))
		for _, p := range rep.Problems {
			m := map[string]any{"blob": p.ID, "problem": p.Problem, "size": p.Size}
			if p.Actual != "" {
				m["actual"] = p.Actual
			}
			if p.Err != nil {
				m["error"] = p.Err.Error()
			}
			probs = append(probs, m)
		}
		json.NewEncoder(stdout).Encode(map[string]any{"store": c.store, "checked": rep.Checked, "ok": rep.OK,
			"missing": rep.Missing, "mismatched": rep.Mismatched, "wrong_size": rep.WrongSize,
			"unreadable": rep.Unreadable, "bad_mode": rep.BadMode, "bytes": rep.Bytes,
			"elapsed_s": rep.Elapsed.Seconds(), "problems": probs})
	}
	if err != nil {
		fmt.Fprintln(stderr, "ntt-copier: verification interrupted.")
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

func bytesText(n int64) string { return cli.SI(float64(n)) + "B" }
