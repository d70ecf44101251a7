// Package diagnose decides what to do when a file of a medium cannot be
// copied, and says how damaged a medium and its files are.
//
// It provides:
//   - Classify: an error's class (io, beyond_eof, corrupt, missing,
//     permission, path_too_long, stale_mount, transient, unknown) from errno
//     values and error types (ErrBeyondEOF, ErrCorrupt, ErrStaleMount),
//     never from message text; each class maps to the schema's error_type
//     and to retryable or permanent. corrupt (a structure the file's data
//     depends on does not check out, as an image reader proves it) is an
//     io_error, permanent, skipped at the checkpoint without other evidence.
//   - Tracker: failures counted per (medium, dev, ino). At the checkpoint
//     (failure 10, or 5 on a degraded medium) it runs the checks its Env
//     allows — kernel log, mount health, the file's extent map — and skips
//     the inode when its data lies beyond the end of the image or the
//     kernel confirms an I/O error on this medium's own loop devices; at
//     the cap (50, or 5 degraded) it gives up, as failed_retryable or
//     failed_permanent by class. Decisions carry the log lines, the checks
//     and what a diagnostic_event row needs.
//   - KernelLog: /dev/kmsg followed from a remembered position, messages
//     attributed to block devices by name, so one medium is never blamed for
//     another's errors.
//   - Mapfile: GNU ddrescue mapfiles, rescued bytes, bad ranges and Health.
//   - InspectFile: a file's extents (FIEMAP, else FIBMAP), shifted by its
//     loop device's offset into image offsets, intersected with the bad
//     ranges and the image's end.
//   - CheckMount: is a mount point still a readable mount of its device.
//   - Recording: diagnostic_event rows, medium.problems flags, inode errors
//     capped at the last 10 plus a count, medium.health.
//
// Invariants: the checkpoint runs at most once per inode and exactly one
// caller receives an inode's final decision (Skip or GiveUp), however many
// workers report failures concurrently; a medium without a mapfile has
// health unknown, never failed; a mapfile's health is recomputed from its
// blocks every time, with exact integer thresholds.
//
// Failure model: checks that touch a filesystem (reading the mount's root,
// FIEMAP) can block forever on a failing image, so they run apart from the
// caller and are abandoned after the policy's timeout; a check that fails
// is recorded as failed and decides nothing. Parsers (mapfile, kernel log,
// mountinfo) take an io.Reader and report the line they could not read.
// The package never prints; Decision.Log writes to a *slog.Logger the
// caller gives.
package diagnose
