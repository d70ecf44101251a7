package testimg

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Placeholders in the command line given to BuildISO.
const (
	ISOTree  = "{tree}"  // the staged tree's directory
	ISOImage = "{image}" // the image to write
)

// BuildISO writes an ISO 9660 image of spec's tree to path with a real
// mastering tool: argv is its command line (xorriso, genisoimage …) in which
// ISOTree and ISOImage stand for the staged tree and the image. The tree is
// staged as for BuildImage, then every staged inode gets the spec's
// permission bits and mtime (owners too when running as root), so that the
// tool records them in Rock Ridge. It runs with LANG=C.UTF-8 so that the
// tools read UTF-8 names. Device nodes need root.
func BuildISO(path string, spec Spec, argv ...string) error {
	byPath, err := spec.validate()
	if err != nil {
		return err
	}
	if len(argv) == 0 {
		return fmt.Errorf("testimg: BuildISO %s: no command", path)
	}
	stage, err := os.MkdirTemp(stageParent(spec, path), ".testimg-iso-")
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	defer os.RemoveAll(stage)
	tree := filepath.Join(stage, "tree")
	if err := os.Mkdir(tree, 0o700); err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	slots, err := stageTree(tree, spec, byPath)
	if err != nil {
		return fmt.Errorf("testimg: staging %s: %w", path, err)
	}
	for _, s := range slots {
		if err := setAttrs(tree, s.e); err != nil {
			return fmt.Errorf("testimg: staging %s: entry %q: %w", path, s.e.Path, err)
		}
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		a = strings.ReplaceAll(a, ISOTree, tree)
		args[i] = strings.ReplaceAll(a, ISOImage, path)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(path)
		return fmt.Errorf("testimg: %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ISO builds an ISO image of spec with argv (see BuildISO) in a fresh
// t.TempDir() and returns its path; it fails the test on any error.
func ISO(t testing.TB, spec Spec, argv ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.iso")
	if err := BuildISO(path, spec, argv...); err != nil {
		t.Fatal(err)
	}
	return path
}

// setAttrs gives a staged inode the spec's mode, owner (as root) and
// mtime (chown first: it clears setuid bits); staging leaves them at
// 0600/0700 and a tag in atime.
func setAttrs(tree string, e Entry) error {
	p := tree
	if e.Path != "" {
		p = filepath.Join(tree, e.Path)
	}
	if os.Geteuid() == 0 {
		if err := unix.Fchownat(unix.AT_FDCWD, p, int(e.Uid), int(e.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if e.Kind != Symlink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, e.perm(), 0); err != nil {
			return err
		}
	}
	m := e.mtime()
	ts := []unix.Timespec{unix.NsecToTimespec(m.UnixNano()), unix.NsecToTimespec(m.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
