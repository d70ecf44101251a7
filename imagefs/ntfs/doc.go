// Package ntfs reads NTFS volumes — Windows hard disks and their partitions
// — straight from an image, in user space, as an imagefs reader registered
// for probe's type "ntfs". Import it (or imagefs/all) and use imagefs.Open,
// or call Open directly. It is ours, over io.ReaderAt, and small: it reads
// what an archive needs (names, types, content, streams) and nothing else.
//
// # Layout and checks
//
// Open reads the boot sector (OEM ID "NTFS    ", bytes per sector a power
// of two from 256 to 4096, sectors per cluster a power of two — the large
// cluster encoding 2^(256-n) included — clusters up to 2 MiB, the total
// sector count, the clusters of $MFT and $MFTMirr inside the volume, an MFT
// record of 512 bytes to 64 KiB); a field that does not check out is a
// *FormatError naming its byte offset, wrapping ErrNotNTFS and
// imagefs.ErrCorrupt. It then reads the $MFT's own record (record 0) and
// maps the whole MFT by that record's $DATA runlist, so a fragmented MFT is
// read where it lies. An image shorter than the volume is reported (Kind
// "truncated") and read as far as it goes.
//
// Every MFT record is checked before use: the "FILE" signature, the update
// sequence (its array must fit; the last two bytes of every 512-byte stride
// must hold the update sequence number, which is then replaced by the saved
// bytes), the header's bytes in use and first attribute inside the record,
// every attribute's length inside the bytes in use, a resident value inside
// its attribute, a name inside its attribute, and a runlist whose every
// entry fits and whose run lengths are positive and, but for holes (a
// sparse file may be larger than its volume), no longer than the volume. A record that does not check out is reported (Kind "corrupt",
// with its volume offset) and left out; records 0–3 ($MFT, $MFTMirr,
// $LogFile, $Volume) are then read from their copies in $MFTMirr instead
// (Kind "rescued", at the copy's offset; record 0 first "corrupt" at its
// own, as Open cannot go on without it).
//
// # Names: from $FILE_NAME parent references
//
// Open reads every MFT record once and keeps, of each base record in use,
// its $FILE_NAME attributes (including those in its extension records): a
// directory's entries are the records whose $FILE_NAME names it as parent,
// with the parent's sequence number. The directory indexes ($INDEX_ROOT,
// $INDEX_ALLOCATION — B-trees of copies of those same $FILE_NAMEs) are not
// read: one sequential pass over the MFT is faster on a large disk than a
// B-tree walk per directory, and it lists a file whose index entry is
// damaged. Entries are sorted by name (UTF-8 byte order, not NTFS's
// upcase collation). A record's DOS 8.3 name (namespace 2) is left out
// when it also has a Win32 name (it is the same link's alias); every other
// $FILE_NAME is a link, so a record with several in one or more directories
// is a hardlinked file. Records not in use (deleted files) are left out;
// their $FILE_NAMEs are not read.
//
// Records with extension records (more attributes than one record holds)
// are put together by each extension record's base reference (checked
// against the base record's sequence number), found in the same pass; the
// $ATTRIBUTE_LIST, which lists the same records, is read only for the
// $MFT (below). A $DATA stream split across records is joined by its
// fragments' starting VCNs.
// The $MFT itself cannot be mapped that way (its records are what is being
// mapped): an $MFT so fragmented that its runlist spills into extension
// records is followed through record 0's $ATTRIBUTE_LIST, each further
// $DATA fragment read from its extension record through the fragments
// before it, in VCN order; what they do not map is reported and not read.
//
// # Entries
//
//   - ID is the MFT record number (the low 48 bits of the MFT reference,
//     without the sequence number: the record is the inode, and the
//     sequence only tells apart files that used the slot before). Hardlinks
//     share it. A named stream's ID is imagefs.ForkID(record, k), k its
//     place among the record's named streams sorted by name, from 1.
//   - Type: 'd' for a record with the directory flag; 'l' for a reparse
//     point tagged symlink (0xA000000C) or mount point (junction,
//     0xA0000003), whose target is the print name (the substitute name for
//     a relative symlink) with "\??\" dropped and '\' shown as '/', and for
//     an Interix symlink as ntfs-3g writes by default (a system file whose
//     content is "IntxLNK\1" and the target in UTF-16); 'f' otherwise
//     (other reparse points are the files or directories they are).
//   - Size: a file's unnamed $DATA size; a directory's $I30 index
//     allocation size, else its index root's (as ntfs-3g shows them).
//   - Mtime: $STANDARD_INFORMATION's modification time, a FILETIME (100 ns
//     since 1601-01-01 UTC, the Windows epoch).
//   - Nlink: a file's names (as above: the paths it is found by;
//     ntfs-3g's st_nlink, the record's link count, also counts a DOS
//     alias); a directory's 2 + subdirectories.
//   - Runs: a non-resident stream's clusters, sparse runs as holes
//     (imagefs.Run.Hole), up to its initialized size (the bytes past it
//     read as zeros, as NTFS defines them); a resident stream's value
//     inside its MFT record. A directory's one run is its MFT record (by
//     which imagefs.Walk knows it).
//   - Encoded (the runs locate the stored form, only Open gives the
//     content): a compressed stream, whose runs are its runlist as stored
//     — its compressed clusters at the VCNs of their compression units,
//     holes after them; and a resident value that spans the end of a
//     512-byte stride of its record, whose last two bytes on the volume
//     are the update sequence number (Open reads the fixed-up record).
//   - Forks: the non-empty named $DATA streams (alternate data streams),
//     each named by its stream name, read with Open.
//
// The metadata files — records 0–15 ($MFT, $MFTMirr, $LogFile, $Volume,
// $AttrDef, $Bitmap, $Boot, $BadClus, $Secure, $UpCase, $Extend and the
// reserved ones) — are left out of the root's listing, and with $Extend
// everything under it ($ObjId, $Quota, $Reparse, $UsnJrnl, …). A name
// holding '/' or NUL (which Windows never writes) has it shown as U+2215 or
// U+2400, an empty name or "." or ".." becomes "_mft_<record>", an unpaired
// surrogate (NTFS stores any 16-bit units) U+FFFD; each is reported (Kind
// "bad_name"). Names distinct on the medium that show alike so stay
// distinct links: the second in a directory is named
// "<name>_mft_<record>", the second of a file's streams "<name>_<k>"
// (reported, Kind "bad_name").
//
// # Compressed files
//
// A stream with the compressed flag and a compression unit of 2^n clusters
// (16 as Windows and ntfs-3g write them, clusters up to 4 KiB) is read unit
// by unit: a unit whose clusters are all holes is zeros, one whose clusters
// are all stored is stored as it is (incompressible), one whose stored
// clusters are followed by holes is LZNT1 (DecompressLZNT1). Open keeps one
// decoded unit per reader. A unit that does not decode fails with
// imagefs.ErrCorrupt at its first cluster's offset; a stream compressed in
// units NTFS does not write (over 2^8 clusters, or clusters over 4 KiB) is
// reported and fails to read, its stored clusters not being its content.
//
// # Failure model
//
// Nothing is allocated in proportion to a number read from the medium
// beyond the MFT itself (one small record per MFT record, at most the
// volume's size over the record size) and 2^20 runs per stream; a record
// keeps at most 2048 names (1024 links, each with a DOS alias) and 8192
// extension records (what an $ATTRIBUTE_LIST can name), the rest reported
// and left out. ReadDir reads each record once however many of its names
// the directory holds. Damage is
// reported through Options.Report with the volume byte offset of the
// damaged record or attribute, and reading goes on: a damaged attribute
// ends its record's attribute list (those before it are kept); a run past
// the volume is reported (Kind "out_of_volume") and kept, reading it fails
// with imagefs.ErrBeyondEnd; a runlist that covers less than the stream's
// size (NTFS allocates every cluster up to it, holes included; reported),
// or a fragment missing from the middle of a stream, makes reading the
// rest fail with imagefs.ErrCorrupt, never zeros; read errors name the
// MFT record and stream, and are *imagefs.ReadError with the volume offset; a name whose parent is
// not a directory in use with the sequence number the name gives is
// reported (Kind "orphaned"), and directories whose parent references run
// in a cycle (Kind "cycle"): neither is reachable from the root, and the
// walk goes on. MFT records that cannot be read (past the end of a cut
// image) are reported a range at a time (Kind "truncated"), the scan going
// on record by record past them. A lost root record (5) is reported and
// the root still listed, its entries being known by their parent
// references. A boot sector that does not check out, or an $MFT record
// that does not check out in the MFT nor in $MFTMirr, is an error at Open.
//
// ReadDir reads each entry's record (and extension records) again rather
// than keeping every record's attributes from the scan: memory stays one
// small record per MFT record, at the cost of a second read (from the page
// cache, usually) of each record walked. BenchmarkWalkNTFS measures it.
//
// # Not read
//
// Encrypted ($EFS) streams are read as stored (ciphertext). Files that
// Windows 10 compresses with WOF ("compact OS", reparse tag 0x80000017) are
// not decoded: their unnamed stream is what NTFS holds (sparse, usually
// empty) and their compressed content is kept, as stored, as the fork
// WofCompressedData. Security
// descriptors, owners, DOS attributes, object IDs, the $LogFile (an
// unclean volume is read as it lies, not replayed), $UsnJrnl, the volume
// label and deleted records' remains are not read. The Sleuth Kit (fls,
// icat) and ntfs-3g are this reader's references in the tests.
package ntfs
