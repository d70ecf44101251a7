package loopdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
)

// ErrImageInUse: a loop device still reads the image after the medium was
// unmounted (it is mounted or held somewhere NTT did not mount it), so the
// image must not be removed.
var ErrImageInUse = errors.New("image is still in use")

// ReleaseSpec says which medium's image to release.
type ReleaseSpec struct {
	Medium string
	// Image is the image file about to be removed.
	Image string
	// Root is the mount root; "" means DefaultRoot.
	Root string
	// Timeout bounds each umount(2); 0 means DefaultMountTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Release makes the medium's image safe to remove: it unmounts the medium
// and detaches every loop device of the image (Unmount, as the runbook's
// rollback `ntt-mount-helper unmount` does), then checks that no loop
// device reads the image any more. A loop still attached — mounted
// somewhere else, or held open — is an error matching ErrImageInUse that
// names the device and its mount points; the caller must then keep the
// image. Removing an image that is still mounted would leave a "(deleted)"
// loop mounted until someone notices.
//
// When nothing is mounted at <root>/<hash> and no loop reads the image,
// Release only reads the kernel's state: it takes no lock and makes no
// directory.
func Release(ctx context.Context, spec ReleaseSpec) (*UnmountReport, error) {
	h, err := medium.Parse(spec.Medium)
	if err != nil {
		return nil, err
	}
	root := cleanRoot(spec.Root)
	busy := func() ([]*MountInfo, []Loop, error) {
		ms, err := Mounts(MountpointFilter(h.MountPath(root)))
		if err != nil {
			return nil, nil, fmt.Errorf("medium %s: %w", h, err)
		}
		ls, err := FindByImage(spec.Image)
		if err != nil {
			return nil, nil, fmt.Errorf("medium %s: %w", h, err)
		}
		return ms, ls, nil
	}
	ms, ls, err := busy()
	if err != nil {
		return nil, err
	}
	rep := &UnmountReport{Medium: string(h), Unmounted: []string{}, Detached: []string{}, Removed: []string{}}
	if len(ms) == 0 && len(ls) == 0 {
		return rep, nil
	}
	rep, uerr := Unmount(ctx, string(h), root, &UnmountOptions{Image: spec.Image, Timeout: spec.Timeout, Logger: spec.Logger})
	ms, ls, err = busy()
	if err != nil {
		return rep, errors.Join(uerr, err)
	}
	// A loop mounted elsewhere was only marked autoclear by the detach:
	// it reads the image until that mount goes.
	var all []*MountInfo
	if len(ls) > 0 {
		if all, err = Mounts(nil); err != nil {
			return rep, fmt.Errorf("medium %s: %w", h, err)
		}
	}
	var held []string
	for _, l := range ls {
		var where []string
		for _, m := range all {
			if m.Major == l.Major && m.Minor == l.Minor {
				where = append(where, m.Mountpoint)
			}
		}
		if len(where) > 0 {
			held = append(held, fmt.Sprintf("%s is mounted at %s", l.Device, strings.Join(where, ", ")))
		} else {
			held = append(held, fmt.Sprintf("%s is held open", l.Device))
		}
	}
	for _, m := range ms {
		held = append(held, fmt.Sprintf("%s is still mounted at %s", m.Source, m.Mountpoint))
	}
	if len(held) > 0 {
		err := fmt.Errorf("medium %s: image %s %w: %s", h, spec.Image, ErrImageInUse, strings.Join(held, "; "))
		return rep, errors.Join(err, uerr)
	}
	return rep, uerr
}
