// Package archive seals a medium's image files into one verified
// <hash>.tar.zst (the seed's Phase 4), checks sealed archives, and completes
// a medium in the catalog: mark it archived, then remove the sources.
//
// Format. The archive is a tar stream (read and written by archive/tar,
// listed and extracted by GNU tar) compressed with zstd (klauspost/compress,
// level numbered like the zstd command line, block-parallel). Members are an
// explicit list — by default the seed's <hash>.img, .map, .map.bak,
// .map.stall and -ddrescue.log, those that exist, never a wildcard — plus a
// last member <hash>.manifest.json naming every member with its size, mode,
// mtime, BLAKE3 and optionally SHA-256. The manifest is last because its
// hashes are computed in the same pass that writes the members. Each member
// starts a new zstd frame, and long runs of zeros (holes of sparse images,
// zeroed free space) are written as frames of RLE blocks, so a corrupted
// frame can be traced to its member, and zeros cost no compression work.
// `tar -I 'zstd -d' -xf` extracts every member bit for bit.
//
// Invariants. A file under the final name <dest>/<hash>.tar.zst is complete:
// Seal writes .<hash>.tar.zst.partial in the destination directory (locked
// with flock so two sealers of one medium cannot interleave) and fsyncs it.
// The read-back runs beside the writer, one frame behind: it reads each
// frame from the file once written, decodes it (zstd frame checksums
// included) and re-hashes every member against its manifest entry; it ends
// after the fsync and must have covered every byte of the file. Only then
// is the file renamed into place and the directory fsynced.
// Completion (Complete) refuses while any inode of the medium is pending or
// claimed unless forced, marks medium.copy_done and archive_path in one
// transaction after the archive is in place, and removes only the listed
// source files, each after checking it is still the file that was sealed.
// It never removes an image that is still mounted: CompleteOptions.Release
// (loopdev.Release in the programs) first unmounts the medium and detaches
// its loops, as the runbook's rollback does, and if anything still reads
// the image every source is kept (ErrImageBusy). Unmounting rather than
// refusing is what the runbook expects after Phase 4 ("Mount point
// removed"), and a medium whose copy is complete has no reader left.
//
// Failure model. kill -9 at any moment leaves one of: sources and no final
// archive (a stale .partial is reused by the next run); sources and a
// complete verified archive (the next run verifies it, re-hashes the sources
// against its manifest, marks the catalog and removes them); the archive and
// the catalog mark with some or all sources removed (the next run removes
// the rest after the same checks). Sources never disappear before the
// archive is verified and the catalog marked. Errors are wrapped with the
// medium, file or member they concern; ErrCorrupt matches every integrity
// failure (*MemberError for a member whose bytes or hash are wrong,
// *FrameError for a broken compressed frame).
//
// Memory is constant whatever the image size: sources are streamed through
// fixed buffers, holes are found with SEEK_DATA/SEEK_HOLE and never read.
// The library never prints; progress goes through Progress and events
// through an optional *slog.Logger.
package archive

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults follow the seed's layout.
const (
	DefaultImagesDir = "/data/fast/img"
	DefaultDestDir   = "/data/cold/img-read"
	// DefaultLevel is the zstd command line's default level, what the
	// seed's `tar -I 'zstd -T0'` uses.
	DefaultLevel = 3
)

var (
	// ErrAlreadyArchived: the final archive exists and the caller did not
	// force a new seal.
	ErrAlreadyArchived = errors.New("medium already archived")
	// ErrImageMissing: the medium's .img is in none of the directories.
	ErrImageMissing = errors.New("image file not found")
	// ErrBusy: another process is sealing the same medium into the same
	// destination right now.
	ErrBusy = errors.New("another seal of this medium is in progress")
	// ErrSourceChanged: a source file changed while it was sealed, or is
	// not the file the archive holds when it is about to be removed.
	ErrSourceChanged = errors.New("source file changed")
	// ErrCorrupt matches every integrity failure of an archive.
	ErrCorrupt = errors.New("archive corrupt")
	// ErrCopyIncomplete: inodes of the medium are still pending or claimed.
	ErrCopyIncomplete = errors.New("copy of the medium is incomplete")
	// ErrUnknownMedium: the catalog has no row for the medium.
	ErrUnknownMedium = errors.New("medium not in the catalog")
)

// Spec says what to seal and how.
type Spec struct {
	// Medium is the medium hash (validated).
	Medium string
	// ImagesDirs are searched in order for each member; the first directory
	// holding a name wins. Default: DefaultImagesDir.
	ImagesDirs []string
	// Members are the file names to seal, in archive order; nil means the
	// seed's list (medium.Hash.ImageMembers). Missing names are skipped and
	// reported in Result.Skipped, except <hash>.img, which must exist and
	// must be in the list. Names are plain file names, never patterns.
	Members []string
	// Dest is the directory the archive goes to. It must exist: an absent
	// cold-storage mount must not turn into a directory on the wrong disk.
	// Default: DefaultDestDir.
	Dest string
	// Level is the zstd level as the zstd command line numbers it (1–22);
	// 0 means DefaultLevel. Levels map to klauspost/compress's four speeds.
	Level int
	// Concurrency is how many goroutines compress and decompress; 0 means
	// GOMAXPROCS.
	Concurrency int
	// SHA256 adds a SHA-256 of each member to the manifest, for fixity
	// tools that want it (BLAKE3 is always there).
	SHA256 bool
	// Force replaces an existing archive instead of returning
	// ErrAlreadyArchived.
	Force bool
	// Progress receives byte counts; nil means none.
	Progress Progress
	// Logger receives events (member sealed, archive renamed); nil: silent.
	Logger *slog.Logger
}

// SealedMember is one member of a sealed archive and the source it came from.
type SealedMember struct {
	ManifestMember
	// Source is the path the member was read from.
	Source string

	dev, ino uint64 // identity of the source, checked again before removal
	mtimeNs  int64
}

// Result describes a sealed (or, for Complete, adopted) archive.
type Result struct {
	// Path is the final archive path, <dest>/<hash>.tar.zst.
	Path string
	// Size is the archive's size in bytes.
	Size     int64
	Manifest Manifest
	// Members are the sealed members with their sources, in archive order.
	Members []SealedMember
	// Skipped are the requested member names found in no directory.
	Skipped []string
	// Removed are the source paths Complete removed.
	Removed []string
	// SealTime covers reading, hashing, compressing and fsync; VerifyTime
	// is how long the read-back (which runs alongside) went on after that,
	// or the whole verification when Complete adopted an existing archive;
	// Total is everything including the rename.
	SealTime, VerifyTime, Total time.Duration
	// SyncTime is the part of SealTime spent in the final fsync (the
	// destination's write speed shows here).
	SyncTime time.Duration
}

// MemberError is an integrity failure of one member: missing, unexpected,
// wrong size or wrong hash.
type MemberError struct {
	Archive string
	Member  string
	Err     error
}

func (e *MemberError) Error() string {
	return fmt.Sprintf("archive %s: member %s: %v", e.Archive, e.Member, e.Err)
}

func (e *MemberError) Unwrap() error { return e.Err }

// Is makes every MemberError match ErrCorrupt.
func (e *MemberError) Is(target error) bool { return target == ErrCorrupt }

// IncompleteError reports the inodes that keep a medium from being archived.
type IncompleteError struct {
	Medium                  string
	Total, Pending, Claimed int64
}

func (e *IncompleteError) Error() string {
	if e.Total == 0 {
		return fmt.Sprintf("medium %s: copy incomplete: the catalog has no inodes for it (not loaded?)", e.Medium)
	}
	return fmt.Sprintf("medium %s: copy incomplete: %d of %d inodes pending, %d claimed",
		e.Medium, e.Pending, e.Total, e.Claimed)
}

// Is makes every IncompleteError match ErrCopyIncomplete.
func (e *IncompleteError) Is(target error) bool { return target == ErrCopyIncomplete }
