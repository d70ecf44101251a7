package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Concurrency of the zstd decoder; 0 means GOMAXPROCS.
	Concurrency int
	// Progress receives PhaseVerify byte counts; nil means none.
	Progress Progress
}

// Verify reads the archive at path, decoding every frame (checking zstd's
// frame checksums) and re-hashing every member against the manifest it
// carries: same members in the same order, same sizes, same BLAKE3 (and
// SHA-256 when listed). It returns the manifest. Any mismatch or broken
// byte is an error matching ErrCorrupt that names the member
// (*MemberError) or, when the compressed stream itself is broken, the frame
// and the member it carries (*FrameError).
func Verify(ctx context.Context, path string) (*Manifest, error) {
	return VerifyWith(ctx, path, VerifyOptions{})
}

// VerifyWith is Verify with options.
func VerifyWith(ctx context.Context, path string, opts VerifyOptions) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("verify %s: not a regular file", path)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = runtime.GOMAXPROCS(0)
	}
	return verifyFile(ctx, f, st.Size(), path, verifyOptions{
		concurrency: opts.Concurrency, progress: progressOrNop(opts.Progress),
	})
}

type verifyOptions struct {
	concurrency int
	progress    Progress
	sha256      bool  // compute SHA-256 of every member
	total       int64 // member bytes, for progress
	// expect returns the manifest entry the i-th member must match, nil if
	// not known yet (then the archive's own manifest is checked at the end).
	expect func(i int) *ManifestMember
}

// countingReader tells the tar reader's position in the decoded stream.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seenMember is a member as found in the stream.
type seenMember struct {
	name   string
	start  int64 // decoded offset of its header
	end    int64 // decoded offset after its data and padding
	size   int64
	blake3 string
	sha256 string
}

// verifyFile checks the finished archive in f (size bytes, called name in
// errors). The frame walk reads only headers. The manifest is in the last
// frame: it is read first, so members are checked as they stream by and
// SHA-256 is computed only when listed.
func verifyFile(ctx context.Context, f io.ReaderAt, size int64, name string, opts verifyOptions) (*Manifest, error) {
	spans, walkErr := walkFrames(f, size)
	var head *Manifest
	if walkErr == nil {
		if m, err := readManifestFrame(f, spans); err == nil {
			head = m
		}
	}
	if fe := (*FrameError)(nil); errors.As(walkErr, &fe) && fe.Offset < size {
		spans = append(spans, frameSpan{Offset: fe.Offset, Size: size - fe.Offset, broken: true})
	}
	opts.sha256 = head == nil || hasSHA(head)
	if head != nil {
		for _, m := range head.Members {
			opts.total += m.Size
		}
		opts.expect = func(i int) *ManifestMember {
			if i < len(head.Members) {
				return &head.Members[i]
			}
			return nil
		}
	}
	return verifyStream(ctx, f, &walkedSpans{spans: spans, walkErr: walkErr}, name, head, opts)
}

// verifyStream decodes the frames from spans, re-hashes every member and
// checks it against opts.expect as it goes, and at the end against the
// archive's own manifest member, which it returns. head is the manifest as
// read ahead, if any, to name a member whose frame is unreadable.
func verifyStream(ctx context.Context, f io.ReaderAt, spans spanSource, name string, head *Manifest, opts verifyOptions) (*Manifest, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(opts.concurrency))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	cr := &countingReader{r: &frameStream{r: f, spans: spans, dec: dec}}
	tr := tar.NewReader(cr)
	opts.progress.Start(PhaseVerify, opts.total)

	var (
		seen []seenMember
		man  *Manifest
		done int64
		b3   = blake3.New()
		sha  hash.Hash
		buf  = make([]byte, readChunk)
	)
	if opts.sha256 {
		sha = sha256.New()
	}
	// streamErr names what a failure of the decoded stream concerns: the
	// broken frame and the member it carries, or the member being read.
	streamErr := func(err error, current string) error {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		var se *streamError
		if errors.As(err, &se) {
			fe := *se.FrameError
			fe.Archive = name
			fe.Member = memberAt(seen, head, se.decodedStart)
			return &fe
		}
		if current == "" {
			current = "(tar structure)"
		}
		return &MemberError{Archive: name, Member: current, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := (cr.n + 511) &^ 511
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A broken header belongs to the member that should start
			// there: name it (from the manifest read ahead, if any).
			return nil, streamErr(err, memberAt(seen, head, start)+" (tar header)")
		}
		if man != nil {
			return nil, &MemberError{Archive: name, Member: hdr.Name, Err: errors.New("member after the manifest")}
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, &MemberError{Archive: name, Member: hdr.Name, Err: fmt.Errorf("not a regular file (type %q)", hdr.Typeflag)}
		}
		seen = append(seen, seenMember{name: hdr.Name, start: start, end: cr.n + (hdr.Size+511)&^511, size: hdr.Size})
		if strings.HasSuffix(hdr.Name, ".manifest.json") {
			if hdr.Size > maxManifestSize {
				return nil, &MemberError{Archive: name, Member: hdr.Name, Err: fmt.Errorf("manifest of %d bytes is too large", hdr.Size)}
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				return nil, streamErr(err, hdr.Name)
			}
			m, err := decodeManifest(body)
			if err != nil {
				return nil, &MemberError{Archive: name, Member: hdr.Name, Err: err}
			}
			if hdr.Name != ManifestName(m.Medium) {
				return nil, &MemberError{Archive: name, Member: hdr.Name, Err: fmt.Errorf("manifest of medium %q has the wrong name", m.Medium)}
			}
			man = m
			continue
		}
		opts.progress.Member(PhaseVerify, hdr.Name, hdr.Size)
		b3.Reset()
		if sha != nil {
			sha.Reset()
		}
		for {
			k, err := tr.Read(buf)
			if k > 0 {
				b3.Write(buf[:k])
				if sha != nil {
					sha.Write(buf[:k])
				}
				done += int64(k)
				opts.progress.Bytes(PhaseVerify, done)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, streamErr(err, hdr.Name)
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		cur := &seen[len(seen)-1]
		cur.blake3 = hex.EncodeToString(b3.Sum(nil))
		if sha != nil {
			cur.sha256 = hex.EncodeToString(sha.Sum(nil))
		}
		if opts.expect != nil { // say which member is wrong as soon as we know
			if mm := opts.expect(len(seen) - 1); mm != nil {
				if err := checkMember(mm, cur); err != nil {
					return nil, &MemberError{Archive: name, Member: hdr.Name, Err: err}
				}
			} else if head != nil {
				return nil, &MemberError{Archive: name, Member: hdr.Name, Err: errors.New("in the archive but not in the manifest")}
			}
		}
	}
	// Read to the end: the last frame's checksum is checked only there, and
	// nothing but zero padding may follow the tar end blocks.
	for {
		k, err := cr.Read(buf)
		if k > 0 && !bytes.Equal(buf[:k], zeros[:k]) {
			return nil, &MemberError{Archive: name, Member: "(after the end of the tar stream)", Err: errors.New("unexpected data")}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, streamErr(err, "")
		}
	}
	if man == nil {
		return nil, &MemberError{Archive: name, Member: "(manifest)", Err: errors.New("the archive has no manifest member")}
	}
	for i, mm := range man.Members {
		if i >= len(seen)-1 {
			return nil, &MemberError{Archive: name, Member: mm.Name, Err: errors.New("listed in the manifest but not in the archive")}
		}
		if err := checkMember(&man.Members[i], &seen[i]); err != nil {
			return nil, &MemberError{Archive: name, Member: seen[i].name, Err: err}
		}
	}
	if len(seen)-1 > len(man.Members) {
		return nil, &MemberError{Archive: name, Member: seen[len(man.Members)].name, Err: errors.New("in the archive but not in the manifest")}
	}
	return man, nil
}

// checkMember compares a member seen in the stream with its manifest entry.
func checkMember(mm *ManifestMember, sm *seenMember) error {
	switch {
	case sm.name != mm.Name:
		return fmt.Errorf("found in place of %s, which the manifest lists here", mm.Name)
	case sm.size != mm.Size:
		return fmt.Errorf("size %d, manifest says %d", sm.size, mm.Size)
	case sm.blake3 != mm.BLAKE3:
		return fmt.Errorf("BLAKE3 %s, manifest says %s", sm.blake3, mm.BLAKE3)
	case mm.SHA256 != "" && sm.sha256 != mm.SHA256:
		return fmt.Errorf("SHA-256 %s, manifest says %s", sm.sha256, mm.SHA256)
	}
	return nil
}

func sameManifest(want, got *Manifest) error {
	if got.Medium != want.Medium {
		return fmt.Errorf("manifest names medium %s, expected %s", got.Medium, want.Medium)
	}
	if len(got.Members) != len(want.Members) {
		return fmt.Errorf("manifest lists %d members, expected %d", len(got.Members), len(want.Members))
	}
	for i := range want.Members {
		if got.Members[i] != want.Members[i] {
			return fmt.Errorf("manifest entry %s differs from what was sealed", want.Members[i].Name)
		}
	}
	return nil
}

func hasSHA(m *Manifest) bool {
	if m == nil {
		return false
	}
	for _, mm := range m.Members {
		if mm.SHA256 != "" {
			return true
		}
	}
	return false
}

// memberAt names the member whose bytes are at decoded offset off. A frame
// that could not be decoded far enough to show its tar header starts right
// after the last member seen; the manifest, when it could be read, says
// which member comes there.
func memberAt(seen []seenMember, head *Manifest, off int64) string {
	for _, s := range seen {
		if s.start <= off && off < s.end {
			return s.name
		}
	}
	if head != nil && len(seen) < len(head.Members) {
		return head.Members[len(seen)].Name
	}
	if head != nil && len(seen) == len(head.Members) {
		return ManifestName(head.Medium)
	}
	if len(seen) == 0 {
		return "the first member"
	}
	return "the member after " + seen[len(seen)-1].name
}

// peekManifest reads the manifest of the archive at path from its last
// frame, without checking anything else.
func peekManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	spans, err := walkFrames(f, st.Size())
	if err != nil {
		return nil, err
	}
	return readManifestFrame(f, spans)
}

// readManifestFrame decodes the archive's last frame, which holds the
// manifest member and the tar end blocks.
func readManifestFrame(f io.ReaderAt, spans []frameSpan) (*Manifest, error) {
	var last *frameSpan
	for i := range spans {
		if !spans[i].Skippable {
			last = &spans[i]
		}
	}
	if last == nil || last.Zeros > 0 {
		return nil, errors.New("no manifest frame")
	}
	dec, err := zstd.NewReader(io.NewSectionReader(f, last.Offset, last.Size), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	hdr, err := tr.Next()
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(hdr.Name, ".manifest.json") || hdr.Size > maxManifestSize {
		return nil, fmt.Errorf("last frame holds %q, not a manifest", hdr.Name)
	}
	body, err := io.ReadAll(tr)
	if err != nil {
		return nil, err
	}
	return decodeManifest(body)
}
