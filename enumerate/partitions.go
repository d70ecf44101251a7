package enumerate

import (
	"fmt"
	"os"
	"regexp"
	"slices"

	"golang.org/x/sys/unix"
)

var partitionName = regexp.MustCompile(`^p[0-9]+$`)

// PartitionMounts returns the mount points a walk of a medium root must
// enter (for Options.EnterMounts), following the layout of design.md: a
// medium with one mountable filesystem is mounted at the medium root itself,
// which then holds no partition mounts to enter (nil); a multi-partition
// medium root is a plain directory whose children pN are the partitions'
// mount points. Only direct children named p<digits> that are mount roots
// are returned, spelled as the walk spells them (root + "/" + name).
func PartitionMounts(root string) ([]string, error) {
	isMount, err := mountRoot(root)
	if err != nil {
		return nil, fmt.Errorf("medium root %q: %w", root, err)
	}
	if isMount {
		return nil, nil
	}
	names, err := readNames(root)
	if err != nil {
		return nil, fmt.Errorf("medium root %q: %w", root, err)
	}
	var mounts []string
	for _, n := range names {
		if !partitionName.MatchString(n) {
			continue
		}
		p := joinPath(root, n)
		m, err := mountRoot(p)
		if err != nil {
			return nil, fmt.Errorf("partition mount %q: %w", p, err)
		}
		if m {
			mounts = append(mounts, p)
		}
	}
	slices.Sort(mounts)
	return mounts, nil
}

// mountRoot reports whether path (not followed if a symlink) is the root of
// a mount, by statx's STATX_ATTR_MOUNT_ROOT (Linux 5.8+).
func mountRoot(path string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("kernel does not report mount roots (statx STATX_ATTR_MOUNT_ROOT)")
	}
	return stx.Mode&unix.S_IFMT == unix.S_IFDIR && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// joinPath joins like find: "dir" + "/" + name, or "dir/" + name.
func joinPath(dir, name string) string {
	if len(dir) > 0 && dir[len(dir)-1] == '/' {
		return dir + name
	}
	return dir + "/" + name
}
