package loopdev

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ReapOptions say what Reap may clean up.
type ReapOptions struct {
	// Image, if set, also reaps that image's loops that are mounted
	// nowhere (orphans of failed attempts). Call it for an image only
	// while no Mount of it is running (Mount itself holds the medium lock
	// when it reaps).
	Image string
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
	// Errors are loops that could not be cleaned up, one sentence each.
	Errors []string `json:"errors,omitempty"`
}

// Reap detaches every loop device whose backing file was deleted (or, for
// opts.Image, replaced), unmounting its mounts first, and with opts.Image
// also that image's loops that are mounted nowhere. It logs the seed's
// "Cleaning up stale loop device: /dev/loopN (deleted inode)" for each.
// Loops it cannot clean are listed in the report's Errors; the error
// return is for failures to read the kernel's state at all.
func Reap(ctx context.Context, opts ReapOptions) (*ReapReport, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultMountTimeout
	}
	var img *imageID
	if opts.Image != "" {
		id, err := identifyImage(opts.Image)
		if err != nil {
			return nil, err
		}
		img = &id
	}
	return reap(ctx, logger(opts.Logger), img, true, timeout)
}

// reap is Reap for a given image (nil: none); all extends the deleted-inode
// sweep to every loop on the machine.
func reap(ctx context.Context, log *slog.Logger, img *imageID, all bool, timeout time.Duration) (*ReapReport, error) {
	rep := &ReapReport{Reaped: []ReapedLoop{}}
	loops, err := List()
	if err != nil {
		return nil, err
	}
	var mounts []*MountInfo
	for _, l := range loops {
		mine := img != nil && img.matches(l)
		var reason string
		switch {
		case l.Deleted && (all || mine):
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
		var mine2 []*MountInfo
		for _, m := range mounts {
			if m.Major == l.Major && m.Minor == l.Minor && l.Major != 0 {
				mine2 = append(mine2, m)
			}
		}
		if reason == "not mounted" && (len(mine2) > 0 || hasHolders(l)) {
			continue // in use: not an orphan
		}
		r := ReapedLoop{Loop: l, Reason: reason}
		if reason == "not mounted" {
			log.Info(fmt.Sprintf("Cleaning up orphan loop device: %s (not mounted)", l.Device), "image", l.BackingFile)
		} else {
			log.Info(fmt.Sprintf("Cleaning up stale loop device: %s (%s)", l.Device, reason), "image", l.BackingFile)
		}
		sort.Slice(mine2, func(i, j int) bool { return len(mine2[i].Mountpoint) > len(mine2[j].Mountpoint) })
		failed := false
		for _, m := range mine2 {
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
