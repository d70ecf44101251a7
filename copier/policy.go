package copier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Failure is one failed attempt to copy an inode, as the copier reports it
// to its Policy.
type Failure struct {
	Medium   string // the medium hash
	Dev, Ino int64  // the catalog's key (Dev is st_dev at enumeration)
	Size     int64
	// Path is the catalogued path that was tried (raw bytes).
	Path []byte
	// File is the absolute path of the opened file under its mount, set
	// only when the open succeeded and the failure came later (a read):
	// checks may look at the file there (its extents). Mount is the mount
	// point the path lies in; FileDev is the opened file's live st_dev
	// (0 when it was not opened).
	File    string
	Mount   string
	FileDev uint64
	// Errors is the inode's error_count in the catalog before this attempt.
	Errors   int
	Err      error
	WorkerID string
}

// Action is what becomes of an inode after a failure.
type Action uint8

// The actions.
const (
	// Retry: the claim is released with the error recorded; the inode is
	// claimed again later (by this or another worker).
	Retry Action = iota
	// Skip: the failure is proven permanent (data beyond the end of the
	// image): copied, claimed_by = Decision.ClaimedBy, status failed_permanent.
	Skip
	// GiveUp: the retry cap is reached: copied, claimed_by NULL, status
	// Decision.Status.
	GiveUp
	// Settled: another caller already received this inode's final
	// decision; the claim is released and nothing is recorded.
	Settled
)

func (a Action) String() string {
	switch a {
	case Retry:
		return "retry"
	case Skip:
		return "skip"
	case GiveUp:
		return "give_up"
	case Settled:
		return "settled"
	}
	return fmt.Sprintf("action(%d)", a)
}

// Decision is a Policy's answer to a Failure.
type Decision struct {
	Action Action
	// ErrorType is the schema's inode.error_type (path_error, io_error,
	// hash_error, permission_error, unknown).
	ErrorType string
	// Class names the failure for logs and events (io, beyond_eof, …).
	Class string
	// Status for GiveUp: failed_retryable or failed_permanent.
	Status string
	// ClaimedBy for Skip: DIAGNOSTIC_SKIP:<CLASS>.
	ClaimedBy string
	// RetryCount is the failure count of the inode, this one included.
	RetryCount int
	// Checkpoint: the checks ran for this failure. Checks holds their
	// findings as JSON (diagnostic_event.checks).
	Checkpoint bool
	Checks     json.RawMessage
	// Event: record a diagnostic_event row for this decision.
	Event bool
	// Problem is a medium.problems flag to merge (beyond_eof_detected, …),
	// with its details; "" for none.
	Problem        string
	ProblemDetails map[string]any
	// Damage found by the checks (inode.damage), JSON; nil for none.
	Damage json.RawMessage
	// SourceUnhealthy, when set, says that the checks found the medium's
	// source unhealthy (the mount check): the failure is the source's, not
	// the file's, and the copier stops with ErrSourceLost.
	SourceUnhealthy string
	// Lines are the log lines for this decision (the "DIAGNOSTIC
	// CHECKPOINT", "SKIPPED ino=X reason=…" and "GAVE UP" lines), logged at
	// warning level. When a policy gives none, the copier writes its own.
	Lines []string
}

// Policy decides what a failed attempt leads to: retry, skip or give up,
// with the findings of any checks. It must be safe for concurrent use.
// Package diagnose provides the real one (see copier/diagpolicy).
type Policy interface {
	Failed(ctx context.Context, f Failure) Decision
	// Succeeded tells the policy that the inode was copied: any retry
	// state it keeps may be forgotten.
	Succeeded(medium string, dev, ino int64)
}

// DamageMapper finds the ranges of an opened file whose bytes were not
// rescued into the image (ddrescue mapfile), for inode.damage. It returns
// nil when the file is intact. Copying goes on regardless: such files are
// stored as imaged.
type DamageMapper interface {
	Damage(ctx context.Context, f *os.File, mount string) (json.RawMessage, error)
}

// SimplePolicy is the policy used when Options.Policy is nil: it retries an
// inode until it has failed MaxFailures times, then gives up as
// failed_retryable. It runs no checks and never skips. Errors are typed by
// errno only.
type SimplePolicy struct {
	MaxFailures int // 0 means 3
}

// Failed implements Policy.
func (p SimplePolicy) Failed(_ context.Context, f Failure) Decision {
	limit := p.MaxFailures
	if limit <= 0 {
		limit = 3
	}
	d := Decision{Action: Retry, ErrorType: errnoType(f.Err), Class: "unknown", RetryCount: f.Errors + 1}
	if d.RetryCount >= limit {
		d.Action, d.Status, d.Event = GiveUp, "failed_retryable", true
	}
	return d
}

// Succeeded implements Policy.
func (SimplePolicy) Succeeded(string, int64, int64) {}

func errnoType(err error) string {
	var pe *PathError
	if errors.As(err, &pe) {
		return "path_error"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.EIO, unix.EUCLEAN, unix.EBADMSG, unix.ENODATA:
			return "io_error"
		case unix.ENOENT, unix.ENOTDIR, unix.ELOOP, unix.EXDEV, unix.ENAMETOOLONG:
			return "path_error"
		case unix.EACCES, unix.EPERM:
			return "permission_error"
		}
	}
	return "unknown"
}

// ErrSourceLost says that the medium's source died under the copy: its
// mount is gone or unreadable, or its device shrank (a USB bridge reset, a
// cut backing file). That is a run error, not a failure of every file: the
// run stops claiming, releases what it holds, records the medium problem
// source_lost and returns an error wrapping this one. Files that failed
// while the source was unhealthy stay retryable.
var ErrSourceLost = errors.New("the medium's source is lost")

// SourceChecker is implemented by a Policy that can tell whether the
// medium's source is still whole (package diagpolicy's Policy does). The
// copier asks it once for each mount when the run starts (the baseline),
// after a failed attempt (the first at once, then at most one check per
// 100 ms), and before any decision
// that marks a file failed_permanent.
type SourceChecker interface {
	// CheckSource returns nil while the mount and the device beneath it
	// are as they were at the first call for that mount, and otherwise an
	// error saying what is wrong (not mounted, mounted from another device,
	// root directory unreadable, device or image smaller than it was).
	CheckSource(ctx context.Context, mount string) error
}
