package archive

import (
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSealRoundTrip: .img (sparse, with holes, zeroed space, text, random),
// .map and the ddrescue log go in; GNU tar with zstd, as the seed runs it,
// lists them in order and extracts them bit for bit; an independent re-hash
// of the extracted files matches the manifest.
func TestSealRoundTrip(t *testing.T) {
	requireTool(t, "tar")
	requireTool(t, "zstd")
	src := mediumDir(t, 24<<20+12345)
	dest := t.TempDir()
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest, SHA256: true})

	require.Equal(t, filepath.Join(dest, testHash+".tar.zst"), res.Path)
	require.Equal(t, []string{testHash + ".map.bak", testHash + ".map.stall"}, res.Skipped)
	var names []string
	for _, m := range res.Members {
		names = append(names, m.Name)
	}
	require.Equal(t, []string{testHash + ".img", testHash + ".map", testHash + "-ddrescue.log"}, names)
	st, err := os.Stat(res.Path)
	require.NoError(t, err)
	require.Equal(t, st.Size(), res.Size)
	// nothing else left in the destination: no partial file
	entries, err := os.ReadDir(dest)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// tar -I 'zstd -d' -tvf lists the members in order, then the manifest.
	out, err := exec.Command("tar", "-I", "zstd -d", "-tvf", res.Path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 4, "%s", out)
	for i, n := range append(names, ManifestName(testHash)) {
		require.True(t, strings.HasSuffix(lines[i], " "+n), "line %d: %s", i, lines[i])
	}
	require.Contains(t, lines[0], fmt.Sprintf(" %d ", 24<<20+12345)) // the image's size as tar shows it

	x := t.TempDir()
	out, err = exec.Command("tar", "-I", "zstd -d", "-xf", res.Path, "-C", x).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, m := range res.Members {
		sameFile(t, m.Source, filepath.Join(x, m.Name))
		b3, sha := fileHashes(t, filepath.Join(x, m.Name))
		require.Equal(t, m.BLAKE3, b3, m.Name)
		require.Equal(t, m.SHA256, sha, m.Name)
	}
	// the extracted manifest is the one Verify reads
	body, err := os.ReadFile(filepath.Join(x, ManifestName(testHash)))
	require.NoError(t, err)
	man, err := decodeManifest(body)
	require.NoError(t, err)
	require.Equal(t, res.Manifest, *man)
	got, err := Verify(context.Background(), res.Path)
	require.NoError(t, err)
	require.Equal(t, res.Manifest, *got)
}

// TestSealFullyAllocatedImage: a non-sparse image (as ddrescue writes it)
// whose zeroed regions take the zero-frame path round-trips too, and with
// zstd -d alone (no tar) the stream decodes.
func TestSealFullyAllocatedImage(t *testing.T) {
	requireTool(t, "tar")
	requireTool(t, "zstd")
	src := t.TempDir()
	writeImage(t, filepath.Join(src, testHash+".img"), 9<<20, 7, false)
	dest := t.TempDir()
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest, Level: 1, Concurrency: 1})
	x := t.TempDir()
	out, err := exec.Command("tar", "-I", "zstd -d", "-xf", res.Path, "-C", x).CombinedOutput()
	require.NoError(t, err, "%s", out)
	sameFile(t, filepath.Join(src, testHash+".img"), filepath.Join(x, testHash+".img"))
	out, err = exec.Command("zstd", "-t", res.Path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	// the zeroed MiB regions became zero frames: far fewer bytes than data
	spans := framesOf(t, res.Path)
	zeroFrames := 0
	for _, s := range spans {
		if s.Zeros > 0 {
			zeroFrames++
		}
	}
	require.Positive(t, zeroFrames)
}

func TestSealSkipsMissingOptionalMembers(t *testing.T) {
	src := t.TempDir()
	writeImage(t, filepath.Join(src, testHash+".img"), 3<<20, 2, true)
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	require.Len(t, res.Members, 1)
	require.Len(t, res.Skipped, 4)
}

func TestSealSearchesImagesDirsInOrder(t *testing.T) {
	a, b := t.TempDir(), mediumDir(t, 1<<20)
	require.NoError(t, os.WriteFile(filepath.Join(a, testHash+".map"), []byte("from a\n"), 0o644))
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{a, b}, Dest: t.TempDir()})
	require.Equal(t, filepath.Join(b, testHash+".img"), res.Members[0].Source)
	require.Equal(t, filepath.Join(a, testHash+".map"), res.Members[1].Source)
}

func TestSealMissingImageIsAnError(t *testing.T) {
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, testHash+".map"), []byte("map\n"), 0o644))
	dest := t.TempDir()
	_, err := Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	require.ErrorIs(t, err, ErrImageMissing)
	require.Contains(t, err.Error(), testHash+".img")
	entries, _ := os.ReadDir(dest)
	require.Empty(t, entries, "nothing written on error")
}

func TestSealRejectsBadInput(t *testing.T) {
	src := mediumDir(t, 1<<20)
	for name, spec := range map[string]Spec{
		"bad hash":          {Medium: "C9894F16", ImagesDirs: []string{src}, Dest: t.TempDir()},
		"wildcard member":   {Medium: testHash, Members: []string{testHash + ".img", "*.map"}, ImagesDirs: []string{src}, Dest: t.TempDir()},
		"path member":       {Medium: testHash, Members: []string{testHash + ".img", "../etc/passwd"}, ImagesDirs: []string{src}, Dest: t.TempDir()},
		"no image":          {Medium: testHash, Members: []string{testHash + ".map"}, ImagesDirs: []string{src}, Dest: t.TempDir()},
		"missing dest":      {Medium: testHash, ImagesDirs: []string{src}, Dest: filepath.Join(t.TempDir(), "not-mounted")},
		"manifest as input": {Medium: testHash, Members: []string{testHash + ".img", ManifestName(testHash)}, ImagesDirs: []string{src}, Dest: t.TempDir()},
		"level":             {Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir(), Level: 40},
	} {
		_, err := Seal(context.Background(), spec)
		require.Error(t, err, name)
	}
	// "*.map" is not expanded: it is refused as a name
	if _, err := os.Stat(filepath.Join(src, "*.map")); err == nil {
		t.Fatal("unexpected file")
	}
}

func TestSealRefusesSymlinkedSource(t *testing.T) {
	src := mediumDir(t, 1<<20)
	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "real.map"), []byte("x\n"), 0o644))
	require.NoError(t, os.Remove(filepath.Join(src, testHash+".map")))
	require.NoError(t, os.Symlink(filepath.Join(other, "real.map"), filepath.Join(src, testHash+".map")))
	_, err := Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	require.ErrorContains(t, err, "symbolic link")
}

func TestSealAlreadyArchived(t *testing.T) {
	src := mediumDir(t, 2<<20)
	dest := t.TempDir()
	first := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	before, err := os.ReadFile(first.Path)
	require.NoError(t, err)

	_, err = Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	require.ErrorIs(t, err, ErrAlreadyArchived)
	after, err := os.ReadFile(first.Path)
	require.NoError(t, err)
	require.Equal(t, before, after, "refusal leaves the archive alone")

	// force seals again (new manifest time, same members)
	again := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest, Force: true})
	require.Equal(t, first.Members, again.Members)
}

// TestSealReusesStalePartial: a crashed seal's .partial is overwritten.
func TestSealReusesStalePartial(t *testing.T) {
	src := mediumDir(t, 2<<20)
	dest := t.TempDir()
	stale := filepath.Join(dest, PartialName(testHash))
	require.NoError(t, os.WriteFile(stale, []byte("half an archive from a crashed run"), 0o644))
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	_, err := os.Stat(stale)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = Verify(context.Background(), res.Path)
	require.NoError(t, err)
}

// changer appends to the image after the first MiB was sealed.
type changer struct {
	NopProgress
	path string
	done atomic.Bool
}

func (c *changer) Bytes(p Phase, n int64) {
	if p == PhaseSeal && c.done.CompareAndSwap(false, true) {
		f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			f.Write([]byte("late write"))
			f.Close()
		}
	}
}

func TestSealSourceChangedWhileSealing(t *testing.T) {
	src := mediumDir(t, 4<<20)
	dest := t.TempDir()
	_, err := Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest,
		Progress: &changer{path: filepath.Join(src, testHash+".img")}})
	require.ErrorIs(t, err, ErrSourceChanged)
	entries, _ := os.ReadDir(dest)
	require.Empty(t, entries, "no archive, no partial")
}

// holdLock simulates a concurrent seal of the same medium.
func TestSealBusy(t *testing.T) {
	src := mediumDir(t, 1<<20)
	dest := t.TempDir()
	f, err := lockPartial(filepath.Join(dest, PartialName(testHash)))
	require.NoError(t, err)
	defer f.Close()
	_, err = Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	require.ErrorIs(t, err, ErrBusy)
}

func TestSealCanceled(t *testing.T) {
	src := mediumDir(t, 8<<20)
	dest := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Seal(ctx, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
	entries, _ := os.ReadDir(dest)
	require.Empty(t, entries)
}

// TestSealCapsFrames: a member longer than the frame cap spans several
// encoder frames; the archive still round-trips through GNU tar, and a
// broken frame in the middle is named with the member it carries.
func TestSealCapsFrames(t *testing.T) {
	requireTool(t, "tar")
	requireTool(t, "zstd")
	defer func(old int64) { frameCap = old }(frameCap)
	frameCap = 1 << 20
	src := t.TempDir()
	img := filepath.Join(src, testHash+".img")
	writeImage(t, img, 6<<20+100, 3, false)
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	spans := framesOf(t, res.Path)
	data := 0
	for _, s := range spans {
		if s.Zeros == 0 {
			data++
		}
	}
	require.GreaterOrEqual(t, data, 5, "frames: %+v", spans)
	x := t.TempDir()
	out, err := exec.Command("tar", "-I", "zstd -d", "-xf", res.Path, "-C", x).CombinedOutput()
	require.NoError(t, err, "%s", out)
	sameFile(t, img, filepath.Join(x, testHash+".img"))

	flipByte(t, res.Path, spans[3].Offset+spans[3].Size/2, 0x08)
	_, err = Verify(context.Background(), res.Path)
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, testHash+".img")
}

// zeroCounter records how a member reaches the sink.
type zeroCounter struct{ data, zeros int64 }

type countingSink struct{ c *zeroCounter }

func (s countingSink) data(p []byte) error { s.c.data += int64(len(p)); return nil }
func (s countingSink) zeros(n int64) error { s.c.zeros += n; return nil }

// TestStreamSkipsHoles: holes and zeroed regions reach the sink as zero
// runs, data as data, and together they cover the file exactly.
func TestStreamSkipsHoles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(p)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("data at the start"), 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("data in the middle"), 64<<20)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(128<<20))
	c := &zeroCounter{}
	before := bytesRead(t)
	require.NoError(t, stream(context.Background(), f, 128<<20, make([]byte, readChunk), countingSink{c}))
	read := bytesRead(t) - before
	f.Close()
	require.Equal(t, int64(128<<20), c.data+c.zeros)
	require.LessOrEqual(t, c.data, int64(2*zeroScan), "only the pieces holding data are passed as data")
	require.Less(t, read, int64(4<<20), "holes are not read")
}

// bytesRead is this process's rchar: bytes read through read syscalls.
func bytesRead(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/io")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			var n int64
			_, err := fmt.Sscan(v, &n)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

// damageFrame makes the seal's writer flip a byte of the n-th frame it
// writes, after writing it and before the read-back reads it: as if the
// disk or the encoder had failed.
func damageFrame(t *testing.T, n int) {
	t.Helper()
	i := 0
	frameWritten = func(w io.Writer, s frameSpan) {
		if i++; i == n {
			f := w.(*os.File)
			b := make([]byte, 1)
			off := s.Offset + s.Size/2
			if _, err := f.ReadAt(b, off); err == nil {
				b[0] ^= 0x40
				f.WriteAt(b, off)
			}
		}
	}
	t.Cleanup(func() { frameWritten = nil })
}

// TestSealReadBackCatchesDamage: a byte changed in the file after it was
// written fails the read-back; nothing is renamed into place, the partial
// file is removed, and the error names the member.
func TestSealReadBackCatchesDamage(t *testing.T) {
	src := mediumDir(t, 6<<20)
	clean := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	frames := framesOf(t, clean.Path)
	for n := 1; n <= len(frames); n++ { // every frame: data, zero, small members, manifest
		dest := t.TempDir()
		damageFrame(t, n)
		_, err := Seal(context.Background(), Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest})
		require.ErrorIs(t, err, ErrCorrupt, "frame %d", n)
		require.ErrorContains(t, err, "archive not kept")
		require.ErrorContains(t, err, testHash, "names a member")
		if n == 1 {
			require.ErrorContains(t, err, testHash+".img")
		}
		entries, _ := os.ReadDir(dest)
		require.Empty(t, entries, "frame %d", n)
	}
}

// TestSealOver8GiB: a member larger than the 8 GiB ustar limit (a hard
// disk image) gets a header GNU tar reads with the right size.
func TestSealOver8GiB(t *testing.T) {
	t.Parallel() // mostly hashing zeros: let it overlap the catalog tests
	requireTool(t, "tar")
	requireTool(t, "zstd")
	src := t.TempDir()
	img := filepath.Join(src, testHash+".img")
	f, err := os.Create(img)
	require.NoError(t, err)
	const size = 8<<30 + 4096 + 17
	_, err = f.WriteAt([]byte("boot sector"), 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("the last bytes of the disk"), size-26)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	require.Equal(t, int64(size), res.Members[0].Size)
	require.Less(t, res.Size, int64(1<<20), "holes cost 4 bytes per 128 KiB")
	out, err := exec.Command("tar", "-I", "zstd -d", "-tvf", res.Path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), fmt.Sprintf(" %d ", int64(size)))
}

// A medium that fits in one parallel job (a floppy) is compressed by one
// synchronous encoder whose window is just above its size, not by parallel
// jobs that each allocate four 4 MiB windows; a larger medium keeps them.
func TestSealSizesTheEncoderToTheMedium(t *testing.T) {
	for _, c := range []struct {
		size      int64
		maxWindow uint64
	}{{1440 << 10, 2 << 20}, {24 << 20, encoderWindow}} {
		src := t.TempDir()
		writeImage(t, filepath.Join(src, testHash+".img"), c.size, 3, false)
		res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir(), Concurrency: 2})
		f, err := os.Open(res.Path)
		require.NoError(t, err)
		frames := 0
		for _, s := range framesOf(t, res.Path) {
			if s.Skippable || s.Zeros > 0 {
				continue
			}
			b := make([]byte, min(s.Size, zstd.HeaderMaxSize))
			_, err := f.ReadAt(b, s.Offset)
			require.NoError(t, err)
			var h zstd.Header
			require.NoError(t, h.Decode(b))
			if h.SingleSegment { // a small frame names its size, not a window
				continue
			}
			require.LessOrEqual(t, h.WindowSize, c.maxWindow, "medium of %d bytes, frame at %d", c.size, s.Offset)
			require.Greater(t, h.WindowSize, c.maxWindow/2, "medium of %d bytes, frame at %d", c.size, s.Offset)
			frames++
		}
		f.Close()
		require.Positive(t, frames)
	}
}

// Small archives sealed one after another share an encoder, and nothing of
// one reaches the next: each extracts, with the zstd and tar commands, to
// exactly its own image.
func TestSmallArchivesShareAnEncoderAndNothingElse(t *testing.T) {
	requireTool(t, "tar")
	requireTool(t, "zstd")
	key := encoderKey{zstd.EncoderLevelFromZstd(DefaultLevel), 2 << 20}
	var kept []*zstd.Encoder
	for i, seed := range []uint64{11, 12, 11} {
		src := t.TempDir()
		img := filepath.Join(src, testHash+".img")
		writeImage(t, img, 1440<<10+int64(i)*4096, seed, false)
		res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir(), Concurrency: 2})
		x := t.TempDir()
		out, err := exec.Command("tar", "-I", "zstd -d", "-xf", res.Path, "-C", x).CombinedOutput()
		require.NoError(t, err, "%s", out)
		sameFile(t, img, filepath.Join(x, testHash+".img"))

		enc := encoders.take(key)
		require.NotNil(t, enc, "archive %d left no encoder for the next", i)
		encoders.keep(key, enc)
		kept = append(kept, enc)
	}
	require.Same(t, kept[0], kept[1], "the second archive made an encoder of its own")
	require.Same(t, kept[0], kept[2], "the third archive made an encoder of its own")
}

// The cache of encoders keeps at most maxCachedEncoders, the newest, and
// none of a large archive.
func TestEncoderCacheIsBounded(t *testing.T) {
	defer func(f []cachedEncoder) { encoders.free = f }(encoders.free)
	encoders.free = nil
	var made []*zstd.Encoder
	for i := range maxCachedEncoders + 2 {
		enc, release, err := newEncoder(DefaultLevel, 2, int64(i+1)<<10)
		require.NoError(t, err)
		made = append(made, enc)
		defer release()
	}
	big, release, err := newEncoder(DefaultLevel, 2, 100<<20)
	require.NoError(t, err)
	release()
	for _, e := range made {
		encoders.keep(encoderKey{zstd.EncoderLevelFromZstd(DefaultLevel), 64 << 10}, e)
	}
	require.Len(t, encoders.free, maxCachedEncoders)
	for i, c := range encoders.free {
		require.Same(t, made[2+i], c.enc)
		require.NotSame(t, big, c.enc)
	}
}
