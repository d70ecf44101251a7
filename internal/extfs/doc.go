// Package extfs reads an ext2/3/4 filesystem's metadata and file maps
// straight from its block device or image, in user space, over an
// io.ReaderAt of the device and its size: the layout of its inode tables
// (ReadLayout, for enumerate's read-ahead), its whole directory tree with
// what lstat shows of every inode (Scan, for enumerate's direct walk), and
// its regular files' names and byte runs (ScanFiles, OpenMount, for the
// copier). It is shared by enumerate and copier and is not API.
//
// The invariants:
//
//   - Every count, length and offset read from the device is bounded and
//     checked against the device's size (and Scan's own bounds on inodes
//     and directory bytes) before use: no input makes it read past the
//     device, loop, or allocate without bound; a malformed structure is an
//     error, never a panic.
//   - It reads the filesystem as the kernel does, or not at all: an inode
//     is refused where ext4_iget would refuse it (checksum, extra size,
//     block references, flags), a directory entry where
//     ext4_check_dir_entry would, an htree entry outside the leaf its hash
//     leads to; a feature it does not know or follow refuses the whole
//     filesystem.
//   - Scan and ScanFiles are all or nothing: nothing is returned unless the
//     whole scan's checks pass (a directory reached twice included), so a
//     caller either has the tree as the kernel would show it or falls back
//     to the kernel (enumerate's system calls, the copier's mount), which
//     then reports the damage entry by entry. Files.FileRuns reads and
//     checks a file's inode again, and refuses what it does not map
//     exactly.
//   - A mounted filesystem's device is read only when the filesystem is
//     mounted read-only at its superblock (not only at this mount), at its
//     root, with nothing mounted beneath it (RootDevice, OpenMount): then
//     nothing can change on the device or wait in the page cache, and the
//     device holds what the mount shows. The device is opened read only.
//
// Layout and hints: layout.go (superblock, group descriptors, directory
// blocks to read ahead); the scan: scan.go, with the htree's name hashes in
// hash.go; files: files.go; the device of a mount: mount.go.
package extfs
