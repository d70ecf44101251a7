package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testHash = "c9894f1681b5b542eb3a4b75967e9aea"

var words = bytes.Fields([]byte(`the medium image was rescued by ddrescue from a damaged disk and
the archivist catalogued every file of the witness statements report database backup
photograph letter evidence human rights documentation project records of 1998 2003 in
spreadsheets minutes interview transcripts with names places dates and sources`))

// writeImage writes a disk-image-like file of size bytes: per MiB region,
// compressible text, random bytes (photos, archives), zeroed but allocated
// space, and — when sparse — holes that are never written.
func writeImage(t testing.TB, path string, size int64, seed uint64, sparse bool) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1}))
	const region = 1 << 20
	buf := make([]byte, region)
	for off := int64(0); off < size; off += region {
		n := min(region, size-off)
		b := buf[:n]
		switch (off / region) % 8 {
		case 0, 1, 5: // text
			b = b[:0]
			for int64(len(b)) < n {
				b = append(b, words[r.IntN(len(words))]...)
				b = append(b, ' ')
				if r.IntN(12) == 0 {
					b = append(b, '\n')
				}
			}
			b = b[:n]
		case 2, 6: // random
			for i := 0; i+8 <= len(b); i += 8 {
				v := r.Uint64()
				for j := range 8 {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case 3: // zeroed free space, allocated
			clear(b)
		case 4, 7: // holes on a sparse image; a few bytes of data at the end of 7
			if sparse {
				if (off/region)%8 == 7 && n > 4096 {
					_, err := f.WriteAt([]byte("superblock backup"), off+n-4096)
					require.NoError(t, err)
				}
				continue
			}
			clear(b)
		}
		_, err := f.WriteAt(b, off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Truncate(size))
}

// mediumDir makes a directory with the seed's image files for testHash:
// .img of imgSize (sparse), .map, -ddrescue.log; .map.bak and .map.stall
// are absent.
func mediumDir(t testing.TB, imgSize int64) string {
	t.Helper()
	dir := t.TempDir()
	writeImage(t, filepath.Join(dir, testHash+".img"), imgSize, 1, true)
	require.NoError(t, os.WriteFile(filepath.Join(dir, testHash+".map"),
		[]byte("# Mapfile. Created by GNU ddrescue version 1.27\n0x00000000  +  1\n0x00000000  0x00400000  +\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, testHash+"-ddrescue.log"),
		[]byte("GNU ddrescue 1.27\nFinished\n"), 0o644))
	return dir
}

// fileHashes hashes a file independently of the package's code paths:
// whole-file reads, no hole handling.
func fileHashes(t testing.TB, path string) (b3, sha string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h1, h2 := blake3.New(), sha256.New()
	_, err = io.Copy(io.MultiWriter(h1, h2), f)
	require.NoError(t, err)
	return hex.EncodeToString(h1.Sum(nil)), hex.EncodeToString(h2.Sum(nil))
}

func sameFile(t testing.TB, a, b string) {
	t.Helper()
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	require.NoError(t, err, "cmp %s %s: %s", a, b, out)
}

func seal(t testing.TB, spec Spec) *Result {
	t.Helper()
	res, err := Seal(context.Background(), spec)
	require.NoError(t, err)
	return res
}

func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for this test (GNU tar/zstd interop is part of the contract): %v", name, err)
	}
}
