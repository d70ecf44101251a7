package diagnose

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Key names one inode of one medium, as the catalog does.
type Key struct {
	Medium string // the medium hash
	Dev    int64
	Ino    int64
}

func (k Key) String() string { return fmt.Sprintf("medium %s dev %d ino %d", k.Medium, k.Dev, k.Ino) }

// Policy says when to look closer at a failing inode and when to stop.
// Counts are failures of one inode, the first failure being 1.
type Policy struct {
	CheckpointAt int // run the checks at this failure (10)
	GiveUpAt     int // give up at this failure (50)
	// On a degraded medium (health unknown, corrupt or failed) errors are
	// expected, and retrying them is mostly waiting: 5 and 5.
	DegradedCheckpointAt int
	DegradedGiveUpAt     int
	// CheckTimeout bounds each check that touches the filesystem (mount
	// readability, extent map): those can block on a failing image.
	CheckTimeout time.Duration
}

// DefaultPolicy is the seed's: checkpoint at retry 10 and give up at 50,
// or both at 5 on a degraded medium.
func DefaultPolicy() Policy {
	return Policy{CheckpointAt: 10, GiveUpAt: 50, DegradedCheckpointAt: 5, DegradedGiveUpAt: 5, CheckTimeout: 10 * time.Second}
}

func (p Policy) thresholds(degraded bool) (checkpoint, giveUp int) {
	checkpoint, giveUp = p.CheckpointAt, p.GiveUpAt
	if degraded {
		checkpoint, giveUp = p.DegradedCheckpointAt, p.DegradedGiveUpAt
	}
	checkpoint = max(checkpoint, 1)
	return checkpoint, max(giveUp, checkpoint)
}

// Env is what the checks may look at for one failure. Medium-wide fields
// are the same for every file of a medium; the copier fills Path per file.
// Any check whose inputs are missing is not performed (and not listed).
type Env struct {
	// Health of the medium from its mapfile; anything but ok or incomplete
	// (including "", no mapfile) selects the degraded thresholds.
	Health Health
	// KernelLog is the shared kernel-log follower, opened before copying
	// starts; Devices are the medium's loop devices (loop3, …): messages
	// naming other devices are never blamed on this medium.
	KernelLog *KernelLog
	Devices   []string
	// MountPoint is the mount of the file's partition, MountDevice the loop
	// device that must be mounted there.
	MountPoint, MountDevice string
	// Path is the file's absolute path under MountPoint, for the extent
	// map; Image the image file ("" = the loop's backing file); Bad the
	// image's unrescued ranges (Mapfile.BadRanges).
	Path  string
	Image string
	Bad   []Range
	// WorkerID is recorded in diagnostic_event rows.
	WorkerID string
}

// Action is what the copier does with a failed inode.
type Action uint8

// The actions.
const (
	// Retry: release the claim; the inode will be tried again.
	Retry Action = iota
	// Skip: the checks proved the failure permanent. Mark the inode copied,
	// claimed_by = Decision.ClaimedBy (DIAGNOSTIC_SKIP:<CLASS>), status
	// failed_permanent.
	Skip
	// GiveUp: the retry cap is reached. Mark the inode copied, claimed_by
	// NULL, status = Decision.Status (failed_retryable or failed_permanent).
	GiveUp
	// Settled: another caller already received the final decision for this
	// inode; record nothing.
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

// MarshalText makes an Action read as its name in JSON.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Names of the checks and their results, as recorded in diagnostic_event.checks.
const (
	KernelLogCheck = "kernel_log"
	MountCheck     = "mount"
	SizeCheck      = "size"
	ExtentsCheck   = "extents"

	ResultBeyondEOF = "beyond_eof"
	ResultIOError   = "io_error"
	ResultFSError   = "fs_error"
	ResultClean     = "clean"
	ResultDamaged   = "damaged"
	ResultHealthy   = "healthy"
	ResultUnhealthy = "unhealthy"
	ResultFailed    = "failed" // the check itself could not be done
)

// Check is one check performed at a checkpoint.
type Check struct {
	Name   string   `json:"name"`
	Result string   `json:"result"`
	Detail string   `json:"detail,omitempty"`
	Lines  []string `json:"lines,omitempty"` // kernel log lines, at most 5
}

// Decision is the tracker's answer to one failure, with everything a
// diagnostic_event row and the inode's final state need.
type Decision struct {
	Action Action
	Key    Key
	// Class of the failure: Classify(err), refined by the checks (io becomes
	// beyond_eof when the data lies past the image's end; a missing file on
	// a mount that went away becomes stale_mount).
	Class Class
	// RetryCount is the number of failures of this inode so far, this one
	// included.
	RetryCount int
	// Checkpoint: this failure ran the checks (once per inode).
	Checkpoint bool
	Degraded   bool
	Checks     []Check
	// Status and ClaimedBy for a final decision (Skip, GiveUp).
	Status    string
	ClaimedBy string
	// Problem is the medium.problems flag this decision raises, "" none.
	Problem string
	// Damage: the file's bytes that are unrescued or past the image's end,
	// for inode.damage (from the extents check).
	Damage    []Damage
	Exception string
	WorkerID  string
	At        time.Time
}

// Final reports whether the inode is done with (Skip or GiveUp).
func (d Decision) Final() bool { return d.Action == Skip || d.Action == GiveUp }

// ErrorType is the schema's inode.error_type for the decision's class.
func (d Decision) ErrorType() string { return d.Class.ErrorType() }

// NeedsEvent reports whether a diagnostic_event row records this decision:
// at the checkpoint and at the final decision.
func (d Decision) NeedsEvent() bool { return d.Checkpoint || d.Final() }

// Tracker counts failures per inode and decides, safely for concurrent
// workers: for each inode the checkpoint runs once and exactly one caller
// receives the final decision.
type Tracker struct {
	policy  Policy
	mu      sync.Mutex
	entries map[Key]*entry
}

type entry struct {
	mu      sync.Mutex // held through a whole Failure, checks included
	count   int
	checked bool
	final   bool
	rawAtCP Class // the class the checkpoint looked at
	refined Class // and what it made of it
}

// NewTracker returns a tracker with policy p (zero fields are not
// defaulted: start from DefaultPolicy).
func NewTracker(p Policy) *Tracker {
	return &Tracker{policy: p, entries: make(map[Key]*entry)}
}

// Policy returns the tracker's policy.
func (t *Tracker) Policy() Policy { return t.policy }

func (t *Tracker) entry(k Key) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[k]
	if e == nil {
		e = &entry{}
		t.entries[k] = e
	}
	return e
}

// Success forgets the inode: it was copied.
func (t *Tracker) Success(k Key) { t.Forget(k) }

// Forget drops the inode's state. Keep it after a final decision if other
// workers may still report failures of the same inode (they get Settled).
func (t *Tracker) Forget(k Key) {
	t.mu.Lock()
	delete(t.entries, k)
	t.mu.Unlock()
}

// Failures is the number of failures recorded for k.
func (t *Tracker) Failures(k Key) int {
	t.mu.Lock()
	e := t.entries[k]
	t.mu.Unlock()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count
}

// Failure records a failure of inode k with err and decides what to do.
// At the checkpoint it runs the checks env allows (kernel log, mount,
// extent map), each bounded by the policy's CheckTimeout and ctx; other
// failures of the same inode wait for it.
func (t *Tracker) Failure(ctx context.Context, k Key, err error, env Env) Decision {
	raw := Classify(err)
	d := Decision{Key: k, Class: raw, WorkerID: env.WorkerID, At: time.Now().UTC()}
	if err != nil {
		d.Exception = err.Error()
	}
	e := t.entry(k)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.final {
		d.Action, d.RetryCount = Settled, e.count
		return d
	}
	e.count++
	d.RetryCount = e.count
	d.Degraded = env.Health.Degraded()
	checkpointAt, giveUpAt := t.policy.thresholds(d.Degraded)

	if !e.checked && e.count >= checkpointAt {
		e.checked = true
		d.Checkpoint = true
		t.checkpoint(ctx, &d, env)
		e.rawAtCP, e.refined = raw, d.Class
		if d.Action == Skip {
			e.final = true
			return d
		}
	} else if e.checked && raw == e.rawAtCP {
		d.Class = e.refined
	}
	if e.count >= giveUpAt {
		e.final = true
		d.Action = GiveUp
		d.Status = d.Class.FinalStatus()
		if d.Problem == "" && d.Class == ClassStaleMount {
			d.Problem = ProblemStaleMount
		}
		return d
	}
	d.Action = Retry
	return d
}

// Flags merged into medium.problems.
const (
	ProblemBeyondEOF   = "beyond_eof_detected"
	ProblemIOConfirmed = "io_errors_confirmed"
	ProblemStaleMount  = "stale_mount"
	// ProblemCorrupt: a file's data lies in a structure of the image that
	// does not check out (found by an image reader from the file's runs).
	ProblemCorrupt = "corrupt_structure_confirmed"
)

// checkpoint runs the checks and decides between Skip and Retry (the
// caller turns Retry into GiveUp at the cap).
func (t *Tracker) checkpoint(ctx context.Context, d *Decision, env Env) {
	timeout := t.policy.CheckTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var kernelBeyond, kernelIO bool
	if env.KernelLog != nil && len(env.Devices) > 0 {
		c := Check{Name: KernelLogCheck, Result: ResultClean}
		if err := env.KernelLog.Poll(); err != nil {
			c.Result, c.Detail = ResultFailed, err.Error()
		} else {
			evs := env.KernelLog.Events(env.Devices)
			var beyond, ioe, fse int
			var recent []KernelEvent
			for _, dev := range env.Devices {
				de, ok := evs[DeviceName(dev)]
				if !ok {
					continue
				}
				beyond += de.BeyondEOF
				ioe += de.IOErrors
				fse += de.FSErrors
				recent = append(recent, de.Recent...)
			}
			switch {
			case beyond > 0:
				c.Result, kernelBeyond = ResultBeyondEOF, true
			case ioe > 0:
				c.Result, kernelIO = ResultIOError, true
			case fse > 0:
				c.Result, kernelIO = ResultFSError, true
			}
			c.Detail = fmt.Sprintf("devices %v: %d beyond end of device, %d I/O errors, %d filesystem errors",
				env.Devices, beyond, ioe, fse)
			if lost := env.KernelLog.Lost(); lost > 0 {
				c.Detail += fmt.Sprintf("; %d kernel log records lost", lost)
			}
			for i := max(0, len(recent)-5); i < len(recent); i++ {
				c.Lines = append(c.Lines, recent[i].Message)
			}
		}
		d.Checks = append(d.Checks, c)
	}

	mountBad, truncated := false, false
	if env.MountPoint != "" && env.MountDevice != "" {
		c := Check{Name: MountCheck, Result: ResultHealthy}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := CheckMount(cctx, env.MountPoint, env.MountDevice)
		cancel()
		switch {
		case err != nil:
			c.Result, c.Detail = ResultFailed, err.Error()
		case !st.Healthy():
			c.Result, c.Detail, mountBad = ResultUnhealthy, st.Problem, true
		default:
			c.Detail = fmt.Sprintf("%s mounted from %s (%s)", st.MountPoint, st.Source, st.FSType)
		}
		d.Checks = append(d.Checks, c)
		if err == nil && st.Healthy() {
			// The size check: a filesystem larger than its device (or a
			// loop device reaching past its image) is a truncated medium,
			// whose lost part the kernel does not always log (ext4 fails
			// metadata lookups there with ENOMEM, silently).
			sc := Check{Name: SizeCheck, Result: ResultClean,
				Detail: fmt.Sprintf("filesystem %d bytes, device %d, image %d", st.FSBytes, st.DeviceBytes, st.ImageBytes)}
			if st.Truncated {
				sc.Result, sc.Detail, truncated = ResultBeyondEOF, st.SizeNote, true
			}
			d.Checks = append(d.Checks, sc)
		}
	}

	extentsKnown, extentsBeyond := false, false
	if env.Path != "" && !mountBad {
		c := Check{Name: ExtentsCheck, Result: ResultClean}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		fd, err := InspectFile(cctx, env.Path, FileDamageOptions{Image: env.Image, Bad: env.Bad, Root: env.MountPoint})
		cancel()
		if err != nil {
			c.Result, c.Detail = ResultFailed, err.Error()
		} else {
			extentsKnown = true
			d.Damage = fd.Damaged
			c.Detail = fmt.Sprintf("%d extents (%s) on %s at offset %d; %d of %d bytes damaged; image %d bytes",
				len(fd.Extents), fd.Method, fd.Loop, fd.LoopOffset, fd.DamagedBytes, fd.Size, fd.ImageSize)
			switch {
			case fd.BeyondImage:
				c.Result, extentsBeyond = ResultBeyondEOF, true
			case fd.DamagedBytes > 0:
				// Unrescued bytes read back as zeros, not as errors: they
				// are recorded (Damage) but do not explain a failure.
				c.Result = ResultDamaged
			}
		}
		d.Checks = append(d.Checks, c)
	}

	// A file whose own extents were mapped is judged by them; the medium-wide
	// evidence (the kernel's "beyond end of device", a filesystem larger
	// than its device) stands in only when they were not.
	beyond := extentsBeyond || (!extentsKnown && (kernelBeyond || truncated))
	raw := d.Class
	switch {
	// Transient is included for ENOMEM: ext4 returns it (not EIO) when the
	// metadata block it needs lies past the end of the device.
	case raw == ClassBeyondEOF || beyond && (raw == ClassIO || raw == ClassUnknown || raw == ClassTransient):
		d.Class = ClassBeyondEOF
		d.Action, d.Status, d.ClaimedBy, d.Problem = Skip, StatusFailedPermanent, ClassBeyondEOF.SkipReason(), ProblemBeyondEOF
	case raw == ClassCorrupt:
		// Proven from the structure itself: no other check can make it readable.
		d.Action, d.Status, d.ClaimedBy, d.Problem = Skip, StatusFailedPermanent, ClassCorrupt.SkipReason(), ProblemCorrupt
	case raw == ClassIO && kernelIO:
		d.Action, d.Status, d.ClaimedBy, d.Problem = Skip, StatusFailedPermanent, ClassIO.SkipReason(), ProblemIOConfirmed
	case mountBad && raw != ClassPermission && raw != ClassPathTooLong:
		d.Class, d.Problem = ClassStaleMount, ProblemStaleMount
		d.Action = Retry
	default:
		d.Action = Retry
	}
}
