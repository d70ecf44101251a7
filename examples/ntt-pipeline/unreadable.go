package main

// --archive-unreadable: a medium whose image holds no filesystem that can
// be read is sealed into its archive anyway (image, mapfile, logs), so that
// it leaves the fast disk and is never lost, and the catalog says why
// (medium.problems.archived_unreadable). The old practice of field-failures.md.
//
// Invariant: never a medium with readable files still uncopied. The
// decision is taken from two independent witnesses, both required: the
// probe of the image finds no filesystem at all (erased, empty, or a disk
// with neither a whole-disk filesystem nor a partition holding one), and
// the catalog has no inode of the medium. A FAT or ISO image the kernel
// does not mount is not unreadable: the probe knows its filesystem.
//
// A medium read from its image (--read image, or auto for a filesystem the
// kernel has no driver for) may also be sealed when its filesystems are
// known to the probe but every one of them failed: an image reader knew
// each and refused it (imagefs.ReasonUnreadable). A filesystem no image
// reader knows (imagefs.ErrNoReader: --read mount may read it) or a
// partition skipped for holding data elsewhere readable (truncated, RAID,
// LVM) keeps the medium on the fast disk.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"strings"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// errReadable refuses to seal a medium that may hold readable files.
var errReadable = errors.New("the medium may hold readable files")

// unreadableWhy probes the image and says why no filesystem of it can be
// read, or returns errReadable (wrapped, naming what was found).
func unreadableWhy(image string) (string, error) {
	f, err := os.Open(image)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	res, err := probe.Probe(f, fi.Size())
	if err != nil {
		return "", fmt.Errorf("probing %s: %w", image, err)
	}
	switch res.Kind {
	case probe.KindEmpty:
		return "the image is empty (zero bytes)", nil
	case probe.KindErased:
		return fmt.Sprintf("the image is erased: every sampled byte is 0x%02x", res.ErasedByte), nil
	case probe.KindArchive:
		return "", fmt.Errorf("%w: it is a %s file, not a disk image", errReadable, res.Archive)
	}
	if res.Whole != nil {
		return "", fmt.Errorf("%w: a %s filesystem starts at byte 0", errReadable, res.Whole.Type)
	}
	for _, p := range res.Partitions {
		if p.Content != nil {
			return "", fmt.Errorf("%w: partition %d holds %s", errReadable, p.Num, p.Content.Type)
		}
	}
	if res.Table != "" {
		return fmt.Sprintf("no known filesystem in any of the %d partitions of its %s table", len(res.Partitions), res.Table), nil
	}
	return "no partition table and no known filesystem (unknown content)", nil
}

// unreadableImageWhy says why no filesystem of the image can be read by
// the image readers: the probe finds none (unreadableWhy), or it finds
// some and every one failed in its reader. Otherwise errReadable.
func unreadableImageWhy(ctx context.Context, image string, h medium.Hash, root string) (string, error) {
	why, err := unreadableWhy(image)
	if !errors.Is(err, errReadable) {
		return why, err
	}
	m, oerr := imagefs.OpenMediumFile(ctx, image, imagefs.MediumOptions{Medium: string(h), Root: root})
	if oerr == nil {
		n := len(m.Volumes)
		m.Close()
		return "", fmt.Errorf("%w: the image reader reads %d of its filesystems", errReadable, n)
	}
	if !errors.Is(oerr, imagefs.ErrNothingReadable) {
		return "", fmt.Errorf("%w (image reader: %v)", err, oerr)
	}
	if errors.Is(oerr, imagefs.ErrNoReader) {
		return "", fmt.Errorf("%w: no image reader knows its filesystem, --read mount may read it (%v)", errReadable, oerr)
	}
	if m != nil && m.Layout != nil {
		for _, ps := range m.Layout.Partitions {
			switch {
			case ps.Status == loopdev.StatusFailed && ps.Reason == imagefs.ReasonNoReader:
				return "", fmt.Errorf("%w: no image reader knows the %s of partition %d, --read mount may read it", errReadable, ps.FSType, ps.Num)
			case ps.Status == loopdev.StatusSkipped && (ps.Reason == loopdev.ReasonTruncated || ps.Reason == loopdev.ReasonRAID || ps.Reason == loopdev.ReasonLVM):
				return "", fmt.Errorf("%w: partition %d is skipped (%s), not failed", errReadable, ps.Num, ps.Reason)
			}
		}
	}
	return "every filesystem failed: " + strings.TrimPrefix(oerr.Error(), "medium "+string(h)+": "), nil
}

// sealUnreadable seals the medium whose mount or image reading failed, if
// it is unreadable:
// archive.Complete (sealed, read back and verified like any archive,
// catalog marked archived, sources removed unless --keep-sources), then the
// archived_unreadable flag with its reason.
func (qu *queue) sealUnreadable(ctx context.Context, c config, reader, failure string) (string, error) {
	h := c.hash
	var why string
	var err error
	if reader == readImage {
		why, err = unreadableImageWhy(ctx, c.image, h, c.root)
	} else {
		why, err = unreadableWhy(c.image)
	}
	if err != nil {
		return "", err
	}
	var inodes int64
	if err := qu.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1`, string(h)).Scan(&inodes); err != nil {
		return "", fmt.Errorf("medium %s: counting its inodes: %w", h, err)
	}
	if inodes > 0 {
		return "", fmt.Errorf("%w: the catalog holds %d of its inodes", errReadable, inodes)
	}
	qu.log.Warn("sealing an unreadable medium", "medium", string(h), "why", why)
	_, err = archive.Complete(ctx, qu.db, archive.Spec{Medium: string(h), ImagesDirs: []string{c.images}, Dest: c.dest, Logger: qu.log},
		archive.CompleteOptions{AllowIncomplete: true, KeepSources: c.keepSources, Release: func(ctx context.Context, medium, image string) error {
			_, err := loopdev.Release(ctx, loopdev.ReleaseSpec{Medium: medium, Image: image, Root: c.root, Logger: qu.log})
			return err
		}})
	if err != nil && !errors.Is(err, archive.ErrAlreadyArchived) {
		return "", err
	}
	if err := schema.MergeProblem(context.WithoutCancel(ctx), qu.db, h, flagArchivedUnreadable, map[string]any{
		"reason": why, "error": why, "reader": reader, reader + "_error": failure,
		"archive": filepath.Join(c.dest, h.ArchiveFileName())}); err != nil {
		return "", err
	}
	return why, nil
}
