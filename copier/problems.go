package copier

import (
	"context"

	"github.com/HRDAG/ntt/internal/schema"
)

// CleanRunResolves are the medium.problems flags that a clean, complete
// run marks resolved (schema.ResolveProblems: kept, with resolved_at). A
// run is clean and complete when it leaves no file of the medium pending or
// claimed, none of its attempts failed, and no file of the medium is failed
// (failed_retryable or failed_permanent, DIAGNOSTIC_SKIP included): every
// file has been read through the mount, so a mount that went away
// (stale_mount), a source lost mid-run (source_lost), a stall
// (copy_stalled), a run with many failures (high_error_rate), data past the
// end of the image (beyond_eof_detected), kernel-confirmed I/O errors
// (io_errors_confirmed) and corrupt structures an image reader found
// (corrupt_structure_confirmed) are no longer the medium's state. A medium with a
// file still failed keeps them all current. Flags about the image itself
// (unrescued_bytes) are the pre-flight's to judge, not the copier's.
var CleanRunResolves = []string{
	"beyond_eof_detected", "copy_stalled", "corrupt_structure_confirmed", "high_error_rate", "io_errors_confirmed", "source_lost", "stale_mount",
}

// resolveProblems marks CleanRunResolves resolved unless a file of the
// medium is failed; the caller has checked that the run completed the
// medium without a failed attempt, and whether a file is failed
// (leftAndFailed). A failure to mark them is logged, not fatal: the files
// are copied either way.
func (r *run) resolveProblems(ctx context.Context, failed bool) {
	if failed {
		return
	}
	got, err := schema.ResolveProblems(ctx, r.db, r.h, CleanRunResolves...)
	if err != nil {
		r.log.Warn("could not mark resolved problems", "medium", r.h, "err", err.Error())
		return
	}
	if len(got) > 0 {
		r.log.Info("problems resolved", "medium", r.h, "flags", got)
	}
}
