package testimg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Check compares the tree of an image mounted at root with spec, entry by
// entry and byte for byte, with lstat/readlink semantics (symlinks are never
// followed): type, permission bits, owner, size, content, symlink target,
// device numbers, mtime (seconds, and nanoseconds where the image keeps
// them), link count, and that the names of a hardlink share one inode. It
// also reports names present under root that the spec does not have
// (lost+found at the top is expected). It returns every mismatch, joined;
// nil means the tree is exactly the spec.
func Check(root string, spec Spec) error {
	if _, err := spec.validate(); err != nil {
		return err
	}
	rootFd, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFd)

	// The expected inode of every path, with implied parents.
	want := map[string]Entry{"": {Kind: Dir}}
	names := map[string][]string{} // inode-defining path -> its names
	order := []string{""}
	children := map[string]map[string]bool{}
	add := func(p string, e Entry) {
		if _, ok := want[p]; !ok {
			order = append(order, p)
		}
		want[p] = e
		parent, name := split(p)
		if children[parent] == nil {
			children[parent] = map[string]bool{}
		}
		children[parent][name] = true
	}
	for _, e := range spec.Entries {
		if e.Path == "" {
			want[""] = e
			continue
		}
		for p := e.Path; ; {
			parent, _ := split(p)
			if _, ok := want[parent]; ok || parent == "" {
				break
			}
			p = parent
			add(p, Entry{Path: p, Kind: Dir})
		}
		add(e.Path, e)
	}
	owner := func(p string) string {
		if e := want[p]; e.Kind == Hardlink {
			return e.Target
		}
		return p
	}
	for _, p := range order {
		names[owner(p)] = append(names[owner(p)], p)
	}

	var errs []error
	fail := func(p, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%q: %s", p, fmt.Sprintf(format, args...)))
	}
	inos := map[string]uint64{}
	for _, p := range order {
		e := want[p]
		def := want[owner(p)]
		var st unix.Stat_t
		var target string
		var content error
		err := atDir(rootFd, p, func(dfd int, name string) error {
			if p == "" {
				return unix.Fstat(rootFd, &st)
			}
			if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("lstat: %w", err)
			}
			switch def.Kind {
			case Symlink:
				buf := make([]byte, 8192)
				n, err := unix.Readlinkat(dfd, name, buf)
				if err != nil {
					return err
				}
				target = string(buf[:n])
			case File:
				content = compareContent(dfd, name, def)
			}
			return nil
		})
		if err != nil {
			fail(p, "%v", err)
			continue
		}
		inos[p] = st.Ino
		if got, w := st.Mode, def.StatMode(); got != w {
			fail(p, "mode %#o, want %#o", got, w)
		}
		if st.Uid != def.Uid || st.Gid != def.Gid {
			fail(p, "owner %d:%d, want %d:%d", st.Uid, st.Gid, def.Uid, def.Gid)
		}
		mt := def.mtime()
		wantNsec := int64(mt.Nanosecond())
		if !spec.wideTimes() {
			wantNsec = 0
		}
		if st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != wantNsec {
			fail(p, "mtime %d.%09d, want %d.%09d", st.Mtim.Sec, st.Mtim.Nsec, mt.Unix(), wantNsec)
		}
		switch def.Kind {
		case File:
			if st.Size != def.FileSize() {
				fail(p, "size %d, want %d", st.Size, def.FileSize())
			}
			if content != nil {
				fail(p, "%v", content)
			}
		case Symlink:
			if target != def.Target {
				fail(p, "symlink target %q, want %q", target, def.Target)
			}
			if st.Size != int64(len(def.Target)) {
				fail(p, "symlink size %d, want %d", st.Size, len(def.Target))
			}
		case CharDev, BlockDev:
			if ma, mi := unix.Major(st.Rdev), unix.Minor(st.Rdev); ma != def.Major || mi != def.Minor {
				fail(p, "device %d:%d, want %d:%d", ma, mi, def.Major, def.Minor)
			}
		}
		wantLinks := uint64(len(names[owner(p)]))
		if def.Kind == Dir {
			wantLinks = 2
			if p == "" {
				wantLinks++ // lost+found
			}
			for c := range children[p] {
				if want[joinPath(p, c)].Kind == Dir {
					wantLinks++
				}
			}
		}
		if st.Nlink != wantLinks {
			fail(p, "nlink %d, want %d", st.Nlink, wantLinks)
		}
		if e.Kind == Dir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			extra, err := extraNames(rootFd, p, children[p])
			if err != nil {
				fail(p, "listing: %v", err)
			}
			for _, n := range extra {
				fail(joinPath(p, n), "present but not in the spec")
			}
		}
	}
	for _, p := range order {
		if o := owner(p); o != p {
			if a, b := inos[p], inos[o]; a == 0 || a != b {
				fail(p, "inode %d, want the inode of hardlink target %q (%d)", a, o, b)
			}
		}
	}
	return errors.Join(errs...)
}

func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "/" + name
}

// compareContent reads the file name in dfd (not following symlinks) and
// compares it with the entry's content.
func compareContent(dfd int, name string, e Entry) error {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	want := e.ContentReader()
	a := make([]byte, 1<<16)
	b := make([]byte, 1<<16)
	var off int64
	for {
		n, rerr := io.ReadFull(f, a)
		m, werr := io.ReadFull(want, b)
		if !bytes.Equal(a[:n], b[:m]) {
			i := 0
			for i < min(n, m) && a[i] == b[i] {
				i++
			}
			return fmt.Errorf("content differs at byte %d", off+int64(i))
		}
		off += int64(n)
		rdone := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		wdone := werr == io.EOF || werr == io.ErrUnexpectedEOF
		if rerr != nil && !rdone {
			return fmt.Errorf("reading at byte %d: %w", off, rerr)
		}
		if rdone || wdone {
			return nil // sizes are compared by the caller
		}
	}
}

// extraNames lists directory p and returns names that are not in want
// (lost+found at the root excepted).
func extraNames(rootFd int, p string, want map[string]bool) ([]string, error) {
	var fd int
	var err error
	if p == "" {
		fd, err = unix.Openat(rootFd, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	} else {
		err = atDir(rootFd, p, func(dfd int, name string) error {
			var e error
			fd, e = unix.Openat(dfd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			return e
		})
	}
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), p)
	defer d.Close()
	all, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var extra []string
	for _, n := range all {
		if !want[n] && !(p == "" && n == "lost+found") {
			extra = append(extra, n)
		}
	}
	return extra, nil
}

// DeepPath returns a path of levels directories, each name nameLen bytes
// long (distinct per level), ending in "leaf". With levels*(nameLen+1) over
// 4096 the path exceeds PATH_MAX and can be reached only relative to an
// open directory.
func DeepPath(levels, nameLen int) string {
	parts := make([]string, levels+1)
	for i := range levels {
		s := fmt.Sprintf("d%03d-", i)
		parts[i] = s + strings.Repeat("x", max(0, nameLen-len(s)))
	}
	parts[levels] = "leaf"
	return strings.Join(parts, "/")
}
