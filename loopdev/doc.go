// Package loopdev mounts a medium's disk image read-only and takes it down
// again: loop devices, partition probing, mounts, status, and reaping of
// stale loop devices. It is the library behind ntt-mount-helper.
//
// # What it does
//
// Mount probes the image (package probe: partition tables and filesystem
// signatures, pure Go), attaches one read-only loop device per mountable
// filesystem with the partition's offset and size limit (the kernel's
// partition scanning is never relied on), and mounts each under
// <root>/<hash> — at the base path when there is one mountable filesystem,
// at <root>/<hash>/pN when there are several. Swap, extended containers,
// RAID and LVM members (LVM metadata is recorded), areas with no
// filesystem, and partitions whose extent runs past the end of the image
// ("truncated", decided from the table and the file size) are skipped with
// a reason in the Layout. Layout.Findings turns what an archivist must be
// told (partitions left out of the catalog, journals not replayed) into
// medium.problems flags with each partition's extent and the image size;
// loopdev has no catalog, so the first program that has one records them. Discs whose whole disk is ISO9660/UDF are
// mounted whole (the entries of an Apple or MBR table in their system area
// are skipped as whole_disk);
// a hybrid disc that also carries an HFS or HFS+ volume over the same
// sectors (an Apple_HFS map entry, or an HFS volume header at byte 1024)
// is two views of one medium, mounted as p1 (the ISO side) and p2 (the
// HFS side) — see Plan. If nothing mounts at offset 0 a filesystem at byte
// 16384 (Zip disks) is tried. Archives (tar, gzip, bzip2, xz, zstd, zip) and
// erased images are refused with ErrNotADisk and ErrErased.
//
// Every mount is ro,nosuid,nodev,noexec,noatime, plus noload for ext4 and
// norecovery for ext3 (and xfs; btrfs gets rescue=nologreplay), so a dirty
// journal is never replayed onto evidence and never blocks the mount.
// ISO9660 and UDF are each tried after the other fails.
//
// # Invariants
//
//   - One medium, one mount: Mount and Unmount hold a per-medium lock, both
//     in-process and with flock(2) on <root>/.<hash>.lock, so concurrent
//     callers in any process serialize; a later caller finds the medium
//     mounted and gets the existing Layout (AlreadyMounted).
//   - Nothing leaks: on any failure Mount unmounts what it mounted, detaches
//     every loop device it attached (through its own open fds, so a device
//     number can never be freed and reused by someone else in between) and
//     removes every directory it made. Loops are attached with autoclear,
//     so unmounting also frees them; Unmount detaches every loop backed by
//     the image anyway, including orphans of earlier failed attempts.
//   - Stale loops (backing file deleted, or deleted and recreated under
//     the same name) of the image, and every other deleted-backing loop of
//     NTT's, are reaped before Mount attaches, with the log line "Cleaning
//     up stale loop device: /dev/loopN (deleted inode)"; Reap does the same
//     through the same function. Only NTT's loops are touched: backed by a
//     file named <hash>.img or kept in an images directory, or mounted
//     beneath the mount root; any other deleted-backing loop belongs to
//     someone else and is left alone, with a log line saying so.
//   - What Mount mounted is recorded in <root>/.<hash>.layout.json (the
//     Layout: image, each partition's loop device and offset), written to
//     a temporary name and renamed, and removed by Unmount. The copier
//     trusts a mount at <root>/<hash>/pN as the medium's partition only if
//     this record names it and its loop still reads the image there.
//   - An image is removed only after Release: the medium unmounted, its
//     loops detached, and no loop left reading the image (ErrImageInUse
//     names the device and where it is mounted).
//   - Loop state is read from sysfs (/sys/block/loopN/loop/{backing_file,
//     offset,sizelimit,autoclear}) and LOOP_GET_STATUS64 (lo_device and
//     lo_inode against a stat of the path reveal a replaced file), mounts
//     from /proc/self/mountinfo: never by parsing a tool's output.
//
// # Failure model
//
// Errors are wrapped and name the medium, image, device or mount point;
// sentinels (ErrNotADisk, ErrErased, ErrNothingMounted, ErrMountTimeout,
// ErrNotMounted, ErrMountPointBusy, ErrNoFreeLoop) and the types
// *MountError and *LoopError work with errors.Is and errors.As. A failing
// partition does not fail the medium: it is reported in the Layout with
// status "failed" while the others mount; Mount fails when nothing mounts.
// Each mount(2) has a timeout (default 10 s): a mount stuck in the kernel
// (D state on a damaged device) cannot be cancelled, so it runs in a
// goroutine and Mount returns ErrMountTimeout and cleans up; that goroutine
// may linger until the kernel returns, and unmounts the filesystem itself
// if the mount then succeeds. The library never prints; events go to the
// *slog.Logger in the options (nil is silent).
//
// # go-losetup and x/sys/unix
//
// github.com/freddierice/go-losetup is not used; everything is
// golang.org/x/sys/unix. What it offers is either racy or missing: its
// Attach does GET_FREE then SET_FD with no retry when another process
// takes the device first (EBUSY), and its GetFree ignores the ioctl's
// error (it tests an unsigned value for < 0); it has no LOOP_CONFIGURE, no
// size limit and no autoclear (its status struct has the fields, but Attach
// sets only the offset); and its errors are flattened with %v, so EBUSY, ENXIO or EPERM cannot
// be told apart with errors.Is. The parts it does correctly (the
// LOOP_GET_STATUS64 struct layout, LOOP_CLR_FD) are one x/sys call each
// (IoctlLoopGetStatus64, IoctlSetInt), which return errno values we can
// test.
//
// # One layout
//
// Plan is the one function that decides a medium's layout from its probe:
// which volumes are read (whole disk or partitions), which partitions are
// skipped and why, single or multi. Mount, Status and the image reader
// (imagefs.OpenMedium) all take it from Plan, so a medium read from its
// image has the same partitions, numbers and paths as when it is mounted;
// ZipVolume is the fallback both try at byte 16384.
//
// The root-only part is thin: attach, mount, unmount, detach. Probing,
// layout planning and mountinfo parsing take bytes or an io.Reader and are
// tested without root.
package loopdev
