package loopdev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// DefaultRoot is where media are mounted: <root>/<hash>.
const DefaultRoot = "/mnt/ntt"

// DefaultMountTimeout bounds each mount(2).
const DefaultMountTimeout = 10 * time.Second

// zipOffset is where Zip disks keep their filesystem.
const zipOffset = 16384

// MountSpec says what to mount where.
type MountSpec struct {
	// Medium is the medium hash (16–64 lowercase hex).
	Medium string
	// Image is the disk image file.
	Image string
	// Root is the mount root; "" means DefaultRoot.
	Root string
	// Timeout bounds each mount(2); 0 means DefaultMountTimeout.
	Timeout time.Duration
	// ImagesDirs are directories holding NTT's images besides the image's
	// own: a deleted image's loop found there is reaped too (see Reap).
	ImagesDirs []string
	// Logger receives events; nil is silent.
	Logger *slog.Logger
}

// MountError is a failed mount(2), in moby/sys/mount's shape.
type MountError struct {
	Source, Target, FSType, Data string
	Flags                        uintptr
	Err                          error
}

func (e *MountError) Error() string {
	return fmt.Sprintf("mount %s on %s (type %s, options %q): %v", e.Source, e.Target, e.FSType, e.Data, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }

// System calls, replaceable by tests (to hang a mount, or to fail after
// an attach) without touching the logic around them.
var (
	sysMount            = unix.Mount
	testHookAfterAttach func(*Attached) error
)

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// mountWithTimeout runs mount(2) in a goroutine and waits at most timeout
// (or until ctx ends). A mount stuck in the kernel (D state on a bad
// device) cannot be cancelled: the goroutine lingers until the kernel
// returns, and if the mount then succeeds it unmounts it (lazily) itself,
// since its caller has already reported the failure and cleaned up.
func mountWithTimeout(ctx context.Context, src, target, fstype string, flags uintptr, data string, timeout time.Duration) error {
	var (
		mu        sync.Mutex
		finished  bool
		abandoned bool
	)
	done := make(chan error, 1)
	go func() {
		err := sysMount(src, target, fstype, flags, data)
		mu.Lock()
		finished = true
		if abandoned && err == nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
		}
		mu.Unlock()
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var why error
	select {
	case err := <-done:
		return wrapMountErr(src, target, fstype, flags, data, err)
	case <-t.C:
		why = fmt.Errorf("%w after %v", ErrMountTimeout, timeout)
	case <-ctx.Done():
		why = ctx.Err()
	}
	mu.Lock()
	if finished {
		mu.Unlock()
		return wrapMountErr(src, target, fstype, flags, data, <-done)
	}
	abandoned = true
	mu.Unlock()
	return &MountError{Source: src, Target: target, FSType: fstype, Flags: flags, Data: data, Err: why}
}

func wrapMountErr(src, target, fstype string, flags uintptr, data string, err error) error {
	if err == nil {
		return nil
	}
	return &MountError{Source: src, Target: target, FSType: fstype, Flags: flags, Data: data, Err: err}
}

// Mount attaches the medium's image read-only and mounts every filesystem
// it holds under <root>/<hash>, and returns the layout.
//
// Under the medium's lock (in-process and flock, so concurrent callers
// serialize and the later ones get the first one's mount): it reaps the
// image's stale loops and every other stale loop of NTT's (as Reap does,
// with the same function), returns the existing layout if the medium is
// already mounted, probes the image, and mounts each filesystem through its
// own loop device (offset and size limit from the table). On any error,
// everything this call attached is detached, everything it mounted is
// unmounted and every directory it made is removed; the returned Layout
// (non-nil when the image was probed) still says what each partition was.
func Mount(ctx context.Context, spec MountSpec) (*Layout, error) {
	h, err := medium.Parse(spec.Medium)
	if err != nil {
		return nil, err
	}
	log := logger(spec.Logger).With("medium", string(h))
	if spec.Image == "" {
		return nil, fmt.Errorf("medium %s: no image given", h)
	}
	root := cleanRoot(spec.Root)
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultMountTimeout
	}
	img, err := identifyImage(spec.Image)
	if err != nil {
		return nil, fmt.Errorf("medium %s: %w", h, err)
	}
	st, err := os.Stat(img.path)
	if err != nil {
		return nil, fmt.Errorf("medium %s: image: %w", h, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("medium %s: image %s is not a regular file (%s)", h, img.path, st.Mode().Type())
	}

	unlock, err := lockMedium(ctx, h, root)
	if err != nil {
		return nil, err
	}
	defer unlock()

	// Every NTT stale loop on the machine goes, not only this image's: the
	// seed's runbook (Test 1) expects no "(deleted)" loop after a mount.
	sc := reapScope{img: &img, sweep: true, root: root}
	sc.setDirs(spec.ImagesDirs)
	rep, err := reap(ctx, log, sc, timeout)
	if err != nil {
		return nil, fmt.Errorf("medium %s: reaping stale loops: %w", h, err)
	}
	if len(rep.Errors) > 0 {
		return nil, fmt.Errorf("medium %s: stale loops of %s could not be cleaned up: %s", h, img.path, strings.Join(rep.Errors, "; "))
	}

	if lay, err := status(h, root); err == nil {
		lay.AlreadyMounted = true
		log.Info("Already mounted at "+lay.Mount, "layout", lay.Layout)
		if _, err := os.Stat(h.LayoutRecordPath(root)); err != nil && lay.Layout == LayoutMulti {
			// Mounted by hand or by an older build: its partitions cannot
			// be told from foreign mounts, so the copier will refuse them.
			log.Warn("no layout record for this mount: the copier will not trust its partitions; unmount and mount it again",
				"record", h.LayoutRecordPath(root), "err", err)
		}
		return lay, nil
	} else if !errors.Is(err, ErrNotMounted) {
		return nil, err
	}

	f, err := os.Open(img.path)
	if err != nil {
		return nil, fmt.Errorf("medium %s: image: %w", h, err)
	}
	defer f.Close()
	size := st.Size()
	res, err := probe.Probe(f, size)
	if err != nil {
		return nil, fmt.Errorf("medium %s: probing %s: %w", h, img.path, err)
	}
	lay, targets, err := planMount(res, h, root)
	lay.Image = img.path
	if err != nil {
		return lay, err
	}
	m := &mountRun{h: h, root: root, img: img.path, timeout: timeout, log: log, lay: lay}
	err = m.run(ctx, targets)
	if err == nil && m.mountedCount == 0 {
		// Zip disks keep their filesystem at byte 16384 behind a table the
		// probe may not know; try there before giving up.
		if v := ZipVolume(f, size); v != nil {
			log.Info("nothing mounted at offset 0; trying offset 16384", "fstype", v.Content.Type)
			lay.Layout = LayoutSingle
			err = m.run(ctx, []target{v.target()})
		}
	}
	if err == nil && m.mountedCount == 0 {
		err = fmt.Errorf("medium %s: %w from %s%s", h, ErrNothingMounted, img.path, m.summary())
	}
	if err != nil {
		if rerr := m.rollback(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		log.Error("mount failed", "image", img.path, "err", err)
		return lay, err
	}
	if err := writeLayoutRecord(h, root, lay); err != nil {
		if rerr := m.rollback(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return lay, err
	}
	m.release()
	log.Info("Mounted medium", "mount", lay.Mount, "layout", lay.Layout, "image", img.path)
	return lay, nil
}

// writeLayoutRecord records what Mount mounted in <root>/.<hash>.layout.json
// (the Layout as ntt-mount-helper prints it), written to a temporary name
// and renamed. The copier trusts a mount at <root>/<hash>/pN as the
// medium's partition only if this record names it and its loop device
// still reads the recorded image at the recorded offset: anything else
// mounted there (a bind mount, another image) is not the medium.
func writeLayoutRecord(h medium.Hash, root string, lay *Layout) error {
	b, err := json.MarshalIndent(lay, "", "  ")
	if err != nil {
		return fmt.Errorf("medium %s: layout record: %w", h, err)
	}
	path := h.LayoutRecordPath(root)
	tmp, err := os.CreateTemp(root, ".layout-*")
	if err != nil {
		return fmt.Errorf("medium %s: layout record: %w", h, err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("medium %s: layout record %s: %w", h, path, err)
	}
	return nil
}

// mountRun is one Mount call's bookkeeping: what it attached, mounted and
// made, so that a failure can undo exactly that.
type mountRun struct {
	h            medium.Hash
	root, img    string
	timeout      time.Duration
	log          *slog.Logger
	lay          *Layout
	attached     []*Attached // held open until the end (see release)
	mounted      []string
	madeDirs     []string
	mountedCount int
	failures     []string
}

// ensureDir makes dir if missing (recording it), or checks that it is an
// empty directory and not a mount point.
func (m *mountRun) ensureDir(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if err == nil {
		m.madeDirs = append(m.madeDirs, dir)
		return nil
	}
	if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("medium %s: %w", m.h, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("medium %s: %w", m.h, err)
	}
	if dir == m.lay.Mount && m.lay.Layout == LayoutMulti {
		for _, e := range ents {
			if !partDirRe.MatchString(e.Name()) {
				return fmt.Errorf("medium %s: %w: %s holds %q", m.h, ErrMountPointBusy, dir, e.Name())
			}
		}
		return nil
	}
	if len(ents) > 0 {
		return fmt.Errorf("medium %s: %w: %s holds %q", m.h, ErrMountPointBusy, dir, ents[0].Name())
	}
	return nil
}

var partDirRe = regexp.MustCompile(`^p[0-9]+$`)

// run mounts each target. Mount failures of one partition are recorded in
// the layout; attach failures, injected failures and timeouts abort.
func (m *mountRun) run(ctx context.Context, targets []target) error {
	if len(targets) == 0 {
		return nil
	}
	if err := m.ensureDir(m.lay.Mount); err != nil {
		return err
	}
	for _, t := range targets {
		mp := partitionMount(m.h, m.root, m.lay.Layout, t.num)
		a, err := Attach(ctx, m.img, AttachParams{Offset: t.offset, SizeLimit: t.size, Autoclear: true})
		if err != nil {
			return fmt.Errorf("medium %s: %w", m.h, err)
		}
		m.attached = append(m.attached, a)
		m.log.Debug("attached", "device", a.Device, "offset", t.offset, "sizelimit", t.size)
		if testHookAfterAttach != nil {
			if err := testHookAfterAttach(a); err != nil {
				return fmt.Errorf("medium %s: after attaching %s: %w", m.h, a.Device, err)
			}
		}
		if mp != m.lay.Mount {
			if err := m.ensureDir(mp); err != nil {
				return err
			}
		}
		fstype, errs := "", []string(nil)
		for _, fs := range t.fstypes {
			err := mountWithTimeout(ctx, a.Device, mp, fs, mountFlags, mountData(fs), m.timeout)
			if err == nil {
				fstype = fs
				break
			}
			if errors.Is(err, ErrMountTimeout) || ctx.Err() != nil {
				return fmt.Errorf("medium %s: partition %d: %w", m.h, t.num, err)
			}
			errs = append(errs, err.Error())
			m.log.Info("mount attempt failed", "device", a.Device, "fstype", fs, "err", err)
		}
		ps := PartitionStatus{}
		if t.part >= 0 {
			ps = m.lay.Partitions[t.part]
		}
		if fstype == "" {
			// This partition stays unmounted; the others go on.
			if err := m.detachLast(); err != nil {
				return err
			}
			if mp != m.lay.Mount {
				m.removeDir(mp)
			}
			detail := strings.Join(errs, "; ")
			m.failures = append(m.failures, fmt.Sprintf("partition %d: %s", t.num, detail))
			if t.part >= 0 {
				ps.Status, ps.Reason, ps.Detail = StatusFailed, ReasonMountFailed, detail
				m.lay.Partitions[t.part] = ps
			}
			continue
		}
		m.mounted = append(m.mounted, mp)
		m.mountedCount++
		m.log.Info("mounted", "device", a.Device, "mount", mp, "fstype", fstype, "offset", t.offset)
		if t.part >= 0 {
			ps.Status, ps.Reason, ps.Device, ps.Mount, ps.FSType = StatusMounted, "", a.Device, mp, fstype
			m.lay.Partitions[t.part] = ps
		}
		if m.lay.Layout == LayoutSingle {
			m.lay.Device, m.lay.FSType, m.lay.Offset = a.Device, fstype, t.offset
		}
	}
	return nil
}

func (m *mountRun) summary() string {
	var parts []string
	for _, p := range m.lay.Partitions {
		if p.Status != StatusMounted {
			parts = append(parts, fmt.Sprintf("partition %d %s (%s)", p.Num, p.Status, p.Reason))
		}
	}
	parts = append(parts, m.failures...)
	if len(parts) == 0 {
		return ": no filesystem found"
	}
	return ": " + strings.Join(parts, "; ")
}

// detachLast detaches the most recently attached device.
func (m *mountRun) detachLast() error {
	a := m.attached[len(m.attached)-1]
	m.attached = m.attached[:len(m.attached)-1]
	if err := a.Detach(); err != nil {
		return fmt.Errorf("medium %s: %w", m.h, err)
	}
	return nil
}

func (m *mountRun) removeDir(dir string) {
	for i := len(m.madeDirs) - 1; i >= 0; i-- {
		if m.madeDirs[i] == dir {
			if err := os.Remove(dir); err == nil {
				m.madeDirs = append(m.madeDirs[:i], m.madeDirs[i+1:]...)
			}
			return
		}
	}
}

// release closes our fds on success: each mount now holds its loop device,
// and autoclear detaches it when the mount goes.
func (m *mountRun) release() {
	for _, a := range m.attached {
		a.Close()
	}
	m.attached = nil
}

// rollback undoes what this call did, newest first: unmount, detach (with
// our own fds, which kept the devices from being freed and reused by
// someone else meanwhile), remove the directories we made.
func (m *mountRun) rollback() error {
	var errs []error
	for i := len(m.mounted) - 1; i >= 0; i-- {
		if err := unmountWithTimeout(m.mounted[i], m.timeout); err != nil {
			errs = append(errs, err)
		}
	}
	m.mounted = nil
	for i := len(m.attached) - 1; i >= 0; i-- {
		if err := m.attached[i].Detach(); err != nil {
			errs = append(errs, err)
		}
	}
	m.attached = nil
	for i := len(m.madeDirs) - 1; i >= 0; i-- {
		if err := os.Remove(m.madeDirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("medium %s: removing %s: %w", m.h, m.madeDirs[i], err))
		}
	}
	m.madeDirs = nil
	m.mountedCount = 0
	return errors.Join(errs...)
}

// unmountWithTimeout unmounts target; a target that is not mounted is
// fine. If umount(2) does not return in time, the mount is detached lazily
// (MNT_DETACH) so that the name is free, and the error says so.
func unmountWithTimeout(target string, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- unix.Unmount(target, 0) }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unmount %s: %w", target, err)
	case <-time.After(timeout):
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("unmount %s: timed out after %v; detached lazily", target, timeout)
	}
}

// Status reports the medium's layout from /proc/self/mountinfo (and sysfs
// for loop offsets), or ErrNotMounted. When the image is still readable it
// is probed again so the layout also lists partitions that were skipped.
func Status(mediumHash, root string) (*Layout, error) {
	h, err := medium.Parse(mediumHash)
	if err != nil {
		return nil, err
	}
	return status(h, cleanRoot(root))
}

func status(h medium.Hash, root string) (*Layout, error) {
	base := h.MountPath(root)
	ms, err := Mounts(MountpointFilter(base))
	if err != nil {
		return nil, fmt.Errorf("medium %s: %w", h, err)
	}
	// The last entry for a mount point is the one on top.
	top := map[string]*MountInfo{}
	for _, m := range ms {
		top[m.Mountpoint] = m
	}
	if len(top) == 0 {
		return nil, fmt.Errorf("medium %s: %w at %s", h, ErrNotMounted, base)
	}
	lay := &Layout{Medium: string(h), Mount: base, Partitions: []PartitionStatus{}}
	type seen struct {
		m   *MountInfo
		off int64
		num int
	}
	var mounted []seen
	if m, ok := top[base]; ok {
		lay.Layout = LayoutSingle
		lay.Device, lay.FSType = m.Source, m.FSType
		off, img := loopOf(m)
		lay.Offset, lay.Image = off, img
		mounted = append(mounted, seen{m, off, 0})
	} else {
		lay.Layout = LayoutMulti
	}
	for mp, m := range top {
		name := filepath.Base(mp)
		if filepath.Dir(mp) != base || !partDirRe.MatchString(name) {
			continue
		}
		var num int
		fmt.Sscanf(name, "p%d", &num)
		off, img := loopOf(m)
		if lay.Image == "" {
			lay.Image = img
		}
		mounted = append(mounted, seen{m, off, num})
	}
	sort.Slice(mounted, func(i, j int) bool { return mounted[i].num < mounted[j].num })

	// What the image says, to list the partitions that are not mounted.
	var planned *Layout
	if lay.Image != "" {
		if f, err := os.Open(lay.Image); err == nil {
			if st, err := f.Stat(); err == nil {
				if res, err := probe.Probe(f, st.Size()); err == nil {
					planned, _, _ = planMount(res, h, root)
				}
			}
			f.Close()
		}
	}
	if planned != nil && planned.Layout == lay.Layout {
		lay.Table, lay.ImageSize, lay.DirtyJournal = planned.Table, planned.ImageSize, planned.DirtyJournal
		for _, p := range planned.Partitions {
			p.Device, p.Mount = "", ""
			for _, s := range mounted {
				if s.off == p.Offset && (s.num == 0 || s.num == p.Num) {
					p.Status, p.Reason, p.Detail = StatusMounted, "", ""
					p.Device, p.Mount, p.FSType = s.m.Source, s.m.Mountpoint, s.m.FSType
				}
			}
			lay.Partitions = append(lay.Partitions, p)
		}
		return lay, nil
	}
	for _, s := range mounted {
		if s.num == 0 {
			continue
		}
		lay.Partitions = append(lay.Partitions, PartitionStatus{Num: s.num, Device: s.m.Source, Mount: s.m.Mountpoint,
			FSType: s.m.FSType, Status: StatusMounted, Offset: s.off})
	}
	return lay, nil
}

// loopOf returns the loop offset and backing file of a mount's source, if
// it is a loop device that still has one.
func loopOf(m *MountInfo) (int64, string) {
	n, ok := loopNumber(filepath.Base(m.Source))
	if !ok {
		return 0, ""
	}
	l, err := readLoop(n)
	if err != nil || l.Deleted {
		return l.Offset, ""
	}
	return l.Offset, l.BackingFile
}

// UnmountOptions are the optional parts of Unmount.
type UnmountOptions struct {
	// Image, if set, also has its loops detached (when nothing is mounted
	// any more, the mounts cannot say which image was used).
	Image string
	// Timeout bounds each umount(2); 0 means DefaultMountTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// UnmountReport says what Unmount did.
type UnmountReport struct {
	Medium    string   `json:"medium"`
	Unmounted []string `json:"unmounted"`
	Detached  []string `json:"detached"`
	Removed   []string `json:"removed"`
}

// Unmount unmounts the medium's partitions and base mount, detaches every
// loop device backed by its image (also orphans of earlier failed attempts
// and stale loops of a deleted copy), and removes the mount directories.
// The image is known from the mounts' loops, from opts.Image, and from the
// seed's naming (<hash>.img). Unmounting what is not mounted is not an
// error: Unmount is idempotent.
func Unmount(ctx context.Context, mediumHash, root string, opts *UnmountOptions) (*UnmountReport, error) {
	h, err := medium.Parse(mediumHash)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &UnmountOptions{}
	}
	log := logger(opts.Logger).With("medium", string(h))
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultMountTimeout
	}
	root = cleanRoot(root)
	unlock, err := lockMedium(ctx, h, root)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &UnmountReport{Medium: string(h), Unmounted: []string{}, Detached: []string{}, Removed: []string{}}
	base := h.MountPath(root)

	var ids []imageID
	if opts.Image != "" {
		id, err := identifyImage(opts.Image)
		if err != nil {
			return rep, fmt.Errorf("medium %s: %w", h, err)
		}
		ids = append(ids, id)
	}
	ms, err := Mounts(MountpointFilter(base))
	if err != nil {
		return rep, fmt.Errorf("medium %s: %w", h, err)
	}
	for _, m := range ms {
		if n, ok := loopNumber(filepath.Base(m.Source)); ok {
			if l, err := readLoop(n); err == nil {
				ids = append(ids, imageID{path: l.BackingFile, dev: l.BackingDev, ino: l.BackingIno, exists: !l.Deleted})
			}
		}
	}
	// Deepest and newest first, so that stacked and nested mounts come off.
	sort.SliceStable(ms, func(i, j int) bool {
		if len(ms[i].Mountpoint) != len(ms[j].Mountpoint) {
			return len(ms[i].Mountpoint) > len(ms[j].Mountpoint)
		}
		return ms[i].ID > ms[j].ID
	})
	var errs []error
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if err := unmountWithTimeout(m.Mountpoint, timeout); err != nil {
			errs = append(errs, fmt.Errorf("medium %s: %w", h, err))
			continue
		}
		rep.Unmounted = append(rep.Unmounted, m.Mountpoint)
		log.Info("unmounted", "mount", m.Mountpoint, "device", m.Source)
	}
	loops, err := List()
	if err != nil {
		return rep, fmt.Errorf("medium %s: %w", h, errors.Join(append(errs, err)...))
	}
	for _, l := range loops {
		mine := filepath.Base(l.BackingFile) == h.ImageFileName()
		for _, id := range ids {
			mine = mine || id.matches(l) || (l.BackingIno != 0 && l.BackingIno == id.ino && l.BackingDev == id.dev)
		}
		if !mine {
			continue
		}
		if err := detachLoop(l); err != nil {
			errs = append(errs, fmt.Errorf("medium %s: %w", h, err))
			continue
		}
		rep.Detached = append(rep.Detached, l.Device)
		log.Info("detached", "device", l.Device, "image", l.BackingFile)
	}
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			if !e.IsDir() || !partDirRe.MatchString(e.Name()) {
				continue
			}
			p := filepath.Join(base, e.Name())
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("medium %s: removing %s: %w", h, p, err))
				continue
			}
			rep.Removed = append(rep.Removed, p)
		}
	}
	if err := os.Remove(h.LayoutRecordPath(root)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("medium %s: removing the layout record: %w", h, err))
	}
	if err := os.Remove(base); err == nil {
		rep.Removed = append(rep.Removed, base)
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("medium %s: removing %s: %w", h, base, err))
	}
	return rep, errors.Join(errs...)
}

// detachLoop detaches a listed loop only if it is still the same device:
// the fd we open pins it, and LOOP_GET_STATUS64 through that fd must show
// the same backing inode and offset, so a number freed and reused by
// another process meanwhile is left alone.
func detachLoop(l Loop) error {
	f, err := os.OpenFile(l.Device, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &LoopError{Op: "detach", Device: l.Device, Image: l.BackingFile, Err: err}
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return nil // already free
	}
	if err != nil {
		return &LoopError{Op: "detach", Device: l.Device, Image: l.BackingFile, Err: err}
	}
	if (l.BackingIno != 0 && info.Inode != l.BackingIno) || int64(info.Offset) != l.Offset {
		return nil // reused by someone else since we listed it
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return &LoopError{Op: "detach", Device: l.Device, Image: l.BackingFile, Err: err}
	}
	return nil
}
