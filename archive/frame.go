package archive

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// The archive is a sequence of zstd frames (RFC 8878 §3.1): one per member
// (its tar header, data and padding), one or more hand-written frames of
// RLE blocks for long runs of zeros (holes of sparse images and zeroed free
// space), and a last frame with the manifest and the tar end blocks.
// Concatenated frames are one valid zstd stream for every decoder, the
// zstd command line included.

const (
	zstdMagic          = 0xFD2FB528
	skippableMagicMask = 0xFFFFFFF0
	skippableMagic     = 0x184D2A50
	maxBlockSize       = 128 << 10
	// zeroFrameWindow is the window descriptor of zero frames: 1 MiB
	// (exponent 10, mantissa 0), enough for 128 KiB blocks and small enough
	// for any decoder's memory limit.
	zeroFrameWindow = 10 << 3
	// zeroFrameMin is the shortest run of zeros worth a frame of its own:
	// below this, the zeros go through the encoder like any data.
	zeroFrameMin = 1 << 20
)

// writeZeroFrame writes a zstd frame that decodes to n zero bytes: RLE
// blocks of 128 KiB, no content checksum (the member's BLAKE3 covers the
// content). It costs 4 bytes per 128 KiB and no compression work.
func writeZeroFrame(w io.Writer, n int64, scratch []byte) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	buf := scratch[:0]
	buf = binary.LittleEndian.AppendUint32(buf, zstdMagic)
	buf = append(buf, 0x00, zeroFrameWindow) // no FCS, not single segment, no checksum, no dictionary
	var written int64
	for n > 0 {
		bs := min(n, maxBlockSize)
		n -= bs
		hdr := uint32(bs)<<3 | 1<<1 // Block_Type 1 = RLE
		if n == 0 {
			hdr |= 1 // Last_Block
		}
		buf = append(buf, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0x00)
		if len(buf)+8 > cap(buf) || n == 0 {
			k, err := w.Write(buf)
			written += int64(k)
			if err != nil {
				return written, err
			}
			buf = buf[:0]
		}
	}
	return written, nil
}

// frameSpan is where one zstd frame lies in the archive file.
type frameSpan struct {
	Offset, Size int64
	Skippable    bool
	// Zeros is the decoded size of a frame made only of RLE blocks of byte
	// 0 without checksum (what writeZeroFrame writes); 0 for other frames.
	Zeros int64
	// broken marks the rest of the file after a structural failure: it is
	// still decoded as far as it goes, to learn which member it carries.
	broken bool
}

// FrameError says that the compressed stream itself is broken: a frame
// cannot be parsed or decoded. Member names the tar member whose bytes the
// frame carries, when known.
type FrameError struct {
	Archive string
	Index   int   // frame number, from 0
	Offset  int64 // byte offset of the frame in the archive file
	Member  string
	Err     error
}

func (e *FrameError) Error() string {
	where := fmt.Sprintf("zstd frame %d at byte %d", e.Index, e.Offset)
	switch {
	case strings.HasPrefix(e.Member, "the "):
		where += " (" + e.Member + ")"
	case e.Member != "":
		where += " (member " + e.Member + ")"
	}
	return fmt.Sprintf("archive %s: %s is broken: %v", e.Archive, where, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

// Is makes every FrameError match ErrCorrupt.
func (e *FrameError) Is(target error) bool { return target == ErrCorrupt }

var errTruncated = errors.New("truncated")

// cachedReaderAt serves the small reads of the frame walk from one buffer.
type cachedReaderAt struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // file offset of buf[0]
}

func (c *cachedReaderAt) at(off int64, n int) ([]byte, error) {
	if off < 0 || off+int64(n) > c.size {
		return nil, errTruncated
	}
	if off >= c.off && off+int64(n) <= c.off+int64(len(c.buf)) {
		return c.buf[off-c.off : off-c.off+int64(n)], nil
	}
	c.buf = c.buf[:cap(c.buf)]
	if rest := c.size - off; rest < int64(len(c.buf)) {
		c.buf = c.buf[:rest]
	}
	k, err := c.r.ReadAt(c.buf, off)
	c.buf = c.buf[:k]
	c.off = off
	if k < n {
		if err == nil || err == io.EOF {
			err = errTruncated
		}
		return nil, err
	}
	return c.buf[:n], nil
}

// walkFrames finds the frames of a zstd file from their headers and block
// headers alone, without decoding: a few small reads per 128 KiB of data.
// A frame whose structure is broken is reported as a *FrameError (without
// Archive or Member; the caller adds them).
func walkFrames(r io.ReaderAt, size int64) ([]frameSpan, error) {
	// Small reads: block headers are a compressed block (up to 128 KiB)
	// apart, except in zero frames, where 4 KiB holds 1024 of them.
	c := &cachedReaderAt{r: r, size: size, buf: make([]byte, 0, 4<<10)}
	var spans []frameSpan
	for off := int64(0); off < size; {
		span, err := parseFrame(c, off)
		if err != nil {
			return spans, &FrameError{Index: len(spans), Offset: off, Err: err}
		}
		spans = append(spans, span)
		off += span.Size
	}
	return spans, nil
}

func parseFrame(c *cachedReaderAt, off int64) (frameSpan, error) {
	b, err := c.at(off, 4)
	if err != nil {
		return frameSpan{}, fmt.Errorf("frame magic: %w", err)
	}
	magic := binary.LittleEndian.Uint32(b)
	if magic&skippableMagicMask == skippableMagic {
		b, err := c.at(off+4, 4)
		if err != nil {
			return frameSpan{}, fmt.Errorf("skippable frame size: %w", err)
		}
		n := 8 + int64(binary.LittleEndian.Uint32(b))
		if off+n > c.size {
			return frameSpan{}, fmt.Errorf("skippable frame: %w", errTruncated)
		}
		return frameSpan{Offset: off, Size: n, Skippable: true}, nil
	}
	if magic != zstdMagic {
		return frameSpan{}, fmt.Errorf("bad frame magic %#08x", magic)
	}
	b, err = c.at(off+4, 1)
	if err != nil {
		return frameSpan{}, fmt.Errorf("frame header: %w", err)
	}
	fhd := b[0]
	if fhd&0x08 != 0 {
		return frameSpan{}, errors.New("reserved bit set in frame header")
	}
	single := fhd&0x20 != 0
	pos := off + 5
	var window int64
	if !single {
		wd, err := c.at(pos, 1)
		if err != nil {
			return frameSpan{}, fmt.Errorf("window descriptor: %w", err)
		}
		base := int64(1) << (10 + wd[0]>>3)
		window = base + base/8*int64(wd[0]&7)
		pos++
	}
	pos += [4]int64{0, 1, 2, 4}[fhd&3] // dictionary ID
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcs = 1
	}
	if single { // the window is the content size
		b, err := c.at(pos, fcs)
		if err != nil {
			return frameSpan{}, fmt.Errorf("frame content size: %w", err)
		}
		var v [8]byte
		copy(v[:], b)
		window = int64(binary.LittleEndian.Uint64(v[:]))
		if fcs == 2 {
			window += 256
		}
	}
	pos += int64(fcs)
	blockLimit := min(window, maxBlockSize)
	allZero := fhd&0x04 == 0 // no checksum: a candidate zero frame
	var zeroLen int64
	for {
		b, err := c.at(pos, 3)
		if err != nil {
			return frameSpan{}, fmt.Errorf("block header at byte %d: %w", pos, err)
		}
		h := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
		last, typ, bs := h&1 != 0, (h>>1)&3, int64(h>>3)
		if bs > blockLimit {
			return frameSpan{}, fmt.Errorf("block at byte %d: size %d over the limit of %d", pos, bs, blockLimit)
		}
		pos += 3
		switch typ {
		case 0, 2: // raw, compressed
			allZero = false
			pos += bs
		case 1: // RLE
			if allZero {
				v, err := c.at(pos, 1)
				if err != nil {
					return frameSpan{}, fmt.Errorf("RLE block at byte %d: %w", pos-3, err)
				}
				allZero = v[0] == 0
				zeroLen += bs
			}
			pos++
		default:
			return frameSpan{}, fmt.Errorf("block at byte %d: reserved block type", pos-3)
		}
		if pos > c.size {
			return frameSpan{}, fmt.Errorf("block at byte %d: %w", pos, errTruncated)
		}
		if last {
			break
		}
	}
	if fhd&0x04 != 0 {
		pos += 4 // content checksum
	}
	if pos > c.size {
		return frameSpan{}, fmt.Errorf("frame checksum: %w", errTruncated)
	}
	span := frameSpan{Offset: off, Size: pos - off}
	if allZero {
		span.Zeros = zeroLen
	}
	return span, nil
}

// spanSource hands out the archive's frames in order: a finished file's,
// found by walkFrames, or those of an archive being written (spanLog).
type spanSource interface {
	// span returns frame i; ok is false after the last frame; err is a
	// structural failure at frame i (or an aborted write).
	span(i int) (s frameSpan, ok bool, err error)
}

// walkedSpans are the frames of a finished file. After a structural
// failure the rest of the file is one broken span, still decoded as far as
// it goes, to learn which member it carries.
type walkedSpans struct {
	spans   []frameSpan
	walkErr error
}

func (w *walkedSpans) span(i int) (frameSpan, bool, error) {
	if i < len(w.spans) {
		return w.spans[i], true, nil
	}
	if w.walkErr != nil {
		return frameSpan{}, false, w.walkErr
	}
	return frameSpan{}, false, nil
}

// frameStream decodes the archive frame by frame: zero frames are
// produced from the zero buffer (their decoding by the spec, without the
// decoder's byte-by-byte RLE loop), other frames go through the concurrent
// zstd decoder. An error says which frame failed and where in the decoded
// stream that frame began.
type frameStream struct {
	r       io.ReaderAt
	spans   spanSource
	dec     *zstd.Decoder
	br      *bufio.Reader // the decoder reads block headers 3 bytes at a time
	i       int           // current frame
	span    frameSpan     // current frame
	cur     io.Reader     // reader of the current frame, nil between frames
	left    int64         // zeros left in a zero frame
	end     int64         // file offset after the last frame begun
	decoded int64         // decoded bytes so far
	start   int64         // decoded offset where the current frame began
	over    bool          // past the last frame
}

// streamError is a frame failure seen while streaming, with the decoded
// offset at which the frame began (to name the member it carries).
type streamError struct {
	*FrameError
	decodedStart int64
}

func (e *streamError) Unwrap() error { return e.FrameError }

func (s *frameStream) Read(p []byte) (int, error) {
	for {
		if s.cur == nil && s.left == 0 {
			if s.over {
				return 0, io.EOF
			}
			span, ok, err := s.spans.span(s.i)
			if err != nil {
				return 0, s.structural(err, s.decoded)
			}
			if !ok {
				s.over = true
				return 0, io.EOF
			}
			if span.Offset != s.end {
				return 0, s.fail(fmt.Errorf("frame starts at byte %d, previous ended at %d", span.Offset, s.end))
			}
			s.span, s.start, s.end = span, s.decoded, span.Offset+span.Size
			switch {
			case span.Skippable:
				s.i++
				continue
			case span.Zeros > 0:
				// the frame's bytes, not what the writer said of them: parse
				// them again (a few reads) before producing the zeros
				c := &cachedReaderAt{r: s.r, size: span.Offset + span.Size, buf: make([]byte, 0, 4<<10)}
				got, err := parseFrame(c, span.Offset)
				if err == nil && (got.Size != span.Size || got.Zeros != span.Zeros) {
					err = fmt.Errorf("zero frame holds %d zeros in %d bytes, expected %d in %d", got.Zeros, got.Size, span.Zeros, span.Size)
				}
				if err != nil {
					return 0, s.fail(err)
				}
				s.left = span.Zeros
			default:
				if s.br == nil {
					s.br = bufio.NewReaderSize(nil, 1<<20)
				}
				s.br.Reset(io.NewSectionReader(s.r, span.Offset, span.Size))
				if err := s.dec.Reset(s.br); err != nil {
					return 0, s.fail(err)
				}
				s.cur = s.dec
			}
		}
		if s.left > 0 {
			n := copy(p, zeros[:min(int64(len(zeros)), s.left)])
			s.left -= int64(n)
			s.decoded += int64(n)
			if s.left == 0 {
				s.i++
			}
			return n, nil
		}
		n, err := s.cur.Read(p)
		s.decoded += int64(n)
		if err == io.EOF && s.span.broken {
			_, _, werr := s.spans.span(s.i + 1)
			err = s.structural(werr, s.start)
		}
		if err == io.EOF {
			s.cur = nil
			s.i++
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, s.fail(err)
		}
		return n, nil
	}
}

// structural turns a walk failure into a streamError.
func (s *frameStream) structural(err error, decodedStart int64) error {
	var fe *FrameError
	if !errors.As(err, &fe) {
		fe = &FrameError{Index: s.i, Offset: s.end, Err: err}
	}
	return &streamError{FrameError: fe, decodedStart: decodedStart}
}

func (s *frameStream) fail(err error) error {
	return &streamError{
		FrameError:   &FrameError{Index: s.i, Offset: s.span.Offset, Err: err},
		decodedStart: s.start,
	}
}
