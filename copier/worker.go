package copier

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gabriel-vasile/mimetype"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// Reading. Files up to smallMax bytes are read whole into the worker's
// buffer and hashed there; the store is written only when the blob is new,
// so a duplicate costs no write. Larger files stream once through the hash
// into an unnamed file in the store, chunk by chunk, while the next chunk
// is being read.
const (
	smallMax    = 16 << 20
	streamChunk = 128 << 10 // streaming reads: readahead keeps up with these
	mimeHead    = 3072      // what mimetype looks at
)

// worker copies the inodes of its batches one at a time.
type worker struct {
	r      *run
	id     int
	buf    []byte   // smallMax+1: one byte more, to see a file that grew
	mem    []byte   // streamMem, aligned (direct.go): the chunks in flight between reader, hasher and writer
	free   []func() // frees buf and mem (mem.go: both outside the Go heap)
	hasher *blake3.Hasher
	tc     *treeCursor
}

// newWorker makes a worker; its buffers are made when first needed, so
// that a worker the tuner never lets in costs no memory.
func newWorker(r *run, id int) *worker {
	w := &worker{r: r, id: id, hasher: blake3.New()}
	if r.tree != nil {
		w.tc = r.tree.cursor()
	}
	return w
}

func (w *worker) close() {
	if w.tc != nil {
		w.tc.close()
	}
	for _, free := range w.free {
		free()
	}
	w.buf, w.mem, w.free = nil, nil, nil
}

// buffer returns a new buffer of n bytes that close frees.
func (w *worker) buffer(n int) []byte {
	b, free := workerBuf(n)
	w.free = append(w.free, free)
	return b
}

// fileErr is a failure with what the policy needs to know about it.
type fileErr struct {
	err     error
	path    []byte
	file    string
	mount   string
	fileDev uint64
}

// copyInode copies one claimed inode, opened ahead (prepare: checked
// beneath the mount against the catalog): read it once while hashing,
// store the blob, link every path into the tree.
func (w *worker) copyInode(ctx context.Context, n *inode, pr prepared) (outcome, *fileErr, FileResult) {
	res := FileResult{Dev: n.Dev, Ino: n.Ino, Size: n.Size}
	if pr.excluded {
		return outcome{n: n, kind: excluded}, nil, res
	}
	res.Path = n.Paths[0]
	if pr.ferr != nil {
		return outcome{n: n}, pr.ferr, res
	}
	of, rels := pr.of, pr.rels
	p := n.Paths[of.idx]
	mount, liveDev := of.mount, of.dev
	failRead := func(err error) (outcome, *fileErr, FileResult) {
		return outcome{n: n}, &fileErr{err: err, path: p, file: of.name, mount: mount, fileDev: liveDev}, res
	}

	id, mime, created, read, written, err := w.store(of.r, p, n.Size)
	res.BytesRead, res.BytesWritten = read, written
	if err != nil {
		return failRead(err)
	}
	o := outcome{n: n, kind: copied, blob: id, mime: mime, created: created}
	if w.r.o.Damage != nil {
		dmg, err := w.damage(ctx, of)
		if err != nil {
			w.r.log.Warn("could not map the file's damaged ranges", "medium", w.r.h, "ino", n.Ino, "path", string(p), "err", err)
		} else {
			o.damage = dmg
		}
	}
	if w.tc != nil {
		for i, rel := range rels {
			copiedLink, err := w.tc.link(n.Paths[i], rel, id)
			if errors.Is(err, errBlobGone) {
				// Quarantined since this run recorded it: released, and
				// stored again when claimed again.
				w.r.blobs.refuse([]string{id})
				return outcome{n: n, kind: released}, nil, res
			}
			if err != nil && !isPathErr(err) {
				err = storeErr(err)
			}
			if err != nil {
				return outcome{n: n}, &fileErr{err: err, path: n.Paths[i], mount: mount, fileDev: liveDev}, res
			}
			if copiedLink {
				w.r.st.linkCopies.Add(1)
			} else {
				w.r.st.links.Add(1)
			}
		}
	}
	res.New, res.Deduped, res.Blob = created, !created, id
	if of.devRuns != nil {
		w.r.st.fromDevice.Add(1)
	}
	return o, nil, res
}

// openInode opens the inode beneath the mount: the first of its paths
// that opens, checked against the catalog (a regular file with the
// catalog's inode number and size), every other name leading to the same
// inode beneath the mount.
func (s *source) openInode(n *inode, rels []string) (*openedFile, *fileErr) {
	if of := s.openFromDevice(n, rels); of != nil {
		return of, nil
	}
	fd, mount, idx, ferr := s.open(n, rels)
	if ferr != nil {
		return nil, ferr
	}
	p := n.Paths[idx]
	liveDev, err := checkFile(fd, p, n.Ino, n.Size)
	if err != nil {
		unix.Close(fd)
		return nil, &fileErr{err: err, path: p, mount: mount, fileDev: liveDev}
	}
	// Every other name must lead to the same inode, beneath the mount, or
	// the tree would get a path the medium does not have.
	for i, rel := range rels {
		if i != idx {
			if err := s.checkName(n.Paths[i], rel, n.Ino); err != nil {
				unix.Close(fd)
				return nil, &fileErr{err: err, path: n.Paths[i], mount: mount, fileDev: liveDev}
			}
		}
	}
	var r io.Reader = fdReader(fd)
	if n.Size > smallMax {
		if d, err := readDirect(fd); err == nil {
			r = d // see direct.go
		}
	}
	return &openedFile{r: r, idx: idx, name: filepath.Join(mount, rels[idx]), mount: mount, dev: liveDev,
		fd: fd, done: func() { unix.Close(fd) }}, nil
}

// order keeps a mount's claim order, by inode number: the filesystem's
// allocator mostly places inodes, and their data, in that order.
func (s *source) order([]*inode) {}

// advise asks for the file's first n bytes (posix_fadvise WILLNEED: the
// kernel starts the reads and returns), unless the file is read with
// O_DIRECT, which would read them again.
func (s *source) advise(f *openedFile, n int64) {
	if f.devRuns != nil {
		f.devChunks.advise(f.devRuns, n)
		return
	}
	if _, direct := f.r.(*directReader); n > 0 && !direct {
		unix.Fadvise(f.fd, 0, n, unix.FADV_WILLNEED)
	}
}

// open tries the inode's paths in order (hardlinks) and returns the first
// that opens beneath the mount.
func (s *source) open(n *inode, rels []string) (fd int, mount string, idx int, ferr *fileErr) {
	for i, rel := range rels {
		fd, mount, err := s.openFile(n.Paths[i], rel)
		if err == nil {
			return fd, mount, i, nil
		}
		if ferr == nil || isPathErr(ferr.err) && !isPathErr(err) {
			// Report a read-side error (EIO …) over a path problem of
			// another name of the same inode.
			ferr = &fileErr{err: err, path: n.Paths[i], mount: mount}
		}
	}
	return -1, "", -1, ferr
}

func isPathErr(err error) bool {
	var pe *PathError
	return errors.As(err, &pe)
}

// store reads f (size bytes as catalogued) once, hashing it, and stores it
// as a blob unless it is stored already (or, in a dry run, only checks).
func (w *worker) store(f io.Reader, p []byte, size int64) (id, mime string, created bool, read, written int64, err error) {
	dry := w.r.o.DryRun
	if size <= smallMax {
		if w.buf == nil {
			w.buf = w.buffer(smallMax + 1)
		}
		// Exactly size bytes: fstat said so, and the mount is read-only.
		n, err := readFull(f, w.buf[:size])
		read = int64(n)
		if err != nil {
			return "", "", false, read, 0, fmt.Errorf("read %q at offset %d: %w", p, n, err)
		}
		if int64(n) != size {
			return "", "", false, read, 0, &PathError{Op: "read", Path: p, Err: fmt.Errorf("%w: read %d bytes, catalog says %d", ErrMismatch, n, size)}
		}
		data := w.buf[:n]
		sum := blake3.Sum256(data)
		id = hex.EncodeToString(sum[:])
		mime = w.r.mimeOf(id, data)
		if dry {
			have, err := w.r.store.HasBlob(id, size)
			return id, mime, !have, read, 0, storeErr(err)
		}
		if w.r.blobs.has(id) {
			// Stored, synced and recorded by an earlier batch of this run:
			// the store need not be asked again. A blob quarantined since
			// is caught when linking (errBlobGone) or at commit.
			return id, mime, false, read, 0, nil
		}
		created, err = w.r.store.putBytes(id, data, w.r.blobs.suspected(id))
		if created {
			written = size
			w.r.blobs.trust([]string{id}) // see the large files' case below
		}
		return id, mime, created, read, written, storeErr(err)
	}

	var bw *blobWriter
	if !dry {
		if bw, err = w.r.store.create(); err != nil {
			return "", "", false, 0, 0, storeErr(err)
		}
	}
	w.hasher.Reset()
	read, written, head, err := w.stream(f, bw)
	if err != nil {
		if bw != nil {
			bw.abort()
		}
		if errors.Is(err, errWrite) {
			return "", "", false, read, written, storeErr(err)
		}
		return "", "", false, read, written, fmt.Errorf("read %q at offset %d: %w", p, read, err)
	}
	if read != size {
		if bw != nil {
			bw.abort()
		}
		return "", "", false, read, written, &PathError{Op: "read", Path: p, Err: fmt.Errorf("%w: read %d bytes, catalog says %d", ErrMismatch, read, size)}
	}
	id = hex.EncodeToString(w.hasher.Sum(nil))
	mime = w.r.mimeOf(id, head)
	if dry {
		have, err := w.r.store.HasBlob(id, size)
		return id, mime, !have, read, 0, storeErr(err)
	}
	created, err = bw.commit(id, size, w.r.blobs.suspected(id))
	err = storeErr(err)
	if created && err == nil {
		// What this run wrote at the name is right by construction: the
		// other copies of it in this run dedupe against it rather than
		// replace it (a tree link made to it would be left behind). Its
		// batch's commit clears the catalog's mark; a copy committed
		// before that is refused and copied again.
		w.r.blobs.trust([]string{id})
	}
	if !created {
		// Stored already (or by another writer meanwhile): the unnamed
		// file is dropped, normally before its pages reach the disk.
		w.r.st.discarded.Add(written)
		return id, mime, false, read, 0, err
	}
	return id, mime, true, read, written, err
}

var errWrite = errors.New("writing to the store")

// stream reads f to its end, hashing every chunk and writing it to bw (nil
// in a dry run), as a three-stage pipeline: a reader goroutine, a hasher
// goroutine and the writer (this goroutine), chunks flowing between them in
// order, so that reading, hashing and writing overlap. Reads are small
// (streamChunk): the kernel's readahead then stays ahead of the reader;
// O_DIRECT reads (direct.go), which have no readahead, are larger. It
// returns the first bytes for MIME detection.
func (w *worker) stream(f io.Reader, bw *blobWriter) (read, written int64, head []byte, err error) {
	type chunk struct {
		b   []byte
		err error
	}
	if w.mem == nil {
		w.mem = w.buffer(streamMem)
	}
	size := streamChunk
	if _, ok := f.(*directReader); ok {
		size = directChunk
	}
	n := streamMem / size
	free := make(chan []byte, n)
	for off := 0; off < streamMem; off += size {
		free <- w.mem[off : off+size : off+size]
	}
	toHash := make(chan chunk, n)
	toWrite := make(chan chunk, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // reader
		defer wg.Done()
		defer close(toHash)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			k, err := readFull(f, b)
			if k > 0 {
				toHash <- chunk{b: b[:k]}
			}
			if err != nil {
				toHash <- chunk{err: err}
				return
			}
			if k < len(b) {
				return
			}
		}
	}()
	go func() { // hasher
		defer wg.Done()
		defer close(toWrite)
		for c := range toHash {
			if c.err == nil {
				w.hasher.Write(c.b)
			}
			toWrite <- c
		}
	}()
	defer func() {
		close(stop)
		for range toWrite { // unblocks the hasher, which unblocks the reader
		}
		wg.Wait()
	}()
	for c := range toWrite {
		if c.err != nil {
			return read, written, head, c.err
		}
		if head == nil {
			head = append([]byte(nil), c.b[:min(len(c.b), mimeHead)]...)
		}
		read += int64(len(c.b))
		w.r.touch(w.id) // a big file is progress too, chunk by chunk
		if bw != nil {
			if _, err := bw.Write(c.b); err != nil {
				return read, written, head, fmt.Errorf("%w %s: %w", errWrite, w.r.store.Root, err)
			}
			// No writeback is started here. sync_file_range every 8 MiB
			// took a 2 GiB file from 2.0 s to 3.9 s (syncfs included),
			// and from a goroutine of its own to 3.2 s: interleaved
			// writes slow the reads down more than one syncfs at the end
			// costs. Measured again on 2026-12-05 (a disk slower to
			// write: syncfs of 2 GiB 1.4-2.0 s, cold cat 0.6-0.9 s), from
			// a goroutine every 64 or 128 MiB: 3.17-3.74 s against
			// 2.81-3.82 s without, 3 to 5 runs each: no gain, the reads
			// and the writeback share the disk. Again on 2026-12-07
			// (machine G, cold cat 1.3-2.1 s, syncfs of 2 GiB 0.9-1.1 s),
			// from a goroutine every 64 MiB, two runs of three each,
			// alternating: 2.65 and 2.98 s against 2.65 and 2.80 s
			// (medians), the writeback moving from the syncfs into the
			// stream (stream 2.5-3.4 s, syncfs 5-28 ms). A batch holds about
			// 1 GiB of files at most (one file may be larger); beyond
			// that, the kernel's dirty limits apply as to any writer.
			// Nor are large blobs written with O_DIRECT (2026-12-06,
			// a disk that reads 2 GiB cold in 1.0-1.3 s and syncs it
			// in 0.6-0.9 s, 2 GiB file, 3 runs per build, builds
			// alternating twice): one write in flight took 2.21-2.96 s
			// (syncfs then ~2 ms, CPU 1.2-1.5 s) against 1.97-2.69 s
			// through the cache; four pwrites in flight (8 MiB of
			// chunks) 1.83-3.65 s against 1.90-2.72 s. Direct writes
			// share the disk with the reads while the cache defers
			// them to one syncfs, and a duplicate's bytes, which the
			// cache drops unwritten, would reach the disk.
			written += int64(len(c.b))
		}
		free <- c.b[:cap(c.b)]
	}
	if head == nil {
		head = []byte{}
	}
	return read, written, head, nil
}

// fdReader reads a file descriptor directly: the medium's files are
// regular files read once, and an *os.File would cost two more system
// calls per file (its poller registration).
type fdReader int

func (f fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(b) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// readFull reads until b is full or the file ends (io.EOF is not an error).
func readFull(f io.Reader, b []byte) (int, error) {
	n, err := io.ReadFull(f, b)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return n, err
}

// damage maps the opened file's damaged ranges: by its runs when it was
// read from an image (RunDamageMapper), else by running the DamageMapper
// on a duplicate of the open descriptor.
func (w *worker) damage(ctx context.Context, of *openedFile) (json.RawMessage, error) {
	if of.fd < 0 {
		rm, ok := w.r.o.Damage.(RunDamageMapper)
		if !ok {
			return nil, nil
		}
		return rm.RunDamage(ctx, of.runs)
	}
	dup, err := unix.FcntlInt(uintptr(of.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), of.name)
	defer f.Close()
	return w.r.o.Damage.Damage(ctx, f, of.mount)
}

// mimeCache remembers the MIME type of blobs seen in this run: a repeated
// content is not sniffed again.
type mimeCache struct {
	mu sync.Mutex
	m  map[string]string
}

const mimeCacheMax = 1 << 16

func (r *run) mimeOf(id string, data []byte) string {
	c := &r.mime
	c.mu.Lock()
	if m, ok := c.m[id]; ok {
		c.mu.Unlock()
		return m
	}
	c.mu.Unlock()
	m := mimetype.Detect(data[:min(len(data), mimeHead)]).String()
	c.mu.Lock()
	if c.m == nil || len(c.m) >= mimeCacheMax {
		c.m = make(map[string]string)
	}
	c.m[id] = m
	c.mu.Unlock()
	return m
}

// process copies a batch, stopping (and releasing the rest) when ctx is
// done. A failure of the store ends the batch: that inode and the rest are
// released, and the error is returned.
func (w *worker) process(ctx context.Context, batch []*inode) ([]outcome, error) {
	w.r.src.order(batch)
	ah := startAhead(batch, w.r.prepare, aheadOpeners, aheadWindow)
	defer ah.stop()
	outs := make([]outcome, 0, len(batch))
	var abort error
	for i, n := range batch {
		if ctx.Err() != nil || abort != nil {
			outs = append(outs, outcome{n: n, kind: released})
			continue
		}
		w.r.touch(w.id)
		o, ferr, res := w.copyInode(ctx, n, ah.take(i))
		ah.done(i)
		if ferr != nil {
			var se *StoreError
			if errors.As(ferr.err, &se) {
				abort = fmt.Errorf("medium %s: %w", w.r.h, ferr.err)
				outs = append(outs, outcome{n: n, kind: released})
				continue
			}
			// A dead source is the run's failure, not the file's: the
			// inode is released as it was, and the run stops.
			if err := w.r.checkSource(ctx, ferr.mount, false); err != nil {
				abort = err
				outs = append(outs, outcome{n: n, kind: released})
				continue
			}
			o = w.r.decide(ctx, n, ferr)
			if err := w.r.sourceVerdict(ctx, ferr, o.dec); err != nil {
				abort = err
				outs = append(outs, outcome{n: n, kind: released})
				continue
			}
			res.Err, res.Action = ferr.err, o.dec.Action
		}
		w.r.touch(w.id)
		o.read, o.written = res.BytesRead, res.BytesWritten
		w.r.tune.done(res.BytesRead)
		outs = append(outs, o)
		if w.r.o.Progress != nil {
			w.r.o.Progress.FileDone(res)
		}
	}
	return outs, abort
}

// sourceVerdict checks a decision against the source's health: the
// policy's checks may have found the source unhealthy, and a decision that
// marks a file failed_permanent is taken only while the source is whole.
func (r *run) sourceVerdict(ctx context.Context, fe *fileErr, d Decision) error {
	if d.SourceUnhealthy != "" {
		return r.markSourceLost(ctx, fe.mount, d.SourceUnhealthy)
	}
	if d.Action == Skip || d.Action == GiveUp && d.Status == "failed_permanent" {
		return r.checkSource(ctx, fe.mount, true)
	}
	return nil
}

// decide asks the policy what a failure leads to. Path problems (a path
// that is not clean, leaves the mount, or names another file) are not
// retried: retrying cannot help until the catalog or the mount is fixed, so
// the inode is given up at once as failed_retryable, to be reset after the
// fix.
func (r *run) decide(ctx context.Context, n *inode, fe *fileErr) outcome {
	o := outcome{n: n, kind: failed, err: fe.err, at: time.Now()}
	if isPathErr(fe.err) {
		o.dec = Decision{Action: GiveUp, ErrorType: "path_error", Class: "path", Status: "failed_retryable",
			RetryCount: n.Errors + 1, Event: true}
	} else {
		o.dec = r.policy.Failed(ctx, Failure{
			Medium: string(r.h), Dev: n.Dev, Ino: n.Ino, Size: n.Size, Path: fe.path,
			File: fe.file, Mount: fe.mount, FileDev: fe.fileDev,
			Errors: n.Errors, Err: fe.err, WorkerID: r.o.WorkerID,
		})
	}
	r.logDecision(ctx, n, fe, o.dec)
	return o
}
