package testimg

import (
	"io/fs"
	"strings"
	"time"
)

// HostileNames returns file names that broke real tools: the raw-format
// field separator 0x1C, newline, CR, tab, backslash, quotes, shell and
// printf metacharacters, invalid UTF-8 and Latin-1, control bytes, leading
// dash and spaces, and names of exactly 255 bytes (ASCII and multi-byte).
// Every one is a valid ext4 name; all are distinct.
func HostileNames() []string {
	return []string{
		"field\x1csep",
		"\x1c",
		"new\nline",
		"\n",
		"carriage\rreturn",
		"tab\tname",
		`back\slash`,
		`\`,
		"invalid-\xff\xfe-utf8",
		"caf\xe9",
		"\x01\x02\x7f",
		"-dash",
		" leading space",
		"trailing space ",
		"'single\"double`back",
		"$(echo pwned);rm -rf *",
		"%s%n%x",
		"*?[glob]{a,b}",
		"...",
		".hidden",
		"emoji-\xf0\x9f\x98\x80",
		strings.Repeat("n", 255),
		strings.Repeat("\xc3\xa9", 127) + "x", // 255 bytes of "é…x"
	}
}

// Times returns mtimes at the edges of what ext4 with 256-byte inodes
// stores: 1940 (negative), the earliest second (-2^31, 1901-12-13), the
// epoch, a negative time with nanoseconds (-1.5 s, which is second -2 when
// floored, as find's %Ts does), 2100-01-01 with nanoseconds (past 2038) and
// the last instant ext4 can store (2446-05-10).
func Times() []time.Time {
	return []time.Time{
		time.Unix(-86400*365*30, 0),
		time.Unix(-1<<31, 0),
		time.Unix(0, 0),
		time.Unix(-2, 500000000),
		time.Unix(4102444800, 123456789),
		time.Unix(maxWideTime, 999999999),
	}
}

// EveryKind returns a spec (ext4, 256-byte inodes) with every entry kind,
// every hostile name (as files in "names/" and as a directory holding a
// file), every edge mtime, sparse, empty and seeded files, relative,
// absolute, dangling and long symlinks, hardlinks across directories,
// devices with large major/minor numbers, odd modes and owners, and a path
// 20 levels deep (shorter than PATH_MAX, so path-based tools reach it too).
func EveryKind() Spec {
	es := []Entry{
		{Path: "", Kind: Dir, Mode: 0o755, Mtime: time.Unix(1234567890, 0)},
		{Path: "empty", Kind: File},
		{Path: "hello.txt", Kind: File, Data: []byte("hello, archivist\n"), Mtime: time.Unix(1700000000, 0)},
		{Path: "seeded.bin", Kind: File, Size: 100000, Seed: 7},
		{Path: "sparse.bin", Kind: File, Size: 3 << 20, Seed: 8, Sparse: true},
		{Path: "zeros.bin", Kind: File, Data: make([]byte, 5000)},
		{Path: "setuid", Kind: File, Data: []byte("#!/bin/false\n"), Mode: 0o755 | fs.ModeSetuid | fs.ModeSetgid},
		{Path: "noperms", Kind: File, Data: []byte("secret"), Mode: NoPerms},
		{Path: "owned", Kind: File, Data: []byte("x"), Uid: 1000, Gid: 100},
		{Path: "bigid", Kind: File, Data: []byte("y"), Uid: 100000, Gid: 200000},
		{Path: "dir", Kind: Dir, Mode: 0o700},
		{Path: "dir/emptydir", Kind: Dir},
		{Path: "sticky", Kind: Dir, Mode: 0o777 | fs.ModeSticky},
		{Path: "dir/file", Kind: File, Size: 4097, Seed: 9},
		{Path: "link-rel", Kind: Symlink, Target: "dir/file"},
		{Path: "dir/link-up", Kind: Symlink, Target: "../hello.txt"},
		{Path: "link-abs", Kind: Symlink, Target: "/etc/passwd"},
		{Path: "link-dangling", Kind: Symlink, Target: "does/not/exist"},
		{Path: "link-long", Kind: Symlink, Target: strings.Repeat("long/", 60) + "end"},
		{Path: "link-hostile", Kind: Symlink, Target: "new\nline/\x1c/\xff"},
		{Path: "hard-a", Kind: File, Data: []byte("shared inode\n")},
		{Path: "hard-b", Kind: Hardlink, Target: "hard-a"},
		{Path: "dir/hard-c", Kind: Hardlink, Target: "hard-a"},
		{Path: "fifo", Kind: FIFO, Mode: 0o600},
		{Path: "fifo-link", Kind: Hardlink, Target: "fifo"},
		{Path: "socket", Kind: Socket, Mode: 0o755},
		{Path: "chardev", Kind: CharDev, Major: 1, Minor: 3},
		{Path: "chardev-big", Kind: CharDev, Major: 511, Minor: 70000, Mode: 0o600},
		{Path: "blockdev", Kind: BlockDev, Major: 259, Minor: 1048575},
	}
	for i, n := range HostileNames() {
		es = append(es,
			Entry{Path: "names/" + n, Kind: File, Size: int64(i * 10), Seed: uint64(100 + i)},
			Entry{Path: "dirs/" + n + "/inside", Kind: File, Data: []byte(n)})
	}
	for i, t := range Times() {
		es = append(es,
			Entry{Path: "times/file" + string(rune('0'+i)), Kind: File, Data: []byte{byte(i)}, Mtime: t},
			Entry{Path: "times/dir" + string(rune('0'+i)), Kind: Dir, Mtime: t},
			Entry{Path: "times/link" + string(rune('0'+i)), Kind: Symlink, Target: "file0", Mtime: t})
	}
	es = append(es, Entry{Path: "deep/" + DeepPath(20, 8), Kind: File, Data: []byte("deep\n")})
	return Spec{FSType: "ext4", Label: "every-kind", Entries: es}
}
