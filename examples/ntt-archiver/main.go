// Command ntt-archiver seals a medium's image files into
// <dest>/<hash>.tar.zst (the seed's Phase 4), verifies it by reading it
// back, marks the medium archived in the catalog and removes the sources.
// `ntt-archiver verify ARCHIVE` checks an existing archive.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
)

const usage = `Usage:
  ntt-archiver [flags] HASH       seal, verify, mark archived, remove sources
  ntt-archiver verify ARCHIVE     check an archive against its manifest

Seals the medium's explicit file list — HASH.img (required), HASH.map,
HASH.map.bak, HASH.map.stall, HASH-ddrescue.log (those that exist) — into
DEST/HASH.tar.zst with a manifest member HASH.manifest.json (sizes, BLAKE3,
optional SHA-256). The archive is written under a temporary name, fsynced,
read back and checked member by member, then renamed into place. Only then
is medium.copy_done/archive_path set, and only then are the sources removed:
first the medium is unmounted from ROOT/HASH and its loop devices detached
(as ntt-mount-helper unmount does); if the image is still mounted or
attached anywhere else, every source is kept and the error names where.
It refuses while inodes of the medium are still pending or claimed.
Check it with: tar -I 'zstd -d' -tvf DEST/HASH.tar.zst

Exit status: 0 done, 1 error, 2 already archived (nothing to do).

Flags:
`

type config struct {
	db          string
	root        string
	images      []string
	dest        string
	force       bool
	keep        bool
	sha         bool
	level       int
	concurrency int
	noCatalog   bool
	dbRetry     time.Duration
}

type dirList []string

func (d *dirList) String() string { return strings.Join(*d, ",") }
func (d *dirList) Set(s string) error {
	*d = append(*d, s)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(args) > 0 && args[0] == "verify" {
		return runVerify(ctx, args[1:], stdout, stderr)
	}
	var cfg config
	var images dirList
	fl := flag.NewFlagSet("ntt-archiver", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	fl.StringVar(&cfg.db, "db", "", "catalog URL (default $NTT_DB_URL, else libpq's PG* variables)")
	fl.Var(&images, "images", "directory holding the image files; repeat to search several (default "+archive.DefaultImagesDir+")")
	fl.StringVar(&cfg.dest, "dest", archive.DefaultDestDir, "directory for HASH.tar.zst (must exist)")
	fl.StringVar(&cfg.root, "root", loopdev.DefaultRoot, "mount root: the medium at ROOT/HASH is unmounted before its image is removed")
	fl.BoolVar(&cfg.force, "force", false, "archive even while inodes are pending or claimed, and replace an existing archive")
	fl.BoolVar(&cfg.keep, "keep-sources", false, "do not remove the source files")
	fl.BoolVar(&cfg.sha, "sha256", false, "also record SHA-256 of each member in the manifest")
	fl.IntVar(&cfg.level, "level", archive.DefaultLevel, "zstd level, as the zstd command numbers it")
	fl.IntVar(&cfg.concurrency, "concurrency", 0, "compression goroutines (default: all cores)")
	fl.DurationVar(&cfg.dbRetry, "db-retry", dbconn.DefaultRetry, "wait out a catalog outage for up to `D` at each catalog step (0: do not)")
	fl.BoolVar(&cfg.noCatalog, "no-catalog", false, "seal and verify only: no database, sources always kept (benchmarks, offline use)")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return 1
	}
	cfg.images = images
	term := cli.IsTerminal(os.Stderr)
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	prog := newProgress(stderr, term, logger)

	spec := archive.Spec{
		Medium:      fl.Arg(0),
		ImagesDirs:  cfg.images,
		Dest:        cfg.dest,
		Level:       cfg.level,
		Concurrency: cfg.concurrency,
		SHA256:      cfg.sha,
		Force:       cfg.force,
		Progress:    prog,
	}
	if !term {
		spec.Logger = logger
	}
	var res *archive.Result
	var err error
	if cfg.noCatalog {
		res, err = archive.Seal(ctx, spec)
	} else {
		var pool *pgxpool.Pool
		pool, err = dbconn.Open(ctx, dbconn.Options{URL: cfg.db, MaxConns: 4, Logger: logger, Private: dbconn.Announce("ntt-archiver", stderr)})
		if err != nil {
			fmt.Fprintf(stderr, "ntt-archiver: medium %q: %v\n", fl.Arg(0), err)
			return 1
		}
		defer pool.Close()
		res, err = archive.Complete(ctx, pool, spec, archive.CompleteOptions{
			AllowIncomplete: cfg.force,
			KeepSources:     cfg.keep,
			DBRetry:         retryBound(cfg.dbRetry),
			Release: func(ctx context.Context, medium, image string) error {
				_, err := loopdev.Release(ctx, loopdev.ReleaseSpec{Medium: medium, Image: image, Root: cfg.root, Logger: spec.Logger})
				return err
			},
		})
	}
	prog.finish()
	if errors.Is(err, archive.ErrAlreadyArchived) {
		fmt.Fprintf(stderr, "ntt-archiver: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "ntt-archiver: %v\n", err)
		return 1
	}
	report(stdout, res, term, logger)
	return 0
}

func report(w io.Writer, res *archive.Result, term bool, logger *slog.Logger) {
	if !term {
		logger.Info("archive complete", "path", res.Path, "size", res.Size, "members", len(res.Members),
			"removed", res.Removed, "seal_s", res.SealTime.Seconds(), "verify_s", res.VerifyTime.Seconds())
	}
	fmt.Fprintf(w, "%s  %d bytes\n", res.Path, res.Size)
	for _, m := range res.Members {
		fmt.Fprintf(w, "  %-48s %14d  blake3:%s\n", m.Name, m.Size, m.BLAKE3)
	}
	for _, p := range res.Removed {
		fmt.Fprintf(w, "  removed %s\n", p)
	}
	if res.SealTime > 0 {
		fmt.Fprintf(w, "  sealed in %.2fs (fsync %.2fs), read-back finished %.2fs later, total %.2fs\n",
			res.SealTime.Seconds(), res.SyncTime.Seconds(), res.VerifyTime.Seconds(), res.Total.Seconds())
	}
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("ntt-archiver verify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, "Usage: ntt-archiver verify ARCHIVE\n\nDecodes ARCHIVE and re-hashes every member against its manifest.\nExit status: 0 intact, 1 damaged or unreadable.\n")
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return 1
	}
	term := cli.IsTerminal(os.Stderr)
	prog := newProgress(stderr, term, slog.New(slog.NewJSONHandler(stderr, nil)))
	man, err := archive.VerifyWith(ctx, fl.Arg(0), archive.VerifyOptions{Progress: prog})
	prog.finish()
	if err != nil {
		fmt.Fprintf(stderr, "ntt-archiver: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK, medium %s, %d members\n", fl.Arg(0), man.Medium, len(man.Members))
	for _, m := range man.Members {
		fmt.Fprintf(stdout, "  %-48s %14d  blake3:%s\n", m.Name, m.Size, m.BLAKE3)
	}
	return 0
}

// progress draws one status line on a terminal (the seal and its
// read-back run side by side, so the line shows every running phase), or
// logs a JSON line per phase, per member and every few seconds otherwise.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	term   bool
	log    *slog.Logger
	phases []*phaseState
	last   time.Time
	drawn  bool
	member string
}

var phaseOrder = map[archive.Phase]int{archive.PhaseSeal: 0, archive.PhaseVerify: 1, archive.PhaseRecheck: 2}

type phaseState struct {
	name        archive.Phase
	total, done int64
	start, last time.Time
}

func newProgress(w io.Writer, term bool, log *slog.Logger) *progress {
	return &progress{w: w, term: term, log: log}
}

func (p *progress) phase(ph archive.Phase) *phaseState {
	for _, s := range p.phases {
		if s.name == ph {
			return s
		}
	}
	s := &phaseState{name: ph, start: time.Now()}
	p.phases = append(p.phases, s)
	// the seal before its read-back, whichever reported first
	slices.SortStableFunc(p.phases, func(a, b *phaseState) int {
		return cmp.Compare(phaseOrder[a.name], phaseOrder[b.name])
	})
	return s
}

func (p *progress) Start(ph archive.Phase, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.phase(ph)
	s.total, s.done, s.start = total, 0, time.Now()
	if !p.term {
		p.log.Info("phase started", "phase", string(ph), "bytes", total)
	}
}

func (p *progress) Member(ph archive.Phase, name string, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.member = name
	if !p.term {
		p.log.Info("member", "phase", string(ph), "member", name, "size", size)
	}
}

func (s *phaseState) rate(now time.Time) float64 {
	return float64(s.done) / max(now.Sub(s.start).Seconds(), 1e-3) / 1e6
}

func (p *progress) Bytes(ph archive.Phase, done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.phase(ph)
	s.done = done
	now := time.Now()
	if !p.term {
		if now.Sub(s.last) >= 5*time.Second {
			s.last = now
			p.log.Info("progress", "phase", string(ph), "bytes", done, "total", s.total, "mb_per_s", s.rate(now))
		}
		return
	}
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	line := "\r"
	for i, s := range p.phases {
		if i > 0 {
			line += " | "
		}
		line += fmt.Sprintf("%s %s", s.name, size(s.done))
		if s.total > 0 {
			line += fmt.Sprintf("/%s %3d%%", size(s.total), s.done*100/s.total)
		}
		line += fmt.Sprintf(" %.0f MB/s", s.rate(now))
	}
	fmt.Fprintf(p.w, "%s  %s\x1b[K", line, p.member)
	p.drawn = true
}

func (p *progress) Removed(path string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	switch {
	case err != nil && p.term:
		fmt.Fprintf(p.w, "not removed: %s: %v\n", path, err)
	case p.term:
		fmt.Fprintf(p.w, "removed %s\n", path)
	case err != nil:
		p.log.Error("source not removed", "path", path, "error", err.Error())
	default:
		p.log.Info("source removed", "path", path)
	}
}

func (p *progress) endLine() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// retryBound maps the flag's 0 ("do not wait") to the library's "none" (<0).
func retryBound(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
