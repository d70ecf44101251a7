// Package hfs reads classic HFS (Mac OS Standard) volumes — Mac floppies,
// old hard disks and the HFS side of CDs — and HFS+ (Mac OS Extended) and
// HFSX volumes, bare or embedded in an HFS wrapper, straight from an image,
// in user space, as imagefs readers registered for probe's types "hfs"
// (Open, Volume) and "hfsplus" (OpenPlus, PlusVolume). Import it (or
// imagefs/all) and use imagefs.Open, or call Open or OpenPlus directly.
// Both share the B-tree code (the node format is one; HFS nodes are 512
// bytes, HFS+ ones up to 32 KiB, and keys differ) and the catalog's
// records, checks and rescue; the first sections say it of HFS, the
// section HFS+ what differs.
//
// # Layout and checks (HFS)
//
// Open reads the master directory block at byte 1024 (signature "BD") and
// checks every field it uses before use: allocation blocks (drNmAlBlks > 0),
// their size (drAlBlkSiz, a positive multiple of 512), where block 0 lies
// (drAlBlSt, after the master directory block and inside the volume), and
// the sizes of the extents-overflow and catalog files (whole 512-byte
// nodes, inside the allocation area). A field that does not check out is a
// *FormatError naming its byte offset, wrapping ErrNotHFS and
// imagefs.ErrCorrupt. An image shorter than the allocation area is reported
// (Kind "truncated") and read as far as it goes.
//
// Both B-trees are read once, at Open, through their extents (the catalog's
// continued by its extents-overflow records). Of each tree the header node
// (node 0) is read for the first leaf node, then the leaf chain is followed
// by the nodes' forward links (ndFLink): the leaves hold every record in key
// order, so the index nodes are not needed for a full walk and are never
// read — a damaged index node changes nothing. Each node is checked: its
// kind (leaf, or header for node 0), a leaf's height (1), a record count
// whose offset table fits, and record offsets starting at 14, strictly
// increasing and ending before the offset table. The chain is followed with
// a visited set and at most as many steps as the file has nodes.
//
// # Records and entries
//
// Catalog leaf records are directories (type 1), files (2) and threads (3,
// 4). Threads name a CNID's parent and name; a walk from the root does not
// need them: directory threads are kept only to rescue a directory whose
// own record is lost (see Failure model), file threads are skipped. A
// directory's entries are the records
// whose key names it as parent, in catalog (key) order.
//   - ID is the CNID (the root directory's is RootID, 2): unique and
//     stable. Two records with one CNID are damage: the second is reported
//     (Kind "cross_linked") and left out, so that no ID stands for two
//     contents and no directory can be entered twice or hold an ancestor.
//   - Type is 'f' or 'd' (HFS has no other kinds; aliases are files).
//   - Size is a file's data fork logical EOF (filLgLen); for a directory
//     its valence + 2, as Linux shows it.
//   - Mtime is the modify date (filMdDat, dirMdDat): seconds since
//     1904-01-01. HFS stores the local time of the Mac that wrote it, without
//     a zone; it is taken as UTC.
//   - Nlink is 1 for a file, 2 + its subdirectories for a directory.
//   - Runs: a file's are its data fork's extents — the three in its catalog
//     record, then the extents-overflow records keyed by (fork type 0x00,
//     CNID, the file allocation block where the previous extents end) —
//     each at byte drAlBlSt*512 + block*drAlBlkSiz, trimmed to the size.
//     HFS stores no directory content (the catalog holds it): a directory's
//     one run is its own catalog record, which is where the volume keeps
//     what the directory is, and by which imagefs.Walk knows it (without a
//     run Walk would know it by ID>>1, which folds consecutive CNIDs
//     together).
//
// # Names
//
// Names are MacRoman (at most 31 bytes), decoded to UTF-8 with Apple's
// mapping (0xDB is the euro sign, 0xF0 the Apple logo U+F8FF). HFS
// separates paths with ':', so a Mac name may hold '/': it is shown as ':',
// as Linux's hfs driver shows it (fs/hfs/trans.c); hls shows it so too. A
// NUL becomes U+2400 SYMBOL FOR NULL; a name that is empty, "." or ".." is
// replaced by "_cnid_<CNID>"; both are reported (Kind "bad_name"). The
// volume name is Info().Label; the root has no name.
//
// # Failure model
//
// Nothing is allocated in proportion to a number read from the medium
// beyond the B-tree files themselves (at most the volume) and 65536 runs per
// fork. Damage is reported through Options.Report with the volume byte
// offset of the damaged node or record, and reading goes on: a leaf node
// that does not check out, or a leaf chain that comes back to a node
// already read (Kind "loop"), ends that tree's chain — the records read
// before it are kept — and the leaves the chain did not reach are
// read from the nodes the header node's map record marks in use, in node
// order (Kind "rescued"; a node the map marks free may hold a stale leaf of
// deleted records and is never read; the nodes past the header's map — trees
// over 2048 nodes — are not looked at). A directory whose own record was
// lost but whose entries were read is listed from its thread record, under
// the parent and name the thread gives, with the Mac epoch as its mtime
// (Kind "rescued"); without a thread its entries are reported as orphaned.
// A directory that has its record but cannot be reached from the root (its
// key names itself or a descendant as its parent) is reported (Kind
// "cycle") and its entries are not listed.
// A record whose key or data does not check out is left out. An extent past the allocation area is reported (Kind
// "out_of_volume") and kept, and reading it fails with
// imagefs.ErrBeyondEnd; a data fork whose extents cover less than its size
// is listed with its size, and reading its missing tail fails with
// imagefs.ErrCorrupt, never zeros. A catalog whose header node does not
// check out is an error at Open wrapping imagefs.ErrCorrupt (there is
// nothing to read); a damaged
// extents-overflow header is reported and only the catalog records' own
// extents are used.
//
// # Resource forks
//
// A file's non-empty resource fork (HFS: filRLgLen and filRExtRec, HFS+:
// the resourceFork fork data, continued in both by extents-overflow
// records of fork type 0xFF) is in its Entry.Forks: one Entry of type 'f'
// named "rsrc" (imagefs.ResourceFork) with ID imagefs.ForkID(CNID, 1), its
// size, the file's mtime and its runs, read with Open like the file; the
// walk visits it at <file>/..namedfork/rsrc (see imagefs/fork.go). An
// empty resource fork is not listed. Damage to a resource fork's extents
// is reported and read as a data fork's is.
//
// # HFS+ and HFSX
//
// OpenPlus reads the volume header at byte 1024 (signature "H+" or "HX",
// version 4 or 5, blockSize a power of two from 512, totalBlocks > 0; a
// field that does not check out is a *FormatError wrapping ErrNotHFSPlus).
// An HFS master directory block there whose drEmbedSigWord is "H+" is a
// wrapper: the HFS+ volume lies in its drEmbedExtent (in the wrapper's
// allocation blocks), and is read there; every offset, run and Problem is
// still a byte offset of the volume OpenPlus was given (Info().Offset is
// where the embedded volume starts). HFS+ allocation blocks count from the
// volume's first byte. Each special file is read through the eight extents
// of its fork data, the catalog's and the attributes file's continued by
// their extents-overflow records; each B-tree is read as an HFS one is
// (header node, leaf chain, checks, rescue from the node map), with the
// node size its header gives.
//   - Names are UTF-16 (at most 255 units), decoded to UTF-8 as stored:
//     in Apple's decomposed form (NFD), not normalised. A '/' in a name is
//     shown as ':', as Linux's hfsplus driver shows it (macOS stores a ':'
//     typed in Terminal as '/'); a NUL becomes U+2400 and an unpaired
//     surrogate U+FFFD (reported, Kind "bad_name"). HFSX with binary key
//     comparison (Info().CaseSensitive) may hold names that differ only
//     in case; as the leaves are walked in stored order, no key is ever
//     compared and both kinds are read alike.
//   - ID is the CNID. Type is 'd' for a folder record; for a file record
//     the type its BSD fileMode gives ('l', 'p', 'c', 'b', 's'), else 'f'
//     (a file of classic Mac OS has no mode). A symlink (mode S_IFLNK, or
//     type 'slnk' creator 'rhap') has its data fork (at most 4096 bytes)
//     as its Target; one that cannot be read is reported and listed as a
//     file. Devices, FIFOs and sockets have no content.
//   - Mtime is contentModDate: HFS+ dates are UTC (seconds since
//     1904-01-01), unlike HFS's.
//   - Size, Nlink, directory runs as for HFS; a directory's Size and
//     Nlink leave out the hidden directories below.
//   - Hardlinks: a link file (type 'hlnk', creator 'hfs+') names its
//     indirect node file iNode<n> (n in its BSD special field) in the
//     private directory "\x00\x00\x00\x00HFS+ Private Data" of the root.
//     Every name of a hardlinked file is listed with the indirect node's
//     CNID, size, mtime, runs and forks, and Nlink is the number of link
//     files found naming it. A link whose node is missing is reported and
//     listed as the empty file it is. (The Sleuth Kit also wants a link's
//     creation date to be the private directory's, as macOS writes it;
//     this reader does not check it.)
//   - Directory hardlinks (Mac OS X 10.5, Time Machine): an alias file of
//     type 'fdrp', creator 'MACS' whose BSD special field n names the
//     directory dir_<n> in ".HFS+ Private Directory Data\r" is listed as
//     that directory — its CNID, its record as its run — under every
//     name. imagefs.Walk enters a directory once: at its first name; the
//     later names are listed and reported (Kind "cross_linked") but not
//     entered, so what lies below is catalogued once, below the first.
//     Such an alias whose directory is missing (or a Finder alias) is the
//     file it is.
//   - Not presented: the private directories "\x00\x00\x00\x00HFS+ Private
//     Data" and ".HFS+ Private Directory Data\r" and the journal's files
//     ".journal" and ".journal_info_block", in the root. The journal is not
//     replayed: a volume not unmounted cleanly is read as its B-trees are.
//   - A fork whose logical size is larger than the volume is reported and
//     read as the volume's size. A fork whose extents cover less than its
//     size (a sparse tail: HFS+ has no holes) is listed with its size and
//     reading past its extents fails with imagefs.ErrCorrupt, never zeros.
//   - Compressed files (decmpfs): a file with a com.apple.decmpfs
//     attribute (in the attributes B-tree, an inline record) and either
//     UF_COMPRESSED in its BSD flags or an empty data fork is presented
//     with its uncompressed size and content: type 3 (zlib, or stored raw
//     after a 0x?F byte, inline after the attribute's 16-byte header) and
//     type 4 (zlib blocks of 64 KiB in the resource fork, after the
//     resource header and a block table) are decoded by Open. Such an
//     Entry is Encoded (imagefs.Entry.Encoded): its Runs locate the
//     compressed form (the attribute's bytes, or the resource fork's
//     runs), not the content; a type 4 file's resource fork is its
//     content and is not listed as a fork. Other types (LZVN 7/8, LZFSE
//     11/12) and an attribute stored in a fork fail when read, with
//     ErrCompression inside an *imagefs.ReadError; a block that does not
//     decode to its size fails with imagefs.ErrCorrupt. A header that does
//     not check out is reported and the file's data fork read as it is.
//     Memory stays bounded: a type 3 content is at most what zlib makes of
//     one attribute record, a type 4 block table at most the resource
//     fork, one decoded 64 KiB block is held at a time. Other attributes
//     (extended attributes, ACLs) are not read.
//
// # Not read
//
// Open (HFS) does not read an HFS volume that only wraps an embedded HFS+
// volume (drEmbedSigWord "H+"): it returns ErrWrappedHFSPlus, and probe
// calls such a volume "hfsplus", which OpenPlus reads.
// The volume bitmap, Finder info, file types and creators (but for links),
// owners and modes, backup and creation dates are not carried. The Sleuth
// Kit reads HFS+ only (fls -f hfs refuses classic HFS), so hfsutils (hls,
// hcopy) is the HFS reader's reference in the tests and TSK (fls, icat) the HFS+
// reader's.
package hfs
