// Package loader puts a medium's raw enumeration (see package enumerate)
// into the catalog: one row per inode in inode_p_<h>, one row per path in
// path_p_<h>, and the medium row, all in a single transaction.
//
// # What is written
//
//   - Paths are stored relative to the walk root with a leading "/" ("/" is
//     the root itself), as bytea, byte for byte: names holding 0x1C,
//     newlines, backslashes or invalid UTF-8 come back unchanged.
//   - One inode row per (dev, ino): hardlinks give one inode and many
//     paths; the same inode number on two devices (two partitions of one
//     disk) gives two inodes.
//   - Non-files (d, l, b, c, p, s) are done at load: copied, claimed_by
//     NON_FILE, status success. Paths matching an ignore pattern get
//     exclude_reason 'pattern_match'; an inode whose every path is excluded
//     is copied, claimed_by EXCLUDED, status success, so no worker can claim
//     it forever. Files are pending.
//   - A path found twice in the input is stored once (its first record) and
//     counted in Stats.DuplicatePaths; it never fails the load.
//   - The medium row is upserted (enum_root, enum_done, image_path when
//     given) in the same commit, and both partitions are ANALYZEd.
//
// # How (the fast path)
//
// Records stream through a binary COPY into a new, index-free table while
// the inode rows, deduplicated in memory (only hardlinked inodes whose links
// are still to come are kept), go to an anonymous spool file and a second
// COPY. Then the primary keys, the path→inode foreign key and its index are
// built once over the whole data, and the tables are attached as the
// medium's partitions under the names, constraints and indexes that
// schema.CreatePartitions gives (a check constraint lets ATTACH skip its
// scan). Memory stays bounded whatever the record count.
//
// # Modes
//
// A medium that already has rows is refused (HasRowsError, with the row
// counts) unless the mode says otherwise: Replace swaps the old partitions
// for the new ones in the same commit (readers see the old rows until
// then); Append adds only the paths not yet catalogued, matched by path
// (dev changes with every mount), with their inodes, and leaves every
// existing row and its copy state untouched.
//
// # Failure model
//
// All or nothing: everything happens in one transaction, so a malformed
// record (RecordError, naming its index and byte offset), a timeout, a lock
// timeout, a lost connection or a killed process leaves the database as it
// was. Every statement runs under a statement timeout (default 5 min) and
// every lock wait under a lock timeout (default 30 s); LockTimeoutError says
// which table was to be locked, why, and which sessions held it. Existing
// partitions that are not attached to their parents, or that belong to
// another medium with the same 32-character prefix, stop the load before
// anything is written. Loads of one medium are serialized; loads of
// different media run concurrently and only queue briefly to attach.
//
// The package never prints: phase timings (including the runbook's
// "Deduplication completed in Xs") go to Options.Logger, progress to
// Options.Progress.
package loader
