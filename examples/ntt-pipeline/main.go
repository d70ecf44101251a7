// Command ntt-pipeline takes one rescued disk image through every phase of
// the runbook (../shared/seed/img-processing-workflow-2025-10-08.md):
//
//  0. pre-flight: no ddrescue still writing the image, the mapfile's
//     rescued percentage and health, the image present, mount status, the
//     medium's catalog state;
//  1. mount read-only and enumerate;
//  2. load the enumeration into the catalog;
//  3. copy every file into the deduplicated store;
//  4. seal the image files into a verified archive, mark the medium done,
//     remove the sources, unmount.
//
// A rerun resumes: a phase is skipped when the catalog says it is done
// (enum_done, no pending or claimed inode, copy_done), never by guessing
// from files; an interrupted phase is redone safely (each is all-or-nothing
// or idempotent). A failed phase records its flag in medium.problems and
// follows the runbook's rollback plan. The seed's metrics are printed at the
// end and written as JSON.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5/pgxpool"
)

const usage = `Usage: ntt-pipeline [options] IMAGE [HASH]
       ntt-pipeline [options] IMAGE.img IMAGE.img ...   (the processing queue)
       ntt-pipeline [options] --all [--images DIR]      (every ready medium)
       ntt-pipeline status [--images DIR] [--json]      (the queue's table)

Process one disk image through the runbook's phases: pre-flight, mount and
enumerate, load, copy, archive (and unmount). With --read image the files
are read from the image in user space (FAT, ISO 9660 …): no root, no loop
device, no mount; --read auto (the default) mounts when run as root and the
kernel has the filesystem, else reads the image. A medium keeps the reader
that catalogued it. HASH is the medium hash; when
omitted, IMAGE must be named <hash>.img. A rerun skips what the catalog says
is done and redoes an interrupted phase. Metrics are printed at the end and
written to --metrics as JSON.

Database: --db, else $NTT_DB_URL, else libpq's PG* variables; with none of
them, NTT's private PostgreSQL under --state (started if needed).

Exit status: 0 done; 1 a phase failed (recorded in medium.problems);
2 nothing to do (the medium is already archived). For the queue: 0 every
ready medium archived, 1 at least one failed, 2 no ready medium.

Options:
`

type config struct {
	db, root, store, images, dest, work, state, metrics, ignore string
	workers                                                     int
	keepSources, verbose                                        bool
	mountTimeout, stall                                         time.Duration
	image                                                       string
	hash                                                        medium.Hash
	read, codePage                                              string
}

func main() {
	tuneGC(1)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// tuneGC sets the garbage collector for jobs media at a time, unless GOGC
// says how to collect (then nothing is changed) or GOMEMLIMIT bounds the
// heap (then only the pace is). A queue of small media makes short-lived
// garbage medium after medium over a small live heap: collecting at five
// times the live heap instead of twice took a fifth off ntt-pipeline's CPU
// over 100 floppies (80-90 MiB resident instead of 40). A soft limit of
// 256 MiB a job keeps a large medium about where the default had it: 271
// MiB resident on the 300k tree of bench/pipeline.sh, against 279-287.
func tuneGC(jobs int) {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(400)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(jobs) << 28)
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "status" {
		return runStatus(args[1:], stdout, stderr)
	}
	var c config
	fs := flag.NewFlagSet("ntt-pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.db, "db", "", "catalog database `URL`")
	fs.StringVar(&c.root, "root", "/mnt/ntt", "mount root `DIR`")
	fs.StringVar(&c.store, "store", "/data/cold", "content store `DIR` (by-hash/, archived/)")
	fs.StringVar(&c.images, "images", "", "`DIR` holding the image and its .map/.log files (default: IMAGE's directory)")
	fs.StringVar(&c.dest, "dest", "/data/cold/img-read", "archive destination `DIR`")
	fs.StringVar(&c.work, "work", "/tmp", "`DIR` for the raw enumeration file <hash8>.raw")
	fs.StringVar(&c.state, "state", "", "`DIR` of the private database (default "+dbconn.DefaultStateDir()+")")
	fs.StringVar(&c.metrics, "metrics", "", "metrics JSON `FILE` (default <work>/<hash8>.metrics.json)")
	fs.StringVar(&c.ignore, "ignore", "", "ignore-pattern `FILE` for enumeration and load")
	fs.IntVar(&c.workers, "workers", copier.DefaultWorkers, "at most `N` copy workers, shared by --all's jobs (each copier finds how many of its share pay)")
	fs.BoolVar(&c.keepSources, "keep-sources", false, "keep the image files after a verified archive")
	fs.DurationVar(&c.mountTimeout, "mount-timeout", 10*time.Second, "give up on a mount after `D`")
	fs.DurationVar(&c.stall, "stall-timeout", 60*time.Second, "fail enumeration when it makes no progress for `D`")
	fs.BoolVar(&c.verbose, "v", false, "log debug events")
	fs.StringVar(&c.read, "read", readAuto, "how to reach the files: `HOW` = mount (root, loop device, kernel driver), image (read the image in user space, no root), or auto (mount when root and the kernel has the filesystem, else image)")
	fs.StringVar(&c.codePage, "code-page", "", "code page of 8.3 FAT names with --read image (default cp437)")
	q := addQueueFlags(fs)
	fs.Usage = func() { io.WriteString(fs.Output(), usage); fs.PrintDefaults() }
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() error { return fs.Parse(args) }); !ok {
		return code
	}
	if q.queued(fs.Args()) {
		return runQueue(c, q, fs.Args(), stdout, stderr)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return 1
	}
	switch c.read {
	case readAuto, readMount, readImage:
	default:
		fmt.Fprintf(stderr, "ntt-pipeline: --read must be auto, mount or image, not %q\n", c.read)
		return 1
	}
	c.image = fs.Arg(0)
	hs := strings.TrimSuffix(filepath.Base(c.image), ".img")
	if fs.NArg() == 2 {
		hs = fs.Arg(1)
	}
	h, err := medium.Parse(hs)
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: %v (give the medium hash as the second argument)\n", err)
		return 1
	}
	c.hash = h
	if c.images == "" {
		c.images = filepath.Dir(c.image)
	}
	if c.metrics == "" {
		c.metrics = filepath.Join(c.work, h.Short()+".metrics.json")
	}
	// One matcher for enumeration and load, read before anything starts:
	// a bad pattern file is a usage error, not a failed phase.
	var ignore *enumerate.Matcher
	if c.ignore != "" {
		if ignore, err = enumerate.LoadIgnoreFile(c.ignore); err != nil {
			fmt.Fprintf(stderr, "ntt-pipeline: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	status := cli.NewStatus(stderr)
	log, closeLog, err := q.singleLogger(stderr, status, c.verbose)
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: --log: %v\n", err)
		return 1
	}
	defer closeLog()
	db, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, Migrate: true, Logger: log, MaxConns: poolSize(c.workers, 1), Private: &dbconn.Private{
		Dir: c.state, Say: func(l string) { fmt.Fprintln(stderr, "ntt-pipeline:", l) }}})
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: medium %s: %v\n", h, err)
		return 1
	}
	defer db.Close()
	p := &pipeline{c: c, db: db, ignore: ignore, log: log, out: stdout, errw: stderr, status: status}
	return p.run(ctx)
}

type pipeline struct {
	c      config
	db     *pgxpool.Pool
	ignore *enumerate.Matcher // nil: no ignore patterns
	log    *slog.Logger
	out    io.Writer
	errw   io.Writer
	status *cli.Status
	m      Metrics
	reader string // readMount or readImage, decided after pre-flight
	// failure is the error of the phase that failed, for the queue's
	// decision to seal an unreadable medium (errors.Is, not its words).
	failure error

	unmountOnce sync.Once
}
