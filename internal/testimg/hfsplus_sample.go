package testimg

import (
	"fmt"
	"time"
)

// HFSPlusSample returns the HFS+ test volume readers check against, with
// the given block and node sizes (0: 4096): nested and empty folders, an
// empty file, files of one byte to many blocks, names that are
// decomposed Unicode (NFD, as HFS+ stores them) and mixed case (the
// catalog orders them by TN1150's case folding), and a folder of 150
// files, enough for several leaf nodes and an index level. What a reader
// must find is what WriteHFSPlus returns in HFSPlusLayout.Files.
func HFSPlusSample(blockSize, nodeSize int) HFSPlusSpec {
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
		{Entry: Entry{Path: "emptydir", Kind: Dir}},
		{Entry: Entry{Path: "a/b/c/d/e/deep.txt", Kind: File, Data: []byte("deep\n")}},
		{Entry: Entry{Path: "old", Kind: File, Data: []byte("1904\n"), Mtime: time.Date(1904, 1, 1, 0, 0, 1, 0, time.UTC)}},
		{Entry: Entry{Path: "spaces and : colon", Kind: File, Data: []byte("colon\n")}},
	}
	for i := 0; i < 150; i++ {
		es = append(es, HFSPlusEntry{Entry: Entry{Path: fmt.Sprintf("many/File %03d", i), Kind: File, Size: int64(i * 37), Seed: uint64(1000 + i)}})
	}
	return HFSPlusSpec{BlockSize: blockSize, NodeSize: nodeSize, Label: "NTT sample", Entries: es}
}
