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
//     it forever (EXCLUDED wins over NON_FILE). Files are pending.
//   - A path found twice in the input is stored once (its first record) and
//     counted in Stats.DuplicatePaths; it never fails the load.
//   - The medium row is upserted (enum_root, enum_done, image_path when
//     given) in the same commit, and both partitions are ANALYZEd.
//
// # How (the fast path)
//
// The whole raw file is read, checked and sorted before the transaction
// starts: path rows by path, inode rows by (dev, ino), in runs of bounded
// size spilled to an anonymous spool file and merged (at most about 150
// MiB of memory whatever the record count; a floppy's load takes a few
// hundred kilobytes). Inodes are deduplicated as records
// stream by — only hardlinked inodes whose other links are still to come
// are held — and repeated paths meet in the merge, where all but the first
// are dropped and counted. Then, in one transaction, two binary COPYs fill
// new, index-free tables; because the rows arrive in key order, building
// the primary keys is a single pass; the path→inode foreign key is checked
// with a merge join over the two indexes; both tables are ANALYZEd and
// attached as the medium's partitions under the names, constraints and
// indexes schema.CreatePartitions gives (a check constraint lets ATTACH
// skip its scan).
//
// A medium of at most 10,000 records that has no partitions yet (a floppy,
// a Zip disk) is loaded directly: its tables get their final names from
// the start and are attached right after the COPY, which builds their
// primary keys as CREATE TABLE … PARTITION OF would. That spares the
// stand-in parents of the keys, the detach and the renames, a quarter of a
// floppy's catalog work. The parents' SHARE UPDATE EXCLUSIVE lock is then
// held from the dedupe phase (whose time includes a wait for it) to the
// commit, milliseconds for such a medium.
//
// # Modes
//
// A medium that already has rows is refused (HasRowsError, with the row
// counts) unless the mode says otherwise. Replace swaps the old partitions
// for the new ones in the same commit: readers see the old rows until
// then (dropping a partition locks its parent exclusively for the last
// moments before the commit). Append adds only the paths not yet
// catalogued, matched by path (dev changes with every mount), with their
// inodes, and leaves every existing row and its copy state untouched; an
// append that adds nothing changes nothing (enum_done included).
//
// An archived medium (copy_done or archive_path set) never gets files to
// copy again by accident: a load that would write rows into it is refused
// (ArchivedError) unless Options.StartOver, which clears copy_done and
// archive_path in the load's transaction. The archive state is read before
// the raw file and again, under the medium row's lock, just before the
// row is written.
//
// # Failure model
//
// All or nothing: everything is written in one transaction, so a malformed
// record (RecordError, naming its index and byte offset, found before the
// transaction even starts), a timeout, a lock timeout, a lost connection or
// a killed process leaves the database as it was. Every statement runs
// under a statement timeout (default 5 min) and every lock wait under a lock
// timeout (default 30 s); LockTimeoutError says which table was to be
// locked, why, and which sessions held it. Existing
// partitions that are not attached to their parents, or that belong to
// another medium with the same 32-character prefix, stop the load before
// anything is written. Loads of one medium are serialized; loads of
// different media run concurrently and only queue briefly to attach.
//
// The package never prints: phase timings (including the runbook's
// "Deduplication completed in Xs") go to Options.Logger, progress to
// Options.Progress.
package loader
