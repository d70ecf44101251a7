// Command ntt-loader loads a medium's raw enumeration file into the catalog
// (package loader). It is Phase 2 of the runbook:
//
//	time sudo bin/ntt-loader /tmp/${HASH_SHORT}.raw $HASH
//
// and `ntt-loader migrate` creates or upgrades the catalog's schema.
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
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loader"
)

const usage = `Usage: ntt-loader [options] RAW HASH
       ntt-loader migrate [--db URL]

Load the raw enumeration file RAW (from ntt-enum, or find -printf) of the
medium HASH into the catalog: one row per inode in inode_p_HASH, one row per
path in path_p_HASH, and the medium row, all in one transaction -- a failure
anywhere (a malformed record, a timeout, an interrupt) changes nothing.
RAW "-" reads standard input. The schema is created or upgraded first;
"migrate" does only that.

A medium that already has rows is refused unless you choose:
  --replace  swap its rows for this file's (their copy state is dropped)
  --append   add only the paths not catalogued yet; existing rows, copied
             or not, stay exactly as they are (an append that adds nothing
             changes nothing, enum_done included)

A medium that is already archived (copy_done or archive_path set) is
refused by any load that would give it files to copy again, unless:
  --replace --start-over
             catalog it again from scratch: swap its rows and, in the same
             transaction, clear copy_done and archive_path, so that the
             copier and the archiver run again (the existing archive file
             is left where it is)

Progress goes to stderr: a status line on a terminal, JSON log lines
otherwise (including "Deduplication completed in Xs"). The summary goes to
stdout: a table on a terminal, one JSON object otherwise.

Database: --db URL, else $NTT_DB_URL, else libpq's PG* variables (with
only PGHOST/PGPORT set, libpq's default database is your user name: set
PGDATABASE=copyjob for the runbook's). The first log line names it.
Exit status: 0 loaded; 1 error (nothing changed); 2 --append found nothing new.

Options:
`

func main() {
	// The loader's buffers are bounded (about 150 MiB at most); a soft
	// limit keeps the garbage collector from letting the heap double on
	// top of them. GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(200 << 20)
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

type config struct {
	db, ignore, root, image string
	replace, append         bool
	startOver               bool
	expect                  int64
	stmtTimeout, lockTimout time.Duration
	dbRetry                 time.Duration
	verbose                 bool
}

// parse accepts options before, between and after the operands, as the
// runbook's users type them.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return operands, nil
		}
		operands = append(operands, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("ntt-loader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.db, "db", "", "catalog database `URL` (default $NTT_DB_URL, then libpq's PG* variables)")
	fs.StringVar(&c.ignore, "ignore", "", "mark paths matching any regular expression in `FILE` as excluded (one per line, # comments)")
	fs.BoolVar(&c.replace, "replace", false, "replace the medium's existing rows (drops their copy state)")
	fs.BoolVar(&c.append, "append", false, "add only paths not catalogued yet, keep existing rows")
	fs.BoolVar(&c.startOver, "start-over", false, "with --replace: reload an archived medium, clearing its copy_done and archive_path")
	fs.StringVar(&c.root, "root", "", "walk root the paths are relative to (default: the first record's path)")
	fs.StringVar(&c.image, "image", "", "record `PATH` as the medium's image path")
	fs.Int64Var(&c.expect, "expect", 0, "the enumeration's record count `N`; warn if the file has another")
	fs.DurationVar(&c.stmtTimeout, "statement-timeout", loader.DefaultStatementTimeout, "give up on any statement running longer than `D`")
	fs.DurationVar(&c.lockTimout, "lock-timeout", loader.DefaultLockTimeout, "give up on any lock not granted within `D`")
	fs.DurationVar(&c.dbRetry, "db-retry", dbconn.DefaultRetry, "wait out a catalog outage for up to `D`, loading again from the start of RAW (not with RAW \"-\"; 0: do not)")
	fs.BoolVar(&c.verbose, "v", false, "log debug events")
	fs.Usage = func() {
		io.WriteString(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var operands []string
	if code, ok := cli.ParseFlags(fs, stdout, stderr, func() (err error) { operands, err = parse(fs, args); return err }); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ntt-loader: "+format+"\n", a...)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(operands) == 1 && operands[0] == "migrate" {
		pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, Migrate: true, MaxConns: 2, Logger: cli.NewLogger(stderr, c.verbose), Private: dbconn.Announce("ntt-loader", stderr)})
		if err != nil {
			return fail("%v.", err)
		}
		var name string
		pool.QueryRow(ctx, `SELECT current_database()`).Scan(&name) //nolint:errcheck // only for the message
		pool.Close()
		fmt.Fprintf(stdout, "✓ Catalog schema of database %q is at version %d\n", name, schema.Version)
		return 0
	}
	if len(operands) != 2 {
		return fail("expected RAW HASH (or migrate), got %d argument(s); see --help.", len(operands))
	}
	rawPath, hashArg := operands[0], operands[1]
	// The hash first: it becomes table names, so nothing happens before it
	// is known to be one.
	h, err := medium.Parse(hashArg)
	if err != nil {
		return fail("%v.", err)
	}
	if c.replace && c.append {
		return fail("--replace and --append exclude each other.")
	}
	if c.startOver && !c.replace {
		return fail("--start-over goes with --replace (it reloads an archived medium from scratch).")
	}
	mode := loader.Refuse
	switch {
	case c.replace:
		mode = loader.Replace
	case c.append:
		mode = loader.Append
	}
	var ignore *enumerate.Matcher
	if c.ignore != "" {
		if ignore, err = enumerate.LoadIgnoreFile(c.ignore); err != nil {
			return fail("%v.", err)
		}
	}
	var raw io.Reader = stdin
	var rawSize int64
	if rawPath != "-" {
		f, err := os.Open(rawPath)
		if err != nil {
			return fail("raw file: %v.", errors.Unwrap(err))
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			rawSize = fi.Size()
		}
		raw = f
	}

	term := cli.IsTerminal(stderr)
	status := cli.NewStatus(stderr)
	log := cli.NewStatusLogger(stderr, status, c.verbose)
	pool, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, Migrate: true, MaxConns: 4, Logger: log, Private: dbconn.Announce("ntt-loader", stderr)})
	if err != nil {
		return fail("%v.", err)
	}
	defer pool.Close()

	opts := loader.Options{
		Root: c.root, Ignore: ignore, Mode: mode, StartOver: c.startOver, ImagePath: c.image, ExpectedRecords: c.expect,
		StatementTimeout: nonZero(c.stmtTimeout), LockTimeout: nonZero(c.lockTimout), DBRetry: nonZero(c.dbRetry), Logger: log,
	}
	var prog *progress
	if term {
		prog = &progress{status: status, size: rawSize, start: time.Now()}
		opts.Progress = prog
		done := make(chan struct{})
		defer close(done)
		go cli.Redraw(done, 200*time.Millisecond, prog.draw)
	}
	st, err := loader.Load(ctx, pool, string(h), raw, opts)
	if prog != nil {
		prog.stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			return fail("interrupted while loading %s into medium %s; nothing was changed.", rawPath, h)
		}
		return fail("loading %s: %v.", rawPath, strings.TrimSuffix(err.Error(), "."))
	}
	if term {
		printTable(stdout, rawPath, &st)
	} else {
		printJSON(stdout, rawPath, &st)
	}
	if st.RecordCountDiffers() {
		fmt.Fprintf(stderr, "⚠ the enumeration reported %d records but %s holds %d: check the enumeration log.\n",
			st.ExpectedRecords, rawPath, st.Records)
	}
	if mode == loader.Append && st.Paths == 0 {
		return 2
	}
	return 0
}

// nonZero maps an explicit 0 ("no limit") to the library's "none" (<0).
func nonZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// progress draws the status line: records, rate, share of the file, ETA.
type progress struct {
	status          *cli.Status
	size            int64
	start           time.Time
	mu              sync.Mutex
	phase           string
	phaseStart      time.Time
	records, offset int64
	stopped         bool
}

func (p *progress) Phase(name string) {
	p.mu.Lock()
	p.phase, p.phaseStart = name, time.Now()
	p.mu.Unlock()
	p.draw()
}

func (p *progress) Records(records, offset int64) {
	p.mu.Lock()
	p.records, p.offset = records, offset
	p.mu.Unlock()
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.phase == "" {
		return
	}
	el := time.Since(p.phaseStart)
	if p.phase != loader.PhaseRead {
		p.status.Set("%s … %s", p.phase, el.Round(100*time.Millisecond))
		return
	}
	line := fmt.Sprintf("read: %s records  %s", cli.Group(p.records), cli.Rate(float64(p.records), el))
	if p.size > 0 {
		line += fmt.Sprintf("  %3.0f%%  ETA %s", 100*float64(p.offset)/float64(p.size),
			cli.ETA(float64(p.offset), float64(p.size), el))
	}
	p.status.Set("%s", line)
}

func (p *progress) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.status.Clear()
}

func printTable(w io.Writer, raw string, st *loader.Stats) {
	fmt.Fprintf(w, "✓ Loaded %s into medium %s (%s)\n", raw, st.Medium, st.Mode)
	row := func(name string, n int64) { fmt.Fprintf(w, "  %-18s %12s\n", name, cli.Group(n)) }
	row("records", st.Records)
	row("inodes", st.Inodes)
	row("paths", st.Paths)
	row("excluded paths", st.ExcludedPaths)
	row("excluded inodes", st.ExcludedInodes)
	row("non-files", st.NonFiles)
	row("duplicate paths", st.DuplicatePaths)
	if st.Mode == loader.Append {
		row("existing paths", st.ExistingPaths)
	}
	if st.Mode == loader.Replace {
		row("replaced inodes", st.ReplacedInodes)
		row("replaced paths", st.ReplacedPaths)
	}
	if st.StartedOver {
		fmt.Fprintf(w, "  started over: copy_done and archive_path cleared; copy and archive the medium again\n")
	}
	var parts []string
	for _, p := range st.Phases {
		parts = append(parts, fmt.Sprintf("%s %.2fs", p.Name, p.Duration.Seconds()))
	}
	fmt.Fprintf(w, "  phases: %s; total %.2fs\n", strings.Join(parts, ", "), st.Total.Seconds())
}

func printJSON(w io.Writer, raw string, st *loader.Stats) {
	phases := map[string]float64{}
	for _, p := range st.Phases {
		phases[p.Name] = p.Duration.Seconds()
	}
	out := map[string]any{
		"medium": st.Medium, "raw": raw, "mode": st.Mode.String(), "root": st.Root,
		"records": st.Records, "expected_records": st.ExpectedRecords,
		"inodes": st.Inodes, "paths": st.Paths, "excluded_paths": st.ExcludedPaths,
		"excluded_inodes": st.ExcludedInodes, "non_files": st.NonFiles, "duplicate_paths": st.DuplicatePaths,
		"existing_paths": st.ExistingPaths, "replaced_inodes": st.ReplacedInodes, "replaced_paths": st.ReplacedPaths, "started_over": st.StartedOver,
		"phases_s": phases, "total_s": st.Total.Seconds(),
	}
	json.NewEncoder(w).Encode(out)
}
