package loader

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
)

// Sentinels for errors.Is. Each typed error below matches its sentinel.
var (
	// ErrInvalidHash: the medium hash is not 16–64 lowercase hex characters.
	ErrInvalidHash = medium.ErrInvalidHash
	// ErrMediumHasRows: the medium is already loaded and the mode is Refuse.
	ErrMediumHasRows = errors.New("medium already has rows in the catalog")
	// ErrMediumArchived: the medium is archived (copy_done or archive_path
	// set) and the load would add rows to copy; Options.StartOver permits it.
	ErrMediumArchived = errors.New("medium is already archived")
	// ErrLockTimeout: a lock was not granted within Options.LockTimeout.
	ErrLockTimeout = errors.New("lock timeout")
	// ErrStatementTimeout: a statement ran longer than Options.StatementTimeout.
	ErrStatementTimeout = errors.New("statement timeout")
	// ErrNotAttached and ErrHashCollision come from the partition check
	// made before anything is written.
	ErrNotAttached   = schema.ErrNotAttached
	ErrHashCollision = schema.ErrHashCollision
)

// HasRowsError refuses a load over a medium that already has rows: loading
// a second raw file once silently truncated 2.3M catalogued records.
type HasRowsError struct {
	Medium string
	Inodes int64
	Copied int64 // inodes a copier has finished (files, not NON_FILE/EXCLUDED)
	Paths  int64
}

func (e *HasRowsError) Error() string {
	return fmt.Sprintf("medium %s already has %d inodes (%d of them copied) and %d paths in the catalog; "+
		"refusing to load over them: use --replace to swap them for this raw file (their copy state is dropped) "+
		"or --append to add only the paths not catalogued yet", e.Medium, e.Inodes, e.Copied, e.Paths)
}

func (e *HasRowsError) Is(target error) bool { return target == ErrMediumHasRows }

// ArchivedError refuses a load that would give an archived medium files to
// copy again: a --replace once reset every file to uncopied while copy_done
// stayed set, so the copier found nothing mounted and the archiver said
// "already archived".
type ArchivedError struct {
	Medium      string
	Mode        Mode
	CopyDone    *time.Time // medium.copy_done, nil if unset
	ArchivePath string     // medium.archive_path, "" if unset
	NewPaths    int64      // Append: the paths it would have added
}

func (e *ArchivedError) Error() string {
	var what []string
	if e.CopyDone != nil {
		what = append(what, "copy_done "+e.CopyDone.UTC().Format(time.RFC3339))
	}
	if e.ArchivePath != "" {
		what = append(what, "archive "+e.ArchivePath)
	}
	would := "loading rows into it"
	switch e.Mode {
	case Replace:
		would = "replacing its rows"
	case Append:
		would = fmt.Sprintf("appending %d new paths", e.NewPaths)
	}
	return fmt.Sprintf("medium %s is already archived (%s); %s would leave an archived medium with files to copy, "+
		"so nothing was changed: to catalog it again from scratch use --replace --start-over "+
		"(clears copy_done and archive_path; copy and archive then run again)", e.Medium, strings.Join(what, ", "), would)
}

func (e *ArchivedError) Is(target error) bool { return target == ErrMediumArchived }

// Blocker is a session holding a lock the load waited for.
type Blocker struct {
	PID         int
	Mode        string // the lock mode it holds, e.g. "AccessShareLock"
	Application string
	State       string        // "idle in transaction", "active", …
	InXact      time.Duration // age of its transaction
	Query       string        // its current or last statement, shortened
}

func (b Blocker) String() string {
	s := fmt.Sprintf("pid %d", b.PID)
	var parts []string
	if b.Application != "" {
		parts = append(parts, b.Application)
	}
	if b.State != "" {
		st := b.State
		if b.InXact > 0 {
			st += " for " + b.InXact.Round(time.Second).String()
		}
		parts = append(parts, st)
	}
	if b.Mode != "" {
		parts = append(parts, "holding "+b.Mode)
	}
	if b.Query != "" {
		parts = append(parts, fmt.Sprintf("last query %q", b.Query))
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// LockTimeoutError says which lock the load waited for, why it needed it,
// and which sessions held it when it gave up: a long idle transaction once
// blocked partition creation silently.
type LockTimeoutError struct {
	Medium   string
	Object   string // what was to be locked: "table inode", "the load lock of medium …"
	Mode     string // the table lock mode asked for, e.g. "SHARE UPDATE EXCLUSIVE"; "" for the load lock
	Purpose  string // why, e.g. "to attach inode_p_… to inode"
	Timeout  time.Duration
	Blockers []Blocker
	Err      error // the server's error
}

func (e *LockTimeoutError) Error() string {
	var b strings.Builder
	if e.Mode != "" {
		fmt.Fprintf(&b, "medium %s: gave up after %v waiting to lock %s in %s mode", e.Medium, e.Timeout, e.Object, e.Mode)
	} else {
		fmt.Fprintf(&b, "medium %s: gave up after %v waiting for %s", e.Medium, e.Timeout, e.Object)
	}
	if e.Purpose != "" {
		fmt.Fprintf(&b, " (%s)", e.Purpose)
	}
	if len(e.Blockers) == 0 {
		b.WriteString("; no session holds it now (it was released, or another waiter was ahead)")
	} else {
		b.WriteString(": held by ")
		for i, bl := range e.Blockers {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(bl.String())
		}
	}
	b.WriteString("; nothing was changed")
	return b.String()
}

func (e *LockTimeoutError) Unwrap() error { return e.Err }

func (e *LockTimeoutError) Is(target error) bool { return target == ErrLockTimeout }

// TimeoutError says which step of which phase ran past the statement
// timeout (a one-off 12.5-minute hang in dedupe once went unexplained).
type TimeoutError struct {
	Medium  string
	Phase   string
	Step    string
	Timeout time.Duration
	Err     error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("medium %s: %s phase: %s did not finish within the statement timeout of %v; nothing was changed",
		e.Medium, e.Phase, e.Step, e.Timeout)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

func (e *TimeoutError) Is(target error) bool { return target == ErrStatementTimeout }
