package loopdev

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
)

// ReapOptions say what Reap may clean up.
type ReapOptions struct {
	// Image, if set, also reaps that image's loops that are mounted
	// nowhere (orphans of failed attempts). Call it for an image only
	// while no Mount of it is running (Mount itself holds the medium lock
	// when it reaps).
	Image string
	// Root is the mount root; "" means DefaultRoot. A loop mounted beneath
	// it is NTT's.
	Root string
	// ImagesDirs are directories holding NTT's images: a loop whose backing
	// file was in one of them is NTT's. Image's directory always counts.
	ImagesDirs []string
	// Timeout bounds each umount(2); 0 means DefaultMountTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// ReapedLoop is one loop device Reap detached.
type ReapedLoop struct {
	Loop
	// Reason is "deleted inode", "replaced inode" or "not mounted".
	Reason string `json:"reason"`
	// Unmounted lists the mount points taken down first.
	Unmounted []string `json:"unmounted,omitempty"`
}

// ReapReport says what Reap did.
type ReapReport struct {
	Reaped []ReapedLoop `json:"reaped"`
	// LeftAlone are loops whose backing file was deleted but which are not
	// NTT's (see Reap): someone else's, so never touched.
	LeftAlone []Loop `json:"left_alone,omitempty"`
	// Errors are loops that could not be cleaned up, one sentence each.
	Errors []string `json:"errors,omitempty"`
}

// Reap detaches NTT's loop devices whose backing file was deleted (or, for
// opts.Image, replaced), unmounting their mounts first, and with opts.Image
// also that image's loops that are mounted nowhere. It logs the seed's
// "Cleaning up stale loop device: /dev/loopN (deleted inode)" for each.
//
// A loop is NTT's when its backing file is the image, is named <hash>.img
// (a medium hash, internal/medium), was in one of the images directories,
// or when it is mounted beneath the mount root. Other deleted-backing loops
// on the machine belong to someone else: they are logged ("Leaving loop
// device alone") and listed in LeftAlone, never detached.
//
// Loops it cannot clean are listed in the report's Errors; the error
// return is for failures to read the kernel's state at all.
func Reap(ctx context.Context, opts ReapOptions) (*ReapReport, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultMountTimeout
	}
	sc := reapScope{root: cleanRoot(opts.Root), sweep: true}
	if opts.Image != "" {
		id, err := identifyImage(opts.Image)
		if err != nil {
			return nil, err
		}
		sc.img = &id
	}
	sc.setDirs(opts.ImagesDirs)
	return reap(ctx, logger(opts.Logger), sc, timeout)
}

// reapScope says which loops reap may touch.
type reapScope struct {
	img   *imageID // the image being mounted: its stale loops and orphans
	sweep bool     // also every deleted-backing loop that is NTT's
	root  string   // mount root, resolved
	dirs  []string // images directories, as given and resolved
}

// setDirs records the images directories (and img's own), each both as
// given and with symlinks resolved: sysfs shows the path the loop was
// attached with.
func (sc *reapScope) setDirs(dirs []string) {
	if sc.img != nil {
		dirs = append(dirs, filepath.Dir(sc.img.path))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		sc.dirs = append(sc.dirs, filepath.Clean(d))
		if r, err := filepath.EvalSymlinks(d); err == nil && r != d {
			sc.dirs = append(sc.dirs, r)
		}
	}
}

// ntts reports whether the loop is NTT's (see Reap), given its mounts.
func (sc reapScope) ntts(l Loop, mounts []*MountInfo) bool {
	if sc.img != nil && sc.img.matches(l) {
		return true
	}
	if isImageName(filepath.Base(l.BackingFile)) {
		return true
	}
	dir := filepath.Dir(l.BackingFile)
	for _, d := range sc.dirs {
		if dir == d {
			return true
		}
	}
	for _, m := range mounts {
		if m.Mountpoint == sc.root || strings.HasPrefix(m.Mountpoint, strings.TrimSuffix(sc.root, "/")+"/") {
			return true
		}
	}
	return false
}

// isImageName reports whether name is <hash>.img for a valid medium hash:
// the seed's name for a medium's image.
func isImageName(name string) bool {
	h, ok := strings.CutSuffix(name, ".img")
	if !ok {
		return false
	}
	_, err := medium.Parse(h)
	return err == nil
}

// reap detaches the stale loops the scope allows. It is the one reaping
// function: Reap, and Mount before it attaches (ntt-mount-helper mount,
// ntt-pipeline's mount phase), both come here.
func reap(ctx context.Context, log *slog.Logger, sc reapScope, timeout time.Duration) (*ReapReport, error) {
	rep := &ReapReport{Reaped: []ReapedLoop{}}
	loops, err := List()
	if err != nil {
		return nil, err
	}
	var mounts []*MountInfo
	for _, l := range loops {
		mine := sc.img != nil && sc.img.matches(l)
		var reason string
		switch {
		case l.Deleted && (sc.sweep || mine):
			reason = "deleted inode"
		case l.Replaced && mine:
			reason = "replaced inode"
		case mine:
			reason = "not mounted" // decided below, once mounts are read
		default:
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if mounts == nil {
			if mounts, err = Mounts(nil); err != nil {
				return rep, err
			}
		}
		var its []*MountInfo
		for _, m := range mounts {
			if m.Major == l.Major && m.Minor == l.Minor && l.Major != 0 {
				its = append(its, m)
			}
		}
		if reason == "not mounted" && (len(its) > 0 || hasHolders(l)) {
			continue // in use: not an orphan
		}
		if !sc.ntts(l, its) {
			rep.LeftAlone = append(rep.LeftAlone, l)
			log.Info(fmt.Sprintf("Leaving loop device alone: %s (%s, not an NTT image)", l.Device, reason),
				"image", l.BackingFile, "why", "its backing file is not named <hash>.img, was in no images directory, and it is not mounted under "+sc.root)
			continue
		}
		r := ReapedLoop{Loop: l, Reason: reason}
		if reason == "not mounted" {
			log.Info(fmt.Sprintf("Cleaning up orphan loop device: %s (not mounted)", l.Device), "image", l.BackingFile)
		} else {
			log.Info(fmt.Sprintf("Cleaning up stale loop device: %s (%s)", l.Device, reason), "image", l.BackingFile)
		}
		sort.Slice(its, func(i, j int) bool { return len(its[i].Mountpoint) > len(its[j].Mountpoint) })
		failed := false
		for _, m := range its {
			if err := unmountWithTimeout(m.Mountpoint, timeout); err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("stale loop %s: %v", l.Device, err))
				failed = true
				continue
			}
			r.Unmounted = append(r.Unmounted, m.Mountpoint)
			log.Info("unmounted stale mount", "device", l.Device, "mount", m.Mountpoint)
		}
		if err := detachLoop(l); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		if failed {
			// Still mounted: the kernel detaches it when that mount goes.
			continue
		}
		rep.Reaped = append(rep.Reaped, r)
	}
	return rep, nil
}

// hasHolders reports whether something stacks on the device (device
// mapper, md): such a loop is in use even though nothing mounts it.
func hasHolders(l Loop) bool {
	ents, err := os.ReadDir(filepath.Join(sysBlock, fmt.Sprintf("loop%d", l.Number), "holders"))
	return err == nil && len(ents) > 0
}
