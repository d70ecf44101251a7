package enumerate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/HRDAG/ntt/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// DefaultWorkers is the number of directories read at once when
// Options.Workers is zero. A medium is walked once, from a cold cache, and
// a cold walk waits on the disk most of the time (sampled: 3 of 4 workers
// in D state), so more reads in flight is what pays: 16 beat 4 by 15-25%
// cold on a file-backed image, and warm it made no measurable difference
// (the kernel's stat path is the bound there). Sixteen requests also fit a
// spinning disk's command queue (NCQ: 32), which reorders them instead of
// seeking for each.
const DefaultWorkers = 16

// DefaultStallTimeout applies when Options.StallTimeout is zero.
const DefaultStallTimeout = 2 * time.Minute

// ErrStalled is returned (wrapped in a *StallError) when the walk made no
// progress for Options.StallTimeout.
var ErrStalled = errors.New("enumeration stalled")

// StallError says how long the walk waited and which directories were being
// read when it gave up.
type StallError struct {
	Idle time.Duration
	Dirs []string // paths being read by workers that never came back
}

func (e *StallError) Error() string {
	s := fmt.Sprintf("%v: no progress for %s", ErrStalled, e.Idle.Round(time.Millisecond))
	if len(e.Dirs) > 0 {
		q := make([]string, len(e.Dirs))
		for i, d := range e.Dirs {
			q[i] = fmt.Sprintf("%q", d)
		}
		s += "; stuck in " + strings.Join(q, ", ")
	}
	return s
}

func (e *StallError) Is(target error) bool { return target == ErrStalled }

// EntryError reports a directory that could not be opened or read, or an
// entry that could not be stat'ed. Err is the errno (errors.Is(e, unix.EIO)).
type EntryError struct {
	Path string // raw bytes of the path as walked
	Op   string // "open directory", "read directory", "stat", "directory changed"
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("%s %q: %v", e.Op, e.Path, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// pathAttr logs a path as "path" when it is valid UTF-8, else Go-quoted as
// "path_quoted" (a JSON log would replace invalid bytes, and the operator
// needs the exact name).
func pathAttr(p string) slog.Attr {
	if utf8.ValidString(p) {
		return slog.String("path", p)
	}
	return slog.String("path_quoted", strconv.Quote(p))
}

// Progress is a snapshot of a running walk.
type Progress struct {
	Entries int64         // entries stat'ed (records written plus ignored)
	Dirs    int64         // directories read
	Errors  int64         // errors reported
	Elapsed time.Duration // since Walk started
	Rate    float64       // entries per second since Walk started
	Done    bool          // the last call, after the walk ended
}

// Options tune a walk. The zero value is usable.
type Options struct {
	// Workers is how many directories are read at once (DefaultWorkers if 0).
	Workers int
	// Ignore leaves out the records of matching paths (their subtrees are
	// still walked). The roots are never left out.
	Ignore *Matcher
	// EnterMounts lists mount points, spelled as the walk spells paths
	// (root + "/" + names), that the walk enters although they hold
	// another filesystem: a multi-partition medium's partitions. Any other
	// mount point is recorded but not entered, like find -xdev.
	EnterMounts []string
	// StallTimeout: with no progress for this long, Walk returns
	// ErrStalled (DefaultStallTimeout if 0; negative disables the watchdog).
	StallTimeout time.Duration
	// Progress is called every ProgressInterval (default 1s) and once at
	// the end, always from the same goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// OnError is called for each unreadable directory or entry, one call at
	// a time. Returning nil goes on with the walk; returning an error ends
	// it with that error. Nil: go on. Either way the error is counted.
	OnError func(*EntryError) error
	// Logger receives debug and warning lines; nil is silent.
	Logger *slog.Logger
	// KernelOnly walks every root through system calls, never reading a
	// mounted ext medium's metadata from its block device (see
	// DirectResult and the package doc).
	KernelOnly bool
	// Prefetch reads a whole mounted ext medium's inode tables and
	// directory blocks ahead of the workers (see PrefetchResult). Off by
	// default: on the machine it was measured on it did not pay (see the
	// package doc).
	Prefetch bool

	fs dirFS // nil: the real system calls
	// prefetchFirst lets the read-ahead finish before the workers start
	// (tests: what it reads no longer depends on the walk's speed).
	prefetchFirst bool
}

// Result counts what a walk did.
type Result struct {
	Records int64 // records produced (all in the sink when Walk returns nil)
	Bytes   int64 // bytes the sink accepted
	Ignored int64 // entries left out by the ignore patterns
	Dirs    int64 // directories read
	Errors  int64 // directories or entries that could not be read
	Elapsed time.Duration
	// Prefetch is what the read-ahead did (nothing without Options.Prefetch).
	Prefetch PrefetchResult
	// Direct says which roots were read from their block device.
	Direct DirectResult
}

const (
	outBuffer  = 256 << 10 // a worker hands its records to the writer in chunks this big
	direntSize = 64 << 10  // getdents buffer per worker
)

// Walk enumerates each root and writes one raw record per entry to sink:
// all root records first (in the order given), then every entry below them
// in no particular order. Each Write to sink holds whole records; writes
// are made from one goroutine.
//
// It returns when the walk is complete, the context is cancelled, the sink
// fails, OnError returns an error, or nothing moved for the stall timeout.
// After a stall or a cancellation, Walk returns without waiting for workers
// blocked in the kernel; no new Write to sink starts after it returns, but
// one already under way may still finish.
func Walk(ctx context.Context, roots []string, opts Options, sink io.Writer) (Result, error) {
	w := newWalker(opts, sink)
	return w.run(ctx, roots)
}

type dirHandle struct {
	fd   int
	refs atomic.Int32
}

type dirTask struct {
	parent  *dirHandle // nil: open path from the working directory
	path    []byte     // full path, NUL-terminated (the NUL is not part of the path)
	nameOff int        // start of the name within path (0 for a root)
	dev     uint64     // what lstat said, checked after opening
	ino     uint64
}

func (t *dirTask) fullPath() []byte { return t.path[:len(t.path)-1] }

type workerState struct {
	entries atomic.Int64
	dirs    atomic.Int64
	ops     atomic.Int64
	current atomic.Pointer[dirTask] // directory being read, for the stall report
	_       [64]byte
}

type walker struct {
	opts    Options
	fs      dirFS
	sink    io.Writer
	workers int
	enter   map[string]bool

	mu      sync.Mutex
	cond    *sync.Cond
	stack   []*dirTask
	pending int // queued plus being read

	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  atomic.Pointer[error] // first fatal error

	quit     chan struct{} // closed by stop
	out      chan []byte
	free     chan []byte
	writeMu  sync.Mutex
	closed   atomic.Bool // no new sink writes once set
	written  atomic.Int64
	roots    atomic.Int64
	ignored  atomic.Int64
	errCount atomic.Int64
	errMu    sync.Mutex
	state    []workerState
	start    time.Time
	prefetch atomic.Pointer[prefetcher] // nil: none
	// The direct reads (extwalk.go): roots before the workers start,
	// partition mounts by the workers that meet them.
	directMu   sync.Mutex
	directRes  DirectResult
	mountsOnce sync.Once
	mounts     []mountinfo.Entry
	mountsErr  error
}

func newWalker(opts Options, sink io.Writer) *walker {
	w := &walker{opts: opts, fs: opts.fs, sink: sink, workers: opts.Workers}
	if w.fs == nil {
		w.fs = sysFS{}
	}
	if w.workers <= 0 {
		w.workers = DefaultWorkers
	}
	w.enter = make(map[string]bool, len(opts.EnterMounts))
	for _, m := range opts.EnterMounts {
		w.enter[m] = true
	}
	w.cond = sync.NewCond(&w.mu)
	w.state = make([]workerState, w.workers)
	w.quit = make(chan struct{})
	w.out = make(chan []byte, 2*w.workers)
	w.free = make(chan []byte, 3*w.workers)
	return w
}

// stop ends the walk with err (the first one wins) and wakes idle workers.
// It never waits for the queue's lock (a worker might hold it while the
// kernel hangs in close), so the watchdog can always return.
func (w *walker) stop(err error) {
	w.stopOnce.Do(func() {
		w.stopErr.Store(&err)
		w.stopping.Store(true)
		close(w.quit)
		go func() {
			w.mu.Lock()
			w.cond.Broadcast()
			w.mu.Unlock()
		}()
	})
}

func (w *walker) run(ctx context.Context, roots []string) (Result, error) {
	w.start = time.Now()
	if len(roots) == 0 {
		return Result{}, errors.New("enumerate: no root to walk")
	}
	for _, root := range roots {
		if root == "" || strings.IndexByte(root, 0) >= 0 {
			return Result{}, fmt.Errorf("enumerate: invalid root %q", root)
		}
	}
	// Everything that touches the medium, the roots' lstat included, runs
	// under the watchdog below: a dying disk can hang any system call.
	done := make(chan struct{})
	go func() {
		defer close(done)
		writerDone := make(chan struct{})
		go w.writeLoop(writerDone)
		if err := w.startRoots(roots); err != nil {
			w.stop(err)
		} else {
			if !w.opts.KernelOnly && w.opts.fs == nil {
				w.direct()
			}
			if w.opts.Prefetch && w.opts.fs == nil && len(w.directRes.Roots) < len(roots) {
				pf := startPrefetch(append(slices.Clone(roots), w.opts.EnterMounts...), w.quit)
				w.prefetch.Store(pf)
				if w.opts.prefetchFirst {
					<-pf.done
				}
			}
			var wg sync.WaitGroup
			wg.Add(w.workers)
			for i := 0; i < w.workers; i++ {
				go func(ws *workerState) {
					defer wg.Done()
					w.work(ws)
				}(&w.state[i])
			}
			wg.Wait()
		}
		close(w.out)
		<-writerDone
	}()

	var tick <-chan time.Time
	interval := w.opts.ProgressInterval
	if interval <= 0 {
		interval = time.Second
	}
	stall := w.opts.StallTimeout
	if stall == 0 {
		stall = DefaultStallTimeout
	}
	check := interval
	if stall > 0 && stall/4 < check {
		check = max(stall/4, time.Millisecond)
	}
	ticker := time.NewTicker(check)
	defer ticker.Stop()
	tick = ticker.C
	lastOps, lastMove, lastProgress := int64(-1), time.Now(), time.Now()

	var result error
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			w.stop(ctx.Err())
			result = ctx.Err()
			break loop
		case now := <-tick:
			if ops := w.ops(); ops != lastOps {
				lastOps, lastMove = ops, now
			} else if stall > 0 && now.Sub(lastMove) >= stall {
				err := &StallError{Idle: now.Sub(lastMove), Dirs: w.busyDirs()}
				w.stop(err)
				result = err
				if w.opts.Logger != nil {
					w.opts.Logger.Warn("enumeration stalled", "idle_s", err.Idle.Seconds(), "dirs", err.Dirs)
				}
				break loop
			}
			if w.opts.Progress != nil && now.Sub(lastProgress) >= interval {
				lastProgress = now
				w.opts.Progress(w.progress(false))
			}
		}
	}
	if result != nil {
		// Workers blocked in a system call may never return; give the
		// others a moment to wind down, then leave without them.
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	w.closeSink()
	if p := w.stopErr.Load(); result == nil && p != nil {
		result = *p
	}
	res := w.result()
	if result == nil {
		res.Direct = w.directRes
	}
	if pf := w.prefetch.Load(); pf != nil {
		// After a stall or a cancellation the disk may hang: do not wait
		// for the read-ahead longer than for the workers.
		wait := stall
		if result != nil {
			wait = 50 * time.Millisecond
		} else if stall <= 0 {
			wait = -1
		}
		res.Prefetch = pf.close(wait)
	}
	if w.opts.Progress != nil {
		w.opts.Progress(w.progress(true))
	}
	return res, result
}

// startRoots records the roots and queues those that are directories. Root
// records go to the writer before any worker starts, so they come first:
// the loader takes the first record's path as the medium root.
func (w *walker) startRoots(roots []string) error {
	var first []byte
	var st unix.Stat_t
	for _, root := range roots {
		name := append([]byte(root), 0)
		err := w.fs.lstatAt(unix.AT_FDCWD, name, &st)
		w.state[0].ops.Add(1)
		if err != nil {
			return fmt.Errorf("enumerate: root %q: %w", root, &EntryError{Path: root, Op: "stat", Err: err})
		}
		rec := recordOf(&st, name[:len(root)])
		first = AppendRecord(first, &rec)
		w.roots.Add(1)
		if rec.Type == TypeDir {
			w.mu.Lock()
			w.stack = append(w.stack, &dirTask{path: name, dev: st.Dev, ino: st.Ino})
			w.pending++
			w.mu.Unlock()
		}
	}
	select {
	case w.out <- first:
	case <-w.quit:
	}
	return nil
}

// closeSink makes sure no new Write to the sink starts after Walk returns.
func (w *walker) closeSink() {
	w.closed.Store(true)
	if w.writeMu.TryLock() {
		w.writeMu.Unlock()
	}
}

func (w *walker) writeLoop(done chan<- struct{}) {
	defer close(done)
	for buf := range w.out {
		if w.stopping.Load() {
			continue // a failed walk writes nothing more; drain so workers never block
		}
		w.writeMu.Lock()
		if w.closed.Load() {
			w.writeMu.Unlock()
			continue
		}
		_, err := w.sink.Write(buf)
		w.writeMu.Unlock()
		if err != nil {
			w.stop(fmt.Errorf("enumerate: writing raw records: %w", err))
			continue
		}
		w.written.Add(int64(len(buf)))
		w.state[0].ops.Add(1) // the sink accepting data is progress too
		select {
		case w.free <- buf[:0]:
		default:
		}
	}
}

func (w *walker) ops() int64 {
	var n int64
	for i := range w.state {
		n += w.state[i].ops.Load()
	}
	return n
}

func (w *walker) busyDirs() []string {
	var d []string
	for i := range w.state {
		if t := w.state[i].current.Load(); t != nil {
			d = append(d, string(t.fullPath()))
		}
	}
	return d
}

func (w *walker) progress(done bool) Progress {
	var p Progress
	for i := range w.state {
		p.Entries += w.state[i].entries.Load()
		p.Dirs += w.state[i].dirs.Load()
	}
	p.Errors = w.errCount.Load()
	p.Elapsed = time.Since(w.start)
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(p.Entries) / s
	}
	p.Done = done
	return p
}

func (w *walker) result() Result {
	p := w.progress(true)
	return Result{
		Records: w.roots.Load() + p.Entries - w.ignored.Load(),
		Bytes:   w.written.Load(),
		Ignored: w.ignored.Load(),
		Dirs:    p.Dirs,
		Errors:  w.errCount.Load(),
		Elapsed: p.Elapsed,
	}
}

// report counts an error and hands it to OnError.
func (w *walker) report(path []byte, op string, err error) {
	w.errCount.Add(1)
	e := &EntryError{Path: string(path), Op: op, Err: err}
	if w.opts.Logger != nil {
		w.opts.Logger.Warn("unreadable entry", pathAttr(e.Path), "op", op, "err", err.Error())
	}
	if w.opts.OnError == nil {
		return
	}
	w.errMu.Lock()
	cbErr := w.opts.OnError(e)
	w.errMu.Unlock()
	if cbErr != nil {
		w.stop(cbErr)
	}
}

// pop takes the most recently queued directory (depth first keeps few
// parent directories open) or returns nil when the walk is over.
func (w *walker) pop() *dirTask {
	w.mu.Lock()
	for len(w.stack) == 0 && w.pending > 0 && !w.stopping.Load() {
		w.cond.Wait()
	}
	if w.stopping.Load() {
		// Queued directories hold their parent open: let go of them, or a
		// cancelled walk would keep the medium busy (unmount: EBUSY).
		left := w.stack
		w.stack = nil
		w.mu.Unlock()
		for _, t := range left {
			w.release(t.parent)
		}
		return nil
	}
	if len(w.stack) == 0 {
		w.mu.Unlock()
		return nil
	}
	t := w.stack[len(w.stack)-1]
	w.stack[len(w.stack)-1] = nil
	w.stack = w.stack[:len(w.stack)-1]
	w.mu.Unlock()
	return t
}

func (w *walker) push(tasks []*dirTask) {
	w.mu.Lock()
	w.stack = append(w.stack, tasks...)
	w.pending += len(tasks)
	if len(tasks) == 1 {
		w.cond.Signal()
	} else {
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

func (w *walker) finish() {
	w.mu.Lock()
	w.pending--
	if w.pending == 0 {
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

func (w *walker) release(h *dirHandle) {
	if h != nil && h.refs.Add(-1) == 0 {
		w.fs.close(h.fd)
	}
}

// worker holds what one walking goroutine reuses for every directory.
type worker struct {
	w       *walker
	ws      *workerState
	dents   []byte
	out     []byte
	path    []byte
	entries []dent
	subdirs []*dirTask
	st      unix.Stat_t
}

type dent struct {
	ino  uint64
	name []byte // NUL-terminated, inside dents
}

func (w *walker) work(ws *workerState) {
	k := &worker{w: w, ws: ws, dents: make([]byte, direntSize), out: w.getBuf()}
	for {
		t := w.pop()
		if t == nil {
			break
		}
		k.readDir(t)
		ws.current.Store(nil)
		w.finish()
	}
	if len(k.out) > 0 {
		k.flush()
	}
}

func (w *walker) getBuf() []byte {
	select {
	case b := <-w.free:
		return b
	default:
		return make([]byte, 0, outBuffer+8<<10)
	}
}

func (k *worker) flush() {
	if k.w.stopping.Load() {
		k.out = k.out[:0]
		return
	}
	select {
	case k.w.out <- k.out:
		k.out = k.w.getBuf()
	case <-k.w.quit:
		k.out = k.out[:0]
	}
}

func (k *worker) readDir(t *dirTask) {
	w := k.w
	dirPath := t.fullPath()
	k.ws.current.Store(t)

	dirfd := unix.AT_FDCWD
	if t.parent != nil {
		dirfd = t.parent.fd
	}
	fd, err := w.fs.openDir(dirfd, t.path[t.nameOff:])
	w.release(t.parent)
	k.ws.ops.Add(1)
	if err != nil {
		w.report(dirPath, "open directory", err)
		return
	}
	if err := w.fs.fstat(fd, &k.st); err != nil || k.st.Dev != t.dev || k.st.Ino != t.ino {
		if err == nil {
			err = fmt.Errorf("now dev %d ino %d, was dev %d ino %d", k.st.Dev, k.st.Ino, t.dev, t.ino)
		}
		w.fs.close(fd)
		w.report(dirPath, "directory changed", err)
		return
	}
	h := &dirHandle{fd: fd}
	h.refs.Store(1)
	dev := t.dev
	k.ws.dirs.Add(1)

	k.path = append(k.path[:0], dirPath...)
	if len(k.path) == 0 || k.path[len(k.path)-1] != '/' {
		k.path = append(k.path, '/') // as find joins: "dir/" + name, never "//"
	}
	base := len(k.path)
	k.subdirs = k.subdirs[:0]

	for !w.stopping.Load() {
		n, err := w.fs.getdents(fd, k.dents)
		k.ws.ops.Add(1)
		if err != nil {
			w.report(dirPath, "read directory", err)
			break
		}
		if n <= 0 {
			break
		}
		k.entries = parseDirents(k.dents[:n], k.entries[:0])
		// Stat in inode order: on a cold cache neighbouring inodes share
		// inode-table blocks, so the disk reads them once and in sequence.
		slices.SortFunc(k.entries, func(a, b dent) int {
			switch {
			case a.ino < b.ino:
				return -1
			case a.ino > b.ino:
				return 1
			}
			return 0
		})
		for i := range k.entries {
			if w.stopping.Load() {
				break
			}
			k.entry(h, dev, base, k.entries[i].name)
		}
	}
	if len(k.subdirs) > 0 && !w.stopping.Load() {
		// Highest inode first onto the stack, so the lowest is read next:
		// the walk then moves up the inode tables as the read-ahead does
		// (prefetch.go), instead of meeting it half-way from the other end.
		slices.SortFunc(k.subdirs, func(a, b *dirTask) int {
			switch {
			case a.ino > b.ino:
				return -1
			case a.ino < b.ino:
				return 1
			}
			return 0
		})
		h.refs.Add(int32(len(k.subdirs)))
		w.push(k.subdirs)
		k.subdirs = k.subdirs[:0]
	}
	w.release(h)
}

// entry stats one directory entry and records it.
func (k *worker) entry(h *dirHandle, dev uint64, base int, name []byte) {
	w := k.w
	err := w.fs.lstatAt(h.fd, name, &k.st)
	k.ws.ops.Add(1)
	k.path = append(k.path[:base], name[:len(name)-1]...)
	if err != nil {
		w.report(k.path, "stat", err)
		return
	}
	k.ws.entries.Add(1)
	st := &k.st
	if w.opts.Ignore != nil && w.opts.Ignore.Match(k.path) {
		w.ignored.Add(1)
	} else {
		rec := recordOf(st, k.path)
		k.out = AppendRecord(k.out, &rec)
		if len(k.out) >= outBuffer {
			k.flush()
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return
	}
	if st.Dev != dev && !w.enter[string(k.path)] {
		return // another filesystem: recorded, not entered (find -xdev)
	}
	p := make([]byte, len(k.path)+1)
	copy(p, k.path)
	t := &dirTask{parent: h, path: p, nameOff: base, dev: st.Dev, ino: st.Ino}
	if st.Dev != dev && w.tryDirect(t, k.ws) {
		return // a partition read from its device
	}
	k.subdirs = append(k.subdirs, t)
}

func recordOf(st *unix.Stat_t, path []byte) Record {
	return Record{
		Type:  entryType(st.Mode),
		Dev:   st.Dev,
		Ino:   st.Ino,
		Nlink: uint64(st.Nlink),
		Size:  st.Size,
		Mtime: st.Mtim.Sec,
		Path:  path,
	}
}

// parseDirents appends the entries of a getdents64 buffer, without "." and
// "..", to out. Names stay NUL-terminated inside buf.
func parseDirents(buf []byte, out []dent) []dent {
	for len(buf) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
		if reclen < 19 || reclen > len(buf) {
			break
		}
		ino := binary.NativeEndian.Uint64(buf[0:8])
		name := buf[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i+1]
				break
			}
		}
		buf = buf[reclen:]
		if len(name) == 0 || name[len(name)-1] != 0 {
			continue // malformed record from the kernel; cannot pass it on
		}
		if (len(name) == 2 && name[0] == '.') || (len(name) == 3 && name[0] == '.' && name[1] == '.') {
			continue
		}
		out = append(out, dent{ino: ino, name: name})
	}
	return out
}
