package imagefs

import "strings"

// Forks and streams.
//
// A Mac file's resource fork (HFS, HFS+) and a Windows file's alternate
// data streams (NTFS) are content beside the file's own (its data fork,
// its unnamed $DATA stream). NTT keeps every non-empty one, as a file of
// its own in the catalog, found from its file by name:
//
//	<file>/..namedfork/rsrc       the resource fork (macOS's own spelling:
//	                              on a Mac, cat 'x/..namedfork/rsrc' reads it)
//	<file>/..namedfork/<stream>   an NTFS alternate data stream (Windows
//	                              spells it x:<stream>)
//
// so `path >= file || '/..namedfork/'` finds a file's forks in the catalog,
// and a catalog without forks (ext4, FAT, ISO 9660) is unchanged. A fork
// is an inode of type 'f' with its own ID, ForkID(file's ID, k): hardlinks
// of a file share its forks as they share its data, so a fork is
// catalogued once however many names its file has. A file can never hold
// a child, so the copier's hardlink tree cannot put a fork at its catalog
// path; it puts it at ForkTreePath's: <dir>/..namedfork/<file>/<name>,
// beside the file, in a directory macOS would never show.
//
// Readers list a file's non-empty forks in Entry.Forks (empty forks are
// not content and are left out); Walk visits each right after its file.
// FS.Open reads a fork like any file.

// ForkDir is the path component that introduces a file's forks.
const ForkDir = "..namedfork"

// ResourceFork is the name of a Mac file's resource fork.
const ResourceFork = "rsrc"

// MaxForks bounds the forks of one file (k in ForkID); a reader reports
// and leaves out any beyond it.
const MaxForks = 1<<12 - 1

// ForkID is the ID of fork k (1 ≤ k ≤ MaxForks) of the file whose ID is
// file: the file's ID with k in bits 48–59. Readers whose file IDs reach
// 2^48 cannot have forks (none do: CNIDs are 32 bits, MFT record numbers
// 48, FAT and ISO byte offsets stay below 2^44 and have no forks).
func ForkID(file uint64, k int) uint64 {
	return file | uint64(k)<<48
}

// ForkPath is the catalog path of the fork named name of the file at path.
func ForkPath(path []byte, name []byte) []byte {
	p := make([]byte, 0, len(path)+len(ForkDir)+len(name)+2)
	p = append(append(p, path...), '/')
	p = append(append(p, ForkDir...), '/')
	return append(p, name...)
}

// ForkTreePath maps a catalog path relative to the medium root (no leading
// "/") to where the copier's tree keeps it: a fork's path
// "d/file/..namedfork/rsrc" becomes "d/..namedfork/file/rsrc"; any other
// path is returned as it is.
func ForkTreePath(rel string) string {
	// The fork's name is the last component, ForkDir the one before it,
	// the file the one before that.
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return rel
	}
	j := strings.LastIndexByte(rel[:i], '/')
	if j < 0 || rel[j+1:i] != ForkDir {
		return rel
	}
	k := strings.LastIndexByte(rel[:j], '/')
	dir, file, name := rel[:k+1], rel[k+1:j], rel[i+1:]
	return dir + ForkDir + "/" + file + "/" + name
}
