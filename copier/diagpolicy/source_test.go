package diagpolicy

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Without a mount, the image is the one named, else the catalog's, else
// the images directory's; the mapfile is beside the image, else in the
// images directory; every place looked at is listed.
func TestLocateWithoutMount(t *testing.T) {
	dir := t.TempDir()
	images, other := filepath.Join(dir, "img"), filepath.Join(dir, "elsewhere")
	root := filepath.Join(dir, "mnt")
	for _, d := range []string{images, other, root} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	inImages := filepath.Join(images, hash.ImageFileName())
	inOther := filepath.Join(other, hash.ImageFileName())
	for _, p := range []string{inImages, inOther} {
		require.NoError(t, os.WriteFile(p, []byte("disk"), 0o644))
	}
	opts := LocateOptions{MountRoot: root, ImagesDirs: []string{images}}

	src, err := Locate(string(hash), opts)
	require.NoError(t, err)
	assert.Equal(t, Source{Image: inImages, From: FromImages, Looked: []string{filepath.Join(images, hash.MapFileName())}}, src)

	opts.CatalogImage = inOther
	src, err = Locate(string(hash), opts)
	require.NoError(t, err)
	assert.Equal(t, FromCatalog, src.From)
	assert.Equal(t, inOther, src.Image)
	assert.Equal(t, []string{filepath.Join(other, hash.MapFileName()), filepath.Join(images, hash.MapFileName())}, src.Looked)
	assert.Empty(t, src.Mapfile)

	// The mapfile left in the images directory is found for an image
	// elsewhere; one beside the image comes first.
	require.NoError(t, os.WriteFile(filepath.Join(images, hash.MapFileName()), []byte("0 +\n"), 0o644))
	src, err = Locate(string(hash), opts)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(images, hash.MapFileName()), src.Mapfile)
	require.NoError(t, os.WriteFile(filepath.Join(other, hash.MapFileName()), []byte("0 +\n"), 0o644))
	src, err = Locate(string(hash), opts)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(other, hash.MapFileName()), src.Mapfile)

	// A catalogued image that is gone falls back to the images directory.
	opts.CatalogImage = filepath.Join(dir, "gone.img")
	src, err = Locate(string(hash), opts)
	require.NoError(t, err)
	assert.Equal(t, inImages, src.Image)

	// A named image must exist.
	opts.Image = filepath.Join(dir, "missing.img")
	_, err = Locate(string(hash), opts)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), string(hash))

	_, err = Locate("not-a-hash", opts)
	require.Error(t, err)
}
