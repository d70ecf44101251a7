// Package hfs reads classic HFS (Mac OS Standard) volumes — Mac floppies,
// old hard disks and the HFS side of CDs — straight from an image, in user
// space, as an imagefs reader registered for probe's type "hfs". Import it
// (or imagefs/all) and use imagefs.Open, or call Open directly.
//
// # Layout and checks
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
//   - Forks: a file's non-empty resource fork (filRLgLen, its extents in
//     filRExtRec and the extents-overflow records of fork type 0xFF), as
//     an Entry named imagefs.ResourceFork with ID imagefs.ForkID(CNID, 1),
//     read with Open like the data fork (see imagefs/fork.go).
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
// # Not read
//
// An HFS volume that only wraps
// an embedded HFS+ volume (drEmbedSigWord "H+") is not read by this reader:
// Open returns ErrWrappedHFSPlus and probe calls such a volume "hfsplus".
// The volume bitmap, Finder info, file types and creators, backup and
// creation dates are not carried. The Sleuth Kit reads HFS+ only (fls -f
// hfs refuses classic HFS), so hfsutils (hls, hcopy) is this reader's
// reference in the tests.
package hfs
