// Package enumerate walks a mounted medium, or one read from its image,
// and writes one record per directory entry in NTT's raw enumeration
// format, and reads that format back.
//
// # Format
//
// A raw file is a sequence of records, the walk root first, each
//
//	type 0x1C dev 0x1C ino 0x1C nlink 0x1C size 0x1C mtime 0x1C path 0x00
//
// exactly what `find ROOT -xdev -printf '%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0'`
// prints, so files made by either tool are interchangeable. The path is the
// raw bytes of the path as walked and may hold any byte but 0x00 (0x1C
// included): a reader splits on the first six separators only. Writer and
// Reader accept only the canonical form (decimal without sign or leading
// zeros, except a minus on size and mtime), so a record read back
// re-encodes to the same bytes. A malformed record is reported as a
// *RecordError with its index (0 = first record) and byte offset.
//
// # Walk
//
// Walk emits exactly the record set that find -xdev prints for the same
// roots (order differs): lstat semantics (symlinks are recorded, never
// followed), and no descent into another filesystem — except the mount
// points named in Options.EnterMounts, which is how a multi-partition
// medium root <root>/<hash> with its partitions mounted at pN is walked as
// one medium (see PartitionMounts). Paths matched by the ignore Matcher are
// left out, but their subtrees are still walked: only the matching paths
// themselves are missing, exactly as when the loader filters the same
// patterns.
//
// # From an image
//
// WalkImage enumerates a medium read from its image by package imagefs
// (FAT, ISO 9660 …: no root, no loop device, no mount) and writes the same
// records a walk of its kernel mount at <root>/<hash> would give: the
// medium root first, paths under it (/pN/… for the partitions of a
// multi-partition medium, as loopdev.Plan lays them out), dev the partition
// number (0 for a whole-disk filesystem), ino the filesystem's own id of the
// entry (imagefs.CatalogIno). The same image always gives the same bytes.
// The loader and everything after it cannot tell the two apart; the
// medium's catalog is then read back through the same reader (copier's
// Options.Image). Structural damage is reported through the Report given
// to imagefs.OpenMedium and counted in Result.Errors; the walk goes on.
//
// # Failure model
//
// A directory that cannot be opened or read, or an entry that cannot be
// stat'ed, is reported through Options.OnError with its path and errno
// (errors.Is(err, unix.EIO) works) and counted in Result.Errors; the walk
// goes on with everything else. Only the sink's write errors, context
// cancellation, an OnError callback returning an error, and a stall end the
// walk early. A damaged filesystem can leave a goroutine blocked in a system
// call for good; Walk watches its own progress and returns ErrStalled once
// nothing has moved for Options.StallTimeout, without waiting for such
// goroutines (they exit when their call returns, if ever).
//
// The package never prints; progress and errors go to callbacks.
package enumerate
