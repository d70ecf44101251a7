package loader

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/HRDAG/ntt/enumerate"
)

// Mode says what a load does when the medium already has rows.
type Mode int

const (
	// Refuse fails with a *HasRowsError and changes nothing (the default).
	Refuse Mode = iota
	// Replace swaps the medium's rows for the raw file's in one commit;
	// the old rows, and their copy state, are gone afterwards.
	Replace
	// Append adds the raw file's paths that are not catalogued yet (matched
	// by path: dev changes with every mount) and their inodes; existing
	// rows and their copy state are left exactly as they are.
	Append
)

func (m Mode) String() string {
	switch m {
	case Refuse:
		return "refuse"
	case Replace:
		return "replace"
	case Append:
		return "append"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Defaults of the timeouts.
const (
	DefaultStatementTimeout = 5 * time.Minute
	DefaultLockTimeout      = 30 * time.Second
)

// Options of a load. The zero value loads with the defaults.
type Options struct {
	// Root is the walk root the raw file's paths are relative to; the
	// catalog stores "/" for it and "/a/b" for Root+"/a/b". Empty: the path
	// of the first record (the walk root, in files from enumerate or find).
	Root string
	// Ignore leaves out matching paths (exclude_reason 'pattern_match'); it
	// is matched against the path as walked, as enumerate.Walk does.
	Ignore *enumerate.Matcher
	// Mode when the medium already has rows.
	Mode Mode
	// StatementTimeout bounds every statement (0: 5 minutes; <0: none).
	StatementTimeout time.Duration
	// LockTimeout bounds every lock wait (0: 30 s; <0: none).
	LockTimeout time.Duration
	// ExpectedRecords is the enumeration's record count (0: unknown); a
	// different count is logged as a warning and kept in Stats.
	ExpectedRecords int64
	// DBRetry is how long a catalog outage (a database restart, a lost
	// connection) is waited out: the load starts again from the beginning
	// of raw, which must then be seekable (a regular file, not a pipe);
	// 0: 2 minutes; <0: no retry.
	DBRetry time.Duration
	// ImagePath, when set, is recorded as medium.image_path.
	ImagePath string
	// StartOver permits a load that writes rows into a medium already
	// archived (medium.copy_done or archive_path set), and clears both in
	// the load's transaction, so that the medium is copied and archived
	// again. Without it such a load is refused (*ArchivedError): the
	// catalog never holds an archived medium with files left to copy.
	StartOver bool
	// SpoolDir holds the anonymous inode spool (default os.TempDir()).
	SpoolDir string
	// Logger receives phase timings and warnings; nil is silent.
	Logger *slog.Logger
	// Progress receives progress; nil ignores it.
	Progress Progress
}

// Progress receives a load's progress. Its methods are called from the
// goroutines of the load, one call at a time; they must return quickly.
type Progress interface {
	// Phase is called when a phase starts (see Stats.Phases for names).
	Phase(name string)
	// Records is called every few thousand records and at the end of the
	// input with the records read so far and the byte offset reached.
	Records(records, offset int64)
}

// Phase names, in order. Append mode has no "index" or "attach" phase.
// Duplicates are dropped while the rows stream (copy), and the keys prove
// there are none left (dedupe).
const (
	PhaseCheck   = "check"   // partitions attached? rows already there? (refuse before reading)
	PhaseRead    = "read"    // records parsed, checked and sorted in bounded memory; no transaction yet
	PhasePrepare = "prepare" // transaction, locks, the check again, new tables
	PhaseCopy    = "copy"    // rows streamed into the new tables by binary COPY
	PhaseDedupe  = "dedupe"  // primary keys: one inode per (dev, ino), one row per path
	PhaseAnalyze = "analyze" // planner statistics of both partitions
	PhaseIndex   = "index"   // path→inode foreign key and its index
	PhaseAttach  = "attach"  // old rows swapped out, partitions attached, medium row
	PhaseCommit  = "commit"
)

// PhaseTime is how long one phase of a load took.
type PhaseTime struct {
	Name     string
	Duration time.Duration
}

// Stats describes a finished (or failed) load.
type Stats struct {
	Medium  string
	Mode    Mode
	Root    string // the walk root paths were made relative to
	Records int64  // records read from the raw file
	// ExpectedRecords is Options.ExpectedRecords; when it is non-zero and
	// differs from Records the enumeration and the raw file disagree.
	ExpectedRecords int64
	Inodes          int64 // inode rows written (one per dev, ino)
	Paths           int64 // path rows written
	ExcludedPaths   int64 // of Paths, those matching an ignore pattern
	ExcludedInodes  int64 // of Inodes, those with every path excluded (EXCLUDED)
	NonFiles        int64 // of Inodes, non-files (NON_FILE), excluded ones not counted
	DuplicatePaths  int64 // records whose path came earlier in the input: stored once
	// ExistingPaths (Append) are paths already catalogued, left untouched.
	ExistingPaths int64
	// Replaced (Replace) are the inode and path rows the load swapped out.
	ReplacedInodes, ReplacedPaths int64
	// StartedOver: the medium was archived and Options.StartOver cleared
	// its copy_done and archive_path.
	StartedOver bool
	Phases      []PhaseTime
	Total       time.Duration
}

// Phase returns the duration of the named phase (0 if it did not run).
func (s *Stats) Phase(name string) time.Duration {
	for _, p := range s.Phases {
		if p.Name == name {
			return p.Duration
		}
	}
	return 0
}

// RecordCountDiffers reports whether the enumeration's count was given and
// differs from the records read.
func (s *Stats) RecordCountDiffers() bool {
	return s.ExpectedRecords > 0 && s.ExpectedRecords != s.Records
}
