// Package testimg builds real ext2/ext3/ext4 disk images for NTT's tests
// (and FAT, ISO 9660 and HFS ones with their own tools, HFS+ ones with its
// own writer) from a Go description of a tree, damages them the ways rescued
// media are damaged, and attaches and mounts them read-only for the
// duration of a test.
//
// # Building
//
// A Spec lists Entries (files with given bytes or seeded content, sparse
// and empty files, directories, symlinks, hardlinks, fifos, sockets and
// device nodes) whose names may hold any byte but NUL and '/', with modes,
// owners and mtimes from 1901 to 2446 with nanoseconds. BuildImage stages the
// tree in a temporary directory with *at system calls (so trees deeper than
// PATH_MAX work), runs mke2fs -d on it, finds which inode each entry got by a
// tag it left in the staged atime (read back from the inode table, never by
// name), and sets every inode's mode, owner and times with debugfs by inode
// number. So the image holds exactly what the spec says, whatever the umask,
// the clock or mke2fs's 32-bit time handling, and the same Spec gives the
// same bytes (fixed UUID, hash seed and E2FSPROGS_FAKE_TIME). Check compares
// a mounted tree with a Spec byte for byte.
//
// # HFS+
//
// HFS+ has no mkfs on this system, so WriteHFSPlus (HFSPlus in tests,
// BuildHFSPlusBytes in memory) writes HFS+ and HFSX volumes itself after
// Apple's TN1150: volume header and its copy, allocation bitmap, the
// catalog (folder, file and thread records, index levels, keys ordered by
// parent ID and FastUnicodeCompare, or binary for HFSX), extents-overflow
// and attributes B-trees. An HFSPlusSpec holds files with data and resource
// forks, folders, symlinks, hardlinks (link files and indirect node files
// in the private folder), fragmented files whose extents overflow the
// catalog record, decmpfs-compressed files (types 3 and 4), and can be
// journaled or wrapped in a classic HFS volume, with 512..64K blocks and
// 512..32K nodes. Input the format cannot hold is an error, never a loop.
// HFSPlusSample is the tree readers test against; the HFSPlusLayout that
// writing returns is what a reader must find (CNIDs, bytes, forks, modes,
// dates) and where the metadata lies. The Sleuth Kit (fsstat, fls,
// tsk_recover, icat, istat) reads every variant back in this package's
// tests.
//
// # Damage and disks
//
// Truncate cuts an image short; Zero and WriteAt overwrite bytes in place
// (unrescued areas, garbage); MarkJournalDirty leaves a committed but
// unreplayed transaction in an ext3/ext4 journal; WriteMBR and WriteGPT write
// partition tables whose entries point wherever the test says (also past the
// end of the file); Place copies a filesystem image into a bigger disk at a
// byte offset (16384 on Zip disks); ComposeDisk lays out several partition
// images behind an MBR (primary and logical) or GPT table.
//
// # Loop devices and mounts
//
// AttachLoop, Mount and MountImage attach read-only loop devices (with
// offset and size limit, because this kernel has no partition-table
// parsers) and mount read-only, and undo both in t.Cleanup, also when the
// test fails. Loop devices are set up with the loop ioctls and autoclear, so
// a test binary that dies leaks no device that is not mounted.
//
// # Tools
//
// Building shells out to mke2fs (mkfs.ext4 -d) and debugfs from e2fsprogs,
// and the dirty-journal helper to debugfs. Writing an ext4 filesystem from
// scratch in Go would be a second, untested implementation of the thing
// under test; the reference tools are what archivists' own images come
// from, and this is test-harness code, not the library. Loop devices and
// mounts use system calls (golang.org/x/sys/unix), not losetup or mount.
//
// # Failure model
//
// Plain functions (BuildImage, the damage and table writers) return errors
// naming the image and entry, for use by benchmark and demo generators;
// the functions taking a testing.TB fail the test instead. Building needs
// root only for device nodes; loops and mounts need root (RequireRoot).
package testimg
