package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
)

func framesOf(t testing.TB, path string) []frameSpan {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	spans, err := walkFrames(f, st.Size())
	require.NoError(t, err)
	return spans
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

func flipByte(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= mask
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

// TestVerifyFlippedByte flips one byte in each kind of frame of a sealed
// archive; Verify must fail with ErrCorrupt and name the member the frame
// carries.
func TestVerifyFlippedByte(t *testing.T) {
	src := mediumDir(t, 12<<20)
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	spans := framesOf(t, res.Path)
	img, mapf, logf := testHash+".img", testHash+".map", testHash+"-ddrescue.log"
	n := len(spans)
	require.Greater(t, n, 5)
	var zeroFrame int
	for i, s := range spans {
		if s.Zeros > 0 {
			zeroFrame = i
			break
		}
	}
	require.NotZero(t, zeroFrame, "a sparse image makes zero frames")

	cases := []struct {
		name  string
		off   int64
		mask  byte
		wants []string // one of these must be in the error
	}{
		{"image frame, middle", spans[0].Offset + spans[0].Size/2, 0x10, []string{img}},
		{"image frame, header", spans[0].Offset + 1, 0x01, []string{img, "first member"}},
		{"zero frame, RLE byte", spans[zeroFrame].Offset + 6 + 3, 0x01, []string{img}},
		{"zero frame, block header", spans[zeroFrame].Offset + 6 + 4*3 + 1, 0x40, []string{img}},
		{"map frame", spans[n-3].Offset + spans[n-3].Size - 6, 0x04, []string{mapf}},
		{"log frame", spans[n-2].Offset + spans[n-2].Size/2, 0x80, []string{logf}},
		{"manifest frame", spans[n-1].Offset + spans[n-1].Size/2, 0x20, []string{ManifestName(testHash), "after " + logf}},
		{"last byte", spans[n-1].Offset + spans[n-1].Size - 1, 0x01, []string{ManifestName(testHash), "after " + logf}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), testHash+".tar.zst")
			copyFile(t, res.Path, p)
			flipByte(t, p, c.off, c.mask)
			_, err := Verify(context.Background(), p)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrCorrupt)
			msg := err.Error()
			ok := false
			for _, w := range c.wants {
				ok = ok || strings.Contains(msg, w)
			}
			require.True(t, ok, "error %q names none of %q", msg, c.wants)
			var me *MemberError
			var fe *FrameError
			require.True(t, errors.As(err, &me) || errors.As(err, &fe), "%T", err)
		})
	}
}

func TestVerifyTruncatedAndTrailing(t *testing.T) {
	src := mediumDir(t, 6<<20)
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	whole, err := os.ReadFile(res.Path)
	require.NoError(t, err)

	p := filepath.Join(t.TempDir(), "cut.tar.zst")
	require.NoError(t, os.WriteFile(p, whole[:len(whole)/2], 0o644))
	_, err = Verify(context.Background(), p)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), testHash+".img")

	require.NoError(t, os.WriteFile(p, append(append([]byte{}, whole...), "garbage"...), 0o644))
	_, err = Verify(context.Background(), p)
	require.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, os.WriteFile(p, nil, 0o644))
	_, err = Verify(context.Background(), p)
	require.ErrorIs(t, err, ErrCorrupt)
}

// handMade builds a tar.zst with the zstd command line (one frame, no zero
// frames): members as given, and a manifest if man is not nil.
func handMade(t *testing.T, members map[string][]byte, order []string, man *Manifest) string {
	t.Helper()
	requireTool(t, "zstd")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, name := range order {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(members[name])), Mode: 0o644, Typeflag: tar.TypeReg}))
		_, err := tw.Write(members[name])
		require.NoError(t, err)
	}
	if man != nil {
		body, err := man.encode()
		require.NoError(t, err)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: ManifestName(man.Medium), Size: int64(len(body)), Mode: 0o444, Typeflag: tar.TypeReg}))
		_, err = tw.Write(body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	p := filepath.Join(t.TempDir(), "hand.tar.zst")
	cmd := exec.Command("zstd", "-q", "-o", p)
	cmd.Stdin = &tb
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return p
}

func b3hex(b []byte) string {
	h := blake3.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestVerifyChecksManifest: archives whose stream is fine but whose content
// disagrees with the manifest; each error names the member.
func TestVerifyChecksManifest(t *testing.T) {
	a, b := []byte("image bytes"), []byte("mapfile")
	img, mp := testHash+".img", testHash+".map"
	members := map[string][]byte{img: a, mp: b}
	good := func() *Manifest {
		return &Manifest{Format: ManifestFormat, Medium: testHash, Created: time.Unix(0, 0).UTC(), ZstdLevel: 3,
			Members: []ManifestMember{{Name: img, Size: int64(len(a)), BLAKE3: b3hex(a)}, {Name: mp, Size: int64(len(b)), BLAKE3: b3hex(b)}}}
	}
	// a correct hand-made archive verifies (Verify does not depend on our frame layout)
	m, err := Verify(context.Background(), handMade(t, members, []string{img, mp}, good()))
	require.NoError(t, err)
	require.Len(t, m.Members, 2)

	wrongHash := good()
	wrongHash.Members[1].BLAKE3 = b3hex([]byte("other"))
	wrongSize := good()
	wrongSize.Members[0].Size++
	missing := good()
	missing.Members = append(missing.Members, ManifestMember{Name: testHash + ".map.bak", Size: 1, BLAKE3: b3hex([]byte("x"))})
	extra := good()
	extra.Members = extra.Members[:1]
	wrongSHA := good()
	wrongSHA.Members[0].SHA256 = strings.Repeat("0", 64)
	for name, c := range map[string]struct {
		man    *Manifest
		order  []string
		member string
	}{
		"wrong hash":     {wrongHash, []string{img, mp}, mp},
		"wrong size":     {wrongSize, []string{img, mp}, img},
		"missing member": {missing, []string{img, mp}, testHash + ".map.bak"},
		"extra member":   {extra, []string{img, mp}, mp},
		"wrong order":    {good(), []string{mp, img}, mp},
		"wrong sha256":   {wrongSHA, []string{img, mp}, img},
	} {
		_, err := Verify(context.Background(), handMade(t, members, c.order, c.man))
		var me *MemberError
		require.True(t, errors.As(err, &me), "%s: %v", name, err)
		require.Equal(t, c.member, me.Member, "%s: %v", name, err)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}
	// no manifest at all
	_, err = Verify(context.Background(), handMade(t, members, []string{img, mp}, nil))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "no manifest")
}

func TestWalkFramesOnZstdCLIOutput(t *testing.T) {
	requireTool(t, "zstd")
	dir := t.TempDir()
	var all []byte
	for i, content := range []string{"first frame " + strings.Repeat("abc", 50000), "second"} {
		p := filepath.Join(dir, "f")
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		out, err := exec.Command("zstd", "-q", "-f", "--check", p, "-o", p+".zst").CombinedOutput()
		require.NoError(t, err, "%d: %s", i, out)
		b, err := os.ReadFile(p + ".zst")
		require.NoError(t, err)
		all = append(all, b...)
	}
	spans, err := walkFrames(bytes.NewReader(all), int64(len(all)))
	require.NoError(t, err)
	require.Len(t, spans, 2)
	require.Equal(t, int64(len(all)), spans[1].Offset+spans[1].Size)
}

// TestZeroFrameDecodes: zero frames decode to exactly n zeros with the
// klauspost decoder and with the zstd command line.
func TestZeroFrameDecodes(t *testing.T) {
	requireTool(t, "zstd")
	for _, n := range []int64{1, 131071, 131072, 131073, 5<<20 + 3} {
		var b bytes.Buffer
		_, err := writeZeroFrame(&b, n, make([]byte, 0, 64<<10))
		require.NoError(t, err)
		dec, err := zstd.NewReader(bytes.NewReader(b.Bytes()))
		require.NoError(t, err)
		got, err := io.ReadAll(dec)
		dec.Close()
		require.NoError(t, err)
		require.Equal(t, n, int64(len(got)))
		require.Equal(t, make([]byte, n), got)

		cmd := exec.Command("zstd", "-d", "-c")
		cmd.Stdin = bytes.NewReader(b.Bytes())
		out, err := cmd.Output()
		require.NoError(t, err)
		require.Equal(t, n, int64(len(out)))

		spans, err := walkFrames(bytes.NewReader(b.Bytes()), int64(b.Len()))
		require.NoError(t, err)
		require.Len(t, spans, 1)
		require.Equal(t, n, spans[0].Zeros)
	}
}
