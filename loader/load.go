package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Load reads a raw enumeration of the medium named by hash and writes it
// into the medium's partitions inode_p_<h> and path_p_<h>, with the medium
// row, in one transaction. The hash is validated before anything else
// (ErrInvalidHash). See the package documentation for what is written and
// what happens on failure; on error the returned Stats say how far the load
// got, and the database is as it was.
func Load(ctx context.Context, db *pgxpool.Pool, hash string, raw io.Reader, opts Options) (Stats, error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return Stats{}, fmt.Errorf("loader: %w", err)
	}
	if db == nil {
		return Stats{}, fmt.Errorf("loader: medium %s: no database pool", h)
	}
	if opts.Mode < Refuse || opts.Mode > Append {
		return Stats{}, fmt.Errorf("loader: medium %s: unknown mode %v", h, opts.Mode)
	}
	return loadRetrying(ctx, db, h, raw, opts)
}

// ErrInputNotRewindable: the catalog was lost during a load whose input
// cannot be read again (standard input, a pipe), so the load was not
// retried.
var ErrInputNotRewindable = errors.New("the raw input cannot be read again")

// loadRetrying runs the load, and runs it again from the beginning of raw
// while the catalog is unreachable (Options.DBRetry): the transaction of a
// lost session is rolled back by the server, so each attempt starts from
// nothing.
func loadRetrying(ctx context.Context, db *pgxpool.Pool, h medium.Hash, raw io.Reader, opts Options) (Stats, error) {
	retry := dbconn.Retry{Bound: opts.DBRetry, Logger: opts.Logger}
	seeker, ok := raw.(io.Seeker)
	var start int64
	if ok {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			ok = false // a pipe or a terminal
		}
	}
	var st Stats
	attempt := 0
	err := retry.Do(ctx, "loading medium "+string(h), func() error {
		if attempt > 0 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("medium %s: rewinding the raw input for another attempt: %w", h, err)
			}
		}
		attempt++
		var err error
		st, err = loadOnce(ctx, db, h, raw, opts)
		if err != nil && !ok && dbconn.Retryable(err) {
			return fmt.Errorf("%w (it is not seekable, e.g. standard input): the catalog was lost during the load, "+
				"so it cannot be retried; run the load again from the raw file: %v", ErrInputNotRewindable, err)
		}
		return err
	})
	return st, err
}

func loadOnce(ctx context.Context, db *pgxpool.Pool, h medium.Hash, raw io.Reader, opts Options) (Stats, error) {
	var err error
	l := &load{h: h, db: db, opts: opts, log: opts.Logger}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.stmtTimeout = durationOr(opts.StatementTimeout, DefaultStatementTimeout)
	l.lockTimeout = durationOr(opts.LockTimeout, DefaultLockTimeout)
	key := h.TableKey()
	l.loadInode, l.loadPath = "ntt_load_inode_"+key, "ntt_load_path_"+key
	l.st = Stats{Medium: string(h), Mode: opts.Mode, ExpectedRecords: opts.ExpectedRecords}
	start := time.Now()
	err = l.run(ctx, raw)
	l.st.Total = time.Since(start)
	if err != nil {
		l.log.Error("load failed, nothing was changed", "medium", string(h), "phase", l.phase, "err", err.Error())
		return l.st, err
	}
	l.log.Info("load completed", "medium", string(h), "mode", opts.Mode.String(), "records", l.st.Records,
		"inodes", l.st.Inodes, "paths", l.st.Paths, "excluded_paths", l.st.ExcludedPaths,
		"excluded_inodes", l.st.ExcludedInodes, "non_files", l.st.NonFiles,
		"duplicate_paths", l.st.DuplicatePaths, "existing_paths", l.st.ExistingPaths,
		"seconds", seconds(l.st.Total))
	return l.st, nil
}

// directLoadRecords is the largest raw file, in records, loaded directly
// into the medium's partitions (see loadFresh). A variable for tests.
var directLoadRecords = 10000

// maintenanceWorkMem is the sort memory the key builds get at least: a
// million paths sort in memory.
const maintenanceWorkMem = 512 << 20

func durationOr(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// load is the state of one Load call.
type load struct {
	h                        medium.Hash
	db                       *pgxpool.Pool
	opts                     Options
	log                      *slog.Logger
	stmtTimeout, lockTimeout time.Duration
	conn                     *pgxpool.Conn
	tx                       pgx.Tx
	pid                      uint32
	st                       Stats
	phase                    string
	phaseStart               time.Time
	loadInode, loadPath      string         // the tables being filled, renamed at attach
	existing                 bool           // the medium's partitions exist (attached)
	archived                 *ArchivedError // the medium's archive state, nil if not archived
	orphans                  bool           // a dropped duplicate path may have left an inode without a path
	paths                    *pathSorter
	inodes                   *inodeSorter
}

func (l *load) begin(name string) {
	l.phase, l.phaseStart = name, time.Now()
	if l.opts.Progress != nil {
		l.opts.Progress.Phase(name)
	}
}

func (l *load) end() {
	d := time.Since(l.phaseStart)
	l.st.Phases = append(l.st.Phases, PhaseTime{Name: l.phase, Duration: d})
	if l.phase == PhaseDedupe {
		// The seed's runbook greps for this line.
		l.log.Info(fmt.Sprintf("Deduplication completed in %.2fs", d.Seconds()),
			"medium", string(l.h), "phase", l.phase, "seconds", seconds(d))
		return
	}
	l.log.Info("phase completed", "medium", string(l.h), "phase", l.phase, "seconds", seconds(d))
}

func (l *load) run(ctx context.Context, raw io.Reader) error {
	// A quick look first, so that a medium that is already loaded is
	// refused before its raw file is read.
	l.begin(PhaseCheck)
	if err := l.precheck(ctx); err != nil {
		return err
	}
	l.end()

	// The whole input is read, checked and sorted before the transaction
	// starts: a bad record costs no database work, and the transaction
	// (with its locks) lasts only as long as the database needs.
	l.begin(PhaseRead)
	size := rawSize(raw)
	l.paths = newPathSorter(l.opts.SpoolDir, &l.st, size)
	defer l.paths.close()
	l.inodes = newInodeSorter(l.opts.SpoolDir, &l.st, size)
	defer l.inodes.close()
	if err := l.readRaw(ctx, raw); err != nil {
		return err
	}
	l.end()

	l.begin(PhasePrepare)
	done, err := l.beginTx(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := l.lockMedium(ctx); err != nil {
		return err
	}
	if err := l.checkArchived(ctx, false); err != nil {
		return err
	}
	existing, rows, err := l.inspect(ctx, true)
	if err != nil {
		return err
	}
	l.existing = existing
	if rows != nil {
		switch l.opts.Mode {
		case Refuse:
			return rows
		case Replace:
			l.st.ReplacedInodes, l.st.ReplacedPaths = rows.Inodes, rows.Paths
			l.log.Info("replacing the medium's rows", "medium", string(l.h), "inodes", rows.Inodes,
				"copied", rows.Copied, "paths", rows.Paths)
		case Append:
			l.log.Info("appending to the medium's rows", "medium", string(l.h), "inodes", rows.Inodes,
				"copied", rows.Copied, "paths", rows.Paths)
			return l.appendRows(ctx)
		}
	}
	return l.loadFresh(ctx)
}

// rawSize is the size of raw if it is a regular file (0 otherwise), which
// sizes the sorters' buffers.
func rawSize(raw io.Reader) int64 {
	f, ok := raw.(interface{ Stat() (fs.FileInfo, error) })
	if !ok {
		return 0
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return 0
	}
	return fi.Size()
}

// beginTx starts a transaction on a connection of its own, with the
// statement and lock timeouts; the returned func rolls back (a no-op after
// a commit) and releases the connection.
func (l *load) beginTx(ctx context.Context) (func(), error) {
	conn, err := l.db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("medium %s: connecting to the catalog: %w", l.h, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("medium %s: starting a transaction: %w", l.h, err)
	}
	l.conn, l.tx = conn, tx
	done := func() {
		// A canceled ctx must not keep the rollback from being sent; if the
		// connection is gone the server rolls back by itself.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		tx.Rollback(rctx) //nolint:errcheck // after Commit this is a no-op
		conn.Release()
	}
	settings := fmt.Sprintf(`SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = %d`,
		l.stmtTimeout.Milliseconds(), l.lockTimeout.Milliseconds())
	if _, err := tx.Exec(ctx, settings); err != nil {
		done()
		return nil, l.sqlErr(ctx, "setting the timeouts", err)
	}
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&l.pid); err != nil {
		done()
		return nil, l.sqlErr(ctx, "reading the backend pid", err)
	}
	// Key builds sort in memory up to maintenance_work_mem and spill to
	// disk beyond; raise a small server default for this transaction only.
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT set_config('maintenance_work_mem', '%dkB', true)
		WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < %d`, maintenanceWorkMem>>10, maintenanceWorkMem)); err != nil {
		done()
		return nil, l.sqlErr(ctx, "setting maintenance_work_mem", err)
	}
	return done, nil
}

// precheck refuses early: partitions not attached, or rows in Refuse mode.
func (l *load) precheck(ctx context.Context) error {
	done, err := l.beginTx(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := l.checkArchived(ctx, false); err != nil {
		return err
	}
	_, rows, err := l.inspect(ctx, l.opts.Mode == Refuse)
	if err != nil {
		return err
	}
	if rows != nil && l.opts.Mode == Refuse {
		return rows
	}
	return nil
}

// checkArchived reads whether the medium is archived (copy_done or
// archive_path set) and refuses a Refuse or Replace load of an archived
// medium unless Options.StartOver; Append is decided once it knows whether
// it adds anything. lock takes the medium row's lock, so that an archiver
// cannot set copy_done between this check and the commit; it is taken last,
// where the row is written anyway (an earlier row lock, held while the load
// waits for its table locks, could deadlock with a copier's commit).
func (l *load) checkArchived(ctx context.Context, lock bool) error {
	q := `SELECT copy_done, coalesce(archive_path, '') FROM medium WHERE medium_hash = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	var e ArchivedError
	err := l.tx.QueryRow(ctx, q, string(l.h)).Scan(&e.CopyDone, &e.ArchivePath)
	if errors.Is(err, pgx.ErrNoRows) {
		l.archived = nil
		return nil
	}
	if err != nil {
		return l.sqlErr(ctx, "reading the medium's archive state", err)
	}
	if e.CopyDone == nil && e.ArchivePath == "" {
		l.archived = nil
		return nil
	}
	e.Medium, e.Mode = string(l.h), l.opts.Mode
	l.archived = &e
	if l.opts.Mode != Append && !l.opts.StartOver {
		return &e
	}
	return nil
}

// inspect says whether the medium's partitions exist (checking that they
// are attached: rows in a detached partition would be invisible to every
// query, the seed's safety check) and, if they hold rows, how many (when
// count is set; counting a large medium takes a while).
func (l *load) inspect(ctx context.Context, count bool) (existing bool, rows *HasRowsError, err error) {
	var inodeExists, pathExists bool
	if err := l.tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		l.h.InodeTable(), l.h.PathTable()).Scan(&inodeExists, &pathExists); err != nil {
		return false, nil, l.sqlErr(ctx, "looking up the medium's partitions", err)
	}
	if !inodeExists && !pathExists {
		return false, nil, nil
	}
	if err := schema.CheckAttached(ctx, l.tx, l.h); err != nil {
		return true, nil, fmt.Errorf("loader: %w", err)
	}
	for _, t := range []string{l.h.InodeTable(), l.h.PathTable()} {
		if err := l.lockTable(ctx, t, false, "ACCESS SHARE", "to look at the medium's existing rows"); err != nil {
			return true, nil, err
		}
	}
	var any bool
	if err := l.tx.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s) OR EXISTS (SELECT 1 FROM %s)`,
		l.h.InodeTable(), l.h.PathTable())).Scan(&any); err != nil {
		return true, nil, l.sqlErr(ctx, "looking at the medium's existing rows", err)
	}
	if !any {
		return true, nil, nil
	}
	if !count {
		return true, &HasRowsError{Medium: string(l.h)}, nil
	}
	e, err := l.countRows(ctx)
	if err != nil {
		return true, nil, err
	}
	return true, &e, nil
}

// lockMedium serializes loads (and schema.CreatePartitions) of one medium.
func (l *load) lockMedium(ctx context.Context) error {
	key := "ntt-partitions:" + l.h.TableKey()
	if _, err := l.tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key); err != nil {
		if isLockTimeout(err) {
			return l.lockTimeoutError(ctx, "the load lock of medium "+string(l.h), "",
				"another load or partition creation of this medium is running", err,
				func(ctx context.Context, q *pgxpool.Conn) ([]Blocker, error) {
					return advisoryHolders(ctx, q, key, l.pid)
				})
		}
		return l.sqlErr(ctx, "taking the medium's load lock", err)
	}
	return nil
}

func (l *load) countRows(ctx context.Context) (HasRowsError, error) {
	e := HasRowsError{Medium: string(l.h)}
	q := fmt.Sprintf(`SELECT (SELECT count(*) FROM %[1]s),
		(SELECT count(*) FROM %[1]s WHERE copied AND coalesce(claimed_by, '') NOT IN ('%[3]s', '%[4]s')),
		(SELECT count(*) FROM %[2]s)`, l.h.InodeTable(), l.h.PathTable(), ClaimedNonFile, ClaimedExcluded)
	if err := l.tx.QueryRow(ctx, q).Scan(&e.Inodes, &e.Copied, &e.Paths); err != nil {
		return e, l.sqlErr(ctx, "counting the medium's existing rows", err)
	}
	return e, nil
}

// createTables makes the tables the rows are copied into, with the
// parents' columns, defaults and checks, medium_hash defaulting to this
// medium, and a check that lets ATTACH skip its validation scan.
func (l *load) createTables(ctx context.Context, inodeTable, pathTable string, temp bool) error {
	for _, t := range []struct{ parent, table string }{{"inode", inodeTable}, {"path", pathTable}} {
		if err := l.lockTable(ctx, t.parent, true, "ACCESS SHARE", "to copy its column definitions"); err != nil {
			return err
		}
		// Identifiers and the literal come from the validated medium.Hash.
		var sql string
		if temp {
			sql = fmt.Sprintf(`CREATE TEMP TABLE %[1]s (LIKE %[2]s INCLUDING DEFAULTS) ON COMMIT DROP;
				ALTER TABLE %[1]s ALTER COLUMN medium_hash SET DEFAULT '%[3]s'`, t.table, t.parent, l.h)
		} else {
			sql = fmt.Sprintf(`CREATE TABLE %[1]s (LIKE %[2]s INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
				ALTER TABLE %[1]s ALTER COLUMN medium_hash SET DEFAULT '%[3]s',
				ADD CONSTRAINT %[1]s_medium CHECK (medium_hash IS NOT NULL AND medium_hash = '%[3]s')`, t.table, t.parent, l.h)
		}
		if _, err := l.tx.Exec(ctx, sql); err != nil {
			return l.sqlErr(ctx, "creating table "+t.table, err)
		}
	}
	return nil
}

// readRaw reads the raw records into the sorters, checking each one.
func (l *load) readRaw(ctx context.Context, raw io.Reader) error {
	r := &recordReader{rd: enumerate.NewReader(raw), ignore: newIgnoreFilter(l.opts.Ignore), links: map[inodeKey]*pendingLinks{},
		paths: l.paths, inodes: l.inodes, st: &l.st}
	if l.opts.Root != "" {
		r.setRoot([]byte(l.opts.Root))
	}
	if p := l.opts.Progress; p != nil {
		r.progress = p.Records
	}
	if err := r.readAll(ctx); err != nil {
		var re *RecordError
		if errors.As(err, &re) {
			return fmt.Errorf("medium %s: raw file %w; nothing was loaded", l.h, err)
		}
		return fmt.Errorf("medium %s: %w; nothing was loaded", l.h, err)
	}
	if l.st.RecordCountDiffers() {
		l.log.Warn("record count differs from the enumeration's", "medium", string(l.h),
			"records", l.st.Records, "expected", l.st.ExpectedRecords)
	}
	return nil
}

// copyRows streams the sorted rows into the two tables.
func (l *load) copyRows(ctx context.Context, inodeTable, pathTable string) error {
	paths, inodes := l.paths, l.inodes
	pg := l.conn.Conn().PgConn()
	for _, c := range []struct {
		table  string
		cols   []string
		stream func() (io.Reader, error)
	}{{pathTable, pathColumns, paths.stream}, {inodeTable, inodeColumns, inodes.stream}} {
		src, err := c.stream()
		if err != nil {
			return fmt.Errorf("medium %s: %w; nothing was loaded", l.h, err)
		}
		// FREEZE: the tables are new in this transaction, so the rows can
		// be written frozen and all-visible, sparing a later rewrite.
		if _, err := pg.CopyFrom(ctx, src, copySQL(c.table, c.cols)); err != nil {
			// A failing stream makes the server abort the COPY with an
			// error of its own; report the stream's.
			if cs, ok := src.(*copyStream); ok && cs.err != nil {
				return fmt.Errorf("medium %s: %w; nothing was loaded", l.h, cs.err)
			}
			return l.sqlErr(ctx, "copying rows into "+c.table, err)
		}
	}
	l.orphans = paths.orphans
	for _, d := range paths.examples {
		l.log.Warn("duplicate path in the raw file, keeping its first record", "medium", string(l.h),
			"path", fmt.Sprintf("%q", d))
	}
	if l.st.DuplicatePaths > 0 {
		l.log.Warn("duplicate paths stored once", "medium", string(l.h), "duplicates", l.st.DuplicatePaths)
	}
	return nil
}

func copySQL(table string, cols []string) string {
	return fmt.Sprintf(`COPY %s (%s) FROM STDIN WITH (FORMAT binary, FREEZE)`, table, strings.Join(cols, ", "))
}

// loadFresh is the fast path: fresh index-free tables filled by COPY, keys
// and the foreign key built once over the whole data, then attached as the
// medium's partitions in place of the old ones (if any).
//
// A small medium that has no partitions yet is loaded directly: its tables
// get their final names from the start and ATTACH builds their keys, as
// CREATE TABLE … PARTITION OF would. That spares the stand-in parents, the
// detach and the renames (7 of a floppy's 30 ms of catalog work). The
// parents' SHARE UPDATE EXCLUSIVE lock is then taken in the dedupe phase
// (whose time includes any wait for it) and held until the commit, the
// milliseconds that the keys, statistics and foreign key of at most
// directLoadRecords rows take; a larger medium builds its keys before it
// takes that lock.
func (l *load) loadFresh(ctx context.Context) error {
	direct := !l.existing && l.st.Records <= int64(directLoadRecords)
	if direct {
		l.loadInode, l.loadPath = l.h.InodeTable(), l.h.PathTable()
	}
	if err := l.createTables(ctx, l.loadInode, l.loadPath, false); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseCopy)
	if err := l.copyRows(ctx, l.loadInode, l.loadPath); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseDedupe)
	keys := l.buildKeys
	if direct {
		keys = l.attachKeyed
	}
	if err := keys(ctx); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseAnalyze)
	if err := l.exec(ctx, "analyzing the new partitions", fmt.Sprintf(`ANALYZE %s, %s`, l.loadInode, l.loadPath)); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseIndex)
	if err := l.exec(ctx, "building index "+l.h.PathFKIndex(),
		fmt.Sprintf(`CREATE INDEX %[1]s_fk_idx ON %[1]s (medium_hash, dev, ino)`, l.loadPath)); err != nil {
		return err
	}
	// The check behind ADD FOREIGN KEY is one anti-join of path against
	// inode. Both sides are in index order now, so a plain merge join over
	// the two indexes beats the hash join the planner would pick (a third
	// of the time here, and no hash table of every inode in memory).
	if err := l.exec(ctx, "adding and checking the path→inode foreign key",
		fmt.Sprintf(`SET LOCAL enable_hashjoin = off; SET LOCAL max_parallel_workers_per_gather = 0;
			ALTER TABLE %[1]s ADD CONSTRAINT %[1]s_fk FOREIGN KEY (medium_hash, dev, ino)
			REFERENCES %[2]s (medium_hash, dev, ino) ON DELETE CASCADE;
			RESET enable_hashjoin; RESET max_parallel_workers_per_gather`, l.loadPath, l.loadInode)); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseAttach)
	attach := l.attach
	if direct {
		attach = func(ctx context.Context) error { return l.settle(ctx, "settling the new partitions") }
	}
	if err := attach(ctx); err != nil {
		return err
	}
	if err := l.upsertMedium(ctx, true); err != nil {
		return err
	}
	l.end()

	return l.commit(ctx)
}

// buildKeys adds the primary keys. Duplicates are rare (a path twice in the
// input, an inode seen twice without being a hardlink), so the keys are
// built optimistically; only when one fails on a duplicate are the later
// copies removed — keeping each first occurrence — and the key rebuilt.
func (l *load) buildKeys(ctx context.Context) error {
	return l.keys(ctx, l.addKey)
}

// attachKeyed is buildKeys for a direct load: each table is attached to
// its parent, which builds its primary key.
func (l *load) attachKeyed(ctx context.Context) error {
	if err := l.lockParents(ctx); err != nil {
		return err
	}
	return l.keys(ctx, func(ctx context.Context, table, parent, _ string, dedupe func(context.Context) error) (bool, error) {
		return l.tryKey(ctx, "attaching "+table+" and building its primary key",
			fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN ('%s')`, parent, table, l.h), dedupe)
	})
}

// keys builds the primary keys with key (path first: a path dropped as a
// duplicate may leave an inode without a path), and recounts the rows if
// any were dropped.
func (l *load) keys(ctx context.Context, key func(ctx context.Context, table, parent, cols string, dedupe func(context.Context) error) (bool, error)) error {
	// The rows come in key order, so the sorts are a single pass; parallel
	// workers would only add their start-up and a merge.
	if err := l.exec(ctx, "setting up the key builds", `SET LOCAL max_parallel_maintenance_workers = 0`); err != nil {
		return err
	}
	defer l.tx.Exec(ctx, `RESET max_parallel_maintenance_workers`) //nolint:errcheck // a failed tx rolls back anyway
	pathsDeduped, err := key(ctx, l.loadPath, "path", "medium_hash, path", l.dedupePaths)
	if err != nil {
		return err
	}
	if pathsDeduped || l.orphans {
		// A removed path may have been the only one of its inode.
		if err := l.exec(ctx, "removing inodes left without a path", fmt.Sprintf(
			`DELETE FROM %s i WHERE NOT EXISTS (SELECT 1 FROM %s p WHERE p.dev = i.dev AND p.ino = i.ino)`,
			l.loadInode, l.loadPath)); err != nil {
			return err
		}
	}
	inodesDeduped, err := key(ctx, l.loadInode, "inode", "medium_hash, dev, ino", l.dedupeInodes)
	if err != nil {
		return err
	}
	if pathsDeduped || inodesDeduped || l.orphans {
		return l.recount(ctx)
	}
	return nil
}

func (l *load) addKey(ctx context.Context, table, parent, cols string, dedupe func(context.Context) error) (deduped bool, err error) {
	// The key is added through a partitioned stand-in for the real parent,
	// with the table attached to it: PostgreSQL then makes the index and
	// constraint exactly as for a partition of a real parent (a key added
	// to a plain table differs in pg_constraint.connoinherit), and at
	// attach time the table moves from the stand-in to the real parent.
	keys := table + "_keys"
	if err := l.exec(ctx, "preparing the primary key of "+table, fmt.Sprintf(
		`CREATE TABLE %[1]s (LIKE %[2]s) PARTITION BY LIST (medium_hash);
		ALTER TABLE %[1]s ATTACH PARTITION %[3]s FOR VALUES IN ('%[4]s')`, keys, parent, table, l.h)); err != nil {
		return false, err
	}
	return l.tryKey(ctx, "building the primary key of "+table,
		fmt.Sprintf(`ALTER TABLE %[1]s ADD CONSTRAINT %[1]s_pkey PRIMARY KEY (%[2]s)`, keys, cols), dedupe)
}

// tryKey runs sql, which builds a primary key, optimistically: only when
// it fails on a duplicate are the later copies removed (dedupe) and sql
// run again.
func (l *load) tryKey(ctx context.Context, what, sql string, dedupe func(context.Context) error) (deduped bool, err error) {
	if err := l.exec(ctx, "setting a savepoint", `SAVEPOINT ntt_key`); err != nil {
		return false, err
	}
	_, err = l.tx.Exec(ctx, sql)
	if err == nil {
		return false, l.exec(ctx, "releasing a savepoint", `RELEASE SAVEPOINT ntt_key`)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		return false, l.sqlErr(ctx, what, err)
	}
	if err := l.exec(ctx, "rolling back to a savepoint", `ROLLBACK TO SAVEPOINT ntt_key`); err != nil {
		return false, err
	}
	if err := dedupe(ctx); err != nil {
		return false, err
	}
	return true, l.exec(ctx, what, sql)
}

// dedupeStatement deletes every row but the first (in input order: the
// tables are filled by one COPY, so ctid order is input order) of each key.
func dedupeStatement(table, key string) string {
	return fmt.Sprintf(`DELETE FROM %[1]s t USING (
		SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY %[2]s ORDER BY ctid) AS n FROM %[1]s) r
		WHERE n > 1) d WHERE t.ctid = d.ctid`, table, key)
}

func (l *load) dedupePaths(ctx context.Context) error {
	rows, err := l.tx.Query(ctx, fmt.Sprintf(
		`SELECT path, count(*) FROM %s GROUP BY path HAVING count(*) > 1 ORDER BY path LIMIT 10`, l.loadPath))
	if err != nil {
		return l.sqlErr(ctx, "listing duplicate paths", err)
	}
	for rows.Next() {
		var p []byte
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			rows.Close()
			return l.sqlErr(ctx, "listing duplicate paths", err)
		}
		l.log.Warn("duplicate path in the raw file, keeping its first record", "medium", string(l.h),
			"path", fmt.Sprintf("%q", p), "occurrences", n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return l.sqlErr(ctx, "listing duplicate paths", err)
	}
	tag, err := l.tx.Exec(ctx, dedupeStatement(l.loadPath, "path"))
	if err != nil {
		return l.sqlErr(ctx, "removing duplicate paths", err)
	}
	l.st.DuplicatePaths += tag.RowsAffected()
	l.log.Warn("duplicate paths stored once", "medium", string(l.h), "duplicates", l.st.DuplicatePaths)
	return nil
}

func (l *load) dedupeInodes(ctx context.Context) error {
	tag, err := l.tx.Exec(ctx, dedupeStatement(l.loadInode, "dev, ino"))
	if err != nil {
		return l.sqlErr(ctx, "removing repeated inode rows", err)
	}
	l.log.Warn("inode seen more often than its link count, keeping its first record", "medium", string(l.h),
		"rows_removed", tag.RowsAffected())
	return nil
}

// recount takes the row counts from the tables after duplicates were
// removed (the counts kept while streaming include them).
func (l *load) recount(ctx context.Context) error {
	q := fmt.Sprintf(`SELECT (SELECT count(*) FROM %[1]s),
		(SELECT count(*) FROM %[1]s WHERE claimed_by = '%[3]s'),
		(SELECT count(*) FROM %[1]s WHERE claimed_by = '%[4]s'),
		(SELECT count(*) FROM %[2]s),
		(SELECT count(*) FROM %[2]s WHERE exclude_reason IS NOT NULL)`,
		l.loadInode, l.loadPath, ClaimedExcluded, ClaimedNonFile)
	err := l.tx.QueryRow(ctx, q).Scan(&l.st.Inodes, &l.st.ExcludedInodes, &l.st.NonFiles, &l.st.Paths, &l.st.ExcludedPaths)
	if err != nil {
		return l.sqlErr(ctx, "counting the rows", err)
	}
	return nil
}

// attach swaps the old partitions out (if any) and attaches the new ones
// under the names schema.CreatePartitions gives, so that the result is
// indistinguishable from partitions it made and filled.
func (l *load) attach(ctx context.Context) error {
	inodeP, pathP := l.h.InodeTable(), l.h.PathTable()
	if l.existing {
		// Dropping a partition takes an exclusive lock on its parent: this is
		// the one moment a load blocks readers of other media, and it lasts
		// until the commit right after.
		purpose := "to drop the medium's old partitions"
		for _, t := range []struct {
			name string
			only bool
		}{{"inode", true}, {"path", true}, {inodeP, false}, {pathP, false}} {
			if err := l.lockTable(ctx, t.name, t.only, "ACCESS EXCLUSIVE", purpose); err != nil {
				return err
			}
		}
		if l.opts.Mode != Replace {
			// They were empty when the load began; make sure under the lock.
			e, err := l.countRows(ctx)
			if err != nil {
				return err
			}
			if e.Inodes > 0 || e.Paths > 0 {
				return &e
			}
		}
		if err := l.exec(ctx, "dropping the old partitions", fmt.Sprintf(`DROP TABLE %s, %s`, pathP, inodeP)); err != nil {
			return err
		}
	} else if err := l.lockParents(ctx); err != nil {
		return err
	}
	stmts := []string{
		fmt.Sprintf(`ALTER TABLE %[1]s_keys DETACH PARTITION %[1]s`, l.loadInode),
		fmt.Sprintf(`DROP TABLE %s_keys`, l.loadInode),
		fmt.Sprintf(`ALTER TABLE %[1]s_keys DETACH PARTITION %[1]s`, l.loadPath),
		fmt.Sprintf(`DROP TABLE %s_keys`, l.loadPath),
		fmt.Sprintf(`ALTER TABLE %s RENAME TO %s`, l.loadInode, inodeP),
		fmt.Sprintf(`ALTER TABLE %s RENAME CONSTRAINT %s_pkey TO %s_pkey`, inodeP, l.loadInode, inodeP),
		fmt.Sprintf(`ALTER TABLE %s RENAME TO %s`, l.loadPath, pathP),
		fmt.Sprintf(`ALTER TABLE %s RENAME CONSTRAINT %s_pkey TO %s_pkey`, pathP, l.loadPath, pathP),
		fmt.Sprintf(`ALTER TABLE %s RENAME CONSTRAINT %s_fk TO %s`, pathP, l.loadPath, schema.PartitionFK(l.h)),
		fmt.Sprintf(`ALTER INDEX %s_fk_idx RENAME TO %s`, l.loadPath, l.h.PathFKIndex()),
		// The check constraints make the partition constraint provable, so
		// ATTACH skips its scan; settle drops them once it is in place.
		fmt.Sprintf(`ALTER TABLE inode ATTACH PARTITION %s FOR VALUES IN ('%s')`, inodeP, l.h),
		fmt.Sprintf(`ALTER TABLE path ATTACH PARTITION %s FOR VALUES IN ('%s')`, pathP, l.h),
	}
	return l.settle(ctx, "attaching the new partitions", stmts...)
}

// lockParents takes the parents' lock that attaching a partition needs, in
// one order for every load (inode, then path): two loads taking them in
// opposite orders would deadlock.
func (l *load) lockParents(ctx context.Context) error {
	for _, parent := range []string{"inode", "path"} {
		if err := l.lockTable(ctx, parent, true, "SHARE UPDATE EXCLUSIVE",
			fmt.Sprintf("to attach %s_p_%s to it", parent, l.h.TableKey())); err != nil {
			return err
		}
	}
	return nil
}

// settle runs the statements that attach the medium's tables (none for a
// direct load, attached already), drops what served the load from the
// partitions (the medium_hash defaults, the check constraints) and checks
// that they are attached as they should be.
func (l *load) settle(ctx context.Context, step string, stmts ...string) error {
	for _, t := range []struct{ table, load string }{{l.h.InodeTable(), l.loadInode}, {l.h.PathTable(), l.loadPath}} {
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE %s ALTER COLUMN medium_hash DROP DEFAULT, DROP CONSTRAINT %s_medium`, t.table, t.load))
	}
	if err := l.exec(ctx, step, strings.Join(stmts, ";\n")); err != nil {
		return err
	}
	if err := schema.CheckAttached(ctx, l.tx, l.h); err != nil {
		return fmt.Errorf("loader: after attaching: %w", err)
	}
	return nil
}

// upsertMedium records the medium row: image_path when given; enum_root
// and enum_done when the load wrote rows (an append that added nothing
// leaves them); and, starting over, clears copy_done and archive_path in
// the same transaction as the rows that need copying again.
func (l *load) upsertMedium(ctx context.Context, wrote bool) error {
	var image *string
	if l.opts.ImagePath != "" {
		image = &l.opts.ImagePath
	}
	// The archiver may have sealed the medium since the first look.
	if err := l.checkArchived(ctx, true); err != nil {
		return err
	}
	if a := l.archived; a != nil && wrote && !l.opts.StartOver {
		a.NewPaths = l.st.Paths
		return a
	}
	startOver := l.archived != nil && l.opts.StartOver && wrote
	if startOver {
		l.log.Warn("starting over: clearing the medium's copy_done and archive_path; copy and archive will run again",
			"medium", string(l.h), "copy_done", l.archived.CopyDone, "archive_path", l.archived.ArchivePath)
	}
	_, err := l.tx.Exec(ctx, `
		INSERT INTO medium (medium_hash, image_path, enum_root, enum_done)
		VALUES ($1, $2, $3, clock_timestamp())
		ON CONFLICT (medium_hash) DO UPDATE
		SET image_path = coalesce(excluded.image_path, medium.image_path),
		    enum_root = CASE WHEN $4 THEN excluded.enum_root ELSE medium.enum_root END,
		    enum_done = CASE WHEN $4 THEN excluded.enum_done ELSE medium.enum_done END,
		    copy_done = CASE WHEN $5 THEN NULL ELSE medium.copy_done END,
		    archive_path = CASE WHEN $5 THEN NULL ELSE medium.archive_path END`,
		string(l.h), image, []byte(l.st.Root), wrote, startOver)
	if err != nil {
		return l.sqlErr(ctx, "recording the medium row", err)
	}
	l.st.StartedOver = startOver
	return nil
}

func (l *load) commit(ctx context.Context) error {
	l.begin(PhaseCommit)
	if err := l.tx.Commit(ctx); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return l.sqlErr(ctx, "committing", err)
		}
		// The connection broke while COMMIT was in flight: only the
		// catalog can say whether it happened.
		return fmt.Errorf("medium %s: commit interrupted, the load may or may not have been committed "+
			"(check medium.enum_done, then rerun with --replace if needed): %w", l.h, err)
	}
	l.end()
	return nil
}

// appendRows adds the raw file's new paths, and their inodes, to existing
// partitions. Matching is by path: dev changes with every mount, so an old
// row and a new record of the same file cannot be matched by inode.
func (l *load) appendRows(ctx context.Context) error {
	const tInode, tPath, tNew = "ntt_append_inode", "ntt_append_path", "ntt_append_new"
	inodeP, pathP := l.h.InodeTable(), l.h.PathTable()
	if err := l.createTables(ctx, tInode, tPath, true); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseCopy)
	if err := l.copyRows(ctx, tInode, tPath); err != nil {
		return err
	}
	l.end()

	l.begin(PhaseDedupe)
	distinct := l.st.Paths // the COPY held each path once
	tag, err := l.tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE %[1]s ON COMMIT DROP AS
		SELECT DISTINCT ON (s.path) s.medium_hash, s.dev, s.ino, s.path, s.exclude_reason FROM %[2]s s
		WHERE NOT EXISTS (SELECT 1 FROM %[3]s p WHERE p.medium_hash = '%[4]s' AND p.path = s.path)
		ORDER BY s.path, s.ctid`, tNew, tPath, pathP, l.h))
	if err != nil {
		return l.sqlErr(ctx, "selecting the paths not catalogued yet", err)
	}
	l.st.ExistingPaths = distinct - tag.RowsAffected()
	if a := l.archived; a != nil && tag.RowsAffected() > 0 && !l.opts.StartOver {
		a.NewPaths = tag.RowsAffected()
		return a
	}
	for _, t := range []string{inodeP, pathP} {
		if err := l.lockTable(ctx, t, false, "ROW EXCLUSIVE", "to add rows to it"); err != nil {
			return err
		}
	}
	cols := "medium_hash, " + strings.Join(inodeColumns, ", ")
	err = l.tx.QueryRow(ctx, fmt.Sprintf(`WITH ins AS (
		INSERT INTO %[1]s (%[2]s)
		SELECT DISTINCT ON (i.dev, i.ino) %[2]s FROM %[3]s i
		WHERE EXISTS (SELECT 1 FROM %[4]s n WHERE n.dev = i.dev AND n.ino = i.ino)
		ORDER BY i.dev, i.ino, i.ctid
		ON CONFLICT (medium_hash, dev, ino) DO NOTHING
		RETURNING claimed_by)
		SELECT count(*), count(*) FILTER (WHERE claimed_by = '%[5]s'), count(*) FILTER (WHERE claimed_by = '%[6]s') FROM ins`,
		inodeP, cols, tInode, tNew, ClaimedExcluded, ClaimedNonFile)).Scan(&l.st.Inodes, &l.st.ExcludedInodes, &l.st.NonFiles)
	if err != nil {
		return l.sqlErr(ctx, "adding the new inodes to "+inodeP, err)
	}
	err = l.tx.QueryRow(ctx, fmt.Sprintf(`WITH ins AS (
		INSERT INTO %[1]s (medium_hash, dev, ino, path, exclude_reason)
		SELECT medium_hash, dev, ino, path, exclude_reason FROM %[2]s
		RETURNING exclude_reason)
		SELECT count(*), count(*) FILTER (WHERE exclude_reason IS NOT NULL) FROM ins`, pathP, tNew)).Scan(&l.st.Paths, &l.st.ExcludedPaths)
	if err != nil {
		return l.sqlErr(ctx, "adding the new paths to "+pathP, err)
	}
	l.end()

	l.begin(PhaseAnalyze)
	if err := l.exec(ctx, "analyzing the partitions", fmt.Sprintf(`ANALYZE %s, %s`, inodeP, pathP)); err != nil {
		return err
	}
	if err := l.upsertMedium(ctx, l.st.Paths > 0); err != nil {
		return err
	}
	l.end()
	return l.commit(ctx)
}

// exec runs sql in the load's transaction, turning its errors into the
// load's (naming the phase and step, timeouts typed).
func (l *load) exec(ctx context.Context, step, sql string) error {
	if _, err := l.tx.Exec(ctx, sql); err != nil {
		return l.sqlErr(ctx, step, err)
	}
	return nil
}

func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

func (l *load) sqlErr(ctx context.Context, step string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "57014" && ctx.Err() == nil && strings.Contains(pe.Message, "statement timeout"):
			return &TimeoutError{Medium: string(l.h), Phase: l.phase, Step: step, Timeout: l.stmtTimeout, Err: err}
		case pe.Code == "55P03":
			return &LockTimeoutError{Medium: string(l.h), Object: "a lock", Purpose: step, Timeout: l.lockTimeout, Err: err}
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("medium %s: %s phase: %s: %w; nothing was changed", l.h, l.phase, step, ctx.Err())
	}
	return fmt.Errorf("medium %s: %s phase: %s: %w; nothing was changed", l.h, l.phase, step, err)
}
