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
// # Reading a mounted ext medium from its block device
//
// A cold walk through system calls is not bound by the disk: its time is
// the kernel building an inode and a dentry for every entry (system time
// 1.7-2.3 s cold against 0.9-1.0 s warm for 300,000 entries), which no
// number of workers and no read-ahead removes (measurements below). The
// facts lstat gives are on the device in two compact places: the used part
// of every group's inode table (75 MB for bench/enum.sh's 300,112 entries)
// and the directories' blocks (12.7 MB). So when a walk root is the root of
// an ext2/3/4 filesystem on a block device, mounted read-only at its
// superblock, with nothing mounted beneath it, Walk reads both straight
// from the device, in disk order, in reads of up to 4 MiB with the next
// one advised (posix_fadvise WILLNEED) while this one is parsed, builds the
// tree in memory and writes the records lstat would have given: the same
// dev (the mount's), inode numbers, link counts, sizes and mtimes as
// find -xdev, in each directory's stored order (extwalk.go; the reader is
// internal/extfs, which the copier shares).
//
// The read is all or nothing, and it is checked before a single record is
// written: an unknown or unfollowed feature (meta_bg, inline data,
// encryption, a journal to recover), a directory entry the kernel would
// reject, a metadata_csum checksum that does not match, an entry naming a
// free or reserved inode, an inode ext4_iget refuses (its block references,
// also into the filesystem's metadata; its flags; a fast symlink's
// length), an htree entry outside the leaf its name's hash leads to, a
// directory whose size is not whole blocks, a directory reached twice —
// any of these, and the root is
// walked through system calls instead, which report such damage entry by
// entry as before. Result.Direct names the roots read directly and why the
// others were not; Options.KernelOnly (ntt-enum --kernel-walk) turns it
// off. Memory: about 24 bytes per used inode and 20 per entry plus the
// names (48.6 MiB peak RSS for the 300,112 entries); a medium of more than
// 16 Mi used inodes is walked through system calls.
//
// Measured with bench/enum.sh (RUNS=3, caches dropped before each cold
// run, load average 1.4-2 from other work on the 2 cores):
//
//	                         cold                  warm
//	find -xdev -printf       3.44 s                1.78 s
//	ntt-enum --kernel-walk   1.77 s (0.51 x find)  0.81 s (0.46)
//	ntt-enum (direct)        0.68 s (0.20 x find)  0.54 s (0.30)
//
// and in a second run without the A/B (RUNS=3 AB=0): cold 0.63 s against
// 4.04 s (0.16), warm 0.38 s against 1.37 s (0.28). With the checks a
// hostile review added (each htree entry's hash, block references into
// the metadata, iget's inode checks), RUNS=3, load 1.2-1.7: cold 0.72 s
// against 3.81 s (0.19), warm 0.44 s against 1.80 s (0.24), peak RSS
// 49.4 MiB.
//
// # Walking through system calls: concurrency and read-ahead
//
// Roots that are not read directly (a subdirectory, a multi-partition
// medium's root, another filesystem, a read-write mount) are walked
// through system calls.
//
// A cold walk of a mounted medium waits on two kinds of reads: the inode
// table block behind each entry's stat, and each directory's own blocks.
// Workers give the disk DefaultWorkers (16) requests at a time, one per
// worker; 16 beat 4 by 15-25 % cold, and warm the number makes no
// difference (the kernel's stat path is the bound; see DefaultWorkers).
// Workers take subdirectories lowest inode first, so that the walk moves
// up the inode tables, the direction of the disk and of the read-ahead.
//
// Options.Prefetch adds a read-ahead, for a walk root that is the root of
// an ext2/3/4 filesystem on a block device (st_ino 2, a /sys/dev/block
// entry): a goroutine reads, through the device's page cache that the
// filesystem itself reads its metadata from, every group's inode table up
// to its last used inode (bg_itable_unused) in disk order, as one
// sequential stream with 2 MiB advised (posix_fadvise WILLNEED) ahead of
// the 1 MiB it parses, and advises the blocks of every directory whose
// inode it parses there. It reads at most a quarter of MemAvailable, stops
// at the first read error or when the walk ends, and is only a hint:
// records come from the walk's own system calls. Result.Prefetch says what
// it read; ntt-enum --prefetch turns it on.
//
// It is off by default because it did not pay where it was measured:
// bench/enum.sh's 300,112-entry ext4 on a loop device (75 MB of used inode
// tables, 12.7 MB of directory blocks) on a 2-core VM shared with other
// jobs (load average in brackets), caches dropped before each run, runs
// alternating:
//
//	cold, read-ahead on / off                 median          runs
//	bench/enum.sh [20-25], 16 MiB window      6.71 / 7.20 s   5 + 5
//	bench/enum.sh [12-19], 16 MiB window      7.35 / 6.27 s   5 + 5
//	by hand [17], 16 MiB window               4.54 / 3.67 s   7 + 7
//	by hand [16], 16 MiB / none / off         5.0 / 4.4 / 4.0 s  6 each
//	by hand, --workers 1 [12-15]              4.12 / 4.10 s   3 + 3
//	bench/enum.sh [11-15], 2 MiB window       5.15 / 4.76 s   5 + 5
//	bench/enum.sh [7-9], 2 MiB window         2.38 / 2.50 s   5 + 5
//	by hand [9], 2 MiB window                 2.41 / 2.59 s   6 + 6
//	lowest / highest inode first, on [~13]    3.27 / 3.90 s   5 + 5
//	lowest / highest inode first, off [~8]    2.86 / 3.12 s   6 + 6
//
// It gains 5-7 % when the machine is less loaded and loses as much or
// more when it is busy: not enough to be on for everyone.
//
// The --workers 1 row says why: even one worker walks as fast cold as
// sixteen, and as fast with the read-ahead as without, so on this machine
// a cold walk does not wait on the disk (a virtio disk reading 280 MB/s;
// ext4 already reads 32 inode-table blocks at a time). Its time is the
// kernel building 300,000 inodes and dentries (system time 1.7-2.3 s cold
// against 0.9-1.0 s warm), which a loaded machine stretches and no
// read-ahead removes; at load 21-24 a walk with dentries and inodes
// dropped but the page cache kept (echo 2 > drop_caches) took as long as
// a cold one. On a
// medium with real seek latency (a spinning disk, USB, a network block
// device) the read-ahead should pay; re-measure with bench/enum.sh, which
// times --prefetch beside the default, before turning it on there. Warm,
// reading 75 MB of inode tables from the page cache is CPU a loaded
// machine misses: on/off 0.96, 0.94, 1.39 and 0.86 in the four bench runs.
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
