package testimg

import (
	"bytes"
	"fmt"
	"io/fs"
	"time"
)

// HFSPlusSample returns the HFS+ test volume readers check against, with
// the given block and node sizes (0: 4096): nested and empty folders, an
// empty file, files of one byte to many blocks, names that are
// decomposed Unicode (NFD, as HFS+ stores them) and mixed case (the
// catalog orders them by TN1150's case folding), and a folder of 150
// files, enough for several leaf nodes and an index level; files with
// resource forks (one with an empty data fork), symlinks (relative,
// absolute, dangling), hardlinks (link files naming indirect node files
// in the private folder, which HFSPlusLayout.Private lists; and a folder
// hardlink, whose tree is seen at both its names), and
// compressed files (decmpfs: zlib in the attribute, and in 64 KiB chunks in
// the resource fork, one of them incompressible), and fragmented files: 8
// extents (all in the catalog
// record), 9 and 20 (the rest in extents-overflow records). What a reader
// must find is what WriteHFSPlus returns in HFSPlusLayout.Files.
func HFSPlusSample(blockSize, nodeSize int) HFSPlusSpec {
	bs := blockSize
	if bs == 0 {
		bs = 4096
	}
	blockSize = bs
	es := []HFSPlusEntry{
		{Entry: Entry{Path: "", Kind: Dir, Mode: 0o755, Mtime: time.Unix(1234567890, 0)}},
		{Entry: Entry{Path: "hello.txt", Kind: File, Data: []byte("hello, archivist\n"), Mtime: time.Unix(1700000000, 0)}},
		{Entry: Entry{Path: "empty", Kind: File}},
		{Entry: Entry{Path: "one-byte", Kind: File, Data: []byte{0}}},
		{Entry: Entry{Path: "seeded.bin", Kind: File, Size: 100000, Seed: 7}},
		{Entry: Entry{Path: "Banana", Kind: File, Data: []byte("B\n")}},
		{Entry: Entry{Path: "apple", Kind: File, Data: []byte("a\n")}},
		{Entry: Entry{Path: "cherry", Kind: Dir, Mode: 0o700, Uid: 501, Gid: 20}},
		{Entry: Entry{Path: "cherry/Cafe\u0301.txt", Kind: File, Data: []byte("café, decomposed\n"), Mode: 0o600, Uid: 501, Gid: 20}},
		{Entry: Entry{Path: "cherry/\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac", Kind: File, Data: []byte("greek\n")}},
		{Entry: Entry{Path: "cherry/\u041a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u0430", Kind: File, Data: []byte("cyrillic\n")}},
		{Entry: Entry{Path: "cherry/Ωmega", Kind: File, Data: []byte("omega\n")}},
		{Entry: Entry{Path: "cherry/αlpha", Kind: File, Data: []byte("alpha\n")}},
		{Entry: Entry{Path: "cherry/Жук", Kind: File, Data: []byte("beetle\n")}},
		{Entry: Entry{Path: "cherry/аист", Kind: File, Data: []byte("stork\n")}},
		{Entry: Entry{Path: "cherry/zw‍j", Kind: File, Data: []byte("zero-width joiner\n")}},
		{Entry: Entry{Path: "emptydir", Kind: Dir}},
		{Entry: Entry{Path: "setuid", Kind: File, Data: []byte("#!/bin/false\n"), Mode: 0o755 | fs.ModeSetuid | fs.ModeSetgid}},
		{Entry: Entry{Path: "sticky", Kind: Dir, Mode: 0o777 | fs.ModeSticky}},
		{Entry: Entry{Path: "a/b/c/d/e/deep.txt", Kind: File, Data: []byte("deep\n")}},
		{Entry: Entry{Path: "old", Kind: File, Data: []byte("1904\n"), Mtime: time.Date(1904, 1, 1, 0, 0, 1, 0, time.UTC)}},
		{Entry: Entry{Path: "spaces and : colon", Kind: File, Data: []byte("colon\n")}},
		{Entry: Entry{Path: "forks/both", Kind: File, Data: []byte("data fork\n")}, Rsrc: []byte("resource fork\n")},
		{Entry: Entry{Path: "forks/rsrc-only", Kind: File}, Rsrc: seeded(3*blockSize+5, 11)},
		{Entry: Entry{Path: "forks/big-both", Kind: File, Size: int64(5*blockSize + 1), Seed: 12}, Rsrc: seeded(2*blockSize+3, 13)},
		{Entry: Entry{Path: "links/to-hello", Kind: Symlink, Target: "../hello.txt"}},
		{Entry: Entry{Path: "links/absolute", Kind: Symlink, Target: "/System/Library"}},
		{Entry: Entry{Path: "links/dangling", Kind: Symlink, Target: "no/such/file", Mtime: time.Unix(1500000000, 0)}},
		{Entry: Entry{Path: "hard/first", Kind: File, Data: []byte("one content, three names\n"), Mode: 0o640}, Rsrc: []byte("and its resource fork\n")},
		{Entry: Entry{Path: "hard/second", Kind: Hardlink, Target: "hard/first"}},
		{Entry: Entry{Path: "cherry/third", Kind: Hardlink, Target: "hard/first"}},
		{Entry: Entry{Path: "hard/lone", Kind: File, Size: int64(2*blockSize + 9), Seed: 17}},
		{Entry: Entry{Path: "hard/lone-link", Kind: Hardlink, Target: "hard/lone"}},
		{Entry: Entry{Path: "backup/2020", Kind: Dir, Mtime: time.Unix(1600000000, 0)}},
		{Entry: Entry{Path: "backup/2020/notes.txt", Kind: File, Data: []byte("kept by a folder hardlink\n")}},
		{Entry: Entry{Path: "backup/2021", Kind: Hardlink, Target: "backup/2020"}},
		{Entry: Entry{Path: "backup/2020/sub/deep.bin", Kind: File, Size: 3000, Seed: 20}},
		{Entry: Entry{Path: "backup/2020/hello-link", Kind: Hardlink, Target: "hard/first"}},
		{Entry: Entry{Path: "compressed/inline", Kind: File, Data: bytes.Repeat([]byte("decmpfs type 3, zlib in the attribute\n"), 50)}, Compress: DecmpfsInline},
		{Entry: Entry{Path: "compressed/rsrc", Kind: File, Data: bytes.Repeat([]byte("type 4: 64 KiB chunks in the resource fork\n"), 4000)}, Compress: DecmpfsRsrc},
		{Entry: Entry{Path: "compressed/rsrc-seeded", Kind: File, Size: 70000, Seed: 18}, Compress: DecmpfsRsrc},
		{Entry: Entry{Path: "compressed/empty", Kind: File}, Compress: DecmpfsInline},
		{Entry: Entry{Path: "compressed/inline-raw", Kind: File, Size: 200, Seed: 19}, Compress: DecmpfsInline},
		{Entry: Entry{Path: "frag/eight", Kind: File, Size: int64(8 * blockSize), Seed: 14}, Fragments: 8},
		{Entry: Entry{Path: "frag/twenty", Kind: File, Size: int64(40*blockSize - 100), Seed: 15}, Fragments: 20},
		{Entry: Entry{Path: "frag/nine", Kind: File, Size: int64(9 * blockSize), Seed: 16}, Fragments: 9},
	}
	for i := 0; i < 150; i++ {
		es = append(es, HFSPlusEntry{Entry: Entry{Path: fmt.Sprintf("many/File %03d", i), Kind: File, Size: int64(i * 37), Seed: uint64(1000 + i)}})
	}
	return HFSPlusSpec{BlockSize: bs, NodeSize: nodeSize, Label: "NTT sample", Entries: es}
}

// seeded returns n bytes of ContentAt(seed).
func seeded(n int, seed uint64) []byte {
	p := make([]byte, n)
	ContentAt(seed, p, 0)
	return p
}
