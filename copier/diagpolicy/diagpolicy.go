// Package diagpolicy connects package diagnose to the copier: it turns a
// diagnose.Tracker (retry counts, the checkpoint and its checks, skip and
// give-up decisions) into a copier.Policy, and a ddrescue mapfile into a
// copier.DamageMapper that records the damaged ranges of every copied file.
//
// It also finds what a medium's bytes come from when the catalog does not
// say (Locate: the mounted medium's loop backing file, the images
// directory) and keeps the catalog's record of them whole before copying
// (RecordSource: image_path and the layout's findings in medium.problems;
// PrepareDamage: damage_unchecked without a mapfile, else the damage of
// files copied before the mapfile was known, then medium.health).
//
// The copier and diagnose do not import each other (design.md: "copier
// takes a diagnose policy"); this small package is the one place that knows
// both, used by ntt-copier and by the copier's tests.
//
// Failure counts live in the tracker, in memory, per process: a restarted
// copier counts an inode's failures from zero again (its catalog
// error_count keeps the total). Checks that cannot be performed (no kernel
// log access, no image path) are left out of the checkpoint, never faked.
package diagpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/medium"
	"golang.org/x/sys/unix"
)

// Options of New.
type Options struct {
	Medium string // the medium hash (validated by New)
	// Image is the medium's image file ("" if unknown: the extents check
	// then uses the loop device's backing file, and there is no mapfile).
	Image string
	// Mapfile is the ddrescue mapfile; "" means <image dir>/<hash>.map. A
	// missing mapfile is not an error: health is unknown (degraded
	// thresholds), and no damage is recorded.
	Mapfile string
	// Policy of the tracker (zero: diagnose.DefaultPolicy()).
	Policy diagnose.Policy
	// KernelLog to attribute kernel messages; nil opens /dev/kmsg (if that
	// fails, the kernel-log check is left out; see KernelLogErr).
	KernelLog *diagnose.KernelLog
}

// Policy implements copier.Policy and copier.DamageMapper.
type Policy struct {
	h         medium.Hash
	tracker   *diagnose.Tracker
	klog      *diagnose.KernelLog
	ownsKlog  bool
	klogErr   error
	image     string
	imageSize int64
	health    diagnose.HealthReport
	bad       []diagnose.Range

	mu      sync.Mutex
	devices []string
	loops   map[uint64]diagnose.LoopDevice
	sources map[string]sourceBase // by mount point: the source as first seen
}

// sourceBase is a mount's source when the copy started.
type sourceBase struct {
	device      string // loop device name; "" when the mount is not on one
	deviceBytes int64
	imageBytes  int64
}

// New prepares the policy for one medium: reads the mapfile (health and
// bad ranges), finds the image's loop devices, opens the kernel log.
func New(opts Options) (*Policy, error) {
	h, err := medium.Parse(opts.Medium)
	if err != nil {
		return nil, err
	}
	p := &Policy{h: h, image: opts.Image, klog: opts.KernelLog, loops: map[uint64]diagnose.LoopDevice{},
		sources: map[string]sourceBase{}}
	pol := opts.Policy
	if pol == (diagnose.Policy{}) {
		pol = diagnose.DefaultPolicy()
	}
	p.tracker = diagnose.NewTracker(pol)
	p.health = diagnose.HealthReport{Health: diagnose.HealthUnknown}
	mapfile := opts.Mapfile
	if mapfile == "" && opts.Image != "" {
		mapfile = filepath.Join(filepath.Dir(opts.Image), h.MapFileName())
	}
	if mapfile != "" {
		rep, m, err := diagnose.HealthOf(mapfile)
		if err != nil {
			return nil, fmt.Errorf("medium %s: %w", h, err)
		}
		p.health = rep
		if m != nil {
			p.bad = m.BadRanges()
		}
	}
	if opts.Image != "" {
		st, err := os.Stat(opts.Image)
		if err != nil {
			return nil, fmt.Errorf("medium %s: image: %w", h, err)
		}
		p.imageSize = st.Size()
		if devs, err := diagnose.MediumDevices(opts.Image); err == nil {
			p.devices = devs
		}
	}
	if p.klog == nil {
		kl, err := diagnose.OpenKernelLog(diagnose.KernelLogOptions{})
		if err != nil {
			p.klogErr = err
		} else {
			p.klog, p.ownsKlog = kl, true
		}
	}
	return p, nil
}

// Close closes the kernel log if New opened it.
func (p *Policy) Close() error {
	if p.ownsKlog && p.klog != nil {
		return p.klog.Close()
	}
	return nil
}

// Health is the mapfile's report (health unknown without a mapfile).
func (p *Policy) Health() diagnose.HealthReport { return p.health }

// KernelLogErr says why the kernel log could not be opened (nil if it was).
func (p *Policy) KernelLogErr() error { return p.klogErr }

// Tracker is the underlying tracker.
func (p *Policy) Tracker() *diagnose.Tracker { return p.tracker }

// loopOf finds the loop device behind a filesystem's st_dev (cached).
func (p *Policy) loopOf(dev uint64) (diagnose.LoopDevice, error) {
	p.mu.Lock()
	l, ok := p.loops[dev]
	p.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := diagnose.LoopOfDev(dev)
	if err != nil {
		return l, err
	}
	p.mu.Lock()
	p.loops[dev] = l
	if !containsDevice(p.devices, l.Name) {
		// The image may be unknown: the file's own loop device is this
		// medium's, whatever backs it.
		p.devices = append(p.devices, l.Name)
	}
	p.mu.Unlock()
	return l, nil
}

func containsDevice(devs []string, name string) bool {
	for _, d := range devs {
		if diagnose.DeviceName(d) == diagnose.DeviceName(name) {
			return true
		}
	}
	return false
}

// Failed implements copier.Policy.
func (p *Policy) Failed(ctx context.Context, f copier.Failure) copier.Decision {
	env := diagnose.Env{
		Health:    p.health.Health,
		KernelLog: p.klog,
		Path:      f.File,
		Image:     p.image,
		Bad:       p.bad,
		WorkerID:  f.WorkerID,
	}
	dev := f.FileDev
	if dev == 0 && f.Mount != "" {
		var st unix.Stat_t
		if unix.Stat(f.Mount, &st) == nil {
			dev = st.Dev
		}
	}
	if dev != 0 {
		if l, err := p.loopOf(dev); err == nil {
			env.MountPoint, env.MountDevice = f.Mount, "/dev/"+l.Name
		}
	}
	p.mu.Lock()
	env.Devices = append([]string(nil), p.devices...)
	p.mu.Unlock()
	if p.klog == nil {
		env.KernelLog = nil
	}
	err, fromImage := imageEvidence(f.Err)
	d := p.tracker.Failure(ctx, diagnose.Key{Medium: string(p.h), Dev: f.Dev, Ino: f.Ino}, err, env)
	if fromImage != "" {
		d = imageDecision(d, fromImage, f.Err)
	}
	return convert(d)
}

// Image read failures. A file read from its image (copier.Options.Image)
// fails where its byte runs do: past the end of the image, or in a
// structure that does not check out. That is proof, found from the runs,
// not a symptom to retry — no kernel log or extent map is needed — so the
// failure is classified at once: beyond the end is ClassBeyondEOF (skipped
// as DIAGNOSTIC_SKIP:BEYOND_EOF, problem beyond_eof_detected), a corrupt
// structure is ClassCorrupt (skipped as DIAGNOSTIC_SKIP:CORRUPT, problem
// corrupt_structure_confirmed). Other errors (the image file's own I/O)
// take the usual way.

const imageRunsCheck = "image_runs"

// imageEvidence wraps an image read failure so that diagnose classifies
// it, and says which it was ("" for any other error).
func imageEvidence(err error) (error, string) {
	if _, ok := errors.AsType[*copier.ImageReadError](err); !ok {
		return err, ""
	}
	switch {
	case errors.Is(err, imagefs.ErrBeyondEnd):
		return fmt.Errorf("%w: %w", diagnose.ErrBeyondEOF, err), diagnose.ResultBeyondEOF
	case errors.Is(err, imagefs.ErrCorrupt):
		return fmt.Errorf("%w: %w", diagnose.ErrCorrupt, err), diagnose.ResultFSError
	}
	return err, ""
}

// imageDecision settles an image read failure at its first occurrence.
func imageDecision(d diagnose.Decision, result string, err error) diagnose.Decision {
	if d.Action == diagnose.Settled || d.Final() {
		return d
	}
	d.Checkpoint = true
	d.Checks = append(d.Checks, diagnose.Check{Name: imageRunsCheck, Result: result, Detail: err.Error()})
	d.Action, d.Status = diagnose.Skip, diagnose.StatusFailedPermanent
	if result == diagnose.ResultBeyondEOF {
		d.Class, d.Problem = diagnose.ClassBeyondEOF, diagnose.ProblemBeyondEOF
	} else {
		d.Class, d.Problem = diagnose.ClassCorrupt, diagnose.ProblemCorrupt
	}
	d.ClaimedBy = d.Class.SkipReason()
	return d
}

func convert(d diagnose.Decision) copier.Decision {
	out := copier.Decision{
		ErrorType:  d.ErrorType(),
		Class:      d.Class.String(),
		Status:     d.Status,
		ClaimedBy:  d.ClaimedBy,
		RetryCount: d.RetryCount,
		Checkpoint: d.Checkpoint,
		Checks:     json.RawMessage(d.ChecksJSON()),
		Event:      d.NeedsEvent(),
		Problem:    d.Problem,
		Lines:      d.LogLines(),
	}
	switch d.Action {
	case diagnose.Retry:
		out.Action = copier.Retry
	case diagnose.Skip:
		out.Action = copier.Skip
	case diagnose.GiveUp:
		out.Action = copier.GiveUp
	default:
		out.Action = copier.Settled
	}
	if len(d.Damage) > 0 {
		if b, err := json.Marshal(d.Damage); err == nil {
			out.Damage = b
		}
	}
	for _, c := range d.Checks {
		if c.Name == diagnose.MountCheck && c.Result == diagnose.ResultUnhealthy {
			// The source is gone, so the file's failure proves nothing
			// about the file (the kernel's "beyond end of device" too):
			// never a final decision, the copier stops the run.
			out.SourceUnhealthy = "mount check: " + c.Detail
			if out.Action == copier.Skip || out.Action == copier.GiveUp {
				out.Action, out.Status, out.ClaimedBy = copier.Retry, "", ""
			}
		}
	}
	if out.SourceUnhealthy != "" {
		out.Problem = "" // the copier records source_lost instead
	} else if d.Problem != "" {
		for _, c := range d.Checks {
			if c.Name == diagnose.KernelLogCheck && len(c.Lines) > 0 {
				out.ProblemDetails = map[string]any{"kernel_log": c.Lines[len(c.Lines)-1]}
			}
		}
	}
	return out
}

// CheckSource implements copier.SourceChecker: the mount must still be
// mounted from the loop device it was on at the first call, with a readable
// root directory, and neither the device nor its backing image may have
// shrunk since (a cut image, a device that reset: reads past the new end
// fail, or return zeros). A path that is not a mount point, or a mount
// that is not on a loop device, is not watched. An image that was short from the start is not a lost source:
// its files past the end are skipped (BEYOND_EOF) as before.
func (p *Policy) CheckSource(ctx context.Context, mount string) error {
	p.mu.Lock()
	base, known := p.sources[mount]
	p.mu.Unlock()
	timeout := p.tracker.Policy().CheckTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !known {
		var st unix.Stat_t
		if err := unix.Stat(mount, &st); err != nil {
			return fmt.Errorf("mount %s: %w", mount, err)
		}
		l, err := p.loopOf(st.Dev)
		if err != nil {
			p.mu.Lock()
			p.sources[mount] = sourceBase{}
			p.mu.Unlock()
			return nil
		}
		ms, err := diagnose.CheckMount(cctx, mount, l.Name)
		if err != nil {
			return err
		}
		if !ms.Mounted {
			// A directory holding partition mounts, on a filesystem that
			// happens to be on a loop device: not the medium's source.
			p.mu.Lock()
			p.sources[mount] = sourceBase{}
			p.mu.Unlock()
			return nil
		}
		if !ms.Healthy() {
			return fmt.Errorf("mount %s (%s): %s", mount, l.Name, ms.Problem)
		}
		base = sourceBase{device: l.Name, deviceBytes: ms.DeviceBytes, imageBytes: ms.ImageBytes}
		p.mu.Lock()
		p.sources[mount] = base
		p.mu.Unlock()
		return nil
	}
	if base.device == "" {
		return nil
	}
	ms, err := diagnose.CheckMount(cctx, mount, base.device)
	switch {
	case err != nil:
		return nil // the check itself failed (mountinfo unreadable): no verdict
	case !ms.Healthy():
		return fmt.Errorf("mount %s (%s): %s", mount, base.device, ms.Problem)
	case ms.DeviceBytes > 0 && ms.DeviceBytes < base.deviceBytes:
		return fmt.Errorf("device %s under mount %s shrank from %d to %d bytes", base.device, mount, base.deviceBytes, ms.DeviceBytes)
	case ms.ImageBytes > 0 && ms.ImageBytes < base.imageBytes:
		return fmt.Errorf("the image behind %s (mount %s) shrank from %d to %d bytes", base.device, mount, base.imageBytes, ms.ImageBytes)
	}
	return nil
}

// Succeeded implements copier.Policy.
func (p *Policy) Succeeded(h string, dev, ino int64) {
	p.tracker.Success(diagnose.Key{Medium: string(p.h), Dev: dev, Ino: ino})
}

// DamageMapper returns p when the mapfile names unrescued ranges and nil
// otherwise: set it as copier.Options.Damage, so that the copier does not
// hand over every file of an intact medium for nothing.
func (p *Policy) DamageMapper() copier.DamageMapper {
	if len(p.bad) == 0 {
		return nil
	}
	return p
}

// Damage implements copier.DamageMapper: the file's extents (FIEMAP, else
// FIBMAP), shifted by its loop device's offset, against the mapfile's
// unrescued ranges and the image's end. Without a mapfile with bad ranges
// nothing is mapped (no cost per file).
func (p *Policy) Damage(_ context.Context, f *os.File, _ string) (json.RawMessage, error) {
	if len(p.bad) == 0 {
		return nil, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	l, err := p.loopOf(st.Dev)
	if err != nil {
		return nil, err
	}
	exts, _, err := diagnose.FileExtents(f)
	if err != nil {
		return nil, err
	}
	d := diagnose.DamagedRanges(exts, l.Offset, p.imageSize, p.bad)
	if len(d) == 0 {
		return nil, nil
	}
	return json.Marshal(d)
}

// RunDamage implements copier.RunDamageMapper: the runs of a file read
// from the image (image offsets) against the mapfile's unrescued ranges and
// the image's end — exactly the file's damaged bytes.
func (p *Policy) RunDamage(_ context.Context, runs []imagefs.Run) (json.RawMessage, error) {
	if len(p.bad) == 0 {
		return nil, nil
	}
	exts := make([]diagnose.Extent, 0, len(runs))
	for _, r := range runs {
		if !r.Hole {
			exts = append(exts, diagnose.Extent{Logical: r.Logical, Physical: r.Offset, Length: r.Length})
		}
	}
	d := diagnose.DamagedRanges(exts, 0, p.imageSize, p.bad)
	if len(d) == 0 {
		return nil, nil
	}
	return json.Marshal(d)
}

var (
	_ copier.Policy          = (*Policy)(nil)
	_ copier.DamageMapper    = (*Policy)(nil)
	_ copier.SourceChecker   = (*Policy)(nil)
	_ copier.RunDamageMapper = (*Policy)(nil)
)
