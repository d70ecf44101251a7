package archive

import (
	"archive/tar"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// PartialName is the temporary name a seal writes under, in the
// destination directory: .<hash>.tar.zst.partial. A crashed seal leaves it
// behind; the next seal of the medium reuses it.
func PartialName(h string) string { return "." + h + ".tar.zst.partial" }

func (s Spec) withDefaults() Spec {
	if len(s.ImagesDirs) == 0 {
		s.ImagesDirs = []string{DefaultImagesDir}
	}
	if s.Dest == "" {
		s.Dest = DefaultDestDir
	}
	if s.Level == 0 {
		s.Level = DefaultLevel
	}
	if s.Concurrency <= 0 {
		s.Concurrency = runtime.GOMAXPROCS(0)
	}
	s.Progress = progressOrNop(s.Progress)
	return s
}

// Seal writes the medium's members into <dest>/<hash>.tar.zst, verified by
// reading it back, as the package doc describes. It does not touch the
// catalog or the sources; see Complete for that.
func Seal(ctx context.Context, spec Spec) (*Result, error) {
	h, err := medium.Parse(spec.Medium)
	if err != nil {
		return nil, err
	}
	spec = spec.withDefaults()
	if spec.Level < 1 || spec.Level > 22 {
		return nil, fmt.Errorf("medium %s: zstd level %d out of range 1–22", h, spec.Level)
	}
	names := spec.Members
	if names == nil {
		names = h.ImageMembers()
	}
	if st, err := os.Stat(spec.Dest); err != nil {
		return nil, fmt.Errorf("medium %s: destination: %w", h, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("medium %s: destination %s is not a directory", h, spec.Dest)
	}
	final := filepath.Join(spec.Dest, h.ArchiveFileName())
	if !spec.Force {
		if err := refuseExisting(h, final); err != nil {
			return nil, err
		}
	}
	srcs, skipped, err := openSources(string(h), names, spec.ImagesDirs)
	if err != nil {
		return nil, err
	}
	defer closeSources(srcs)

	part, err := lockPartial(filepath.Join(spec.Dest, PartialName(string(h))))
	if err != nil {
		return nil, fmt.Errorf("medium %s: %w", h, err)
	}
	done := false
	defer func() {
		if !done { // leave no half-written file behind on an error we saw
			os.Remove(part.Name())
		}
		part.Close()
	}()
	if !spec.Force { // someone may have finished while we waited for the lock
		if err := refuseExisting(h, final); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	res := &Result{Path: final, Skipped: skipped}
	var total int64
	for _, s := range srcs {
		total += s.st.Size
	}
	// The read-back runs beside the writer, one frame behind it: it decodes
	// each frame from the file once the frame is written and checks each
	// member against its manifest entry. It finishes after the fsync, and
	// nothing is renamed before it has covered the whole file.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prog := &lockedProgress{p: spec.Progress}
	spans := newSpanLog()
	type verified struct {
		man *Manifest
		err error
	}
	vdone := make(chan verified, 1)
	go func() {
		m, err := verifyStream(sctx, part, spans, part.Name(), nil, verifyOptions{
			concurrency: spec.Concurrency, progress: prog, sha256: spec.SHA256,
			total: total, expect: spans.member,
		})
		if err != nil {
			cancel() // stop the writer: this archive will not be kept
		}
		vdone <- verified{m, err}
	}()
	wb := startWriteback(part)
	man, err := writeArchive(sctx, part, h, srcs, spec, prog, res, spans, wb)
	wb.stop()
	if err == nil && spec.Logger != nil {
		spec.Logger.InfoContext(ctx, "archive written, finishing fsync and read-back", "medium", string(h),
			"path", part.Name(), "written_s", time.Since(start).Seconds())
	}
	if err == nil {
		t := time.Now()
		if err = part.Sync(); err != nil {
			err = fmt.Errorf("fsync %s: %w", part.Name(), err)
		}
		res.SyncTime = time.Since(t)
	}
	spans.finish(err)
	res.SealTime = time.Since(start)
	v := <-vdone
	res.VerifyTime = time.Since(start) - res.SealTime
	switch {
	case err != nil && v.err != nil && !errors.Is(v.err, context.Canceled) && errors.Is(err, context.Canceled) && ctx.Err() == nil:
		return nil, fmt.Errorf("medium %s: read-back verification failed, archive not kept: %w", h, v.err)
	case err != nil:
		return nil, fmt.Errorf("medium %s: seal %s: %w", h, part.Name(), err)
	case v.err != nil:
		return nil, fmt.Errorf("medium %s: read-back verification failed, archive not kept: %w", h, v.err)
	}
	if err := sameManifest(man, v.man); err != nil {
		return nil, fmt.Errorf("medium %s: read-back verification failed, archive not kept: %w", h,
			&MemberError{Archive: part.Name(), Member: ManifestName(string(h)), Err: err})
	}
	st, err := part.Stat()
	if err != nil {
		return nil, err
	}
	res.Size = st.Size()
	if covered := spans.end(); covered != res.Size {
		return nil, fmt.Errorf("medium %s: read-back covered %d of %d bytes of %s, archive not kept", h, covered, res.Size, part.Name())
	}

	if err := os.Rename(part.Name(), final); err != nil {
		return nil, fmt.Errorf("medium %s: %w", h, err)
	}
	done = true
	if err := syncDir(spec.Dest); err != nil {
		return nil, fmt.Errorf("medium %s: archive renamed into place but: %w", h, err)
	}
	res.Manifest = *man
	res.Total = time.Since(start)
	if spec.Logger != nil {
		spec.Logger.InfoContext(ctx, "archive sealed", "medium", string(h), "path", final,
			"size", res.Size, "members", len(res.Members), "seal_s", res.SealTime.Seconds(),
			"verify_s", res.VerifyTime.Seconds())
	}
	return res, nil
}

func refuseExisting(h medium.Hash, final string) error {
	_, err := os.Lstat(final)
	if err == nil {
		return fmt.Errorf("medium %s: %w: %s exists", h, ErrAlreadyArchived, final)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("medium %s: %w", h, err)
	}
	return nil
}

// lockPartial opens the temporary file and takes an exclusive flock on it,
// making sure the name still refers to the locked file (a concurrent seal
// may have renamed or removed it between our open and our lock), then
// empties it.
func lockPartial(path string) (*os.File, error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w (%s is locked)", ErrBusy, path)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, fmt.Errorf("truncate %s: %w", path, err)
			}
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("%w (%s keeps changing)", ErrBusy, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// countingWriter counts what reaches the archive file and hands each
// written stretch to the writeback. (Its writers — the encoder's flusher,
// the zero frames — take turns, never write at once.)
type countingWriter struct {
	w      io.Writer
	n      int64
	wb     *writeback
	wbFrom int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.wb != nil && c.n-c.wbFrom >= writebackChunk {
		c.wb.add(c.wbFrom, c.n)
		c.wbFrom = c.n
	}
	return n, err
}

// frameWriter is the tar writer's output. It feeds the zstd encoder, one
// frame per member, and turns runs of zeros announced by the member
// streamer (inZeros) into zero frames when they are long enough.
type frameWriter struct {
	enc     *zstd.Encoder
	out     *countingWriter
	spans   *spanLog
	open    bool  // an encoder frame is open
	start   int64 // file offset of the open frame
	in      int64 // bytes fed to the open frame
	pending int64 // zero bytes announced and not yet written
	inZeros bool  // Write calls carry announced zeros
	scratch []byte
}

// frameCap bounds the data in one encoder frame, so the read-back never
// lags the writer by more than this, and a broken frame is located within
// it. Cutting a frame costs a little ratio (the window restarts) and a
// drain of the compression jobs, negligible at this size.
// (A variable so tests can cut frames small.)
var frameCap int64 = 256 << 20

func (w *frameWriter) Write(p []byte) (int, error) {
	if w.inZeros {
		w.pending += int64(len(p))
		return len(p), nil
	}
	if err := w.flushZeros(); err != nil {
		return 0, err
	}
	return w.encode(p)
}

func (w *frameWriter) encode(p []byte) (int, error) {
	if !w.open {
		w.enc.Reset(w.out)
		w.open, w.start, w.in = true, w.out.n, 0
	}
	n, err := w.enc.Write(p)
	w.in += int64(n)
	if err == nil && w.in >= frameCap {
		err = w.closeFrame()
	}
	return n, err
}

func (w *frameWriter) flushZeros() error {
	n := w.pending
	if n == 0 {
		return nil
	}
	w.pending = 0
	if n >= zeroFrameMin {
		if err := w.closeFrame(); err != nil {
			return err
		}
		start := w.out.n
		if _, err := writeZeroFrame(w.out, n, w.scratch); err != nil {
			return err
		}
		w.publish(frameSpan{Offset: start, Size: w.out.n - start, Zeros: n})
		return nil
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.encode(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (w *frameWriter) closeFrame() error {
	if !w.open {
		return nil
	}
	w.open = false
	if err := w.enc.Close(); err != nil {
		return err
	}
	if size := w.out.n - w.start; size > 0 {
		w.publish(frameSpan{Offset: w.start, Size: size})
	}
	return nil
}

// frameWritten, when set (by tests only), sees each frame after it is
// written and before the read-back may read it.
var frameWritten func(f io.Writer, s frameSpan)

func (w *frameWriter) publish(s frameSpan) {
	if frameWritten != nil {
		frameWritten(w.out.w, s)
	}
	w.spans.addSpan(s)
}

// spanLog is what the writer tells the concurrent read-back: the frames
// written so far and the manifest entries of the members sealed so far.
type spanLog struct {
	mu      sync.Mutex
	cond    sync.Cond
	spans   []frameSpan
	members []ManifestMember
	done    bool
	err     error
}

func newSpanLog() *spanLog {
	l := &spanLog{}
	l.cond.L = &l.mu
	return l
}

func (l *spanLog) addSpan(s frameSpan) {
	l.mu.Lock()
	l.spans = append(l.spans, s)
	l.mu.Unlock()
	l.cond.Broadcast()
}

func (l *spanLog) addMember(m ManifestMember) {
	l.mu.Lock()
	l.members = append(l.members, m)
	l.mu.Unlock()
}

// finish says the writer is done; err is why it stopped early, or nil.
func (l *spanLog) finish(err error) {
	l.mu.Lock()
	l.done, l.err = true, err
	l.mu.Unlock()
	l.cond.Broadcast()
}

var errSealAborted = errors.New("the seal stopped before the end of the archive")

// span waits for frame i to be written.
func (l *spanLog) span(i int) (frameSpan, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i >= len(l.spans) && !l.done {
		l.cond.Wait()
	}
	switch {
	case i < len(l.spans):
		return l.spans[i], true, nil
	case l.err != nil:
		return frameSpan{}, false, errSealAborted
	}
	return frameSpan{}, false, nil
}

func (l *spanLog) member(i int) *ManifestMember {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < len(l.members) {
		m := l.members[i]
		return &m
	}
	return nil
}

// end is the file offset after the last frame.
func (l *spanLog) end() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.spans) == 0 {
		return 0
	}
	s := l.spans[len(l.spans)-1]
	return s.Offset + s.Size
}

// lockedProgress serializes the writer's and the read-back's reports.
type lockedProgress struct {
	mu sync.Mutex
	p  Progress
}

func (l *lockedProgress) Start(p Phase, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Start(p, total)
}

func (l *lockedProgress) Member(p Phase, name string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Member(p, name, size)
}

func (l *lockedProgress) Bytes(p Phase, done int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Bytes(p, done)
}

func (l *lockedProgress) Removed(path string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Removed(path, err)
}

// endMember writes what is pending and ends the current frame, so the next
// member starts a frame of its own.
func (w *frameWriter) endMember() error {
	if err := w.flushZeros(); err != nil {
		return err
	}
	return w.closeFrame()
}

// memberWriter hashes a member's content and writes it into the tar stream.
type memberWriter struct {
	tw       *tar.Writer
	fw       *frameWriter
	b3       *blake3.Hasher
	sha      hash.Hash // nil unless asked
	progress Progress
	done     int64
}

func (m *memberWriter) data(p []byte) error {
	m.b3.Write(p)
	if m.sha != nil {
		m.sha.Write(p)
	}
	if _, err := m.tw.Write(p); err != nil {
		return err
	}
	m.done += int64(len(p))
	m.progress.Bytes(PhaseSeal, m.done)
	return nil
}

func (m *memberWriter) zeros(n int64) error {
	m.fw.inZeros = true
	defer func() { m.fw.inZeros = false }()
	for n > 0 {
		k := min(n, int64(len(zeros)))
		p := zeros[:k]
		m.b3.Write(p)
		if m.sha != nil {
			m.sha.Write(p)
		}
		if _, err := m.tw.Write(p); err != nil {
			return err
		}
		n -= k
		m.done += k
		m.progress.Bytes(PhaseSeal, m.done)
	}
	return nil
}

// encoderWindow is the zstd window for levels up to 5. The zstd command
// line uses 2 MiB at level 3; klauspost's default for SpeedDefault is
// 8 MiB, and the parallel jobs are four windows each, so 8 MiB meant
// ~800 MiB resident. 4 MiB keeps the ratio at or better than zstd -3's
// with half that memory.
const encoderWindow = 4 << 20

// newEncoder makes the encoder for an archive of input bytes of members;
// release closes it when the archive is written.
//
// An input that fits in one parallel job (a floppy, a Zip disk) gains
// nothing from concurrency, and a window larger than the input buys no
// ratio: it gets one synchronous encoder with a window just above its
// size. Otherwise each of the parallel jobs would allocate and clear four
// windows of buffers for a medium that fills a fraction of one (55 MB for a
// floppy, a twentieth of the queue's CPU). Such an encoder is kept for the
// next archive with the same settings: a queue of floppies would fault in
// a fresh history and match tables for each (most of the queue's page
// faults; see encoders). Reset makes every frame an independent stream,
// so nothing of one archive reaches the next.
func newEncoder(level, concurrency int, input int64) (enc *zstd.Encoder, release func(), err error) {
	speed := zstd.EncoderLevelFromZstd(level)
	window := 0                     // the level's default
	if speed <= zstd.SpeedDefault { // higher levels keep their larger windows
		window = encoderWindow
	}
	key := encoderKey{speed: speed}
	if small := input + smallArchiveSlack; small <= 4*encoderWindow {
		concurrency = 1
		// Never above the level's own window (8 MiB for higher levels).
		window = min(max(zstd.MinWindowSize, 1<<bits.Len64(uint64(small-1))), cmp.Or(window, 8<<20))
		// The best level's match tables are tens of MiB: not kept.
		if window <= maxCachedWindow && speed < zstd.SpeedBestCompression {
			key.window = window
		}
	}
	release = func() { encoders.keep(key, enc) }
	if enc = encoders.take(key); enc != nil {
		return enc, release, nil
	}
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(speed),
		zstd.WithEncoderConcurrency(concurrency),
		zstd.WithConcurrentBlocks(concurrency > 1),
		zstd.WithEncoderCRC(true),
	}
	if window > 0 {
		opts = append(opts, zstd.WithWindowSize(window))
	}
	if enc, err = zstd.NewWriter(nil, opts...); err != nil {
		return nil, nil, err
	}
	return enc, release, nil
}

// encoders keeps the synchronous encoders of small archives (a window of
// at most maxCachedWindow) for the next archive with the same settings, at
// most maxCachedEncoders of them (one a job of a queue: tens of MiB).
var encoders encoderCache

const (
	maxCachedWindow   = 4 << 20
	maxCachedEncoders = 4
)

// encoderKey is an encoder's settings; window 0: not kept.
type encoderKey struct {
	speed  zstd.EncoderLevel
	window int
}

type encoderCache struct {
	mu   sync.Mutex
	free []cachedEncoder // oldest first
}

type cachedEncoder struct {
	key encoderKey
	enc *zstd.Encoder
}

// take removes and returns a kept encoder with key's settings, or nil.
func (c *encoderCache) take(key encoderKey) *zstd.Encoder {
	if key.window == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.free) - 1; i >= 0; i-- {
		if c.free[i].key == key {
			e := c.free[i].enc
			c.free = append(c.free[:i], c.free[i+1:]...)
			return e
		}
	}
	return nil
}

// keep closes enc and, if its settings are to be kept and it closed
// cleanly, keeps it (forgetting the oldest beyond maxCachedEncoders).
func (c *encoderCache) keep(key encoderKey, enc *zstd.Encoder) {
	if err := enc.Close(); err != nil || key.window == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.free) == maxCachedEncoders {
		c.free = append(c.free[:0], c.free[1:]...)
	}
	c.free = append(c.free, cachedEncoder{key, enc})
}

// smallArchiveSlack covers what the stream holds besides the members'
// bytes: tar headers and the manifest.
const smallArchiveSlack = 64 << 10

// writeArchive writes the tar.zst stream to out, publishing each frame
// and manifest entry to spans as soon as it is complete, and returns the
// manifest.
func writeArchive(ctx context.Context, out *os.File, h medium.Hash, srcs []*source, spec Spec, prog Progress, res *Result, spans *spanLog, wb *writeback) (*Manifest, error) {
	var total int64
	for _, s := range srcs {
		total += s.st.Size
	}
	enc, release, err := newEncoder(spec.Level, spec.Concurrency, total)
	if err != nil {
		return nil, err
	}
	defer release()
	fw := &frameWriter{enc: enc, out: &countingWriter{w: out, wb: wb}, scratch: make([]byte, 0, 64<<10), spans: spans}
	tw := tar.NewWriter(fw)
	man := &Manifest{Format: ManifestFormat, Medium: string(h), Created: time.Now().UTC().Truncate(time.Second), ZstdLevel: spec.Level}

	prog.Start(PhaseSeal, total)
	mw := &memberWriter{tw: tw, fw: fw, b3: blake3.New(), progress: prog}
	if spec.SHA256 {
		mw.sha = sha256.New()
	}
	buf := make([]byte, readChunk)
	for _, s := range srcs {
		prog.Member(PhaseSeal, s.name, s.st.Size)
		mm := ManifestMember{
			Name:  s.name,
			Size:  s.st.Size,
			Mode:  s.st.Mode & 0o7777,
			MTime: s.st.Mtim.Sec,
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     s.name,
			Size:     mm.Size,
			Mode:     int64(mm.Mode),
			ModTime:  time.Unix(mm.MTime, 0),
			Uid:      int(s.st.Uid),
			Gid:      int(s.st.Gid),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("member %s: %w", s.name, err)
		}
		mw.b3.Reset()
		if mw.sha != nil {
			mw.sha.Reset()
		}
		if err := stream(ctx, s.f, s.st.Size, buf, mw); err != nil {
			return nil, fmt.Errorf("member %s (%s): %w", s.name, s.path, err)
		}
		if err := s.checkUnchanged(); err != nil {
			return nil, err
		}
		mm.BLAKE3 = hex.EncodeToString(mw.b3.Sum(nil))
		if mw.sha != nil {
			mm.SHA256 = hex.EncodeToString(mw.sha.Sum(nil))
		}
		// the entry is published before the member's last frame, so the
		// read-back can check the member as soon as it has decoded it
		spans.addMember(mm)
		if err := tw.Flush(); err != nil { // block padding, still in this member's frame
			return nil, fmt.Errorf("member %s: %w", s.name, err)
		}
		if err := fw.endMember(); err != nil {
			return nil, fmt.Errorf("member %s: %w", s.name, err)
		}
		man.Members = append(man.Members, mm)
		res.Members = append(res.Members, SealedMember{
			ManifestMember: mm, Source: s.path,
			dev: s.st.Dev, ino: s.st.Ino, mtimeNs: s.mtimeNs(),
		})
		if spec.Logger != nil {
			spec.Logger.DebugContext(ctx, "member sealed", "medium", string(h), "member", s.name,
				"size", mm.Size, "blake3", mm.BLAKE3)
		}
	}

	body, err := man.encode()
	if err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     ManifestName(string(h)),
		Size:     int64(len(body)),
		Mode:     0o444,
		ModTime:  man.Created,
	}); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if _, err := tw.Write(body); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := tw.Close(); err != nil { // padding and the two end blocks
		return nil, fmt.Errorf("tar end: %w", err)
	}
	if err := fw.endMember(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return man, nil
}

// writeback starts the kernel writing the archive to disk while it is
// still being sealed (sync_file_range, SYNC_FILE_RANGE_WRITE, from its own
// goroutine since it may wait on the device queue), so that the final
// fsync has little left to do. It only starts writes; durability is still
// the fsync's job.
type writeback struct {
	f    *os.File
	ch   chan [2]int64
	done chan struct{}
}

// writebackChunk is how much written data is handed to the kernel at once.
const writebackChunk = 8 << 20

func startWriteback(f *os.File) *writeback {
	w := &writeback{f: f, ch: make(chan [2]int64, 1024), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for r := range w.ch {
			// errors are ignored: the fsync reports what matters
			_ = unix.SyncFileRange(int(w.f.Fd()), r[0], r[1]-r[0], unix.SYNC_FILE_RANGE_WRITE)
		}
	}()
	return w
}

// add never blocks the writer: if the queue is full the range is left to
// the fsync.
func (w *writeback) add(from, to int64) {
	select {
	case w.ch <- [2]int64{from, to}:
	default:
	}
}

func (w *writeback) stop() {
	close(w.ch)
	<-w.done
}
