// Package fat reads FAT12, FAT16 and FAT32 filesystems (with VFAT long
// names) straight from an image, in user space: the floppies, Zip disks,
// memory cards and Windows 9x disks archivists rescue. It registers the
// imagefs driver for probe's type "vfat"; import it (or imagefs/all) and use
// imagefs.Open, or call Open directly.
//
// # Layout and checks
//
// Open parses the boot sector's BIOS parameter block and checks every field
// before it is used: bytes per sector a power of two from 512 to 4096,
// sectors per cluster a power of two, reserved sectors, one or two FATs,
// root directory entries (none on FAT32), total sectors leaving room for
// data, the media byte, the FAT32 version and root cluster. FAT12 or FAT16
// is chosen by the cluster count as Microsoft's specification says (fewer
// than 4085 clusters: FAT12; fewer than 65525: FAT16); a boot sector with
// the FAT32 layout (no 16-bit FAT size) is FAT32, as Linux and mkfs.fat have
// it. A field that does not check out is a *FormatError naming its byte
// offset, name and value. A FAT too small for the data area limits the
// clusters to what it addresses, as Linux does (reported).
//
// # Names
//
// An entry's name is its VFAT long name, UTF-16 decoded to UTF-8 (an
// unpaired surrogate becomes U+FFFD), when its slots are complete, in
// sequence and carry the checksum of the 8.3 record that follows them;
// otherwise (an orphaned, cut or mismatching long name, reported as
// lfn_mismatch) the 8.3 name. 8.3 names are decoded from a code page,
// Options.CodePage: "cp437" (the default, as Linux's codepage=437) or
// "cp850"; any other name is an error at Open (ErrCodePage). As Linux's
// vfat shows them by default (shortname=mixed): trailing spaces dropped,
// "NAME.EXT" joined with a dot only if there is an extension, a first
// byte 0x05 read as 0xE5, and the Windows NT case flags (byte 12, bits
// 0x08 and 0x10) lowering the base name and the extension in the code page.
// A name never holds '/' or NUL: '/' (which no valid FAT name has) becomes
// U+2215 DIVISION SLASH, NUL U+2400 SYMBOL FOR NULL. A long name "." or ".."
// is replaced by the 8.3 name.
//
// # Entries
//
//   - ID is the byte offset on the volume of the entry's 8.3 directory
//     record: unique, and the same on every walk. The root directory, which
//     has no record, has ID RootID (1) and no name.
//   - Type is 'f' or 'd' (FAT has no other kinds). Deleted records (0xE5),
//     long-name slots, the volume label, "." and ".." are never entries.
//     A directory ends at its first record starting with 0x00, as the
//     specification says.
//   - Size is the record's size for a file; for a directory, the bytes of
//     its clusters (the fixed root area on FAT12/16), as Linux shows it.
//   - Mtime is the record's DOS date and time. DOS stores the local time of
//     the machine that wrote it without a zone; it is taken as UTC (as
//     Linux's vfat with tz=UTC). An invalid date or time gives the zero
//     time.Time and a bad_time report. The root has the Unix epoch.
//   - Nlink is 1 for a file; for a directory, 2 + the number of
//     subdirectories it holds, which is what Linux shows for a well-formed
//     directory (it counts "." and ".." records). Counting reads each
//     subdirectory once; on a hostile image of cross-linked directories
//     that reading is bounded (twice the image), past which counts are 2.
//   - Runs are the cluster chain, coalesced where clusters are consecutive,
//     as volume byte offsets; a file's last run is cut at its size, an empty
//     file has none. Directories have runs too (the FAT12/16 root is one),
//     so imagefs.Walk recognises a directory whose cluster is an
//     ancestor's. A directory record with cluster 0 (how ".." names the
//     root) has the root's runs.
//
// # Damage
//
// Every problem is reported through Options.Report as an *imagefs.Problem
// with the byte offset of the damaged structure, and reading goes on:
//   - truncated: the image is shorter than the volume (offset: the image's
//     end), or a directory's clusters lie past it.
//   - fat_mismatch: the FAT copies differ (at Open, the first differing
//     byte), and each chain broken in FAT1 that checks out in FAT2 and is
//     taken from there (the FAT1 entry where it broke). The choice is made
//     per chain: FAT1 unless its chain is broken and FAT2's is whole. A
//     FAT32 volume with mirroring off uses its active FAT only.
//   - loop, out_of_volume, corrupt: a chain that comes back to a cluster,
//     names a cluster outside 2..N+1, or runs into a free, bad or reserved
//     cluster or an unreadable FAT entry (offset: the FAT entry, or the
//     record's first-cluster field).
//   - short_chain, long_chain: a chain with fewer clusters than the file's
//     size needs, or more (cut at the size); a directory longer than
//     65536 records (cut there).
//   - cross_linked: the chains of one directory's entries together pass
//     more than twice the volume's clusters, so they share clusters; the
//     chains past that budget are not followed (those files fail to read).
//   - unreadable: a directory cluster that cannot be read.
//   - bad_entry: a record that cannot be a file (control bytes in its 8.3
//     name, reserved attribute bits, a second volume label); left out.
//   - lfn_mismatch, bad_time: see Names and Entries.
//
// A file's runs cover what its chain gives. Reading past them fails with an
// *imagefs.ReadError wrapping imagefs.ErrCorrupt; reading a run past the
// image's end fails with imagefs.ErrBeyondEnd. Neither reads as zeros.
//
// # Bounds
//
// Nothing read from the medium sizes an allocation or a loop beyond the
// volume: a chain is followed at most as far as the file's size needs (a
// directory: 2 MiB, the specification's 65536 records) and never through
// a cluster twice (a bit set over the FAT's readable entries); the chains
// of one listing share the budget above; the FATs are read only as far as
// they hold the volume's clusters and the image goes. imagefs.Walk stops
// cycles, not a directory cross-linked under many parents: a caller
// walking hostile media bounds the entries it takes (FuzzVolume does).
//
// The reader is checked against images made by mkfs.fat and mtools, with
// The Sleuth Kit (fls, icat) and mtools (mdir, mtype) as reference readers,
// and fuzzed (FuzzVolume).
package fat
