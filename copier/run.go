package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
)

// Defaults of Options (the seed's paths).
const (
	DefaultStore        = "/data/cold"
	DefaultMountRoot    = "/mnt/ntt"
	DefaultBatchSize    = 1000
	DefaultLease        = 5 * time.Minute
	DefaultStallTimeout = 10 * time.Minute
	// DefaultWorkers is the default bound of Options.Workers.
	DefaultWorkers = 8
)

// batchBytes bounds a batch by the catalogued size of its files: a claim
// takes no more files than fit (and at least one), so a batch of large
// files is committed, and its claims are free for idle workers, every
// gigabyte or so (a variable for tests).
var batchBytes int64 = 1 << 30

// Options of Run.
type Options struct {
	// Medium to copy (required).
	Medium string
	// WorkerID is recorded in claimed_by; one id is one process at a time
	// (default <hostname>-<pid>).
	WorkerID string
	// Workers bounds the number of concurrent workers in this process
	// (default DefaultWorkers); how many copy at once within the bound is
	// found by measuring the throughput as the run goes (see the package
	// documentation, "Concurrency"), unless FixedWorkers is set.
	Workers int
	// FixedWorkers runs exactly Workers workers, without measuring (no
	// more than the medium has batches, either way).
	FixedWorkers bool
	// BatchSize is the number of inodes per claim and per catalog
	// transaction (default 1000). A batch holds fewer when its files add
	// up to more than 1 GiB, or when the medium has fewer than BatchSize
	// unfinished files per worker.
	BatchSize int
	// Limit stops after this many inodes were processed (0: no limit).
	Limit int64
	// StoreRoot is the content store (default /data/cold); MountRoot holds
	// the medium's mount at <MountRoot>/<hash> (default /mnt/ntt).
	StoreRoot string
	MountRoot string
	// Image, when set, is the medium's image file: its files are read
	// from it in user space (package imagefs; no mount, no root) instead
	// of beneath MountRoot, in image byte order. CodePage is the code
	// page of 8.3 FAT names there (default cp437).
	Image    string
	CodePage string
	// KernelOnly reads a mounted medium's files through the mount only,
	// never an ext filesystem's straight from its block device (see the
	// package documentation, "Mount or image").
	KernelOnly bool
	// DryRun reads and hashes the pending files and reports what would be
	// stored, without claiming, writing the store or touching the catalog.
	DryRun bool
	// Policy decides about failures (nil: SimplePolicy).
	Policy Policy
	// Damage, when set, records each copied file's damaged ranges.
	Damage DamageMapper
	// Lease: a claim not renewed for this long may be taken by another
	// worker (default 5 minutes; renewed every Lease/3).
	Lease time.Duration
	// StallTimeout: a worker stuck this long in one file (a read that never
	// returns on a failing image) ends the run with ErrStalled, recorded as
	// the medium problem copy_stalled (default 10 minutes; <0 disables).
	StallTimeout time.Duration
	// DBRetry is how long a catalog outage (a database restart, a lost
	// connection) is waited out: each catalog step is retried with backoff
	// for this long while the files being read are kept, the worker lock
	// is taken again, and the run goes on. Only a longer outage ends the
	// run, with an error wrapping dbconn.ErrUnavailable (0: 2 minutes;
	// <0: no retry).
	DBRetry time.Duration
	// Logger receives the log lines ("Batch completed", "DIAGNOSTIC
	// CHECKPOINT", "SKIPPED …"); nil is silent.
	Logger *slog.Logger
	// Progress, when set, is told about every file and batch.
	Progress Progress
}

// Totals is what was left to copy when a run started.
type Totals struct {
	Files, Bytes int64
	Claimed      int64 // of Files, claimed by other workers at the start
}

// FileResult is one processed inode.
type FileResult struct {
	Dev, Ino, Size int64
	Path           []byte // the first catalogued path
	Blob           string
	New, Deduped   bool
	BytesRead      int64
	BytesWritten   int64
	Err            error  // non-nil: the attempt failed
	Action         Action // what the failure led to
}

// BatchResult is one committed batch.
type BatchResult struct {
	Worker                              int
	Files, Copied, Failed, New, Deduped int
	Skipped, GaveUp, Released, Excluded int
	BytesRead, BytesWritten             int64
	Duration                            time.Duration
	Lost                                int64
	Held                                bool // held by row lock, not claimed (see Holds)
}

// Progress receives a run's events. FileDone and BatchDone are called from
// the workers concurrently.
type Progress interface {
	Started(Totals)
	FileDone(FileResult)
	BatchDone(BatchResult)
}

// Stats summarise a run.
type Stats struct {
	Start        Totals // left to copy at the start
	Processed    int64  // inodes attempted (copied or failed)
	Copied       int64  // inodes copied (status success)
	New          int64  // of Copied, whose blob this run created
	Deduped      int64  // of Copied, whose blob was stored already
	BytesRead    int64  // bytes read from the medium
	BytesWritten int64  // bytes of the blobs this run stored (new blobs)
	// BytesDiscarded were streamed into an unnamed file for a large file
	// whose blob turned out to exist already, and dropped (files above
	// 16 MiB are hashed while written, to read the medium only once).
	BytesDiscarded int64
	// FromDevice counts the files of Copied read straight from an ext
	// mount's block device instead of through the mount (extsource.go).
	FromDevice   int64
	Errors       int64 // failed attempts
	Retried      int64 // of Errors, released for another try
	Skipped      int64 // of Errors, auto-skipped (DIAGNOSTIC_SKIP)
	GaveUp       int64 // of Errors, given up (failed_retryable / failed_permanent)
	Excluded     int64 // inodes without a non-excluded path, marked EXCLUDED
	Released     int64 // claims given back unprocessed (interrupted)
	Lost         int64 // copied inodes whose claim had expired meanwhile
	Links        int64 // tree hardlinks made or kept
	LinkCopies   int64 // tree paths that got a copy (EMLINK)
	TreeDirs     int64 // directories recreated in the tree
	TreeSymlinks int64 // symlinks recreated in the tree
	TreeErrors   int64 // directories or symlinks that could not be recreated
	Batches      int64
	Elapsed      time.Duration
	// Complete: no file inode of the medium is left pending or claimed.
	Complete bool
}

// lockWait is how long Run waits for the lock of its worker id: a process
// killed a moment ago may still hold it while its session closes.
var lockWait = 5 * time.Second

// Errors a run may end with.
var (
	// ErrStalled: a worker made no progress for Options.StallTimeout.
	ErrStalled = errors.New("copying stalled")
	// ErrInvalidOptions wraps every problem with the options.
	ErrInvalidOptions = errors.New("invalid copier options")
)

type counters struct {
	processed, copied, newBlobs, deduped, read, written        atomic.Int64
	errors, retried, skipped, gaveUp, excluded, released, lost atomic.Int64
	links, linkCopies, dirs, symlinks, treeErrors, batches     atomic.Int64
	discarded, fromDevice                                      atomic.Int64
}

type run struct {
	db     *pgxpool.Pool
	o      Options
	h      medium.Hash
	src    mediumSource
	store  *Store
	tree   *tree
	log    *slog.Logger
	policy Policy
	st     counters
	quota  atomic.Int64
	// claimSize is how many inodes one claim asks for: BatchSize, or less
	// on a small medium so that every worker gets some; spawn is how many
	// workers the run starts: Workers, or as many as the medium has
	// batches.
	claimSize int
	spawn     int
	mime      mimeCache
	blobs     blobSet // blobs rows committed by this run

	mu       sync.Mutex
	cursor   key
	inflight map[key]struct{}
	// gaveBack: since the claims last went back to the start, a batch of
	// this run gave inodes back to pending (a retry, a release, a blob
	// found quarantined), perhaps behind the cursor (see nextBatch).
	gaveBack bool
	// sweptAt is the run's copied count when its cursor last went back to
	// the start after running out of work; flying counts the batches
	// taken and not yet committed or dropped (see nextBatch).
	sweptAt  int64
	flying   int
	failedIn map[key]bool // inodes that failed in this run (true: later copied)
	failing  int64        // of failedIn, not copied since
	rateFlag bool

	orphans singleflight.Group // one release of orphaned claims at a time (nextBatch)

	lastMove []atomic.Int64 // per worker: unix nanos of the last progress
	stuck    chan struct{}  // after a stall: closed when every worker has returned

	retry dbconn.Retry // waits out catalog outages
	// claimMu: claims (read) against the release of stray claims (write),
	// so that a claim is in inflight before strays are looked for.
	claimMu  sync.RWMutex
	lockMu   sync.Mutex
	lockConn *pgxpool.Conn // holds the worker's advisory lock
	lockDown time.Time     // when the lock's session was found gone (zero: held)

	source sourceWatch // the medium's health, as the policy sees it
	tune   *tuner      // how many workers copy at once

	// holdSlots bounds the batches held by row lock at once (see Holds),
	// each on a connection of its own until it commits: two a worker (the
	// batch it copies, the one it commits), and no more than the pool's
	// connections but three, for the worker lock, claims and the rest.
	holdSlots chan struct{}
	holds     map[*hold]struct{} // live holds (mu), for abandonHolds
}

// abandonHolds ends the sessions of the holds still live when a run gives
// up on a stalled worker, which may stay blocked in a read for as long as
// the process lives: PostgreSQL then rolls them back, and their rows are
// pending again for the next run instead of locked by a connection the
// worker still has. Each session is waited for (up to 5 s) until it is
// gone and its locks with it.
func (r *run) abandonHolds(ctx context.Context) {
	r.mu.Lock()
	var pids []int32
	for hd := range r.holds {
		pids = append(pids, int32(hd.pid.Load()))
	}
	r.mu.Unlock()
	if len(pids) == 0 {
		return
	}
	if _, err := r.db.Exec(ctx, `SELECT pg_terminate_backend(p, 5000) FROM unnest($1::int[]) AS p`, pids); err != nil {
		r.log.Warn("could not end the stalled run's held batches; their rows stay locked until this process exits",
			"medium", r.h, "err", err)
	}
}

// PoolSize is the connections a pool needs for Run with workers workers
// to hold every batch of small files it may (two a worker: the one it
// copies, the one it commits) besides its worker lock, claims and the
// rest.
func PoolSize(workers int) int32 { return int32(2*workers + 4) }

// track registers a batch holdBatch held (if any) for abandonHolds until
// its hold ends; cut (holdBatch claimed a prefix of what it had locked)
// means that inodes may lie behind the cursor (see nextBatch).
func (r *run) track(held *hold, cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaveBack = r.gaveBack || cut
	if held == nil {
		return
	}
	r.holds[held] = struct{}{}
	give := held.done
	held.done = func() {
		r.mu.Lock()
		delete(r.holds, held)
		r.mu.Unlock()
		give()
	}
}

// spareConnections is how many more client connections the server
// accepts now, -1 if it does not say.
func spareConnections(ctx context.Context, q querier) int {
	free := -1
	if err := q.QueryRow(ctx, `SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int
		- (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')`).Scan(&free); err != nil {
		return -1
	}
	return free
}

// holdBudget is how many batches a run may hold at once (see Holds): two
// a worker, no more than a pool of maxConns connections can give besides
// three (the worker lock, claims and the rest), and no more than half the
// connections the server has to spare when the run starts (free, -1:
// unknown), so that copiers started side by side share what is left
// instead of taking every connection the server allows.
func holdBudget(maxConns, workers, free int) int {
	n := min(maxConns-3, 2*workers)
	if free >= 0 {
		n = min(n, free/2)
	}
	return max(n, 0)
}

// takeHoldSlot reports whether a batch may be held now, taking the slot.
func (r *run) takeHoldSlot() bool {
	select {
	case r.holdSlots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (r *run) giveHoldSlot() { <-r.holdSlots }

func (o *Options) defaults() error {
	if _, err := medium.Parse(o.Medium); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if o.WorkerID == "" {
		host, _ := os.Hostname()
		o.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if len(o.WorkerID) > 200 || !utf8.ValidString(o.WorkerID) || strings.ContainsAny(o.WorkerID, "\x00\n\r") {
		return fmt.Errorf("%w: worker id %q: at most 200 bytes of UTF-8 on one line", ErrInvalidOptions, o.WorkerID)
	}
	if strings.HasPrefix(o.WorkerID, "DIAGNOSTIC_SKIP") || o.WorkerID == "NON_FILE" || o.WorkerID == "EXCLUDED" {
		return fmt.Errorf("%w: worker id %q is a reserved claimed_by value", ErrInvalidOptions, o.WorkerID)
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize > 100000 {
		return fmt.Errorf("%w: batch size %d: at most 100000", ErrInvalidOptions, o.BatchSize)
	}
	if o.Limit < 0 {
		return fmt.Errorf("%w: negative limit %d", ErrInvalidOptions, o.Limit)
	}
	if o.StoreRoot == "" {
		o.StoreRoot = DefaultStore
	}
	if o.MountRoot == "" {
		o.MountRoot = DefaultMountRoot
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Lease < time.Second {
		return fmt.Errorf("%w: lease %v: at least 1s", ErrInvalidOptions, o.Lease)
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	return nil
}

// Run copies the pending file inodes of one medium into the store (see the
// package documentation). It returns when nothing is left that this
// process may claim, the limit is reached, or ctx is cancelled; in the last
// case the current files are finished, the batch is committed, the
// unprocessed claims are released, and the error wraps context.Canceled.
//
// db needs at least 2 connections; Run keeps one for its worker lock and,
// while batches are held by row lock, one for each (see holdBudget): a
// pool of PoolSize(Workers) lets every batch of small files be held when
// the server has connections to spare.
func Run(ctx context.Context, db *pgxpool.Pool, opts Options) (Stats, error) {
	start := time.Now()
	if err := opts.defaults(); err != nil {
		return Stats{}, err
	}
	h := medium.Hash(opts.Medium) // validated by defaults
	r := &run{db: db, o: opts, h: h, log: opts.Logger, policy: opts.Policy,
		inflight: map[key]struct{}{}, failedIn: map[key]bool{}, cursor: cursorStart}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.policy == nil {
		r.policy = SimplePolicy{}
	}
	r.retry = dbconn.Retry{Bound: opts.DBRetry, Logger: r.log, OnRetry: r.outageIsNoStall}
	if opts.Limit > 0 {
		r.quota.Store(opts.Limit)
	} else {
		r.quota.Store(math.MaxInt64)
	}
	stats := func() Stats { s := r.stats(); s.Elapsed = time.Since(start); return s }

	if db.Config().MaxConns < 2 {
		return Stats{}, fmt.Errorf("%w: the pool needs at least 2 connections (one holds the worker lock), has %d",
			ErrInvalidOptions, db.Config().MaxConns)
	}
	r.holdSlots = make(chan struct{}, holdBudget(int(db.Config().MaxConns), opts.Workers, spareConnections(ctx, db)))
	r.holds = map[*hold]struct{}{}
	if err := schema.CheckAttached(ctx, db, h); err != nil {
		if errors.Is(err, schema.ErrNotAttached) {
			err = fmt.Errorf("%w; load the medium first (ntt-loader RAW %s)", err, h)
		}
		return Stats{}, err
	}
	var err error
	// The medium's and the store's descriptors are closed when Run returns,
	// or, after a stall, once the stuck workers return (if ever): a
	// descriptor number must not be reused under a worker that wakes up.
	defer r.closeResources()
	if r.src, err = openMediumSource(ctx, opts, h, r.log); err != nil {
		return Stats{}, err
	}
	if !opts.DryRun {
		if r.store, err = OpenStore(opts.StoreRoot); err != nil {
			return Stats{}, err
		}
		if r.tree, err = r.store.openTree(h); err != nil {
			return Stats{}, err
		}
	} else if r.store, err = openStoreReadOnly(opts.StoreRoot); err != nil {
		return Stats{}, err
	}

	if err := r.watchSource(ctx); err != nil {
		return Stats{}, err
	}

	if !opts.DryRun {
		if err := ensureIndexes(ctx, db, h); err != nil {
			r.log.Warn("could not create the copier's indexes; claims will be slower", "medium", h, "err", err)
		}
		conn, err := holdWorkerLock(ctx, db, h, opts.WorkerID, lockWait)
		if err != nil {
			return Stats{}, err
		}
		r.lockConn = conn
		defer func() {
			// Whatever happened, no claim of ours outlives the run: after
			// an outage longer than the bound, this tries a little longer
			// still; what it cannot release, the next run does.
			wctx := context.WithoutCancel(ctx)
			last := dbconn.Retry{Bound: min(r.retry.Limit(), releaseRetry), Logger: r.log}
			if r.retry.Limit() == 0 {
				last.Bound = -1
			}
			var n int64
			err := last.Do(wctx, "releasing claims", func() error {
				cctx, cancel := context.WithTimeout(wctx, 30*time.Second)
				defer cancel()
				var err error
				n, err = releaseOwn(cctx, db, h, opts.WorkerID)
				return err
			})
			if err != nil {
				r.log.Warn("could not release claims; the next run of the copier releases them", "medium", h,
					"worker", opts.WorkerID, "err", err)
			} else if n > 0 {
				r.log.Info("released unprocessed claims", "medium", h, "worker", opts.WorkerID, "claims", n)
			}
			r.lockMu.Lock()
			if r.lockConn != nil {
				releaseWorkerLock(r.lockConn, h, opts.WorkerID)
				r.lockConn = nil
			}
			r.lockMu.Unlock()
		}()
		var n int64
		if err := r.catalog(ctx, "releasing orphaned claims", func(cctx context.Context) (err error) {
			n, err = releaseOrphans(cctx, db, h, opts.WorkerID, opts.Lease, true)
			return err
		}); err != nil {
			return Stats{}, err
		} else if n > 0 {
			r.log.Info("released orphaned claims", "medium", h, "claims", n)
		}
	}

	var files, bytes, claimed int64
	if err := r.catalog(ctx, "counting the files left", func(cctx context.Context) (err error) {
		files, bytes, claimed, err = Remaining(cctx, db, string(h))
		return err
	}); err != nil {
		return Stats{}, err
	}
	startTotals := Totals{Files: files, Bytes: bytes, Claimed: claimed}
	if opts.Progress != nil {
		opts.Progress.Started(startTotals)
	}
	// Every worker gets a share, however small the medium. Claims of
	// others count: they come back if their worker turns out dead.
	active := int64(tuneFirst(opts.Workers, opts.FixedWorkers))
	r.claimSize = int(min(int64(opts.BatchSize), max((files+active-1)/active, 1)))
	// A worker beyond the medium's batches would only ask for one, find
	// none and release orphans: on a floppy, most of eight did.
	// A claim also stops at batchBytes: large files make more batches.
	batches := max((files+int64(r.claimSize)-1)/int64(r.claimSize), min(files, (bytes+batchBytes-1)/batchBytes))
	r.spawn = int(min(int64(opts.Workers), batches))
	r.tune = newTuner(max(r.spawn, 1), opts.FixedWorkers)
	r.log.Info("copy started", "medium", h, "worker", opts.WorkerID, "workers_max", opts.Workers,
		"workers", r.tune.current(), "workers_started", r.spawn, "fixed_workers", opts.FixedWorkers,
		"batch_size", opts.BatchSize, "hold_slots", cap(r.holdSlots), "pending_files", files, "pending_bytes", bytes, "dry_run", opts.DryRun)

	var runErr error
	if files-claimed > 0 {
		runErr = r.copyAll(ctx)
	}
	s := stats()
	s.Start = startTotals
	if !opts.DryRun && runErr == nil {
		s.Complete = r.finish(ctx, s.Errors == 0)
	}
	s = mergeTree(s, r.stats())
	s.Elapsed = time.Since(start)
	if runErr == nil && ctx.Err() != nil {
		runErr = fmt.Errorf("medium %s: copy interrupted: %w", h, context.Cause(ctx))
	}
	return s, runErr
}

func (r *run) closeResources() {
	closeAll := func() {
		if r.tree != nil {
			r.tree.close()
		}
		if r.store != nil {
			r.store.Close()
		}
		if r.src != nil {
			r.src.close()
		}
	}
	if r.stuck != nil {
		go func() { <-r.stuck; closeAll() }()
		return
	}
	closeAll()
}

func mergeTree(s, t Stats) Stats {
	s.TreeDirs, s.TreeSymlinks, s.TreeErrors = t.TreeDirs, t.TreeSymlinks, t.TreeErrors
	return s
}

func (r *run) stats() Stats {
	c := &r.st
	return Stats{
		Processed: c.processed.Load(), Copied: c.copied.Load(), New: c.newBlobs.Load(), Deduped: c.deduped.Load(),
		BytesRead: c.read.Load(), BytesWritten: c.written.Load(), Errors: c.errors.Load(), Retried: c.retried.Load(),
		Skipped: c.skipped.Load(), GaveUp: c.gaveUp.Load(), Excluded: c.excluded.Load(), Released: c.released.Load(),
		Lost: c.lost.Load(), Links: c.links.Load(), LinkCopies: c.linkCopies.Load(), TreeDirs: c.dirs.Load(),
		TreeSymlinks: c.symlinks.Load(), TreeErrors: c.treeErrors.Load(), Batches: c.batches.Load(),
		BytesDiscarded: c.discarded.Load(), FromDevice: c.fromDevice.Load(),
	}
}

// releaseOwn gives back every claim of worker on the medium.
func releaseOwn(ctx context.Context, q querier, h medium.Hash, worker string) (int64, error) {
	tag, err := q.Exec(ctx, fmt.Sprintf(`UPDATE %s SET claimed_by = NULL, claimed_at = NULL
		WHERE medium_hash = $1 AND NOT copied AND claimed_by = $2`, h.InodeTable()), string(h), worker)
	if err != nil {
		return 0, fmt.Errorf("medium %s: releasing claims of %s: %w", h, worker, err)
	}
	return tag.RowsAffected(), nil
}

// copyAll runs the workers, the lease heartbeat and the stall watchdog.
func (r *run) copyAll(ctx context.Context) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.lastMove = make([]atomic.Int64, r.spawn)
	errs := make(chan error, r.spawn)
	var wg sync.WaitGroup
	for i := range r.spawn {
		r.touch(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A worker that is done is never stalled.
			defer r.lastMove[i].Store(math.MaxInt64)
			if err := r.work(wctx, i); err != nil {
				errs <- err
				cancel(err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last := r.tune.current()
	go r.tune.climb(wctx, func(limit int, rate float64) {
		if limit != last {
			r.log.Info("workers copying", "medium", r.h, "worker", r.o.WorkerID, "workers", limit, "was", last,
				"work_mb_s", rate/1e6)
			last = limit
		}
	})

	beat := time.NewTicker(max(r.o.Lease/3, 100*time.Millisecond))
	defer beat.Stop()
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	lockCheck := time.NewTicker(lockCheckEvery)
	defer lockCheck.Stop()
	for {
		select {
		case <-lockCheck.C:
			if !r.o.DryRun {
				if err := r.checkLock(ctx); err != nil {
					r.log.Error("lost the worker lock: stopping", "medium", r.h, "worker", r.o.WorkerID, "err", err)
					cancel(err)
				}
			}
		case <-done:
			close(errs)
			return r.firstErr(errs)
		case <-beat.C:
			if !r.o.DryRun {
				r.heartbeat(ctx)
			}
		case <-watch.C:
			if err := r.checkStall(); err != nil {
				cancel(err)
				cctx, c2 := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				schema.MergeProblem(cctx, r.db, r.h, "copy_stalled", map[string]any{
					"worker_id": r.o.WorkerID, "timeout_s": r.o.StallTimeout.Seconds(), "error": err.Error()})
				c2()
				r.log.Error("copy stalled: giving up on this run", "medium", r.h, "err", err)
				// A worker blocked in a read cannot be waited for.
				select {
				case <-done:
				case <-time.After(min(5*time.Second, r.o.StallTimeout)):
					r.stuck = done
					cctx, c2 := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
					r.abandonHolds(cctx)
					c2()
				}
				return err
			}
		}
	}
}

// firstErr returns the first worker error, the one that ended the run:
// the others' come after it cancelled them (a retry cut short, the same
// lost source), and are logged only.
func (r *run) firstErr(errs chan error) error {
	var first error
	for e := range errs {
		if first == nil {
			first = e
		} else if e.Error() != first.Error() {
			r.log.Debug("a worker stopped after the run's first error", "medium", r.h, "err", e)
		}
	}
	return first
}

func (r *run) touch(wid int) {
	if wid < len(r.lastMove) {
		r.lastMove[wid].Store(time.Now().UnixNano())
	}
}

// outageIsNoStall counts waiting out a catalog outage as progress of every
// running worker: the stall watchdog is for a medium that stopped answering.
func (r *run) outageIsNoStall(string, error, time.Duration) {
	now := time.Now().UnixNano()
	for i := range r.lastMove {
		if t := r.lastMove[i].Load(); t != math.MaxInt64 {
			r.lastMove[i].CompareAndSwap(t, now)
		}
	}
}

func (r *run) checkStall() error {
	if r.o.StallTimeout < 0 {
		return nil
	}
	now := time.Now()
	for i := range r.lastMove {
		t := r.lastMove[i].Load()
		if t == math.MaxInt64 {
			continue
		}
		last := time.Unix(0, t)
		if idle := now.Sub(last); idle > r.o.StallTimeout {
			return fmt.Errorf("medium %s: worker %d made no progress for %v: %w", r.h, i, idle.Round(time.Second), ErrStalled)
		}
	}
	return nil
}

// lockCheckEvery is how often the worker lock's session is checked.
var lockCheckEvery = 5 * time.Second

// ErrLockLost: the session holding the worker lock ended (a lost
// connection) and the lock could not be taken again, so other workers may
// already treat this process's claims as orphans.
var ErrLockLost = errors.New("worker lock lost")

// checkLock makes sure the session holding the worker lock is alive; if it
// is not (a lost connection: the server released the lock and others may
// see our claims as orphans), it takes the lock again on a new session.
// While the catalog is unreachable it keeps trying, for as long as an
// outage is waited out (Options.DBRetry).
func (r *run) checkLock(ctx context.Context) error {
	err := r.relock(ctx)
	if err == nil || !dbconn.Retryable(err) {
		return err
	}
	r.lockMu.Lock()
	down := r.lockDown
	r.lockMu.Unlock()
	if limit := r.retry.Limit(); !down.IsZero() && time.Since(down) > limit {
		return fmt.Errorf("medium %s: worker %q: %w: %w for more than %v: %w", r.h, r.o.WorkerID, ErrLockLost,
			dbconn.ErrUnavailable, limit, err)
	}
	r.log.Warn("catalog unavailable: the worker lock will be taken again when it answers", "medium", r.h,
		"worker", r.o.WorkerID, "err", err)
	return nil
}

// relock takes the worker lock again if its session is gone. A busy lock
// (another process took our worker id meanwhile) is ErrLockLost.
func (r *run) relock(ctx context.Context) error {
	if r.o.DryRun {
		return nil
	}
	r.lockMu.Lock()
	defer r.lockMu.Unlock()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if r.lockConn != nil {
		err := r.lockConn.Ping(cctx)
		if err == nil {
			return nil
		}
		r.log.Warn("the worker lock's session is gone; taking the lock again", "medium", r.h, "worker", r.o.WorkerID, "err", err)
		r.lockConn.Conn().Close(cctx)
		r.lockConn.Release()
		r.lockConn = nil
		r.lockDown = time.Now()
	}
	conn, err := holdWorkerLock(cctx, r.db, r.h, r.o.WorkerID, time.Second)
	if err != nil {
		if errors.Is(err, ErrWorkerBusy) {
			return fmt.Errorf("medium %s: worker %q: %w: %w", r.h, r.o.WorkerID, ErrLockLost, err)
		}
		return err
	}
	if !r.lockDown.IsZero() {
		r.log.Info("worker lock taken again", "medium", r.h, "worker", r.o.WorkerID,
			"after_s", time.Since(r.lockDown).Seconds())
	}
	r.lockConn, r.lockDown = conn, time.Time{}
	return nil
}

// catalog runs one catalog step, waiting out an outage (Options.DBRetry).
// After a failed attempt, the next one first takes the worker lock again
// (the outage ended its session) and gives back claims of ours that no
// worker holds (a claim whose answer was lost may have committed).
func (r *run) catalog(ctx context.Context, what string, op func(ctx context.Context) error) error {
	failed := false
	return r.retry.Do(ctx, what+" of medium "+string(r.h), func() error {
		if failed {
			if err := r.relock(ctx); err != nil {
				return err
			}
			if err := r.releaseStray(ctx); err != nil {
				return err
			}
		}
		err := op(ctx)
		failed = err != nil
		return err
	})
}

// releaseStray gives back the claims of this worker id that are not in
// flight in this process.
func (r *run) releaseStray(ctx context.Context) error {
	if r.o.DryRun {
		return nil
	}
	r.claimMu.Lock()
	defer r.claimMu.Unlock()
	r.mu.Lock()
	keys := make([]key, 0, len(r.inflight))
	for k := range r.inflight {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	devs, inos := splitKeys(keys)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	tag, err := r.db.Exec(cctx, fmt.Sprintf(`UPDATE %s SET claimed_by = NULL, claimed_at = NULL
		WHERE medium_hash = $1 AND NOT copied AND claimed_by = $2
		  AND (dev, ino) NOT IN (SELECT * FROM unnest($3::bigint[], $4::bigint[]))`, r.h.InodeTable()),
		string(r.h), r.o.WorkerID, devs, inos)
	if err != nil {
		return fmt.Errorf("medium %s: releasing stray claims: %w", r.h, err)
	}
	if n := tag.RowsAffected(); n > 0 {
		r.log.Info("released claims whose answer was lost", "medium", r.h, "worker", r.o.WorkerID, "claims", n)
	}
	return nil
}

// releaseRetry bounds the last attempts to release this run's claims.
const releaseRetry = 10 * time.Second

// heartbeat renews this process's claims and releases those of dead workers.
func (r *run) heartbeat(ctx context.Context) {
	r.mu.Lock()
	keys := make([]key, 0, len(r.inflight))
	for k := range r.inflight {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	if err := renewClaims(ctx, r.db, r.h, r.o.WorkerID, keys); err != nil && ctx.Err() == nil {
		r.log.Warn("could not renew claims", "medium", r.h, "err", err)
	}
	if n, err := releaseOrphans(ctx, r.db, r.h, r.o.WorkerID, r.o.Lease, false); err != nil && ctx.Err() == nil {
		r.log.Warn("could not release orphaned claims", "medium", r.h, "err", err)
	} else {
		r.releasedOrphans(n)
	}
}

// releasedOrphans reports n claims released by releaseOrphans and, if any,
// marks that they may lie behind the cursor (see nextBatch).
func (r *run) releasedOrphans(n int64) {
	if n == 0 {
		return
	}
	r.log.Info("released orphaned claims", "medium", r.h, "claims", n)
	r.mu.Lock()
	r.gaveBack = true
	r.mu.Unlock()
}

// reserve takes up to n inodes from the limit.
func (r *run) reserve(n int) int {
	for {
		q := r.quota.Load()
		take := min(int64(n), q)
		if take <= 0 {
			return 0
		}
		if r.quota.CompareAndSwap(q, q-take) {
			return int(take)
		}
	}
}

func (r *run) unreserve(n int) {
	if n > 0 {
		r.quota.Add(int64(n))
	}
}

// work is one worker: claim a batch, copy it, commit it, until nothing is
// left, the limit is reached or ctx is done.
//
// A batch's sync and commit run while the worker claims and copies the
// next one (at most one batch is being finished per worker): a batch of
// small files spends as long in the catalog and in syncfs as in its reads,
// and the medium would sit idle meanwhile. The invariants hold as before:
// a batch's blobs are written before its sync starts and committed after
// it returns; a batch whose predecessor failed to finish is not recorded
// (its claims are released when the run ends).
func (r *run) work(ctx context.Context, wid int) error {
	w := newWorker(r, wid)
	defer w.close()
	var finishing chan error // the previous batch's finish, if one runs
	finished := func() error {
		if finishing == nil {
			return nil
		}
		err := <-finishing
		finishing = nil
		return err
	}
	defer finished()
	for ctx.Err() == nil {
		// Waiting for a turn is not a stall.
		r.lastMove[wid].Store(math.MaxInt64)
		ok := r.tune.enter(ctx)
		r.touch(wid)
		if !ok {
			break
		}
		n := r.reserve(r.claimSize)
		if n == 0 {
			r.tune.leave()
			return finished()
		}
		t0 := time.Now()
		batch, held, err := r.nextBatch(ctx, n)
		if err != nil {
			r.tune.leave()
			r.unreserve(n)
			return errors.Join(err, finished())
		}
		if len(batch) == 0 {
			r.tune.leave()
			r.unreserve(n)
			if finishing != nil {
				// The batch being finished may give inodes back (a
				// retry, a blob found quarantined): look again after it.
				if err := finished(); err != nil {
					return err
				}
				continue
			}
			return nil
		}
		t1 := time.Now()
		outs, abort := w.process(ctx, batch)
		r.tune.leave()
		times := batchTimes{claim: t1.Sub(t0), copy: time.Since(t1)}
		unused, copiedN, failedN := 0, 0, 0
		for _, o := range outs {
			switch o.kind {
			case released:
				unused++
			case copied:
				copiedN++
			case failed:
				failedN++
			}
		}
		r.unreserve(n - len(batch) + unused)
		if err := finished(); err != nil {
			held.end() // not recorded: its rows are pending again
			r.landed()
			return errors.Join(abort, err)
		}
		if abort != nil {
			_, err := r.finishBatch(ctx, wid, outs, held, t0, &times)
			r.landed()
			return errors.Join(abort, err)
		}
		finishing = make(chan error, 1)
		go func() {
			_, err := r.finishBatch(ctx, wid, outs, held, t0, &times)
			r.landed()
			finishing <- err
		}()
		if copiedN == 0 && failedN > 0 && failedN == len(outs) {
			// Only failures: give the medium a moment before the retries.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return finished()
}

// landed counts a batch taken by nextBatch as committed or dropped.
func (r *run) landed() {
	r.mu.Lock()
	r.flying--
	r.mu.Unlock()
}

// nextBatch claims up to n inodes from the cursor, releasing orphaned
// claims before it gives up. A catalog outage is waited out
// (Options.DBRetry).
//
// At the end of the medium it goes back to the start when something may be
// pending behind the cursor: inodes a batch of this run gave back (a retry,
// a release, a blob found quarantined), orphaned claims it released, or
// rows another process held when the cursor passed them and that came back
// when it died (see Holds: a hold ends with its process, and leaves no
// claim to release). The last is known only by looking, so the cursor goes
// back once after every pass that copied anything, when no batch of this
// run is in flight: a held batch whose connection died (a database restart)
// is pending too until its commit holds it again, and must not be copied
// twice. The worker whose batch lands last looks (work waits for its own
// batch before it gives up). A rewind for inodes given back does not wait,
// so that retries keep every worker; if a database restart cut a held
// batch's connection in that pass, a file of it may be read twice (its
// commit counts a row already copied to the same blob as recorded). The
// walk from the start, over the pending index's rows copied since, costs
// little now that a held batch writes its rows once (the 300k-file bench
// tree: the time from the last batch to the copy phase's end, 0.62-1.00 s
// in seven runs with it, 0.76-0.96 s in eight without, alternating, machine
// H, 2026-12-07: mostly the tree's directories; when every batch was
// claimed and written twice, such a walk cost 0.85 s by itself). An inode
// another live process gives back behind this run's cursor is that
// process's to claim again, as it goes back to the start itself; one left
// pending by a process that died after this run's last walk from the start
// waits for the next run (the count at the end then says the medium is not
// complete).
func (r *run) nextBatch(ctx context.Context, n int) ([]*inode, *hold, error) {
	// Claims are not cancelled half-way: a claim that commits while its
	// caller has gone would strand its rows until the end of the run.
	step := func(f func(cctx context.Context) error) error {
		return r.catalog(ctx, "claiming inodes", func(context.Context) error {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			return f(cctx)
		})
	}
	for {
		if r.o.DryRun {
			var batch []*inode
			err := step(func(cctx context.Context) (err error) {
				// Peeking claims nothing: the cursor must move under the lock.
				r.mu.Lock()
				defer r.mu.Unlock()
				batch, err = claimBatch(cctx, r.db, r.h, r.o.WorkerID, r.o.Lease, r.cursor, n, true)
				if err == nil && len(batch) > 0 {
					r.cursor = batch[len(batch)-1].key()
					r.flying++
				}
				return err
			})
			return batch, nil, err
		}
		r.mu.Lock()
		after := r.cursor
		r.mu.Unlock()
		var batch []*inode
		var held *hold
		err := step(func(cctx context.Context) (err error) {
			r.claimMu.RLock()
			defer r.claimMu.RUnlock()
			if r.takeHoldSlot() {
				var cut bool
				batch, held, cut, err = holdBatch(cctx, r.db, r.h, r.o.WorkerID, after, n, r.giveHoldSlot)
				r.track(held, cut)
			} else {
				batch, err = claimBatch(cctx, r.db, r.h, r.o.WorkerID, r.o.Lease, after, n, false)
			}
			if err != nil || len(batch) == 0 {
				return err
			}
			last := batch[len(batch)-1].key()
			r.mu.Lock()
			if compareKeys(r.cursor, last) < 0 {
				r.cursor = last
			}
			// Counted with the cursor's move: a worker that sees the
			// cursor unmoved sees this batch in flight.
			r.flying++
			if held == nil { // held rows need no renewal and are no stray claims
				for _, b := range batch {
					r.inflight[b.key()] = struct{}{}
				}
			}
			r.mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if len(batch) > 0 {
			return batch, held, nil
		}
		if after != cursorStart {
			r.mu.Lock()
			moved := r.cursor != after // another worker claimed further on
			// See above; the copied count bounds the sweeps (a file
			// skipped again copies nothing).
			copied := r.st.copied.Load()
			rewind := !moved && (r.gaveBack || copied != r.sweptAt && r.flying == 0)
			if rewind {
				r.gaveBack = false
				r.sweptAt = copied
				r.cursor = cursorStart
			}
			r.mu.Unlock()
			if moved || rewind {
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		// The workers that run out of work together share one release:
		// each costs a scan of the claimed index's dead entries, 210-320
		// ms at the end of the wide bench tree, where several workers
		// asked at once (auto_explain). A worker that joins a release
		// under way may miss claims orphaned since it began (another
		// process dying in those few hundred milliseconds): the next run
		// copies them, and this run's count says the medium is not done.
		var released int64
		if err := step(func(cctx context.Context) error {
			v, err, _ := r.orphans.Do("", func() (any, error) {
				got, err := releaseOrphans(cctx, r.db, r.h, r.o.WorkerID, r.o.Lease, false)
				r.releasedOrphans(got)
				return got, err
			})
			released, _ = v.(int64)
			return err
		}); err != nil {
			return nil, nil, err
		}
		if released == 0 {
			return nil, nil, nil
		}
	}
}

// batchTimes is where a batch's time went, for the "Batch completed" line.
type batchTimes struct{ claim, copy, sync, commit time.Duration }

// finishBatch makes the batch's blobs durable, commits it, and accounts for it.
// A held batch's hold ends here, committed or rolled back.
func (r *run) finishBatch(ctx context.Context, wid int, outs []outcome, held *hold, t0 time.Time, times *batchTimes) (BatchResult, error) {
	defer held.end()
	res := BatchResult{Worker: wid, Files: len(outs), Held: held != nil}
	var problems []problem
	for _, o := range outs {
		switch o.kind {
		case copied:
			res.Copied++
			if o.created {
				res.New++
			} else {
				res.Deduped++
			}
		case failed:
			res.Failed++
			switch o.dec.Action {
			case Skip:
				res.Skipped++
			case GiveUp:
				res.GaveUp++
			}
			if o.dec.Problem != "" {
				d := map[string]any{"dev": o.n.Dev, "ino": o.n.Ino, "class": o.dec.Class,
					"action": o.dec.Action.String(), "retry_count": o.dec.RetryCount, "worker_id": r.o.WorkerID}
				for k, v := range o.dec.ProblemDetails {
					d[k] = v
				}
				problems = append(problems, problem{flag: o.dec.Problem, details: d})
			}
		case excluded:
			res.Excluded++
		case released:
			res.Released++
		}
	}
	if p, ok := r.errorRate(outs); ok {
		problems = append(problems, p)
	}
	var refused int // copied inodes given back at commit: their blob is quarantined
	if !r.o.DryRun {
		ts := time.Now()
		watch(watchSyncStart, strconv.Itoa(wid))
		if err := r.store.Sync(); err != nil {
			// Nothing is recorded: the claims come back when the run ends,
			// a held batch's rows when its hold ends, now.
			return res, err
		}
		watch(watchSyncEnd, strconv.Itoa(wid))
		tc := time.Now()
		if durabilityWatch != nil {
			var ids []string
			for _, o := range outs {
				if o.kind == copied {
					ids = append(ids, o.blob)
				}
			}
			watch(watchCommit, ids...)
		}
		times.sync = tc.Sub(ts)
		// The batch is recorded even after ctx is done: its blobs are
		// stored. During an outage the outcomes wait here, in memory.
		var lost int64
		err := r.catalog(ctx, "recording a batch", func(context.Context) (err error) {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			lost, refused, err = commitBatch(cctx, r.db, r.h, r.o.WorkerID, outs, problems, &r.blobs, held)
			return err
		})
		times.commit = time.Since(tc)
		if err != nil {
			return res, err
		}
		res.Lost = lost
	}
	r.mu.Lock()
	if !r.o.DryRun && (res.Released > 0 || res.Failed > res.Skipped+res.GaveUp || refused > 0) {
		r.gaveBack = true // see nextBatch
	}
	for _, o := range outs {
		delete(r.inflight, o.n.key())
	}
	r.mu.Unlock()

	for _, o := range outs {
		if o.kind == copied {
			r.policy.Succeeded(string(r.h), o.n.Dev, o.n.Ino)
		}
	}
	c := &r.st
	c.batches.Add(1)
	c.processed.Add(int64(res.Copied + res.Failed))
	c.copied.Add(int64(res.Copied))
	c.newBlobs.Add(int64(res.New))
	c.deduped.Add(int64(res.Deduped))
	c.errors.Add(int64(res.Failed))
	c.skipped.Add(int64(res.Skipped))
	c.gaveUp.Add(int64(res.GaveUp))
	c.retried.Add(int64(res.Failed - res.Skipped - res.GaveUp))
	c.excluded.Add(int64(res.Excluded))
	c.released.Add(int64(res.Released))
	c.lost.Add(res.Lost)
	res.Duration = time.Since(t0)
	for _, o := range outs {
		res.BytesRead += o.read
		res.BytesWritten += o.written
	}
	c.read.Add(res.BytesRead)
	c.written.Add(res.BytesWritten)
	if r.o.Progress != nil {
		r.o.Progress.BatchDone(res)
	}
	r.log.Info("Batch completed", "medium", r.h, "worker", r.o.WorkerID, "worker_n", wid,
		"files", res.Files, "copied", res.Copied, "new", res.New, "deduped", res.Deduped,
		"failed", res.Failed, "skipped", res.Skipped, "gave_up", res.GaveUp, "released", res.Released, "held", res.Held,
		"bytes", res.BytesRead, "seconds", res.Duration.Seconds(), "claim_s", times.claim.Seconds(),
		"copy_s", times.copy.Seconds(), "sync_s", times.sync.Seconds(), "commit_s", times.commit.Seconds(),
		"dry_run", r.o.DryRun)
	if res.Lost > 0 {
		r.log.Warn("claims expired (or held rows were taken after a lost connection) before the batch was recorded; another worker copies those inodes again",
			"medium", r.h, "worker", r.o.WorkerID, "lost", res.Lost)
	}
	return res, nil
}

// Error rate: more than 10 % of the inodes attempted in this run failing,
// once at least 100 were attempted, raises the medium problem
// high_error_rate (once per run).
const (
	errorRateMin   = 100
	errorRateLimit = 0.10
)

func (r *run) errorRate(outs []outcome) (problem, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var copiedNow int64
	for _, o := range outs {
		k := o.n.key()
		switch o.kind {
		case copied:
			copiedNow++
			if recovered, ok := r.failedIn[k]; ok && !recovered {
				r.failedIn[k] = true
				r.failing--
			}
		case failed:
			if _, ok := r.failedIn[k]; !ok {
				r.failedIn[k] = false
				r.failing++
			}
		}
	}
	if r.rateFlag {
		return problem{}, false
	}
	attempted := r.st.copied.Load() + copiedNow + r.failing
	if attempted < errorRateMin || float64(r.failing) <= errorRateLimit*float64(attempted) {
		return problem{}, false
	}
	r.rateFlag = true
	rate := float64(r.failing) / float64(attempted)
	r.log.Warn("high error rate on this medium", "medium", r.h, "failed_inodes", r.failing, "attempted", attempted, "rate", rate)
	return problem{flag: "high_error_rate", details: map[string]any{
		"failed_inodes": r.failing, "attempted": attempted, "rate": rate, "worker_id": r.o.WorkerID}}, true
}

// logDecision writes the policy's lines for a failure, or the copier's own.
func (r *run) logDecision(ctx context.Context, n *inode, fe *fileErr, d Decision) {
	attrs := []any{"medium", r.h, "dev", n.Dev, "ino", n.Ino, "path", string(fe.path), "retry", d.RetryCount,
		"class", d.Class, "action", d.Action.String(), "err", fe.err.Error()}
	if len(d.Lines) > 0 {
		for _, l := range d.Lines {
			r.log.Warn(l, attrs...)
		}
		return
	}
	if d.Checkpoint {
		r.log.Warn(fmt.Sprintf("🔍 DIAGNOSTIC CHECKPOINT ino=%d dev=%d medium=%s retry=%d class=%s checks=%s action=%s",
			n.Ino, n.Dev, r.h, d.RetryCount, d.Class, string(d.Checks), d.Action), attrs...)
	}
	switch d.Action {
	case Skip:
		r.log.Warn(fmt.Sprintf("⏭️ SKIPPED ino=%d reason=%s dev=%d medium=%s retry=%d", n.Ino, d.ClaimedBy, n.Dev, r.h, d.RetryCount), attrs...)
	case GiveUp:
		r.log.Warn(fmt.Sprintf("GAVE UP ino=%d dev=%d medium=%s retry=%d class=%s status=%s", n.Ino, n.Dev, r.h, d.RetryCount, d.Class, d.Status), attrs...)
	case Retry:
		r.log.Debug("copy failed, will retry", attrs...)
	}
}

// sourceCheckEvery is how often failures may trigger a source check: the
// first failure always does; a storm of failures on a healthy source costs
// at most one check per interval.
const sourceCheckEvery = 100 * time.Millisecond

// sourceWatch is what the run knows of its source's health.
type sourceWatch struct {
	mu   sync.Mutex
	lost error     // sticky: once lost, the run is over
	last time.Time // the last check after a failure that found the source healthy
}

// watchSource takes the baseline of every mount of the medium.
func (r *run) watchSource(ctx context.Context) error {
	if _, ok := r.policy.(SourceChecker); !ok {
		return nil
	}
	src, ok := r.src.(*source)
	if !ok {
		return nil // an image: its reads fail with the bytes they miss
	}
	var mounts []string
	if len(src.parts) == 0 {
		mounts = append(mounts, src.path) // else only a directory holding them
	}
	for _, m := range src.parts {
		mounts = append(mounts, m.path)
	}
	for _, m := range mounts {
		if err := r.checkSource(ctx, m, true); err != nil {
			return err
		}
	}
	return nil
}

// checkSource asks the policy whether the source of mount is still whole:
// always when force is set, else at most once per sourceCheckEvery. Once
// the source is lost it says so without asking.
func (r *run) checkSource(ctx context.Context, mount string, force bool) error {
	sc, ok := r.policy.(SourceChecker)
	if !ok {
		return nil
	}
	w := &r.source
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost != nil {
		return w.lost
	}
	if !force && time.Since(w.last) < sourceCheckEvery {
		return nil
	}
	src, ok := r.src.(*source)
	if !ok {
		return nil // an image is not a mount to watch
	}
	if mount == "" {
		mount = src.path
	}
	if mount == src.path && len(src.parts) > 0 {
		return nil // the directory holding the partition mounts
	}
	if err := sc.CheckSource(ctx, mount); err != nil {
		w.lost = r.sourceLost(ctx, mount, err.Error())
		return w.lost
	}
	if !force {
		w.last = time.Now()
	}
	return nil
}

// markSourceLost records what a policy's checks found (Decision.SourceUnhealthy).
func (r *run) markSourceLost(ctx context.Context, mount, why string) error {
	w := &r.source
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost == nil {
		w.lost = r.sourceLost(ctx, mount, why)
	}
	return w.lost
}

// sourceLost logs and records the medium problem source_lost, and returns
// the run's error.
func (r *run) sourceLost(ctx context.Context, mount, why string) error {
	err := fmt.Errorf("medium %s: %w: %s", r.h, ErrSourceLost, why)
	r.log.Error("source lost: no more claims, releasing the rest", "medium", r.h, "worker", r.o.WorkerID,
		"mount", mount, "reason", why)
	if !r.o.DryRun {
		// Recorded before the run ends; an outage is waited out, briefly.
		last := dbconn.Retry{Bound: min(r.retry.Limit(), releaseRetry), Logger: r.log}
		if perr := last.Do(context.WithoutCancel(ctx), "recording source_lost", func() error {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return schema.MergeProblem(cctx, r.db, r.h, "source_lost", map[string]any{
				"mount": mount, "reason": why, "worker_id": r.o.WorkerID})
		}); perr != nil {
			r.log.Warn("could not record the problem source_lost", "medium", r.h, "err", perr)
		}
	}
	return err
}

// The events whose order makes a batch durable before the catalog names
// it: a blob stored (its id), a worker's syncfs begun and ended (the
// worker's number: one batch per worker is finished at a time), a batch's
// blobs about to be committed (their ids). durabilityWatch is nil except in the test that checks that
// order (export_test.go).
const (
	watchStored = iota
	watchSyncStart
	watchSyncEnd
	watchCommit
)

var durabilityWatch func(event int, ids []string)

func watch(event int, ids ...string) {
	if durabilityWatch != nil {
		durabilityWatch(event, ids)
	}
}
