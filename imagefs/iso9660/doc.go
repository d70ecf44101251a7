// Package iso9660 reads ISO 9660 (ECMA-119) volumes — CD-ROM and DVD images —
// in user space, with Rock Ridge (SUSP/RRIP) and Joliet, as an imagefs reader
// registered for probe's type "iso9660". It works on whatever io.ReaderAt it
// is given: a whole image, or the section of a partition at which probe
// found the volume (a hybrid disc, a disc image copied into a partition).
//
// # Trees and names
//
// A disc may carry up to three views of its files. The reader picks the one
// Linux mounts by default: the primary tree with Rock Ridge when the primary
// root's "." record starts with SUSP's SP entry and its System Use area
// (continuations included) holds an ER (or the RRIP 1.09 RR, or a PX) entry;
// else the Joliet tree when a supplementary descriptor carries a Joliet
// escape sequence (%/@, %/C, %/E); else the primary tree. OpenNaming
// chooses explicitly, as the norock and nojoliet mount options do.
//   - Rock Ridge: the NM name (continued across entries and continuation
//     areas); a record without NM gets its primary name. Attributes from PX
//     (type, link count; the 36-byte RRIP 1.10 entry and the 44-byte RRIP
//     1.12 one with its serial number), TF (mtime is the modify time, in the
//     7-byte or the 17-byte form), SL (symlink targets, with Linux's rules for
//     component flags ROOT, CURRENT, PARENT and CONTINUE). Deep directories
//     relocated by mkisofs (CL, PL, RE) appear at their original place, with
//     the name of the CL record and the attributes of the "." record where
//     they now lie; the RE directory is hidden where it was moved to (the
//     then-empty rr_moved directory is listed, as Linux lists it).
//   - Joliet: UCS-2 (in practice UTF-16, surrogate pairs decoded; unpaired
//     ones become U+FFFD) big-endian to UTF-8; a trailing ";1" and trailing
//     dots are dropped, as Linux's get_joliet_filename does.
//   - Primary: Linux's map=normal — ASCII letters lowercased, a trailing
//     ";1" or ".;1" dropped, other ';' and '/' turned into '.', a NUL ends
//     the name.
//
// A name holding '/' or NUL gets '_' instead; a name that is empty, "." or
// ".." (after falling back to the primary name) becomes "_record_<offset>";
// both are reported. Associated files (flag 0x04) are left out, as Linux
// leaves them out; hidden files (flag 0x01) are listed.
//
// # Entries
//
// ID: a directory's ID is the volume byte offset where its records start
// (its extent, past any extended attribute record), which is where its "."
// record lies — so a directory relocated by Rock Ridge has the same ID from
// its CL record as from rr_moved (without an extended attribute record it is
// Linux's inode number times 32). Any other entry's ID is the volume byte offset of its
// directory record (the first record of a multi-extent file). Hardlinks
// share an ID: a regular file whose PX counts more than one link belongs to
// a group named by its RRIP 1.12 serial number (ID 1<<63 | serial) or,
// without a serial (RRIP 1.10, as genisoimage writes), by its first extent
// (ID 1<<62 | byte offset; mkisofs and xorriso write a hardlinked inode's
// content once). A file claiming a group already seen with other content
// (other extent or size — damage) keeps its record ID and is reported, so
// that one ID never stands for two contents. Empty hardlinks without a
// serial cannot be told from unrelated empty files and keep their record
// IDs. IDs depend only on the bytes of the volume.
//
// Nlink is PX's link count when Rock Ridge is in use, else 1 (for
// directories too, as Linux says). Mtime is TF's modify time, else the
// record's recording date with its GMT offset. Size is the data length (for a
// multi-extent file the sum of its extents; for a symlink the target's
// length). Runs are the extents in record order (past the extended attribute
// record), one run per file unit for an interleaved file; a directory's run
// is its extent.
//
// # Failure model
//
// Every offset, length and count read from the volume is checked against
// the volume's size before use; nothing is allocated in proportion to a
// number read from the medium beyond fixed bounds: 64 volume descriptors, 64
// MiB of records per directory, 16 System Use continuation areas per record
// (each inside one logical block, as Linux requires) and 4 MiB of them per
// directory, 64 KiB of System Use data per record, 1 KiB names, 4 KiB
// symlink targets, 65536 runs per file and 2^20 per directory. Damage is
// reported through Options.Report with the volume byte offset of the
// damaged structure, and reading goes on: a record shorter than 34 bytes or
// running past its 2048-byte sector loses the rest of that sector; one
// running past its directory's extent ends the directory; a directory whose
// extent runs past the volume is read as far as the volume goes; a file
// whose extents run past the volume keeps its runs, and reading it fails
// with imagefs.ErrBeyondEnd at the first missing byte, never with zeros; a
// CE chain that loops, leaves the volume or exceeds its bounds is cut; a
// multi-extent file without its final record keeps the parts found. A
// directory holding an ancestor is caught by imagefs.Walk (a directory is
// known by its first run). Open fails only when there is no primary volume
// descriptor (ErrNotISO9660) or no usable root directory record.
//
// The path tables are never read: directories are found from the root's
// records alone, as Linux finds them, so a damaged path table changes
// nothing.
//
// # Not supported
//
// zisofs-compressed files (Rock Ridge ZF) and files stored in more runs than
// the bounds allow are listed, but opening them fails with ErrUnsupported.
// Rock Ridge device numbers (PN), owners and permission bits are not
// carried (the seam has no place for them); devices, fifos and sockets are
// listed with their type and size 0. High Sierra, the Enhanced Volume
// Descriptor (ISO 9660:1999) tree, multi-session discs (only the volume at
// the start of the given reader is read; an appended session's descriptors
// are found only if the reader starts there) and UDF are not read.
package iso9660
