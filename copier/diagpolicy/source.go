package diagpolicy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev"
)

// DefaultImagesDir is where the runbook keeps images and mapfiles
// (/data/fast/img/<hash>.img, <hash>.map).
const DefaultImagesDir = "/data/fast/img"

// How Locate found a medium's image (Source.From).
const (
	FromOption  = "option"  // the caller named it (--image)
	FromMount   = "mount"   // the backing file of the mounted medium's loop device
	FromCatalog = "catalog" // medium.image_path
	FromImages  = "images"  // <images dir>/<hash>.img
)

// LocateOptions say where to look for a medium's image and mapfile.
type LocateOptions struct {
	// Image named by the operator; used as given (it must exist).
	Image string
	// CatalogImage is medium.image_path ("" if NULL); used if it exists.
	CatalogImage string
	// MountRoot: the medium mounted at <MountRoot>/<hash> names its image
	// (its loop devices' backing file; default /mnt/ntt).
	MountRoot string
	// ImagesDirs hold <hash>.img and <hash>.map (the runbook's
	// /data/fast/img); nil means DefaultImagesDir.
	ImagesDirs []string
}

// Source is where a medium's bytes come from, as far as can be found out.
type Source struct {
	// Image is the image file ("" when none was found) and From how it
	// was found.
	Image, From string
	// Mapfile is the ddrescue mapfile, "" when there is none; Looked lists
	// every path tried for it, for messages.
	Mapfile string
	Looked  []string
	// Layout is the mounted medium's layout (nil when not mounted): it
	// lists the partitions that were not mounted, and why.
	Layout *loopdev.Layout
}

// Locate finds a medium's image and mapfile. The image is, in order: the
// one named in opts.Image; the backing file of the loop devices the medium
// is mounted from (the bytes the copier reads, whatever the catalog says);
// medium.image_path; <dir>/<hash>.img in an images directory. The mapfile is
// <hash>.map beside the image, else in an images directory. Finding nothing
// is not an error (health is then unknown); a named image that does not
// exist is.
func Locate(hash string, opts LocateOptions) (Source, error) {
	var src Source
	h, err := medium.Parse(hash)
	if err != nil {
		return src, err
	}
	root := opts.MountRoot
	if root == "" {
		root = loopdev.DefaultRoot
	}
	dirs := opts.ImagesDirs
	if dirs == nil {
		dirs = []string{DefaultImagesDir}
	}
	if lay, err := loopdev.Status(string(h), root); err == nil {
		src.Layout = lay
	} else if !errors.Is(err, loopdev.ErrNotMounted) {
		return src, err
	}
	isFile := func(p string) bool {
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular()
	}
	switch {
	case opts.Image != "":
		if _, err := os.Stat(opts.Image); err != nil {
			return src, fmt.Errorf("medium %s: image: %w", h, err)
		}
		src.Image, src.From = opts.Image, FromOption
	case src.Layout != nil && src.Layout.Image != "" && isFile(src.Layout.Image):
		src.Image, src.From = src.Layout.Image, FromMount
	case opts.CatalogImage != "" && isFile(opts.CatalogImage):
		src.Image, src.From = opts.CatalogImage, FromCatalog
	default:
		for _, d := range dirs {
			if p := filepath.Join(d, h.ImageFileName()); isFile(p) {
				src.Image, src.From = p, FromImages
				break
			}
		}
	}
	var maps []string
	if src.Image != "" {
		maps = append(maps, filepath.Join(filepath.Dir(src.Image), h.MapFileName()))
	}
	for _, d := range dirs {
		maps = append(maps, filepath.Join(d, h.MapFileName()))
	}
	for _, m := range maps {
		if containsPath(src.Looked, m) {
			continue
		}
		src.Looked = append(src.Looked, m)
		if isFile(m) {
			src.Mapfile = m
			break
		}
	}
	return src, nil
}

func containsPath(ps []string, p string) bool {
	for _, q := range ps {
		if filepath.Clean(q) == filepath.Clean(p) {
			return true
		}
	}
	return false
}
