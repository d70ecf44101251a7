package main

// The processing queue: several media in one command. Each ready medium
// goes through the same single-medium pipeline (pipeline.run), --jobs at a
// time, sharing one store, one catalog and one budget of copy workers. A
// medium that fails is recorded (medium.problems, as a single run does)
// and the queue goes on; a medium still being imaged or settling is left
// untouched and reported.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/cli"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
)

// largeImage is the size from which an image counts as a hard disk: at
// most one such medium is processed at a time, whatever --jobs says, so
// that two big disks do not fight over the same spindles and memory while
// the floppies and CDs (all below a DVD's 4.7 GB) go on beside it.
const largeImage = 5 << 30

// maxDefaultJobs caps the default --jobs: past it, media on the same
// images disk compete for its reads more than they overlap their
// per-medium waits (mount, syncs, archive).
const maxDefaultJobs = 4

// queueFlags are the options of the processing queue, added to the
// single-medium pipeline's flags.
type queueFlags struct {
	all               bool
	jobs              int
	order             string
	settle            time.Duration
	logFile           string
	archiveUnreadable bool
}

func addQueueFlags(fs *flag.FlagSet) *queueFlags {
	q := &queueFlags{}
	fs.BoolVar(&q.all, "all", false, "process every ready <hash>.img of --images (default "+defaultImages+")")
	fs.IntVar(&q.jobs, "jobs", 0, "media processed at a time (`N`; default min(cores, 4), at most one image ≥ 5 GiB at a time)")
	fs.StringVar(&q.order, "order", "size", "queue order: size (smallest first), name (hash) or mtime (oldest first)")
	fs.DurationVar(&q.settle, "settle", 30*time.Second, "an image or mapfile changed within `D` is left for a later run")
	fs.StringVar(&q.logFile, "log", "", "write the full log (JSON lines, Batch completed …) to `FILE`")
	fs.BoolVar(&q.archiveUnreadable, "archive-unreadable", false, "seal a medium with no readable filesystem into its archive anyway, with its reason")
	return q
}

// queued reports whether the command line asks for the queue: --all,
// --archive-unreadable (a queue decision, even for one image), or more
// than one image (the single form's optional second argument is a hash,
// never a name ending in .img).
func (q *queueFlags) queued(args []string) bool {
	if q.all || q.archiveUnreadable {
		return true
	}
	if len(args) < 2 {
		return false
	}
	for _, a := range args {
		if !strings.HasSuffix(a, ".img") {
			return false
		}
	}
	return true
}

// mediumResult is how one medium of the queue ended.
type mediumResult struct {
	Hash    string   `json:"medium_hash"`
	Image   string   `json:"image,omitempty"`
	Outcome string   `json:"outcome"` // archived | archived unreadable | failed | interrupted | skipped
	Phase   string   `json:"phase,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Seconds float64  `json:"seconds"`
	Metrics *Metrics `json:"metrics,omitempty"`
}

// runMetrics is the run's JSON metrics file.
type runMetrics struct {
	Started    time.Time      `json:"started"`
	Seconds    float64        `json:"total_seconds"`
	Jobs       int            `json:"jobs"`
	Workers    int            `json:"workers_per_job"`
	Order      string         `json:"order"`
	Media      []mediumResult `json:"media"`
	ExitStatus int            `json:"exit_status"`
}

type queue struct {
	c          config
	q          *queueFlags
	db         *pgxpool.Pool
	ignore     *enumerate.Matcher
	log        *slog.Logger
	out, errw  io.Writer
	jobs       int
	workersPer int
	running    *running // media whose job is under way (for a hard stop)
	bd         *board   // nil off a terminal

	mu      sync.Mutex
	results []mediumResult
}

func runQueue(c config, q *queueFlags, args []string, stdout, stderr io.Writer) int {
	if q.all && len(args) > 0 {
		fmt.Fprintln(stderr, "ntt-pipeline: --all takes no IMAGE arguments (it takes every <hash>.img of --images)")
		return 1
	}
	switch q.order {
	case "size", "name", "mtime":
	default:
		fmt.Fprintf(stderr, "ntt-pipeline: --order %q: must be size, name or mtime\n", q.order)
		return 1
	}
	if q.jobs < 0 || c.workers < 1 {
		fmt.Fprintln(stderr, "ntt-pipeline: --jobs and --workers must be positive")
		return 1
	}
	var ignore *enumerate.Matcher
	if c.ignore != "" {
		var err error
		if ignore, err = enumerate.LoadIgnoreFile(c.ignore); err != nil {
			fmt.Fprintf(stderr, "ntt-pipeline: %v\n", err)
			return 1
		}
	}
	var files []imageFile
	if q.all {
		if c.images == "" {
			c.images = defaultImages
		}
		var err error
		if files, err = scanImages(c.images); err != nil {
			fmt.Fprintf(stderr, "ntt-pipeline: %s: %v\n", c.images, err)
			return 1
		}
	} else {
		for _, a := range args {
			f, err := imageFileOf(a)
			if err != nil {
				fmt.Fprintf(stderr, "ntt-pipeline: %v\n", err)
				return 1
			}
			files = append(files, f)
		}
	}
	jobs := q.jobs
	if jobs == 0 {
		jobs = min(runtime.NumCPU(), maxDefaultJobs)
	}
	// The copy workers of all jobs stay within --workers.
	jobs = max(1, min(jobs, c.workers))
	tuneGC(jobs)

	busy := &running{}
	ctx, stop := stopOnSignals(stderr, func() { detachMounts(c.root, busy.list(), stderr) })
	defer stop()
	// The board (on a terminal) is drawn on stderr; log lines and, when
	// stdout is the same terminal, the start/end lines go above it.
	cb := cli.NewBoard(stderr, jobs, 200*time.Millisecond)
	defer cb.Close()
	bd := newBoard(cb)
	out := stdout
	if cb.Active() && cli.IsTerminal(stdout) {
		out = cb
	}
	log, closeLog, err := queueLogger(stderr, cb, bd, q.logFile, c.verbose)
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: --log: %v\n", err)
		return 1
	}
	defer closeLog()
	db, err := dbconn.Open(ctx, dbconn.Options{URL: c.db, Migrate: true, Logger: log,
		MaxConns: poolSize(c.workers, jobs),
		Private:  &dbconn.Private{Dir: c.state, Say: func(l string) { fmt.Fprintln(stderr, "ntt-pipeline:", l) }}})
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: %v\n", err)
		return 1
	}
	defer db.Close()

	r := readiness{work: c.work, procRoot: "/proc", settle: q.settle}
	media, err := r.classify(ctx, db, files, false)
	if err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: %v\n", err)
		return 1
	}
	qu := &queue{c: c, q: q, db: db, ignore: ignore, log: log, out: out, errw: stderr, running: busy, bd: bd}
	var todo []mediumStatus
	for _, m := range media {
		switch {
		case m.processable():
			todo = append(todo, m)
		case m.State == stateImaging || m.State == stateSettling:
			qu.results = append(qu.results, mediumResult{Hash: string(m.Hash), Image: m.Image, Outcome: "skipped", Phase: m.State, Reason: m.Detail})
			fmt.Fprintf(out, "skip     %s: %s (%s); it is taken on a later run\n", m.Hash, m.State, m.Detail)
		}
	}
	sortQueue(todo, q.order)
	qu.jobs = max(1, min(jobs, len(todo)))
	qu.workersPer = max(1, c.workers/qu.jobs)
	start := time.Now()
	if len(todo) > 0 {
		fmt.Fprintf(out, "%d media to process, %d at a time, %d copy workers each\n", len(todo), qu.jobs, qu.workersPer)
		var size int64
		for _, m := range todo {
			size += m.ImageBytes
		}
		bd.resize(qu.jobs)
		bd.setTotals(len(todo), size, len(qu.results))
		bd.tick(ctx)
		qu.process(ctx, todo)
	}
	cb.Close()
	code := qu.exitStatus(len(todo))
	qu.summary(stdout, len(todo))
	rm := runMetrics{Started: start.UTC(), Seconds: time.Since(start).Seconds(), Jobs: qu.jobs, Workers: qu.workersPer,
		Order: q.order, Media: qu.results, ExitStatus: code}
	path := c.metrics
	if path == "" {
		path = filepath.Join(c.work, "ntt-queue-"+start.UTC().Format("20060102T150405Z")+".metrics.json")
	}
	if err := writeJSONFile(path, rm); err != nil {
		fmt.Fprintf(stderr, "ntt-pipeline: writing run metrics %s: %v\n", path, err)
		return 1
	}
	fmt.Fprintf(stdout, "Run metrics written to %s\n", path)
	return code
}

// queueLogger logs routine lines (Info, and Debug with -v) to the --log
// file as JSON, and to stderr only warnings — or everything with -v.
func queueLogger(stderr io.Writer, cb *cli.Board, bd *board, logFile string, verbose bool) (*slog.Logger, func(), error) {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	var term slog.Handler
	if cb.Active() {
		term = terminalHandler(cb, level)
	} else {
		term = levelHandler{cli.NewLogger(stderr, verbose).Handler(), level}
	}
	hs := []slog.Handler{term}
	closeLog := func() {}
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, err
		}
		fileLevel := slog.LevelInfo
		if verbose {
			fileLevel = slog.LevelDebug
		}
		hs = append(hs, slog.NewJSONHandler(f, &slog.HandlerOptions{Level: fileLevel}))
		closeLog = func() { f.Close() }
	}
	var h slog.Handler = slog.NewMultiHandler(hs...)
	if bd != nil {
		h = phaseWatch{next: h, bd: bd}
	}
	return slog.New(h), closeLog, nil
}

// singleLogger is the single-medium run's logger: on a terminal, log
// lines clear the status line before they are printed (so the two never
// share a line) and only warnings and failures are shown unless -v; off
// a terminal, JSON lines as before. --log FILE gets the full log.
func (q *queueFlags) singleLogger(stderr io.Writer, status *cli.Status, verbose bool) (*slog.Logger, func(), error) {
	var term slog.Handler
	if cli.IsTerminal(stderr) {
		level := slog.LevelWarn
		if verbose {
			level = slog.LevelDebug
		}
		term = levelHandler{cli.NewStatusLogger(stderr, status, verbose).Handler(), level}
	} else {
		term = cli.NewLogger(stderr, verbose).Handler()
	}
	if q.logFile == "" {
		return slog.New(term), func() {}, nil
	}
	f, err := os.OpenFile(q.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewMultiHandler(term, slog.NewJSONHandler(f, &slog.HandlerOptions{Level: level}))), func() { f.Close() }, nil
}

// levelHandler passes on records at or above a level.
type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(a), h.min}
}
func (h levelHandler) WithGroup(n string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(n), h.min}
}

func sortQueue(todo []mediumStatus, order string) {
	sort.SliceStable(todo, func(i, j int) bool {
		a, b := todo[i], todo[j]
		switch order {
		case "size":
			if a.ImageBytes != b.ImageBytes {
				return a.ImageBytes < b.ImageBytes
			}
		case "mtime":
			if !a.ModTime.Equal(b.ModTime) {
				return a.ModTime.Before(b.ModTime)
			}
		}
		return a.Hash < b.Hash
	})
}

// scheduler hands out media in queue order, never two large ones at once:
// while a large medium runs, a free job takes the next small one, or waits.
type scheduler struct {
	mu      sync.Mutex
	cond    *sync.Cond
	todo    []mediumStatus
	large   bool // a large medium is running
	started int
}

func (s *scheduler) next(ctx context.Context) (mediumStatus, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if ctx.Err() != nil || len(s.todo) == 0 {
			return mediumStatus{}, 0, false
		}
		for i, m := range s.todo {
			if m.ImageBytes >= largeImage && s.large {
				continue
			}
			s.todo = append(s.todo[:i:i], s.todo[i+1:]...)
			if m.ImageBytes >= largeImage {
				s.large = true
			}
			s.started++
			return m, s.started, true
		}
		s.cond.Wait()
	}
}

func (s *scheduler) done(m mediumStatus) {
	s.mu.Lock()
	if m.ImageBytes >= largeImage {
		s.large = false
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (qu *queue) process(ctx context.Context, todo []mediumStatus) {
	s := &scheduler{todo: todo}
	s.cond = sync.NewCond(&s.mu)
	stopWake := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stopWake()
	n := len(todo)
	var wg sync.WaitGroup
	for job := range qu.jobs {
		wg.Go(func() {
			for {
				m, i, ok := s.next(ctx)
				if !ok {
					return
				}
				fmt.Fprintf(qu.out, "[%d/%d] start    %s (%s)\n", i, n, m.Hash, human(m.ImageBytes))
				qu.running.add(m.Hash)
				qu.bd.started(job, m.Hash)
				res := qu.runOne(ctx, m, job)
				qu.bd.ended(job, m.ImageBytes, res.Outcome == "failed" || res.Outcome == "interrupted")
				qu.running.remove(m.Hash)
				s.done(m)
				qu.mu.Lock()
				qu.results = append(qu.results, res)
				qu.mu.Unlock()
				qu.printEnd(i, n, res)
			}
		})
	}
	wg.Wait()
}

func (qu *queue) printEnd(i, n int, r mediumResult) {
	switch r.Outcome {
	case stateArchivedUnreadable:
		fmt.Fprintf(qu.out, "[%d/%d] %-8s %s in %.1fs: sealed unreadable: %s\n", i, n, "archived", r.Hash, r.Seconds, r.Reason)
	case "failed", "interrupted":
		fmt.Fprintf(qu.out, "[%d/%d] %-8s %s after %.1fs: %s: %s\n", i, n, r.Outcome, r.Hash, r.Seconds, r.Phase, oneLine(r.Reason, 200))
	default:
		extra := ""
		if r.Metrics != nil {
			extra = fmt.Sprintf(" (%d files, dedup %.0f %%)", r.Metrics.FilesCopied, r.Metrics.DedupRatePct)
		}
		fmt.Fprintf(qu.out, "[%d/%d] %-8s %s in %.1fs%s\n", i, n, r.Outcome, r.Hash, r.Seconds, extra)
	}
}

// runOne takes one medium through the single-medium pipeline.
func (qu *queue) runOne(ctx context.Context, m mediumStatus, job int) mediumResult {
	c := qu.c
	c.image, c.hash = m.Image, m.Hash
	if qu.q.all || c.images == "" {
		c.images = filepath.Dir(m.Image)
	}
	c.metrics = filepath.Join(c.work, m.Hash.Short()+".metrics.json")
	c.workers = qu.workersPer
	var errb bytes.Buffer
	status := cli.NewStatus(io.Discard) // off a terminal, the log says enough
	if qu.bd != nil {
		status = cli.NewStatusFunc(func(line string) { qu.bd.progress(job, line) })
	}
	p := &pipeline{c: c, db: qu.db, ignore: qu.ignore, log: qu.log.With("job", string(m.Hash)),
		out: io.Discard, errw: &errb, status: status}
	t := time.Now()
	code := p.run(ctx)
	res := mediumResult{Hash: string(m.Hash), Image: m.Image, Seconds: time.Since(t).Seconds(), Metrics: &p.m}
	switch code {
	case 0, 2:
		res.Outcome = "archived"
	default:
		res.Outcome = "failed"
		if ctx.Err() != nil {
			res.Outcome = "interrupted"
		}
		res.Reason = strings.TrimSpace(errb.String())
		for _, ph := range p.m.Phases {
			if ph.Outcome == "failed" {
				res.Phase, res.Reason = ph.Name, ph.Note
			}
		}
		if res.Outcome == "failed" && qu.q.archiveUnreadable && unreadableFailure(p) {
			why, err := qu.sealUnreadable(ctx, c, p.reader, res.Reason)
			res.Seconds = time.Since(t).Seconds()
			if err != nil {
				res.Phase, res.Reason = "archive-unreadable", fmt.Sprintf("not sealed: %v (%s: %s)", err, res.Phase, res.Reason)
				if !errors.Is(err, errReadable) {
					schema.MergeProblem(context.WithoutCancel(ctx), qu.db, m.Hash, "archive_failed", map[string]any{"error": err.Error(), "phase": "archive-unreadable"})
				}
				return res
			}
			res.Outcome, res.Phase, res.Reason = stateArchivedUnreadable, "", why
		}
	}
	return res
}

// unreadableFailure: the run failed where an unreadable medium fails —
// the mount, or the image reader finding no filesystem it can read (or a
// layout with none to read). sealUnreadable then decides from the image
// and the catalog.
func unreadableFailure(p *pipeline) bool {
	var pe *phaseError
	if !errors.As(p.failure, &pe) {
		return false
	}
	switch {
	case pe.phase == "mount":
		return true
	case pe.phase == "enumerate" && p.reader == readImage:
		return errors.Is(pe.err, imagefs.ErrNothingReadable) || errors.Is(pe.err, loopdev.ErrNothingMounted) ||
			errors.Is(pe.err, loopdev.ErrErased)
	}
	return false
}

// exitStatus: 0 every ready medium archived, 1 at least one failed (or
// interrupted), 2 nothing to do.
func (qu *queue) exitStatus(todo int) int {
	if todo == 0 {
		return 2
	}
	for _, r := range qu.results {
		if r.Outcome == "failed" || r.Outcome == "interrupted" {
			return 1
		}
	}
	// Media never started (stopped by a signal) are not archived.
	done := 0
	for _, r := range qu.results {
		if r.Outcome != "skipped" {
			done++
		}
	}
	if done < todo {
		return 1
	}
	return 0
}

func (qu *queue) summary(w io.Writer, todo int) {
	if todo == 0 {
		fmt.Fprintln(w, "Nothing to do: no ready medium (every medium is archived, being imaged or settling).")
	}
	if len(qu.results) == 0 {
		return
	}
	rs := append([]mediumResult(nil), qu.results...)
	rank := map[string]int{"archived": 0, "archived unreadable": 1, "failed": 2, "interrupted": 3, "skipped": 4}
	sort.SliceStable(rs, func(i, j int) bool {
		if rank[rs[i].Outcome] != rank[rs[j].Outcome] {
			return rank[rs[i].Outcome] < rank[rs[j].Outcome]
		}
		return rs[i].Hash < rs[j].Hash
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEDIUM\tOUTCOME\tPHASE\tSECONDS\tDETAIL")
	counts := map[string]int{}
	for _, r := range rs {
		counts[r.Outcome]++
		phase, detail := r.Phase, oneLine(r.Reason, 80)
		if phase == "" {
			phase = "-"
		}
		if r.Outcome == stateArchivedUnreadable {
			detail = oneLine(r.Reason, 80)
		} else if r.Outcome == "archived" && r.Metrics != nil {
			detail = fmt.Sprintf("%d files, dedup %.0f %%", r.Metrics.FilesCopied, r.Metrics.DedupRatePct)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\n", r.Hash, r.Outcome, phase, r.Seconds, detail)
	}
	tw.Flush()
	var parts []string
	for _, o := range []string{"archived", "archived unreadable", "failed", "interrupted", "skipped"} {
		if counts[o] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[o], o))
		}
	}
	if left := todo - (len(rs) - counts["skipped"]); left > 0 {
		parts = append(parts, fmt.Sprintf("%d not started", left))
	}
	fmt.Fprintln(w, strings.Join(parts, ", "))
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// poolSize is the catalog connections a run of jobs media at once needs.
// The jobs' copy workers (copier.PoolSize), each job's loader's two index
// builders and its own queries must find a connection without waiting on
// another job (which could be waiting on this one).
func poolSize(workers, jobs int) int32 { return copier.PoolSize(workers) + int32(4*jobs) }
